"""Drawing a Graph: a layered layout, a Bokeh figure that shows task states, and what a notebook displays.

Every vertex of a drawing has the string id :meth:`Graph.to_dot` gives it (``input:NAME``,
``const:NAME``, ``node:KEY`` and ``output:NAME``: both read the vertices and edges from ``dot.py``).
:func:`layout` puts them in columns, left to right, by topological generation (computed with
networkx). :func:`figure` draws them from one ``ColumnDataSource``, a row per vertex, so a live panel
recolours a running graph by patching that source's ``color`` and ``state`` columns
(:func:`update_states`) instead of redrawing it; :func:`states_from_snapshot` reads the states from
the monitor feed (``Client.status()["graphs"]``).
A subgraph call is one vertex unless the figure is ``explode``-d; its state sums up its tasks'.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx
from bokeh.embed import file_html
from bokeh.models import (
    Arrow,
    Bezier,
    CDSView,
    ColumnDataSource,
    GroupFilter,
    HoverTool,
    Legend,
    LegendItem,
    Model,
    Plot,
    Range1d,
    Scatter,
    Text,
    VeeHead,
)
from bokeh.plotting import figure as _bokeh_figure
from bokeh.resources import INLINE

from scaler_jupyter.pargraph import dot
from scaler_jupyter.pargraph.dask_dict import base_key
from scaler_jupyter.pargraph.model import MISSING, Graph, RefKind
from scaler_jupyter.protocol.graph_states import GraphState, NodeState

VERTICES = "pargraph-vertices"  # the name of the vertex source, how update_states finds it in a figure
EDGES = "pargraph-edges"

STATES = tuple(NodeState)  # as the monitor feed names them
STATE_COLORS = {
    NodeState.WAITING: "#e0e0e0",
    NodeState.READY: "#ffe082",
    NodeState.RUNNING: "#ffa726",
    NodeState.DONE: "#66bb6a",
    NodeState.FAILED: "#e53935",
    NodeState.CANCELLED: "#9e9e9e",
}
NO_STATE_COLOR = "#ffffff"  # a task the feed does not report (not run yet, or culled)
# what a subgraph drawn as one vertex shows: the state of its most telling task
_KNOWN_STATES = frozenset(NodeState)
_SUMMARY_ORDER = (NodeState.FAILED, NodeState.CANCELLED, NodeState.RUNNING, NodeState.READY, NodeState.WAITING,
                  NodeState.DONE)


@dataclasses.dataclass(frozen=True, slots=True)
class Style:
    """How one kind of vertex looks; ``size`` in screen pixels, ``angle`` in radians."""

    marker: str
    size: int
    fill: str
    line: str
    legend: str
    angle: float = 0.0


STYLES = {
    "input": Style("circle", 18, "#bbdefb", "#1e63b4", "input"),
    "const": Style("square", 12, "#eeeeee", "#757575", "constant"),
    "call": Style("square", 20, "#fff3c4", "#a87800", "call"),
    "operator": Style("diamond", 18, "#fffbea", "#a87800", "operator (implicit)"),
    "subgraph": Style("hex", 24, "#e1d9f2", "#5e3c99", "subgraph (@graph)"),
    "output": Style("triangle", 20, "#b2dfdb", "#00695c", "output", angle=-math.pi / 2),  # points right
}

_LAYER_PX, _SLOT_PX = 150, 64  # preferred spacing of columns and of the vertices in a column
_MAX_FRAME, _MIN_FRAME = (1200, 800), (240, 160)
_HEAD_PX = 7
_EDGE_COLOR = "#888888"
_repr = reprlib.Repr()  # keyword arguments only from Python 3.12
_repr.maxstring = _repr.maxother = 60


# -- layout ------------------------------------------------------------------------


def layout(graph: Graph, sweeps: int = 3) -> dict[str, tuple[float, float]]:
    """Each vertex's (column, row): columns are topological generations, so every edge goes left to right.

    Inputs sit in column 0, each constant just before the first node that reads it, outputs together in the
    last column. Within a column, ``sweeps`` passes of the barycenter heuristic (alternately towards the
    previous and the next column) order the vertices to cut edge crossings; ties keep the graph's own order,
    so the layout is deterministic. Rows are centred on 0, the first vertex on top (largest y).
    """
    kinds = dot.vertices(graph)
    dag = nx.DiGraph()
    dag.add_nodes_from(kinds)
    dag.add_edges_from(dot.edges(graph))
    column = {v: depth for depth, generation in enumerate(nx.topological_generations(dag)) for v in generation}
    last = max((column[v] for v, kind in kinds.items() if kind not in ("output", "const", "input")), default=0)
    for v, kind in kinds.items():
        if kind == "const" and dag.out_degree(v):
            column[v] = min(column[w] for w in dag.successors(v)) - 1
        elif kind == "output":
            column[v] = last + 1
    columns: dict[int, list[str]] = {}
    for v in kinds:  # in the graph's order: the tie-breaker
        columns.setdefault(column[v], []).append(v)
    order = {v: i for i, v in enumerate(kinds)}
    row: dict[str, float] = {}

    def place(members: list[str]) -> None:
        for i, v in enumerate(members):
            row[v] = i - (len(members) - 1) / 2

    for members in columns.values():
        place(members)
    depths = sorted(columns)
    for sweep in range(sweeps):
        forward = sweep % 2 == 0
        neighbours = dag.predecessors if forward else dag.successors
        for depth in depths if forward else reversed(depths):
            members = columns[depth]

            def barycenter(v: str, neighbours=neighbours) -> tuple[float, int]:
                near = [row[w] for w in neighbours(v)]
                return (sum(near) / len(near) if near else row[v], order[v])

            members.sort(key=barycenter)
            place(members)
    return {v: (float(column[v]), -row[v] + 0.0) for v in kinds}  # + 0.0: no -0.0


# -- the figure --------------------------------------------------------------------


def figure(graph: Graph, states: Mapping[str, str] | None = None, *, explode: bool = False) -> Plot:
    """The graph as an interactive Bokeh plot: shapes and colours by kind, labels, arrows, a hover tool.

    With ``states`` (node key -> task state, as :func:`states_from_snapshot` gives them) each node is
    filled with its state's colour (``STATE_COLORS``) and a second legend explains them; pass ``{}`` to
    start a live panel before the first snapshot. ``explode=True`` draws each subgraph's nodes instead
    of one vertex per subgraph call.
    """
    drawn = graph.explode_subgraphs() if explode else graph
    kinds = dot.vertices(drawn)
    positions = layout(drawn)
    data = _vertex_data(drawn, kinds, positions)
    _fill_states(data, _with_summaries(graph, states))
    vertices = ColumnDataSource(data, name=VERTICES)

    # one unit of x is a column, one of y a row: the frame gives each its preferred pixels, within bounds
    columns = max(x for x, _ in positions.values()) + 1
    rows = max(2 * abs(y) + 1 for _, y in positions.values())
    x_span, y_span = columns, rows + 0.4  # half a unit around each vertex, and room for the lowest label
    width = int(min(_MAX_FRAME[0], max(_MIN_FRAME[0], x_span * _LAYER_PX)))
    height = int(min(_MAX_FRAME[1], max(_MIN_FRAME[1], y_span * _SLOT_PX)))
    top = rows / 2
    counts = ", ".join(filter(None, (_count(len(drawn.inputs), "input"), _count(len(drawn.nodes), "node"),
                                     _count(len(drawn.outputs), "output"))))
    plot = _bokeh_figure(
        title=f"{graph.name}{' (subgraphs exploded)' if explode else ''}: {counts}",
        frame_width=width, frame_height=height, x_range=Range1d(-0.5, columns - 0.5),
        y_range=Range1d(top - y_span, top), tools="pan,wheel_zoom,box_zoom,reset,save",
        toolbar_location="above", min_border=8, outline_line_color=None,
    )
    plot.axis.visible = False
    plot.grid.visible = False
    plot.toolbar.logo = None

    edges = ColumnDataSource(_edge_data(drawn, kinds, positions, x_span / width), name=EDGES)
    plot.add_glyph(edges, Bezier(x0="x0", y0="y0", x1="x1", y1="y1", cx0="cx0", cy0="cy0", cx1="cx1", cy1="cy1",
                                 line_color=_EDGE_COLOR, line_width=1.5, line_alpha=0.8))
    plot.add_layout(Arrow(source=edges, x_start="hx", y_start="y1", x_end="x1", y_end="y1", line_alpha=0,
                          end=VeeHead(size=_HEAD_PX, fill_color=_EDGE_COLOR, line_color=_EDGE_COLOR)))

    drawn_kinds = [kind for kind in STYLES if kind in kinds.values()]
    renderers = []
    for kind in drawn_kinds:  # one source for all, so that a state update is one patch
        style = STYLES[kind]
        glyph = Scatter(x="x", y="y", marker=style.marker, size=style.size, angle=style.angle, fill_color="color",
                        line_color=style.line, line_width=2)
        renderer = plot.add_glyph(vertices, glyph, view=CDSView(filter=GroupFilter(column_name="kind", group=kind)))
        renderer.name = f"pargraph-{kind}"
        renderers.append(renderer)
    plot.add_glyph(vertices, Text(x="x", y="y", text="label", y_offset="offset", text_align="center",
                                  text_baseline="top", text_font_size="9pt", text_color="#333333"))
    plot.add_tools(HoverTool(renderers=renderers, tooltips=[
        ("", "@label"), ("kind", "@kind"), ("key", "@key"), ("function", "@function"), ("details", "@details"),
        ("state", "@state")]))

    plot.add_layout(Legend(items=[_legend_item(plot, STYLES[kind].legend, STYLES[kind], STYLES[kind].fill)
                                  for kind in drawn_kinds], title="vertices", border_line_color=None), "right")
    if states is not None:
        plot.add_layout(Legend(items=[_legend_item(plot, state, STYLES["call"], STATE_COLORS[state])
                                      for state in STATES],
                               orientation="horizontal", title="task states", border_line_color=None), "below")
    return plot


def _legend_item(plot: Plot, label: str, style: Style, fill: str) -> LegendItem:
    """An entry drawn from a glyph of its own, so that it shows its colours whatever states fill the vertices.
    The glyph has one point, nowhere: a legend draws a glyph's visuals at its first row, so it needs a row."""
    glyph = Scatter(x="x", y="y", marker=style.marker, size=min(style.size, 16), angle=style.angle, fill_color=fill,
                    line_color=style.line, line_width=2)
    nowhere = ColumnDataSource({"x": [math.nan], "y": [math.nan]})
    return LegendItem(label=label, renderers=[plot.add_glyph(nowhere, glyph)])


