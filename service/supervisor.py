"""`--workers N`: one engine process and N HTTP worker processes behind one port.

One Python process cannot feed a GPU: its event loop tops out near 4,000 sentences/s while the
encoder runs tens of times faster. Independent processes would each hold a CUDA context and
run small batches. So this process owns the device (the engine, its batcher, one session) and
claims the port; the workers listen on it, parse, validate and tokenise, and send
token rows through `service.ipc`, so that batching sees the work of every worker together.

- Each worker is started with the `spawn` method (nothing of this process's device state is
  inherited) in a process group of its own, so that a terminal's Ctrl-C reaches this process
  alone, and this process drains the workers in order. Each listens on its own socket of the
  one port (SO_REUSEPORT), and the kernel spreads connections over them.
- A worker that dies is logged and started again; its unanswered work was dropped by the engine
  when its connection closed, and its requests' clients saw the connection close.
- SIGTERM (or SIGINT): the workers get SIGTERM and drain as a single process does (not-ready,
  503 to new work, admitted work finished within `drain_timeout_s`), while this process keeps
  computing for them; when they have exited the engine stops. A second signal is passed on:
  the workers then skip their drain.
- Metrics: every process writes to one multiprocess folder; `/metrics` of any worker (or
  `--metrics-port`, served here) sums them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess

from prometheus_client import multiprocess

from service.app import build_app
from service.ipc import EngineServer, hello_of
from service.logs import configure_logging
from service.metrics import MULTIPROC_DIR, Metrics, serve_metrics
from service.runtime import start_engine
from service.server import exit_bound_s, serve
from service.settings import Settings

log = logging.getLogger("service.supervisor")
WATCH_PERIOD_S = 0.2  # how often dead workers are looked for
RESTART_DELAY_S = 1.0  # least time between two starts of the same worker slot
EXIT_MARGIN_S = 5.0  # past the drain and the flush: then workers are killed
LISTEN_BACKLOG = 2048  # uvicorn's default


def run(settings: Settings, workers: int) -> int:
    """Serve with `workers` HTTP processes until a signal drains them; the exit code."""
    if not os.environ.get(MULTIPROC_DIR):
        raise RuntimeError(f"{MULTIPROC_DIR} must be set before prometheus-client is imported")
    reuse_port_socket(settings.host, settings.port, shared=False).close()  # nobody else on it
    reserved = reuse_port_socket(settings.host, settings.port)  # bound, never listening
    try:
        return asyncio.run(_supervise(settings, workers))
    finally:
        reserved.close()


def reuse_port_socket(host: str, port: int, shared: bool = True) -> socket.socket:
    """A TCP socket bound to host:port, with SO_REUSEPORT when `shared` (OSError if the port
    is taken; binding once without it first makes sure no other program shares the port).

    Each worker listens on a socket of its own on the same port, and the kernel spreads new
    connections over them. One socket shared by all (uvicorn's and gunicorn's way) lets the
    worker that wakes first accept a burst of connections alone: measured here, 32 keep-alive
    clients connecting at once all went to one of two workers. The engine process binds one
    too, without listening, so that the port is claimed (and refused, if taken) before any
    worker starts.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def _supervise(settings: Settings, count: int) -> int:
    metrics = Metrics()
    side = await asyncio.to_thread(start_engine, settings, metrics)
    folder = tempfile.mkdtemp(prefix="gensen-engine-")
    address = os.path.join(folder, "engine.sock")
    hello = hello_of(side.batcher.limits, engine={**side.facts(), "workers": count})
    server = EngineServer(side.batcher, hello)
    await server.start(address)
    stop_metrics = (
        serve_metrics(metrics, settings.host, settings.metrics_port)
        if settings.metrics_port is not None
        else None
    )
    pool = WorkerPool(settings, count, address)
    signals = _Signals()
    try:
        pool.start()
        log.info("serving", extra={"workers": count, "port": settings.port})
        while not signals.received:
            await signals.wait(WATCH_PERIOD_S)
            pool.restart_dead()
        log.info("draining", extra={"unfinished": side.batcher.unfinished, "workers": count})
        pool.terminate()
        bound = exit_bound_s(settings) + EXIT_MARGIN_S
        await pool.wait_exited(bound, signals)
    finally:
        pool.kill()
        side.batcher.stop()
        await server.close()
        if stop_metrics is not None:
            stop_metrics()
        shutil.rmtree(folder, ignore_errors=True)
    log.info("stopped")
    return 0


