"""``@parallel``: a function that partitions its input, runs the partitions on the current backend, and combines.

The decorated function keeps the original's name, docstring, signature and
``__wrapped__`` (the original, for tests and sequential use). It pickles by reference
when it is a module's attribute, and by value (cloudpickle) when it is defined inside
another function or in a notebook, so that it can be sent to workers in either case.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

from scaler_jupyter.parfun import current, notebook, task
from scaler_jupyter.parfun.learner import PartitionSizeLearner
from scaler_jupyter.parfun.profiling import CallTrace, PartitionTrace, export_csv, report
from scaler_jupyter.parfun.runner import run_call
from scaler_jupyter.parfun.signature import Parameters
from scaler_jupyter.parfun.split import Split
from scaler_jupyter.protocol import pickling

logger = logging.getLogger(__name__)

PartitionSize = int | Callable[..., int] | None


def parallel(split: Split, combine_with: Callable[[Iterable], Any], initial_partition_size: PartitionSize = None,
             fixed_partition_size: PartitionSize = None, profile: bool = False,
             trace_export: str | None = None) -> Callable[[Callable], ParallelFunction]:
    """Make a function run in parallel: its input split by ``split``, its partial results combined by ``combine_with``.

    ``initial_partition_size`` is where the learner starts; ``fixed_partition_size`` turns the
    learner off (each an int, or a function of the call's arguments). ``profile=True`` prints
    each call's costs; ``trace_export="file.csv"`` appends one row per partition to that file.
    """
    _check_size(initial_partition_size, "initial_partition_size")
    _check_size(fixed_partition_size, "fixed_partition_size")
    if initial_partition_size is not None and fixed_partition_size is not None:
        raise ValueError("initial_partition_size and fixed_partition_size cannot both be set: "
                         "a fixed size leaves nothing to learn")
    if not isinstance(split, Split):
        raise TypeError(f"split must come from per_argument(), multiple_arguments() or all_arguments(), "
                        f"not {split!r}")
    if not callable(combine_with):
        raise TypeError(f"combine_with must be a function of the partial results, not {combine_with!r}")

    def decorate(function: Callable) -> ParallelFunction:
        return ParallelFunction(function, split, combine_with, initial_partition_size, fixed_partition_size,
                                profile, trace_export)

    return decorate


class ParallelFunction:
    """A function run as map-reduce on the current backend; call it as the original.

    ``partition_model()`` is what its partition-size learner knows; ``last_profile()`` the
    figures of its last call.
    """

    def __init__(self, function: Callable, split: Split, combine_with: Callable[[Iterable], Any],
                 initial_partition_size: PartitionSize = None, fixed_partition_size: PartitionSize = None,
                 profile: bool = False, trace_export: str | None = None) -> None:
        if not callable(function):
            raise TypeError(f"@parallel decorates a function, not {function!r}")
        functools.update_wrapper(self, function)
        self.parameters = Parameters(function)
        split.check(self.parameters)
        self.split = split
        self.combine_with = combine_with
        self.initial_partition_size = initial_partition_size
        self.fixed_partition_size = fixed_partition_size
        self.profile = profile
        self.trace_export = trace_export
        self.learner = PartitionSizeLearner()
        self.lock = threading.Lock()
        self._calls = 0
        self._last_trace: CallTrace | None = None
        self._function_ref: tuple[bytes, bytes] | None = None
        self._warned_sequential = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        backend = current.backend_for_call()
        if backend is None:
            if not self._warned_sequential and not task.inside_task():
                self._warned_sequential = True
                logger.warning("no parallel backend set: %s() runs sequentially (see set_parallel_backend)",
                               self.__name__)
            return self.__wrapped__(*args, **kwargs)
        with self.lock:
            self._calls += 1
            call_number = self._calls
        return run_call(self, backend, args, kwargs, call_number)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        """As a method, bound to its instance like the function it wraps."""
        return self if instance is None else types.MethodType(self, instance)

    # -- what it learned -----------------------------------------------------

    def partition_model(self) -> dict:
        """The partition-size learner's state as plain data: measurements, fitted costs, chosen size."""
        with self.lock:
            model = self.learner.snapshot()
        model["fixed_size"] = self.fixed_partition_size if isinstance(self.fixed_partition_size, int) else None
        return model

    def last_profile(self) -> dict | None:
        """The figures of the last call (what ``profile=True`` prints), or None before the first parallel call."""
        trace = self._last_trace
        return None if trace is None else trace.summary()

    def last_trace(self) -> CallTrace | None:
        """The last call's trace, partition by partition."""
        return self._last_trace

    # -- used by the runner --------------------------------------------------

    def observe(self, record: PartitionTrace) -> None:
        """Feed a finished partition to the learner, unless its costs include a worker's one-time ones."""
        if record.cold:
            return
        with self.lock:
            self.learner.observe(record.size, record.cost)

    def record(self, trace: CallTrace) -> None:
        """Keep the trace of a call that ended; print and export it as asked."""
        trace.model = self.partition_model()
        requested = trace.partitions[0].requested_size if trace.partitions else None
        if self.fixed_partition_size is not None:
            trace.model["fixed_size"] = requested
        elif trace.partitions and requested is None:
            trace.model["plain_generator"] = True
        self._last_trace = trace
        if self.profile and not notebook.show_profile(self, trace):  # a notebook shows a table and the curve
            print(report(trace), file=sys.stderr, flush=True)
        if self.trace_export:
            export_csv(trace, self.trace_export)

    def function_ref(self) -> tuple[bytes, bytes]:
        """The original function as sent to workers: by reference when importable, else by value; made once."""
        if self._function_ref is None:
            self._function_ref = task.make_ref(SequentialCall(self))
        return self._function_ref

    # -- pickling ------------------------------------------------------------

    def __reduce__(self) -> str | tuple:
        if pickling.import_path(self) is not None:
            return self.__qualname__  # by reference: the worker imports it
        return (_rebuild, (self.__wrapped__, self.split, self.combine_with, self.initial_partition_size,
                           self.fixed_partition_size, self.profile, self.trace_export))

    def __repr__(self) -> str:
        return f"<parallel function {self.__module__}.{self.__qualname__}>"


class SequentialCall:
    """A parallel function's original, as a task calls it: pickles as the parallel function does."""

    __slots__ = ("parallel_function",)

    def __init__(self, parallel_function: ParallelFunction) -> None:
        self.parallel_function = parallel_function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.parallel_function.__wrapped__(*args, **kwargs)

    def __reduce__(self) -> tuple:
        return (SequentialCall, (self.parallel_function,))


def _rebuild(function: Callable, split: Split, combine_with: Callable, initial: PartitionSize, fixed: PartitionSize,
             profile: bool, trace_export: str | None) -> ParallelFunction:
    return ParallelFunction(function, split, combine_with, initial, fixed, profile, trace_export)


def _check_size(size: PartitionSize, what: str) -> None:
    if size is None or callable(size):
        return
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{what} must be a positive int or a function of the arguments returning one, not {size!r}")
