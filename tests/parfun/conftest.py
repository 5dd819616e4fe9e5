"""Fixtures of the parfun tests: a Dask cluster per module, no backend leaking between tests, no tracker left."""

from __future__ import annotations

import pytest

import scaler_jupyter.parfun as pf
from tests.helpers import dask_local_cluster, stop_resource_tracker


@pytest.fixture(scope="module", autouse=True)
def no_resource_tracker_left():
    """Process pools start multiprocessing's resource tracker, which outlives them: stop it with the module.

    Torn down before the suite's check that no process outlives its module (this conftest is
    deeper, so its autouse fixture is set up after that check's, and torn down before it).
    """
    yield
    stop_resource_tracker()


@pytest.fixture(autouse=True)
def no_process_backend():
    """Each test starts with no process-wide backend and leaves none."""
    pf.set_parallel_backend("none")
    yield
    pf.set_parallel_backend("none")


@pytest.fixture(scope="module")
def dask_cluster():
    """A Dask LocalCluster: 2 single-threaded worker processes on 127.0.0.1; yields its scheduler address."""
    pytest.importorskip("distributed")
    with dask_local_cluster() as cluster:
        yield cluster.scheduler_address
