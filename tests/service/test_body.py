"""Request bodies: strict JSON into a request model, repeated keys refused, large ones off the loop."""

from __future__ import annotations

import threading

import pytest

from service import body as body_module
from service.body import parse_body, parse_body_now, refuse_repeated_keys
from service.errors import InvalidInput, MalformedBody
from service.schemas import EmbedRequest, NliRequest


def test_a_valid_body_becomes_the_model() -> None:
    parsed = parse_body_now(b'{"inputs": ["a", "b"], "normalize": false}', EmbedRequest)
    assert parsed.inputs == ["a", "b"]
    assert parsed.normalize is False


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"inputs": "a", "inputs": "b"}', "inputs"),
        (b'{"pairs": [{"premise": "a", "hypothesis": "b", "hypothesis": "c"}]}', "hypothesis"),
        (b'{"x": {"y": 1, "y": 2}, "inputs": "a"}', "y"),  # even in an ignored field
    ],
)
def test_repeated_keys_are_refused(raw: bytes, key: str) -> None:
    with pytest.raises(MalformedBody) as refused:
        refuse_repeated_keys(raw)
    assert refused.value.message == f"body repeats the key {key!r} in one object"


def test_the_same_key_in_different_objects_is_fine() -> None:
    raw = b'{"pairs": [{"premise": "a", "hypothesis": "b"}, {"premise": "c", "hypothesis": "d"}]}'
    assert len(parse_body_now(raw, NliRequest).pairs) == 2


def test_numbers_are_not_converted_while_looking_for_keys() -> None:
    refuse_repeated_keys(b'{"dimensions": ' + b"9" * 10_000 + b', "n": 1e999, "m": NaN}')


def test_types_are_strict() -> None:
    with pytest.raises(InvalidInput, match="normalize"):
        parse_body_now(b'{"inputs": "a", "normalize": "true"}', EmbedRequest)


@pytest.mark.anyio
async def test_large_bodies_are_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = body_module.parse_body_now

    def spy(raw: bytes, model: type) -> object:
        threads.append(threading.current_thread().name)
        return real(raw, model)

    monkeypatch.setattr(body_module, "parse_body_now", spy)
    small = b'{"inputs": "a"}'
    large = b'{"inputs": ["' + b"a " * 40_000 + b'"]}'
    await parse_body(small, EmbedRequest)
    await parse_body(large, EmbedRequest)
    main = threading.main_thread().name
    assert threads[0] == main
    assert threads[1] != main
