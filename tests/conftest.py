"""Fixtures shared by the suite: one LocalCluster per module, a fresh Client per test, and a leak check.

Integration tests run real processes on 127.0.0.1. Each module shares one
``LocalCluster(n_workers=2)`` (started lazily, on the first test that asks for it);
tests that need another configuration start and close their own. After every
module, no process started by the test run may be left alive.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from scaler_jupyter import Client, LocalCluster
from tests.helpers import alive_children, describe, kill_all, wait_gone

# Workers may import the test modules (a serializer may pickle their functions by reference); they inherit this.
_ROOT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join([_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])

# Cluster files (and kernels' connection files) go to a runtime dir of this test run's own, never the user's.
os.environ["JUPYTER_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="scaler-jupyter-test-runtime-")

LEFTOVER_WAIT = 10.0  # seconds a module's processes get to exit after its fixtures closed them


@pytest.fixture(scope="module", autouse=True)
def no_leftover_processes():
    """After a module's tests and fixtures, every child process of this test run is gone."""
    yield
    left = wait_gone(alive_children(), LEFTOVER_WAIT)
    if left:
        report = describe(left)
        kill_all(left)  # ours: children of this test run
        pytest.fail(f"processes left alive {LEFTOVER_WAIT:g}s after the module ended:\n{report}")


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two workers (one processor each), shared by the tests of a module."""
    with LocalCluster(n_workers=2, timeout=30) as local:
        yield local


@pytest.fixture
def client(cluster):
    """A Client of the module's cluster; its leftover tasks are cancelled when the test ends."""
    executor = Client(cluster.address, timeout=30)
    yield executor
    executor.shutdown(cancel_futures=True)
