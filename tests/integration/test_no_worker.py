"""A task no worker can run, against a live cluster: the client is warned, ``status()`` lists it, and with
``--no-worker-timeout`` it fails with ``NoWorkerError`` instead of waiting for ever."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.errors import NoWorkerError, NoWorkerWarning
from tests.helpers import wait_until

WAIT = 15.0


@pytest.fixture(scope="module")
def untagged_cluster() -> Iterator[LocalCluster]:
    """One worker without tags; the scheduler warns after 0.2 s and gives up after 3 s."""
    with LocalCluster(n_workers=1, timeout=30,
                      scheduler_args=("--no-worker-grace", "0.2", "--no-worker-timeout", "3")) as local:
        yield local


def test_a_task_whose_tags_no_worker_offers_is_said_then_fails(untagged_cluster):
    with Client(untagged_cluster.address, timeout=30) as client:
        with pytest.warns(NoWorkerWarning, match="--tags gpu"):
            future = client.submit_with(pow, args=(2, 3), tags={"gpu"})
            [entry] = wait_until(lambda: client.status()["unmatched"], WAIT, "status() to list the task")
        assert (entry["tags"], entry["tasks"]) == (["gpu"], 1)
        with pytest.raises(NoWorkerError, match="--no-worker-timeout 3"):
            future.result(WAIT)
        assert client.submit(pow, 2, 3).result(WAIT) == 8  # tasks a worker can run are not concerned
        assert client.status()["unmatched"] == []
