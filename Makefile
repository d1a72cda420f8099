# Two commands on a fresh machine with Python 3.11, each installing on first use (again when
# pyproject.toml changes): `make demo` runs the whole federation, `make test` the test suite.
PYTHON ?= python3.11
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: demo test

demo: $(INSTALLED)
	$(VENV)/bin/fedshop demo

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e ".[dev]"
	touch $(INSTALLED)
