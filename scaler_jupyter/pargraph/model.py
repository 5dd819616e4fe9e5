"""The Graph: what tracing a ``@graph`` function yields, and what it turns into.

A graph is four explicit parts: ``inputs`` (the unbound parameters, with their
defaults), ``consts`` (values fixed at trace time), ``nodes`` (calls, in
dependency order) and ``outputs`` (named results). Every argument of a node is a
:class:`Ref` to one of those, so the graph is data: it compares, prints, culls,
renames, fuses and serializes without running anything, and becomes a Dask-format
dict (:meth:`Graph.to_dict`) that any Dask-compatible engine runs.

This module holds the data; each job on it has a module of its own, and ``Graph``'s
methods are one-line delegates to them:

- ``transforms``: ``cull``, ``stabilize``, ``explode_subgraphs``, ``fuse_sequential``;
- ``dask_dict``: ``to_dict`` and ``task_keys`` (the Dask-format dict and its keys);
- ``json_codec``: ``to_json`` and ``from_json``;
- ``identity``: ``fingerprint`` and equality (what makes two graphs the same program);
- ``dot``: ``to_dot``, and the vertex ids and edges the interactive drawing (``drawing``) shares.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Any

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__reduce__": lambda self: "MISSING"})()


class RefKind(str, enum.Enum):
    """What a :class:`Ref` points at. The values are what ``to_json`` and ``to_dot`` write."""

    INPUT = "input"
    CONST = "const"
    NODE = "node"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """Where an argument comes from: an input, a constant, or a node's output (``index`` for one of several)."""

    kind: RefKind
    name: str
    index: int | None = None

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


@dataclasses.dataclass(frozen=True, slots=True)
class Input:
    """A parameter left unbound when the graph was traced: ``to_dict`` fills it, or its default does."""

    name: str
    default: Any = MISSING


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A call of ``function`` (or of a nested ``subgraph``) on refs. ``outputs`` > 1: it returns that many values
    as a tuple, each referred to by index."""

    key: str
    label: str
    function: Callable | None
    args: tuple[Ref, ...]
    kwargs: tuple[tuple[str, Ref], ...] = ()
    outputs: int = 1
    subgraph: Graph | None = None
    implicit: bool = False  # made by an operator on a traced value, not by a decorated call

    def refs(self) -> Iterator[Ref]:
        yield from self.args
        for _, ref in self.kwargs:
            yield ref


@dataclasses.dataclass(eq=False)
class Graph:
    """A traced program. See the module docstring; build one with ``fn.to_graph(...)``."""

    inputs: dict[str, Input]
    consts: dict[str, Any]
    nodes: dict[str, Node]
    outputs: dict[str, Ref]
    multiple: bool = False  # the program returns a tuple of its outputs (a tuple annotation)
    name: str = "graph"

    # -- running it elsewhere --------------------------------------------------

    def to_dict(self, *args: Any, **kwargs: Any) -> tuple[dict, list[str]]:
        """The graph as a Dask-format dict, its inputs filled as a call would fill them; and the list of its
        output keys, one per output in order (Citi's contract): ``dask.get(*g.to_dict(x=1))[0]``."""
        dsk, keys = dask_dict.to_dict(self, args, kwargs)
        return dsk, list(keys) if isinstance(keys, tuple) else [keys]

    def to_call_dict(self, *args: Any, **kwargs: Any) -> tuple[dict, str | tuple[str, ...]]:
        """As :meth:`to_dict`, but the keys in the shape of the call's result: one key for one output, a tuple
        for a program that returns a tuple; so ``GraphEngine().get(*g.to_call_dict(...))`` equals the plain call."""
        return dask_dict.to_dict(self, args, kwargs)

    def task_keys(self) -> dict[str, str]:
        """For each node of :meth:`explode_subgraphs`, the key :meth:`to_dict` gives its task, without its
        ``@`` suffix: how a monitor's per-task states (``Client.status()["graphs"]``) map back onto this
        graph's nodes."""
        return dask_dict.task_keys(self)

    # -- transformations -----------------------------------------------------

    def cull(self) -> Graph:
        """Without the nodes and constants no output needs (inputs stay: they are the graph's signature)."""
        return transforms.cull(self)

    def stabilize(self) -> Graph:
        """Rename constants and nodes from their content, so that tracing the same program twice gives equal
        graphs (trace-time names count calls, which differ from one trace to the next)."""
        return transforms.stabilize(self)

    def explode_subgraphs(self) -> Graph:
        """The same graph with every nested ``@graph`` call replaced by its nodes (recursively)."""
        return transforms.explode_subgraphs(self)

    def fuse_sequential(self) -> Graph:
        """Merge each chain of calls where a node's only consumer is the next node, and that node reads no other
        node: one task instead of many, for chains of small steps."""
        return transforms.fuse_sequential(self)

    # -- serialization ---------------------------------------------------------

    def to_json(self) -> dict:
        """A JSON-compatible dict: functions by import path when they have one, else pickled (base64);
        constants as JSON when they round-trip exactly, else pickled."""
        return json_codec.encode(self)

    @staticmethod
    def from_json(data: Mapping | str) -> Graph:
        """The graph :meth:`to_json` wrote (the dict, or its text)."""
        return json_codec.decode(data)

    def fingerprint(self) -> str:
        """A digest of the graph's structure, functions and constants: equal graphs have equal fingerprints."""
        return identity.fingerprint(self)

    # -- drawing ---------------------------------------------------------------

    def to_dot(self) -> str:
        """The graph in Graphviz's DOT language: inputs as ellipses, constants as notes, calls as boxes,
        outputs as double octagons."""
        return dot.to_dot(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """An interactive drawing where HTML is shown (a notebook), else the repr: the drawing embeds BokehJS,
        about 1.3 MB, which a terminal has no use for."""
        if (include is not None and "text/html" not in include) or (exclude is not None and "text/html" in exclude):
            return {"text/plain": repr(self)}
        from scaler_jupyter.pargraph.drawing import mimebundle  # Bokeh: imported only when a notebook draws

        return mimebundle(self)

    # -- comparison and display ----------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return identity.canonical(self) == identity.canonical(other)

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        inputs = ", ".join(name if spec.default is MISSING else f"{name}={dot.short(spec.default)}"
                           for name, spec in self.inputs.items())
        calls = ", ".join(node.label for node in self.nodes.values())
        outputs = ", ".join(self.outputs)
        return f"<Graph {self.name}({inputs}) -> ({outputs}): {len(self.nodes)} nodes [{calls}]>"


def function_label(function: Callable) -> str:
    """How a node, a fused chain or a Dask task names a function: its ``__name__``, else its type's."""
    return getattr(function, "__name__", None) or type(function).__name__


# Each job on a Graph has its module (see the module docstring); they build on the types above, so they are
# imported once these exist, and the methods above find them at call time.
from scaler_jupyter.pargraph import dask_dict, dot, identity, json_codec, transforms  # noqa: E402
