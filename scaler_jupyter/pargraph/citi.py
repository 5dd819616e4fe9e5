"""Citi's pargraph 0.9.6 layout over ours: its module paths and names, as aliases of our objects.

A user of Citi's pargraph changes ``pargraph`` to ``scaler_jupyter.pargraph`` in import lines
and nothing else: the paths of :data:`ALIASES` import (see :mod:`scaler_jupyter.module_aliases`).
Citi's ``FunctionCall`` (a graph's node) is our :class:`~scaler_jupyter.pargraph.model.Node`.
Its ``graph.annotation._get_output_names`` is private there, but its own tests read it: it is here,
as our :func:`~scaler_jupyter.pargraph.decorators.output_names` in Citi's shape.
"""

from __future__ import annotations

import abc
import concurrent.futures
from collections.abc import Callable
from typing import Any

from scaler_jupyter.pargraph.decorators import output_names


class Backend(metaclass=abc.ABCMeta):
    """What :class:`~scaler_jupyter.pargraph.GraphEngine` runs tasks on: anything with ``submit`` (Citi's type)."""

    @abc.abstractmethod
    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future: ...


def get_output_names(function: Callable) -> str | tuple[str, ...]:
    """A function's output names as Citi's ``_get_output_names`` gives them: a name, or a tuple of names."""
    names, multiple = output_names(function)
    return names if multiple else names[0]


_PG = "scaler_jupyter.pargraph"

ALIASES = {
    f"{_PG}.about": {"__version__": "scaler_jupyter:__version__"},
    f"{_PG}.engine.engine": {"GraphEngine": f"{_PG}.engine:GraphEngine", "Backend": f"{_PG}.citi:Backend"},
    f"{_PG}.graph.annotation": {"Result": f"{_PG}.decorators:Result",
                                "_get_output_names": f"{_PG}.citi:get_output_names"},
    f"{_PG}.graph.decorators": {"delayed": f"{_PG}.decorators:delayed", "graph": f"{_PG}.decorators:graph"},
    f"{_PG}.graph.objects": {"Graph": f"{_PG}.model:Graph", "FunctionCall": f"{_PG}.model:Node"},
}
