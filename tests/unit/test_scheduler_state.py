"""The scheduler's rules, without sockets: messages and clock ticks in, messages out.

Each test drives a :class:`SchedulerState` as the server loop does: ``on_message``
for every decoded message, ``on_tick`` on the clock, then ``flush()`` for what to send.
"""

from __future__ import annotations

import math

import pytest

from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    Assign,
    Cancel,
    ClientBye,
    ClientHello,
    DeleteObjects,
    Heartbeat,
    ObjectSpec,
    Output,
    OutputLine,
    Payload,
    PutObjects,
    Rejected,
    Results,
    StatusReply,
    StatusRequest,
    Submit,
    TaskBlocked,
    TaskResult,
    WorkerBye,
    WorkerHello,
    decode,
    encode,
)
from scaler_jupyter.protocol.messages import Status
from tests.unit.scheduler_harness import (
    CLIENT,
    DATA,
    FN,
    FUNCTION,
    OTHER,
    OTHER_CLIENT,
    W1,
    W2,
    W3,
    Scheduler,
    assigned,
    crashed,
    messages,
    ok,
    results,
    spec,
)


@pytest.fixture
def sched() -> Scheduler:
    return Scheduler()


# ---------------------------------------------------------------------------
# Assignment


def test_task_goes_to_the_least_loaded_worker(sched):
    sched.client()
    sched.worker(W1)
    sched.worker(W2)
    first = assigned(sched.submit(CLIENT, spec(1)))
    [holder] = first
    second = assigned(sched.submit(CLIENT, spec(2)))
    assert list(second) == [W2 if holder == W1 else W1]
    # W2 now holds one task, W1 one; a third worker joins empty and gets the next one
    sched.worker(W3)
    assert list(assigned(sched.submit(CLIENT, spec(3)))) == [W3]


def test_tasks_submitted_together_are_spread_evenly(sched):
    sched.client()
    sched.worker(W1)
    sched.worker(W2)
    out = sched.submit(CLIENT, *(spec(i) for i in range(1, 5)))
    sent = assigned(out)
    assert sorted(len(ids) for ids in sent.values()) == [2, 2]
    assert sorted(t for ids in sent.values() for t in ids) == [1, 2, 3, 4]


def test_assign_carries_the_objects_a_worker_lacks_once(sched):
    sched.client()
    sched.worker(W1)
    out = sched.submit(CLIENT, spec(1))
    [assign] = messages(out, W1, Assign)
    assert [o.object_id for o in assign.objects] == [FN]
    assert assign.objects[0].payload == FUNCTION.payload
    sched.report(W1, ok(1))
    [assign] = messages(sched.submit(CLIENT, spec(2)), W1, Assign)
    assert assign.objects == []  # the worker holds the function already


def test_a_worker_holds_a_bounded_number_of_tasks(sched):
    sched.client()
    sched.worker(W1)
    out = sched.submit(CLIENT, *(spec(i) for i in range(1, 101)))
    held = len(assigned(out)[W1])
    assert 1 <= held < 100
    assert sched.snapshot()["tasks"]["pending"] == 100 - held
    # as results come back, the rest follows
    out = sched.report(W1, *(ok(i) for i in assigned(out)[W1]))
    assert assigned(out)[W1]


@pytest.mark.parametrize(("seconds", "held"), [(0.05, 2), (5.0, 2), (0.03, 2), (0.001, 50)])
def test_a_worker_holds_queue_seconds_of_work_and_at_least_one_task_queued(sched, seconds, held):
    # the queued task is there when the running one ends: no round trip to the scheduler between two tasks
    sched.client()
    sched.worker(W1)
    out = sched.submit(CLIENT, *(spec(i) for i in range(1, 201)))
    first = assigned(out)[W1]
    for _ in range(3):  # task times are learned as an average: a few rounds settle it
        out = sched.report(W1, *(ok(i, wall=seconds) for i in first))
        first = assigned(out)[W1]
    assert sched.snapshot()["workers"][0]["queued"] == held


