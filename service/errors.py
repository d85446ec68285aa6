"""Typed errors of the service and the one table that maps them to HTTP answers.

Inner code raises these without knowing HTTP. The table gives each its status code and its
names in the two error shapes: native routes answer `{"error": msg, "error_type": type}` (as
text-embeddings-inference does), `/v1` routes answer OpenAI's
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from service.logs import current_request_id
from service.schemas import NativeError, OpenAIError

log = logging.getLogger("service.errors")
OPENAI_PREFIX = "/v1/"
UNION_TAGS = frozenset({"str", "int", "float", "bool"})


class ServiceError(Exception):
    """Base of every error the service answers with; `param` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class MalformedBody(ServiceError):
    """The body is not JSON (or not UTF-8, nests too deeply, or repeats a key)."""


class BodyTooLarge(ServiceError):
    """The body is larger than the service accepts."""


class Unauthorized(ServiceError):
    """No API key, or not one of the accepted keys."""

    def __init__(self) -> None:
        super().__init__("unauthorized")  # the same answer for a missing and a wrong key


class InvalidInput(ServiceError):
    """The body is JSON but a field is missing or wrong."""


class TooManyInputs(ServiceError):
    """More inputs (or pairs) in one request than the service accepts."""


class InputTooLong(ServiceError):
    """An input is longer than the limit (characters, or tokens when truncation is off)."""


class ModelNotFound(ServiceError):
    """The request names a model this service does not serve."""


class RouteNotFound(ServiceError):
    """No such route, or not with this method."""


class Overloaded(ServiceError):
    """The queue is full; the client should come back after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(ServiceError):
    """The service is starting or stopping and takes no work."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its inputs were computed."""


class ClientGone(ServiceError):
    """The client closed the connection before its answer was ready; its work was dropped."""


class InferenceFailed(ServiceError):
    """The inference engine failed; the message stays generic, the log has the cause."""


class InferenceTimedOut(ServiceError):
    """The batch holding the request ran past the inference timeout."""


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """How one error kind is answered: status code, native `error_type`, OpenAI type and code."""

    status: int
    error_type: str
    openai_type: str
    openai_code: str


ERROR_TABLE: dict[type[ServiceError], ErrorSpec] = {
    MalformedBody: ErrorSpec(400, "validation", "invalid_request_error", "invalid_json"),
    Unauthorized: ErrorSpec(401, "unauthorized", "invalid_request_error", "invalid_api_key"),
    BodyTooLarge: ErrorSpec(413, "too_large", "invalid_request_error", "body_too_large"),
    InvalidInput: ErrorSpec(422, "validation", "invalid_request_error", "invalid_value"),
    TooManyInputs: ErrorSpec(413, "too_large", "invalid_request_error", "too_many_inputs"),
    InputTooLong: ErrorSpec(413, "too_large", "invalid_request_error", "input_too_long"),
    ModelNotFound: ErrorSpec(404, "model_not_found", "invalid_request_error", "model_not_found"),
    RouteNotFound: ErrorSpec(404, "not_found", "invalid_request_error", "not_found"),
    Overloaded: ErrorSpec(429, "overloaded", "rate_limit_error", "overloaded"),
    NotReady: ErrorSpec(503, "unavailable", "server_error", "unavailable"),
    DeadlineExceeded: ErrorSpec(504, "deadline_exceeded", "server_error", "timeout"),
    ClientGone: ErrorSpec(499, "client_closed", "invalid_request_error", "client_closed"),
    InferenceFailed: ErrorSpec(500, "backend", "server_error", "inference_failed"),
    InferenceTimedOut: ErrorSpec(504, "inference_timeout", "server_error", "inference_timeout"),
}

# Errors of every route that reads texts from a body, for the OpenAPI documentation.
REQUEST_ERRORS = (
    MalformedBody,
    Unauthorized,
    InvalidInput,
    BodyTooLarge,
    TooManyInputs,
    InputTooLong,
    NotReady,
)
# ... and of every route that runs the model.
INFERENCE_ERRORS = (
    *REQUEST_ERRORS,
    Overloaded,
    InferenceFailed,
    DeadlineExceeded,
    InferenceTimedOut,
)
# Headers some answers carry, for the OpenAPI documentation.
RETRY_AFTER_DOC = {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
RESPONSE_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": RETRY_AFTER_DOC},
    503: {"Retry-After": RETRY_AFTER_DOC},
}


