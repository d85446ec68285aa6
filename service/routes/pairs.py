"""Sentence-pair routes: POST /paraphrase and POST /nli, through the bundle's heads."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Request, Response

from service.errors import INFERENCE_ERRORS, error_responses
from service.routes.deps import DirectRoute, json_body, json_response, read_body, runtime_of
from service.runtime import Runtime
from service.schemas import NliRequest, NliResult, ParaphraseRequest, ParaphraseResult

router = APIRouter(route_class=DirectRoute, tags=["pairs"])


async def embed_pairs(
    runtime: Runtime, first: list[str], second: list[str], sides: tuple[str, str], request: Request
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of both sides of each pair, computed as one job; `sides` names them in errors."""
    embedder = runtime.embedder
    embedder.check_count(len(first), "pairs", "pairs")
    n = len(first)
    result = await embedder.embed(
        first + second,
        param="pairs",
        name_of=lambda i: f"pairs[{i % n}]{sides[i // n]}",
        max_inputs=2 * embedder.limits.max_inputs,
        disconnected=request.receive,
    )
    return result.vectors[: len(first)], result.vectors[len(first) :]


@router.post(
    "/paraphrase",
    response_model=list[ParaphraseResult],
    responses=error_responses(*INFERENCE_ERRORS),
    summary="Whether each pair of texts is a paraphrase",
    openapi_extra=json_body(ParaphraseRequest),
)
async def paraphrase(request: Request) -> Response:
    """For each `[a, b]`: the paraphrase probability and the verdict at the model's threshold."""
    body = await read_body(request, ParaphraseRequest)
    runtime = runtime_of(request)
    first = [a for a, _ in body.pairs]
    second = [b for _, b in body.pairs]
    u, v = await embed_pairs(runtime, first, second, ("[0]", "[1]"), request)
    return json_response(await asyncio.to_thread(runtime.heads.paraphrase, u, v))


@router.post(
    "/nli",
    response_model=list[NliResult],
    responses=error_responses(*INFERENCE_ERRORS),
    summary="Natural language inference on premise/hypothesis pairs",
    openapi_extra=json_body(NliRequest),
)
async def nli(request: Request) -> Response:
    """For each pair: entailment, neutral or contradiction, with the probability of each."""
    body = await read_body(request, NliRequest)
    runtime = runtime_of(request)
    premises = [pair.premise for pair in body.pairs]
    hypotheses = [pair.hypothesis for pair in body.pairs]
    u, v = await embed_pairs(runtime, premises, hypotheses, (".premise", ".hypothesis"), request)
    return json_response(await asyncio.to_thread(runtime.heads.nli, u, v))