def _vertex_data(graph: Graph, kinds: dict[str, str], positions: dict) -> dict[str, list]:
    """The vertex source's columns, a row per vertex; ``color`` and ``state`` are filled by _fill_states."""
    data: dict[str, list] = {name: [] for name in ("id", "kind", "label", "key", "function", "details", "state_key",
                                                   "x", "y", "offset")}

    def add(vid: str, label: str, key: str, function: str, details: str, state_key: str) -> None:
        for name, item in (("id", vid), ("kind", kinds[vid]), ("label", label), ("key", key), ("function", function),
                           ("details", details), ("state_key", state_key), ("x", positions[vid][0]),
                           ("y", positions[vid][1]), ("offset", STYLES[kinds[vid]].size / 2 + 2)):
            data[name].append(item)

    for name, spec in graph.inputs.items():
        add(dot.input_id(name), name, name, "", "required" if spec.default is MISSING else
            f"default {_short(spec.default)}", "")
    for name, value in graph.consts.items():
        add(dot.const_id(name), _short(value, 24), name, "", _short(value), "")
    for node in graph.nodes.values():
        if node.subgraph is not None:
            function, details = f"@graph {node.subgraph.name}", _count(len(node.subgraph.nodes), "node")
        else:
            function, details = _function_path(node.function), ""
        add(dot.node_id(node.key), node.label, node.key, function, details, node.key)
    for name, ref in graph.outputs.items():
        add(dot.output_id(name), name, name, "", f"from {ref}", ref.name if ref.kind == RefKind.NODE else "")
    return data


