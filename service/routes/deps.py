"""What every router shares: the route class, the runtime, the request body, the orjson answer.

The routes read their JSON body with pydantic's own parser and find the runtime on `app.state`
instead of going through FastAPI's dependency and body machinery, and `DirectRoute` calls them
with the request alone: that machinery (dependency solving, an exit stack, response
validation) cost a tenth of the service's CPU per request. FastAPI still builds each route's
OpenAPI entry, and `json_body` keeps the request bodies in it (the app adds their schemas).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from service.body import parse_body
from service.errors import NotReady
from service.runtime import Runtime

JSON = "application/json"
ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
Model = TypeVar("Model", bound=BaseModel)


class DirectRoute(APIRoute):
    """A route whose endpoint takes the `Request` and returns a `Response` itself.

    FastAPI's documented extension point (`route_class`): the handler skips dependency
    solving and response-model validation; errors still go through the app's handlers.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint itself, called with the request."""
        endpoint: Callable[[Request], Awaitable[Response]] = self.endpoint
        return endpoint


def runtime_of(request: Request) -> Runtime:
    """The app's runtime; NotReady while the lifespan has not built it."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("the model is not loaded yet")
    return runtime


async def read_body(request: Request, model: type[Model]) -> Model:
    """The request's JSON body validated as `model` (InvalidInput or MalformedBody if not)."""
    return await parse_body(await request.body(), model)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `openapi_extra` declaring `model` as the route's JSON request body."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """`content` (numpy arrays included) serialised by orjson."""
    body = orjson.dumps(content, option=ORJSON_OPTIONS)
    return Response(body, status_code, headers=headers, media_type=JSON)
