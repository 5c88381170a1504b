# medsynth: `make demo` runs the whole pipeline on the built-in phantom data,
# `make test` runs the test suite. Both install into .venv first when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medsynth-installed
DEMO   ?= demo-run

.PHONY: install demo test lint bench clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO)

test: $(STAMP)
	$(VENV)/bin/ruff check medsynth tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

# Lint rules and types: the code is formatted by hand (compact, 100 columns), not by
# `ruff format`; mypy checks medsynth with the settings in pyproject.toml ([tool.mypy]).
lint: $(STAMP)
	$(VENV)/bin/ruff check medsynth tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m benchmarks

clean-demo:
	rm -rf $(DEMO)
