"""Optional API keys: `Authorization: Bearer KEY` on every route but /health, /ready and the pages.

Off unless SHA-256 digests of the accepted keys are configured (`--api-key-hashes`,
`--api-key-file`); the service never holds a plain key. A presented key is hashed and its
digest compared with every accepted digest by `hmac.compare_digest`, without stopping at a
match: the time taken depends neither on how much of a key matched nor on which key it was.
A refusal is 401 with `WWW-Authenticate: Bearer` and the same body whatever was wrong. Keys and
digests are never logged. Create a digest with `printf %s "$KEY" | sha256sum`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized, count_rejection, error_response, is_openai_path

log = logging.getLogger("service.auth")
OPEN_PATHS = frozenset({"/health", "/ready"})
# The browser pages and their files (service.routes.pages) hold no data: a browser loads them
# without a key, and the API calls they make carry the key typed into them.
OPEN_PAGES = ("/docs", "/playground")
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
HOW_TO_HASH = 'store the output of `printf %s "$KEY" | sha256sum`, never the key itself'


class AuthConfigError(Exception):
    """The configured key digests cannot be used; the message never repeats their values."""


class ApiKeys:
    """The SHA-256 digests of the accepted API keys."""

    def __init__(self, digests: Iterable[bytes] = ()) -> None:
        self._digests = tuple(digests)

    @classmethod
    def load(cls, hashes: Iterable[str], file: Path | None = None) -> ApiKeys:
        """Digests from hex strings (the environment or flags) and from `file`, one a line.

        A file line may be `sha256sum` output (`HEX  -`); blank lines and `#` comments are skipped.
        Raises AuthConfigError naming the bad entry by position, never by value.
        """
        entries = [(f"api_key_hashes[{i}]", text) for i, text in enumerate(hashes)]
        if file is not None:
            entries += [(f"{file} line {n}", line) for n, line in _file_lines(file)]
        return cls(_digest(where, text) for where, text in entries)

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (else every request passes)."""
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, key: bytes) -> bool:
        """Whether `key` is one of the accepted keys, in time independent of the key."""
        digest = hashlib.sha256(key).digest()
        accepted = False
        for known in self._digests:  # all of them, always
            accepted |= hmac.compare_digest(digest, known)
        return accepted

    def allows(self, authorization: bytes | None) -> bool:
        """Whether an `Authorization` header value carries an accepted bearer key."""
        if authorization is None:
            return False
        scheme, _, key = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not key.strip():
            return False
        return self.check(key.strip())


def _file_lines(file: Path) -> list[tuple[int, str]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthConfigError(
            f"api key file {file}: cannot be read ({type(exc).__name__})"
        ) from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if content:
            lines.append((number, content.split()[0]))
    return lines


def _digest(where: str, text: str) -> bytes:
    value = text.strip().lower()
    if not HEX_DIGEST.fullmatch(value):
        raise AuthConfigError(f"{where} is not a SHA-256 hex digest (64 hex digits): {HOW_TO_HASH}")
    return bytes.fromhex(value)


def is_open(path: str) -> bool:
    """Whether `path` is served without a key: /health, /ready, a page or a page's file."""
    if path in OPEN_PATHS:
        return True
    return any(path == page or path.startswith(f"{page}/") for page in OPEN_PAGES)


class AuthMiddleware:
    """Pure ASGI middleware: 401 for a request without an accepted key (open paths excepted)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on if it may; else answer 401."""
        if scope["type"] != "http" or is_open(scope["path"]) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        error = Unauthorized()
        count_rejection(scope["app"].state, error)
        response = error_response(error, openai=is_openai_path(scope["path"]))
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return self.keys.allows(value)
        return False
