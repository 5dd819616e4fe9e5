"""parfun: map-reduce by decorator, on this engine, a process pool or Dask, with the partition size learned.

::

    import scaler_jupyter.parfun as pf

    @pf.parallel(split=pf.per_argument(lines=pf.py_list.by_chunk), combine_with=sum)
    def count_words(lines: list[str]) -> collections.Counter: ...

    with pf.set_parallel_backend_context("scaler_local", n_workers=4):
        count_words(big_list)  # partitioned, run on the backend, combined in order

The surface follows Citi's parfun 7, so that its users switch by changing one import: Citi's
module paths (``scaler_jupyter.parfun.partition.api``, ``...entry_point``, ...) are aliases of
ours, listed in :mod:`scaler_jupyter.parfun.citi`.
"""

from scaler_jupyter import module_aliases
from scaler_jupyter.parfun import dataframe, numpy, py_list
from scaler_jupyter.parfun.backends import (
    Backend,
    BackendSession,
    DaskCurrentBackend,
    DaskLocalBackend,
    DaskRemoteBackend,
    ExecutorBackend,
    LocalMultiprocessingBackend,
    LocalSingleProcessBackend,
    ProfiledFuture,
    ScalerLocalBackend,
    ScalerRemoteBackend,
)
from scaler_jupyter.parfun.citi import ALIASES, parfun
from scaler_jupyter.parfun.current import get_parallel_backend, set_parallel_backend, set_parallel_backend_context
from scaler_jupyter.parfun.decorator import ParallelFunction, parallel
from scaler_jupyter.parfun.learner import PartitionSizeLearner
from scaler_jupyter.parfun.mapping import parallel_map, parallel_starmap
from scaler_jupyter.parfun.notebook import notebook_display
from scaler_jupyter.parfun.partitioning import with_partition_size
from scaler_jupyter.parfun.split import all_arguments, multiple_arguments, per_argument

module_aliases.install(ALIASES)

__all__ = [
    "Backend",
    "BackendSession",
    "DaskCurrentBackend",
    "DaskLocalBackend",
    "DaskRemoteBackend",
    "ExecutorBackend",
    "LocalMultiprocessingBackend",
    "LocalSingleProcessBackend",
    "ParallelFunction",
    "PartitionSizeLearner",
    "ProfiledFuture",
    "ScalerLocalBackend",
    "ScalerRemoteBackend",
    "all_arguments",
    "dataframe",
    "get_parallel_backend",
    "multiple_arguments",
    "notebook_display",
    "numpy",
    "parallel",
    "parallel_map",
    "parallel_starmap",
    "parfun",
    "per_argument",
    "py_list",
    "set_parallel_backend",
    "set_parallel_backend_context",
    "with_partition_size",
]
