"""Native embedding routes: POST /embed and POST /similarity (text-embeddings-inference shapes)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.embedder import Embeddings
from service.errors import INFERENCE_ERRORS, error_responses
from service.heads import cosine, normalize
from service.routes.deps import DirectRoute, json_body, json_response, read_body, runtime_of
from service.schemas import EmbedRequest, SimilarityRequest

router = APIRouter(route_class=DirectRoute, tags=["embeddings"])


@router.post(
    "/embed",
    response_model=list[list[float]],
    responses=error_responses(*INFERENCE_ERRORS),
    summary="Embed one text or a list of texts",
    openapi_extra=json_body(EmbedRequest),
)
async def embed(request: Request) -> Response:
    """One vector per input, in input order (unit length unless `normalize` is false)."""
    body = await read_body(request, EmbedRequest)
    runtime = runtime_of(request)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    result = await runtime.embedder.embed(
        texts, truncate=body.truncate, disconnected=request.receive
    )
    vectors = normalize(result.vectors) if body.normalize else result.vectors
    return json_response(vectors, headers=usage_headers(result))


@router.post(
    "/similarity",
    response_model=list[float],
    responses=error_responses(*INFERENCE_ERRORS),
    summary="Cosine similarity of one sentence with others",
    openapi_extra=json_body(SimilarityRequest),
)
async def similarity(request: Request) -> Response:
    """Cosine of `source_sentence` with each of `sentences`, in order."""
    body = await read_body(request, SimilarityRequest)
    runtime = runtime_of(request)
    runtime.embedder.check_count(len(body.inputs.sentences), "inputs.sentences")
    texts = [body.inputs.source_sentence, *body.inputs.sentences]
    result = await runtime.embedder.embed(
        texts,
        param="inputs",
        name_of=lambda i: f"inputs.sentences[{i - 1}]" if i else "inputs.source_sentence",
        max_inputs=runtime.embedder.limits.max_inputs + 1,
        disconnected=request.receive,
    )
    return json_response(cosine(result.vectors[0], result.vectors[1:]))


def usage_headers(result: Embeddings) -> dict[str, str]:
    """What /embed embedded, in headers (its body is a bare list, as TEI's)."""
    return {
        "x-embedded-tokens": str(result.tokens),
        "x-embedded-windows": str(result.windows),
        "x-truncated-inputs": str(result.truncated),
    }
