# `make toy` and `make test` each set up everything they need on a fresh machine first:
# a virtual environment, the CPU build of torch, and this project with its dev extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.iml_hf-installed

.PHONY: install toy entities test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

toy: $(STAMP)  ## the toy IML experiment on CPU (a few minutes)
	$(PY) -m iml_hf.train recipes/toy.yaml

entities: $(STAMP)  ## entity QA with define tags on CPU (about 2.5 minutes)
	$(PY) -m iml_hf.train recipes/entities_cpu.yaml

test: $(STAMP)  ## the test suite
	$(PY) -m pytest

bench: $(STAMP)  ## toolkit vs bare PyTorch training throughput
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs
