# Two commands on a fresh machine with Python 3.11, each installing on first use (again when
# pyproject.toml changes): `make demo` runs the whole federation, `make test` checks the code (ruff, the
# layers contract) and runs the test suite.
PYTHON ?= python3.11
VENV := .venv
INSTALLED := $(VENV)/.installed
STAGED := $(VENV)/staged

.PHONY: demo test lint layers

demo: $(INSTALLED)
	$(VENV)/bin/fedshop demo

test: lint
	$(VENV)/bin/python -m pytest

lint: $(INSTALLED) layers
	$(VENV)/bin/ruff check .

# import-linter reads the installed tree (the repository's folders install under fedshop.*), so the
# layers are checked on a copy installed the way a wheel installs it.
layers: $(INSTALLED)
	rm -rf $(STAGED) build
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation --no-compile --target $(STAGED) .
	rm -rf build
	cd $(STAGED) && PYTHONPATH=. $(CURDIR)/$(VENV)/bin/lint-imports --no-cache --config $(CURDIR)/pyproject.toml

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e ".[dev]"
	touch $(INSTALLED)