def spec_of(error: ServiceError) -> ErrorSpec:
    """The table entry of `error` (its own class or the nearest listed base)."""
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return ERROR_TABLE[InferenceFailed]


def error_body(
    error: ServiceError, *, openai: bool, request_id: str | None = None
) -> dict[str, Any]:
    """The JSON body of `error` in the native or the OpenAI shape.

    A server-side error (5xx) names the request id, which the service log carries too.
    """
    spec = spec_of(error)
    message = error.message
    if spec.status >= 500 and request_id:
        message = f"{message} (request id {request_id})"
    if openai:
        inner = {
            "message": message,
            "type": spec.openai_type,
            "param": error.param,
            "code": spec.openai_code,
        }
        return {"error": inner}
    return {"error": message, "error_type": spec.error_type}


def error_response(error: ServiceError, *, openai: bool) -> Response:
    """The full HTTP answer to `error`, with `Retry-After` where the client should retry."""
    spec = spec_of(error)
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, NotReady | BodyTooLarge):  # draining, or a body left unread
        headers["Connection"] = "close"
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    body = orjson.dumps(error_body(error, openai=openai, request_id=current_request_id()))
    return Response(body, spec.status, headers, media_type="application/json")


def is_openai_path(path: str) -> bool:
    """Whether `path` belongs to the OpenAI-compatible API (errors in OpenAI's shape)."""
    return path.startswith(OPENAI_PREFIX)


def error_responses(*errors: type[ServiceError], openai: bool = False) -> dict[int | str, Any]:
    """OpenAPI `responses` for a route that may raise `errors`, from the same table."""
    model = OpenAIError if openai else NativeError
    docs: dict[int | str, Any] = {}
    for cls in errors:
        spec = ERROR_TABLE[cls]
        entry = docs.setdefault(spec.status, {"model": model, "description": ""})
        line = (cls.__doc__ or cls.__name__).strip()
        entry["description"] = f"{entry['description']} {line}".strip()
        if spec.status in RESPONSE_HEADERS:
            entry["headers"] = RESPONSE_HEADERS[spec.status]
    return docs


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into one of the two JSON shapes."""
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)


def _is_openai(request: Request) -> bool:
    return is_openai_path(request.url.path)


def _answer(request: Request, error: ServiceError) -> Response:
    count_rejection(request.app.state, error)
    return error_response(error, openai=_is_openai(request))


def count_rejection(state: Any, error: ServiceError) -> None:
    """Count `error` in `gensen_rejected_requests_total` of the app whose state is `state`."""
    metrics = getattr(state, "metrics", None)
    if metrics is not None:
        metrics.rejected.labels(reason=spec_of(error).error_type).inc()


async def _on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return _answer(request, exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _answer(request, validation_error(exc.errors()))


def validation_error(errors: Any) -> ServiceError:
    """The most telling pydantic error as a ServiceError naming the field and the reason."""
    errors = list(errors) or [{"type": "missing", "loc": ("body",), "msg": "invalid body"}]
    for e in errors:
        if e.get("type") == "json_invalid":
            why = e.get("ctx", {}).get("error")
            return MalformedBody(
                f"body is not valid JSON: {why}" if why else "body is not valid JSON"
            )
    # Union fields report one error per alternative; a wrong-type error is the least telling.
    first = next((e for e in errors if not str(e.get("type", "")).endswith("_type")), errors[0])
    field = _field_name(first.get("loc", ()))
    message = f"{field}: {first.get('msg', 'invalid value')}"
    return InvalidInput(message, param=field)


def _field_name(loc: Any) -> str:
    """`("body", "inputs", "list[str]", 2)` -> `inputs[2]` (body and union tags left out)."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part != "body" and "[" not in part and part not in UNION_TAGS:
            name += f".{part}" if name else part
    return name or "body"


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        error = RouteNotFound(f"no route {request.method} {request.url.path}")
        response = error_response(error, openai=_is_openai(request))
        response.status_code = exc.status_code
        return response
    error = ServiceError(str(exc.detail))
    response = error_response(error, openai=_is_openai(request))
    response.status_code = exc.status_code
    return response


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return unexpected_error_response(request.app.state, request.method, request.url.path, exc)


def unexpected_error_response(state: Any, method: str, path: str, exc: BaseException) -> Response:
    """Log an unexpected exception and answer 500 (generic message, with the request id)."""
    log.error("unexpected error", exc_info=exc, extra={"route": path, "method": method})
    error = InferenceFailed("internal error; see the service log")
    count_rejection(state, error)
    return error_response(error, openai=is_openai_path(path))
