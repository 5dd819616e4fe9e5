"""Citi's parfun 7.2.2 layout over ours: its module paths and names, as aliases of our objects.

A user of Citi's parfun changes ``parfun`` to ``scaler_jupyter.parfun`` in import lines and
nothing else: ``from scaler_jupyter.parfun.partition.api import per_argument`` and the other
paths of :data:`ALIASES` import (see :mod:`scaler_jupyter.module_aliases`). Our own names and
modules stay the primary ones; this module only maps Citi's names onto them, plus the few
names Citi has and we had no use for (the generator type aliases, the deprecated ``parfun``
decorator, the ``profile`` timer), and thin adapters where Citi's public names have another shape
than ours: its argument records (``FunctionSignature``, ``NamedArguments``, which a split helper
applies to), its ``ParallelFunction`` constructor, and its partition-size estimator interface
(traces in, ``estimate().value`` out) over our :class:`~scaler_jupyter.parfun.learner.PartitionSizeLearner`.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scaler_jupyter.parfun import decorator
from scaler_jupyter.parfun.decorator import parallel
from scaler_jupyter.parfun.learner import PartitionSizeLearner
from scaler_jupyter.parfun.split import Split

PartitionType = TypeVar("PartitionType")
FunctionInputType = Any
FunctionOutputType = Any
SimplePartitionIterator = Generator[PartitionType, None, None]  # a plain generator: yields partitions
SmartPartitionGenerator = Generator[tuple[int, PartitionType] | None, int, None]  # size-aware: see partitioning.py
PartitionGenerator = SimplePartitionIterator[PartitionType] | SmartPartitionGenerator[PartitionType]
PartitionFunction = Callable[..., PartitionGenerator[PartitionType]]
TraceTime = int  # nanoseconds


def parfun(*args: Any, **kwargs: Any) -> Callable:
    """Citi's deprecated name of :func:`~scaler_jupyter.parfun.parallel` (same arguments)."""
    warnings.warn("parfun() is deprecated: use parallel()", DeprecationWarning, stacklevel=2)
    return parallel(*args, **kwargs)


@dataclass(slots=True)
class ProfileDuration:
    """What :func:`profile` measured: ``value`` in the timer's unit (nanoseconds by default)."""

    value: int | None = None


@contextlib.contextmanager
def profile(timer_function: Callable[[], int] = time.process_time_ns) -> Iterator[ProfileDuration]:
    """Time a ``with`` block: ``with profile() as d: ...`` then ``d.value`` (CPU nanoseconds by default)."""
    start = timer_function()
    duration = ProfileDuration()
    yield duration
    duration.value = timer_function() - start


# -- Citi's argument records (parfun.kernel.function_signature) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class NamedArguments:
    """A call's arguments by name: those passed by position (``args``, in order), by keyword, and the rest (``*``)."""

    args: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    var_args: tuple = ()

    def __getitem__(self, name: str) -> Any:
        if name in self.args:
            return self.args[name]
        if name in self.kwargs:
            return self.kwargs[name]
        raise KeyError(f"unknown argument name: {name}")

    def keys(self) -> set[str]:
        """Every argument's name (not those of ``var_args``)."""
        return {*self.args, *self.kwargs}

    def as_args_kwargs(self) -> tuple[tuple, dict[str, Any]]:
        """Positional and keyword arguments to call the function with."""
        return self.var_args, {**self.args, **self.kwargs}


