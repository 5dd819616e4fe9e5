"""A Graph's vertices and edges, and its DOT text; no Bokeh here, so ``to_dot`` costs no drawing library.

Every vertex has a string id: ``input:NAME``, ``const:NAME``, ``node:KEY`` and
``output:NAME``, and a kind (``VERTEX_KINDS``). :meth:`Graph.to_dot` and the interactive
drawing (``drawing.py``) both read them from here, so the two name the same vertices.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Iterator
from typing import Any

from scaler_jupyter.pargraph.model import Graph, Ref, RefKind

VERTEX_KINDS = ("input", "const", "call", "operator", "subgraph", "output")  # operator: a call made implicitly
_DOT_SHAPES = {"input": "ellipse", "const": "note", "call": "box", "operator": "box", "subgraph": "box3d",
               "output": "doubleoctagon"}


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    """One argument of a node (``slot``: its position or keyword), or one output, as an edge between vertices."""

    source: str
    target: str
    slot: str
    index: int | None  # which of several outputs of the source is read

    @property
    def label(self) -> str:
        return self.slot if self.index is None else f"{self.slot} ← [{self.index}]"


def vertex_id(ref: Ref) -> str:
    """The id of the vertex a :class:`Ref` points at (any ``index`` reads the same vertex)."""
    return f"{ref.kind}:{ref.name}"


def input_id(name: str) -> str:
    return vertex_id(Ref(RefKind.INPUT, name))


def const_id(name: str) -> str:
    return vertex_id(Ref(RefKind.CONST, name))


def node_id(key: str) -> str:
    return vertex_id(Ref(RefKind.NODE, key))


def output_id(name: str) -> str:
    return f"output:{name}"


def vertices(graph: Graph) -> dict[str, str]:
    """Every vertex id and its kind (one of ``VERTEX_KINDS``), inputs first and outputs last."""
    kinds = {input_id(name): "input" for name in graph.inputs}
    kinds.update({const_id(name): "const" for name in graph.consts})
    for node in graph.nodes.values():
        kinds[node_id(node.key)] = "subgraph" if node.subgraph is not None else "operator" if node.implicit else "call"
    kinds.update({output_id(name): "output" for name in graph.outputs})
    return kinds


def links(graph: Graph) -> Iterator[Link]:
    """Every argument of every node, then every output, in the graph's order: a value read twice is two links."""
    for node in graph.nodes.values():
        target = node_id(node.key)
        for position, ref in enumerate(node.args):
            yield Link(vertex_id(ref), target, str(position), ref.index)
        for name, ref in node.kwargs:
            yield Link(vertex_id(ref), target, name, ref.index)
    for name, ref in graph.outputs.items():
        yield Link(vertex_id(ref), output_id(name), "", None)


def edges(graph: Graph) -> list[tuple[str, str]]:
    """Each (from, to) once, even when a node reads a value twice or reads several outputs of one node."""
    return list(dict.fromkeys((link.source, link.target) for link in links(graph)))


def to_dot(graph: Graph) -> str:
    """The graph in Graphviz's DOT language: inputs as ellipses, constants as notes, calls as boxes (dashed when
    made by an operator, 3D for a subgraph), outputs as double octagons; edges labelled with the argument."""
    lines = [f"digraph {_quote(graph.name)} {{", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    labels = {input_id(name): name for name in graph.inputs}
    labels.update({const_id(name): short(value) for name, value in graph.consts.items()})
    labels.update({node_id(node.key): node.label for node in graph.nodes.values()})
    labels.update({output_id(name): name for name in graph.outputs})
    for vertex, kind in vertices(graph).items():
        style = ", style=dashed" if kind == "operator" else ""
        lines.append(f"  {_quote(vertex)} [label={_quote(labels[vertex])}, shape={_DOT_SHAPES[kind]}{style}];")
    for link in links(graph):
        label = f" [label={_quote(link.label)}]" if link.slot else ""
        lines.append(f"  {_quote(link.source)} -> {_quote(link.target)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 24


def short(value: Any) -> str:
    """A bounded repr: a large constant must not cost its full repr in ``repr(graph)`` or ``to_dot``."""
    return _SHORT.repr(value)


def _quote(text: str) -> str:
    """A DOT string: double quotes and backslashes escaped, newlines as ``\\n``, nothing else."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
