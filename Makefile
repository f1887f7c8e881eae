# The two commands a new machine needs: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the TypeScript side of the labextension: a change here (and only here) rebuilds the bundle
LAB_SOURCES := labextension/package.json labextension/yarn.lock labextension/tsconfig.json \
	$(wildcard labextension/src/*.ts labextension/src/*.tsx labextension/style/* labextension/schema/*.json)
LAB_STAMP := $(VENV)/.labextension-sources

.PHONY: setup demo test lint typecheck pytest browser postgres bench clean

setup: $(STAMP)

# `pip install` builds the bundle (hatch-jupyter-builder, needs node >= 18) only when
# nb_mlops/labextension is missing: drop a stale bundle when its sources changed, never otherwise
# (a change to pyproject.toml or constraints.txt alone reinstalls without node)
$(LAB_STAMP): $(LAB_SOURCES)
	rm -rf nb_mlops/labextension
	mkdir -p $(VENV)
	touch $(LAB_STAMP)

$(STAMP): pyproject.toml constraints.txt $(LAB_STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/nb-mlops demo

lint: setup
	$(BIN)/ruff check nb_mlops tests benchmarks
	$(BIN)/ruff format --check nb_mlops tests benchmarks

typecheck: setup
	$(BIN)/mypy nb_mlops

browser:
	bash scripts/ensure_chromium.sh

# the team-store tests start their own PostgreSQL cluster: only the binaries are needed
postgres:
	bash scripts/ensure_postgres.sh

pytest: setup browser postgres
	$(BIN)/python -m pytest

# The labextension's TypeScript: dependencies exactly as locked (yarn.lock is committed; CI
# refuses to write one), then prettier, eslint and tsc, then the jest unit tests.
JLPM := PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/jlpm
.PHONY: ts-deps lint-ts test-ts

ts-deps: setup
	cd labextension && $(JLPM) install --immutable

lint-ts: ts-deps
	cd labextension && $(JLPM) lint:check

test-ts: ts-deps
	cd labextension && $(JLPM) test

test: lint typecheck lint-ts test-ts pytest

bench: setup
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .nb_mlops .pytest_cache .mypy_cache .ruff_cache
