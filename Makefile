# enginehub — every target creates its own virtualenv and installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The NASA C-MAPSS files when present (else the simulator replays its synthetic fleet).
CMAPSS_DIR ?= $(abspath ../shared/datasets/cmapss)
ifneq ($(wildcard $(CMAPSS_DIR)/train_FD001.txt),)
export ENGINEHUB_CMAPSS_DIR ?= $(CMAPSS_DIR)
endif
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help fuzz demo test test-unit test-integration test-e2e test-server-mode load-smoke bench-load bench lint format venv azurite clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,load,analysis]'
	touch $@

venv: $(STAMP) ## create .venv and install enginehub with all extras

node_modules/.bin/azurite-blob: package.json
	@if command -v npm >/dev/null; then npm install --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: Azurite-backed tests will be skipped" >&2; fi

azurite: node_modules/.bin/azurite-blob ## install the npm azurite package (blob checkpoint store)

DEMO_ARGS ?= --units 100 --rate 500 --duration 60

demo: venv ## the main job: 100 simulated engines at 500 msg/s, self-hosted stack, ingested into SQLite
	@if [ -n "$$ENGINEHUB_CMAPSS_DIR" ]; then $(VENV)/bin/enginehub-datasets validate; \
	else echo "no C-MAPSS files found: the fleet replays the synthetic dataset"; fi
	$(VENV)/bin/simulate $(DEMO_ARGS)

test: venv azurite ## the whole test suite (unit + integration on loopback)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv ## unit tests only (no I/O)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv azurite ## integration tests only (real processes on loopback)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv azurite ## end-to-end suites: simulator -> IoT Hub -> Event Hubs -> ingest nodes -> SQLite
	$(PY) -m pytest tests/integration/e2e $(PYTEST_ARGS)

test-server-mode: venv azurite ## the integration suites with every emulator as a child process
	$(PY) -m pytest tests/integration --enginehub-target process $(PYTEST_ARGS)

load-smoke: venv azurite ## short smokes of every Locust scenario (a few seconds each)
	$(PY) -m pytest tests/integration/loadtests $(PYTEST_ARGS)

bench-load: venv ## load benchmarks: throughput (SDK baseline first, then 0.9 x it for 60 s) and failover, one JSON line each
	$(PY) -m enginehub.loadtests throughput --duration 60 --json
	$(PY) -m enginehub.loadtests failover --json

bench: venv ## component benchmarks: Event Hubs CPU/event, IoT Hub CPU/message, ingest throughput ratios
	$(PY) benchmarks/eventhubs_cpu.py
	$(PY) benchmarks/iothub_cpu.py
	$(PY) benchmarks/ingest_throughput.py --repeat 3

FUZZ_CASES ?= 100000

fuzz: venv ## every decoder's fuzz target for $(FUZZ_CASES) cases each; prints cases/s and any finding
	nice -n 15 $(PY) benchmarks/fuzz.py --cases $(FUZZ_CASES)

lint: venv ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove the virtualenv, node_modules and caches
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache build *.egg-info
