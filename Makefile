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

.PHONY: system-deps venv galaxy demo docs test lint unit integration molecule bench clean
system-deps:
	tools/install-system-deps.sh

venv: system-deps $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (pyenv install 3.12) or set PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The roles and collections of requirements.yml, into galaxy/ (ansible.cfg reads them there).
# Does nothing while they are installed as the file reads, and runs no ansible-galaxy (no
# network) while its lists are empty.
galaxy: $(VENV)/.installed
	$(BIN)/python -m fleetflow.ops.galaxy

demo: venv galaxy
	$(BIN)/fleetflow lab up $(DEMO_HOSTS)
	$(BIN)/python flows/site.py
	@echo
	@echo "Where to look:"
	@echo "  hosts:      $(BIN)/fleetflow lab status   (ssh: $(BIN)/fleetflow lab ssh lab-01)"
	@echo "  inventory:  inventory/lab/hosts.yml"
	@echo "  runs, logs and per-host artifacts: $(BIN)/prefect server start, then http://127.0.0.1:4200"
	@echo "  more flows: $(BIN)/python flows/run_script.py ; $(BIN)/python flows/rolling_update.py"
	@echo "  the end-of-day chain of scripts as a DAG: docs/how-to/end-of-day.md (flows/end_of_day.py)"
	@echo "  the full stack (server on PostgreSQL, workers, deployments): docs/operations/stack.md"

lint: venv galaxy
	$(BIN)/ruff check src tests flows bench tools
	$(BIN)/ruff format --check src tests flows bench tools
	$(BIN)/mypy
	$(BIN)/mypy flows
	$(BIN)/fleetflow check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

# The manual (mkdocs.yml) with live reload; warnings shown, not fatal, while writing.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --no-strict -a 127.0.0.1:8000

unit: venv
	$(BIN)/pytest tests/unit

integration: venv galaxy
	$(BIN)/pytest tests/integration

# Every role's Molecule scenario (each starts and removes a lab host of its own).
molecule: venv
	set -e; for scenario in roles/*/molecule/default; do \
		(cd $$scenario/../.. && PATH=$(CURDIR)/$(BIN):$$PATH molecule test); done

# The performance benchmarks (issue #9; about 40 minutes on 2 cores). Each starts its own
# lab and Prefect server and writes its section of bench/RESULTS.md.
bench: venv
	set -e; for b in overhead speed events scale checkout; do $(BIN)/fleetflow bench $$b; done

# Two processes, one test module each at a time; then, alone, the tests marked exclusive.
test: lint
	$(BIN)/pytest -n 2 --dist loadfile -m "not exclusive" --durations=20 tests
	$(BIN)/pytest -m exclusive --durations=5 tests

clean:
	-$(BIN)/fleetflow lab down
	rm -rf $(VENV) galaxy