@dataclass(frozen=True, slots=True)
class FunctionSignature:
    """A function's parameters, as Citi's kernel reads them: ``assign(args, kwargs)`` names a call's arguments."""

    signature: inspect.Signature
    has_var_arg: bool
    has_var_kwarg: bool

    @classmethod
    def from_function(cls, function: Callable) -> FunctionSignature:
        signature = inspect.signature(function)
        kinds = {parameter.kind for parameter in signature.parameters.values()}
        return cls(signature, inspect.Parameter.VAR_POSITIONAL in kinds, inspect.Parameter.VAR_KEYWORD in kinds)

    def assign(self, args: Iterable, kwargs: dict[str, Any]) -> NamedArguments:
        """Name the arguments of one call; a ``ValueError`` if they do not fit the signature."""
        args = tuple(args)
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as error:
            raise ValueError(str(error)) from None
        positional = [p.name for p in self.signature.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        named = OrderedDict(zip(positional, args, strict=False))
        return NamedArguments(named, dict(kwargs), args[len(named):])


def split(helper: Split, arguments: NamedArguments) -> tuple[NamedArguments, Generator]:
    """Apply a split helper to a call's arguments, as Citi's do: ``(arguments passed whole, partitions)``.

    The partitions come from a size-aware generator (run it with ``with_partition_size``), each a
    ``NamedArguments`` of the partitioned arguments, by position or keyword as they were passed.
    """
    fixed, stream = helper.open({**arguments.args, **arguments.kwargs}, "the function")

    def subset(values: dict, var_args: tuple = ()) -> NamedArguments:
        return NamedArguments(OrderedDict((k, values[k]) for k in arguments.args if k in values),
                              {k: values[k] for k in arguments.kwargs if k in values}, var_args)

    def partitions() -> Generator:
        try:
            size = yield None
            while (item := stream.next(size)) is not None:
                size = yield item[0], subset(item[1])
        finally:
            stream.close()

    return subset(fixed, arguments.var_args), partitions()


class ParallelFunction(decorator.ParallelFunction):
    """Citi's kernel constructor of a parallel function: by keywords, with its name given (``function_name``)."""

    def __init__(self, function: Callable, function_name: str, split: Split, combine_with: Callable,
                 **options: Any) -> None:
        super().__init__(function, split, combine_with, **options)
        self.__name__ = function_name


# -- Citi's partition-size estimator interface (parfun.partition_size_estimator, parfun.profiler.object) ----

class PartitionSizeEstimatorState(enum.Enum):
    Learning = "learning"
    Running = "running"


@dataclass(slots=True)
class PartitionSizeEstimate:
    """A partition size chosen by an estimator."""

    value: int


@dataclass(slots=True)
class PartitionedTaskTrace:
    """One partition's costs, in nanoseconds: partitioning it, running it, combining its result."""

    partition_size_estimate: PartitionSizeEstimate | None
    partition_size: int
    partition_duration: TraceTime
    task_duration: TraceTime | None = None
    combine_duration: TraceTime | None = None

    @property
    def total_duration(self) -> TraceTime:
        if self.task_duration is None or self.combine_duration is None:
            raise ValueError("task_duration and combine_duration must be set for a total duration")
        return self.partition_duration + self.task_duration + self.combine_duration


class LinearRegessionEstimator:
    """Citi's partition-size estimator (its spelling), answered by our learner fed the same traces.

    The first ``learning_sample_count`` estimates are Citi's probing sizes; then each is the
    learner's choice (fixed cost within ``1 - min_parallelism_efficiency`` of the work) fitted
    to every trace added so far.
    """

    learning_sample_sizes = (64, 8, 96, 32, 256, 1, 128, 48, 4)

    def __init__(self, min_parallelism_efficiency: float = 0.95, learning_sample_count: int = 5) -> None:
        self.min_parallelism_efficiency = min_parallelism_efficiency
        self.learning_sample_count = learning_sample_count
        self.learner = PartitionSizeLearner(target_share=1 - min_parallelism_efficiency)
        self.traces = 0
        self.samples = 0

    def add_partition_trace(self, trace: PartitionedTaskTrace) -> None:
        self.learner.observe(trace.partition_size, trace.total_duration / 1e9)
        self.traces += 1

    def state(self) -> PartitionSizeEstimatorState:
        if self.traces < self.learning_sample_count:
            return PartitionSizeEstimatorState.Learning
        return PartitionSizeEstimatorState.Running

    def estimate(self, dry_run: bool = False) -> PartitionSizeEstimate:
        if self.state() is PartitionSizeEstimatorState.Running:
            return PartitionSizeEstimate(self.learner.fitted_size())
        size = self.learning_sample_sizes[self.samples % len(self.learning_sample_sizes)]
        if not dry_run:
            self.samples += 1
        return PartitionSizeEstimate(size)


_PF = "scaler_jupyter.parfun"
_HERE = f"{_PF}.citi"
_BACKENDS = f"{_PF}.backends"

ALIASES = {
    f"{_PF}.about": {"__version__": "scaler_jupyter:__version__"},
    f"{_PF}.object": {"PartitionType": f"{_HERE}:PartitionType", "FunctionInputType": f"{_HERE}:FunctionInputType",
                      "FunctionOutputType": f"{_HERE}:FunctionOutputType"},
    f"{_PF}.decorators": {"parallel": f"{_PF}.decorator:parallel", "parfun": f"{_HERE}:parfun"},
    f"{_PF}.entry_point": {
        "BACKEND_REGISTRY": f"{_BACKENDS}:REGISTRY",
        "set_parallel_backend": f"{_PF}.current:set_parallel_backend",
        "set_parallel_backend_context": f"{_PF}.current:set_parallel_backend_context",
        "get_parallel_backend": f"{_PF}.current:get_parallel_backend",
    },
    f"{_PF}.functions": {"parallel_map": f"{_PF}.mapping:parallel_map",
                         "parallel_starmap": f"{_PF}.mapping:parallel_starmap"},
    f"{_PF}.partition.api": {"per_argument": f"{_PF}.split:per_argument",
                             "multiple_arguments": f"{_PF}.split:multiple_arguments",
                             "all_arguments": f"{_PF}.split:all_arguments"},
    f"{_PF}.partition.object": {name: f"{_HERE}:{name}" for name in (
        "PartitionType", "SimplePartitionIterator", "SmartPartitionGenerator", "PartitionGenerator",
        "PartitionFunction")},
    f"{_PF}.partition.utility": {"with_partition_size": f"{_PF}.partitioning:with_partition_size"},
    f"{_PF}.partition.primitives": {name: f"{_PF}.partition_ops:{name}"
                                    for name in ("partition_map", "partition_flatmap", "partition_zip")},
    f"{_PF}.kernel.function_signature": {"FunctionSignature": f"{_HERE}:FunctionSignature",
                                         "NamedArguments": f"{_HERE}:NamedArguments"},
    f"{_PF}.kernel.parallel_function": {"ParallelFunction": f"{_HERE}:ParallelFunction"},
    f"{_PF}.partition_size_estimator.linear_regression_estimator": {
        "LinearRegessionEstimator": f"{_HERE}:LinearRegessionEstimator"},
    f"{_PF}.partition_size_estimator.object": {
        "PartitionSizeEstimate": f"{_HERE}:PartitionSizeEstimate",
        "PartitionSizeEstimatorState": f"{_HERE}:PartitionSizeEstimatorState"},
    f"{_PF}.partition.collection": {"list_by_chunk": f"{_PF}.py_list:by_chunk"},
    f"{_PF}.partition.dataframe": {"df_by_row": f"{_PF}.dataframe:by_row", "df_by_group": f"{_PF}.dataframe:by_group"},
    f"{_PF}.combine.collection": {"list_concat": f"{_PF}.py_list:concat"},
    f"{_PF}.combine.dataframe": {"df_concat": f"{_PF}.dataframe:concat"},
    f"{_PF}.profiler.functions": {"profile": f"{_HERE}:profile"},
    f"{_PF}.profiler.object": {"TraceTime": f"{_HERE}:TraceTime", "ProfileDuration": f"{_HERE}:ProfileDuration",
                               "PartitionedTaskTrace": f"{_HERE}:PartitionedTaskTrace"},
    f"{_PF}.backend.mixins": {"BackendEngine": f"{_BACKENDS}:Backend", "BackendSession": f"{_BACKENDS}:BackendSession",
                              "ProfiledFuture": f"{_BACKENDS}:ProfiledFuture"},
    f"{_PF}.backend.profiled_future": {"ProfiledFuture": f"{_BACKENDS}:ProfiledFuture"},
    f"{_PF}.backend.local_single_process": {"LocalSingleProcessBackend": f"{_BACKENDS}:LocalSingleProcessBackend"},
    f"{_PF}.backend.local_multiprocessing": {
        "LocalMultiprocessingBackend": f"{_BACKENDS}:LocalMultiprocessingBackend"},
    f"{_PF}.backend.scaler": {"ScalerLocalBackend": f"{_BACKENDS}:ScalerLocalBackend",
                              "ScalerRemoteBackend": f"{_BACKENDS}:ScalerRemoteBackend"},
    f"{_PF}.backend.dask": {"DaskLocalClusterBackend": f"{_BACKENDS}:DaskLocalBackend",
                            "DaskRemoteClusterBackend": f"{_BACKENDS}:DaskRemoteBackend",
                            "DaskCurrentBackend": f"{_BACKENDS}:DaskCurrentBackend"},
}
