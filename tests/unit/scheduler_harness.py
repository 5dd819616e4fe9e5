"""A SchedulerState driven as the server loop drives it, for the unit tests of the scheduler's rules.

:class:`Scheduler` wraps a ``SchedulerState`` with a fake clock and shorthand for the messages
peers send; the functions below build the records tests send and read the messages that come
out. The tests of ``test_scheduler_state``, ``test_balancing``, ``test_graph_scheduler`` and
``test_shutdown`` all drive the scheduler through it.
"""

from __future__ import annotations

from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    TASK_ID_BITS,
    Assign,
    ClientHello,
    ClientWelcome,
    Payload,
    Results,
    Submit,
    TaskResult,
    TaskSpec,
    WorkerHello,
    WorkerWelcome,
)
from scaler_jupyter.protocol.messages import ObjectSpec, Status
from scaler_jupyter.scheduler.monitor import build_snapshot
from scaler_jupyter.scheduler.state import SchedulerConfig, SchedulerState

FN = b"F" * 16
FUNCTION = ObjectSpec(FN, Payload([b"a pickled function"]))
DATA = b"D" * 16

CLIENT = b"client-a"  # the first client to say hello: its task ids start at 0
OTHER_CLIENT = b"client-b"  # the second: its task ids start at OTHER
OTHER = 1 << TASK_ID_BITS
W1, W2, W3 = b"worker-1", b"worker-2", b"worker-3"


def spec(task_id: int, *, tags=(), priority: int = 0, parent_id: int | None = None, object_ids=()) -> TaskSpec:
    return TaskSpec(task_id, FN, Payload([b"args %d" % task_id]), list(object_ids), None, list(tags), priority,
                    parent_id)


def ok(task_id: int, wall: float = 0.01) -> TaskResult:
    return TaskResult(task_id, Status.OK, Payload([b"result"]), "", [wall, wall, 1000])


def crashed(task_id: int) -> TaskResult:
    return TaskResult(task_id, Status.CRASHED, None, "the task killed its processor", [])


class Scheduler:
    """A SchedulerState with a fake clock, and shorthand for the messages peers send."""

    def __init__(self, **config) -> None:
        self.now = 100.0
        self.state = SchedulerState(SchedulerConfig(**config), now=self.now)

    def send(self, peer: bytes, message) -> None:
        self.state.on_message(peer, message, self.now)

    def tick(self, now: float) -> None:
        self.now = now
        self.state.on_tick(now)

    def flush(self) -> list[tuple[bytes, object]]:
        out = self.state.flush()
        for peer in {p for p, _ in out}:  # coalesced: at most one Assign and one Results per peer per flush
            assert sum(isinstance(m, Assign) for p, m in out if p == peer) <= 1
            assert sum(isinstance(m, Results) for p, m in out if p == peer) <= 1
        return out

    def client(self, peer: bytes = CLIENT, store_tasks: bool = True) -> ClientWelcome:
        self.send(peer, ClientHello(PROTOCOL_VERSION, peer.decode(), "host", 1, store_tasks))
        [welcome] = messages(self.flush(), peer, ClientWelcome)
        return welcome

    def worker(self, peer: bytes, processors: int = 1, tags=()) -> list:
        self.send(peer, WorkerHello(PROTOCOL_VERSION, peer.decode(), "host", 2, processors, list(tags)))
        out = self.flush()
        assert messages(out, peer, WorkerWelcome)
        return out

    def submit(self, peer: bytes, *specs: TaskSpec, objects=(FUNCTION,)) -> list:
        self.send(peer, Submit(list(objects), list(specs)))
        return self.flush()

    def report(self, worker: bytes, *results: TaskResult) -> list:
        self.send(worker, Results(list(results)))
        return self.flush()

    def snapshot(self) -> dict:
        return build_snapshot(self.state, self.now)


def messages(out, peer: bytes, kind: type) -> list:
    return [m for p, m in out if p == peer and isinstance(m, kind)]


def assigned(out) -> dict[bytes, list[int]]:
    """Task ids sent to each worker, in the order sent."""
    return {p: [t.task_id for t in m.tasks] for p, m in out if isinstance(m, Assign)}


def results(out, peer: bytes = CLIENT) -> dict[int, TaskResult]:
    return {r.task_id: r for m in messages(out, peer, Results) for r in m.results}
