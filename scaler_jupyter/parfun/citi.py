"""Citi's parfun 7.2.2 layout over ours: its module paths and names, as aliases of our objects.

A user of Citi's parfun changes ``parfun`` to ``scaler_jupyter.parfun`` in import lines and
nothing else: ``from scaler_jupyter.parfun.partition.api import per_argument`` and the other
paths of :data:`ALIASES` import (see :mod:`scaler_jupyter.module_aliases`). Our own names and
modules stay the primary ones; this module only maps Citi's names onto them, plus the few
names Citi has and we had no use for (the generator type aliases, the deprecated ``parfun``
decorator, the ``profile`` timer).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from scaler_jupyter.parfun.decorator import parallel

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
    f"{_PF}.partition.collection": {"list_by_chunk": f"{_PF}.py_list:by_chunk"},
    f"{_PF}.partition.dataframe": {"df_by_row": f"{_PF}.dataframe:by_row", "df_by_group": f"{_PF}.dataframe:by_group"},
    f"{_PF}.combine.collection": {"list_concat": f"{_PF}.py_list:concat"},
    f"{_PF}.combine.dataframe": {"df_concat": f"{_PF}.dataframe:concat"},
    f"{_PF}.profiler.functions": {"profile": f"{_HERE}:profile"},
    f"{_PF}.profiler.object": {"TraceTime": f"{_HERE}:TraceTime", "ProfileDuration": f"{_HERE}:ProfileDuration"},
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
