"""Clicking a node of a pargraph drawing: a side panel shows its function, what it reads, and its state;
in the live DAG panel, once the node's task has run, also how long it ran and a short repr of its result.

Used by the Graph's own notebook display and by the live DAG panel (``scaler_jupyter.panels.graph``).
It needs only Bokeh: the click is handled in the browser (a ``CustomJS`` callback), so it works in a
static drawing too, with no kernel behind it. Run times and results come from the monitor feed's graph
entry (``durations``, ``results``: the scheduler keeps them for graphs small enough to click).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bokeh.layouts import row
from bokeh.models import ColumnDataSource, CustomJS, Div, LayoutDOM, Plot, TapTool

from scaler_jupyter.pargraph import drawing
from scaler_jupyter.pargraph.dask_dict import base_key
from scaler_jupyter.pargraph.model import Graph

WIDTH = 260  # pixels of the side panel

HINT = "<i>Click a node: its function, arguments and state.</i>"
# in the browser, on a click: the clicked vertex's row of the source, as a small table beside the drawing
_SHOW_DETAILS = """
const i = source.selected.indices[0]
if (i === undefined) { details.text = hint; return }
const d = source.data
const esc = (t) => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;")
const rows = [["vertex", d.label[i]], ["kind", d.kind[i]], ["function", d.function[i]],
              ["arguments", d.arguments[i]], ["details", d.details[i]], ["state", d.state[i]],
              ["ran for", d.duration[i]], ["result", d.result[i]]]
details.text = "<table>" + rows.filter((r) => r[1]).map(
    (r) => "<tr><th style='text-align:left'>" + r[0] + "</th><td>" + esc(r[1]) + "</td></tr>").join("") + "</table>"
"""


def node_arguments(graph: Graph, vertex_ids: list[str]) -> list[str]:
    """For each vertex of a drawing, what its node reads (the names of its inputs, constants and nodes); ``""``
    for the vertices that are not nodes."""
    arguments = []
    for vertex in vertex_ids:
        kind, _, key = vertex.partition(":")
        node = graph.nodes.get(key) if kind == "node" else None
        arguments.append("" if node is None else ", ".join(dict.fromkeys(ref.name for ref in node.refs())))
    return arguments


def with_node_details(plot: Plot, graph: Graph) -> LayoutDOM:
    """``plot`` (a drawing of ``graph``, as ``drawing.figure`` makes it) beside a panel that shows the clicked
    node's details; the drawing's vertex source gains an ``arguments`` column."""
    source = plot.select_one({"name": drawing.VERTICES})
    source.data["arguments"] = node_arguments(graph, source.data["id"])
    source.data["duration"] = [""] * len(source.data["id"])
    source.data["result"] = [""] * len(source.data["id"])
    details = Div(text=HINT, width=WIDTH, styles={"font-size": "9pt"})
    plot.add_tools(TapTool(renderers=[r for r in plot.renderers if str(r.name or "").startswith("pargraph-")]))
    source.selected.js_on_change("indices", CustomJS(args={"source": source, "details": details, "hint": HINT},
                                                     code=_SHOW_DETAILS))
    return row(plot, details)


def run_details(graph: Graph, entry: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """For each node of ``graph.explode_subgraphs()`` whose task ended well in the run the monitor feed's graph
    ``entry`` describes: how long it ran (as text) and its result's short repr."""
    durations = {base_key(key): seconds for key, seconds in entry.get("durations", {}).items()}
    results = {base_key(key): text for key, text in entry.get("results", {}).items()}
    return {node: (_seconds(durations[key]), results.get(key, ""))
            for node, key in graph.task_keys().items() if key in durations}


def update_run_details(source: ColumnDataSource, graph: Graph, entry: Mapping[str, Any]) -> int:
    """Fill the ``duration`` and ``result`` columns of a drawing made by :func:`with_node_details` from a run's
    monitor entry, patching only the rows that changed; return how many did."""
    details = run_details(graph, entry)
    changed = []
    for i, key in enumerate(source.data["state_key"]):
        duration, result = details.get(key, ("", ""))
        if (source.data["duration"][i], source.data["result"][i]) != (duration, result):
            changed.append((i, duration, result))
    if changed:
        source.patch({"duration": [(i, duration) for i, duration, _ in changed],
                      "result": [(i, result) for i, _, result in changed]})
    return len(changed)


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
