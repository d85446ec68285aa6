"""The client's shared rules: retry timing, chunking, decoding, error mapping (no server)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from gensen_client import errors
from gensen_client._core import RetryPolicy, as_list, chunks, decode_base64_embeddings, embed_plan


def test_retry_after_is_honoured_within_the_budget() -> None:
    policy = RetryPolicy(max_wait_s=5.0, backoff_s=0.1, max_delay_s=3.0)
    assert 2.0 <= policy.delay(0, "2", waited=0.0) <= 2.4
    assert 3.0 <= policy.delay(0, "30", waited=0.0) <= 3.6  # capped per delay
    assert policy.delay(0, "2", waited=4.0) is None  # the budget is spent
    assert 0.4 <= policy.delay(2, None, waited=0.0) <= 0.48  # backoff doubles: 0.1 * 2**2
    assert 0.1 <= policy.delay(0, "Wed, 21 Oct 2015 07:28:00 GMT", waited=0.0) <= 0.12


def test_chunks_cover_in_order() -> None:
    assert chunks(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert chunks(0, 3) == []
    with pytest.raises(ValueError, match="at least 1"):
        chunks(3, 0)


def test_texts_are_checked_before_sending() -> None:
    assert as_list("one") == ["one"]
    with pytest.raises(TypeError, match="strings"):
        as_list(["a", 3])


def test_base64_vectors_are_decoded_in_index_order() -> None:
    rows = np.arange(6, dtype="<f4").reshape(2, 3)
    data = [{"index": i, "embedding": base64.b64encode(rows[i].tobytes()).decode()} for i in (1, 0)]
    np.testing.assert_array_equal(decode_base64_embeddings({"data": data}), rows)


def test_unit_vectors_travel_as_base64_and_raw_ones_as_floats() -> None:
    plan = embed_plan(["a"] * 5, 2, normalize=True, truncate=None)
    assert [c.path for c in plan.calls] == ["/v1/embeddings"] * 3
    assert plan.calls[2].body == {"input": ["a"], "encoding_format": "base64"}
    raw = embed_plan(["a"], 2, normalize=False, truncate=True)
    assert raw.calls[0].path == "/embed"
    assert raw.calls[0].body == {"inputs": ["a"], "normalize": False, "truncate": True}


@pytest.mark.parametrize(
    ("status", "body", "kind", "message", "error_type"),
    [
        (
            422,
            {"error": "inputs[0] is empty", "error_type": "validation"},
            errors.InvalidRequest,
            "inputs[0] is empty",
            "validation",
        ),
        (
            413,
            {"error": {"message": "too many", "code": "too_many_inputs"}},
            errors.TooLarge,
            "too many",
            "too_many_inputs",
        ),
        (
            429,
            {"error": "queue full", "error_type": "overloaded"},
            errors.Overloaded,
            "queue full",
            "overloaded",
        ),
        (
            502,
            "<html>bad gateway</html>",
            errors.ServerError,
            "HTTP 502: <html>bad gateway</html>",
            None,
        ),
        (
            401,
            {"error": "no key", "error_type": "unauthorized"},
            errors.Unauthorized,
            "no key",
            "unauthorized",
        ),
    ],
)
def test_error_answers_become_typed_exceptions(status, body, kind, message, error_type) -> None:
    error = errors.error_from_answer(status, body, "rid-1")
    assert type(error) is kind
    assert (error.message, error.status, error.error_type, error.request_id) == (
        message,
        status,
        error_type,
        "rid-1",
    )
    assert "request id rid-1" in str(error)


def test_the_in_flight_limit_halves_on_429_and_lets_retries_go_first() -> None:
    from gensen_client._core import AdaptiveLimit

    limit = AdaptiveLimit(8)
    for _ in range(8):
        assert limit.may_start(retry=False)
        limit.start(retry=False)
    assert not limit.may_start(retry=False)
    limit.finish(overloaded=True)  # a 429: 4 may be in flight, and the retry goes first
    assert limit.limit == 4
    assert not limit.may_start(retry=False)
    for _ in range(4):
        limit.finish(overloaded=False)
    assert (limit.in_flight, limit.limit) == (3, 5)  # a round of 4 answers: one more
    assert limit.may_start(retry=True)
    assert not limit.may_start(retry=False)  # the retry is waiting: it goes first
    limit.start(retry=True)
    assert limit.may_start(retry=False)
