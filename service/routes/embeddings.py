"""Native embedding routes: POST /embed, POST /similarity and POST / (text-embeddings-inference
shapes; `/` answers as TEI does for an embedding model: texts are embedded, a similarity object
gives similarities)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.embedder import Embeddings
from service.errors import INFERENCE_ERRORS, InvalidInput, error_responses
from service.heads import cosine, normalize
from service.routes.deps import DirectRoute, json_body, json_response, read_body, runtime_of
from service.runtime import Runtime
from service.schemas import (
    EmbedRequest,
    EmbedWindow,
    RootRequest,
    SimilarityInputs,
    SimilarityRequest,
)

router = APIRouter(route_class=DirectRoute, tags=["embeddings"])
TextOptions = EmbedRequest | SimilarityRequest | RootRequest


@router.post(
    "/embed",
    response_model=list[list[float]] | list[list[EmbedWindow]],
    responses=error_responses(*INFERENCE_ERRORS),
    summary="Embed one text or a list of texts",
    openapi_extra=json_body(EmbedRequest),
)
async def embed(request: Request) -> Response:
    """One vector per input, in input order (unit length unless `normalize` is false); with
    `windows`, each input's windows, their character spans and vectors."""
    return await _embed(request, await read_body(request, EmbedRequest))


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
    return await _similarity(request, body, body.inputs)


@router.post(
    "/",
    response_model=list[list[float]] | list[float],
    responses=error_responses(*INFERENCE_ERRORS),
    summary="Embed texts, or score a similarity object (text-embeddings-inference's root route)",
    openapi_extra=json_body(RootRequest),
)
async def root(request: Request) -> Response:
    """As /embed for texts; as /similarity for `{"source_sentence", "sentences"}`."""
    body = await read_body(request, RootRequest)
    if isinstance(body.inputs, SimilarityInputs):
        return await _similarity(request, body, body.inputs)
    return await _embed(request, body)


async def _embed(request: Request, body: EmbedRequest | RootRequest) -> Response:
    runtime = runtime_of(request)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    by_window = isinstance(body, EmbedRequest) and body.windows
    result = await runtime.embedder.embed(
        prompted(runtime, body, texts),
        truncate=body.truncate,
        keep_last=body.truncation_direction.lower() == "left",
        disconnected=request.receive,
        by_window=by_window,
    )
    if result.by_window is not None:
        return json_response(_windows(result, body.normalize), headers=usage_headers(result))
    vectors = normalize(result.vectors) if body.normalize else result.vectors
    return json_response(vectors, headers=usage_headers(result))


def _windows(result: Embeddings, unit: bool) -> list[list[dict[str, object]]]:
    """Each input's windows as /embed answers them with `windows: true`."""
    return [
        [
            {
                "start": w.start,
                "stop": w.stop,
                "tokens": w.tokens,
                "embedding": normalize(w.vector[None])[0] if unit else w.vector,
            }
            for w in windows
        ]
        for windows in result.by_window or []
    ]


async def _similarity(request: Request, body: TextOptions, inputs: SimilarityInputs) -> Response:
    runtime = runtime_of(request)
    runtime.embedder.check_count(len(inputs.sentences), "inputs.sentences")
    texts = [inputs.source_sentence, *inputs.sentences]
    result = await runtime.embedder.embed(
        prompted(runtime, body, texts),
        truncate=body.truncate,
        keep_last=body.truncation_direction.lower() == "left",
        param="inputs",
        name_of=lambda i: f"inputs.sentences[{i - 1}]" if i else "inputs.source_sentence",
        max_inputs=runtime.embedder.limits.max_inputs + 1,
        disconnected=request.receive,
    )
    return json_response(cosine(result.vectors[0], result.vectors[1:]))


def prompted(runtime: Runtime, body: TextOptions, texts: list[str]) -> list[str]:
    """`texts` behind the card's prompt named by `prompt_name` (none asked: as they are)."""
    if body.prompt_name is None:
        return texts
    prompts = runtime.bundle.card.get("prompts") or {}
    if body.prompt_name not in prompts:
        known = ", ".join(sorted(prompts)) or "none"
        raise InvalidInput(
            f"prompt_name {body.prompt_name!r} is not a prompt of this model (its prompts: "
            f"{known})",
            param="prompt_name",
        )
    return [prompts[body.prompt_name] + text for text in texts]


def usage_headers(result: Embeddings) -> dict[str, str]:
    """What /embed embedded, in headers (its body is a bare list, as TEI's)."""
    return {
        "x-embedded-tokens": str(result.tokens),
        "x-embedded-windows": str(result.windows),
        "x-truncated-inputs": str(result.truncated),
    }
