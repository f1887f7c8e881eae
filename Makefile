# The two commands a new machine needs: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck pytest browser bench clean

setup: $(STAMP)

# the labextension is built by `pip install` (hatch-jupyter-builder): its sources count too
$(STAMP): pyproject.toml constraints.txt labextension/package.json labextension/yarn.lock $(wildcard labextension/src/*.ts labextension/style/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	rm -rf nb_mlops/labextension  # the build hook skips an existing bundle: rebuild from the sources
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

pytest: setup browser
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
