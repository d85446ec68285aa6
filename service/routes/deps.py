"""What every router shares: the runtime as a dependency and the orjson answer."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Response

from service.errors import NotReady
from service.runtime import Runtime

JSON = "application/json"
ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def get_runtime(request: Request) -> Runtime:
    """The app's runtime; NotReady while the lifespan has not built it."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("the model is not loaded yet")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def json_response(content: Any, status_code: int = 200) -> Response:
    """`content` (numpy arrays included) serialised by orjson."""
    return Response(orjson.dumps(content, option=ORJSON_OPTIONS), status_code, media_type=JSON)
