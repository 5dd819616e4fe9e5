"""Fixtures of the parfun tests: a Dask cluster per module, no backend leaking between tests, no tracker left."""

from __future__ import annotations

import pytest

import scaler_jupyter.parfun as pf
from tests.parfun.processes import stop_resource_tracker


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
    distributed = pytest.importorskip("distributed")
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                           host="127.0.0.1")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
