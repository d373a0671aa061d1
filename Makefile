# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The Durable Streams conformance suite and TypeScript client (npm), for `make test`.
DURABLE_TESTS := tests/durable_streams/node_modules/.installed

.PHONY: run test test-fast bench screenshots system-test-packages

## Install everything and start the whole app (Redis, RQ worker, gunicorn) on http://127.0.0.1:8000.
run: $(VENV)/.installed
	$(BIN)/python -m chatapp.launcher

## Install what the tests need and run the whole suite (lint, types, tests, browser tests).
test: system-test-packages $(VENV)/.installed-test $(DURABLE_TESTS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

## Everyday work: lint, types and the tests that need no process of the app's (2-3 minutes).
test-fast: system-test-packages $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -m "unit or redis"

## Run the benchmark scenarios on loopback and print their figures (see bench/).
bench: system-test-packages $(VENV)/.installed-test
	$(BIN)/python -m bench

## Take the screenshots (docs/how-it-works.md) of the chat page (desktop light and dark, phone) into docs/.
screenshots: system-test-packages $(VENV)/.installed-test
	$(BIN)/python -m tests.screenshots docs

$(VENV)/.installed: pyproject.toml
	@echo "chatapp: installing its Python packages into $(VENV) (the first time: a few minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e .
	@echo "chatapp: installed"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The Durable Streams conformance suite and TypeScript client (npm, versions locked).
$(DURABLE_TESTS): tests/durable_streams/package-lock.json
	npm ci --prefix tests/durable_streams --no-audit --no-fund --loglevel=error
	touch $@

# Debian's redis-server, chromium, nginx, openssl and npm (each package installs the command of its
# name): the missing ones installed with apt-get when running as root, otherwise they must
# already be there (see the README). `test-fast` needs redis-server only.
TEST_PACKAGES = redis-server chromium nginx openssl npm
test-fast: TEST_PACKAGES = redis-server
system-test-packages:
	@missing=""; for command in $(TEST_PACKAGES); do \
		command -v $$command >/dev/null || missing="$$missing $$command"; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "The tests need Debian's$$missing: sudo apt-get install$$missing"; \
		exit 1; \
	fi
