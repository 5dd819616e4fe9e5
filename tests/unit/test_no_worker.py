"""Tasks no connected worker can run are said, then failed if the scheduler is told to: no sockets, a fake clock.

A task waits for a worker whose tags include its own. When no connected worker
offers them (or no worker is connected at all), the client is warned after
``no_worker_grace`` seconds and the snapshot lists the tasks; after
``no_worker_timeout`` seconds (if set) they fail with ``NO_WORKER``.
"""

from __future__ import annotations

import pytest

from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    Assign,
    ClientHello,
    GraphTask,
    ObjectSpec,
    Payload,
    Results,
    Submit,
    SubmitGraph,
    TaskSpec,
    TaskWarning,
    WorkerHello,
)
from scaler_jupyter.protocol.messages import Status
from scaler_jupyter.scheduler.monitor import build_snapshot
from scaler_jupyter.scheduler.state import SchedulerConfig, SchedulerState

FUNCTION = ObjectSpec(b"F" * 16, Payload([b"a pickled function"]))
CLIENT, CPU_WORKER, GPU_WORKER = b"client", b"cpu-worker", b"gpu-worker"
GRACE, TIMEOUT = 5.0, 30.0


def spec(task_id: int, *tags: str) -> TaskSpec:
    return TaskSpec(task_id, FUNCTION.object_id, Payload([b"args"]), [], None, list(tags), 0, None)


class Scheduler:
    """A state on a fake clock; ``run(now)`` ticks and returns what the loop would send."""

    def __init__(self, **config) -> None:
        # peers never time out here: the clock jumps further than any heartbeat would
        self.state = SchedulerState(SchedulerConfig(no_worker_grace=GRACE, worker_timeout=1e9, client_timeout=1e9,
                                                    **config), now=0.0)
        self.state.on_message(CLIENT, ClientHello(PROTOCOL_VERSION, "notebook", "laptop", 1, True), 0.0)

    def send(self, peer: bytes, message, now: float = 0.0) -> list:
        self.state.on_message(peer, message, now)
        return self.state.flush()

    def worker(self, peer: bytes, *tags: str, now: float = 0.0) -> list:
        return self.send(peer, WorkerHello(PROTOCOL_VERSION, peer.decode(), "host", 2, 1, list(tags)), now)

    def run(self, now: float) -> list:
        self.state.on_tick(now)
        return self.state.flush()


def warnings_in(out: list) -> list[TaskWarning]:
    return [m for p, m in out if p == CLIENT and isinstance(m, TaskWarning)]


def results_in(out: list) -> dict:
    return {r.task_id: r for p, m in out if p == CLIENT and isinstance(m, Results) for r in m.results}


def test_tasks_whose_tags_no_worker_offers_are_said_after_the_grace_period():
    s = Scheduler()
    s.worker(CPU_WORKER, "highmem")
    s.send(CLIENT, Submit([FUNCTION], [spec(1, "gpu"), spec(2, "gpu"), spec(3)]))
    assert not warnings_in(s.run(1.0))  # first seen unmatched at 1.0
    assert build_snapshot(s.state, 1.0)["unmatched"] == []  # nothing listed within the grace period
    [warning] = warnings_in(s.run(1.0 + GRACE))
    assert warning.task_ids == [1, 2]
    assert "2 tasks wait for a worker with tags {gpu}" in warning.message and "--tags gpu" in warning.message
    [entry] = build_snapshot(s.state, 2.0 + GRACE)["unmatched"]
    assert (entry["tags"], entry["tasks"], entry["waiting"]) == (["gpu"], 2, pytest.approx(1.0 + GRACE))
    assert "--tags gpu" in entry["message"]
    assert not warnings_in(s.run(100.0))  # said once; the tasks wait on: no timeout was set
    assert set(s.state.tasks) == {1, 2, 3}


def test_a_worker_with_the_tags_in_time_means_no_warning():
    s = Scheduler()
    s.worker(CPU_WORKER)
    s.send(CLIENT, Submit([FUNCTION], [spec(1, "gpu")]))
    s.run(1.0)
    out = s.worker(GPU_WORKER, "gpu", "highmem", now=2.0)  # tags that include the task's do
    assert [m.tasks[0].task_id for p, m in out if p == GPU_WORKER and isinstance(m, Assign)] == [1]
    assert not warnings_in(s.run(1.0 + GRACE))
    assert build_snapshot(s.state, 1.0 + GRACE)["unmatched"] == []


def test_with_no_worker_connected_any_task_is_said():
    s = Scheduler()
    s.send(CLIENT, Submit([FUNCTION], [spec(1)]))
    s.run(0.0)
    [warning] = warnings_in(s.run(GRACE))
    assert "1 task waits for a worker, and none has been connected" in warning.message
    assert "start workers" in warning.message
    assert build_snapshot(s.state, GRACE)["unmatched"][0]["tags"] == []


def test_a_worker_leaving_starts_the_clock_again():
    s = Scheduler()
    s.worker(GPU_WORKER, "gpu")
    s.worker(CPU_WORKER)
    s.send(CLIENT, Submit([FUNCTION], [spec(1, "gpu"), spec(2, "gpu")]))  # one runs, one waits: matched
    assert not warnings_in(s.run(10.0))
    s.state.on_disconnect(GPU_WORKER)  # both wait now, for tags nobody offers
    s.run(20.0)
    assert not warnings_in(s.run(20.0 + GRACE / 2))
    [warning] = warnings_in(s.run(20.0 + GRACE))
    assert warning.task_ids == [1, 2]


def test_past_the_timeout_such_tasks_fail_with_no_worker():
    s = Scheduler(no_worker_timeout=TIMEOUT)
    s.worker(CPU_WORKER)
    s.send(CLIENT, Submit([FUNCTION], [spec(1, "gpu"), spec(2)]))
    s.run(0.0)
    assert not results_in(s.run(TIMEOUT - 1))
    failed = results_in(s.run(TIMEOUT))
    assert list(failed) == [1]
    assert failed[1].status == Status.NO_WORKER
    assert "--tags gpu" in failed[1].message and "--no-worker-timeout 30" in failed[1].message
    assert 1 not in s.state.tasks and build_snapshot(s.state, TIMEOUT)["unmatched"] == []
    s.send(CLIENT, Submit([], [spec(3, "gpu")]), TIMEOUT)  # a new task gets a timeout of its own
    s.run(TIMEOUT + 1)
    assert not results_in(s.run(2 * TIMEOUT))
    assert list(results_in(s.run(2 * TIMEOUT + 1))) == [3]


def test_a_graph_whose_ready_tasks_no_worker_can_run_fails_whole():
    s = Scheduler(no_worker_timeout=TIMEOUT)
    s.worker(CPU_WORKER)
    s.send(CLIENT, SubmitGraph(1, "g", [FUNCTION], [spec(1, "gpu"), spec(2, "gpu"), spec(3, "gpu")],
                               [GraphTask(1, "a", [], False), GraphTask(2, "b", [], False),
                                GraphTask(3, "c", [1, 2], True)]))
    s.run(0.0)
    failed = results_in(s.run(TIMEOUT))
    assert [r.status for r in failed.values()] == [Status.NO_WORKER]  # the client learns why, once
    assert s.state.tasks == {} and s.state.graphs == {}
    assert build_snapshot(s.state, TIMEOUT)["graphs"][0]["state"] == "failed"