class WorkerPool:
    """The HTTP worker processes: started, watched, restarted, stopped."""

    def __init__(self, settings: Settings, count: int, address: str) -> None:
        self._settings = settings
        self._address = address
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[BaseProcess | None] = [None] * count
        self._started_at = [0.0] * count

    def start(self) -> None:
        """Start every worker."""
        for slot in range(len(self._slots)):
            self._start(slot)

    def restart_dead(self) -> None:
        """Start again each worker that has exited (not sooner than RESTART_DELAY_S after its
        last start)."""
        for slot, process in enumerate(self._slots):
            if process is None or process.is_alive():
                continue
            if time.monotonic() - self._started_at[slot] < RESTART_DELAY_S:
                continue
            log.error(
                "worker exited; starting it again",
                extra={"worker": slot, "pid": process.pid, "exitcode": process.exitcode},
            )
            _forget_metrics_of(process)
            self._start(slot)

    def terminate(self) -> None:
        """SIGTERM to every worker: each drains, then exits."""
        for process in self._alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]

    async def wait_exited(self, timeout: float, signals: _Signals) -> None:
        """Until every worker has exited, at most `timeout` s; a further signal is passed on."""
        end = time.monotonic() + timeout
        passed_on = signals.received
        while self._alive() and time.monotonic() < end:
            await signals.wait(WATCH_PERIOD_S)
            if signals.received > passed_on:
                passed_on = signals.received
                self.terminate()
        for process in self._slots:
            if process is not None:
                _forget_metrics_of(process)

    def kill(self) -> None:
        """SIGKILL what is still running (past the bound, or on an error here)."""
        for process in self._alive():
            log.error("worker did not exit in time; killing it", extra={"pid": process.pid})
            process.kill()
            process.join(5)

    def _alive(self) -> list[BaseProcess]:
        return [p for p in self._slots if p is not None and p.is_alive()]

    def _start(self, slot: int) -> None:
        process = self._context.Process(
            target=worker_main,
            args=(self._settings, self._address),
            name=f"gensen-worker-{slot}",
            daemon=False,
        )
        process.start()
        self._slots[slot] = process
        self._started_at[slot] = time.monotonic()
        log.info("worker started", extra={"worker": slot, "pid": process.pid})


def worker_main(settings: Settings, address: str) -> None:
    """An HTTP worker: the app on its own socket of the shared port, its work sent to the
    engine at `address`."""
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the engine process alone, which drains us
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_logging(settings.log_level)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    sock = reuse_port_socket(settings.host, settings.port)
    sock.listen(LISTEN_BACKLOG)
    serve(settings, build_app(settings, engine_address=address), sockets=[sock])


def _exit_with_parent(parent: int) -> None:
    """SIGTERM this worker once the engine process is gone (killed, not drained): a worker
    without its engine can only answer 503, so it leaves rather than linger as an orphan."""
    while os.getppid() == parent:
        time.sleep(WATCH_PERIOD_S * 5)
    log.error("the engine process has gone; this worker stops", extra={"pid": os.getpid()})
    os.kill(os.getpid(), signal.SIGTERM)


def _forget_metrics_of(process: BaseProcess) -> None:
    """Drop a dead process's live gauges from the multiprocess folder."""
    if process.pid is not None and not process.is_alive():
        multiprocess.mark_process_dead(process.pid)


class _Signals:
    """SIGTERM and SIGINT counted on the running loop."""

    def __init__(self) -> None:
        self.received = 0
        self._event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        self.received += 1
        log.info("signal received", extra={"signal": sig, "count": self.received})
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until a signal arrives or `timeout` s pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
