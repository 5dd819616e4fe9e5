"""A worker agent's rules, without sockets or processes: messages, processor exits and clock ticks in, actions out.

Each test drives an :class:`AgentState` as the agent's loop does: ``on_scheduler_message``
and ``on_processor_message`` for every decoded message, ``on_processor_exit`` when a
processor's pidfd fires, ``on_tick`` on the clock, then ``flush()`` for what to do.
Messages cross the codec on their way in, as on the wire.
"""

from __future__ import annotations

import pytest

from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    Assign,
    Cancel,
    ClientHello,
    DeleteObjects,
    Heartbeat,
    ObjectSpec,
    Output,
    OutputLine,
    Payload,
    Rejected,
    Results,
    Shutdown,
    Status,
    TakeBack,
    TakenBack,
    TaskBlocked,
    TaskResult,
    TaskSpec,
    WorkerBye,
    WorkerHello,
    WorkerWelcome,
    decode,
    encode,
)
from scaler_jupyter.worker.agent_state import (
    MAX_PROCESSOR_DEPTH,
    MAX_START_FAILURES,
    READY_TIMEOUT,
    Actions,
    AgentConfig,
    AgentState,
)

FN = b"F" * 16
FUNCTION = ObjectSpec(FN, Payload([b"a pickled function"]))
DATA = b"D" * 16
ADDRESS = "tcp://127.0.0.1:2345"


def spec(task_id: int, *, priority: int = 0, parent_id: int | None = None, object_ids=()) -> TaskSpec:
    return TaskSpec(task_id, FN, Payload([b"args %d" % task_id]), list(object_ids), None, [], priority, parent_id)


def ok(task_id: int, wall: float = 0.01) -> TaskResult:
    return TaskResult(task_id, Status.OK, Payload([b"result"]), "", [wall, wall, 1000])


def wire(message):
    return decode(encode(message))


class Agent:
    """An AgentState with a fake clock, and shorthand for what the scheduler and the processors send."""

    def __init__(self, processors: int = 1, **config) -> None:
        self.now = 100.0
        self.state = AgentState(AgentConfig(processors=processors, **config), ADDRESS, "worker-a", "host", 7,
                                self.now)

    def flush(self) -> Actions:
        actions = self.state.flush()
        for kind in (Output, Results):  # batched: at most one of each per turn
            assert sum(isinstance(m, kind) for m in actions.to_scheduler) <= 1
        for kind in (DeleteObjects, Cancel, Assign):
            sent_to = [n for n, m in actions.to_processors if isinstance(m, kind)]
            assert len(sent_to) == len(set(sent_to))
        held = set(self.state.processors)
        assert {n for n, _ in actions.to_processors} | set(actions.kill) <= held  # never an exited one
        return actions

    def from_scheduler(self, message) -> Actions:
        self.state.on_scheduler_message(wire(message), self.now)
        return self.flush()

    def from_processor(self, number: int, message) -> Actions:
        self.state.on_processor_message(number, wire(message), self.now)
        return self.flush()

    def exit(self, number: int, code: int = -9, pid: int = 4242) -> Actions:
        self.state.on_processor_exit(number, pid, code, self.now)
        return self.flush()

    def tick(self, now: float, cpu: float = 0.0, memory: int = 0) -> Actions:
        self.now = now
        self.state.on_tick(now, cpu, memory)
        return self.flush()

    def start(self) -> Actions:
        """The first turn: every processor starts, says it is ready, and the worker joins."""
        actions = self.flush()
        assert actions.start == list(range(self.state.config.processors))
        for number in actions.start:
            actions = self.from_processor(number, Heartbeat(0.0, 0, 0, 0))
        return actions

    def join(self) -> None:
        self.start()
        self.from_scheduler(WorkerWelcome(1))

    def assign(self, *specs: TaskSpec, objects=(FUNCTION,)) -> Actions:
        return self.from_scheduler(Assign(list(objects), list(specs)))

    def finish(self, number: int, *results: TaskResult) -> Actions:
        return self.from_processor(number, Results(list(results)))


