"""Balancing with real processes: queued tasks move from a busy worker to an idle one, and run once."""

from __future__ import annotations

import os
import time

from scaler_jupyter import LocalCluster
from tests.helpers import connect

RESULT_TIMEOUT = 60


def sleep_then_pid(seconds: float) -> tuple[float, int]:
    time.sleep(seconds)
    return seconds, os.getpid()


def test_long_tasks_queued_on_one_worker_are_spread_to_the_idle_one():
    """The first worker takes the four long tasks (it is first in line and four fit its queue), the
    other the short ones; once the short ones are done, two long ones move."""
    with LocalCluster(n_workers=2) as cluster, connect(cluster.address) as client:
        durations = [0.6] * 4 + [0.02] * 4
        results = list(client.map(sleep_then_pid, durations, timeout=RESULT_TIMEOUT))
        assert [seconds for seconds, _ in results] == durations  # each once, in order
        long_ran_on = {pid for seconds, pid in results if seconds == 0.6}
        assert len(long_ran_on) == 2


def test_without_balancing_nothing_moves():
    """The control: with balancing off the long tasks stay where they were queued."""
    with LocalCluster(n_workers=2, scheduler_args=("--balance-interval", "0")) as cluster, \
            connect(cluster.address) as client:
        durations = [0.3] * 4 + [0.02] * 4
        results = list(client.map(sleep_then_pid, durations, timeout=RESULT_TIMEOUT))
        assert len({pid for seconds, pid in results if seconds == 0.3}) == 1
