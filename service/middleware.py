"""HTTP middleware of the service, pure ASGI: `EdgeMiddleware` gives each request its id,
security headers, metrics, body size limit and JSON content type; `DirectDispatch` calls the
API's endpoints without the framework's routing layers. `service.auth` holds the API-key check;
`service.app` stacks the middleware in one place.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, unexpected_error_response
from service.logs import reset_request_id, set_request_id
from service.metrics import Metrics

REQUEST_ID = b"x-request-id"
# A client's id is taken when it is short and plain (no spaces, quotes or control characters,
# so that it cannot forge log lines or headers); otherwise the service makes one up.
CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
# The API serves data, never pages; the browser pages (service.routes.pages) set their own.
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# While draining, every answer ends its connection: a client that reused it for the next request
# could send into a socket that the shutdown closes under it (a read error instead of a 503 or a
# refused connection it would retry elsewhere).
CLOSE = (b"connection", b"close")


class EdgeMiddleware:
    """Outermost middleware, one layer for everything each request needs at the edge:

    - an id (the client's `X-Request-Id` or a new one), current for the logs and echoed;
    - the security headers on every answer (a page keeps the Content-Security-Policy it sets),
      and `Connection: close` on every answer once the service drains;
    - the request's count and latency by route template and status (`service.metrics`);
    - the body size limit: a declared `Content-Length` over `max_bytes` is refused before any
      byte is read, a chunked body as it arrives; the refusal is raised from the body read,
      so that the error table answers it in the route's error shape;
    - every POST body read as JSON, whatever its content type (so `curl -d '{...}'` works);
    - an unexpected exception turned into a logged 500 that carries the headers too.

    One layer rather than four: each layer of ASGI middleware costs the event loop a
    coroutine and a wrapped `send` per request.
    """

    JSON_TYPE = (b"content-type", b"application/json")

    def __init__(self, app: ASGIApp, metrics: Metrics, max_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request within its request-id context."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_of(scope)
        extra = [(REQUEST_ID, request_id.encode()), *SECURITY_HEADERS, API_CSP]
        if scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"] = [*headers, self.JSON_TYPE]  # in place: outer layers see routing
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [*extra, CLOSE] if _draining(scope) else extra
                message["headers"] = _merged(message.get("headers", []), headers)
            await send(message)

        token = set_request_id(request_id)
        try:
            await self.app(scope, self._limited(scope, receive), send_with_headers)
        except Exception as exc:
            if started:
                raise
            state = scope["app"].state
            response = unexpected_error_response(state, scope["method"], scope["path"], exc)
            await response(scope, receive, send_with_headers)
        finally:
            reset_request_id(token)
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(route, status, time.perf_counter() - start)

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """`receive` that raises BodyTooLarge past `max_bytes`."""
        limit = self.max_bytes
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise BodyTooLarge(f"body has {declared} bytes; at most {limit} are taken")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"body is longer than {limit} bytes, the most taken")
            return message

        return limited_receive


def request_id_of(scope: Scope) -> str:
    """The client's `X-Request-Id` when it is acceptable, else a new random one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID and CLIENT_REQUEST_ID.fullmatch(value):
            return value.decode()
    # A correlation id, not a secret: the process's PRNG (no system call per request).
    return f"{random.getrandbits(128):032x}"


def _draining(scope: Scope) -> bool:
    runtime = getattr(scope["app"].state, "runtime", None)
    return bool(getattr(runtime, "draining", False))


def _merged(
    headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """`headers` plus those of `extra` it does not set already."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *(header for header in extra if header[0] not in present)]


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class DirectDispatch:
    """Innermost middleware: a request for one of `routes` (exact method and path) goes
    straight to its endpoint, and an error it raises to the app's handler of that error.

    What this skips on the API's hot routes is per-request work that they do not use:
    route matching over every path, the exception layer's wrapped `send`, FastAPI's exit
    stack and request-response wrappers (measured: a fifth of the event loop's time on
    1-sentence requests). The answers, their errors and headers are the same: the endpoints
    are the ones the router would call (`service.routes.deps.DirectRoute`), the handlers the
    ones the app registered, and everything outside this layer (edge, CORS, keys) runs as before.
    Any other request goes through the app as usual.
    """

    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], APIRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the endpoint of a direct route, or pass the request on."""
        route = self.routes.get((scope.get("method"), scope.get("path")))
        if route is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as the router sets it: the metrics count by its template
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = _handler_of(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_of(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The app's handler of the closest class of `exc` (Starlette's own lookup order)."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
