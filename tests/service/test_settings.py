"""Settings: defaults, environment (GENSEN_*), command-line flags, and their checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import DEFAULT_BUNDLE, REPO_ROOT, Settings, settings_from_cli


def test_defaults_serve_the_bundled_model_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("GENSEN_")]:
        monkeypatch.delenv(name)
    settings = settings_from_cli([])
    assert settings.bundle == DEFAULT_BUNDLE
    assert DEFAULT_BUNDLE.parts[-2:] == ("models", "gensen-base")
    assert (settings.host, settings.port, settings.provider) == ("127.0.0.1", 8080, "auto")


def test_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSEN_PORT", "9000")
    monkeypatch.setenv("GENSEN_MAX_WAIT_MS", "7.5")
    settings = settings_from_cli(["--provider", "cpu", "--max-batch-rows", "16", "--access-log"])
    assert settings.port == 9000
    assert settings.max_wait_ms == 7.5
    assert settings.provider == "cpu"
    assert settings.max_batch_rows == 16
    assert settings.access_log


def test_flag_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSEN_PORT", "9000")
    assert settings_from_cli(["--port", "9001"]).port == 9001


@pytest.mark.parametrize(
    "field",
    [
        "bundle",
        "host",
        "port",
        "provider",
        "intra_op_threads",
        "batch_tokens",
        "max_batch_rows",
        "max_wait_ms",
        "queue_capacity",
        "max_inputs",
        "max_input_chars",
        "request_timeout_s",
        "drain_timeout_s",
        "log_level",
        "max_body_bytes",
        "inference_timeout_s",
        "api_key_hashes",
        "api_key_file",
        "metrics_port",
        "cors_origins",
        "keep_alive_s",
    ],
)
def test_every_issue_setting_exists(field: str) -> None:
    assert field in Settings.model_fields


def test_lists_are_comma_separated_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSEN_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("GENSEN_API_KEY_HASHES", '["aa", "bb"]')
    settings = settings_from_cli([])
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.api_key_hashes == ["aa", "bb"]
    assert settings_from_cli(["--cors-origins", "*"]).cors_origins == ["*"]


def test_security_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("GENSEN_")]:
        monkeypatch.delenv(name)
    settings = settings_from_cli([])
    assert settings.api_key_hashes == []  # keys off
    assert settings.api_key_file is None
    assert settings.cors_origins == []  # CORS off
    assert settings.metrics_port is None  # /metrics on the main port
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert "api_key_hashes" not in repr(Settings(api_key_hashes=["ab" * 32]))


def test_metrics_port_must_differ() -> None:
    with pytest.raises(ValidationError, match="metrics_port"):
        Settings(port=9000, metrics_port=9000)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(provider="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="queue_capacity"):
        Settings(queue_capacity=10, max_inputs=8)


def test_the_readme_lists_every_setting() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`--{name.replace('_', '-')}`" in readme, name
        assert f"`GENSEN_{name.upper()}`" in readme, name