# ---------------------------------------------------------------------------
# Tags


def test_tagged_task_only_goes_to_a_worker_with_the_tag(sched):
    sched.client()
    sched.worker(W1)  # no tags
    sched.worker(W2, tags=["gpu"])
    for task_id in range(1, 4):  # even when the gpu worker is the busier one
        assert assigned(sched.submit(CLIENT, spec(task_id, tags=["gpu"]))) == {W2: [task_id]}


def test_tagged_task_waits_until_a_worker_has_every_tag(sched):
    sched.client()
    sched.worker(W1)
    sched.worker(W2, tags=["gpu"])
    out = sched.submit(CLIENT, spec(1, tags=["gpu", "highmem"]))
    assert assigned(out) == {}
    assert results(out) == {}
    assert sched.snapshot()["tasks"]["pending"] == 1
    out = sched.worker(W3, tags=["gpu", "highmem", "ssd"])
    assert assigned(out) == {W3: [1]}


def test_untagged_task_may_run_on_a_tagged_worker(sched):
    sched.client()
    sched.worker(W2, tags=["gpu"])
    assert assigned(sched.submit(CLIENT, spec(1))) == {W2: [1]}


def test_tagged_tasks_do_not_block_untagged_ones(sched):
    sched.client()
    sched.worker(W1)
    out = sched.submit(CLIENT, spec(1, tags=["gpu"]), spec(2), spec(3, tags=["gpu"]), spec(4))
    assert assigned(out) == {W1: [2, 4]}


# ---------------------------------------------------------------------------
# Order


def test_higher_priority_is_assigned_first(sched):
    sched.client()
    sched.submit(CLIENT, spec(1, priority=0), spec(2, priority=5), spec(3, priority=1), spec(4, priority=5))
    out = sched.worker(W1, processors=4)
    assert assigned(out) == {W1: [2, 4, 3, 1]}  # by priority, then submission order


def test_priority_decides_which_task_takes_a_free_slot(sched):
    sched.client()
    sched.worker(W1)
    first = assigned(sched.submit(CLIENT, *(spec(i) for i in range(1, 101))))[W1]
    waiting_before = sched.snapshot()["tasks"]["pending"]
    sched.submit(CLIENT, spec(1000, priority=10))
    assert sched.snapshot()["tasks"]["pending"] == waiting_before + 1
    out = sched.report(W1, ok(first[0]))
    assert assigned(out)[W1][0] == 1000


def test_children_go_before_top_level_tasks(sched):
    sched.client()
    sched.client(OTHER_CLIENT)  # a Client() inside the parent task
    sched.worker(W1)
    out = sched.submit(CLIENT, *(spec(i) for i in range(1, 101)))
    held = assigned(out)[W1]
    parent = held[0]
    # a high-priority top-level task and a child of the running parent wait together
    sched.send(CLIENT, Submit([], [spec(500, priority=100)]))
    out = sched.submit(OTHER_CLIENT, spec(OTHER + 600, parent_id=parent))
    assert assigned(out) == {W1: [OTHER + 600]}  # the parent's worker got room for exactly its child
    out = sched.report(W1, ok(held[1]))
    assert assigned(out)[W1][0] == 500


def test_running_task_that_submits_children_is_reported_blocked(sched):
    sched.client()
    sched.client(OTHER_CLIENT)
    sched.worker(W1)
    sched.worker(W2)
    [holder] = assigned(sched.submit(CLIENT, spec(1)))
    out = sched.submit(OTHER_CLIENT, spec(OTHER + 2, parent_id=1), spec(OTHER + 3, parent_id=1))
    assert messages(out, holder, TaskBlocked) == [TaskBlocked(1)]  # once, to the parent's worker
    other = W2 if holder == W1 else W1
    assert messages(out, other, TaskBlocked) == []
    out = sched.submit(OTHER_CLIENT, spec(OTHER + 4, parent_id=1))
    assert messages(out, holder, TaskBlocked) == []  # already known


