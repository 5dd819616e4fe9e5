"""Clicking a node of a pargraph drawing: a side panel shows its function, what it reads, and its state.

Used by the Graph's own notebook display and by the live DAG panel (``scaler_jupyter.panels.graph``).
It needs only Bokeh: the click is handled in the browser (a ``CustomJS`` callback), so it works in a
static drawing too, with no kernel behind it.
"""

from __future__ import annotations

from bokeh.layouts import row
from bokeh.models import CustomJS, Div, LayoutDOM, Plot, TapTool

from scaler_jupyter.pargraph import drawing
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
              ["arguments", d.arguments[i]], ["details", d.details[i]], ["state", d.state[i]]]
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
    details = Div(text=HINT, width=WIDTH, styles={"font-size": "9pt"})
    plot.add_tools(TapTool(renderers=[r for r in plot.renderers if str(r.name or "").startswith("pargraph-")]))
    source.selected.js_on_change("indices", CustomJS(args={"source": source, "details": details, "hint": HINT},
                                                     code=_SHOW_DETAILS))
    return row(plot, details)
