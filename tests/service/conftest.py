"""Fixtures of the service tests: the app over ASGI (httpx) and the service as a real uvicorn process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from service.app import build_app
from service.engine import Engine
from service.runtime import EngineFactory
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
AppClient = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]
FIGURES: dict[str, str] = {}  # measured figures, printed at the end of the run


def report_figure(name: str, value: object) -> None:
    """Keep a measured figure for the summary at the end of the test run (and print it now)."""
    FIGURES[name] = str(value)
    print(f"{name}: {value}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the robustness, load and soak tests measured."""
    if FIGURES:
        terminalreporter.section("service figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


PAD = 0  # the pad id of FakeEngine's batches


def row_vector(row: list[int]) -> np.ndarray:
    """What the fake engine answers for one row: depends on the row only."""
    return np.array([sum(row), len(row), row[0], row[-1]], dtype=np.float32)


class FakeEngine:
    """Embeds each row as `row_vector`, records every batch, and can be held at a gate."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[int, int]] = []  # (rows, padded length)
        self.alone: list[bool] = []  # whether each batch ran with no other running
        self.seen: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = fail

    def embed(self, input_ids: np.ndarray, lengths: np.ndarray, alone: bool = False) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("engine broke")
        assert input_ids.dtype == np.int64
        assert lengths.dtype == np.int64
        rows = [list(map(int, ids[:n])) for ids, n in zip(input_ids, lengths, strict=True)]
        assert all((ids[n:] == PAD).all() for ids, n in zip(input_ids, lengths, strict=True))
        self.batches.append(input_ids.shape)
        self.alone.append(alone)
        self.seen.extend(rows)
        return np.stack([row_vector(r) for r in rows])


class GatedEngine(Engine):
    """The real engine, whose batches wait at `gate` while it is clear: admitted work stays
    in inference (and what comes after it in the queue) for as long as a test needs."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.gate = threading.Event()
        self.gate.set()

    def embed(self, input_ids: np.ndarray, lengths: np.ndarray, alone: bool = False) -> np.ndarray:
        self.gate.wait(30)
        return super().embed(input_ids, lengths, alone)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the loop uvicorn uses)."""
    return "asyncio"


@pytest.fixture
def settings(tiny_bundle: Path) -> Callable[..., Settings]:
    """Settings for the tiny bundle, with any field overridden by keyword.

    Two batch runners of one thread each, fixed: every app test exercises concurrent batches,
    and none spends start-up time measuring the split (tests/service/test_engine.py does).
    """

    def make(**overrides: Any) -> Settings:
        fixed = {"provider": "cpu", "intra_op_threads": 1, "batch_runners": 2}
        return Settings(**{"bundle": tiny_bundle, **fixed, **overrides})

    return make


@pytest.fixture
def app_client(settings: Callable[..., Settings]) -> AppClient:
    """`async with app_client(**settings) as client:` an httpx client on a started app."""

    @contextlib.asynccontextmanager
    async def serve(
        engine_factory: EngineFactory = Engine, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = build_app(settings(**overrides), engine_factory=engine_factory)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                client.app = app  # type: ignore[attr-defined]  # for tests that reach the runtime
                yield client

    return serve


@pytest.fixture
async def client(app_client: AppClient) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app with default settings."""
    async with app_client() as c:
        yield c


def app_of(client: httpx.AsyncClient) -> FastAPI:
    """The app behind an `app_client` client."""
    return client.app  # type: ignore[attr-defined,no-any-return]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """`python -m service` running in a subprocess on a free loopback port."""

    def __init__(self, bundle: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "service", "--bundle", str(bundle)]
        command += ["--port", str(self.port), "--provider", "cpu", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # a file, not a pipe: a full pipe would block the server; closed with the process
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log
        )

    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until /ready answers 200; fail with the process's log if it exits first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"service exited with {self.proc.returncode}:\n{self.stderr()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail("service did not become ready")

    def stop_when_exited(self, timeout: float = 60.0) -> tuple[int, str]:
        """Wait for the process to exit on its own; its exit code and stderr."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"service did not exit:\n{self.stop()[1]}")
        return self.proc.returncode, self.stderr()

    def terminate(self) -> None:
        """Send SIGTERM (the drain signal)."""
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> tuple[int, str]:
        """End the process (SIGTERM, then SIGKILL after 30 s); its exit code and stderr."""
        if self.proc.poll() is None:
            self.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.stderr()


@pytest.fixture(scope="session")
def served(tiny_bundle: Path) -> Iterator[ServiceProcess]:
    """One real service process shared by the tests that only read from it."""
    service = ServiceProcess(tiny_bundle)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def heads_threshold(bundle: Path) -> float:
    """The paraphrase threshold the bundle's card sets."""
    return float(json.loads((bundle / "model.json").read_text())["paraphrase_threshold"])


def bundle_with_threshold(bundle: Path, tmp_path: Path, threshold: float) -> Path:
    """A copy of `bundle` whose card sets `threshold`."""
    copy = Path(shutil.copytree(bundle, tmp_path / f"threshold-{threshold:.6f}"))
    card = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**card, "paraphrase_threshold": threshold}))
    return copy
