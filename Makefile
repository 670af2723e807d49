# Basalt: two commands do everything on a fresh machine.
#   make sim   - run the firmware in the MicroPython Unix port against the simulated pump, default scenario
#   make test  - the whole test suite (JUnit XML in build/junit.xml)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: sim test bench lint mpy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

sim: $(STAMP)
	$(BIN)/basalt-scenario scenarios/default.yaml --report build/sim-report.json

test: $(STAMP)
	mkdir -p build
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m hil.bench

lint: $(STAMP)
	$(BIN)/ruff check .

# Compile every firmware file with mpy-cross (the same check the test suite makes).
mpy: $(STAMP)
	$(BIN)/python -m hil.build

clean:
	rm -rf build $(VENV)