def test_child_of_a_pending_task_does_not_block_anything(sched):
    sched.client()
    sched.submit(CLIENT, spec(1))  # no worker: pending
    out = sched.submit(CLIENT, spec(2, parent_id=1))
    assert [m for _, m in out if isinstance(m, TaskBlocked)] == []


# ---------------------------------------------------------------------------
# Admission


def test_past_max_waiting_tasks_fail_with_no_worker():
    sched = Scheduler(max_waiting=3)
    sched.client()
    out = sched.submit(CLIENT, *(spec(i) for i in range(1, 6)))
    refused = results(out)
    assert sorted(refused) == [4, 5]
    assert all(r.status == Status.NO_WORKER for r in refused.values())
    assert all("max-waiting" in r.message for r in refused.values())
    assert sched.snapshot()["tasks"]["pending"] == 3
    out = sched.submit(CLIENT, spec(6))
    assert results(out)[6].status == Status.NO_WORKER
    # once a worker takes waiting tasks, there is room again
    sched.worker(W1)
    out = sched.submit(CLIENT, spec(7))
    assert 7 not in results(out)


# ---------------------------------------------------------------------------
# Clients


def test_client_bye_cancels_its_tasks_and_frees_its_objects(sched):
    sched.client()
    sched.worker(W1)
    sched.send(CLIENT, PutObjects([ObjectSpec(DATA, Payload([b"data"]))]))
    out = sched.submit(CLIENT, *(spec(i, object_ids=[DATA]) for i in range(1, 101)))
    running = assigned(out)[W1]
    assert sched.snapshot()["tasks"]["pending"] > 0
    sched.send(CLIENT, ClientBye())
    out = sched.flush()
    [cancel] = messages(out, W1, Cancel)
    assert sorted(cancel.task_ids) == sorted(running)
    deleted = {o for m in messages(out, W1, DeleteObjects) for o in m.object_ids}
    assert deleted == {FN, DATA}  # the worker held both; it is told to drop them
    assert len(sched.state.objects) == 0
    snapshot = sched.snapshot()
    assert snapshot["clients"] == []
    assert snapshot["tasks"]["pending"] == 0 and snapshot["tasks"]["assigned"] == 0
    assert snapshot["scheduler"]["objects"] == 0 and snapshot["scheduler"]["object_bytes"] == 0
    # the worker's answers to the cancel are dropped quietly
    out = sched.report(W1, *(TaskResult(t, Status.CANCELLED, None, "cancelled", []) for t in running))
    assert not [m for _, m in out if isinstance(m, Results)]


def test_silent_client_is_dropped_on_tick():
    sched = Scheduler(client_timeout=5.0, worker_timeout=1e9)
    sched.client()
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    sched.tick(104.0)
    assert len(sched.snapshot()["clients"]) == 1
    sched.now = 104.0
    sched.send(CLIENT, Heartbeat(0.0, 0, 0, 0))  # any message counts as a sign of life
    sched.tick(108.0)
    assert len(sched.snapshot()["clients"]) == 1
    sched.tick(109.5)
    out = sched.flush()
    assert sched.snapshot()["clients"] == []
    assert messages(out, W1, Cancel) == [Cancel([1])]


def test_object_sent_twice_is_stored_once(sched):
    sched.client()
    sched.client(OTHER_CLIENT)
    payload = Payload([b"x" * 1000, b"y" * 500])
    sched.send(CLIENT, PutObjects([ObjectSpec(DATA, payload)]))
    sched.send(CLIENT, PutObjects([ObjectSpec(DATA, payload)]))
    sched.send(OTHER_CLIENT, PutObjects([ObjectSpec(DATA, payload)]))
    assert len(sched.state.objects) == 1
    assert sched.snapshot()["scheduler"]["object_bytes"] == 1500
    # it lives while any owner does
    sched.send(CLIENT, ClientBye())
    sched.flush()
    assert len(sched.state.objects) == 1
    sched.send(OTHER_CLIENT, DeleteObjects([DATA]))
    sched.flush()
    assert len(sched.state.objects) == 0
    assert sched.snapshot()["scheduler"]["object_bytes"] == 0


