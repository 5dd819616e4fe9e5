"""Balancing and dropped connections, without sockets: the scheduler's rules driven by messages and a fake clock."""

from __future__ import annotations

from scaler_jupyter.protocol import Cancel, Heartbeat, Rejected, TakeBack, TakenBack
from scaler_jupyter.protocol.messages import Status
from tests.unit.scheduler_harness import CLIENT, W1, W2, Scheduler, assigned, messages, ok, results, spec


def loaded_and_idle() -> tuple[Scheduler, list]:
    """W1 holds four tasks (one running), W2 has just joined with nothing to do; returns what the join sent."""
    sched = Scheduler(balance_interval=0.5)
    sched.client()
    sched.worker(W1)
    assert assigned(sched.submit(CLIENT, *(spec(i) for i in range(1, 5))))[W1] == [1, 2, 3, 4]
    return sched, sched.worker(W2)


def test_an_idle_worker_makes_the_busy_one_give_back_its_newest_queued_tasks_at_once():
    _, joined = loaded_and_idle()
    [take_back] = messages(joined, W1, TakeBack)
    assert take_back.task_ids == [4, 3]  # the newest, the least likely to have started; two of four evens it out


def test_a_worker_running_out_of_work_triggers_balancing_without_waiting_for_the_tick():
    sched = Scheduler(balance_interval=1000)
    sched.client()
    sched.worker(W1)
    sched.worker(W2)
    sent = assigned(sched.submit(CLIENT, *(spec(i) for i in range(1, 9))))  # four each
    out = sched.report(W2, *(ok(i) for i in sent[W2]))
    assert messages(out, W1, TakeBack)


def test_returned_tasks_run_on_the_idle_worker_and_kept_ones_stay():
    sched, _ = loaded_and_idle()
    sched.send(W1, TakenBack([4]))  # 3 had started: the worker keeps it
    out = sched.flush()
    assert assigned(out) == {W2: [4]}
    assert set(sched.state.workers[W1].queue) == {1, 2, 3}
    out = sched.report(W1, ok(1), ok(2), ok(3))
    out += sched.report(W2, ok(4))
    done = {}
    for _, message in out:
        done.update({r.task_id: r for r in getattr(message, "results", [])})
    assert sorted(done) == [1, 2, 3, 4]


def test_no_second_request_while_one_is_unanswered():
    sched, joined = loaded_and_idle()
    assert messages(joined, W1, TakeBack)
    sched.tick(sched.now + 1)
    assert not messages(sched.flush(), W1, TakeBack)


def test_nothing_moves_while_tasks_wait_for_any_worker_or_nobody_is_idle():
    sched = Scheduler(balance_interval=0.5)
    sched.client()
    sched.worker(W1)
    sched.worker(W2)
    sched.submit(CLIENT, *(spec(i) for i in range(1, 9)))  # both hold four
    sched.tick(sched.now + 1)
    out = sched.flush()
    assert not messages(out, W1, TakeBack) and not messages(out, W2, TakeBack)


def test_tags_are_respected_when_moving():
    sched = Scheduler(balance_interval=0.5)
    sched.client()
    sched.worker(W1, tags=["gpu"])
    sched.submit(CLIENT, *(spec(i, tags=["gpu"]) for i in range(1, 5)))
    sched.worker(W2)  # cannot run gpu tasks
    sched.tick(sched.now + 1)
    assert not messages(sched.flush(), W1, TakeBack)


def test_a_task_cancelled_while_it_was_being_taken_back_is_not_run_again():
    sched, _ = loaded_and_idle()
    sched.send(CLIENT, Cancel([4]))
    sched.flush()
    sched.send(W1, TakenBack([4, 3]))
    out = sched.flush()
    assert assigned(out) == {W2: [3]}
    assert results(out)[4].status == Status.CANCELLED


def test_a_dropped_connection_is_a_dead_worker_at_once():
    sched, _ = loaded_and_idle()
    sched.state.on_disconnect(W1)
    out = sched.flush()
    assert W1 not in sched.state.workers
    assert sorted(assigned(out)[W2]) == [1, 2, 3, 4]


def test_a_dropped_client_has_its_tasks_cancelled():
    sched, _ = loaded_and_idle()
    sched.state.on_disconnect(CLIENT)
    out = sched.flush()
    assert CLIENT not in sched.state.clients and sched.state.tasks == {}
    assert sorted(messages(out, W1, Cancel)[0].task_ids) == [1, 2, 3, 4]


def test_an_unknown_peer_that_heartbeats_is_told_to_join_again():
    sched = Scheduler()
    sched.send(b"stranger", Heartbeat(0.0, 0, 0, 0))
    [rejected] = messages(sched.flush(), b"stranger", Rejected)
    assert "connect again" in rejected.reason


def test_tasks_of_a_dead_worker_keep_their_place_before_later_ones():
    sched = Scheduler()
    sched.client()
    sched.worker(W1)
    sched.submit(CLIENT, *(spec(i) for i in range(1, 5)))  # W1 holds 1-4
    sched.submit(CLIENT, spec(5), spec(6))  # no room: they wait
    sched.state.on_disconnect(W1)
    sched.flush()
    assert assigned(sched.worker(W2))[W2] == [1, 2, 3, 4]
