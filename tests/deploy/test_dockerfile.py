"""The Dockerfile and its build context: hadolint-clean, and the contract the README promises."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

DOCKERFILE = REPO / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments left out."""
    joined: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return [(i.split(None, 1)[0].upper(), i.split(None, 1)[1] if " " in i else "") for i in joined]


def test_hadolint_passes(hadolint: str) -> None:
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_hadolint_rule_is_explained() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"\s*#\s*hadolint\s+ignore=(\S+)", line)
        if not match:
            continue
        comment = []
        for previous in reversed(lines[:number]):
            if not previous.strip().startswith("#"):
                break
            comment.append(previous)
        for rule in match.group(1).split(","):
            assert any(rule in c for c in comment), f"line {number + 1}: {rule} ignored unexplained"


def test_multi_stage_with_a_base_chosen_by_build_argument() -> None:
    steps = instructions()
    froms = [args for kind, args in steps if kind == "FROM"]
    assert len(froms) >= 3, froms
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm")
    assert any(f.startswith("${BASE_IMAGE}") for f in froms)


def test_cpu_image_takes_the_cpu_runtime_and_gpu_builds_can_ask_for_the_gpu_one() -> None:
    steps = instructions()
    assert ("ARG", "ONNXRUNTIME=onnxruntime") in steps
    install = next(a for k, a in steps if k == "RUN" and "pip install" in a)
    assert "s/^onnxruntime-gpu==/${ONNXRUNTIME}==/" in install
    requirements = (DOCKERFILE.parent / "requirements.txt").read_text()
    assert re.search(r"^onnxruntime-gpu==", requirements, re.MULTILINE)


def test_runtime_stage_contract() -> None:
    steps = instructions()
    last_from = max(i for i, (kind, _) in enumerate(steps) if kind == "FROM")
    runtime = steps[last_from:]
    kinds = dict(runtime)
    user = kinds["USER"].split(":")[0]
    args = dict(a.split("=", 1) for k, a in runtime if k == "ARG" and "=" in a)
    assert args.get(user.strip("${}"), user) not in ("0", "root"), "runs as root"
    assert kinds["EXPOSE"] == "8080"
    assert kinds["STOPSIGNAL"] == "SIGTERM"
    assert "/health" in kinds["HEALTHCHECK"]
    assert "urllib" in kinds["HEALTHCHECK"], "the health check needs no curl in the image"
    assert kinds["ENTRYPOINT"] == '["python", "-m", "service"]'
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "GENSEN_BUNDLE=/models/gensen-base" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "a read-only root filesystem needs no .pyc writes"


def test_only_the_service_and_the_bundle_are_copied_from_the_context() -> None:
    sources = set()
    for kind, args in instructions():
        if kind == "COPY" and "--from" not in args:
            sources.update(args.split()[:-1])
    assert sources == {"requirements.txt", "service/", "models/gensen-base/"}


def test_dockerignore_lets_in_only_what_the_image_needs() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "everything is excluded first, then the needed paths allowed"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    assert allowed == {"requirements.txt", "service/", "models/gensen-base/"}


def test_runtime_requirements_have_no_training_dependencies() -> None:
    names = {
        re.split(r"[=<>\[ ;]", line.strip(), maxsplit=1)[0].lower()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert "onnxruntime-gpu" in names
    assert not names & {"torch", "onnx", "onnxscript", "scikit-learn", "pytest"}


def gpu_base_images() -> dict[str, set[str]]:
    """Every nvidia/cuda image named in the files that build or document the GPU image."""
    found = {}
    for name in ("Dockerfile", "Makefile", "README.md", "docker/compose.gpu.yaml"):
        path = REPO / name
        if path.exists():
            found[name] = set(re.findall(r"nvidia/cuda:[\w.\-]+", path.read_text()))
    return found


def test_gpu_base_matches_what_onnxruntime_gpu_links_against() -> None:
    """onnxruntime-gpu 1.31 from PyPI is a CUDA 13 + cuDNN 9 build: the CUDA base must match."""
    info = pytest.importorskip("onnxruntime.capi.build_and_package_info")
    cuda = getattr(info, "cuda_version", None)
    if not cuda:
        pytest.skip("this onnxruntime is not a CUDA build")
    images = set().union(*gpu_base_images().values())
    assert len(images) == 1, f"one GPU base everywhere, found {gpu_base_images()}"
    tag = images.pop().split(":", 1)[1]
    assert tag.split(".")[0] == cuda.split(".")[0], f"{tag} vs onnxruntime built for CUDA {cuda}"
    assert "-cudnn-runtime-" in tag, "needs cuDNN (9 for onnxruntime-gpu >= 1.19), runtime flavour"
