# glsim_pl — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv (if missing) and install the package with dev tools

train: $(STAMP) ## the embedded default: GLSim on the synthetic fine-grained set, CPU, a few minutes
	$(PY) -m glsim_pl.train

test: $(STAMP) ## the fast test suite (CPU, a few minutes)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

test-full: $(STAMP) ## every test, slow ones included
	HF_HUB_OFFLINE=1 $(PY) -m pytest

smoke: $(STAMP) ## one batch through train/val/test
	$(PY) -m glsim_pl.train debug=fdr

lint: $(STAMP) ## ruff lint + format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff autofix + format
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: $(STAMP) ## batched crop vs loop, GLSim vs ViT forward time
	$(PY) -m glsim_pl.bench crop && $(PY) -m glsim_pl.bench forward

.PHONY: help install train test test-full smoke lint format bench
