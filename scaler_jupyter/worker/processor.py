"""A processor: the process that runs tasks, one at a time, for its agent.

It keeps a local queue of the tasks its agent sent, reads every waiting message
before it starts the next task (so a cancel arrives in time), and sends results
back in batches while more tasks wait, one by one when it is about to idle. Functions and
objects are loaded once and cached by id. Before it loads a task it takes on the task's
import environment (its caller's ``sys.path``, modules shipped by value: see
:mod:`scaler_jupyter.import_environment`), and only when it differs from the last task's.
Large parts of results go to shared-memory segments this processor holds until the
scheduler has taken them (``ReleaseSegments``, by way of the agent); large parts of
arguments arrive as segments, each mapped for the task that loads it, copy-on-write.
A module the task needs that cannot be imported here fails the task with a
``ModuleNotFoundError`` that names it and says how to ship it. Run as
``python -m scaler_jupyter.worker.processor READ_FD WRITE_FD`` (the agent's pipes).
"""

from __future__ import annotations

import collections
import importlib
import io
import logging
import os
import reprlib
import resource
import signal
import socket
import sys
import threading
import time
import traceback

from scaler_jupyter import logging_config, task_context
from scaler_jupyter.errors import RemoteError
from scaler_jupyter.import_environment import (
    BundleFinder,
    ImportPath,
    ModuleBundle,
    host_identity,
    interpreter_identity,
)
from scaler_jupyter.processes import exit_with_parent
from scaler_jupyter.protocol import (
    Assign,
    Cancel,
    DeleteObjects,
    Heartbeat,
    Output,
    OutputLine,
    Payload,
    ReleaseSegments,
    Results,
    Shutdown,
    Status,
    TaskResult,
    TaskSpec,
    deliver,
    encode,
    serialization,
    shared_memory,
)
from scaler_jupyter.protocol.channel import Channel, ChannelClosed

logger = logging.getLogger(__name__)

_FLUSH_SECONDS = 0.01  # results wait at most this long for a batch while more tasks are queued


class _PeakMemory:
    """Peak resident memory of one task: the kernel's high-water mark, reset before each task (Linux)."""

    def __init__(self) -> None:
        try:
            self._fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:
            self._fd = None

    def reset(self) -> None:
        if self._fd is not None:
            try:
                os.write(self._fd, b"5")
            except OSError:
                self._fd = None

    @staticmethod
    def peak() -> int:
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class _TaskStream(io.TextIOBase):
    """A stdout/stderr replacement that streams a task's text back to its client, line by line."""

    def __init__(self, processor: Processor, name: str) -> None:
        self._processor = processor
        self._name = name
        self._buffer: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer.append(text)
        if "\n" in text or sum(map(len, self._buffer)) > 8192:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._buffer and task_context.current_task_id is not None:
            text, self._buffer = "".join(self._buffer), []
            self._processor.send(Output([OutputLine(task_context.current_task_id, self._name, text)]))