def sent(actions: Actions, kind: type) -> list:
    """What went to the scheduler, of one kind."""
    return [m for m in actions.to_scheduler if isinstance(m, kind)]


def to(actions: Actions, number: int, kind: type) -> list:
    """What went to processor ``number``, of one kind."""
    return [m for n, m in actions.to_processors if n == number and isinstance(m, kind)]


def assigned(actions: Actions) -> dict[int, list[int]]:
    """Task ids sent to each processor, in the order sent."""
    out: dict[int, list[int]] = {}
    for number, message in actions.to_processors:
        if isinstance(message, Assign):
            out.setdefault(number, []).extend(t.task_id for t in message.tasks)
    return out


def results(actions: Actions) -> dict[int, TaskResult]:
    return {r.task_id: r for m in sent(actions, Results) for r in m.results}


@pytest.fixture
def agent() -> Agent:
    a = Agent()
    a.join()
    return a


# ---------------------------------------------------------------------------
# Joining and liveness


def test_hello_waits_until_every_processor_is_ready():
    a = Agent(processors=2)
    assert a.flush().start == [0, 1]
    assert not sent(a.from_processor(0, Heartbeat(0.0, 0, 0, 0)), WorkerHello)
    [hello] = sent(a.from_processor(1, Heartbeat(0.0, 0, 0, 0)), WorkerHello)
    assert (hello.version, hello.name, hello.host, hello.pid, hello.processors) == (PROTOCOL_VERSION, "worker-a",
                                                                                    "host", 7, 2)


def test_hello_goes_anyway_when_a_processor_is_slow_to_start():
    a = Agent()
    a.flush()
    assert not sent(a.tick(100.0 + READY_TIMEOUT / 2), WorkerHello)
    assert sent(a.tick(100.0 + READY_TIMEOUT + 1), WorkerHello)


def test_heartbeats_begin_with_the_welcome_and_report_the_queue():
    a = Agent(heartbeat=1.0)
    a.start()
    assert not sent(a.tick(101.0), Heartbeat)  # the scheduler does not know us yet
    a.from_scheduler(WorkerWelcome(1))
    a.assign(spec(1), spec(2), spec(3))
    [beat] = sent(a.tick(102.0, cpu=12.5, memory=1 << 20), Heartbeat)
    assert (beat.cpu, beat.memory, beat.running, beat.queued) == (12.5, 1 << 20, 1, 2)
    assert a.state.next_tick == 103.0


def test_a_silent_scheduler_stops_the_worker(agent):
    timeout = agent.state.config.death_timeout
    agent.tick(100.0 + timeout - 1)
    agent.now = 100.0 + timeout - 1
    agent.from_scheduler(Heartbeat(0.0, 0, 0, 0))  # heard: the clock restarts
    assert agent.state.running
    agent.tick(100.0 + timeout + 2)
    assert agent.state.running
    actions = agent.tick(100.0 + 2 * timeout)
    assert not agent.state.running and sent(actions, WorkerBye)


def test_rejected_at_hello_stops_the_worker():
    a = Agent()
    a.start()
    actions = a.from_scheduler(Rejected("protocol version 0"))
    assert not a.state.running and sent(actions, WorkerBye)


def test_rejected_after_the_welcome_drops_the_queue_and_joins_again(agent):
    agent.assign(spec(1), spec(2))  # 1 runs, 2 waits here
    actions = agent.from_scheduler(Rejected("this scheduler does not know you"))
    assert agent.state.running and sent(actions, WorkerHello)
    assert len(agent.state.queue) == 0  # the scheduler gave it to another worker
    assert not sent(agent.tick(101.0), Heartbeat)  # not welcomed again yet
    agent.from_scheduler(WorkerWelcome(2))
    assert sent(agent.tick(102.0), Heartbeat)


