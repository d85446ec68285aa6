"""One settings object for the service: environment variables `GENSEN_*` and `python -m service` flags.

Every option below is read once at start-up, from (highest priority first) the command line,
the environment, then the defaults. The defaults serve the bundled model on the local machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "gensen-base"

Provider = Literal["auto", "cuda", "cpu"]
LogLevel = Literal["debug", "info", "warning", "error"]


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
    intra_op_threads: int = Field(
        1, ge=0, description="ONNX Runtime threads per inference on CPU (0: one per core)"
    )
    batch_tokens: int = Field(
        8192, ge=1, description="padded-token budget of one batch (longest input × rows)"
    )
    max_batch_rows: int = Field(64, ge=1, description="most inputs in one batch")
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
    log_level: LogLevel = Field("info", description="log level of the JSON logs")
    access_log: bool = Field(False, description="log one JSON line per HTTP request")

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
