"""`--workers N`: one engine process, N HTTP workers on one port, as real processes on loopback.

What one process guarantees holds for the group: the same vectors, one `/metrics` for all, a
worker that dies is started again, SIGTERM drains every worker and loses nothing admitted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.bundle import load_bundle
from service.engine import Engine
from service.heads import normalize
from service.tokenization import TextTokenizer
from tests.service.conftest import ServiceProcess, free_port

pytestmark = pytest.mark.slow
TEXTS = ["a man is playing the guitar", "a dog", "two children are riding a horse on the beach"]


@pytest.fixture(scope="module")
def workers(tiny_bundle: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess(tiny_bundle, "--workers", "2", "--batch-runners", "1")
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def worker_pids(service: ServiceProcess) -> list[int]:
    """Pids of the workers started so far, oldest first, from the engine process's log."""
    return [
        int(json.loads(line)["pid"])
        for line in service.stderr().splitlines()
        if '"message":"worker started"' in line
    ]


def _metric(text: str, pattern: str) -> float:
    found = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_workers_answer_what_the_engine_computes(
    workers: ServiceProcess, tiny_bundle: Path
) -> None:
    answer = httpx.post(f"{workers.url}/embed", json={"inputs": TEXTS})
    assert answer.status_code == 200
    bundle = load_bundle(tiny_bundle)
    tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
    engine = Engine(bundle, provider="cpu", intra_op_threads=1, runners=1)
    want = [normalize(engine.embeddings(*_padded(row)))[0] for row in tokenizer.encode(TEXTS).ids]
    np.testing.assert_allclose(np.array(answer.json()), np.array(want), atol=1e-5)
    info = httpx.get(f"{workers.url}/info").json()
    assert info["limits"]["workers"] == 2
    assert info["provider"] == "cpu"


def test_pairs_and_openai_routes_work_through_workers(workers: ServiceProcess) -> None:
    nli = httpx.post(
        f"{workers.url}/nli", json={"pairs": [{"premise": TEXTS[0], "hypothesis": TEXTS[1]}]}
    )
    assert nli.status_code == 200
    assert set(nli.json()[0]["scores"]) == {"entailment", "neutral", "contradiction"}
    openai = httpx.post(f"{workers.url}/v1/embeddings", json={"input": TEXTS})
    assert [item["index"] for item in openai.json()["data"]] == [0, 1, 2]
    too_long = httpx.post(f"{workers.url}/embed", json={"inputs": "a " * 100, "truncate": False})
    assert too_long.status_code == 413


def test_metrics_count_every_worker(workers: ServiceProcess) -> None:
    async def load() -> int:
        async def one(i: int) -> int:
            async with httpx.AsyncClient(base_url=workers.url) as client:  # a connection each
                return (await client.post("/similarity", json=_similarity(i))).status_code

        statuses = await asyncio.gather(*(one(i) for i in range(48)))
        return statuses.count(200)

    before = _metric(httpx.get(f"{workers.url}/metrics").text, _SIMILARITY_200)
    ok = asyncio.run(load())
    assert ok == 48
    scrapes = {
        _metric(httpx.Client().get(f"{workers.url}/metrics").text, _SIMILARITY_200)
        for _ in range(6)  # new connections: any worker may answer; each sums all of them
    }
    assert scrapes == {before + 48}
    text = httpx.get(f"{workers.url}/metrics").text
    assert (
        _metric(text, 'gensen_model_info\\{name="gensen-tiny",provider="cpu",version="0.0.1"\\}')
        == 1
    )
    assert _metric(text, "gensen_inputs_total") >= 48 * 3


_SIMILARITY_200 = 'gensen_requests_total\\{route="/similarity",status="200"\\}'


def _similarity(i: int) -> dict[str, object]:
    return {"inputs": {"source_sentence": f"a man {i}", "sentences": ["a dog", "a cat"]}}


def test_a_killed_worker_is_started_again(tiny_bundle: Path) -> None:
    service = ServiceProcess(tiny_bundle, "--workers", "2", "--batch-runners", "1")
    try:
        service.wait_ready()
        first = worker_pids(service)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        end = time.monotonic() + 20
        while len(worker_pids(service)) < 3 and time.monotonic() < end:
            time.sleep(0.1)
        assert len(worker_pids(service)) == 3, service.stderr()
        assert '"message":"worker exited; starting it again"' in service.stderr()
        service.wait_ready()
        statuses = [
            httpx.Client().post(f"{service.url}/embed", json={"inputs": "a dog"}).status_code
            for _ in range(20)
        ]
        assert statuses == [200] * 20
        assert httpx.get(f"{service.url}/health").status_code == 200
    finally:
        code, log = service.stop()
    assert code == 0, log


