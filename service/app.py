"""The app factory: `build_app(settings)` wires routes, errors and metrics; the lifespan loads the model.

Nothing happens at import: the bundle, engine and batcher are built when the app starts and are
kept on `app.state.runtime`; the routes stay thin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__
from service.bundle import BundleError
from service.engine import EngineError
from service.errors import install_error_handlers
from service.metrics import Metrics, MetricsMiddleware
from service.routes import ROUTERS
from service.runtime import Runtime
from service.schemas import REQUEST_MODELS
from service.settings import Settings

log = logging.getLogger("service.app")

DESCRIPTION = """Sentence embeddings, similarity, paraphrase detection and natural language
inference from a GenSen encoder, served from ONNX Runtime through a dynamic batcher.
Native routes answer errors as `{"error", "error_type"}`; `/v1` routes as OpenAI does."""


class JsonBodyMiddleware:
    """Reads every POST body as JSON, whatever its content type (so `curl -d '{...}'` works)."""

    JSON_TYPE = (b"content-type", b"application/json")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Mark a POST request's body as JSON unless it already says so."""
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"] = [*headers, self.JSON_TYPE]  # in place: outer middleware sees routing
        await self.app(scope, receive, send)


def build_app(settings: Settings | None = None) -> FastAPI:
    """A new app serving the bundle of `settings` (default: environment and defaults)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime = await asyncio.to_thread(Runtime.start, settings, metrics)
        except BundleError as exc:
            log.error("cannot serve the bundle", extra={"reason": str(exc)})
            raise
        except EngineError as exc:
            log.error("cannot start the engine", extra={"reason": str(exc)})
            raise
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.drain(0.0 if runtime.draining else settings.drain_timeout_s)
            await asyncio.to_thread(runtime.stop)

    app = FastAPI(
        title="GenSen embedding service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks stay off: their logs would record request inputs
        # with validation failures, and the Prometheus metrics cover requests already.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.metrics = metrics
    app.state.settings = settings
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request schemas (the routes parse their bodies themselves)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [(model, "validation") for model in REQUEST_MODELS],
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        app.openapi_schema = schema
    return app.openapi_schema