class Processor:
    """Runs tasks from its agent; see the module docstring."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._send_lock = threading.Lock()  # tasks may print from their own threads
        self._queue: collections.deque[TaskSpec] = collections.deque()
        self._payloads: dict[bytes, Payload] = {}
        self._loaded: dict[bytes, object] = {}
        self._results: list[TaskResult] = []
        self._results_lock = threading.Lock()  # the main thread and the late-results thread both send them
        self._results_waiting = threading.Event()  # set when a batch begins, cleared when it is sent
        self._last_flush = time.monotonic()
        self._peak = _PeakMemory()
        self._running = True
        self._own_path = list(sys.path)
        self._host, self._interpreter = host_identity(), interpreter_identity()
        self._environment: list[bytes] = []
        self._bundles = BundleFinder().install()
        self._segments = shared_memory.SegmentHolder() if shared_memory.available() else None

    def send(self, message) -> None:
        with self._send_lock:
            self._channel.send(encode(message), block=True)

    def _emit(self, stream: str, text: str) -> None:
        """``task_context.emit``: what the task printed goes first, so its client sees the order it wrote."""
        sys.stdout.flush()
        sys.stderr.flush()
        if task_context.current_task_id is not None:
            self.send(Output([OutputLine(task_context.current_task_id, stream, text)]))

    def run(self) -> None:
        """Run tasks until the agent says stop or goes away."""
        self.send(Heartbeat(0.0, 0, 0, 0))  # ready: imports done
        logger.debug("processor %d ready, sys.path %s", os.getpid(), sys.path)
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _TaskStream(self, "stdout"), _TaskStream(self, "stderr")
        threading.Thread(target=self._send_late_results, name="late-results", daemon=True).start()
        task_context.emit = self._emit
        try:
            while self._running:
                self._receive(block=not self._queue)
                if self._queue:
                    self._add_result(self._run(self._queue.popleft()))
                if self._results and (not self._queue or time.monotonic() - self._last_flush > _FLUSH_SECONDS):
                    self._flush_results()
        except ChannelClosed:
            pass  # the agent is gone; so are we
        finally:
            sys.stdout, sys.stderr = stdout, stderr
            self._channel.close()

    def _receive(self, block: bool) -> None:
        if block:
            self._channel.wait_readable()
        for frames in self._channel.receive():
            deliver(frames, self._on_message, "the agent")

    def _on_message(self, message) -> None:
        if isinstance(message, Assign):
            for obj in message.objects:
                self._payloads[obj.object_id] = obj.payload
            self._queue.extend(message.tasks)
        elif isinstance(message, Cancel):
            self._cancel(set(message.task_ids))
        elif isinstance(message, DeleteObjects):
            for object_id in message.object_ids:
                self._payloads.pop(object_id, None)
                self._loaded.pop(object_id, None)
        elif isinstance(message, ReleaseSegments):
            if self._segments is not None:
                self._segments.release(message.inodes)
        elif isinstance(message, Shutdown):
            self._running = False

    def _cancel(self, task_ids: set[int]) -> None:
        kept = collections.deque()
        for spec in self._queue:
            if spec.task_id in task_ids:
                self._add_result(TaskResult(spec.task_id, Status.CANCELLED, None, "cancelled", []))
            else:
                kept.append(spec)
        self._queue = kept

    def _add_result(self, result: TaskResult) -> None:
        with self._results_lock:
            self._results.append(result)
            # a batch waits only while more tasks are queued: else the main loop sends it at once, and waking
            # the late-results thread would cost a thread switch on the round trip for nothing
            if len(self._results) == 1 and self._queue:
                self._results_waiting.set()

    def _flush_results(self) -> None:
        with self._results_lock:
            if self._results:
                self.send(Results(self._results))
                self._results = []
                self._results_waiting.clear()
            self._last_flush = time.monotonic()

    def _send_late_results(self) -> None:
        """Batched results wait at most ``_FLUSH_SECONDS``, also when the task after them runs long:
        this thread sends them then, while that task runs."""
        try:
            while True:
                self._results_waiting.wait()
                time.sleep(_FLUSH_SECONDS)
                self._flush_results()
        except ChannelClosed:
            pass  # the agent is gone; the main thread ends the process

    def _object(self, object_id: bytes, serializer=None):
        try:
            return self._loaded[object_id]
        except KeyError:
            pass
        value = serialization.loads(self._payloads[object_id], serializer)
        self._loaded[object_id] = value
        return value

    def _argument(self, object_id: bytes, serializer=None):
        """An object a task's arguments refer to, the task's own to change. One with out-of-band buffers
        (arrays) is loaded for each task from copies of them (or private mappings, for buffers in shared
        memory), as other tasks here may use it too; the others are loaded once and shared, as Dask's
        workers share a dependency's value."""
        payload = self._payloads[object_id]
        if serializer is None and len(payload.parts) > 1:
            return serialization.loads(payload, copy=True)
        return self._object(object_id, serializer)

    def _run(self, spec: TaskSpec) -> TaskResult:
        started, cpu_started = time.perf_counter(), time.process_time()
        self._peak.reset()
        try:
            if spec.environment != self._environment:
                self._take_environment(spec.environment)
            serializer = None if spec.serializer_id is None else self._object(spec.serializer_id)
            function = self._object(spec.function_id, serializer)
            args, kwargs = serialization.loads_resolving_refs(
                spec.args, lambda object_id: self._argument(object_id, serializer), serializer
            )
        except Exception as exc:
            missing = _missing_module(exc)
            if missing is not None:
                return TaskResult(spec.task_id, Status.ERROR, _exception_payload(missing), str(missing), [])
            message = f"the worker could not load the task: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            return TaskResult(spec.task_id, Status.SERIALIZATION, None, message, [])
        task_context.current_task_id = spec.task_id
        try:
            value = function(*args, **kwargs)
            status = Status.OK
        except BaseException as exc:
            status, value = Status.ERROR, exc
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            task_context.current_task_id = None
        profile = [time.perf_counter() - started, time.process_time() - cpu_started, self._peak.peak()]
        if status == Status.OK:
            try:
                payload = serialization.dumps(value, serializer)
                if self._segments is not None:
                    payload = self._segments.share(payload)
                summary = short_repr(value) if spec.summarize else ""
                return TaskResult(spec.task_id, status, payload, summary, profile)
            except Exception as exc:
                message = f"the task's result could not be serialized: {type(exc).__name__}: {exc}"
                return TaskResult(spec.task_id, Status.SERIALIZATION, None, message, profile)
        return TaskResult(spec.task_id, status, _exception_payload(value), str(value), profile)

    def _take_environment(self, environment: list[bytes]) -> None:
        """Import as the task's caller does: its path (where it applies here) and its modules shipped by value."""
        objects = [self._object(object_id) for object_id in environment]
        paths = [o for o in objects if isinstance(o, ImportPath)]
        path = paths[0].for_processor(self._own_path, self._host, self._interpreter) if paths else self._own_path
        if path != sys.path:
            sys.path[:] = path
            importlib.invalidate_caches()  # its folders may have gained modules since this process last looked
        self._bundles.use([o for o in objects if isinstance(o, ModuleBundle)])
        self._environment = environment
        logger.debug("took on a caller's import environment: sys.path %s", sys.path)