def test_a_definite_handshake_failure_stops_the_worker_with_exit_code_1(agent):
    agent.state.on_handshake_failure("a retry may work", definite=False)
    assert agent.state.running
    agent.state.on_handshake_failure("the scheduler refused this peer's key", definite=True)
    assert not agent.state.running and agent.state.exit_code == 1


def test_shutdown_says_goodbye_once_and_replaces_no_processor(agent):
    actions = agent.from_scheduler(Shutdown("cluster stops"))
    assert not agent.state.running and len(sent(actions, WorkerBye)) == 1
    assert not agent.exit(0).start
    assert not sent(agent.flush(), WorkerBye)


def test_a_message_a_worker_does_not_take_is_dropped(agent):
    actions = agent.from_scheduler(ClientHello(PROTOCOL_VERSION, "x", "host", 1, True))
    assert agent.state.running and not actions.to_scheduler and not actions.to_processors


# ---------------------------------------------------------------------------
# Queue order and dispatch


def test_a_processor_holds_one_task_until_task_times_are_known(agent):
    actions = agent.assign(spec(1), spec(2), spec(3))
    assert assigned(actions) == {0: [1]}
    assert assigned(agent.finish(0, ok(1, wall=1.0))) == {0: [2]}


def test_waiting_tasks_are_shared_evenly_among_processors():
    a = Agent(processors=3)
    a.join()
    assert assigned(a.assign(spec(1), spec(2), spec(3), spec(4))) == {0: [1], 1: [2], 2: [3]}
    assert len(a.state.queue) == 1


def test_short_tasks_deepen_a_processors_queue_by_the_rule_the_scheduler_uses(agent):
    agent.assign(*(spec(i) for i in range(1, 20)))
    actions = agent.finish(0, ok(1, wall=0.001))  # 5 ms of work ahead: five tasks
    assert agent.state.depth == 5
    assert assigned(actions) == {0: [2, 3, 4, 5, 6]}
    agent.finish(0, ok(99, wall=1e-9))  # not a task it holds: nothing learned
    assert agent.state.depth == 5
    agent.finish(0, *(ok(t, wall=1.0) for t in (2, 3, 4, 5, 6)))  # long tasks: one at a time again
    assert agent.state.depth == 1


def test_the_depth_is_bounded(agent):
    agent.assign(*(spec(i) for i in range(1, 300)))
    agent.finish(0, ok(1, wall=1e-9))
    assert agent.state.depth == MAX_PROCESSOR_DEPTH


def test_children_go_first_then_priority_then_arrival(agent):
    agent.assign(spec(1, priority=5))  # runs: the processor holds one task
    agent.assign(spec(2), spec(3, priority=1), spec(4), spec(5, parent_id=1), spec(6, priority=1))
    order = []
    running = 1
    for _ in range(5):
        [[task_id]] = assigned(agent.finish(0, ok(running, wall=1.0))).values()
        order.append(task_id)
        running = task_id
    assert order == [5, 3, 6, 2, 4]


def test_an_object_travels_to_a_processor_once():
    a = Agent(processors=2)
    a.join()
    data = ObjectSpec(DATA, Payload([b"data"]))
    actions = a.assign(spec(1, object_ids=[DATA]), spec(2, object_ids=[DATA]), objects=(FUNCTION, data))
    for number in (0, 1):
        [message] = to(actions, number, Assign)
        assert {o.object_id for o in message.objects} == {FN, DATA}
    a.assign(spec(3, object_ids=[DATA]))  # waits: both processors are busy
    [message] = to(a.finish(0, ok(1, wall=1.0)), 0, Assign)
    assert message.objects == [] and [t.task_id for t in message.tasks] == [3]


