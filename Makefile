# Basalt: two commands do everything on a fresh machine.
#   make sim   - run the firmware in the MicroPython Unix port against the simulated pump, default scenario
#   make test  - the whole test suite (JUnit XML in build/junit.xml)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: sim test bench accuracy lint mpy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# simglucose ships the UVA/Padova patient parameters; its declared deps (gym 0.9.4, ...)
	# are not needed and do not install cleanly, so it goes in without them.
	$(BIN)/pip install --quiet --no-deps simglucose==0.2.11
	touch $(STAMP)

venv: $(STAMP)

# MicroPython port stubs for type-checking board code. Each port's package installs machine.pyi
# at the top level, so they cannot share one site-packages: one target dir per port.
STUBS := build/stubs/.installed
$(STUBS): $(STAMP)
	$(BIN)/pip install --quiet --no-deps --target build/stubs/esp32 micropython-esp32-stubs==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2
	$(BIN)/pip install --quiet --no-deps --target build/stubs/rp2 micropython-rp2-stubs==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2
	touch $(STUBS)

sim: $(STAMP)
	$(BIN)/basalt-scenario scenarios/default.yaml --report build/sim-report.json

test: $(STAMP) $(STUBS)
	mkdir -p build
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m hil.bench

# IEC 60601-2-24 trumpet curves at 0.1, 1.0 and 5.0 U/h: build/accuracy/trumpet.{json,png}
accuracy: $(STAMP)
	$(BIN)/python -m hil.accuracy

lint: $(STAMP)
	$(BIN)/ruff check .

# Compile every firmware file with mpy-cross (the same check the test suite makes).
mpy: $(STAMP)
	$(BIN)/python -m hil.build

clean:
	rm -rf build $(VENV)
