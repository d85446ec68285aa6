"""The running model: bundle, tokenizer, engine, batcher, embedder and heads, wired once.

`start_engine` loads and warms the encoder and starts its batcher (readiness comes only after
a real inference). `Runtime.start` puts the front end (tokenizer, embedder, heads) on top of it
in the same process; `Runtime.connect` builds the same front end in an HTTP worker process,
on the engine process's batcher reached through `service.ipc`. `Runtime.drain` turns the
service not-ready, stops admitting and waits for admitted work; `Runtime.stop` ends the
batcher. The app's lifespan calls these; nothing runs at import.
"""

from __future__ import annotations

import gc
import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastapi
import tokenizers

from service import __version__
from service.batcher import Batcher, BatchLimits
from service.bundle import Bundle, load_bundle
from service.embedder import Embedder, RequestLimits
from service.engine import Engine
from service.errors import NotReady
from service.heads import PairHeads
from service.ipc import EngineClient
from service.metrics import Metrics
from service.planner import measure_step_cost
from service.sessions import runtime_version
from service.settings import Settings
from service.tokenization import TextTokenizer

log = logging.getLogger("service.runtime")
WARM_UP_TEXTS = ["warm up", "a somewhat longer sentence to warm up the encoder with padding"]
# Builds the engine of a bundle: `Engine` itself, or a test's engine (a failing one, a slow one).
EngineFactory = Callable[..., Engine]


@dataclass
class EngineSide:
    """The encoder and its batcher, as the engine process (or the only process) runs them."""

    bundle: Bundle
    tokenizer: TextTokenizer
    engine: Engine
    batcher: Batcher

    def facts(self) -> dict[str, Any]:
        """What the front end reports of the engine (in /info and its start-up log)."""
        return {
            "provider": self.engine.provider,
            "intra_op_threads": self.engine.parallelism.intra_op_threads,
            "alone_intra_op_threads": self.engine.parallelism.alone_threads
            or self.engine.parallelism.intra_op_threads,
        }


def start_engine(
    settings: Settings, metrics: Metrics, engine_factory: EngineFactory = Engine
) -> EngineSide:
    """Load the bundle, open the engine, warm it up and start the batcher (blocking).

    `engine_factory(bundle, provider=..., intra_op_threads=..., runners=...)` builds the
    engine (None: chosen by the engine for its device).
    """
    began = time.perf_counter()
    bundle = load_bundle(settings.bundle)
    tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
    engine = engine_factory(
        bundle,
        provider=settings.provider,
        intra_op_threads=_unless_auto(settings.intra_op_threads),
        runners=_unless_auto(settings.batch_runners),
    )
    sample = tokenizer.encode(WARM_UP_TEXTS).ids
    engine.warm_up(sample, tokenizer.pad_id)
    step_cost = measure_step_cost(engine, token=sample[-1][0])
    limits = batch_limits(settings, engine, step_cost)
    engine.reserve_memory(limits.max_batch_rows, limits.batch_tokens, limits.runners)
    batcher = Batcher(engine, tokenizer.pad_id, limits, metrics)
    batcher.start()
    metrics.set_model(bundle.name, bundle.version, engine.provider)
    log.info(
        "engine ready",
        extra={
            "model": bundle.name,
            "version": bundle.version,
            "provider": engine.provider,
            "runners": limits.runners,
            "intra_op_threads": engine.parallelism.intra_op_threads,
            "alone_intra_op_threads": engine.parallelism.alone_threads,
            "max_batch_rows": limits.max_batch_rows,
            "batch_tokens": limits.batch_tokens,
            "step_cost_rows": round(step_cost, 2),
            "peak_resident_mib": _peak_resident_mib(),
            "startup_s": round(time.perf_counter() - began, 3),
        },
    )
    return EngineSide(bundle, tokenizer, engine, batcher)


@dataclass
class Runtime:
    """Everything a request needs, built from the settings by `Runtime.start` or `connect`."""

    settings: Settings
    metrics: Metrics
    bundle: Bundle
    tokenizer: TextTokenizer
    batcher: Batcher | EngineClient
    embedder: Embedder
    heads: PairHeads
    model_name: str
    engine_facts: dict[str, Any]
    engine: Engine  # this process's engine: the encoder's, or the heads alone in a worker
    ready: bool = False
    draining: bool = False
    started_at: float = field(default_factory=time.time)

    @classmethod
    def start(
        cls, settings: Settings, metrics: Metrics, engine_factory: EngineFactory = Engine
    ) -> Runtime:
        """Everything in this process: the engine side, then the front end on it (blocking)."""
        side = start_engine(settings, metrics, engine_factory)
        return cls._front(
            settings, metrics, side.bundle, side.tokenizer, side.batcher, side.engine, side.facts()
        )

    @classmethod
    async def connect(cls, settings: Settings, metrics: Metrics, address: str) -> Runtime:
        """The front end of an HTTP worker process, on the engine process at `address`."""
        client = EngineClient(address)
        await client.connect()
        bundle = load_bundle(settings.bundle)
        tokenizer = TextTokenizer(bundle.files["tokenizer"], bundle.max_tokens)
        heads_engine = Engine(bundle, provider="cpu", encoder=False)  # small: CPU is enough
        client.start()
        return cls._front(
            settings, metrics, bundle, tokenizer, client, heads_engine, client.hello["engine"]
        )

    @classmethod
    def _front(
        cls,
        settings: Settings,
        metrics: Metrics,
        bundle: Bundle,
        tokenizer: TextTokenizer,
        batcher: Batcher | EngineClient,
        heads_engine: Engine,
        engine_facts: dict[str, Any],
    ) -> Runtime:
        """The front end on `batcher`, open for requests."""
        runtime = cls(
            settings=settings,
            metrics=metrics,
            bundle=bundle,
            tokenizer=tokenizer,
            batcher=batcher,
            embedder=Embedder(
                tokenizer,
                batcher,
                _request_limits(settings),
                bundle.dim,
                heads_engine.project if bundle.pools_features else None,
                bundle.context_mark,
            ),
            heads=PairHeads(heads_engine, bundle, metrics),
            engine=heads_engine,
            model_name=settings.model_name or bundle.name,
            engine_facts=engine_facts,
        )
        return runtime._open()

    def _open(self) -> Runtime:
        # Everything built so far lives as long as the process: the garbage collector need not
        # look at it again (full collections had taken a fifth of the event loop's CPU).
        gc.collect()
        gc.freeze()
        self.embedder.accepting = self.ready = True
        log.info("model ready", extra={"model": self.bundle.name, **self.engine_facts})
        return self

    async def drain(self, timeout: float) -> bool:
        """Turn not-ready, refuse new work with 503, and wait up to `timeout` s for admitted work;
        what is still queued then is answered 503."""
        if not self.draining:
            log.info("draining", extra={"unfinished": self.batcher.unfinished})
        self.draining = True
        self.ready = self.embedder.accepting = False
        self.batcher.stop_admitting()
        done = await self.batcher.wait_idle(timeout)
        if not done:
            # answered now with 503 (retry elsewhere), not cut off later by the server's shutdown
            failed = self.batcher.fail_queued(NotReady("shutting down: not computed in time"))
            log.warning("drain timed out", extra={"unfinished": failed})
        return done

    def stop(self) -> None:
        """End the batcher's worker (work still queued is answered 503)."""
        self.ready = self.embedder.accepting = False
        self.batcher.stop()
        log.info("stopped")

    def info(self) -> dict[str, Any]:
        """The model card, limits and versions, for /info."""
        s, limits = self.settings, self.batcher.limits
        return {
            "model_id": self.model_name,
            "model_version": self.bundle.version,
            "dim": self.bundle.dim,
            "max_tokens": self.bundle.max_tokens,
            # text-embeddings-inference's names for the limits its clients read
            "max_input_length": self.bundle.max_tokens,
            "max_client_batch_size": s.max_inputs,
            "max_batch_tokens": limits.batch_tokens,
            "provider": self.engine_facts.get("provider", "unknown"),
            "limits": {
                "max_inputs": s.max_inputs,
                "max_input_chars": s.max_input_chars,
                "batch_tokens": limits.batch_tokens,
                "max_batch_rows": limits.max_batch_rows,
                "batch_runners": limits.runners,
                "intra_op_threads": self.engine_facts.get("intra_op_threads", 0),
                # a batch that runs while no other does (low load) takes this many threads
                "alone_intra_op_threads": self.engine_facts.get("alone_intra_op_threads", 0),
                "workers": self.engine_facts.get("workers", 1),
                "group_by_length": limits.group_by_length,
                "max_wait_ms": s.max_wait_ms,
                "queue_capacity": s.queue_capacity,
                "request_timeout_s": s.request_timeout_s,
                "inference_timeout_s": s.inference_timeout_s,
                "max_body_bytes": s.max_body_bytes,
                "step_cost_rows": round(limits.step_cost, 2),
            },
            "versions": {
                "service": __version__,
                "onnxruntime": runtime_version(),
                "tokenizers": tokenizers.__version__,
                "fastapi": fastapi.__version__,
                "python": sys.version.split()[0],
            },
            "card": self.bundle.card,
        }


def batch_limits(settings: Settings, engine: Engine, step_cost: float) -> BatchLimits:
    """The batcher's limits: the settings where set, else what fits the engine's device."""
    device = engine.device_limits
    return BatchLimits(
        batch_tokens=settings.batch_tokens or device.batch_tokens,
        max_batch_rows=settings.max_batch_rows or device.max_batch_rows,
        runners=engine.parallelism.runners,
        group_by_length=device.group_by_length,
        max_wait_s=settings.max_wait_ms / 1000,
        queue_capacity=settings.queue_capacity,
        step_cost=step_cost,
        inference_timeout_s=settings.inference_timeout_s,
    )


def _peak_resident_mib() -> float:
    """The most memory this process has held resident (after `Engine.reserve_memory`, about
    what it holds while serving: what a container's memory limit must allow)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _unless_auto(value: int | str) -> int | None:
    return None if value == "auto" else int(value)


def _request_limits(settings: Settings) -> RequestLimits:
    return RequestLimits(
        max_inputs=settings.max_inputs,
        max_input_chars=settings.max_input_chars,
        timeout_s=settings.request_timeout_s,
    )
