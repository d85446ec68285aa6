"""API keys: digests from the environment or a file, bearer keys on every route but the open
ones, the same 401 for a missing and a wrong key, timing that does not depend on the key."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.auth import ApiKeys, AuthConfigError
from service.settings import settings_from_cli
from tests.service.conftest import AppClient, ServiceProcess, report_figure

KEY = "gensen-test-key-0123456789abcdef"
OTHER_KEY = "another-accepted-key"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
OTHER_DIGEST = hashlib.sha256(OTHER_KEY.encode()).hexdigest()
BEARER = {"Authorization": f"Bearer {KEY}"}
PROTECTED = [
    ("POST", "/embed", {"inputs": "a man"}),
    ("POST", "/v1/embeddings", {"input": "a man"}),
    ("POST", "/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
    ("POST", "/paraphrase", {"pairs": [["a", "b"]]}),
    ("POST", "/nli", {"pairs": [{"premise": "a", "hypothesis": "b"}]}),
    ("GET", "/info", None),
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
]


# the key digests


def test_digests_from_settings_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "keys.txt"
    file.write_text(f"# team A\n{OTHER_DIGEST}  -\n\n")  # as `sha256sum` prints it
    monkeypatch.setenv("GENSEN_API_KEY_HASHES", DIGEST.upper())
    settings = settings_from_cli(["--api-key-file", str(file)])
    keys = ApiKeys.load(settings.api_key_hashes, settings.api_key_file)
    assert len(keys) == 2
    assert keys.check(KEY.encode())
    assert keys.check(OTHER_KEY.encode())
    assert not keys.check(b"gensen-test-key-0123456789abcdeg")
    assert not keys.check(b"")


def test_no_digests_means_no_keys() -> None:
    assert not ApiKeys.load([], None).enabled


def test_a_plain_key_instead_of_a_digest_is_refused_without_repeating_it(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError) as refused:
        ApiKeys.load([DIGEST, KEY])
    assert "api_key_hashes[1] is not a SHA-256 hex digest" in str(refused.value)
    assert "sha256sum" in str(refused.value)
    assert KEY not in str(refused.value)
    file = tmp_path / "keys.txt"
    file.write_text(f"{DIGEST}\nsecret-plain-key\n")
    with pytest.raises(AuthConfigError, match="line 2") as refused:
        ApiKeys.load([], file)
    assert "secret-plain-key" not in str(refused.value)
    with pytest.raises(AuthConfigError, match="cannot be read"):
        ApiKeys.load([], tmp_path / "absent.txt")


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {KEY}".encode(), True),
        (f"bearer  {KEY} ".encode(), True),
        (f"Bearer {OTHER_KEY}".encode(), True),
        (KEY.encode(), False),
        (f"Basic {KEY}".encode(), False),
        (b"Bearer ", False),
        (b"Bearer wrong", False),
        (None, False),
    ],
)
def test_bearer_header(header: bytes | None, allowed: bool) -> None:
    assert ApiKeys.load([DIGEST, OTHER_DIGEST]).allows(header) is allowed


# timing


def median_ratio(check: Callable[[bytes], bool], early: bytes, late: bytes) -> float:
    """Median time of wrong keys that differ from the right one late, over those that differ
    early; interleaved rounds of many calls, so that drift and noise weigh on both alike."""
    rounds, calls = 41, 300
    times: dict[bytes, list[float]] = {early: [], late: []}
    for i in range(rounds):
        for key in (early, late) if i % 2 else (late, early):
            start = time.perf_counter()
            for _ in range(calls):
                check(key)
            times[key].append(time.perf_counter() - start)
    return statistics.median(times[late]) / statistics.median(times[early])


def leaky_check(secret: bytes) -> Callable[[bytes], bool]:
    """A comparison that stops at the first differing byte: what the test must catch."""

    def check(key: bytes) -> bool:
        if len(key) != len(secret):
            return False
        return all(a == b for a, b in zip(key, secret, strict=True))

    return check


def test_wrong_key_timing_does_not_depend_on_how_much_matched() -> None:
    secret = b"k" * 512
    early = b"x" + secret[1:]  # differs at the first byte
    late = secret[:-1] + b"x"  # differs at the last byte
    keys = ApiKeys.load([hashlib.sha256(secret).hexdigest(), DIGEST, OTHER_DIGEST])
    assert not keys.check(early)
    assert not keys.check(late)
    leaky = median_ratio(leaky_check(secret), early, late)
    ours = median_ratio(keys.check, early, late)
    report_figure(
        "wrong-key timing, late/early mismatch (ApiKeys / byte-by-byte)",
        f"{ours:.3f} / {leaky:.1f}",
    )
    assert leaky > 5  # the method sees a leak where there is one
    assert 0.8 < ours < 1.25


# over HTTP


@pytest.mark.anyio
async def test_every_route_but_health_ready_and_the_pages_needs_the_key(
    app_client: AppClient,
) -> None:
    async with app_client(api_key_hashes=[DIGEST]) as client:
        for path in ("/health", "/ready", "/docs", "/playground"):
            assert (await client.get(path)).status_code == 200, path
        for method, path, body in PROTECTED:
            missing = await client.request(method, path, json=body)
            wrong = await client.request(
                method, path, json=body, headers={"Authorization": "Bearer nope"}
            )
            right = await client.request(method, path, json=body, headers=BEARER)
            assert missing.status_code == wrong.status_code == 401, path
            assert (
                missing.headers["www-authenticate"] == wrong.headers["www-authenticate"] == "Bearer"
            )
            assert missing.content == wrong.content  # nothing tells a missing key from a wrong one
            assert right.status_code == 200, (path, right.text)


@pytest.mark.anyio
async def test_401_bodies_say_nothing(app_client: AppClient) -> None:
    async with app_client(api_key_hashes=[DIGEST]) as client:
        native = await client.post("/embed", json={"inputs": "a"})
        openai = await client.post("/v1/embeddings", json={"input": "a"})
        metrics = await client.get("/metrics", headers=BEARER)
    assert native.json() == {"error": "unauthorized", "error_type": "unauthorized"}
    assert openai.json() == {
        "error": {
            "message": "unauthorized",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert 'gensen_rejected_requests_total{reason="unauthorized"} 2.0' in metrics.text


@pytest.mark.anyio
async def test_openapi_declares_the_bearer_scheme(app_client: AppClient) -> None:
    async with app_client(api_key_hashes=[DIGEST]) as client:
        spec = (await client.get("/openapi.json", headers=BEARER)).json()
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearer": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert "401" in spec["paths"]["/embed"]["post"]["responses"]


@pytest.mark.anyio
async def test_metrics_on_their_own_port(app_client: AppClient) -> None:
    from tests.service.conftest import free_port

    port = free_port()
    async with app_client(api_key_hashes=[DIGEST], metrics_port=port) as client:
        here = await client.get("/metrics", headers=BEARER)
        async with httpx.AsyncClient() as plain:
            there = await plain.get(f"http://127.0.0.1:{port}/metrics")  # no key there
    assert here.status_code == 404
    assert there.status_code == 200
    assert "gensen_model_info" in there.text
    with pytest.raises(httpx.ConnectError):  # the listener is closed with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_keys_never_reach_the_log_and_the_openai_client_works(tiny_bundle: Path) -> None:
    from openai import AuthenticationError, OpenAI

    service = ServiceProcess(tiny_bundle, "--access-log", env={"GENSEN_API_KEY_HASHES": DIGEST})
    try:
        service.wait_ready()
        good = OpenAI(base_url=f"{service.url}/v1", api_key=KEY)
        assert len(good.embeddings.create(model="gensen-tiny", input=["a dog"]).data) == 1
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"{service.url}/v1", api_key=KEY[:-1] + "x").embeddings.create(
                model="gensen-tiny", input=["a dog"]
            )
    finally:
        code, log = service.stop()
    assert code == 0, log
    assert '"message":"API keys required","keys":1' in log
    assert KEY not in log
    assert KEY[:-1] not in log
    assert DIGEST not in log


def test_a_bad_key_file_stops_the_service_before_it_listens(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    file = tmp_path / "keys.txt"
    file.write_text("my-plain-secret\n")
    service = ServiceProcess(tiny_bundle, "--api-key-file", str(file))
    code, log = service.stop_when_exited()
    assert code == 2
    assert f"error: {file} line 1 is not a SHA-256 hex digest" in log
    assert "my-plain-secret" not in log