def _edge_data(graph: Graph, kinds: dict[str, str], positions: dict, x_per_px: float) -> dict[str, list]:
    """Curves that leave and enter horizontally, ending at the edge of the target's marker, where the arrow
    head goes (``hx`` is a point just before, that gives the head its direction)."""
    data: dict[str, list] = {name: [] for name in ("x0", "y0", "x1", "y1", "cx0", "cy0", "cx1", "cy1", "hx")}
    for source, target in dot.edges(graph):
        (xs, ys), (xt, yt) = positions[source], positions[target]
        x0 = xs + (STYLES[kinds[source]].size / 2 + 1) * x_per_px
        x1 = xt - (STYLES[kinds[target]].size / 2 + 2) * x_per_px
        bend = (x1 - x0) / 2
        for name, value in (("x0", x0), ("y0", ys), ("x1", x1), ("y1", yt), ("cx0", x0 + bend), ("cy0", ys),
                            ("cx1", x1 - bend), ("cy1", yt), ("hx", x1 - x_per_px)):
            data[name].append(value)
    return data


# -- states ------------------------------------------------------------------------


def update_states(target: Model, graph: Graph, states: Mapping[str, str] | None) -> int:
    """Recolour a drawing of ``graph`` (the figure, or its vertex source) in place; return how many vertices
    changed. Only the ``color`` and ``state`` columns change, only in the rows that differ, as a patch: a live
    panel sends a few bytes per snapshot, not the graph. ``states=None`` restores the colours by kind."""
    source = target if isinstance(target, ColumnDataSource) else target.select_one({"name": VERTICES})
    if source is None:
        raise ValueError(f"{type(target).__name__} is not a pargraph drawing: it has no source named {VERTICES!r}")
    new = {"kind": source.data["kind"], "state_key": source.data["state_key"]}
    _fill_states(new, _with_summaries(graph, states))
    changed = [i for i, (old, state) in enumerate(zip(source.data["state"], new["state"], strict=True))
               if old != state or source.data["color"][i] != new["color"][i]]
    if changed:
        source.patch({"color": [(i, new["color"][i]) for i in changed],
                      "state": [(i, new["state"][i]) for i in changed]})
    return len(changed)


