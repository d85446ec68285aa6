"""Every kind of bad input the service must refuse, one table row each: the expected status, the
error shape of the route family, and a message that says what is wrong and where."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service.app import build_app
from service.settings import Settings
from tests.service.conftest import AppClient, report_figure

pytestmark = pytest.mark.anyio
LIMITS = {"max_body_bytes": 4096, "max_inputs": 4, "max_input_chars": 100, "queue_capacity": 64}
TOKENS_OVER = " ".join(["a"] * 40)  # 40 tokens (the tiny model takes 32) in 79 characters
TOKENS_UNDER = " ".join(["a"] * 30)


@dataclass(frozen=True)
class Case:
    """One bad input: what is sent where, and what must come back."""

    name: str
    route: str
    body: bytes
    status: int
    says: str  # a fragment of the error message
    headers: dict[str, str] = field(default_factory=dict)


def js(value: object) -> bytes:
    return json.dumps(value).encode()


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1000):
        yield body[start : start + 1000]


CASES = [
    # body size
    Case("body over max_body_bytes", "/embed", js({"inputs": "a" * 5000}), 413, "at most 4096"),
    Case("body over limit, /v1", "/v1/embeddings", js({"input": "a " * 3000}), 413, "4096"),
    # inputs per request
    Case("too many inputs", "/embed", js({"inputs": ["a"] * 5}), 413, "at most 4"),
    Case("too many inputs, /v1", "/v1/embeddings", js({"input": ["a"] * 5}), 413, "at most 4"),
    Case(
        "too many pairs",
        "/nli",
        js({"pairs": [{"premise": "a", "hypothesis": "b"}] * 5}),
        413,
        "pairs has 5",
    ),
    Case("too many paraphrase pairs", "/paraphrase", js({"pairs": [["a", "b"]] * 5}), 413, "pairs"),
    Case(
        "too many sentences",
        "/similarity",
        js({"inputs": {"source_sentence": "a", "sentences": ["b"] * 5}}),
        413,
        "inputs.sentences",
    ),
    # characters and tokens per input
    Case(
        "input over max_input_chars",
        "/embed",
        js({"inputs": ["a", "b" * 101]}),
        413,
        "inputs[1] has 101 characters",
    ),
    Case(
        "chars over limit in a pair",
        "/nli",
        js({"pairs": [{"premise": "a", "hypothesis": "b" * 101}]}),
        413,
        "pairs[0].hypothesis",
    ),
    Case(
        "tokens over limit, truncate false",
        "/embed",
        js({"inputs": TOKENS_OVER, "truncate": False}),
        413,
        "has 40 tokens, over the model's 32",
    ),
    # empty and whitespace-only inputs
    Case("empty input", "/embed", js({"inputs": ""}), 422, "inputs[0] is empty"),
    Case("empty input, /v1", "/v1/embeddings", js({"input": ["a", ""]}), 422, "input[1] is empty"),
    Case(
        "whitespace-only input", "/embed", js({"inputs": [" \t\n\u3000 "]}), 422, "only whitespace"
    ),
    Case(
        "whitespace-only premise",
        "/nli",
        js({"pairs": [{"premise": "  ", "hypothesis": "b"}]}),
        422,
        "pairs[0].premise",
    ),
    Case(
        "whitespace-only sentence",
        "/similarity",
        js({"inputs": {"source_sentence": " ", "sentences": ["b"]}}),
        422,
        "inputs.source_sentence",
    ),
    Case("empty list", "/embed", js({"inputs": []}), 422, "inputs"),
    Case("no pairs", "/paraphrase", js({"pairs": []}), 422, "pairs"),
    # wrong types
    Case("number for text", "/embed", js({"inputs": 42}), 422, "inputs"),
    Case("string for boolean", "/embed", js({"inputs": "a", "normalize": "yes"}), 422, "normalize"),
    Case("number for boolean", "/embed", js({"inputs": "a", "truncate": 1}), 422, "truncate"),
    Case("null for text", "/embed", js({"inputs": [None]}), 422, "inputs"),
    Case("numbers for a pair", "/paraphrase", js({"pairs": [[1, 2]]}), 422, "pairs[0]"),
    Case("pair of one", "/paraphrase", js({"pairs": [["a"]]}), 422, "pairs[0]"),
    Case(
        "pair missing a side", "/nli", js({"pairs": [{"premise": "a"}]}), 422, "pairs[0].hypothesis"
    ),
    Case("token ids for text", "/v1/embeddings", js({"input": [1, 2, 3]}), 422, "token arrays"),
    Case(
        "unknown encoding",
        "/v1/embeddings",
        js({"input": "a", "encoding_format": "hex"}),
        422,
        "encoding_format",
    ),
    Case("array body", "/embed", js(["a"]), 422, "body"),
    Case("null body", "/nli", b"null", 422, "body"),
    # invalid UTF-8, encodings and Unicode
    Case("invalid UTF-8 byte", "/embed", b'{"inputs": "caf\xe9"}', 400, "not valid JSON"),
    Case("invalid UTF-8, /v1", "/v1/embeddings", b'{"input": "\xff\xfe"}', 400, "not valid JSON"),
    Case("overlong UTF-8", "/embed", b'{"inputs": "\xc0\xaf"}', 400, "not valid JSON"),
    Case("UTF-16 body", "/embed", '{"inputs": "a"}'.encode("utf-16"), 400, "not valid JSON"),
    Case("lone surrogate", "/embed", b'{"inputs": "a\\ud800b"}', 400, "not valid JSON"),
    # control characters
    Case("escaped NUL", "/embed", js({"inputs": "a\u0000b"}), 422, "U+0000 at position 1"),
    Case("escape character", "/v1/embeddings", js({"input": "a\u001b[31m"}), 422, "U+001B"),
    Case(
        "C1 control",
        "/embed",
        js({"inputs": ["ok", "a\u009bb"]}),
        422,
        "inputs[1] holds the control character U+009B",
    ),
    Case("DEL", "/paraphrase", js({"pairs": [["a", "b\u007f"]]}), 422, "pairs[0][1]"),
    Case("raw control byte in JSON", "/embed", b'{"inputs": "a\x01b"}', 400, "control character"),
    # JSON structure
    Case("not JSON", "/embed", b"hello", 400, "not valid JSON"),
    Case("empty body", "/embed", b"", 400, "not valid JSON"),
    Case("truncated JSON", "/nli", b'{"pairs": [', 400, "not valid JSON"),
    Case("trailing garbage", "/embed", b'{"inputs": "a"} x', 400, "not valid JSON"),
    Case("two objects", "/embed", b'{"inputs": "a"}{"inputs": "b"}', 400, "not valid JSON"),
    Case("deeply nested JSON", "/embed", b"[" * 1500 + b"]" * 1500, 400, "recursion limit"),
    Case(
        "deep nesting in a field",
        "/embed",
        b'{"inputs": ' + b"[" * 150 + b"]" * 150 + b"}",
        422,
        "inputs",
    ),
    Case("deep objects", "/nli", b'{"a":' * 500 + b"1" + b"}" * 500, 400, "recursion limit"),
    Case(
        "duplicate keys",
        "/embed",
        b'{"inputs": "a", "inputs": "b"}',
        400,
        "repeats the key 'inputs'",
    ),
    Case(
        "duplicate keys, /v1",
        "/v1/embeddings",
        b'{"input": "a", "model": "x", "input": "b"}',
        400,
        "'input'",
    ),
    Case(
        "duplicate nested keys",
        "/nli",
        b'{"pairs": [{"premise": "a", "premise": "b", "hypothesis": "c"}]}',
        400,
        "'premise'",
    ),
    # dimensions
    Case(
        "huge dimensions",
        "/v1/embeddings",
        js({"input": "a", "dimensions": 10**30}),
        422,
        "dimensions",
    ),
    Case(
        "dimensions past int64",
        "/v1/embeddings",
        js({"input": "a", "dimensions": 2**64 + 1}),
        422,
        "dimensions",
    ),
    Case(
        "dimensions of 4000 digits",
        "/v1/embeddings",
        b'{"input": "a", "dimensions": ' + b"9" * 4000 + b"}",
        422,
        "dimensions",
    ),
    Case(
        "dimensions overflowing float",
        "/v1/embeddings",
        b'{"input": "a", "dimensions": 1e400}',
        422,
        "dimensions",
    ),
    Case(
        "dimensions NaN", "/v1/embeddings", b'{"input": "a", "dimensions": NaN}', 422, "dimensions"
    ),
    Case(
        "dimensions over the model's",
        "/v1/embeddings",
        js({"input": "a", "dimensions": 33}),
        422,
        "at most 32",
    ),
    Case(
        "dimensions zero", "/v1/embeddings", js({"input": "a", "dimensions": 0}), 422, "dimensions"
    ),
    Case(
        "dimensions negative",
        "/v1/embeddings",
        js({"input": "a", "dimensions": -1}),
        422,
        "dimensions",
    ),
    Case(
        "dimensions fractional",
        "/v1/embeddings",
        js({"input": "a", "dimensions": 3.5}),
        422,
        "dimensions",
    ),
    Case(
        "dimensions as text",
        "/v1/embeddings",
        js({"input": "a", "dimensions": "8"}),
        422,
        "dimensions",
    ),
    # routes and models
    Case(
        "another model",
        "/v1/embeddings",
        js({"input": "a", "model": "gpt-x"}),
        404,
        "'gpt-x' is not served",
    ),
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def limited(tiny_bundle: Path) -> AsyncIterator[httpx.AsyncClient]:
    """One app with small limits, shared by the table."""
    app = build_app(Settings(bundle=tiny_bundle, provider="cpu", **LIMITS))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_bad_input_gets_a_clear_json_error(limited: httpx.AsyncClient, case: Case) -> None:
    response = await limited.post(case.route, content=case.body, headers=case.headers)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    message = error_message(case.route, response.json())
    assert case.says in message, message


async def test_a_chunked_body_over_the_limit_is_413(limited: httpx.AsyncClient) -> None:
    body = js({"inputs": ["a " * 1000] * 3})
    response = await limited.post("/embed", content=chunks(body))  # no Content-Length
    assert response.status_code == 413
    assert response.json()["error"] == "body is longer than 4096 bytes, the most taken"
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/embed", {"inputs": TOKENS_UNDER, "truncate": False}),
        ("/embed", {"inputs": TOKENS_OVER, "truncate": True}),
        ("/embed", {"inputs": "tab\tand\nnew line\r\n and form\x0cfeed"}),
        ("/v1/embeddings", {"input": "a", "dimensions": 8}),
        ("/v1/embeddings", {"input": "a", "dimensions": 8.0}),  # an integer, to JSON Schema
        ("/nli", {"pairs": [{"premise": "é 😀", "hypothesis": "<s> </s>"}]}),
    ],
)
async def test_near_misses_are_served(limited: httpx.AsyncClient, route: str, body: dict) -> None:
    """The limits refuse what they should and no more: these bodies are fine."""
    response = await limited.post(route, json=body)
    assert response.status_code == 200, response.text


async def test_truncate_true_cuts_what_truncate_false_refuses(app_client: AppClient) -> None:
    async with app_client() as client:
        cut = await client.post("/embed", json={"inputs": TOKENS_OVER, "truncate": True})
        refused = await client.post("/embed", json={"inputs": TOKENS_OVER, "truncate": False})
        first_32 = await client.post("/embed", json={"inputs": " ".join(["a"] * 32)})
    assert cut.status_code == 200
    assert cut.json() == first_32.json()
    assert refused.status_code == 413


async def test_the_document_states_the_limits(limited: httpx.AsyncClient) -> None:
    schemas = (await limited.get("/openapi.json")).json()["components"]["schemas"]
    inputs = schemas["EmbedRequest"]["properties"]["inputs"]["anyOf"]
    text, texts = inputs
    assert (text["minLength"], text["maxLength"]) == (1, 100)
    assert texts["maxItems"] == 4
    assert schemas["NliRequest"]["properties"]["pairs"]["maxItems"] == 4
    dimensions = schemas["OpenAIEmbeddingRequest"]["properties"]["dimensions"]["anyOf"][0]
    assert (dimensions["minimum"], dimensions["maximum"]) == (1, 32)


async def test_the_service_still_serves_after_the_whole_table(
    limited: httpx.AsyncClient,
) -> None:
    assert (await limited.post("/embed", json={"inputs": ["a man", "a dog"]})).status_code == 200
    assert (await limited.get("/ready")).status_code == 200
    report_figure("bad inputs tried (table rows)", len(CASES) + 1)


def error_message(route: str, answer: dict) -> str:
    """The message of an error answer, checking the shape of the route's family."""
    if route.startswith("/v1/"):
        assert set(answer) == {"error"}
        assert set(answer["error"]) == {"message", "type", "param", "code"}
        return str(answer["error"]["message"])
    assert set(answer) == {"error", "error_type"}
    return str(answer["error"])
