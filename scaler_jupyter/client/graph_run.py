"""The client's side of one graph running on the scheduler: a future per requested key, and how it ends.

A :class:`GraphRun` is the sink of every task of its graph. The scheduler sends
the results of the requested keys, and the failure of any task: a result
completes its future (O(1): a count of the futures still open says when the run
is over); the first failure or cancel ends the run, giving every unfinished
future that outcome, and the scheduler drops the rest of the graph.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from scaler_jupyter.client.future import Future
from scaler_jupyter.client.outcome import Outcome, TaskState


class GraphRun:
    """A :class:`~scaler_jupyter.client.outcome.TaskSink` for every task of one graph.

    ``end(task_ids, cancel)`` is called once when the run is over: the client
    stops routing results for those tasks and, with ``cancel``, tells the scheduler.
    """

    def __init__(self, task_ids: list[int], end: Callable[[list[int], bool], None]) -> None:
        self.task_ids = task_ids
        self._end = end
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._open = 0  # futures not yet completed by their own result
        self._ended = False

    def future_for(self, task_id: int) -> Future:
        """The future of an output task (one per task, however often its key is asked for)."""
        future = self._futures.get(task_id)
        if future is None:
            future = self._futures[task_id] = Future(task_id, lambda _: self.close())
            self._open += 1
        return future

    def deliver(self, outcome: Outcome) -> None:
        if outcome.state is not TaskState.DONE:
            self._finish(outcome)
            return
        future = self._futures.get(outcome.task_id)
        if future is None:
            return
        future.deliver(outcome)
        with self._lock:
            self._open -= 1
            over = self._open == 0
        if over:
            self._stop(cancel=False)

    def lose(self, task_id: int, error: BaseException) -> None:
        self._finish(Outcome(task_id, TaskState.FAILED, error=error))

    def close(self) -> None:
        """Cancel the graph: every task not yet done is dropped, and every unfinished future cancelled."""
        if self._stop(cancel=True):
            for future in self._futures.values():
                future.cancel()

    def _finish(self, outcome: Outcome) -> None:
        """The first failure or cancel: the scheduler has dropped the rest; every open future ends so."""
        if not self._stop(cancel=False):
            return
        for task_id, future in self._futures.items():
            if future.done():
                continue
            if task_id == outcome.task_id:
                future.deliver(outcome)
            else:  # the same end, without the failing task's profile
                future.deliver(Outcome(task_id, outcome.state, error=outcome.error))

    def _stop(self, cancel: bool) -> bool:
        """End the run; True the first time."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
        self._end(self.task_ids, cancel)
        return True
