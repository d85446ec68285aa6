"""The compose stack: service, Prometheus scraping it, Grafana with a provisioned dashboard whose
queries name metrics that the service really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "gensen.json"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def host_path(volume: str) -> Path:
    """The host side of a short-syntax bind mount, relative to the compose file."""
    return (DOCKER / volume.split(":", 1)[0]).resolve()


def test_compose_runs_the_service_with_prometheus_and_grafana() -> None:
    compose = load(DOCKER / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"gensen", "prometheus", "grafana"}
    gensen = services["gensen"]
    assert (DOCKER / gensen["build"]["context"] / gensen["build"]["dockerfile"]).is_file()
    assert "8080:8080" in gensen["ports"]
    assert gensen["read_only"] is True
    assert gensen["cap_drop"] == ["ALL"]
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert ":" in image, f"{name}: pin the image"
        assert not image.endswith(":latest"), f"{name}: pin the image"
        for volume in services[name]["volumes"]:
            assert host_path(volume).exists(), volume


def test_gpu_compose_requests_a_gpu() -> None:
    gensen = load(DOCKER / "compose.gpu.yaml")["services"]["gensen"]
    (device,) = gensen["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert gensen["environment"]["GENSEN_PROVIDER"] == "cuda"
    assert gensen["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert gensen["build"]["args"]["ONNXRUNTIME"] == "onnxruntime-gpu"


def test_prometheus_scrapes_the_service() -> None:
    config = load(DOCKER / "prometheus" / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gensen:8080"]


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    provisioning = DOCKER / "grafana" / "provisioning"
    (source,) = load(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = load(provisioning / "dashboards" / "gensen.yaml")["providers"]
    grafana = load(DOCKER / "compose.yaml")["services"]["grafana"]
    mounted = {v.split(":")[1]: host_path(v) for v in grafana["volumes"]}
    assert mounted[provider["options"]["path"]] == DASHBOARD.parent
    panels = json.loads(DASHBOARD.read_text())["panels"]
    for panel in panels:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]


def exported_series() -> set[str]:
    """Names of the series the service exports (counters as _total, histograms as _bucket...)."""
    metrics = pytest.importorskip("service.metrics")
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {
        family.name + suffix
        for family in metrics.Metrics().registry.collect()
        for suffix in suffixes[family.type]
    }


def test_dashboard_shows_the_issue_panels_from_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bgensen_[a-z_]+", e)}
    missing = used - exported_series()
    assert not missing, f"the dashboard queries metrics the service does not export: {missing}"
    text = " ".join(exprs)
    assert "rate(gensen_requests_total" in text  # request rate
    assert "histogram_quantile(0.99, sum by (le) (rate(gensen_request_duration" in text
    assert "gensen_queue_depth" in text
    assert "gensen_batch_rows" in text  # batch size
    assert "gensen_batch_padding_ratio" in text
    for e in exprs:
        assert e.count("(") == e.count(")"), e
