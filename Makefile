# Every target installs what it needs into .venv first; nothing relies on what was installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
CHROMIUM := /usr/bin/chromium
SSHD := /usr/sbin/sshd
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab demo test lint bench pictures clean

# `pip install -e .` also builds the JupyterLab extension with the machine's Node.js (SKIP_JUPYTER_BUILDER=1 skips it).
$(VENV)/.base: pyproject.toml labextension/package.json labextension/yarn.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base | $(CHROMIUM) $(SSHD)
	$(PIP) install --quiet -e ".[test,dask]"
	touch $@

$(VENV)/.lab: $(VENV)/.base
	$(PIP) install --quiet -e ".[lab]"
	touch $@

# The browser tests drive Debian's chromium (never a downloaded browser); installed once, when missing.
$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y chromium

# The SSHCluster tests start their own sshd (Debian's openssh-server) on loopback; installed once, when missing.
$(SSHD):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y openssh-server

lab: $(VENV)/.lab  ## JupyterLab on notebooks/, with the Scaler sidebar
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir=notebooks

$(VENV)/.bench: $(VENV)/.base
	$(PIP) install --quiet -e ".[bench]"
	touch $@

demo: $(VENV)/.base  ## the quickstart: Monte Carlo pi on a local cluster
	$(PY) -m scaler_jupyter.demo

lint: $(VENV)/.test
	$(PY) -m ruff check scaler_jupyter tests benchmarks
	cd labextension && PATH="$(abspath $(VENV))/bin:$$PATH" jlpm install --immutable && PATH="$(abspath $(VENV))/bin:$$PATH" jlpm lint:check

test: lint  ## every test, with real processes
	$(PY) -m pytest -q

bench: $(VENV)/.bench $(VENV)/.test  ## side-by-side measurements against the peers (lab.py drives chromium)
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/balancing.py
	$(PY) benchmarks/resilience.py
	$(PY) benchmarks/shared_memory.py
	$(PY) benchmarks/scheduler_scale.py
	$(PY) benchmarks/graphs.py
	$(PY) benchmarks/pargraph.py
	$(PY) benchmarks/parfun_wordcount.py
	$(PY) benchmarks/client_results.py
	$(PY) benchmarks/notebook_cluster.py
	$(PY) benchmarks/notebook.py
	$(PY) benchmarks/notebook_panels.py
	$(PY) benchmarks/lab.py
	$(PY) benchmarks/lab_server.py
	$(PY) benchmarks/ssh.py

pictures: $(VENV)/.test  ## the README's pictures, taken by the browser tests from a real run
	SCALER_JUPYTER_PICTURES=docs/images $(PY) -m pytest -q tests/ui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache labextension/node_modules labextension/lib scaler_jupyter/labextension
