# `make toy` and `make test` each set up everything they need on a fresh machine first:
# a virtual environment, the CPU build of torch, and this project with its dev extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch on a machine whose default index serves CUDA builds:
#   make toy TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
STAMP := $(VENV)/.iml_hf-installed

.PHONY: install toy entities test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

toy: $(STAMP)  ## the toy IML experiment on CPU (about 4 minutes on 2 cores)
	$(PY) -m iml_hf.train recipes/toy.yaml

entities: $(STAMP)  ## entity QA with define tags on CPU (about 2 minutes on 2 cores)
	$(PY) -m iml_hf.train recipes/entities_cpu.yaml

test: $(STAMP)  ## the test suite, on up to 4 cores (pytest-xdist), listing its 12 slowest tests
	$(PY) -m pytest -n auto --maxprocesses 4 --durations=12

lint: $(STAMP)  ## ruff's lint and format checks and mypy's type check of iml_hf (pyproject.toml [tool.ruff], [tool.mypy]); `ruff format iml_hf tests benchmarks` fixes the format
	$(VENV)/bin/ruff check iml_hf tests benchmarks
	$(VENV)/bin/ruff format --check iml_hf tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)  ## toolkit vs bare PyTorch training throughput
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs
