"""pargraph: task graphs from plain Python functions.

``@delayed`` and ``@graph`` functions run as plain Python when called; traced
(``fn.to_graph(...)``) they give a :class:`Graph` whose ``to_dict()`` is a Dask-format
graph that :class:`GraphEngine` runs on this engine, on Dask, on a process pool, or
in this process. Its surface follows Citi's pargraph, so switching is one import: Citi's module
paths (``scaler_jupyter.pargraph.graph.objects``, ...) are aliases of ours, listed in
:mod:`scaler_jupyter.pargraph.citi`.
"""

from scaler_jupyter import module_aliases
from scaler_jupyter.pargraph.citi import ALIASES
from scaler_jupyter.pargraph.decorators import Result, delayed, graph
from scaler_jupyter.pargraph.engine import GraphEngine
from scaler_jupyter.pargraph.model import Graph

module_aliases.install(ALIASES)

__all__ = ["Graph", "GraphEngine", "Result", "delayed", "graph"]
