"""The app factory: `build_app(settings)` wires routes, errors, middleware and metrics; the
lifespan loads the model.

Nothing happens at import: the bundle, engine and batcher are built when the app starts and are
kept on `app.state.runtime`; the routes stay thin. The API keys are read when the app is built,
so that a bad key file stops the service before it listens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.middleware.cors import CORSMiddleware

from service import __version__
from service.auth import OPEN_PATHS, ApiKeys, AuthMiddleware
from service.bundle import BundleError
from service.engine import Engine, EngineError
from service.errors import install_error_handlers
from service.metrics import Metrics, serve_metrics
from service.middleware import DirectDispatch, EdgeMiddleware
from service.routes import ROUTERS
from service.routes.deps import DirectRoute
from service.routes.pages import install_pages
from service.runtime import EngineFactory, Runtime
from service.schemas import REQUEST_MODELS, with_limits
from service.settings import Settings

log = logging.getLogger("service.app")

DESCRIPTION = """Sentence embeddings, similarity, paraphrase detection and natural language
inference from a GenSen encoder, served from ONNX Runtime through a dynamic batcher.
Native routes answer errors as `{"error", "error_type"}`; `/v1` routes as OpenAI does."""
CORS_HEADERS = {
    "allow_methods": ["GET", "POST"],
    "allow_headers": ["Authorization", "Content-Type", "X-Request-Id"],
    "expose_headers": ["X-Request-Id", "Retry-After"],
    "max_age": 600,
}


def build_app(
    settings: Settings | None = None,
    *,
    engine_factory: EngineFactory = Engine,
    engine_address: str | None = None,
) -> FastAPI:
    """A new app serving the bundle of `settings` (default: environment and defaults).

    `engine_factory` builds the inference engine (tests pass one that fails or stalls);
    with `engine_address` (an HTTP worker of `--workers N`) the app runs no engine and sends
    its work to the engine process listening there.
    Raises AuthConfigError if the configured API key digests cannot be used.
    """
    settings = settings or Settings()
    metrics = Metrics()
    keys = ApiKeys.load(settings.api_key_hashes, settings.api_key_file)

    async def start_runtime() -> Runtime:
        if engine_address is not None:
            return await Runtime.connect(settings, metrics, engine_address)
        return await asyncio.to_thread(Runtime.start, settings, metrics, engine_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime = await start_runtime()
        except BundleError as exc:
            log.error("cannot serve the bundle", extra={"reason": str(exc)})
            raise
        except EngineError as exc:
            log.error("cannot start the engine", extra={"reason": str(exc)})
            raise
        app.state.runtime = runtime
        # with workers, the engine process serves the separate metrics port for all of them
        stop_metrics = _serve_metrics(settings, metrics) if engine_address is None else _nothing
        try:
            yield
        finally:
            await runtime.drain(0.0 if runtime.draining else settings.drain_timeout_s)
            await asyncio.to_thread(runtime.stop)
            stop_metrics()

    app = FastAPI(
        title="GenSen embedding service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # service.routes.pages serves /docs from the package's own files; no /redoc
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks stay off: their logs would record request inputs
        # with validation failures, and the Prometheus metrics cover requests already.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.metrics = metrics
    app.state.settings = settings
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_pages(app, playground=settings.playground)
    app.openapi = lambda: _openapi(app, keys.enabled)  # type: ignore[method-assign]
    _add_middleware(app, settings, metrics, keys)
    return app


def _add_middleware(app: FastAPI, settings: Settings, metrics: Metrics, keys: ApiKeys) -> None:
    """The middleware stack, innermost first (each `add_middleware` wraps the ones before)."""
    app.add_middleware(DirectDispatch, routes=_direct_routes())
    if keys.enabled:
        log.info("API keys required", extra={"keys": len(keys)})
        app.add_middleware(AuthMiddleware, keys=keys)
    if settings.cors_origins:  # outside the key check: browsers send preflights without keys
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, **CORS_HEADERS)
    app.add_middleware(EdgeMiddleware, metrics=metrics, max_bytes=settings.max_body_bytes)


def _direct_routes() -> dict[tuple[str, str], DirectRoute]:
    """The API's direct routes by method and path (the routers are included without a prefix,
    and none of these routes has path parameters)."""
    return {
        (method, route.path): route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, DirectRoute) and "{" not in route.path
        for method in route.methods
    }


def _nothing() -> None:
    return None


def _serve_metrics(settings: Settings, metrics: Metrics) -> Callable[[], None]:
    """Start the separate metrics listener when `metrics_port` is set; the function stopping it."""
    if settings.metrics_port is None:
        return lambda: None
    log.info("metrics served on their own port", extra={"metrics_port": settings.metrics_port})
    return serve_metrics(metrics, settings.host, settings.metrics_port)


def _openapi(app: FastAPI, keys_required: bool) -> dict[str, Any]:
    """FastAPI's document plus the request schemas (the routes parse their bodies themselves)
    with the configured limits, and, when keys are required, the bearer scheme on every route
    but the open ones. Kept once the model is loaded (its dimension bounds `dimensions`)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [(model, "validation") for model in REQUEST_MODELS],
            ref_template="#/components/schemas/{model}",
        )
        settings: Settings = app.state.settings
        runtime = getattr(app.state, "runtime", None)
        dim = runtime.bundle.dim if runtime is not None else None
        prompts = sorted(runtime.bundle.card.get("prompts") or {}) if runtime is not None else None
        vocab = runtime.tokenizer.vocab_size if runtime is not None else None
        limited = with_limits(
            defs["$defs"], settings.max_inputs, settings.max_input_chars, dim, prompts, vocab
        )
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(limited)
        if keys_required:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            for path in OPEN_PATHS:
                for operation in schema["paths"].get(path, {}).values():
                    operation["security"] = []
        if runtime is None:
            return schema
        app.openapi_schema = schema
    return app.openapi_schema
