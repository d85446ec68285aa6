"""Kubernetes manifests: each kustomization renders, every resource is valid under
`kubernetes-validate --strict`, and the Deployment keeps the promises of the README and DESIGN.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = ["base", "overlays/cpu", "overlays/gpu"]
OVERLAYS = ["overlays/cpu", "overlays/gpu"]
KINDS = {
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Service",
}


@pytest.fixture(scope="module")
def rendered(kustomize_build: list[str]) -> dict[str, str]:
    """Each kustomization rendered to one multi-document YAML text."""
    out = {}
    for name in KUSTOMIZATIONS:
        result = subprocess.run(
            [*kustomize_build, str(REPO / "k8s" / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
        out[name] = result.stdout
    return out


def resources(text: str) -> dict[str, dict[str, Any]]:
    """The rendered resources by kind (one of each kind here)."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one resource of each kind expected"
    return by_kind


def container(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_renders_every_kind(rendered: dict[str, str], name: str) -> None:
    assert set(resources(rendered[name])) == KINDS


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kubernetes_validate_strict_accepts_every_resource(
    rendered: dict[str, str], kubernetes_validate: str, name: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered[name])
    result = subprocess.run(
        [kubernetes_validate, "--strict", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert len(re.findall(r"\bpassed for resource\b", output)) == len(KINDS), output


@pytest.mark.parametrize("name", OVERLAYS)
def test_probes_and_pod_hardening(rendered: dict[str, str], name: str) -> None:
    objs = resources(rendered[name])
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    c = container(objs)
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])


@pytest.mark.parametrize("name", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(
    rendered: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = pytest.importorskip("service.server")
    objs = resources(rendered[name])
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    command = container(objs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop > 0
    # the drain (admitted work, kept-alive connections), then uvicorn's own graceful shutdown
    drain_and_flush = server.exit_bound_s(settings_of(objs, monkeypatch))
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain_and_flush


def settings_of(objs: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings as a pod gets them: the ConfigMap's variables, else defaults."""
    settings = pytest.importorskip("service.settings")
    for key, value in objs["ConfigMap"]["data"].items():
        monkeypatch.setenv(key, value)
    return settings.Settings()


@pytest.mark.parametrize("name", OVERLAYS)
def test_configmap_holds_only_real_settings(
    rendered: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pytest.importorskip("service.settings")
    objs = resources(rendered[name])
    data = objs["ConfigMap"]["data"]
    fields = settings.Settings.model_fields
    for key in data:
        assert key.startswith("GENSEN_"), key
        assert key.removeprefix("GENSEN_").lower() in fields, f"{key} is no service setting"
    loaded = settings_of(objs, monkeypatch)
    assert str(loaded.port) == str(container(objs)["ports"][0]["containerPort"])
    assert loaded.host == "0.0.0.0"
    env_from = container(objs)["envFrom"][0]["configMapRef"]["name"]
    assert env_from == objs["ConfigMap"]["metadata"]["name"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_selectors_pick_the_deployment_pods(rendered: dict[str, str], name: str) -> None:
    objs = resources(rendered[name])
    labels = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        objs["Deployment"]["spec"]["selector"]["matchLabels"],
        objs["Service"]["spec"]["selector"],
        objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        objs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector, "an empty selector would pick every pod"
        assert selector.items() <= labels.items()
    target = objs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        objs["Deployment"]["metadata"]["name"],
    )
    assert objs["Service"]["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("name", OVERLAYS)
def test_autoscaling_and_disruption_budget(rendered: dict[str, str], name: str) -> None:
    objs = resources(rendered[name])
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert "replicas" not in objs["Deployment"]["spec"], "the HPA owns the replica count"
    assert hpa["minReplicas"] >= 2, "a drain or a rollout must keep one pod serving"
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert objs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_queue_depth_alternative_names_a_real_metric() -> None:
    text = (REPO / "k8s" / "base" / "hpa.yaml").read_text()
    commented = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert "name: gensen_queue_depth" in commented
    assert "prometheus-adapter" in commented
    metrics = pytest.importorskip("service.metrics")
    names = {family.name for family in metrics.Metrics().registry.collect()}
    assert "gensen_queue_depth" in names


def test_network_policy_opens_only_the_http_port(rendered: dict[str, str]) -> None:
    policy = resources(rendered["overlays/cpu"])["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["egress"] == [], "the service needs no egress"
    ports = [p["port"] for rule in policy["ingress"] for p in rule["ports"]]
    assert ports == ["http"]


def test_cpu_overlay(rendered: dict[str, str]) -> None:
    objs = resources(rendered["overlays/cpu"])
    c = container(objs)
    assert objs["ConfigMap"]["data"]["GENSEN_PROVIDER"] == "cpu"
    assert c["image"].endswith("-cpu")
    assert "nvidia.com/gpu" not in c["resources"]["limits"]


def test_gpu_overlay(rendered: dict[str, str]) -> None:
    objs = resources(rendered["overlays/gpu"])
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    c = container(objs)
    assert objs["ConfigMap"]["data"]["GENSEN_PROVIDER"] == "cuda"
    assert c["image"].endswith("-gpu")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # The overlay patches the container, it does not replace it.
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