def _missing_module(exc: BaseException) -> ModuleNotFoundError | None:
    """If loading failed for want of a module, the error to raise in the caller: naming it, saying how to ship it."""
    while exc is not None and not isinstance(exc, ModuleNotFoundError):
        exc = exc.__cause__ or exc.__context__
    if exc is None:
        return None
    name = exc.name or str(exc)
    top = name.partition(".")[0]
    error = ModuleNotFoundError(
        f"No module named {name!r} on the worker at {socket.gethostname()}: the task's function or arguments "
        f"need it. Ship it to every worker with client.register_by_value({top}) (after `import {top}`), or "
        f"install it there; workers on the caller's host also find what is on the caller's sys.path", name=name)
    error.__traceback__ = exc.__traceback__
    return error


_SHORT = reprlib.Repr()  # Python 3.11's Repr takes no arguments
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 80, 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = 6
_SHORT.maxdict = 4
SUMMARY_LIMIT = 120  # characters of a result's repr sent back for a DAG panel


def short_repr(value) -> str:
    """A result's repr, cut short, for a graph drawing's node details; never raises (it is only a view)."""
    try:
        text = _SHORT.repr(value)
    except Exception as exc:  # a user's __repr__ may fail: say so rather than fail the task
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 3] + "..."


def _exception_payload(exc: BaseException) -> Payload:
    """The exception and its traceback (without this module's frame), as itself if it pickles."""
    remote_traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
    exc.__traceback__ = None
    try:
        return serialization.dumps((exc, remote_traceback))
    except Exception:
        return serialization.dumps((RemoteError(type(exc).__qualname__, str(exc), remote_traceback), remote_traceback))


def main() -> None:
    logging_config.configure("processor", logging_config.level(None, default="WARNING"))
    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when a processor stops
    Processor(Channel(int(sys.argv[1]), int(sys.argv[2]))).run()


if __name__ == "__main__":
    main()
