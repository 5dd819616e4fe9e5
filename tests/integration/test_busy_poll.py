"""Loops poll a little before sleeping while messages come quickly (``protocol/busy_poll.py``): a cluster that
is idle, or whose tasks compute for long, must not spin. Measured as CPU time over a second of real processes."""

from __future__ import annotations

import sys
import time

import cloudpickle
import psutil
import pytest

from scaler_jupyter import Client, LocalCluster

pytestmark = pytest.mark.timeout(90)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

WINDOW_S = 1.0
AT_MOST_S = 0.1  # CPU time of all the cluster's processes together over the window: a tenth of one core


def noop(x):
    return x


def wait_for(value: str, seconds: float) -> str:
    """A task that computes nothing and takes a while: its worker has only to wait."""
    time.sleep(seconds)
    return value


def cpu_over_window(processes: list[psutil.Process]) -> float:
    before = sum(sum(p.cpu_times()[:2]) for p in processes)
    time.sleep(WINDOW_S)  # the measurement itself: what the processes burn meanwhile
    return sum(sum(p.cpu_times()[:2]) for p in processes) - before


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=1, timeout=60) as local:
        yield local


def cluster_processes() -> list[psutil.Process]:
    """The scheduler, agent and processor, and this process (its client's I/O thread polls too)."""
    return [psutil.Process(), *psutil.Process().children(recursive=True)]


def test_after_a_burst_of_round_trips_an_idle_cluster_does_not_spin(cluster):
    with Client(cluster.address) as client:
        for _ in range(300):  # every loop's budget grows to its limit
            assert client.submit(noop, 1).result(20) == 1
        used = cpu_over_window(cluster_processes())
    assert used < AT_MOST_S, f"an idle cluster used {used:.3f}s of CPU in {WINDOW_S}s"


def test_a_long_task_does_not_make_the_cluster_spin_while_it_runs(cluster):
    with Client(cluster.address) as client:
        for _ in range(300):
            client.submit(noop, 1).result(20)
        future = client.submit(wait_for, "done", 2 * WINDOW_S)
        used = cpu_over_window(cluster_processes())
        assert future.result(20) == "done"
    assert used < AT_MOST_S, f"the cluster used {used:.3f}s of CPU waiting on one task"
