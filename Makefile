# Every target sets up .venv itself, at the versions of constraints.txt; `make install` is a
# no-op when pyproject.toml and constraints.txt are unchanged.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench bench-smoke bench-anchor clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch lies on disk; any other spec pulls several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check qnn_sklearn tests examples benchmarks
	$(BIN)/ruff format --check qnn_sklearn tests examples benchmarks

demo: install
	$(BIN)/python examples/demo.py

bench: install
	$(BIN)/pip install --quiet -c constraints.txt -e ".[bench]"
	test -f benchmarks/results/pbs_floor.json || $(BIN)/python benchmarks/pbs_floor.py
	$(BIN)/python benchmarks/run.py

bench-smoke: install
	$(BIN)/python benchmarks/run.py --smoke
	$(BIN)/python benchmarks/service_faults.py --smoke
	$(BIN)/python benchmarks/robustness.py --smoke
	$(BIN)/python benchmarks/search_table.py --smoke

# Side by side with Concrete ML 1.9.0 (benchmarks/anchor.py), in a venv of its own: its pinned
# torch 2.3.1 pulls the CUDA packages (6.3 GB on disk, a few minutes). Not part of CI.
# ANCHOR_ARGS="--tasks breast_cancer" measures some tasks; "--smoke" checks the plumbing.
CML_VENV := .venv-cml
ANCHOR_ARGS ?=

$(CML_VENV)/.installed:
	test -x $(CML_VENV)/bin/python || $(PYTHON) -m venv $(CML_VENV)
	$(CML_VENV)/bin/pip install --quiet concrete-ml==1.9.0 'mlxtend<0.25'
	touch $@

bench-anchor: install $(CML_VENV)/.installed
	$(BIN)/pip install --quiet -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/anchor.py measure $(ANCHOR_ARGS)
	$(CML_VENV)/bin/python benchmarks/anchor.py measure $(ANCHOR_ARGS)
	$(BIN)/python benchmarks/anchor.py merge $(ANCHOR_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
