"""HTTP middleware of the service, pure ASGI: request ids and security headers, the body size
limit, and JSON bodies whatever their content type. `service.auth` holds the API-key check and
`service.metrics` the request counting; `service.app` stacks them all in one place.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, unexpected_error_response
from service.logs import reset_request_id, set_request_id

REQUEST_ID = b"x-request-id"
# A client's id is taken when it is short and plain (no spaces, quotes or control characters,
# so that it cannot forge log lines or headers); otherwise the service makes one up.
CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
# The API serves data, never pages; the interactive docs load Swagger UI and so go without it.
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


class RequestContextMiddleware:
    """Outermost middleware: gives each request an id (the client's `X-Request-Id` or a new
    one), makes it current for the logs, echoes it, adds the security headers to every answer,
    and turns an unexpected exception into a logged 500 that carries them too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request within its request-id context."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        extra = [(REQUEST_ID, request_id.encode()), *SECURITY_HEADERS]
        if scope["path"] not in DOCS_PATHS:
            extra.append(API_CSP)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = _merged(message.get("headers", []), extra)
            await send(message)

        token = set_request_id(request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:
                raise
            state = scope["app"].state
            response = unexpected_error_response(state, scope["method"], scope["path"], exc)
            await response(scope, receive, send_with_headers)
        finally:
            reset_request_id(token)


def request_id_of(scope: Scope) -> str:
    """The client's `X-Request-Id` when it is acceptable, else a new random one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID and CLIENT_REQUEST_ID.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


def _merged(
    headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """`headers` plus those of `extra` it does not set already."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *(header for header in extra if header[0] not in present)]


class BodyLimitMiddleware:
    """Refuses a request body larger than `max_bytes` with 413, before it is held in memory.

    A declared `Content-Length` over the limit is refused before any byte is read; a chunked
    body is counted as it arrives. The refusal is raised from the body read, so that the error
    table answers it in the route's error shape.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a receive that stops at the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise BodyTooLarge(f"body has {declared} bytes; at most {limit} are taken")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"body is longer than {limit} bytes, the most taken")
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class JsonBodyMiddleware:
    """Reads every POST body as JSON, whatever its content type (so `curl -d '{...}'` works)."""

    JSON_TYPE = (b"content-type", b"application/json")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Mark a POST request's body as JSON unless it already says so."""
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"] = [*headers, self.JSON_TYPE]  # in place: outer middleware sees routing
        await self.app(scope, receive, send)
