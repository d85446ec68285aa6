"""Structured logs: one JSON object per line, for the service's and uvicorn's loggers.

Request texts and API keys are never logged: log calls pass counts, names and timings only.
A line written while a request is handled carries its `request_id` (see service.middleware).
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _request_id.get()


def set_request_id(request_id: str | None) -> contextvars.Token[str | None]:
    """Make `request_id` the current one; `reset_request_id(token)` restores the previous one."""
    return _request_id.set(request_id)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    """Restore the request id that was current before `set_request_id` returned `token`."""
    _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as a JSON line: time, level, logger, message and the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            payload["message"] = "request"
            payload.update(zip(ACCESS_FIELDS, record.args, strict=False))
        else:
            payload["message"] = record.getMessage()
        request_id = current_request_id()
        if request_id is not None:
            payload["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def log_config(level: str) -> dict[str, Any]:
    """A `logging.config` dictionary sending the service's and uvicorn's logs as JSON to stderr."""
    level = level.upper()
    handler = {"handlers": ["json"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "service": handler,
            "uvicorn": handler,
            "uvicorn.error": {"level": level},
            "uvicorn.access": handler,
        },
    }


def configure_logging(level: str) -> dict[str, Any]:
    """Install the JSON logging configuration now and return it (uvicorn takes it too)."""
    config = log_config(level)
    logging.config.dictConfig(config)
    return config