def test_cancel_of_a_waiting_task_answers_at_once(sched):
    sched.client()
    sched.submit(CLIENT, spec(1), spec(2))
    sched.send(CLIENT, Cancel([2]))
    out = sched.flush()
    assert results(out)[2].status == Status.CANCELLED
    out = sched.worker(W1)
    assert assigned(out) == {W1: [1]}


def test_cancel_of_an_assigned_task_reaches_its_worker(sched):
    sched.client()
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    sched.send(CLIENT, Cancel([1]))
    out = sched.flush()
    assert messages(out, W1, Cancel) == [Cancel([1])]
    assert results(out) == {}
    out = sched.report(W1, TaskResult(1, Status.CANCELLED, None, "cancelled while running", []))
    assert results(out)[1].status == Status.CANCELLED
    assert sched.state.tasks == {}


def test_a_client_cannot_cancel_another_clients_task(sched):
    sched.client()
    sched.client(OTHER_CLIENT)
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    sched.send(OTHER_CLIENT, Cancel([1]))
    out = sched.flush()
    assert messages(out, W1, Cancel) == []
    assert results(sched.report(W1, ok(1)))[1].status == Status.OK


def test_output_goes_to_the_tasks_client(sched):
    sched.client()
    sched.client(OTHER_CLIENT)
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    sched.send(W1, Output([OutputLine(1, "stdout", "hello\n")]))
    out = sched.flush()
    assert messages(out, CLIENT, Output) == [Output([OutputLine(1, "stdout", "hello\n")])]
    assert messages(out, OTHER_CLIENT, Output) == []


def test_unknown_peer_submitting_is_rejected(sched):
    sched.worker(W1)
    out = sched.submit(b"stranger", spec(1))
    assert messages(out, b"stranger", Rejected)
    assert assigned(out) == {}
    assert sched.state.tasks == {}
    assert len(sched.state.objects) == 0


def test_wrong_protocol_version_is_rejected(sched):
    sched.send(CLIENT, ClientHello(PROTOCOL_VERSION + 1, "c", "h", 1, True))
    sched.send(W1, WorkerHello(PROTOCOL_VERSION + 1, "w", "h", 1, 1, []))
    out = sched.flush()
    assert messages(out, CLIENT, Rejected) and messages(out, W1, Rejected)
    assert sched.snapshot()["clients"] == [] and sched.snapshot()["workers"] == []


def test_task_naming_a_missing_object_fails_at_once(sched):
    sched.client()
    sched.worker(W1)
    out = sched.submit(CLIENT, spec(1, object_ids=[DATA]))
    assert results(out)[1].status == Status.SERIALIZATION
    assert assigned(out) == {}


def test_object_deleted_while_a_waiting_task_needs_it(sched):
    """A task that waits for a worker while its client deletes the object it refers to.

    The scheduler must neither crash (flush raising takes the whole server loop down)
    nor send a task without its object: it either keeps the object for the task or
    fails the task.
    """
    sched.client()
    sched.send(CLIENT, PutObjects([ObjectSpec(DATA, Payload([b"data"]))]))
    sched.submit(CLIENT, spec(1, object_ids=[DATA]))  # no worker yet: it waits
    sched.send(CLIENT, DeleteObjects([DATA]))
    sched.flush()
    sched.send(W1, WorkerHello(PROTOCOL_VERSION, "w1", "host", 2, 1, []))
    out = sched.flush()  # raises KeyError in the engine as written
    sent = messages(out, W1, Assign)
    if sent:
        assert DATA in [o.object_id for o in sent[0].objects]
    else:
        assert results(out)[1].status != Status.OK


# ---------------------------------------------------------------------------
# Workers and failures


