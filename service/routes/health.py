"""Operational routes: GET /health, /ready, /info and /metrics. None of them waits on inference."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.errors import NotReady, RouteNotFound, Unauthorized, error_responses
from service.routes.deps import DirectRoute, json_response, runtime_of
from service.schemas import Info, Status

router = APIRouter(route_class=DirectRoute, tags=["operations"])


@router.get(
    "/health",
    response_model=Status,
    responses=error_responses(NotReady),
    summary="Liveness: the process answers and its worker runs",
)
async def health(request: Request) -> Response:
    """200 while the process serves (also while an inference runs); 503 if the batcher's
    worker thread has died or an inference is stuck past the inference timeout."""
    runtime = getattr(request.app.state, "runtime", None)
    problem = runtime.batcher.problem() if runtime is not None else None
    if problem is not None and not runtime.draining:
        raise NotReady(problem)
    return json_response({"status": "ok"})


@router.get(
    "/ready",
    response_model=Status,
    responses=error_responses(NotReady),
    summary="Readiness: model loaded, warm-up passed, not draining",
)
async def ready(request: Request) -> Response:
    """200 when the service takes work; 503 while starting, draining or stuck."""
    runtime = runtime_of(request)
    if runtime.draining:
        raise NotReady("draining: the service is shutting down")
    if not runtime.ready:
        raise NotReady("warming up")
    problem = runtime.batcher.problem()
    if problem is not None:
        raise NotReady(problem)
    return json_response({"status": "ready"})


@router.get(
    "/info",
    response_model=Info,
    responses=error_responses(Unauthorized, NotReady),
    summary="The model card, limits and versions",
)
async def info(request: Request) -> Response:
    """What is served, on which execution provider, within which limits."""
    return json_response(runtime_of(request).info())


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **error_responses(Unauthorized, RouteNotFound),
    },
)
async def metrics(request: Request) -> Response:
    """All metrics in the Prometheus text format (404 here when `--metrics-port` serves them)."""
    if request.app.state.settings.metrics_port is not None:
        raise RouteNotFound(f"no route {request.method} {request.url.path} on this port")
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
