# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create the virtual environment and install everything they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.installed-$(HASH)
# timm imports torchvision, and torchvision from the package index imports only beside the torch it was built for
# (a CUDA build, about 5.5 GB): the timm tests get that pair in their own environment, the main one stays CPU-only
TIMM_VENV  ?= .venv-timm
TIMM_STAMP := $(TIMM_VENV)/.installed-$(HASH)
# the older Transformers range that [build] still allows, proven by the export and build tests
TF4_VENV   ?= .venv-tf4
TF4_STAMP  := $(TF4_VENV)/.installed-$(HASH)
TRANSFORMERS     := transformers>=5.20,<6
TRANSFORMERS_OLD := transformers>=4.45,<5

.PHONY: install demo test test-main test-timm test-transformers4 test-dali lint typecheck unit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch first, so that nothing pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,dev]' '$(TRANSFORMERS)'
	rm -f $(VENV)/.installed-*
	touch $@

$(TIMM_STAMP): pyproject.toml
	test -x $(TIMM_VENV)/bin/python || $(PYTHON) -m venv $(TIMM_VENV)
	$(TIMM_VENV)/bin/python -m pip install -q --upgrade pip
	$(TIMM_VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(TIMM_VENV)/bin/python -m pip install -q -e '.[all,timm,dev]' '$(TRANSFORMERS)'
	rm -f $(TIMM_VENV)/.installed-*
	touch $@

$(TF4_STAMP): pyproject.toml
	test -x $(TF4_VENV)/bin/python || $(PYTHON) -m venv $(TF4_VENV)
	$(TF4_VENV)/bin/python -m pip install -q --upgrade pip
	$(TF4_VENV)/bin/python -m pip install -q torch==2.13.0
	$(TF4_VENV)/bin/python -m pip install -q -e '.[build,server,dev]' '$(TRANSFORMERS_OLD)'
	rm -f $(TF4_VENV)/.installed-*
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

test: lint typecheck test-main test-timm test-transformers4

test-main: $(STAMP)
	$(BIN)/pytest -m "not timm"

# the timm checkpoints (tests marked timm), in the environment with timm and torchvision
test-timm: $(TIMM_STAMP)
	$(TIMM_VENV)/bin/pytest -m timm

# Transformers 4.x: the export, the parity proof and a CLI build (the main environment runs 5.x)
test-transformers4: $(TF4_STAMP)
	$(TF4_VENV)/bin/pytest tests/export/test_export.py tests/export/test_pipeline.py -k "graph_matches or cli_build"

# The DALI pipeline (dfserve.repository.dali) on the CPU, in its own environment: DALI's wheel (~424 MB,
# nvidia-dali-cuda120) stays out of the project's venv; tests/dali is skipped there, saying so.
test-dali:
	test -x .venv-dali/bin/python || $(PYTHON) -m venv .venv-dali
	.venv-dali/bin/python -m pip install -q nvidia-dali-cuda120 numpy pillow pydantic pytest
	PYTHONPATH=src:. .venv-dali/bin/pytest tests/dali --noconftest -p no:cacheprovider

clean:
	rm -rf $(VENV) $(TIMM_VENV) $(TF4_VENV) .venv-dali demo-out .pytest_cache .mypy_cache .ruff_cache