def test_sigterm_drains_every_worker_and_loses_nothing(tiny_bundle: Path) -> None:
    service = ServiceProcess(
        tiny_bundle,
        *("--workers", "2", "--batch-runners", "1", "--max-batch-rows", "1"),
        # 32,000 single-row batches (seconds of work): admission finishes long before them
        *("--max-wait-ms", "0", "--max-inputs", "2000", "--queue-capacity", "40000"),
        *("--drain-timeout-s", "60"),
    )
    try:
        service.wait_ready()
        answers = asyncio.run(_terminate_with_queued_work(service, clients=16, inputs=2000))
        code, log = service.stop_when_exited(timeout=90)
    finally:
        service.stop()
    assert [a.status_code for a in answers] == [200] * 16
    assert all(len(a.json()) == 2000 for a in answers)
    assert code == 0, log
    assert log.count('"message":"draining"') == 3  # the engine process and each worker
    assert '"message":"worker did not exit in time' not in log


async def _terminate_with_queued_work(
    service: ServiceProcess, clients: int, inputs: int
) -> list[httpx.Response]:
    texts = [f"a man is playing the guitar {i}" for i in range(inputs)]
    limits = httpx.Limits(max_keepalive_connections=0)  # spread over both workers
    async with httpx.AsyncClient(base_url=service.url, timeout=120, limits=limits) as client:
        requests = [
            asyncio.create_task(client.post("/embed", json={"inputs": texts}))
            for _ in range(clients)
        ]
        end = time.monotonic() + 30
        while time.monotonic() < end:  # until all are admitted and work is still queued
            metrics = (await client.get("/metrics")).text
            queued = _metric(metrics, "gensen_queue_depth")
            if queued and queued + _metric(metrics, "gensen_inputs_total") >= clients * inputs:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the requests were not all admitted while work was queued")
        service.terminate()
        return list(await asyncio.gather(*requests))


def _padded(row: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([row], dtype=np.int64), np.array([len(row)], dtype=np.int64)


def test_workers_leave_when_the_engine_process_is_killed(tiny_bundle: Path) -> None:
    """Killed outright (no drain), the engine process leaves no orphan answering 503."""
    service = ServiceProcess(tiny_bundle, "--workers", "2", "--batch-runners", "1")
    try:
        service.wait_ready()
        pids = worker_pids(service)
        service.proc.kill()
        service.proc.wait(10)
        end = time.monotonic() + 15
        while any(_alive(pid) for pid in pids) and time.monotonic() < end:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), service.stderr()
    finally:
        for pid in worker_pids(service):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_the_metrics_port_is_served_by_the_engine_process(tiny_bundle: Path) -> None:
    metrics_port = free_port()
    service = ServiceProcess(
        tiny_bundle, "--workers", "2", "--batch-runners", "1", "--metrics-port", str(metrics_port)
    )
    try:
        service.wait_ready()
        assert httpx.post(f"{service.url}/embed", json={"inputs": TEXTS}).status_code == 200
        assert httpx.get(f"{service.url}/metrics").status_code == 404  # not on the API port
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert _metric(text, 'gensen_requests_total\\{route="/embed",status="200"\\}') == 1
        assert _metric(text, "gensen_inputs_total") == len(TEXTS)
    finally:
        code, log = service.stop()
    assert code == 0, log


def test_a_port_in_use_is_refused_with_a_clear_error(tiny_bundle: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = ServiceProcess(tiny_bundle, "--workers", "2", "--port", str(port))
        code = service.proc.wait(60)
    assert code == 2
    assert "cannot listen" in service.stderr()
    assert "Address already in use" in service.stderr()


def test_connections_are_spread_over_the_workers(workers: ServiceProcess) -> None:
    """Each worker listens on its own socket of the port (SO_REUSEPORT): 32 connections opened
    at once do not all land on one worker, as they did on one shared listening socket."""
    pids = worker_pids(workers)[-2:]
    before = {pid: _main_thread_cpu(pid) for pid in pids}

    async def load() -> None:
        clients = [httpx.AsyncClient(base_url=workers.url) for _ in range(32)]
        try:
            for _ in range(10):
                await asyncio.gather(*(c.post("/embed", json={"inputs": TEXTS}) for c in clients))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    asyncio.run(load())
    used = [_main_thread_cpu(pid) - before[pid] for pid in pids]
    assert min(used) > 0.15 * sum(used), used


def _main_thread_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