def _fill_states(data: dict[str, Any], states: Mapping[str, str] | None) -> None:
    """Set the ``state`` and ``color`` columns from ``kind`` and ``state_key``; inputs and constants are data,
    not tasks, so they keep their kind's colour, and so does everything when there are no states."""
    data["state"], data["color"] = [], []
    for kind, key in zip(data["kind"], data["state_key"], strict=True):
        if states is None or not key:
            state, color = "", STYLES[kind].fill
        else:
            state = states.get(key, "")
            color = STATE_COLORS.get(state, NO_STATE_COLOR)
        data["state"].append(str(state))  # the wire's text: a column of plain strings
        data["color"].append(color)


def states_from_snapshot(graph: Graph, entry: Mapping[str, Any]) -> dict[str, NodeState]:
    """The states of ``graph``'s nodes in a monitor feed graph entry (``Client.status()["graphs"][i]``).

    The entry names tasks by their Dask keys; :meth:`Graph.task_keys` maps them back to the keys of
    ``graph.explode_subgraphs()``. Each subgraph call (at any depth) also gets its tasks' summary, the
    first of ``failed, cancelled, running, ready, waiting, done`` among them, so both drawings read the
    same dict. An entry too large to list its tasks says only whether the graph is done.
    """
    keys = graph.task_keys()
    tasks = entry.get("tasks")
    if tasks is not None:
        # the same names for every call's inputs; a state this version does not know is no state
        tasks = {base_key(key): NodeState(state) for key, state in tasks.items() if state in _KNOWN_STATES}
        states = {node: tasks[key] for node, key in keys.items() if key in tasks}
    elif entry.get("state") == GraphState.DONE:
        states = dict.fromkeys(keys, NodeState.DONE)
    else:
        states = {}
    _summarize_subgraphs(graph, states, "")
    return states


