"""Citi's parfun 7.2.2 names and behaviours on ours: its module paths, sessions, the legacy names."""

from __future__ import annotations

import threading

import pytest

import scaler_jupyter.parfun as pf
from scaler_jupyter.parfun import backends


def square(x):
    return x * x


def fails(x):
    raise ValueError(f"no {x}")


def total(values):
    return sum(values)


def submit_nested(backend, x):
    """A task that submits a task of its own through the backend it was given."""
    with backend.session() as session:
        return session.submit(square, x).result()


def test_citis_module_paths_import_our_objects():
    from scaler_jupyter.parfun.backend.dask import DaskCurrentBackend, DaskLocalClusterBackend, DaskRemoteClusterBackend
    from scaler_jupyter.parfun.backend.local_multiprocessing import LocalMultiprocessingBackend
    from scaler_jupyter.parfun.backend.mixins import BackendEngine, BackendSession, ProfiledFuture
    from scaler_jupyter.parfun.backend.scaler import ScalerLocalBackend, ScalerRemoteBackend
    from scaler_jupyter.parfun.combine.collection import list_concat
    from scaler_jupyter.parfun.combine.dataframe import df_concat
    from scaler_jupyter.parfun.decorators import parallel
    from scaler_jupyter.parfun.entry_point import BACKEND_REGISTRY, set_parallel_backend_context
    from scaler_jupyter.parfun.functions import parallel_map
    from scaler_jupyter.parfun.partition.api import all_arguments, multiple_arguments, per_argument
    from scaler_jupyter.parfun.partition.collection import list_by_chunk
    from scaler_jupyter.parfun.partition.dataframe import df_by_group, df_by_row
    from scaler_jupyter.parfun.partition.object import (
        PartitionGenerator,
        SimplePartitionIterator,
        SmartPartitionGenerator,
    )
    from scaler_jupyter.parfun.partition.utility import with_partition_size

    from scaler_jupyter.parfun import parfun

    assert (parallel, per_argument, multiple_arguments, all_arguments) == (
        pf.parallel, pf.per_argument, pf.multiple_arguments, pf.all_arguments)
    assert (list_by_chunk, list_concat) == (pf.py_list.by_chunk, pf.py_list.concat)
    assert (df_by_row, df_by_group, df_concat) == (pf.dataframe.by_row, pf.dataframe.by_group, pf.dataframe.concat)
    assert (parallel_map, with_partition_size, set_parallel_backend_context) == (
        pf.parallel_map, pf.with_partition_size, pf.set_parallel_backend_context)
    assert (BackendEngine, BackendSession, ProfiledFuture) == (pf.Backend, pf.BackendSession, pf.ProfiledFuture)
    assert (LocalMultiprocessingBackend, ScalerLocalBackend, ScalerRemoteBackend) == (
        pf.LocalMultiprocessingBackend, pf.ScalerLocalBackend, pf.ScalerRemoteBackend)
    assert (DaskLocalClusterBackend, DaskRemoteClusterBackend, DaskCurrentBackend) == (
        pf.DaskLocalBackend, pf.DaskRemoteBackend, pf.DaskCurrentBackend)
    assert issubclass(DaskLocalClusterBackend, DaskRemoteClusterBackend)
    assert issubclass(ScalerLocalBackend, ScalerRemoteBackend)
    assert {"none", "dask_current", "scaler_local", "local_multiprocessing"} <= set(BACKEND_REGISTRY)
    assert BACKEND_REGISTRY["none"]() is None
    assert all(alias is not None for alias in (PartitionGenerator, SimplePartitionIterator, SmartPartitionGenerator))
    with pytest.warns(DeprecationWarning):
        legacy = parfun(split=pf.all_arguments(pf.py_list.by_chunk), combine_with=sum)(total)
    assert legacy([1, 2, 3]) == 6


def test_profile_times_a_block():
    from scaler_jupyter.parfun.profiler.functions import profile

    with profile() as duration:
        sum(range(10000))
    assert duration.value > 0


def test_a_session_blocks_while_every_worker_is_busy(cluster, client):
    """Two workers: a third submit waits until a task is done; its callbacks see at most two running."""
    backend = pf.backends.ScalerBackend(client)
    running, most = 0, 0
    lock = threading.Lock()

    def finished(_):
        nonlocal running
        with lock:
            running -= 1

    with backend.session() as session:
        futures = []
        for x in range(8):
            with lock:
                running += 1
            future = session.submit(square, x)
            future.add_done_callback(finished)
            futures.append(future)
            with lock:
                most = max(most, running)
        assert [future.result(timeout=30) for future in futures] == [x * x for x in range(8)]
    assert most <= backend.n_workers == 2
    assert all(future.duration() is not None and future.duration() >= 0 for future in futures)


def test_a_session_reports_errors_and_maps(cluster, client):
    backend = pf.backends.ScalerBackend(client)
    with backend.session() as session:
        with pytest.raises(ValueError, match="no 3"):
            session.submit(fails, 3).result(timeout=30)
        assert list(pf.parallel_map(square, range(6), backend_session=session)) == [0, 1, 4, 9, 16, 25]


def test_scaler_backends_pickle_into_a_task_and_nest(cluster, client):
    backend = pf.ScalerRemoteBackend(cluster.address, keys=cluster.keys, per_worker_queue_size=2)
    try:
        assert backend.allows_nested_tasks()
        with backend.session() as session:
            assert session.submit(submit_nested, backend, 7).result(timeout=60) == 49
    finally:
        backend.shutdown()


def test_allows_nested_tasks_is_a_method():
    assert pf.LocalSingleProcessBackend().allows_nested_tasks() is False
    assert callable(backends.Backend.allows_nested_tasks)


def test_a_single_process_session_runs_in_the_caller_and_maps_in_order():
    with pf.LocalSingleProcessBackend().session() as session:
        assert session.submit(square, 3).duration() >= 0
        assert list(pf.parallel_map(square, range(4), backend_session=session)) == [0, 1, 4, 9]