def test_a_task_whose_object_was_deleted_fails_without_running(agent):
    agent.assign(spec(1))
    agent.assign(spec(2, object_ids=[DATA]), objects=(FUNCTION, ObjectSpec(DATA, Payload([b"data"]))))
    agent.from_scheduler(DeleteObjects([DATA]))
    actions = agent.finish(0, ok(1, wall=1.0))
    assert results(actions)[2].status == Status.SERIALIZATION and DATA.hex() in results(actions)[2].message
    assert not assigned(actions)


def test_deleted_objects_are_dropped_by_the_processors_holding_them():
    a = Agent(processors=2)
    a.join()
    a.assign(spec(1, object_ids=[DATA]), objects=(FUNCTION, ObjectSpec(DATA, Payload([b"data"]))))
    actions = a.from_scheduler(DeleteObjects([DATA]))
    assert to(actions, 0, DeleteObjects) == [DeleteObjects([DATA])] and not to(actions, 1, DeleteObjects)
    assert DATA not in a.state.objects


def test_results_and_output_reach_the_scheduler_batched_output_first():
    a = Agent(processors=2)
    a.join()
    a.assign(spec(1), spec(2))
    a.state.on_processor_message(0, wire(Output([OutputLine(1, "stdout", "one\n")])), a.now)
    a.state.on_processor_message(1, wire(Output([OutputLine(2, "stderr", "two\n")])), a.now)
    a.state.on_processor_message(0, wire(Results([ok(1)])), a.now)
    a.state.on_processor_message(1, wire(Results([ok(2)])), a.now)
    actions = a.flush()
    [output, result] = [m for m in actions.to_scheduler if isinstance(m, (Output, Results))]
    assert isinstance(output, Output) and [line.text for line in output.lines] == ["one\n", "two\n"]
    assert [r.task_id for r in result.results] == [1, 2]


# ---------------------------------------------------------------------------
# Cancel and take-back


def test_cancel_of_a_queued_task_answers_at_once(agent):
    agent.assign(spec(1), spec(2))
    actions = agent.from_scheduler(Cancel([2]))
    assert results(actions)[2].status == Status.CANCELLED
    assert not actions.kill and not actions.to_processors


def test_cancel_of_a_running_task_kills_its_processor_and_is_no_crash(agent):
    agent.assign(spec(1))
    actions = agent.from_scheduler(Cancel([1]))
    assert actions.kill == [0] and results(actions)[1].status == Status.CANCELLED
    actions = agent.exit(0, code=-9)
    assert actions.start == [1] and not results(actions)
    assert sent(agent.finish(0, ok(1)), Results) == []  # what the dead one said late is nobody's


def test_cancel_of_an_unstarted_task_goes_to_its_processor(agent):
    agent.state.depth = 3
    agent.assign(spec(2), spec(3), spec(4))
    actions = agent.from_scheduler(Cancel([3]))
    assert to(actions, 0, Cancel) == [Cancel([3])] and not actions.kill
    agent.state.on_scheduler_message(wire(Cancel([4])), agent.now)
    agent.state.on_scheduler_message(wire(Cancel([3])), agent.now)
    assert to(agent.flush(), 0, Cancel) == [Cancel([4, 3])]  # one message per turn
    actions = agent.finish(0, TaskResult(3, Status.CANCELLED, None, "cancelled", []))
    assert results(actions)[3].status == Status.CANCELLED


def test_a_processor_that_dies_before_answering_a_cancel_reports_it_cancelled(agent):
    agent.state.depth = 3
    agent.assign(spec(1), spec(2), spec(3))
    agent.from_scheduler(Cancel([3]))
    actions = agent.exit(0, code=-11)
    assert results(actions)[1].status == Status.CRASHED and results(actions)[3].status == Status.CANCELLED
    assert assigned(actions) == {1: [2]}  # the unstarted task goes to the new processor


