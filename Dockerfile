# GenSen embedding service image. One Dockerfile, two flavours chosen by BASE_IMAGE and ONNXRUNTIME:
#
#   CPU (default): docker build -t gensen:cpu .
#   GPU:           docker build -t gensen:gpu \
#                    --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 \
#                    --build-arg ONNXRUNTIME=onnxruntime-gpu .
#
# The GPU base must match what the pinned onnxruntime-gpu wheel links against: 1.31.x from PyPI
# is built for CUDA 13 (libcudart.so.13, libcublas.so.13) and cuDNN 9. The CPU image takes the
# CPU-only `onnxruntime` wheel of the same version instead (about 300 MB less installed: the CUDA
# provider library it would never load). Only requirements.txt (runtime dependencies, no torch),
# service/ and the model bundle go into the image.
#
# Offline builds (docker/smoke-test.sh): pass a directory of pre-downloaded wheels with
# --build-context wheelhouse=DIR and --build-arg PIP_NO_INDEX=1; by default the wheelhouse is empty
# and pip uses the package index.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM scratch AS wheelhouse

# ---------------------------------------------------------------------------------------------
# A Python 3.11+ with venv on top of either base. The slim Python image already has one; the
# CUDA image (Ubuntu) has none, so the distribution's python3 is installed there.
FROM ${BASE_IMAGE} AS python-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3008 (pin apt versions) is ignored on purpose: this step runs on different distributions
# (Ubuntu for the CUDA base, Debian otherwise), so one pinned version cannot fit both; the base
# image tag is what pins the distribution.
# hadolint ignore=DL3008
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

# ---------------------------------------------------------------------------------------------
# Builder: the runtime dependencies in a virtual environment, copied whole into the final stage.
FROM python-base AS builder
ARG PIP_NO_INDEX=0
# onnxruntime (CPU image) or onnxruntime-gpu (GPU image), at requirements.txt's pinned version
ARG ONNXRUNTIME=onnxruntime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INDEX=${PIP_NO_INDEX}
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    sed "s/^onnxruntime-gpu==/${ONNXRUNTIME}==/" /tmp/requirements.txt > /tmp/requirements-image.txt \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --find-links /wheelhouse -r /tmp/requirements-image.txt

# ---------------------------------------------------------------------------------------------
# Runtime: non-root, read-only friendly (no bytecode written at run time), bundle baked in.
FROM python-base AS runtime
LABEL org.opencontainers.image.title="gensen" \
      org.opencontainers.image.description="GenSen sentence embeddings from ONNX Runtime behind a dynamic-batching REST API" \
      org.opencontainers.image.licenses="Apache-2.0"
# The user id of the service (APP_UID, not UID, which is a special variable of bash).
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" gensen \
    && useradd --system --uid "${APP_UID}" --gid "${APP_UID}" --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin gensen

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY service/ /app/service/
# The default bundle. Replace it with a volume mounted over /models/gensen-base, or point
# GENSEN_BUNDLE (or --bundle) at another mounted bundle.
COPY models/gensen-base/ /models/gensen-base/
RUN python3 -m compileall -q /app/service

# GENSEN_HOST/GENSEN_PORT are defaults, not flags, so that `-e GENSEN_PORT=...` still works.
# GENSEN_WORKERS=auto: on a GPU, one HTTP worker process per CPU of the container feeding one
# engine process; on the CPU, one process (the encoder needs the cores). Runners and threads
# are measured at start-up.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GENSEN_BUNDLE=/models/gensen-base \
    GENSEN_HOST=0.0.0.0 \
    GENSEN_PORT=8080 \
    GENSEN_WORKERS=auto

USER ${APP_UID}:${APP_UID}
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GENSEN_PORT', '8080'), timeout=4)"]

# Arguments after the image name are flags of `python -m service`, exactly as in a local run,
# e.g. `docker run IMAGE --provider cpu --batch-tokens 8192`.
ENTRYPOINT ["python", "-m", "service"]
CMD []