def _with_summaries(graph: Graph, states: Mapping[str, str] | None) -> dict[str, str] | None:
    if states is None:
        return None
    full = dict(states)
    _summarize_subgraphs(graph, full, "")
    return full


def _summarize_subgraphs(graph: Graph, states: dict[str, str], prefix: str) -> None:
    """Give each subgraph call without a state of its own the summary of its nodes' (innermost first)."""
    for node in graph.nodes.values():
        if node.subgraph is None:
            continue
        key = prefix + node.key
        _summarize_subgraphs(node.subgraph, states, key + "/")
        summary = summarize(states.get(f"{key}/{inner}") for inner in node.subgraph.nodes)
        if summary is not None:
            states.setdefault(key, summary)


def summarize(states: Iterable[str | None]) -> NodeState | None:
    """The state that best tells how a group of tasks is doing: a failure first, then work in progress, and
    ``done`` only when every task is; None for no known state."""
    seen = {state for state in states if state is not None}
    return next((state for state in _SUMMARY_ORDER if state in seen), None)


# -- the notebook ------------------------------------------------------------------


def mimebundle(graph: Graph, states: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a notebook shows for a Graph: the drawing as self-contained HTML, and its repr as text.

    The Bokeh document, with BokehJS inline (no CDN: many notebooks run offline), is the ``srcdoc`` of
    an iframe: HTML inserted into a page does not run its scripts by itself, and not every frontend runs
    them for it, but a frame's document does; and its BokehJS cannot clash with another version loaded
    in the page. The sandbox lets the drawing run scripts and save a PNG, and nothing else.
    """
    from scaler_jupyter.jupyter.graph_details import WIDTH, with_node_details  # a click shows a node's details

    plot = figure(graph, states)
    document = file_html(with_node_details(plot, graph), resources=INLINE, title=f"pargraph {graph.name}")
    # single quotes around the attribute: BokehJS has a hundred times more " than ', each escaped costs 5 bytes
    srcdoc = document.replace("&", "&amp;").replace("'", "&#39;")
    legends = sum(1 for item in plot.below if isinstance(item, Legend))
    width = plot.frame_width + 200 + WIDTH  # the vertex legend on the right, borders, the node details
    height = plot.frame_height + 90 + 60 * legends  # title, toolbar, the state legend below
    html = (f"<iframe srcdoc='{srcdoc}' sandbox='allow-scripts allow-downloads' title='pargraph {_escape(graph.name)}'"
            f" style='width: {width}px; height: {height}px; border: none; max-width: 100%'></iframe>")
    return {"text/html": html, "text/plain": repr(graph)}


# -- small helpers -----------------------------------------------------------------


def _function_path(function: Any) -> str:
    """``module:qualname`` for the hover tool; a fused chain or a callable object names its type."""
    if function is None:
        return ""
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    module = getattr(function, "__module__", None) or type(function).__module__
    return f"{module}:{qualname}"


def _short(value: Any, limit: int = 80) -> str:
    """A bounded repr: reprlib does not build the whole text of a big list first; a repr that fails still
    names the type."""
    try:
        text = _repr.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}" if n else ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")
