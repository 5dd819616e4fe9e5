"""Remote shutdown, without sockets: a client's ``Shutdown`` stops the cluster unless the scheduler is protected."""

from __future__ import annotations

from scaler_jupyter.protocol import Rejected, Shutdown
from tests.unit.scheduler_harness import (
    CLIENT,
    OTHER_CLIENT,
    W1,
    W2,
    Scheduler,
    assigned,
    messages,
    spec,
)


def test_a_client_s_shutdown_tells_every_worker_and_client_then_stops_the_loop():
    sched = Scheduler()
    sched.client()
    sched.client(OTHER_CLIENT)
    sched.worker(W1)
    sched.worker(W2)
    sched.send(CLIENT, Shutdown("done for today"))
    out = sched.flush()
    for peer in (W1, W2, CLIENT, OTHER_CLIENT):  # the requester's copy is its answer
        [notice] = messages(out, peer, Shutdown)
        assert f"client {CLIENT.decode()}" in notice.reason
    assert sched.state.stopping


def test_a_scheduler_stopped_by_its_host_tells_every_worker_and_client_why():
    sched = Scheduler(protected=True)  # a signal on its own host stops even a protected scheduler
    sched.client()
    sched.worker(W1)
    sched.state.stop_cluster("the scheduler was stopped")
    out = sched.flush()
    for peer in (W1, CLIENT):
        assert messages(out, peer, Shutdown) == [Shutdown("the scheduler was stopped")]
    assert sched.state.stopping


def test_nothing_is_assigned_once_the_cluster_is_stopping():
    sched = Scheduler()
    sched.client()
    sched.worker(W1)
    sched.send(CLIENT, Shutdown("now"))
    out = sched.submit(CLIENT, spec(1))  # arrives in the same turn, before the loop stops
    assert assigned(out) == {}
    assert sched.snapshot()["tasks"]["pending"] == 1  # taken, and held: not sent to a worker told to stop
    assert sched.state.stopping


def test_a_protected_scheduler_refuses_and_keeps_working():
    sched = Scheduler(protected=True)
    sched.client()
    sched.worker(W1)
    sched.send(CLIENT, Shutdown("please"))
    out = sched.flush()
    [refusal] = messages(out, CLIENT, Rejected)
    assert "--protected" in refusal.reason
    assert not messages(out, W1, Shutdown)
    assert not sched.state.stopping
    assert list(assigned(sched.submit(CLIENT, spec(1)))) == [W1]


def test_only_a_known_client_may_ask():
    sched = Scheduler()
    sched.worker(W1)
    sched.send(b"stranger", Shutdown("hello"))
    out = sched.flush()
    assert messages(out, b"stranger", Rejected)
    assert not messages(out, W1, Shutdown)
    assert not sched.state.stopping
    sched.send(W1, Shutdown("a worker is not a client"))
    assert messages(sched.flush(), W1, Rejected)
    assert not sched.state.stopping
