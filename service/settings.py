"""One settings object for the service: environment variables `GENSEN_*` and `python -m service` flags.

Every option below is read once at start-up, from (highest priority first) the command line,
the environment, then the defaults. The defaults serve the bundled model on the local machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "gensen-base"

Provider = Literal["auto", "cuda", "cpu"]
Auto = Literal["auto"]
LogLevel = Literal["debug", "info", "warning", "error"]
# Lists are comma-separated in the environment and on the command line (JSON lists work too).
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Service configuration; each field is `GENSEN_<NAME>` in the environment and `--<name>` on the CLI."""

    model_config = SettingsConfigDict(
        env_prefix="GENSEN_",
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        extra="ignore",
    )

    bundle: Path = Field(DEFAULT_BUNDLE, description="model bundle folder (model.json, ONNX files)")
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in containers)")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on")
    provider: Provider = Field(
        "auto", description="ONNX Runtime execution provider: auto takes CUDA where it runs"
    )
    model_name: str | None = Field(
        None, description="name the model is served under (default: the bundle's name)"
    )
    workers: Annotated[int, Field(ge=1)] | Auto = Field(
        "auto",
        description="HTTP worker processes feeding one engine process (auto: one per CPU on a "
        "GPU, 1 on the CPU, where the encoder needs the cores)",
    )
    intra_op_threads: Annotated[int, Field(ge=1)] | Auto = Field(
        "auto",
        description="ONNX Runtime threads inside one inference (auto: measured at start with "
        "batch_runners, the fastest split of the CPUs)",
    )
    batch_runners: Annotated[int, Field(ge=1)] | Auto = Field(
        "auto",
        description="batches the engine runs at once, each on its own thread (auto: measured)",
    )
    batch_tokens: int | None = Field(
        None,
        ge=1,
        description="padded-token budget of one batch, longest input × rows (default by "
        "device: 8192 on CPU, 65536 on CUDA)",
    )
    max_batch_rows: int | None = Field(
        None,
        ge=1,
        description="most inputs in one batch (default by device: 64 on CPU, 1024 on CUDA)",
    )
    max_wait_ms: float = Field(
        2.0, ge=0, description="longest wait for more work after the first queued input"
    )
    queue_capacity: int = Field(
        4096, ge=1, description="most inputs waiting in the queue; past it requests get 429"
    )
    max_inputs: int = Field(512, ge=1, description="most inputs (or pairs) in one request")
    max_input_chars: int = Field(20_000, ge=1, description="longest input text, in characters")
    request_timeout_s: float = Field(
        30.0, gt=0, description="deadline of a request; past it, it is dropped with 504"
    )
    drain_timeout_s: float = Field(
        20.0, ge=0, description="on SIGTERM, longest wait for admitted work before exiting"
    )
    drain_linger_s: float = Field(
        2.0,
        ge=0,
        description="on SIGTERM, how long the port stays open after the signal, answering new "
        "work with 503 and closing each connection it answers on, before the idle connections "
        "close",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest request body, in bytes; past it 413"
    )
    inference_timeout_s: float = Field(
        10.0, gt=0, description="longest one batch may run; past it its requests get 504"
    )
    api_key_hashes: CommaList = Field(
        [],
        repr=False,
        description="SHA-256 hex digests of the accepted API keys (comma-separated); "
        "when any is set, every route but /health, /ready and the browser pages needs "
        "`Authorization: Bearer KEY`",
    )
    api_key_file: Path | None = Field(
        None, description="file of SHA-256 hex digests of API keys, one a line (# comments)"
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="serve /metrics on this port instead, without keys (default: on the main "
        "port, behind the key when keys are set)",
    )
    cors_origins: CommaList = Field(
        [], description="origins allowed by CORS (comma-separated, * for any); default: CORS off"
    )
    keep_alive_s: float = Field(
        75.0,
        gt=0,
        description="how long an idle keep-alive connection stays open; longer than the idle "
        "timeout of the proxy or load balancer in front (commonly 60 s)",
    )
    playground: bool = Field(
        True, description="serve the playground page at /playground (off: it answers 404)"
    )
    log_level: LogLevel = Field("info", description="log level of the JSON logs")
    access_log: bool = Field(False, description="log one JSON line per HTTP request")

    @field_validator("api_key_hashes", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """`a,b` -> ["a", "b"]; a JSON list or a repeated flag gives a list already."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _metrics_port_differs(self) -> Self:
        """The metrics listener cannot share the API's port."""
        if self.metrics_port == self.port:
            raise ValueError(f"metrics_port must differ from port ({self.port})")
        return self

    @model_validator(mode="after")
    def _queue_fits_a_request(self) -> Self:
        """A request of `max_inputs` pairs (two texts each) must fit the queue, or it never gets in."""
        if self.queue_capacity < 2 * self.max_inputs:
            msg = (
                f"queue_capacity ({self.queue_capacity}) must be at least 2 × max_inputs "
                f"({self.max_inputs}): a request of pairs queues two texts per pair"
            )
            raise ValueError(msg)
        return self


def settings_from_cli(args: list[str] | None = None) -> Settings:
    """Settings from the command line (`args`, default `sys.argv[1:]`) over the environment."""
    return Settings(_cli_parse_args=args if args is not None else True)
