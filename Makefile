# hip-head: `make demo` (set up + main job) and `make test` (set up + whole suite).
# The CPU build of torch is pinned through requirements/constraints-cpu.txt, never in
# pyproject.toml: GPU users install their own torch first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints-cpu.txt
STAMP := $(VENV)/.installed
# A second environment without mace and with the newest e3nn (>= 0.5, the fairchem line):
# proves the core works on both e3nn lines and imports without any backbone installed.
CORE_VENV := .venv-core
CORE_STAMP := $(CORE_VENV)/.installed
# fairchem-core 2.x (UMA / eSEN) pins its own e3nn >= 0.5 and torch ~= 2.13: its own environment.
FAIRCHEM_VENV := .venv-fairchem
FAIRCHEM_STAMP := $(FAIRCHEM_VENV)/.installed
# fairchem-core 1.x (EquiformerV2) pins torch ~= 2.4 and numpy < 2: a fourth environment, with
# its own constraints. torch-scatter (imported by fairchem 1.x, undeclared, source-only on PyPI)
# is compiled against the installed torch (about 7 minutes on 2 cores; pip caches the wheel).
EQV2_VENV := .venv-eqv2
EQV2_STAMP := $(EQV2_VENV)/.installed
EQV2_CONSTRAINTS := requirements/constraints-eqv2.txt

export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[mace,pyg,data,chem,dev]"
	touch $(STAMP)

$(CORE_STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install -q --upgrade pip
	$(CORE_VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) torch==2.13.0
	$(CORE_VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) -e ".[data,dev]" "e3nn>=0.5"
	touch $(CORE_STAMP)

$(FAIRCHEM_STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(FAIRCHEM_VENV)
	$(FAIRCHEM_VENV)/bin/python -m pip install -q --upgrade pip
	$(FAIRCHEM_VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) torch==2.13.0
	$(FAIRCHEM_VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) -e ".[fairchem,dev]"
	touch $(FAIRCHEM_STAMP)

$(EQV2_STAMP): pyproject.toml $(EQV2_CONSTRAINTS)
	$(PYTHON) -m venv $(EQV2_VENV)
	$(EQV2_VENV)/bin/python -m pip install -q --upgrade pip
	$(EQV2_VENV)/bin/python -m pip install -q -c $(EQV2_CONSTRAINTS) torch==2.4.0 setuptools wheel
	$(EQV2_VENV)/bin/python -m pip install -q -c $(EQV2_CONSTRAINTS) --no-build-isolation torch-scatter
	$(EQV2_VENV)/bin/python -m pip install -q -c $(EQV2_CONSTRAINTS) -e ".[eqv2,testing]" pytest-xdist
	touch $(EQV2_STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/hip demo

test: $(STAMP) $(CORE_STAMP) $(FAIRCHEM_STAMP) $(EQV2_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n 2 --durations=15
	@echo "--- core tests again with e3nn $$($(CORE_VENV)/bin/python -c 'import e3nn; print(e3nn.__version__)') and no mace ($(CORE_VENV))"
	OMP_NUM_THREADS=1 $(CORE_VENV)/bin/pytest -n 2 -m "not mace and not pyg and not chem and not fairchem and not eqv2" -p no:cacheprovider
	@echo "--- fairchem-core 2.x adapter tests ($(FAIRCHEM_VENV))"
	OMP_NUM_THREADS=1 $(FAIRCHEM_VENV)/bin/pytest -m fairchem -p no:cacheprovider tests/adapters
	@echo "--- fairchem-core 1.x EquiformerV2 adapter tests ($(EQV2_VENV))"
	OMP_NUM_THREADS=1 $(EQV2_VENV)/bin/pytest -m eqv2 -p no:cacheprovider tests/adapters

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) $(CORE_VENV) $(FAIRCHEM_VENV) $(EQV2_VENV) build *.egg-info .pytest_cache .hypothesis .ruff_cache
