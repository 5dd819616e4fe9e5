"""DaskExecutor: the Executor contract over a real Dask cluster, and the private cluster it owns."""

from __future__ import annotations

import concurrent.futures
import operator
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import alive, children_pids, dask_local_cluster, stop_resource_tracker, wait_until

distributed = pytest.importorskip("distributed")

from scaler_jupyter.dask_executor import DaskExecutor, DaskFuture  # noqa: E402

RESULT_TIMEOUT = 30.0


@pytest.fixture(scope="module", autouse=True)
def no_resource_tracker_left():
    """Dask's nannies start multiprocessing's resource tracker, which outlives them: stop it with the module."""
    yield
    stop_resource_tracker()


@pytest.fixture(scope="module")
def dask_address():
    with dask_local_cluster() as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def executor(dask_address):
    with DaskExecutor(dask_address) as pool:
        yield pool


def pid_after(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


def divide(a, b, *, round_to=None):
    result = a / b
    return result if round_to is None else round(result, round_to)


def wait_for_file(path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_submit_returns_standard_futures_with_results_and_exceptions(executor):
    future = executor.submit(divide, 7, 2, round_to=0)  # the task's own keywords, even one Dask's submit has
    assert isinstance(future, concurrent.futures.Future) and isinstance(future, DaskFuture)
    assert future.result(RESULT_TIMEOUT) == 4.0
    failing = executor.submit(divide, 1, 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(RESULT_TIMEOUT)
    assert isinstance(failing.exception(), ZeroDivisionError)
    done, _ = concurrent.futures.wait([future, failing], timeout=RESULT_TIMEOUT)
    assert done == {future, failing}


def test_tasks_run_in_the_clusters_worker_processes(executor):
    pids = {future.result(RESULT_TIMEOUT) for future in [executor.submit(pid_after, 0.2) for _ in range(4)]}
    assert os.getpid() not in pids
    assert executor.n_workers == 2


def test_map_is_ordered_stops_at_the_shortest_and_times_out(executor):
    assert list(executor.map(operator.mul, range(10), range(20), timeout=RESULT_TIMEOUT)) == [i * i for i in range(10)]
    assert list(executor.map(operator.mul, [], [])) == []
    results = executor.map(time.sleep, [0.5], timeout=0.1)
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    results.close()


def test_cancel_reaches_a_pending_task(executor, tmp_path):
    go = str(tmp_path / "go")
    blockers = [executor.submit(wait_for_file, go, RESULT_TIMEOUT) for _ in range(2)]  # both workers busy
    waiting = executor.submit(pid_after, 0)
    assert waiting.cancel()
    assert waiting.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        waiting.result(RESULT_TIMEOUT)
    open(go, "w").close()
    assert [b.result(RESULT_TIMEOUT) for b in blockers] == [True, True]


def test_shutdown_waits_for_pending_tasks_then_refuses_new_ones(dask_address):
    pool = DaskExecutor(dask_address)
    futures = [pool.submit(pid_after, 0.3) for _ in range(3)]
    pool.shutdown(wait=True)
    assert all(future.done() and not future.cancelled() for future in futures)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pid_after, 0)
    pool.shutdown()  # twice is harmless


def test_shutdown_can_cancel_what_is_pending(dask_address, tmp_path):
    pool = DaskExecutor(dask_address)
    release = str(tmp_path / "release")
    futures = [pool.submit(wait_for_file, release, RESULT_TIMEOUT) for _ in range(4)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert all(future.cancelled() for future in futures)
    open(release, "w").close()  # Dask cannot stop a task already running in a worker's thread: let it end


def test_without_an_address_it_starts_and_closes_a_private_local_cluster():
    before = children_pids()
    with DaskExecutor(n_workers=1) as pool:
        assert pool.address.startswith("tcp://127.0.0.1:")
        started = children_pids() - before
        assert pool.n_workers == 1
        assert pool.submit(pid_after, 0).result(RESULT_TIMEOUT) in started
    wait_until(lambda: not any(alive(pid) for pid in started), RESULT_TIMEOUT, "the private Dask cluster to stop")
    with pytest.raises(ValueError, match="only to the private cluster"):
        DaskExecutor("tcp://127.0.0.1:1", n_workers=2)


def test_without_dask_the_import_error_says_how_to_install_it():
    code = ("import sys; sys.modules['distributed'] = None\n"
            "from scaler_jupyter.dask_executor import DaskExecutor\n"
            "try:\n    DaskExecutor()\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install scaler_jupyter[dask]" in out.stdout
