# The README's two commands: `make demo` (set up, then run the demo) and `make test` (set up, then run the tests).
# Both create the virtual environment from nothing. torch==2.13.0 is installed first so pip takes the CPU build;
# pyproject.toml itself accepts torch>=2.8 for GPU users. The napari plugin (napari_plugin/) is installed with
# one Qt binding, PyQt6. The cpu-fast extra (OpenVINO, NNCF, ONNX Runtime) gives `ctseg export` and `--runtime`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ctseg-installed
# pytest-qt must use the one installed binding.
export PYTEST_QT_API = pyqt6

.PHONY: setup demo test test-all lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml napari_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,serve,cpu-fast]'
	$(BIN)/python -m pip install --quiet 'napari[pyqt6]' pytest-qt pytest-xvfb npe2 -e napari_plugin
	# Bytecode now, as pip does for a regular install: an editable one run with PYTHONDONTWRITEBYTECODE set would
	# compile every module at each start (about 0.1 s of `ctseg convert`).
	$(BIN)/python -m compileall -q ctseg napari_plugin
	touch $(STAMP)

demo: setup
	$(BIN)/ctseg demo --out demo_out

lint: setup
	$(BIN)/ruff check ctseg tests benchmarks napari_plugin scripts
	$(BIN)/mypy
	$(BIN)/npe2 validate ctseg-napari

test: lint
	$(BIN)/python -m pytest -q

# Slow, multi-process and golden tests as well (what CI runs after `make test`).
test-all: test
	$(BIN)/python -m pytest -q -m "slow or dist or golden"

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