def test_crashed_task_is_retried_max_retries_times_then_fails():
    """Issue 3: a task that has crashed its processor max_retries times fails (the runs before are retried)."""
    sched = Scheduler(max_retries=3)
    sched.client()
    sched.worker(W1)
    sched.worker(W2)
    [holder] = assigned(sched.submit(CLIENT, spec(1)))
    for retry in range(1, 3):
        out = sched.report(holder, crashed(1))
        assert results(out) == {}, f"crash {retry} of 3 must be retried"
        [holder] = assigned(out)
        assert assigned(out)[holder] == [1]
    out = sched.report(holder, crashed(1))
    assert results(out)[1].status == Status.CRASHED
    message = results(out)[1].message  # what the client's TaskCrashedError says
    assert "each of its 3 runs" in message and "--max-retries (3)" in message, message
    assert sched.state.tasks == {}


def test_cancelled_task_that_crashes_is_not_retried(sched):
    sched.client()
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    sched.send(CLIENT, Cancel([1]))
    sched.flush()
    out = sched.report(W1, crashed(1))
    assert assigned(out) == {}
    assert 1 in results(out)


def test_worker_bye_requeues_its_tasks_on_another_worker(sched):
    sched.client()
    sched.worker(W1)
    sched.submit(CLIENT, spec(1), spec(2))
    sched.worker(W2)
    sched.send(W1, WorkerBye())
    out = sched.flush()
    assert sorted(assigned(out)[W2]) == [1, 2]
    [assign] = messages(out, W2, Assign)
    assert [o.object_id for o in assign.objects] == [FN]  # W2 had never received the function
    assert results(out) == {}
    assert [w["name"] for w in sched.snapshot()["workers"]] == ["worker-2"]
    assert results(sched.report(W2, ok(1), ok(2))).keys() == {1, 2}


def test_worker_bye_fails_tasks_of_a_client_that_does_not_store_them(sched):
    sched.client(store_tasks=False)
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    sched.worker(W2)
    sched.send(W1, WorkerBye())
    out = sched.flush()
    assert results(out)[1].status == Status.WORKER_DIED
    assert assigned(out) == {}


def test_silent_worker_is_removed_on_tick():
    sched = Scheduler(worker_timeout=5.0, client_timeout=1e9)
    sched.client()
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    sched.worker(W2)
    sched.now = 104.0
    sched.send(W2, Heartbeat(1.0, 100, 0, 0))
    sched.tick(104.0)
    assert len(sched.snapshot()["workers"]) == 2
    sched.tick(105.5)  # W1 silent 5.5s, W2 1.5s
    out = sched.flush()
    assert [w["name"] for w in sched.snapshot()["workers"]] == ["worker-2"]
    assert assigned(out) == {W2: [1]}


def test_worker_heartbeat_is_answered_and_recorded(sched):
    sched.worker(W1)
    sched.send(W1, Heartbeat(42.0, 12345, 0, 1))
    out = sched.flush()
    assert messages(out, W1, Heartbeat)
    [worker] = sched.snapshot()["workers"]
    assert (worker["cpu"], worker["memory"], worker["running"]) == (42.0, 12345, 1)


def test_results_from_unknown_workers_are_ignored(sched):
    sched.client()
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    sched.worker(W2)
    assert results(sched.report(b"stranger", ok(1))) == {}
    assert results(sched.report(W2, ok(1))) == {}  # a known worker, but not the one holding the task
    assert sched.snapshot()["tasks"]["assigned"] == 1
    assert results(sched.report(W1, ok(1)))[1].status == Status.OK


def test_blocked_parent_of_a_departed_client_frees_its_slot(sched):
    """A parent blocked on children gives its worker one extra slot, until the parent is gone.

    When the parent's client leaves, the parent is gone: its worker must take no more
    tasks than an identical worker that never ran it.
    """
    sched.client()
    sched.client(OTHER_CLIENT)
    sched.worker(W1)
    sched.submit(CLIENT, spec(1))
    out = sched.submit(OTHER_CLIENT, spec(OTHER + 2, parent_id=1))
    assert messages(out, W1, TaskBlocked)
    sched.send(CLIENT, ClientBye())
    sched.flush()
    sched.report(W1, TaskResult(OTHER + 2, Status.OK, Payload([b"result"]), "", []))  # no timing: nothing learned
    sched.worker(W2)
    out = sched.submit(OTHER_CLIENT, *(spec(OTHER + i) for i in range(100, 200)))
    sent = assigned(out)
    assert len(sent[W1]) == len(sent[W2])


