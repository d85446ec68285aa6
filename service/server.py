"""Run the app under uvicorn with a drain phase on SIGTERM or SIGINT.

On the first signal the service turns not-ready and refuses new work with 503 while it finishes
what it admitted (at most `drain_timeout_s`), and keeps its port open for at least
`drain_linger_s` after the signal; only then does uvicorn's own shutdown begin (close the
listener and the idle connections, finish open responses, run the lifespan's shutdown).
A second signal skips the drain.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from contextvars import Context
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from service.app import build_app
from service.logs import log_config
from service.settings import Settings

log = logging.getLogger("service.server")
FLUSH_TIMEOUT_S = 5  # after the drain: time left to send the last answers


def exit_bound_s(settings: Settings) -> float:
    """Longest time from the first signal to the server's exit: the drain, then the flush."""
    return max(settings.drain_timeout_s, settings.drain_linger_s) + FLUSH_TIMEOUT_S


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining the app's runtime before its own graceful shutdown."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float, linger_s: float
    ) -> None:
        super().__init__(config)
        self._app = app
        self._drain_timeout_s = drain_timeout_s
        self._linger_s = linger_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._draining = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until a signal's drain (or uvicorn itself) ends the server."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain, then exit; later signals, or before start-up: uvicorn's way."""
        runtime = getattr(self._app.state, "runtime", None)
        if self._draining or runtime is None or self._loop is None or not self.started:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        # A fresh context: the signal interrupts whatever ran, and its request id is no part
        # of the drain (it would stamp the drain's log lines).
        self._loop.call_soon_threadsafe(self._begin_drain, runtime, sig, context=Context())

    def _begin_drain(self, runtime: Any, sig: int) -> None:
        log.info("signal received: draining", extra={"signal": sig})
        self._drain_task = asyncio.ensure_future(self._drain_then_exit(runtime))

    async def _drain_then_exit(self, runtime: Any) -> None:
        loop = asyncio.get_running_loop()
        linger_until = loop.time() + self._linger_s
        try:
            await runtime.drain(self._drain_timeout_s)
            # Every answer now closes its connection: a client that sends on a connection it
            # kept alive, or connects again, is answered 503 and goes elsewhere. The shutdown
            # closes idle connections and resets those still waiting to be accepted, cutting
            # off a request sent on one at that moment: a read error the client cannot safely
            # retry. So the port stays open until such clients have had their answer.
            await asyncio.sleep(linger_until - loop.time())
        finally:
            self.should_exit = True


def serve(
    settings: Settings, app: FastAPI | None = None, sockets: list[socket.socket] | None = None
) -> None:
    """Serve `app` (default: built for `settings`) until a signal drains and stops it;
    on `sockets` when given (a worker of `--workers N`), else on the settings' address."""
    app = app or build_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",  # uvloop where installed
        http="auto",  # httptools where installed
        lifespan="on",
        log_config=log_config(settings.log_level),
        access_log=settings.access_log,
        timeout_graceful_shutdown=FLUSH_TIMEOUT_S,
        # A backend that closes an idle connection before the proxy in front does turns the
        # proxy's next request on it into a 502: outlast the proxies' idle timeouts.
        timeout_keep_alive=settings.keep_alive_s,
        server_header=False,
        # X-Forwarded-For rewriting is for access logs behind a proxy on loopback; this
        # service is reached through a Service or an ingress, and it costs a layer per request.
        proxy_headers=False,
    )
    server = DrainingServer(config, app, settings.drain_timeout_s, settings.drain_linger_s)
    server.run(sockets=sockets)
