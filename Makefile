# One-command set-up: `make demo` and `make test` create .venv and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# qml's real QM7 subset ships inside qmllib's source distribution (MIT, 12 MB, from PyPI): the tests
# check the QM7 bound on it when it is there (optional: a failed download only skips that test)
QM7_SDIST := $(VENV)/data/qmllib-1.2.0.tar.gz

.PHONY: demo test test-all bench install clean spu

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[full,test,crypten,research]'
	$(BIN)/python -m pip install -q --no-deps crypten==0.4.1 molsets==0.3.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/secureml demo

$(QM7_SDIST): | $(STAMP)
	-$(BIN)/python -m pip download -q --no-deps --no-binary :all: qmllib==1.2.0 -d $(VENV)/data

test: $(STAMP) $(QM7_SDIST)
	SECUREML_QMLLIB_SDIST=$(QM7_SDIST) $(BIN)/python -m pytest -q

test-all: $(STAMP) $(QM7_SDIST)
	SECUREML_QMLLIB_SDIST=$(QM7_SDIST) $(BIN)/python -m pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) build *.egg-info

bench: $(STAMP)
	$(BIN)/secureml bench cost --quick

# SecretFlow SPU as a peer engine of `secureml bench cost` (spu-cheetah, spu-cheetah64, spu-semi2k):
# spu 0.9.5 needs numpy<2 and jax<=0.4.34, so it gets its own venv; bench/spu_engine.py runs it as
# two subprocesses
SPU_VENV := .venv-spu
$(SPU_VENV)/.installed:
	$(PYTHON) -m venv $(SPU_VENV)
	$(SPU_VENV)/bin/python -m pip install -q --upgrade pip
	$(SPU_VENV)/bin/python -m pip install -q spu==0.9.5
	touch $(SPU_VENV)/.installed

spu: $(SPU_VENV)/.installed
