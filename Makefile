# fleetflow: `make demo` shows it working, `make test` proves it.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# Python 3.12 (ansible-core 2.21 needs it): PATH first, then pyenv's install.
PYTHON312 ?= $(shell command -v python3.12 2>/dev/null || ls -d $(HOME)/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -n1)
# The embedded Prefect server can take more than its 20 s default to start on 2 busy cores.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
DEMO_HOSTS ?= 5

.PHONY: venv demo test lint unit integration clean
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (pyenv install 3.12) or set PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/fleetflow lab up $(DEMO_HOSTS)
	$(BIN)/python flows/site.py

lint: venv
	$(BIN)/ruff check src tests flows bench
	$(BIN)/ruff format --check src tests flows bench
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit

integration: venv
	$(BIN)/pytest tests/integration

test: lint
	$(BIN)/pytest tests

clean:
	-$(BIN)/fleetflow lab down
	rm -rf $(VENV)
