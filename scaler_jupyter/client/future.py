"""The client's futures: standard ``concurrent.futures.Future`` objects whose ``cancel`` reaches the task."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from scaler_jupyter.client.outcome import Outcome, TaskState


class Future(concurrent.futures.Future):
    """A future for one remote task; a :class:`~scaler_jupyter.client.outcome.TaskSink` of its task.

    It stays pending until the task ends (the client does not learn when a worker
    starts it), so ``cancel()`` works on a running task too: the worker stops it.
    ``profile`` holds the task's wall time, CPU time and peak memory once done.
    ``on_output``, if set, receives what the task prints, as ``(stream, text)``, in the client's delivery
    thread, instead of this process's stdout and stderr. Until a done-callback is added it is ``quick``
    (completing it runs no user code), so a small result completes it straight from the network thread.
    """

    def __init__(self, task_id: int, on_cancel: Callable[[int], None]) -> None:
        super().__init__()
        self.task_id = task_id
        self.profile: dict | None = None
        self.on_output: Callable[[str, str], None] | None = None
        self._on_cancel = on_cancel
        self.quick = True

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future], object]) -> None:
        self.quick = False  # user code runs on completion: the delivery thread completes it, not the network's
        super().add_done_callback(fn)

    def cancel(self) -> bool:
        if self.cancelled():
            return True
        if not super().cancel():
            return False
        # As an executor must: waiters (wait, as_completed) count only notified cancellations as done.
        self.set_running_or_notify_cancel()
        self._on_cancel(self.task_id)
        return True

    def deliver(self, outcome: Outcome) -> None:
        """Complete with ``outcome``; a future the user cancelled meanwhile stays cancelled."""
        self.profile = outcome.profile
        try:
            if outcome.state is TaskState.DONE:
                self.set_result(outcome.value)
            elif outcome.state is TaskState.CANCELLED:
                if super().cancel():
                    self.set_running_or_notify_cancel()
            else:
                self.set_exception(outcome.error)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile by the user
            pass

    def lose(self, task_id: int, error: BaseException) -> None:
        try:
            self.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass

    def __repr__(self) -> str:
        return f"<Future task {self.task_id} {self._state.lower()}>"
