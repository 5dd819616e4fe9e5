"""The results of one ``Client.map`` call: in order, without a Future per call, and not held once yielded.

The delivery thread fills slots as results arrive; the consumer waits for the
next slot only, so a ``map`` of 100,000 calls costs one Condition, not 100,000.
A slot is emptied as its value is yielded (and the iterator keeps no reference
of its own), so a result the caller drops is freed, as with
``ProcessPoolExecutor.map``. With a window (``buffersize``), a call is submitted
only as a result is yielded, so at most that many results wait in memory.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from scaler_jupyter.client.outcome import Outcome, TaskState

_WAITING = object()  # a slot whose result has not arrived; a taken slot holds None


class OrderedResults:
    """A :class:`~scaler_jupyter.client.outcome.TaskSink` for every task of one ``map`` call."""

    quick = True  # filling a slot runs no user code

    def __init__(self, cancel: Callable[[list[int]], None]) -> None:
        self._cancel = cancel
        self._condition = threading.Condition()
        self._slots: list[Any] = []  # an Outcome once arrived, _WAITING before, None once taken
        self._index: dict[int, int] = {}  # slot of each task whose result has not arrived
        self._awaited = -1  # the slot the consumer sleeps on: only its filling wakes it

    def add(self, task_ids: list[int]) -> None:
        """Give the next slots to ``task_ids`` (before their tasks are sent)."""
        with self._condition:
            start = len(self._slots)
            self._index.update(zip(task_ids, range(start, start + len(task_ids)), strict=True))
            self._slots.extend([_WAITING] * len(task_ids))

    def __len__(self) -> int:
        """The calls submitted so far."""
        return len(self._slots)

    def deliver(self, outcome: Outcome) -> None:
        # Without the lock but for a wake-up: a slot is written once, by this thread, and the consumer, who
        # sets ``_awaited`` before it looks at the slot, sees either the outcome or the notification.
        index = self._index.pop(outcome.task_id, None)
        if index is None:
            return
        self._slots[index] = outcome
        if index == self._awaited:
            with self._condition:
                self._condition.notify_all()

    def lose(self, task_id: int, error: BaseException) -> None:
        self.deliver(Outcome(task_id, TaskState.FAILED, error=error))

    def close(self) -> None:
        """Cancel the calls whose results have not arrived."""
        with self._condition:
            unfinished, self._index = list(self._index), {}
        if unfinished:
            self._cancel(unfinished)

    def iterate(self, deadline: float | None, flatten: bool, refill: Callable[[], None] | None = None) -> Iterator:
        """Yield the values in call order; ``refill`` submits one more call each time a slot is taken."""
        index = 0
        try:
            while index < len(self._slots):
                if refill is not None:
                    refill()
                index += 1
                # no local names the value: once the caller drops it, it is freed
                if flatten:
                    yield from self._take(index - 1, deadline)
                else:
                    yield self._take(index - 1, deadline)
        finally:
            self.close()

    def _take(self, index: int, deadline: float | None) -> Any:
        if self._slots[index] is _WAITING:
            with self._condition:
                self._awaited = index
                remaining = None if deadline is None else deadline - time.monotonic()
                if not self._condition.wait_for(lambda: self._slots[index] is not _WAITING, remaining):
                    raise concurrent.futures.TimeoutError()
        outcome, self._slots[index] = self._slots[index], None
        if outcome.state is TaskState.DONE:
            return outcome.value
        raise outcome.error
