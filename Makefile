# Set-up and the two jobs a new user runs: `make demo` and `make test`.
# TORCH_SPEC pins the CPU wheel available on our machines; override it elsewhere, e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-script test test-fast test-slow lint bench bundle check-bundle clean
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

$(STAMP): pyproject.toml setup.py hope_engine/algebra/kernels/_ckernels.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[widgets,test]"
	touch $(STAMP)

setup: $(STAMP)

# The main job: print the bundled model's polynomial, then open the quickstart notebook in JupyterLab, trusted (its
# saved panel is drawn from the file before anything runs; JupyterLab draws widgets only in trusted notebooks).
demo: setup
	$(BIN)/python -m hope_engine.io.demo
	$(BIN)/jupyter trust notebooks/01_quickstart.ipynb
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/01_quickstart.ipynb

# The same expansion in the terminal only (no browser).
demo-script: setup
	$(BIN)/python -m hope_engine.io.demo

test: setup
	$(BIN)/ruff check hope_engine hope_widgets tests benchmarks
	bash js/check-bundle.sh
	$(BIN)/python -m pytest -q tests --nbval-lax notebooks
	# the suite once more on the pure-torch kernels (what runs with no compiled extension, and on GPUs); the browser
	# tests see the same numbers through the panel and are not repeated
	HOPE_NATIVE=0 $(BIN)/python -m pytest -q tests -m "not slow and not browser"
	# the tracer's fallback (make_fx, where the recorder declines) on the engine, model and trust tests
	HOPE_TRACER=make_fx $(BIN)/python -m pytest -q tests/test_engine_*.py tests/test_models_coverage.py tests/test_trust_*.py tests/test_op_coverage.py

test-fast: setup
	$(BIN)/python -m pytest -q -x tests -m "not slow and not browser"

# The long sweeps (the whole OpInfo database, many-example property tests), not run by `make test`.
test-slow: setup
	$(BIN)/python -m pytest -q tests -m slow

lint: setup
	$(BIN)/ruff check hope_engine hope_widgets tests benchmarks

bench: setup
	$(BIN)/python benchmarks/run.py

# Rebuild the front-end bundle after editing js/src (commit hope_widgets/static/ afterwards).
bundle:
	cd js && npm ci && npm run build

check-bundle:
	bash js/check-bundle.sh

clean:
	rm -rf $(VENV) build *.egg-info
