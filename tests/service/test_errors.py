"""The error table: one status per error kind, two shapes, Retry-After, field names."""

from __future__ import annotations

import orjson
import pytest

from service.errors import (
    ERROR_TABLE,
    InferenceFailed,
    InputTooLong,
    InvalidInput,
    MalformedBody,
    NotReady,
    Overloaded,
    ServiceError,
    Unauthorized,
    error_body,
    error_response,
    error_responses,
    validation_error,
)
from service.logs import reset_request_id, set_request_id
from service.schemas import NativeError, OpenAIError


def test_every_error_kind_has_a_status_and_names() -> None:
    statuses = {cls.__name__: spec.status for cls, spec in ERROR_TABLE.items()}
    assert statuses["Overloaded"] == 429
    assert statuses["NotReady"] == 503
    assert statuses["DeadlineExceeded"] == 504
    assert statuses["TooManyInputs"] == statuses["InputTooLong"] == 413
    assert statuses["InvalidInput"] == 422
    assert statuses["MalformedBody"] == 400


def test_two_shapes() -> None:
    error = InputTooLong("inputs[2] is too long", param="inputs[2]")
    native = error_body(error, openai=False)
    openai = error_body(error, openai=True)
    NativeError.model_validate(native)
    OpenAIError.model_validate(openai)
    assert native == {"error": "inputs[2] is too long", "error_type": "too_large"}
    assert openai["error"]["param"] == "inputs[2]"
    assert openai["error"]["code"] == "input_too_long"


@pytest.mark.parametrize(("seconds", "header"), [(0.2, "1"), (2.5, "3")])
def test_retry_after_is_whole_seconds(seconds: float, header: str) -> None:
    response = error_response(Overloaded("full", retry_after=seconds), openai=False)
    assert response.status_code == 429
    assert response.headers["retry-after"] == header


def test_not_ready_closes_the_connection() -> None:
    response = error_response(NotReady("draining"), openai=True)
    assert response.status_code == 503
    assert response.headers["connection"] == "close"
    assert orjson.loads(response.body)["error"]["type"] == "server_error"


def test_validation_error_names_the_field() -> None:
    errors = [
        {"type": "string_type", "loc": ("body", "inputs", "str"), "msg": "Input should be a str"},
        {"type": "too_short", "loc": ("body", "inputs", "list[str]"), "msg": "List too short"},
    ]
    error = validation_error(errors)
    assert error.message == "inputs: List too short"
    assert error.param == "inputs"
    nested = validation_error([{"type": "missing", "loc": ("body", "pairs", 3, "premise")}])
    assert nested.param == "pairs[3].premise"
    assert isinstance(validation_error([{"type": "json_invalid", "loc": ()}]), MalformedBody)


def test_security_and_fault_entries() -> None:
    statuses = {cls.__name__: spec.status for cls, spec in ERROR_TABLE.items()}
    assert statuses["Unauthorized"] == 401
    assert statuses["BodyTooLarge"] == 413
    assert statuses["InferenceFailed"] == 500
    assert statuses["InferenceTimedOut"] == 504
    unauthorized = error_response(Unauthorized(), openai=False)
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    assert orjson.loads(unauthorized.body) == {
        "error": "unauthorized",
        "error_type": "unauthorized",
    }


def test_server_errors_name_the_request_id() -> None:
    token = set_request_id("abc")
    try:
        failed = error_body(InferenceFailed("inference failed"), openai=True, request_id="abc")
        refused = error_response(InvalidInput("inputs: bad"), openai=False)
    finally:
        reset_request_id(token)
    assert failed["error"]["message"] == "inference failed (request id abc)"
    assert orjson.loads(refused.body)["error"] == "inputs: bad"  # a client error: no id needed


def test_openapi_responses_come_from_the_table() -> None:
    docs = error_responses(Overloaded, NotReady, openai=True)
    assert set(docs) == {429, 503}
    assert docs[429]["model"] is OpenAIError
    assert "Retry-After" in docs[429]["headers"]


def test_unknown_service_error_falls_back_to_500() -> None:
    assert error_response(ServiceError("odd"), openai=False).status_code == 500
