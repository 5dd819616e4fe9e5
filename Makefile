# Every target installs what it needs into .venv first; nothing relies on what was installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test lint bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install --quiet -e ".[test,dask]"
	touch $@

$(VENV)/.bench: $(VENV)/.base
	$(PIP) install --quiet -e ".[bench]"
	touch $@

demo: $(VENV)/.base  ## the quickstart: Monte Carlo pi on a local cluster
	$(PY) -m scaler_jupyter.demo

lint: $(VENV)/.test
	$(PY) -m ruff check scaler_jupyter tests benchmarks

test: lint  ## every test, with real processes
	$(PY) -m pytest -q

bench: $(VENV)/.bench  ## side-by-side measurements against the peers
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/balancing.py
	$(PY) benchmarks/resilience.py
	$(PY) benchmarks/scheduler_scale.py
	$(PY) benchmarks/graphs.py
	$(PY) benchmarks/pargraph.py
	$(PY) benchmarks/parfun_wordcount.py
	$(PY) benchmarks/client_results.py
	$(PY) benchmarks/notebook_cluster.py
	$(PY) benchmarks/notebook.py
	$(PY) benchmarks/notebook_panels.py
	$(PY) benchmarks/lab_server.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
