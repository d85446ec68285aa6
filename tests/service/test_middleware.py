"""Request ids, security headers, the body size limit and CORS, through the app."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import pytest

from service.middleware import DirectDispatch, request_id_of
from tests.service.conftest import AppClient, ServiceProcess

pytestmark = pytest.mark.anyio
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
CSP = "default-src 'none'; frame-ancestors 'none'"


def scope_with(*headers: tuple[bytes, bytes]) -> dict:
    return {"type": "http", "headers": list(headers)}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"abc-123", True),
        (b"0f8e2c1a-4b3d-4f6e-9a7b-1c2d3e4f5a6b", True),
        (b"trace:span/1=x+y@z", True),
        (b"", False),
        (b"has space", False),
        (b'quote"', False),
        (b"new\nline", False),
        (b"x" * 129, False),
    ],
)
def test_a_client_request_id_is_kept_only_when_plain(sent: bytes, kept: bool) -> None:
    request_id = request_id_of(scope_with((b"x-request-id", sent)))
    assert (request_id == sent.decode(errors="replace")) is kept
    assert re.fullmatch(r"[A-Za-z0-9._:@/+=-]{1,128}", request_id)


def test_a_request_id_is_made_up_when_none_is_sent() -> None:
    first, second = request_id_of(scope_with()), request_id_of(scope_with())
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


async def test_request_id_and_security_headers_on_every_answer(client: httpx.AsyncClient) -> None:
    answers = [
        await client.post("/embed", json={"inputs": "a"}, headers={"X-Request-Id": "req-1"}),
        await client.post("/embed", content=b"{"),
        await client.get("/nowhere"),
        await client.get("/health"),
        await client.get("/metrics"),
        await client.put("/embed"),
    ]
    assert answers[0].headers["x-request-id"] == "req-1"
    assert [a.status_code for a in answers] == [200, 400, 404, 200, 200, 405]
    for answer in answers:
        assert answer.headers["x-request-id"]
        assert SECURITY.items() <= dict(answer.headers).items()
        assert answer.headers["content-security-policy"] == CSP
    docs = await client.get(
        "/docs"
    )  # a page keeps its own policy (tests/service/routes/test_pages.py)
    assert docs.headers["content-security-policy"].startswith(
        "default-src 'none'; script-src 'self'"
    )
    assert docs.headers["x-frame-options"] == "DENY"


async def test_an_unexpected_error_is_a_500_with_the_request_id(client: httpx.AsyncClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    runtime.heads.nli = None  # a bug: the route calls something that is not callable
    response = await client.post(
        "/nli",
        json={"pairs": [{"premise": "a", "hypothesis": "b"}]},
        headers={"X-Request-Id": "bug-1"},
    )
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal error; see the service log (request id bug-1)",
        "error_type": "backend",
    }
    assert response.headers["x-request-id"] == "bug-1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/health")).status_code == 200


async def test_body_limit_by_length_and_by_chunks(app_client: AppClient) -> None:
    async def chunked(body: bytes):
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    big = orjson.dumps({"inputs": ["a man"] * 400})  # about 3.6 kB
    async with app_client(max_body_bytes=2048) as client:
        declared = await client.post("/embed", content=big)
        streamed = await client.post("/embed", content=chunked(big))
        fits = await client.post("/embed", content=chunked(b'{"inputs": "a"}'))
        openai = await client.post("/v1/embeddings", content=big)
        metrics = (await client.get("/metrics")).text
    assert declared.status_code == streamed.status_code == 413
    assert declared.json()["error"] == f"body has {len(big)} bytes; at most 2048 are taken"
    assert streamed.json()["error"] == "body is longer than 2048 bytes, the most taken"
    assert fits.status_code == 200
    assert openai.json()["error"]["code"] == "body_too_large"
    assert 'gensen_rejected_requests_total{reason="too_large"} 3.0' in metrics


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://example.org"}
    simple = await client.post("/embed", json={"inputs": "a"}, headers=origin)
    preflight = await client.options(
        "/embed", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 405


async def test_cors_when_configured(app_client: AppClient) -> None:
    allowed, other = "https://app.example.org", "https://evil.example.net"
    async with app_client(cors_origins=[allowed], api_key_hashes=["0" * 64]) as client:
        preflight = await client.options(
            "/embed",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        refused = await client.options(
            "/embed", headers={"Origin": other, "Access-Control-Request-Method": "POST"}
        )
        simple = await client.post("/embed", json={"inputs": "a"}, headers={"Origin": allowed})
    assert preflight.status_code == 200  # answered before the key check: preflights carry none
    assert preflight.headers["access-control-allow-origin"] == allowed
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 400
    assert simple.status_code == 401  # no key, but the browser may read why
    assert simple.headers["access-control-allow-origin"] == allowed
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


def test_request_ids_are_in_the_access_log(tiny_bundle: Path) -> None:
    service = ServiceProcess(tiny_bundle, "--access-log")
    try:
        service.wait_ready()
        sent = httpx.post(
            f"{service.url}/embed", json={"inputs": "a"}, headers={"X-Request-Id": "find-me-8"}
        )
        made_up = httpx.get(f"{service.url}/health").headers["x-request-id"]
    finally:
        _, log = service.stop()
    assert sent.status_code == 200
    records = [orjson.loads(line) for line in log.splitlines()]
    access = {r["path"]: r for r in records if r["logger"] == "uvicorn.access"}
    assert access["/embed"]["request_id"] == "find-me-8"
    assert access["/health"]["request_id"] == made_up


async def test_api_routes_are_dispatched_directly(client: httpx.AsyncClient) -> None:
    """Every POST route of the API skips the framework's routing; what is not one of them
    (a trailing slash, a GET of a POST route) is answered by the router as before."""
    stack = client.app.middleware_stack or client.app.build_middleware_stack()  # type: ignore[attr-defined]
    while not isinstance(stack, DirectDispatch):
        stack = stack.app
    posts = {path for method, path in stack.routes if method == "POST"}
    assert {"/embed", "/similarity", "/", "/nli", "/paraphrase", "/v1/embeddings"} <= posts
    assert (await client.post("/embed/", json={"inputs": "a"})).status_code in (307, 404)
    assert (await client.get("/embed")).status_code == 405
    metrics = (await client.get("/metrics")).text
    assert 'route="/embed/"' not in metrics


async def test_direct_routes_answer_errors_in_their_own_shape(client: httpx.AsyncClient) -> None:
    native = await client.post("/embed", content=b"{not json")
    openai = await client.post("/v1/embeddings", json={"input": []})
    assert native.status_code == 400
    assert native.json()["error_type"] == "validation"
    assert openai.status_code == 422
    assert openai.json()["error"]["type"] == "invalid_request_error"
    metrics = (await client.get("/metrics")).text
    assert re.search(r'gensen_requests_total\{route="/embed",status="400"\} 1\.0', metrics)
