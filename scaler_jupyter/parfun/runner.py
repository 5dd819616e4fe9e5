"""One call of a parallel function: partition, run, combine, all three at once.

The caller's thread pulls a partition (at the size the learner asks for), serializes it
and submits it, keeping ``IN_FLIGHT_PER_WORKER`` partitions per worker running, however
long the oldest takes, and at most twice that many not yet combined; ``combine_with``
receives the results as a lazy iterator, in input order. So memory stays flat however
long the input, workers never wait for the caller to split everything first nor for a
straggler to finish, and every stage of every partition is timed where it runs (see
:mod:`~scaler_jupyter.parfun.profiling`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from scaler_jupyter.parfun import payload, task
from scaler_jupyter.parfun.backends import Backend
from scaler_jupyter.parfun.learner import prewarm
from scaler_jupyter.parfun.notebook import CallDisplay
from scaler_jupyter.parfun.partitioning import PartitionStream
from scaler_jupyter.parfun.profiling import CallTrace, PartitionTrace
from scaler_jupyter.parfun.signature import Layout, Slot

if TYPE_CHECKING:
    from scaler_jupyter.parfun.decorator import ParallelFunction

IN_FLIGHT_PER_WORKER = 2  # one running, one queued: a worker never waits for the caller to send its next

_clock = time.thread_time  # the caller's costs are CPU time of its own thread: waiting for workers costs nothing


def run_call(function: ParallelFunction, backend: Backend, args: tuple, kwargs: dict, call_number: int) -> Any:
    """Run one call of ``function`` on ``backend``; return the combined result."""
    start = time.perf_counter()
    values, layout = function.parameters.bind(args, kwargs)
    fixed, stream = function.split.open(values, function.__name__)
    trace = CallTrace(function.__name__, backend.name, backend.n_workers, call_number)
    display = CallDisplay.open(function, trace, stream.total)  # None outside a notebook
    try:
        pipeline = _Pipeline(function, backend, layout, fixed, stream, trace, _size_chooser(function, stream, trace,
                                                                                            args, kwargs))
        pipeline.on_partition = display.partition_done if display is not None else None
        results = pipeline.results()
        try:
            combined = function.combine_with(results)
            if pipeline.exhausted_at is not None:
                trace.combine_tail = _clock() - pipeline.exhausted_at
        finally:
            results.close()  # combine_with stopped early, or raised: what is still running is cancelled
    finally:
        stream.close()
    trace.wall = time.perf_counter() - start
    function.record(trace)
    if display is not None:
        display.close()
    return combined


def _size_chooser(function: ParallelFunction, stream: PartitionStream, trace: CallTrace, args: tuple,
                  kwargs: dict) -> Callable[[], int | None]:
    """How the size of each next partition is chosen in this call."""
    if not stream.sized:  # a plain generator chooses its own sizes
        return lambda: None
    fixed = function.fixed_partition_size
    if fixed is not None:
        size = _positive(fixed(*args, **kwargs) if callable(fixed) else fixed, "fixed_partition_size")
        return lambda: size
    initial = function.initial_partition_size
    learner = function.learner
    prewarm()
    n_workers = trace.n_workers
    with function.lock:
        if initial is not None:
            learner.suggest_start(_positive(initial(*args, **kwargs) if callable(initial) else initial,
                                            "initial_partition_size"))

    def learned() -> int:
        with function.lock:
            return learner.next_size(n_workers, stream.total)

    return learned


def _positive(size: Any, what: str) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{what} must be a positive int (or a function of the arguments returning one), not {size!r}")
    return size


class _Pipeline:
    """The partitions of one call, in flight on a backend, their results yielded in order."""

    def __init__(self, function: ParallelFunction, backend: Backend, layout: Layout, fixed: dict[Slot, Any],
                 stream: PartitionStream, trace: CallTrace, next_size: Callable[[], int | None]) -> None:
        self.function = function
        self.backend = backend
        self.layout = layout
        self.fixed = fixed
        self.stream = stream
        self.trace = trace
        self.next_size = next_size
        self.exhausted_at: float | None = None  # when the last result was handed over, to time the combine tail
        self.limit = max(2, IN_FLIGHT_PER_WORKER * trace.n_workers)
        self.on_partition: Callable[[int], None] | None = None  # told each partition's size once combined

    def results(self) -> Iterator:
        first = self._pull()
        if first is None:
            self.exhausted_at = _clock()
            return
        second = self._pull()
        if second is None or self.backend.in_process:
            yield from self._in_caller(first, second)
        else:
            yield from self._on_backend(first, second)
        self.exhausted_at = _clock()

    def _pull(self) -> tuple[PartitionTrace, dict[Slot, Any]] | None:
        """The next partition and its trace record, timed; None at the end."""
        start = _clock()
        requested = self.next_size()
        chosen = _clock()
        item = self.stream.next(requested if requested is not None else 1)
        if item is None:
            return None
        size, values = item
        record = PartitionTrace(len(self.trace.partitions), requested, size, choose=chosen - start,
                                partition=_clock() - chosen)
        self.trace.partitions.append(record)
        return record, values

    def _in_caller(self, first: tuple, second: tuple | None) -> Iterator:
        """One partition, or an in-process backend: call the function here, each partition when it is asked for."""
        self.trace.sequential = second is None
        original = self.function.__wrapped__
        pending = [first] if second is None else [first, second]
        while pending:
            record, values = pending.pop(0)
            start = time.perf_counter()
            cpu = time.thread_time()
            result = task.call(original, self.layout, {**self.fixed, **values})
            record.compute_cpu = time.thread_time() - cpu
            record.compute = time.perf_counter() - start
            started = _clock()
            yield result
            record.combine = _clock() - started
            if not self.trace.sequential:
                self.function.observe(record)
                if self.on_partition is not None:
                    self.on_partition(record.size)
                following = self._pull()
                if following is not None:
                    pending.append(following)

    def _on_backend(self, first: tuple, second: tuple) -> Iterator:
        start = _clock()
        slots = tuple(first[1])
        function_ref = self.function.function_ref()
        call_key, call_data = task.make_ref((self.layout, slots, self.fixed, self.backend.out_of_band))
        shared_function = self.backend.share(function_ref[1])
        shared_call = self.backend.share(call_data)
        function_ref = (function_ref[0], shared_function)
        call_ref = (call_key, shared_call)
        first[0].serialize += _clock() - start  # the call's whole arguments, serialized once, on the first partition
        in_flight: collections.deque = collections.deque()

        def submit(item: tuple[PartitionTrace, dict[Slot, Any]] | None) -> bool:
            if item is None:
                return False
            record, values = item
            started = _clock()
            blobs = tuple(self.backend.wrap(payload.dumps(values[slot])) for slot in slots)
            serialized = _clock()
            future = self.backend.submit(task.run_partition, function_ref, call_ref, blobs)
            record.serialize += serialized - started
            record.submit = _clock() - serialized
            in_flight.append((record, future))
            return True

        try:
            submit(first)
            submit(second)
            exhausted = False
            while in_flight:
                # Keep `limit` partitions running, however long the oldest takes (a straggler must not idle the
                # other workers), and at most twice that many not yet combined (memory stays bounded).
                while (not exhausted and len(in_flight) < 2 * self.limit
                       and sum(not future.done() for _, future in in_flight) < self.limit):
                    exhausted = not submit(self._pull())
                record, future = in_flight[0]
                if not future.done():
                    running = [future for _, future in in_flight if not future.done()]
                    concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                    continue
                in_flight.popleft()
                data, record.setup, record.load, record.compute, record.compute_cpu, record.dump, record.cold = (
                    future.result())
                started = _clock()
                result = payload.loads(data)
                del data
                handed = _clock()
                record.result_load = handed - started
                yield result
                del result
                record.combine = _clock() - handed
                self.function.observe(record)
                if self.on_partition is not None:
                    self.on_partition(record.size)
        finally:
            for _, future in in_flight:
                future.cancel()
            self.backend.release(shared_function)
            self.backend.release(shared_call)
