"""OpenAI-compatible routes: POST /v1/embeddings and GET /v1/models (errors in OpenAI's shape).

The official `openai` client works unchanged: it asks for base64 by default, which is answered
as little-endian float32 bytes.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request, Response

from service.errors import (
    INFERENCE_ERRORS,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Unauthorized,
    error_responses,
)
from service.heads import truncate_dims
from service.routes.deps import DirectRoute, json_body, json_response, read_body, runtime_of
from service.schemas import OpenAIEmbeddingRequest, OpenAIEmbeddingResponse, OpenAIModelList

router = APIRouter(prefix="/v1", route_class=DirectRoute, tags=["openai"])
OWNER = "gensen-service"


@router.post(
    "/embeddings",
    response_model=OpenAIEmbeddingResponse,
    responses=error_responses(*INFERENCE_ERRORS, ModelNotFound, openai=True),
    summary="Create embeddings (OpenAI API)",
    openapi_extra=json_body(OpenAIEmbeddingRequest),
)
async def create_embeddings(request: Request) -> Response:
    """Unit vectors of `input`, cut to `dimensions` and re-normalised when asked."""
    body = await read_body(request, OpenAIEmbeddingRequest)
    runtime = runtime_of(request)
    if body.model is not None and body.model != runtime.model_name:
        raise ModelNotFound(
            f"model {body.model!r} is not served here; this service serves {runtime.model_name!r}",
            param="model",
        )
    if body.dimensions is not None and body.dimensions > runtime.bundle.dim:
        raise InvalidInput(
            f"dimensions: at most {runtime.bundle.dim}, the model's dimension", param="dimensions"
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await runtime.embedder.embed(texts, param="input", disconnected=request.receive)
    vectors = truncate_dims(result.vectors, body.dimensions)
    if body.encoding_format == "base64":
        data = [_item(i, _base64(row)) for i, row in enumerate(vectors)]
    else:
        data = [_item(i, row) for i, row in enumerate(vectors)]
    usage = {
        "prompt_tokens": result.tokens,
        "total_tokens": result.tokens,
        "windows": result.windows,
    }
    return json_response(
        {"object": "list", "data": data, "model": runtime.model_name, "usage": usage}
    )


@router.get(
    "/models",
    response_model=OpenAIModelList,
    responses=error_responses(Unauthorized, NotReady, openai=True),
    summary="The served model (OpenAI API)",
)
async def list_models(request: Request) -> Response:
    """One entry: the served model's name."""
    runtime = runtime_of(request)
    created = int(runtime.bundle.path.joinpath("model.json").stat().st_mtime)
    model = {"id": runtime.model_name, "object": "model", "created": created, "owned_by": OWNER}
    return json_response({"object": "list", "data": [model]})


def _item(index: int, embedding: object) -> dict[str, object]:
    return {"object": "embedding", "index": index, "embedding": embedding}


def _base64(row: np.ndarray) -> str:
    return base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii")