# ---------------------------------------------------------------------------
# The snapshot


def test_status_snapshot(sched):
    welcome = sched.client()
    sched.worker(W1)
    sched.worker(W2, processors=2, tags=["gpu"])
    sched.send(CLIENT, PutObjects([ObjectSpec(DATA, Payload([b"d" * 100]))]))
    out = sched.submit(CLIENT, spec(1), spec(2, tags=["tpu"]), spec(3, tags=["gpu"]))
    sent = assigned(out)
    assert sent[W2][-1] == 3
    sched.report(W2, ok(3))
    sched.now += 2.5
    sched.send(CLIENT, StatusRequest(77))
    [(peer, reply)] = [(p, m) for p, m in sched.flush() if isinstance(m, StatusReply)]
    assert peer == CLIENT and reply.request_id == 77
    snapshot = decode([bytes(f) for f in encode(reply)]).snapshot  # it travels as msgpack
    assert snapshot == reply.snapshot

    assert snapshot["version"] == 1
    assert snapshot["time"] > 1.6e9
    scheduler = snapshot["scheduler"]
    assert set(scheduler) >= {"pid", "uptime", "cpu", "memory", "tasks_per_second", "objects", "object_bytes"}
    assert scheduler["uptime"] == pytest.approx(2.5)
    assert scheduler["objects"] == 2 and scheduler["object_bytes"] == 100 + len(FUNCTION.payload.parts[0])
    assert snapshot["tasks"].items() >= {"pending": 1, "assigned": 1, "finished": 1}.items()
    workers = {w["name"]: w for w in snapshot["workers"]}
    assert set(workers) == {"worker-1", "worker-2"}
    for worker in workers.values():
        assert set(worker) >= {"id", "name", "host", "pid", "tags", "processors", "cpu", "memory", "queued",
                               "running", "done", "heartbeat_lag"}
    assert workers["worker-2"]["tags"] == ["gpu"] and workers["worker-2"]["processors"] == 2
    assert workers["worker-2"]["done"] == 1 and workers["worker-1"]["done"] == 0
    assert workers["worker-1"]["queued"] + workers["worker-1"]["running"] == 1
    assert workers["worker-1"]["heartbeat_lag"] == pytest.approx(2.5)
    [client] = snapshot["clients"]
    assert client["id"] == welcome.client_number
    assert (client["tasks"], client["submitted"], client["done"]) == (2, 3, 1)
    assert set(client) >= {"id", "name", "host", "pid"}


def test_tasks_per_second_counts_finished_tasks():
    sched = Scheduler()
    sched.client()
    sched.worker(W1, processors=64)
    sent = assigned(sched.submit(CLIENT, *(spec(i) for i in range(1, 11))))[W1]
    sched.report(W1, *(ok(i) for i in sent))
    sched.now += 2.0
    assert sched.snapshot()["scheduler"]["tasks_per_second"] == pytest.approx(len(sent) / 2.0)
    assert math.isfinite(sched.snapshot()["scheduler"]["tasks_per_second"])


def test_a_client_can_use_only_task_ids_of_its_own():
    """Task ids are a client's number << TASK_ID_BITS plus a counter; another client's ids are refused,
    so no client can take over or shadow another's tasks."""
    sched = Scheduler()
    sched.client()
    sched.client(OTHER_CLIENT)
    sched.worker(W1)
    out = sched.submit(OTHER_CLIENT, spec(5))  # in CLIENT's range
    assert assigned(out) == {} and sched.state.tasks == {}
    out = sched.submit(CLIENT, spec(5))
    assert assigned(out) == {W1: [5]}
