# Bucket Brigade: every target does its own set-up (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-browser run test lint bench capacity clean

setup:
	@scripts/setup.sh

setup-browser:
	@scripts/setup.sh --browser

## Start the whole system locally (Redis, a mixer, a recorder, a gateway): http://localhost:8080
## make run HTTPS=1: HTTPS for phones on the LAN (https://<this machine>:8443, its own certificate)
run: setup
	$(PY) -m brigade up$(if $(HTTPS), --https)

## Full test suite (installs Chromium for the browser tests when missing)
test: setup-browser lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## Benchmarks: numbers and JSON in bench-results/
bench: setup
	$(PY) -m bench.all

capacity: setup
	$(PY) -m bench.capacity

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
