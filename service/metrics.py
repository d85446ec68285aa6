"""All Prometheus metrics of the service (prefix `gensen_`); `service.middleware` counts requests.

Each app gets its own registry, so that several apps (tests) never collide. With `--workers N`
the processes write their metrics to the folder named by PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode, set up by `python -m service` before any process
imports prometheus-client), and `/metrics` in any of them shows the sums over all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

PREFIX = "gensen"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class Metrics:
    """The service's metrics, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request to answer",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected_requests", "Requests refused, by reason", ["reason"], registry=r
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth",
            "Inputs admitted and waiting for a batch",
            registry=r,
            multiprocess_mode="livesum",  # set by the engine process alone
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time from admission to the first batch of a request",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            f"{PREFIX}_batch_rows", "Inputs per batch", buckets=ROW_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            f"{PREFIX}_batch_tokens",
            "Padded tokens per batch (longest × rows)",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            f"{PREFIX}_batch_padding_ratio",
            "Share of padding in a batch's tokens",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "Time of one model run",
            ["model"],
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.inputs = Counter(f"{PREFIX}_inputs", "Inputs embedded", registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens embedded (without padding)", registry=r)
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "The served model; always 1",
            ["name", "version", "provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._encoder_seconds = self.inference_seconds.labels(model="encoder")
        self._request_series: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request by route template and status, and its latency."""
        key = (route, status)
        series = self._request_series.get(key)
        if series is None:  # the children of (route, status), looked up once
            labels = {"route": route, "status": str(status)}
            series = (self.requests.labels(**labels), self.request_seconds.labels(**labels))
            self._request_series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def observe_batch(
        self, rows: int, padded_tokens: int, real_tokens: int, seconds: float
    ) -> None:
        """Record one encoder batch."""
        self.batch_rows.observe(rows)
        self.batch_tokens.observe(padded_tokens)
        self.padding_ratio.observe(1.0 - real_tokens / padded_tokens if padded_tokens else 0.0)
        self._encoder_seconds.observe(seconds)
        self.inputs.inc(rows)
        self.tokens.inc(real_tokens)

    def set_model(self, name: str, version: str, provider: str) -> None:
        """Publish which model is served on which execution provider."""
        self.model_info.labels(name=name, version=version, provider=provider).set(1)

    def exposed(self) -> CollectorRegistry:
        """The registry to expose: this one, or every process's metrics with `--workers`."""
        if not os.environ.get(MULTIPROC_DIR):
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.exposed()), CONTENT_TYPE_LATEST


def serve_metrics(metrics: Metrics, host: str, port: int) -> Callable[[], None]:
    """Serve `metrics` at http://host:port/metrics (its own thread); returns the stop function."""
    server, thread = start_http_server(port, addr=host, registry=metrics.exposed())

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
