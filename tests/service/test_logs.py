"""JSON log lines: fields from `extra`, uvicorn's access records, exceptions."""

from __future__ import annotations

import logging
import sys

import orjson

from service.logs import JsonFormatter, log_config, reset_request_id, set_request_id


def record(
    name: str, msg: str, args: tuple[object, ...] = (), **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_record_is_one_json_line_with_its_extra_fields() -> None:
    line = JsonFormatter().format(record("service.runtime", "model ready", dim=32))
    assert "\n" not in line
    payload = orjson.loads(line)
    assert payload["message"] == "model ready"
    assert payload["level"] == "info"
    assert payload["logger"] == "service.runtime"
    assert payload["dim"] == 32
    assert payload["time"].endswith("+00:00")


def test_access_records_become_fields() -> None:
    args = ("127.0.0.1:5000", "POST", "/embed", "1.1", 200)
    rec = record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', args)
    payload = orjson.loads(JsonFormatter().format(rec))
    assert payload["method"] == "POST"
    assert payload["path"] == "/embed"
    assert payload["status"] == 200


def test_exceptions_are_kept() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("service", logging.ERROR, __file__, 1, "failed", (), None)
        rec.exc_info = sys.exc_info()
    payload = orjson.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in payload["exception"]


def test_config_covers_service_and_uvicorn() -> None:
    loggers = log_config("warning")["loggers"]
    assert loggers["service"]["level"] == "WARNING"
    assert {"uvicorn", "uvicorn.access", "uvicorn.error"} <= set(loggers)


def test_lines_written_for_a_request_carry_its_id() -> None:
    token = set_request_id("req-42")
    try:
        inside = orjson.loads(JsonFormatter().format(record("service.embedder", "something")))
    finally:
        reset_request_id(token)
    outside = orjson.loads(JsonFormatter().format(record("service.embedder", "something")))
    assert inside["request_id"] == "req-42"
    assert "request_id" not in outside
