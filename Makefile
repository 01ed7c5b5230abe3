# The README's two commands: `make demo` (set up, then run the demo) and `make test` (set up, then run the tests).
# Both create the virtual environment from nothing. torch==2.13.0 is installed first so pip takes the CPU build;
# pyproject.toml itself accepts torch>=2.8 for GPU users.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ctseg-installed

.PHONY: setup demo test test-all lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/ctseg demo --out demo_out

lint: setup
	$(BIN)/ruff check ctseg tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

# Slow, multi-process and golden tests as well (what CI runs after `make test`).
test-all: test
	$(BIN)/python -m pytest -q -m "slow or dist or golden" || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
