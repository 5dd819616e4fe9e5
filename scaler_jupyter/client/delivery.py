"""Where results go: each task's result to the sink waiting on it, in a thread of its own.

The network thread mostly hands messages over (:meth:`Delivery.post`), so however
large a result is to unpickle, however slow a done-callback the user attached,
however many keys a graph has, it keeps reading, writing and heartbeating, and
the scheduler never takes the client for gone. The delivery thread takes the
messages in the order they arrived (a task's printed output before its
result), builds one :class:`~scaler_jupyter.client.outcome.Outcome` per result
and hands it to the task's sink: O(1) per result.

One case skips the hand-over, as it costs a thread wake-up (tens of microseconds
on a VM, a good share of a round trip): results of under ``_INLINE_BYTES`` whose
sinks are all ``quick`` (they run no user code: a future without done-callbacks)
are delivered in the network thread, when nothing waits in the delivery thread
before them (so the order holds) and no listener is attached.

The sink table maps a task id to its sink until the task's outcome is
delivered, the sink forgets it (a cancel) or the connection is lost (every
sink then loses its tasks, and nothing can be watched any more).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterable

from scaler_jupyter.client.outcome import Outcome, TaskSink, TaskState, outcome_of, state_of
from scaler_jupyter.protocol import Output, Results
from scaler_jupyter.protocol.serialization import Serializer

logger = logging.getLogger(__name__)

ResultListener = Callable[[int, TaskState], None]

_INLINE_BYTES = 1 << 16  # results this small are quick to load: the network thread may deliver them


class _Lost:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _CancelAll:
    __slots__ = ()


_STOP = object()


class Delivery:
    """The sink table and the thread that delivers to it; see the module docstring."""

    def __init__(self, serializer: Serializer | None = None) -> None:
        self._serializer = serializer
        self._sinks: dict[int, TaskSink] = {}
        self._condition = threading.Condition()
        self._lost: BaseException | None = None
        self._listeners: list[ResultListener] = []
        self._backlog = 0  # items put in the queue and not yet handled
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="scaler-jupyter-delivery", daemon=True)
        self._thread.start()

    # -- from any thread -----------------------------------------------------

    def watch(self, task_ids: Iterable[int], sink: TaskSink) -> None:
        """Route the results of ``task_ids`` to ``sink``; raise the loss if the connection is lost."""
        with self._condition:
            if self._lost is not None:
                raise self._lost
            for task_id in task_ids:
                self._sinks[task_id] = sink

    def forget(self, task_ids: Iterable[int]) -> None:
        """Stop routing results of ``task_ids`` (they were cancelled)."""
        with self._condition:
            for task_id in task_ids:
                self._sinks.pop(task_id, None)
            if not self._sinks:
                self._condition.notify_all()

    def pending(self) -> list[int]:
        """The tasks whose outcome some sink still waits for."""
        with self._condition:
            return list(self._sinks)

    def wait_idle(self) -> None:
        """Block until no sink waits for anything."""
        with self._condition:
            self._condition.wait_for(lambda: not self._sinks)

    def add_listener(self, listener: ResultListener) -> None:
        """Call ``listener(task_id, state)`` for every result received, before its sink hears of it."""
        self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: ResultListener) -> None:
        self._listeners = [f for f in self._listeners if f != listener]

    def cancel_all(self) -> None:
        """Every waiting sink gets its tasks cancelled (the caller cancels them on the scheduler)."""
        self._put(_CancelAll())

    def close(self) -> None:
        """Deliver what is queued, then stop the thread."""
        self._put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- from the network thread ---------------------------------------------

    def post(self, message: Results | Output) -> None:
        """Hand a message over to the delivery thread, or deliver it here when that is quick (module docstring)."""
        if type(message) is Results and self._quick(message.results):
            self._deliver(message.results)
        else:
            self._put(message)

    def post_lost(self, error: BaseException) -> None:
        """The connection is lost: every sink loses its tasks, and nothing more can be watched."""
        with self._condition:
            if self._lost is not None:
                return
            self._lost = error
        self._put(_Lost(error))

    def _put(self, item) -> None:
        with self._condition:
            self._backlog += 1
        self._queue.put(item)

    def _quick(self, results: list) -> bool:
        """Whether ``results`` may be delivered in the calling thread: see the module docstring."""
        if self._listeners:
            return False
        if sum(r.payload.nbytes for r in results if r.payload is not None) >= _INLINE_BYTES:
            return False
        with self._condition:
            if self._backlog:
                return False
            sinks = [self._sinks.get(r.task_id) for r in results]
        return all(sink is None or getattr(sink, "quick", False) for sink in sinks)

    # -- in the delivery thread ----------------------------------------------

    def _run(self) -> None:
        while self._handle(self._queue.get()):  # no local keeps a delivered message (and its buffers) alive
            pass

    def _handle(self, item) -> bool:
        try:
            if type(item) is Results:
                self._deliver(item.results)
            elif type(item) is Output:
                self._write(item)
            elif type(item) is _Lost:
                self._end(lambda task_id, sink: sink.lose(task_id, item.error))
            elif type(item) is _CancelAll:
                self._end(lambda task_id, sink: sink.deliver(Outcome(task_id, TaskState.CANCELLED)))
            elif item is _STOP:
                return False
        except Exception:
            logger.exception("delivering %s failed", type(item).__name__)
        finally:
            with self._condition:
                self._backlog -= 1
        return True

    def _write(self, message: Output) -> None:
        """Replay what a task printed: where its sink says (a notebook cell), else on this process's stdout or
        stderr."""
        for line in message.lines:
            with self._condition:
                sink = self._sinks.get(line.task_id)
            write = getattr(sink, "on_output", None)
            if write is not None:
                write(line.stream, line.text)
                continue
            stream = sys.stderr if line.stream == "stderr" else sys.stdout
            stream.write(line.text)
            stream.flush()

    def _deliver(self, results: list) -> None:
        with self._condition:
            sinks = [self._sinks.pop(result.task_id, None) for result in results]
        listeners, serializer = self._listeners, self._serializer
        for result, sink in zip(results, sinks, strict=True):
            for listener in listeners:
                _call(listener, result.task_id, state_of(result.status))
            if sink is not None:
                _call(sink.deliver, outcome_of(result, serializer))
        with self._condition:
            if not self._sinks:
                self._condition.notify_all()

    def _end(self, tell: Callable[[int, TaskSink], None]) -> None:
        with self._condition:
            sinks, self._sinks = self._sinks, {}
            self._condition.notify_all()
        for task_id, sink in sinks.items():
            _call(tell, task_id, sink)


def _call(function: Callable, *args) -> None:
    """Run a sink's or listener's code; its failure is logged and never stops delivery."""
    try:
        function(*args)
    except Exception:
        logger.exception("a result's sink or listener failed")
