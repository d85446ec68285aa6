"""Request and response models of the API (pydantic); the OpenAPI schema is generated from them.

A text's schema states what the service takes: not empty, not only whitespace, no control
characters other than tab and line breaks (checked by `service.embedder`, whose messages say
which input is at fault). `with_limits` adds the configured counts and lengths to the schemas.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

# Control characters refused in texts (Unicode Cc but tab, line feed, vertical tab, form feed,
# carriage return), as a regular-expression class; the embedder uses the same one.
CONTROL_CLASS = "\\x00-\\x08\\x0e-\\x1f\\x7f-\\x9f"
TEXT_PATTERN = f"^[^{CONTROL_CLASS}]*[^\\s{CONTROL_CLASS}][^{CONTROL_CLASS}]*$"
TEXT_SCHEMA = {"minLength": 1, "pattern": TEXT_PATTERN}
Text = Annotated[str, Field(json_schema_extra=TEXT_SCHEMA)]
Texts = Annotated[list[Text], Field(min_length=1)]
NliLabel = Literal["entailment", "neutral", "contradiction"]


class _Request(BaseModel):
    # strict: JSON types are taken as they are (no "true" for true, no 3.0 for 3); unknown
    # fields are ignored, as OpenAI clients send some this service has no use for.
    model_config = ConfigDict(extra="ignore", strict=True)


# Native routes (text-embeddings-inference shapes)


TruncationDirection = Literal["right", "left", "Right", "Left"]


class _TextOptions(_Request):
    """What text-embeddings-inference clients send with the texts of /embed, / and /similarity."""

    truncate: bool | None = Field(
        None,
        description=(
            "inputs past the model's token limit: left out or null, embedded whole in windows "
            "whose vectors are pooled; true, cut at the limit; false, refused with 413"
        ),
    )
    truncation_direction: TruncationDirection = Field(
        "right", description="with truncate true: keep the first tokens (right) or the last (left)"
    )
    prompt_name: str | None = Field(
        None, description="a prompt of the model card's `prompts`, put before each text"
    )


class EmbedRequest(_TextOptions):
    """POST /embed."""

    inputs: Text | Texts = Field(description="one text or a list of texts")
    normalize: bool = Field(True, description="scale each vector to unit length")
    windows: bool = Field(
        False,
        description=(
            "answer each input's windows instead of one vector per input: per input, a list of "
            "{start, stop, tokens, embedding}, the window's character span [start, stop) in "
            "the input, its tokens and its vector (what the input's characters in that span "
            "alone are embedded to); an input within the token limit is one window"
        ),
    )


class EmbedWindow(BaseModel):
    """One window of an input, in the answer of POST /embed with `windows: true`."""

    start: int = Field(description="first character of the window in the input")
    stop: int = Field(description="one past its last character")
    tokens: int = Field(description="its tokens")
    embedding: list[float]


class TokenizeRequest(_Request):
    """POST /tokenize (text-embeddings-inference's shape)."""

    inputs: Text | Texts = Field(description="one text or a list of texts")
    add_special_tokens: bool = Field(True, description="as the encoder is given them")


# a token id: `with_limits` bounds it by the served vocabulary
TokenId = Annotated[
    int,
    Field(ge=0),
    WithJsonSchema({"type": "integer", "minimum": 0, "x-token-id": True}),
]


class DecodeRequest(_Request):
    """POST /decode (text-embeddings-inference's shape)."""

    ids: (
        Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
    ) = Field(description="token ids, or a list of rows of them")
    skip_special_tokens: bool = True

    @field_validator("ids", mode="before")
    @classmethod
    def _integral_numbers(cls, value: Any) -> Any:
        """JSON Schema counts 13.0 as an integer; so do the ids (13.5 stays refused)."""

        def integral(x: Any) -> Any:
            if isinstance(x, list):
                return [integral(item) for item in x]
            return int(x) if isinstance(x, float) and x.is_integer() else x

        return integral(value)


class Token(BaseModel):
    """One token of /tokenize."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class SimilarityInputs(_Request):
    """The texts of a similarity request."""

    source_sentence: Text
    sentences: Texts


class SimilarityRequest(_TextOptions):
    """POST /similarity: cosine of `source_sentence` with each of `sentences`."""

    inputs: SimilarityInputs


class RootRequest(_TextOptions):
    """POST /, as text-embeddings-inference answers it: texts are embedded, a
    `{"source_sentence", "sentences"}` object gives similarities."""

    inputs: Text | Texts | SimilarityInputs = Field(
        description="one text or a list of texts (as /embed), or a similarity object"
    )
    normalize: bool = Field(True, description="with texts: scale each vector to unit length")


class ParaphraseRequest(_Request):
    """POST /paraphrase."""

    pairs: Annotated[list[tuple[Text, Text]], Field(min_length=1)]


class ParaphraseResult(BaseModel):
    """Whether one pair is a paraphrase, at the model's threshold."""

    paraphrase: bool
    probability: float


class NliPair(_Request):
    """One premise and hypothesis."""

    premise: Text
    hypothesis: Text


class NliRequest(_Request):
    """POST /nli."""

    pairs: Annotated[list[NliPair], Field(min_length=1)]


class NliResult(BaseModel):
    """The most likely label of one pair and the probability of each label."""

    label: NliLabel
    scores: dict[NliLabel, float]


# OpenAI-compatible routes (/v1)


class OpenAIEmbeddingRequest(_Request):
    """POST /v1/embeddings, as OpenAI's API takes it."""

    input: Text | Texts = Field(description="one text or a list of texts (token arrays: not taken)")
    model: str | None = Field(None, description="must be the served model's name when given")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None, ge=1, description="keep the first `dimensions` values, then re-normalise"
    )
    user: str | None = None

    @field_validator("dimensions", mode="before")
    @classmethod
    def _integral_number(cls, value: Any) -> Any:
        """JSON Schema counts 8.0 as an integer; so does this field (8.5 stays refused)."""
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_arrays(cls, value: Any) -> Any:
        """OpenAI also takes token ids; this model's vocabulary is not OpenAI's, so text only."""
        if isinstance(value, list) and any(isinstance(x, int | list) for x in value):
            raise ValueError("token arrays are not taken here; send the text")
        return value


