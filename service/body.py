"""Request bodies: strict JSON, validated once at the edge into a request model.

pydantic's JSON parser (jiter) refuses what is not JSON: bad syntax, bytes that are not UTF-8,
lone surrogates, raw control characters inside strings, and nesting deeper than 200 levels.
It keeps the last of repeated keys without a word, so a second pass with the standard library's
parser refuses them: `{"inputs": "a", "inputs": "b"}` means different things to different
parsers, and the service does not guess. Bodies larger than PARSE_INLINE_BYTES are parsed in a
thread so that the event loop keeps answering other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from service.errors import MalformedBody, validation_error

PARSE_INLINE_BYTES = 64 * 1024
KEY_SHOWN_CHARS = 64  # a repeated key is quoted in the error up to this length
Model = TypeVar("Model", bound=BaseModel)


async def parse_body(raw: bytes, model: type[Model]) -> Model:
    """`raw` validated as `model`; MalformedBody (400) or InvalidInput (422) if it is not."""
    if len(raw) <= PARSE_INLINE_BYTES:
        return parse_body_now(raw, model)
    return await asyncio.to_thread(parse_body_now, raw, model)


def parse_body_now(raw: bytes, model: type[Model]) -> Model:
    """`parse_body` on the calling thread."""
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False, include_input=False)) from None
    refuse_repeated_keys(raw)
    return parsed


class _RepeatedKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def refuse_repeated_keys(raw: bytes) -> None:
    """Raise MalformedBody if an object of the JSON text `raw` holds a key twice.

    Only the structure is read: numbers are not converted and objects are not built.
    """
    try:
        json.loads(
            raw,
            object_pairs_hook=_unique_keys,
            parse_int=_ignore,
            parse_float=_ignore,
            parse_constant=_ignore,
        )
    except _RepeatedKeyError as exc:
        key = exc.key[:KEY_SHOWN_CHARS]
        raise MalformedBody(f"body repeats the key {key!r} in one object", param=key) from None
    except (ValueError, RecursionError) as exc:  # jiter accepted it; be safe all the same
        raise MalformedBody(f"body is not valid JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKeyError(key)
            seen.add(key)


def _ignore(_: str) -> None:
    return None
