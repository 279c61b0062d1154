# pluggy-pipeline developer tasks. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.13 matches the Lambda runtime; pyenv keeps it off PATH by default, so look for it.
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null) python3)
VENV := .venv
VENV_SAM := .venv-sam
BIN := $(VENV)/bin
SAM := $(VENV_SAM)/bin/sam
# sam build needs the runtime's python3.13 on PATH: the app venv provides it.
SAM_ENV := PATH="$(CURDIR)/$(BIN):$(PATH)" SAM_CLI_TELEMETRY=0
BUILD_DIR := .aws-sam/build

.PHONY: help install install-app demo local test test-fast lint build invoke bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The emulator is a distribution of its own (pluggy-emulator/); the local tools and tests use it.
$(VENV)/.installed: $(BIN)/python pyproject.toml layers/common/requirements.txt pluggy-emulator/pyproject.toml
	$(BIN)/pip install --quiet -e ./pluggy-emulator -e '.[dev]'
	touch $@

$(SAM):
	$(PYTHON) -m venv $(VENV_SAM)
	$(VENV_SAM)/bin/pip install --quiet --upgrade pip
	$(VENV_SAM)/bin/pip install --quiet -r tools/requirements-sam.txt

install: $(VENV)/.installed $(SAM) ## Create .venv (app + dev tools) and .venv-sam (SAM CLI, cfn-lint)

install-app: $(VENV)/.installed

demo: $(VENV)/.installed ## Run the main job locally on the embedded default (moto + Pluggy emulator)
	$(BIN)/pluggy-pipeline demo

local: $(VENV)/.installed ## Serve the whole pipeline locally (moto + Pluggy emulator) until Ctrl-C
	$(BIN)/pluggy-pipeline local

test: install build ## Run the whole test suite (unit, handler, built artifact, integration)
	$(BIN)/pytest

test-fast: $(VENV)/.installed ## Unit and handler tests only
	$(BIN)/pytest -m "not slow and not sam"

lint: install ## ruff, mypy, sam validate --lint, cfn-lint (with serverless rules)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(SAM_ENV) $(SAM) validate --lint --template template.yaml
	$(VENV_SAM)/bin/cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml

# The Lambda runtime brings its own boto3; built-artifact runs get the same pin, installed apart.
BOTO3_PIN := $(shell grep -o '"boto3==[^"]*"' pyproject.toml | tr -d '"')

build: install ## sam build (no container) into .aws-sam/build, plus a runtime-like boto3 for local invokes
	$(SAM_ENV) $(SAM) build --template template.yaml --build-dir $(BUILD_DIR)
	$(BIN)/pip install --quiet --upgrade --target .aws-sam/lambda-runtime $(BOTO3_PIN)

invoke: ## Run a built function on an event: make invoke FUNCTION=receiver EVENT=events/receiver/item-created.json
	$(BIN)/python -m pluggy_pipeline_local.invoke --build-dir $(BUILD_DIR) --function $(FUNCTION) --event $(EVENT) \
		$(if $(ENV_VARS),--env-vars $(ENV_VARS),--env-vars events/env.json)

bench: $(VENV)/.installed ## Run the benchmarks and write docs/benchmarks.md
	$(BIN)/python -m bench

clean: ## Remove build output and virtualenvs
	rm -rf .aws-sam $(VENV) $(VENV_SAM) .pytest_cache .mypy_cache .ruff_cache
