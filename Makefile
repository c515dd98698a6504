# Every target sets up .venv itself; `make install` is a no-op when pyproject.toml is unchanged.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench bench-smoke clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch lies on disk; any other spec pulls several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check qnn_sklearn tests examples benchmarks
	$(BIN)/ruff format --check qnn_sklearn tests examples benchmarks

demo: install
	$(BIN)/python examples/demo.py

bench: install
	$(BIN)/pip install --quiet -e ".[bench]"
	test -f benchmarks/results/pbs_floor.json || $(BIN)/python benchmarks/pbs_floor.py
	$(BIN)/python benchmarks/run.py

bench-smoke: install
	$(BIN)/python benchmarks/run.py --smoke
	$(BIN)/python benchmarks/service_faults.py --smoke
	$(BIN)/python benchmarks/robustness.py --smoke

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
