# Posthorn — `make run` starts everything on SQLite; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv node-deps run test test-fast check docs format bench system-deps clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  after 'make run' or 'make venv', the CLI is $(BIN)/posthorn"

venv: $(STAMP)  ## create .venv and install Posthorn with its test tools

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## migrate and start API + worker on SQLite (./data)
	$(BIN)/posthorn serve

system-deps:  ## install the Debian packages the tests need (only what is missing)
	scripts/system-deps.sh

node-deps:  ## install Nodemailer for the SMTP client tests
	scripts/node-deps.sh

test: $(STAMP) system-deps node-deps  ## the whole suite, on SQLite and on a throwaway PostgreSQL
	scripts/with-postgres.sh $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP) node-deps  ## the suite on SQLite only (needs `make system-deps` once)
	$(BIN)/pytest -q $(PYTEST_ARGS)

check: $(STAMP)  ## ruff, ruff format --check, mypy --strict
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

docs: $(STAMP)  ## regenerate the settings reference in README.md
	$(BIN)/python scripts/settings_reference.py --write

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: $(STAMP)  ## throughput benchmarks (print figures)
	scripts/system-deps.sh bench
	POSTHORN_PG_FSYNC=on scripts/with-postgres.sh $(BIN)/python bench/bench_throughput.py
	POSTHORN_PG_FSYNC=on scripts/with-postgres.sh $(BIN)/python bench/bench_smtp.py

clean:  ## remove the virtualenv and local data
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
