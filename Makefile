# One-command set-up: `make demo` and `make test` create .venv and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench install clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,crypten]'
	$(BIN)/python -m pip install -q --no-deps crypten==0.4.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/secureml demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) build *.egg-info

bench: $(STAMP)
	$(BIN)/secureml bench cost --quick
