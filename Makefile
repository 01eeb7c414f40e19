# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create the virtual environment and install everything they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-dali lint typecheck unit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch first, so that nothing pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dfserve demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not slow"

test: lint typecheck
	$(BIN)/pytest

# The DALI pipeline (dfserve.repository.dali) on the CPU, in its own environment: DALI's wheel (~424 MB,
# nvidia-dali-cuda120) stays out of the project's venv; tests/dali is skipped there, saying so.
test-dali:
	test -x .venv-dali/bin/python || $(PYTHON) -m venv .venv-dali
	.venv-dali/bin/python -m pip install -q nvidia-dali-cuda120 numpy pillow pydantic pytest
	PYTHONPATH=src:. .venv-dali/bin/pytest tests/dali --noconftest -p no:cacheprovider

clean:
	rm -rf $(VENV) .venv-dali demo-out .pytest_cache .mypy_cache .ruff_cache
