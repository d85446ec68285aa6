"""The service as people run it: `python -m service` in a real process on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.conftest import ServiceProcess

SENTENCE = "a man is playing the guitar"


def test_embed_like_the_readme(served: ServiceProcess) -> None:
    """`curl -s localhost:8080/embed -d '{"inputs":"hi"}'`: a form content type, one unit vector."""
    response = httpx.post(
        f"{served.url}/embed",
        content=b'{"inputs":"a man"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    vector = np.array(response.json())
    assert vector.shape == (1, 32)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_logs_are_json_lines_without_request_texts(served: ServiceProcess) -> None:
    secret = "zebra secret sentence"
    assert httpx.post(f"{served.url}/embed", json={"inputs": secret}).status_code == 200
    httpx.post(f"{served.url}/embed", json={"inputs": secret, "normalize": "bad"})
    log = served.stderr()
    assert '"message":"model ready"' in log
    ready = next(json.loads(line) for line in log.splitlines() if '"engine ready"' in line)
    assert 50 < ready["peak_resident_mib"] < 4096  # what a container's memory limit must allow
    assert all(line.startswith("{") for line in log.splitlines() if line.strip())
    assert "zebra" not in log


def test_missing_bundle_is_refused_at_start(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path / "nowhere")
    code, log = service.stop_when_exited()
    assert code == 2
    assert f"error: bundle {tmp_path / 'nowhere'}: no such folder" in log


def test_broken_model_file_is_refused_at_start(tiny_bundle: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (broken / "encoder.onnx").write_bytes(b"garbage")
    service = ServiceProcess(broken)
    code, log = service.stop_when_exited()
    assert code != 0
    assert re.search(r"encoder\.onnx does not load in ONNX Runtime", log)
    assert '"message":"cannot serve the bundle"' in log


@pytest.mark.slow
def test_sigterm_under_load_loses_no_admitted_request(tiny_bundle: Path) -> None:
    """SIGTERM while a queue of work is admitted: not-ready, refuse new work, finish, exit 0."""
    service = ServiceProcess(
        tiny_bundle,
        # one input per batch on one runner: a long queue
        *("--max-batch-rows", "1", "--max-wait-ms", "0", "--batch-runners", "1"),
        *("--max-inputs", "300", "--queue-capacity", "20000", "--drain-timeout-s", "60"),
    )
    try:
        service.wait_ready()
        outcome = asyncio.run(_terminate_under_load(service, clients=32, inputs=300))
        code, log = service.stop_when_exited()
    finally:
        service.stop()
    admitted, during_drain = outcome
    assert [r.status_code for r in admitted] == [200] * 32
    assert all(len(r.json()) == 300 for r in admitted)
    assert during_drain["ready"] == 503
    assert during_drain["embed"] == 503
    assert during_drain["health"] == 200
    assert code == 0, log
    assert log.index('"message":"draining"') < log.index('"message":"Shutting down"')


async def _terminate_under_load(
    service: ServiceProcess, clients: int, inputs: int
) -> tuple[list[httpx.Response], dict[str, int]]:
    texts = [f"{SENTENCE} {i}" for i in range(inputs)]
    async with httpx.AsyncClient(base_url=service.url, timeout=120) as client:
        requests = [
            asyncio.create_task(client.post("/embed", json={"inputs": texts}))
            for _ in range(clients)
        ]
        await _wait_for_admission(client, clients * inputs)
        service.terminate()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as fresh:
            during = {
                "ready": (await fresh.get("/ready")).status_code,
                "embed": (await fresh.post("/embed", json={"inputs": "a"})).status_code,
                "health": (await fresh.get("/health")).status_code,
            }
        return list(await asyncio.gather(*requests)), during


async def _wait_for_admission(client: httpx.AsyncClient, rows: int, timeout: float = 30) -> None:
    """Until /metrics shows all `rows` admitted (queued or computed) and work still queued."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        metrics = (await client.get("/metrics")).text
        queued = _metric(metrics, "gensen_queue_depth")
        if queued and queued + _metric(metrics, "gensen_inputs_total") >= rows:
            return
        await asyncio.sleep(0.005)
    pytest.fail("the requests were not all admitted while work was queued")


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _wait_until_queued(client: httpx.Client, rows: int, timeout: float = 30) -> None:
    """Until /metrics shows at least `rows` rows queued."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _metric(client.get("/metrics").text, "gensen_queue_depth") >= rows:
            return
        time.sleep(0.01)
    pytest.fail(f"{rows} rows were never queued")


def test_a_client_that_leaves_frees_its_work(tiny_bundle: Path) -> None:
    """The request waits in the queue behind a long one; its client hangs up; its rows are
    dropped, never computed."""
    one_row_at_a_time = ["--batch-runners", "1", "--intra-op-threads", "1", "--max-batch-rows", "1"]
    service = ServiceProcess(tiny_bundle, *one_row_at_a_time, "--queue-capacity", "100000")
    long_text = ("a man is playing the guitar " * 450)[:12000]
    try:
        service.wait_ready()
        with (
            httpx.Client(base_url=service.url, timeout=120) as client,
            ThreadPoolExecutor(1) as pool,
        ):
            # about 20,000 windows, one batch each: the runner is busy for seconds, far longer
            # than the 0.7 s the other request needs to be sent, wait and leave
            blocker = pool.submit(client.post, "/embed", json={"inputs": [long_text] * 240})
            _wait_until_queued(client, rows=1000)  # parsed, tokenised and admitted
            with pytest.raises(httpx.ReadTimeout):
                client.post("/embed", json={"inputs": ["a man"] * 10}, timeout=0.4)
            computed = int(blocker.result().headers["x-embedded-windows"])
            metrics = client.get("/metrics").text
    finally:
        service.stop()
    assert _metric(metrics, "gensen_queue_depth") == 0
    assert 'gensen_rejected_requests_total{reason="client_closed"} 1.0' in metrics
    assert _metric(metrics, "gensen_inputs_total") == computed  # the blocker's alone


@pytest.mark.slow
def test_overload_at_several_times_capacity(tiny_bundle: Path) -> None:
    """Ten times more inputs than the queue holds: 200 or 429 with Retry-After, nothing else."""
    service = ServiceProcess(tiny_bundle, "--queue-capacity", "64", "--max-inputs", "8")
    try:
        service.wait_ready()
        answers = asyncio.run(_flood(service.url, clients=80, requests=5, inputs=8))
        still_ready = httpx.get(f"{service.url}/ready").status_code
    finally:
        code, log = service.stop()
    statuses = {a.status_code for a in answers}
    assert statuses <= {200, 429}
    assert 200 in statuses
    assert 429 in statuses
    assert all(int(a.headers["retry-after"]) >= 1 for a in answers if a.status_code == 429)
    assert all(len(a.json()) == 8 for a in answers if a.status_code == 200)
    assert still_ready == 200
    assert code == 0, log


async def _flood(url: str, clients: int, requests: int, inputs: int) -> list[httpx.Response]:
    texts = [f"{SENTENCE} {i}" for i in range(inputs)]
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one_client() -> list[httpx.Response]:
            return [await client.post("/embed", json={"inputs": texts}) for _ in range(requests)]

        batches = await asyncio.gather(*(one_client() for _ in range(clients)))
    return [answer for batch in batches for answer in batch]


def _embed_on(sock: socket.socket) -> bytes:
    """One /embed request on an open connection; the answer's bytes (b"" if it was closed)."""
    body = b'{"inputs": "a man"}'
    sock.sendall(
        b"POST /embed HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


@contextlib.contextmanager
def _kept_alive(service: ServiceProcess) -> Iterator[socket.socket]:
    """A connection to the ready service, kept alive after one answered request."""
    service.wait_ready()
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        assert _embed_on(sock).startswith(b"HTTP/1.1 200")
        yield sock


@pytest.mark.slow
def test_idle_connection_outlasts_uvicorns_old_default(served: ServiceProcess) -> None:
    """An idle keep-alive connection is still open after uvicorn's 5 s default: a proxy that
    reuses it (idle timeouts of 60 s are common) gets an answer, not a reset."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        assert _embed_on(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6.5)
        assert _embed_on(sock).startswith(b"HTTP/1.1 200")


@pytest.mark.slow
def test_keep_alive_is_a_setting(tiny_bundle: Path) -> None:
    """`--keep-alive-s` bounds how long an idle connection stays open."""
    service = ServiceProcess(tiny_bundle, "--keep-alive-s", "0.5")
    try:
        with _kept_alive(service) as sock:
            time.sleep(2.0)
            assert sock.recv(1) == b""  # the server closed it
    finally:
        service.stop()


def test_after_sigterm_the_port_answers_until_the_linger_ends(tiny_bundle: Path) -> None:
    """The drain found no work, yet for `--drain-linger-s` a client that sends on the connection
    it kept alive, or connects again, gets a 503 that closes the connection, not a closed or
    reset socket; then the process exits 0."""
    service = ServiceProcess(tiny_bundle, "--drain-linger-s", "3")
    try:
        with _kept_alive(service) as kept:
            service.terminate()
            time.sleep(0.5)  # no work to drain: the shutdown used to close both by now
            answers = [_embed_on(kept)]
            with socket.create_connection(("127.0.0.1", service.port), timeout=10) as fresh:
                answers.append(_embed_on(fresh))
                assert fresh.recv(1) == b""
            assert kept.recv(1) == b""
        code, log = service.stop_when_exited(timeout=30)
    finally:
        service.stop()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"connection: close" in answer.lower()
    assert code == 0, log
    draining = next(json.loads(line) for line in log.splitlines() if "signal received" in line)
    assert "request_id" not in draining  # not the id of the request the signal interrupted


def test_a_connection_left_idle_is_closed_when_the_linger_ends(tiny_bundle: Path) -> None:
    service = ServiceProcess(tiny_bundle, "--drain-linger-s", "1")
    try:
        with _kept_alive(service) as sock:
            signalled = time.monotonic()
            service.terminate()
            assert sock.recv(1) == b""  # closed by the server, before the process exits
            closed_after = time.monotonic() - signalled
        code, log = service.stop_when_exited(timeout=30)
    finally:
        service.stop()
    assert code == 0, log
    assert closed_after >= 1.0
