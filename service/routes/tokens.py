"""Tokenizer routes: POST /tokenize and POST /decode, with the bundle's tokenizer
(text-embeddings-inference shapes)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.errors import REQUEST_ERRORS, error_responses
from service.routes.deps import DirectRoute, json_body, json_response, read_body, runtime_of
from service.schemas import DecodeRequest, Token, TokenizeRequest

router = APIRouter(route_class=DirectRoute, tags=["tokenizer"])


@router.post(
    "/tokenize",
    response_model=list[list[Token]],
    responses=error_responses(*REQUEST_ERRORS),
    summary="The tokens of one text or a list of texts",
    openapi_extra=json_body(TokenizeRequest),
)
async def tokenize(request: Request) -> Response:
    """Each text's tokens: id, text, whether special, character span."""
    body = await read_body(request, TokenizeRequest)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    return json_response(runtime_of(request).embedder.tokens(texts, body.add_special_tokens))


@router.post(
    "/decode",
    response_model=list[str],
    responses=error_responses(*REQUEST_ERRORS),
    summary="The text of token ids",
    openapi_extra=json_body(DecodeRequest),
)
async def decode(request: Request) -> Response:
    """One text per row of ids (a flat list of ids is one row)."""
    body = await read_body(request, DecodeRequest)
    rows = [body.ids] if body.ids and isinstance(body.ids[0], int) else body.ids
    return json_response(runtime_of(request).embedder.decode(rows, body.skip_special_tokens))
