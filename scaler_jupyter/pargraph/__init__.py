"""pargraph: task graphs from plain Python functions.

``@delayed`` and ``@graph`` functions run as plain Python when called; traced
(``fn.to_graph(...)``) they give a :class:`Graph` whose ``to_dict()`` is a Dask-format
graph that :class:`GraphEngine` runs on this engine, on Dask, on a process pool, or
in this process. Its surface follows Citi's pargraph, so switching is one import.
"""

from scaler_jupyter.pargraph.decorators import Result, delayed, graph
from scaler_jupyter.pargraph.engine import GraphEngine
from scaler_jupyter.pargraph.model import Graph

__all__ = ["Graph", "GraphEngine", "Result", "delayed", "graph"]