def test_what_was_meant_for_a_processor_that_exits_in_the_same_turn_goes_nowhere():
    a = Agent(processors=2)
    a.join()
    a.state.depth = 2
    a.assign(spec(1), spec(2), spec(3), spec(4))  # 0 holds 1 and 2, 1 holds 3 and 4
    a.state.on_scheduler_message(wire(Cancel([2, 3])), a.now)  # a Cancel for 0, a kill for 1
    a.state.on_processor_exit(0, 4242, -11, a.now)
    a.state.on_processor_exit(1, 4243, -9, a.now)
    actions = a.flush()  # Agent.flush asserts nothing is for processor 0 or 1
    assert not actions.kill and actions.start == [2, 3]
    assert {t: r.status for t, r in results(actions).items()} == {1: Status.CRASHED, 2: Status.CANCELLED,
                                                                   3: Status.CANCELLED}
    assert sorted(t for ts in assigned(actions).values() for t in ts) == [4]


def test_take_back_returns_only_tasks_no_processor_holds(agent):
    agent.assign(spec(1), spec(2), spec(3))
    [taken] = sent(agent.from_scheduler(TakeBack([1, 3, 7])), TakenBack)
    assert taken.task_ids == [3]
    assert assigned(agent.finish(0, ok(1, wall=1.0))) == {0: [2]}


# ---------------------------------------------------------------------------
# Crashes


def test_a_crash_reports_the_running_task_and_requeues_the_rest_first(agent):
    agent.state.depth = 2
    agent.assign(spec(1), spec(2))
    agent.assign(spec(3))  # waits here
    actions = agent.exit(0, code=-11, pid=555)
    crash = results(actions)[1]
    assert crash.status == Status.CRASHED and "pid 555" in crash.message and "signal 11" in crash.message
    assert actions.start == [1]
    assert assigned(actions) == {1: [2, 3]}  # the put-back task before the one that waited


def test_an_exit_code_is_named_in_the_crash(agent):
    agent.assign(spec(1))
    assert "exit code 3" in results(agent.exit(0, code=3))[1].message


def test_processors_dying_at_start_blame_no_task_and_stop_the_worker_after_a_few():
    a = Agent()
    a.flush()
    for number in range(MAX_START_FAILURES - 1):
        actions = a.exit(number, code=1)
        assert actions.start == [number + 1] and a.state.running
    actions = a.exit(MAX_START_FAILURES - 1, code=1)
    assert not a.state.running and sent(actions, WorkerBye) and not actions.start


def test_a_ready_processor_resets_the_start_failures():
    a = Agent()
    a.flush()
    for number in range(MAX_START_FAILURES - 1):
        a.exit(number, code=1)
    a.from_processor(MAX_START_FAILURES - 1, Heartbeat(0.0, 0, 0, 0))
    a.exit(MAX_START_FAILURES - 1, code=-9)
    a.exit(MAX_START_FAILURES, code=1)
    assert a.state.running


# ---------------------------------------------------------------------------
# Parents waiting on their children


def test_a_blocked_parent_gets_a_processor_for_its_children_and_gives_it_back(agent):
    agent.assign(spec(1))
    actions = agent.from_scheduler(TaskBlocked(1))
    assert actions.start == [1] and 1 in agent.state.blocked
    actions = agent.assign(spec(2, parent_id=1), spec(3))
    assert assigned(actions) == {1: [2]}  # never queued behind its own parent
    agent.from_processor(1, Heartbeat(0.0, 0, 0, 0))
    assert assigned(agent.finish(1, ok(2, wall=1.0))) == {1: [3]}  # the parent's processor still takes none
    agent.finish(1, ok(3, wall=1.0))
    actions = agent.finish(0, ok(1, wall=1.0))  # the parent ends: one processor too many
    [retiring] = [n for n, p in agent.state.processors.items() if p.retiring]
    assert to(actions, retiring, Shutdown)
    assert not agent.exit(retiring, code=0).start  # a retired processor is not replaced


def test_a_blocked_message_for_a_task_not_held_is_ignored(agent):
    actions = agent.from_scheduler(TaskBlocked(5))
    assert not actions.start and not agent.state.blocked