class OpenAIEmbedding(BaseModel):
    """One embedding: floats, or base64 of little-endian float32."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    """Tokens the request used, and how the inputs were embedded."""

    prompt_tokens: int = Field(description="tokens of the inputs, all embedded")
    total_tokens: int
    windows: int = Field(
        description="encoder rows: one per input, more for inputs past the model's token limit"
    )


class OpenAIEmbeddingResponse(BaseModel):
    """Answer of POST /v1/embeddings."""

    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    """One served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    """Answer of GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


# Errors, health and information


class NativeError(BaseModel):
    """Error shape of the native routes."""

    error: str
    error_type: str


class OpenAIErrorDetail(BaseModel):
    """The inner object of an OpenAI error."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """Error shape of the /v1 routes."""

    error: OpenAIErrorDetail


class Status(BaseModel):
    """Answer of /health and /ready."""

    status: str


class Info(BaseModel):
    """Answer of GET /info: what is served, how, and within which limits."""

    model_id: str
    model_version: str
    dim: int
    max_tokens: int
    max_input_length: int = Field(description="TEI's name: tokens in one window of the model")
    max_client_batch_size: int = Field(description="TEI's name: inputs per request")
    max_batch_tokens: int = Field(description="TEI's name: tokens per encoder batch")
    provider: str
    limits: dict[str, bool | float | int]
    versions: dict[str, str]
    card: dict[str, Any]


REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    EmbedRequest,
    SimilarityRequest,
    RootRequest,
    TokenizeRequest,
    DecodeRequest,
    ParaphraseRequest,
    NliRequest,
    OpenAIEmbeddingRequest,
)


def with_limits(
    schema: Any,
    max_inputs: int,
    max_chars: int,
    dim: int | None,
    prompts: list[str] | None = None,
    vocab: int | None = None,
) -> Any:
    """`schema` (request JSON schemas) with the configured limits stated: at most `max_inputs`
    items in a list, `max_chars` characters in a text, and when the model is known `dimensions`
    up to `dim`, `prompt_name` among the card's `prompts`, token ids below `vocab`."""
    if isinstance(schema, list):
        return [with_limits(item, max_inputs, max_chars, dim, prompts, vocab) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: with_limits(value, max_inputs, max_chars, dim, prompts, vocab)
        for key, value in schema.items()
        if key != "x-token-id"
    }
    if schema.get("x-token-id") and vocab is not None:
        out["maximum"] = vocab - 1
    token_row = isinstance(schema.get("items"), dict) and schema["items"].get("x-token-id")
    if out.get("type") == "array" and "maxItems" not in out:
        # a row of token ids is bounded as a text is: no more tokens than characters
        out["maxItems"] = max_chars if token_row else max_inputs
    if out.get("pattern") == TEXT_PATTERN:
        out["maxLength"] = max_chars
    properties = out.get("properties", {})
    dimensions = properties.get("dimensions")
    if dim is not None and dimensions is not None:
        for option in dimensions.get("anyOf", [dimensions]):
            if option.get("type") == "integer":
                option["maximum"] = dim
    if prompts is not None and "prompt_name" in properties:
        named = [{"type": "string", "enum": prompts}] if prompts else []
        properties["prompt_name"] = {
            "anyOf": [*named, {"type": "null"}],
            "default": None,
            "description": properties["prompt_name"].get("description", ""),
        }
    return out
