# Set-up and the two jobs a new user runs: `make demo` and `make test`.
# TORCH_SPEC pins the CPU wheel available on our machines; override it elsewhere, e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-script test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[widgets,test]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m hope_engine.demo

test: setup
	$(BIN)/ruff check hope_engine hope_widgets tests benchmarks
	$(BIN)/python -m pytest -q tests

test-fast: setup
	$(BIN)/python -m pytest -q -x tests -m "not slow and not browser"

lint: setup
	$(BIN)/ruff check hope_engine hope_widgets tests benchmarks

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
