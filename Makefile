# Two commands matter: `make demo` (set up, start the local stack, run the platform end to end)
# and `make test` (set up, then every test). Everything else is a building block of those two.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3.11
UV_VERSION := 0.13.9
UV := .tools/uv/bin/uv
VENV := .venv
TRITON_VENV := .venv-triton
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/services:$(CURDIR)/data:$(CURDIR)/feature_repo
export PYTHONUNBUFFERED := 1

DEMO_ROWS ?= 20000

.PHONY: help setup lock lint fmt test demo stack-up stack-down stack-status data features train k8s-tools

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON_BOOT) -m venv .tools/uv
	.tools/uv/bin/pip install --quiet uv==$(UV_VERSION)

# The stamp files make setup a no-op until a lock file changes.
$(VENV)/.installed: requirements.lock | $(UV)
	test -x $(PY) || $(UV) venv --quiet --python $(PYTHON_BOOT) $(VENV)
	$(UV) pip sync --quiet --python $(PY) requirements.lock
	touch $@

$(TRITON_VENV)/.installed: requirements-triton.lock | $(UV)
	test -x $(TRITON_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON_BOOT) $(TRITON_VENV)
	$(UV) pip sync --quiet --python $(TRITON_VENV)/bin/python requirements-triton.lock
	touch $@

setup: $(VENV)/.installed $(TRITON_VENV)/.installed ## Create the Python environments (idempotent)

lock: | $(UV) ## Re-resolve the pinned lock files from the .in files
	$(UV) pip compile --quiet --python-version 3.11 requirements.in -o requirements.lock
	$(UV) pip compile --quiet --python-version 3.11 requirements-triton.in -o requirements-triton.lock

k8s-tools: | $(UV) ## helm, kubectl, kubernetes-validate, checkov, hadolint, CRD validators into .tools/ (idempotent)
	tools/install-k8s-tools.sh

lint: $(VENV)/.installed ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

stack-up: setup ## Start the local stack (idempotent, health-checked; logs in .stack/logs)
	$(PY) -m devstack up

stack-down: $(VENV)/.installed ## Stop what stack-up started (system services stay up)
	$(PY) -m devstack down

stack-status: $(VENV)/.installed ## Health of every stack component
	$(PY) -m devstack status

test: setup lint k8s-tools ## Set up and run every test (unit, integration on the real stack, chart)
	$(VENV)/bin/pytest
