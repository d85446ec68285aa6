"""The service's JSON errors as typed exceptions, each with the message and the request id."""

from __future__ import annotations

from typing import Any


class GensenError(Exception):
    """An error answer of the service (or no answer at all, for `ConnectionFailed`)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.request_id = request_id

    def __str__(self) -> str:
        if self.request_id is None:
            return self.message
        return f"{self.message} (request id {self.request_id})"


class InvalidRequest(GensenError):
    """400 or 422: the body or one of its inputs is not what the service takes."""


class Unauthorized(GensenError):
    """401: no accepted API key."""


class NotFound(GensenError):
    """404: an unknown route or model."""


class TooLarge(GensenError):
    """413: the body, an input or the number of inputs is over a limit."""


class Overloaded(GensenError):
    """429: the queue stayed full for longer than the client's retry budget."""


class Unavailable(GensenError):
    """503: not ready or draining, for longer than the client's retry budget."""


class ServerError(GensenError):
    """500 or 504: the inference failed or took too long."""


class ConnectionFailed(GensenError):
    """The service could not be reached, or did not answer within the timeout."""


_BY_STATUS: dict[int, type[GensenError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    413: TooLarge,
    422: InvalidRequest,
    429: Overloaded,
    503: Unavailable,
}


def error_from_answer(status: int, body: Any, request_id: str | None) -> GensenError:
    """The exception for an error answer: native `{"error", "error_type"}` or OpenAI's
    `{"error": {"message", "code"}}`; any other body is quoted as it is."""
    message, error_type = f"HTTP {status}", None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message, error_type = str(error.get("message", message)), error.get("code")
        elif error is not None:
            message, error_type = str(error), body.get("error_type")
    elif body:
        message = f"HTTP {status}: {str(body)[:200]}"
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else GensenError)
    return kind(message, status=status, error_type=error_type, request_id=request_id)
