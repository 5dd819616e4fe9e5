"""How a task ended, as the client tells it, and the one protocol for whatever waits on a task.

Every result the scheduler sends becomes one :class:`Outcome`, built once: its
payload unpickled once, its wire status mapped to one exception type (the table
:data:`ERRORS`). The outcome goes to the :class:`TaskSink` registered for the
task. A sink is anything with two methods: ``deliver(outcome)`` when the task
ended, ``lose(task_id, error)`` when the client can no longer learn how it ends
(the scheduler went away). The client's own sinks are its :class:`Future`, a
``map`` call's ordered results and a graph run; a progress bar or the cell magic
can be one too.

Values come back the caller's to change: a received buffer nobody else holds
becomes a writable array without a copy, and a small one (inline in the
message header, hence immutable bytes) is copied.
"""

from __future__ import annotations

import concurrent.futures
import enum
from typing import Any, NamedTuple, Protocol

from scaler_jupyter.errors import (
    GraphError,
    NoWorkerError,
    ProtocolError,
    SerializationError,
    TaskCrashedError,
    WorkerDiedError,
)
from scaler_jupyter.protocol import Status, TaskResult, serialization
from scaler_jupyter.protocol.serialization import Serializer


class TaskState(enum.Enum):
    """How a task ended."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(NamedTuple):
    """A task's end: its value, or the exception to raise, and what it cost on its worker. (A named tuple:
    one is built per result, and a frozen dataclass costs three times as much to build.)"""

    task_id: int
    state: TaskState
    value: Any = None
    error: BaseException | None = None
    profile: dict | None = None  # wall_time, cpu_time (seconds), peak_memory (bytes): None if it never ran


class TaskSink(Protocol):
    """Whatever waits on a task. Both methods are called from the client's delivery thread, at most once
    per task between them, and must not block on user code. A sink whose ``deliver`` runs no user code at
    all may say so with ``quick = True``: small results then reach it from the network thread directly
    (see :mod:`scaler_jupyter.client.delivery`)."""

    def deliver(self, outcome: Outcome) -> None:
        """The task ended as ``outcome`` says."""

    def lose(self, task_id: int, error: BaseException) -> None:
        """The client can no longer learn how the task ends; ``error`` says why and what to do."""


# Each wire status but OK, ERROR (the task's own exception) and CANCELLED is one error type.
ERRORS: dict[Status, type[Exception]] = {
    Status.CRASHED: TaskCrashedError,
    Status.WORKER_DIED: WorkerDiedError,
    Status.NO_WORKER: NoWorkerError,
    Status.SERIALIZATION: SerializationError,
    Status.INVALID: GraphError,
}


class RemoteTraceback(Exception):
    """Carries the worker-side traceback as the ``__cause__`` of a task's exception, as ProcessPoolExecutor does."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def state_of(status: int) -> TaskState:
    """The state a wire status means, without loading anything."""
    if status == Status.OK:
        return TaskState.DONE
    if status == Status.CANCELLED:
        return TaskState.CANCELLED
    return TaskState.FAILED


def outcome_of(result: TaskResult, serializer: Serializer | None = None) -> Outcome:
    """The outcome of ``result``, its payload loaded here (the payload is the client's own)."""
    profile = None
    if result.profile:
        wall, cpu, memory = result.profile
        profile = {"wall_time": wall, "cpu_time": cpu, "peak_memory": memory}
    state = state_of(result.status)
    if state is TaskState.CANCELLED:
        return Outcome(result.task_id, state, error=concurrent.futures.CancelledError(), profile=profile)
    if state is TaskState.DONE:
        try:
            value = serialization.loads(result.payload, serializer, writable=True)
        except Exception as exc:
            error = SerializationError(f"the result of task {result.task_id} could not be deserialized here: "
                                       f"{type(exc).__name__}: {exc}")
            return Outcome(result.task_id, TaskState.FAILED, error=error, profile=profile)
        return Outcome(result.task_id, state, value=value, profile=profile)
    return Outcome(result.task_id, state, error=_error(result), profile=profile)


def _error(result: TaskResult) -> BaseException:
    if result.status == Status.ERROR:
        try:
            exc, remote_traceback = serialization.loads(result.payload)
        except Exception as load_error:  # the exception's class does not exist here
            return SerializationError(f"the task raised an exception that could not be loaded here "
                                      f"({load_error}): {result.message}")
        exc.__cause__ = RemoteTraceback(remote_traceback)
        return exc
    try:
        kind = ERRORS[Status(result.status)]
    except (ValueError, KeyError):
        return ProtocolError(f"task {result.task_id} ended with status {result.status}, which this version does "
                             f"not know ({result.message}): install the same scaler_jupyter version everywhere")
    return kind(result.message)
