"""Drawing a Graph: the layered layout, the Bokeh figure, live states from the monitor feed, the notebook bundle.

Everything but one test runs without a cluster; that one runs a graph on a real
one-worker cluster and reads its states back from ``Client.status()``.
"""

from __future__ import annotations

import html
import re
import types
from typing import Annotated

import msgpack
import pytest
from bokeh.document import Document
from bokeh.document.events import ColumnsPatchedEvent
from bokeh.models import Arrow, HoverTool, Legend, Range1d, VeeHead
from bokeh.plotting import figure as bokeh_figure

from scaler_jupyter import LocalCluster
from scaler_jupyter.pargraph import Result, delayed, graph
from scaler_jupyter.pargraph.drawing import (
    EDGES,
    NO_STATE_COLOR,
    STATE_COLORS,
    STYLES,
    VERTICES,
    figure,
    layout,
    mimebundle,
    states_from_snapshot,
    summarize,
    update_states,
)
from scaler_jupyter.protocol.graph_states import NodeState

# ---------------------------------------------------------------------------
# Programs: the talk's report, with a subgraph, constants and operators


@delayed
def read_file(path):
    return f"text of {path}"


@delayed
def preprocess(text):
    return text.upper()


@delayed
def read_table(name):
    return [f"{name}@x.org", f"{name}@y.org", "ops@x.org"]


@delayed
def extract_emails(table, domain):
    return [address for address in table if address.endswith(domain)]


@delayed
def send(report, emails) -> Annotated[str, Result("sent")]:
    return f"{report} -> {', '.join(emails)}"


@graph
def clean(text, suffix="!"):
    return preprocess(text) + suffix


@graph
def report(path, table_name="users") -> Annotated[str, Result("sent")]:
    emails = extract_emails(read_table(table_name), domain="x.org")[:10]
    return send(clean(read_file(path)), emails)


@graph
def passthrough(x):
    return x


def edges_of(graph_) -> list[tuple[str, str]]:
    """The (from, to) vertex ids the layout must order left to right."""
    edges = []
    for node in graph_.nodes.values():
        edges += [(f"{ref.kind}:{ref.name}", f"node:{node.key}") for ref in node.refs()]
    edges += [(f"{ref.kind}:{ref.name}", f"output:{name}") for name, ref in graph_.outputs.items()]
    return edges


def vertex_rows(plot) -> list[dict]:
    source = plot.select_one({"name": VERTICES})
    return [dict(zip(source.data, row, strict=True)) for row in zip(*source.data.values(), strict=True)]


def by_id(plot) -> dict[str, dict]:
    return {row["id"]: row for row in vertex_rows(plot)}


@pytest.fixture(scope="module")
def g():
    return report.to_graph()


@pytest.fixture(scope="module")
def k(g):
    """The key of each node of ``g`` by its label (``k.read_file``): trace-time keys number the calls."""
    return types.SimpleNamespace(**{node.label: node.key for node in g.nodes.values()})


# ---------------------------------------------------------------------------
# layout


def test_layout_places_every_vertex_under_a_stable_id(g, k):
    positions = layout(g)
    assert set(positions) == {
        "input:path", "input:table_name", *(f"const:{name}" for name in g.consts),
        *(f"node:{key}" for key in g.nodes), "output:sent"}
    assert {f"node:{k.read_file}", f"node:{k.clean}", f"node:{k.getitem}", f"node:{k.send}"} <= set(positions)
    assert all(isinstance(x, float) and isinstance(y, float) for x, y in positions.values())


@pytest.mark.parametrize("case", ["report", "exploded", "passthrough", "no inputs"])
def test_every_edge_goes_left_to_right(case):
    traced = {"report": lambda: report.to_graph(), "exploded": lambda: report.to_graph().explode_subgraphs(),
              "passthrough": lambda: passthrough.to_graph(), "no inputs": lambda: report.to_graph("a.csv", "ops")}
    graph_ = traced[case]()
    positions = layout(graph_)
    for source, target in edges_of(graph_):
        assert positions[source][0] < positions[target][0], (source, target)
    columns = {x for x, _ in positions.values()}
    assert columns == set(map(float, range(len(columns))))  # no empty column
    assert {positions[f"input:{name}"][0] for name in graph_.inputs} <= {0.0}
    assert {positions[f"output:{name}"][0] for name in graph_.outputs} == {max(columns)}


def test_layout_puts_constants_just_before_their_reader(g, k):
    positions = layout(g)
    [domain] = [name for name, value in g.consts.items() if value == "x.org"]
    assert positions[f"const:{domain}"][0] == positions[f"node:{k.extract_emails}"][0] - 1


def test_layout_is_deterministic(g):
    assert layout(g) == layout(report.to_graph()) == layout(type(g).from_json(g.to_json()))
    rows = [y for x, y in layout(g).values() if x == 0.0]
    assert sorted(rows) == [-0.5, 0.5]  # centred on 0


# ---------------------------------------------------------------------------
# figure


def test_figure_draws_a_vertex_per_input_constant_node_and_output(g, k):
    plot = figure(g)
    rows = by_id(plot)
    assert set(rows) == set(layout(g))
    kinds = {vid: row["kind"] for vid, row in rows.items()}
    assert kinds["input:path"] == kinds["input:table_name"] == "input"
    assert {kinds[f"const:{name}"] for name in g.consts} == {"const"}
    assert kinds[f"node:{k.read_file}"] == kinds[f"node:{k.send}"] == "call"
    assert kinds[f"node:{k.getitem}"] == "operator"  # [:10] on a traced value
    assert kinds[f"node:{k.clean}"] == "subgraph"
    assert kinds["output:sent"] == "output"
    assert sorted(row["label"] for row in rows.values() if row["kind"] == "call") == [
        "extract_emails", "read_file", "read_table", "send"]
    assert rows[f"node:{k.clean}"]["label"] == "clean"


def test_each_kind_has_its_own_shape_colour_and_legend_entry(g):
    plot = figure(g)
    for kind in ("input", "const", "call", "operator", "subgraph", "output"):
        [renderer] = plot.select({"name": f"pargraph-{kind}"})
        assert renderer.data_source.name == VERTICES
        assert renderer.view.filter.group == kind
        assert renderer.glyph.marker == STYLES[kind].marker
        assert renderer.glyph.line_color == STYLES[kind].line
        assert renderer.glyph.fill_color == "color"  # a column: states recolour it
    markers = {STYLES[kind].marker for kind in ("input", "const", "operator", "subgraph", "output")}
    assert len(markers) == 5  # a call is a bigger square than a constant, and another colour
    assert {row["color"] for row in vertex_rows(plot) if row["kind"] == "call"} == {STYLES["call"].fill}
    [legend] = [item for item in plot.right if isinstance(item, Legend)]
    assert [item.label.value for item in legend.items] == [STYLES[kind].legend for kind in STYLES]
    assert not [item for item in plot.below if isinstance(item, Legend)]  # no states, no state legend


def test_legend_shows_only_the_kinds_drawn():
    plot = figure(passthrough.to_graph())
    [legend] = [item for item in plot.right if isinstance(item, Legend)]
    assert [item.label.value for item in legend.items] == ["input", "output"]


def test_edges_are_drawn_with_arrow_heads(g):
    plot = figure(g)
    edges = plot.select_one({"name": EDGES})
    assert len(edges.data["x0"]) == len(set(edges_of(g)))
    [arrow] = plot.select({"type": Arrow})
    assert arrow.source is edges and isinstance(arrow.end, VeeHead)
    assert all(x0 < x1 for x0, x1 in zip(edges.data["x0"], edges.data["x1"], strict=True))


def test_hover_shows_kind_key_function_and_values(g, k):
    plot = figure(g)
    [hover] = plot.select({"type": HoverTool})
    fields = dict(hover.tooltips)
    assert {fields[name] for name in ("kind", "key", "function", "details", "state")} == {
        "@kind", "@key", "@function", "@details", "@state"}
    assert {renderer.name for renderer in hover.renderers} == {f"pargraph-{kind}" for kind in STYLES}
    rows = by_id(plot)
    assert rows[f"node:{k.read_file}"]["function"] == f"{__name__}:read_file"
    assert rows[f"node:{k.getitem}"]["function"] == "scaler_jupyter.pargraph.operators:getitem"  # marked implicit
    assert rows[f"node:{k.clean}"]["function"] == "@graph clean"
    assert rows[f"node:{k.clean}"]["details"] == "2 nodes"
    assert rows["input:path"]["details"] == "required"
    assert rows["input:table_name"]["details"] == "default 'users'"
    [domain] = [name for name, value in g.consts.items() if value == "x.org"]
    assert rows[f"const:{domain}"]["details"] == "'x.org'"
    assert rows[f"const:{domain}"]["label"] == "'x.org'"


def test_constants_are_shown_short():
    @graph
    def big():
        return read_table(list(range(100_000)))

    row = next(row for row in vertex_rows(figure(big.to_graph())) if row["kind"] == "const")
    assert len(row["details"]) <= 80 and row["details"].startswith("[0, 1, 2")
    assert len(row["label"]) <= 24


def test_the_figure_fits_its_graph(g):
    plot = figure(g)
    positions = layout(g).values()
    assert isinstance(plot.x_range, Range1d) and isinstance(plot.y_range, Range1d)
    assert all(plot.x_range.start < x < plot.x_range.end for x, _ in positions)
    assert all(plot.y_range.start < y < plot.y_range.end for _, y in positions)
    assert 240 <= plot.frame_width <= 1200 and 160 <= plot.frame_height <= 800


def test_a_fused_graph_draws(g):
    fused = g.fuse_sequential()
    rows = by_id(figure(fused))
    labels = {row["label"] for row in rows.values()}
    assert any("+" in label for label in labels)
    assert all(row["function"] for row in rows.values() if row["kind"] in ("call", "operator"))


# ---------------------------------------------------------------------------
# subgraphs


def test_subgraphs_are_one_vertex_unless_exploded(g, k):
    collapsed = by_id(figure(g))
    assert f"node:{k.clean}" in collapsed
    assert not any("/" in vid for vid in collapsed)
    plot = figure(g, explode=True)
    exploded = by_id(plot)
    assert f"node:{k.clean}" not in exploded
    assert {f"node:{k.clean}/preprocess-1", f"node:{k.clean}/add-2"} <= set(exploded)
    assert exploded[f"node:{k.clean}/add-2"]["kind"] == "operator"
    assert "subgraph" not in {row["kind"] for row in exploded.values()}
    assert set(exploded) == set(layout(g.explode_subgraphs()))
    assert "exploded" in plot.title.text


# ---------------------------------------------------------------------------
# states


def test_states_colour_the_nodes(g, k):
    states = {k.read_file: "done", k.read_table: "done", k.extract_emails: "running", k.getitem: "waiting",
              f"{k.clean}/preprocess-1": "done", f"{k.clean}/add-2": "ready", k.send: "waiting"}
    plot = figure(g, states)
    rows = by_id(plot)
    assert rows[f"node:{k.read_file}"]["color"] == STATE_COLORS["done"]
    assert rows[f"node:{k.extract_emails}"]["color"] == STATE_COLORS["running"]
    assert rows[f"node:{k.clean}"]["state"] == "ready"  # summed up from its two tasks
    assert rows["output:sent"]["state"] == "waiting"  # as the node it comes from
    assert rows["input:path"]["color"] == STYLES["input"].fill  # data, not a task
    assert all(row["color"] == STYLES["const"].fill for row in rows.values() if row["kind"] == "const")
    [legend] = [item for item in plot.below if isinstance(item, Legend)]
    assert [item.label.value for item in legend.items] == list(STATE_COLORS)
    exploded = by_id(figure(g, states, explode=True))
    assert exploded[f"node:{k.clean}/add-2"]["color"] == STATE_COLORS["ready"]


def test_a_node_with_no_state_yet_is_blank(g):
    rows = by_id(figure(g, {}))
    assert {row["color"] for row in rows.values() if row["kind"] in ("call", "operator", "subgraph")} == {
        NO_STATE_COLOR}


def test_update_states_patches_colours_in_place(g, k):
    plot = figure(g, {})  # a live panel before the first snapshot
    source = plot.select_one({"name": VERTICES})
    before = {name: list(column) for name, column in source.data.items()}
    document = Document()
    document.add_root(plot)
    events = []
    document.on_change(events.append)

    assert update_states(plot, g, {k.read_file: "running", f"{k.clean}/preprocess-1": "failed"}) == 2
    assert plot.select_one({"name": VERTICES}) is source
    assert all(isinstance(event, ColumnsPatchedEvent) and event.model is source for event in events)
    assert {column for event in events for column in event.patches} == {"color", "state"}
    assert {name: list(column) for name, column in source.data.items() if name not in ("color", "state")} == {
        name: column for name, column in before.items() if name not in ("color", "state")}
    rows = by_id(plot)
    assert rows[f"node:{k.read_file}"]["color"] == STATE_COLORS["running"]
    assert rows[f"node:{k.clean}"]["color"] == STATE_COLORS["failed"]
    assert rows[f"node:{k.send}"]["color"] == NO_STATE_COLOR

    events.clear()
    assert update_states(source, g, {k.read_file: "running", f"{k.clean}/preprocess-1": "failed"}) == 0
    assert events == []  # nothing changed, nothing sent
    tasks = [row for row in vertex_rows(plot) if row["kind"] not in ("input", "const")]
    assert update_states(source, g, None) == len(tasks)  # back to the colours by kind
    assert source.data["color"] == figure(g).select_one({"name": VERTICES}).data["color"]


def test_update_states_on_an_exploded_drawing(g, k):
    plot = figure(g, {}, explode=True)
    update_states(plot, g, {f"{k.clean}/add-2": "done"})
    assert by_id(plot)[f"node:{k.clean}/add-2"]["color"] == STATE_COLORS["done"]


def test_update_states_needs_a_drawing(g):
    with pytest.raises(ValueError, match="not a pargraph drawing"):
        update_states(bokeh_figure(), g, {})


def test_summary_puts_trouble_first():
    assert summarize(["done", "failed", "running"]) == "failed"
    assert summarize(["done", "cancelled", "running"]) == "cancelled"
    assert summarize(["done", "waiting", "running", "ready"]) == "running"
    assert summarize(["done", "waiting", "ready"]) == "ready"
    assert summarize(["done", "waiting"]) == "waiting"
    assert summarize(["done", "done", None]) == "done"
    assert summarize([None]) is None and summarize([]) is None


def test_states_from_a_hand_built_snapshot(g, k):
    keys = g.task_keys()
    assert keys[k.send] == "sent"  # the output names its node's task
    entry = {"id": 1, "state": "running", "tasks": {
        keys[k.read_file]: "done", keys[f"{k.clean}/preprocess-1"]: "done", keys[f"{k.clean}/add-2"]: "running",
        keys[k.read_table]: "done", keys[k.extract_emails]: "done", keys[k.getitem]: "ready",
        keys[k.send]: "waiting", "unrelated-key": "done"}}
    states = states_from_snapshot(g, entry)
    assert states == {k.read_file: "done", f"{k.clean}/preprocess-1": "done", f"{k.clean}/add-2": "running",
                      k.read_table: "done", k.extract_emails: "done", k.getitem: "ready", k.send: "waiting",
                      k.clean: "running"}


def test_states_read_from_the_wire_are_node_states_and_an_unknown_one_is_none(g, k):
    keys = g.task_keys()
    entry = {"state": "running", "tasks": {keys[k.read_file]: "done", keys[k.send]: "paused"}}
    states = states_from_snapshot(g, msgpack.unpackb(msgpack.packb(entry)))  # plain strings, as the feed sends them
    assert states[k.read_file] is NodeState.DONE
    assert k.send not in states


def test_states_of_a_graph_too_large_to_list_its_tasks(g, k):
    done = states_from_snapshot(g, {"state": "done", "counts": {}})
    assert set(done) == set(g.task_keys()) | {k.clean} and set(done.values()) == {"done"}
    assert states_from_snapshot(g, {"state": "running", "counts": {}}) == {}


@graph
def twice(text):
    return clean(clean(text), suffix="?")


@graph
def nested(path):
    return twice(read_file(path)) + twice(path)


def test_nested_subgraphs_sum_up_at_every_depth():
    outer = nested.to_graph()
    first, second = (node.key for node in outer.nodes.values() if node.label == "twice")
    inner = next(node.key for node in outer.nodes[first].subgraph.nodes.values())
    keys = outer.task_keys()
    tasks = dict.fromkeys(keys.values(), "done")
    tasks[keys[f"{first}/{inner}/add-2"]] = "failed"
    states = states_from_snapshot(outer, {"tasks": tasks})
    assert states[f"{first}/{inner}"] == states[first] == "failed"
    assert states[second] == "done"
    assert by_id(figure(outer, states))[f"node:{first}"]["color"] == STATE_COLORS["failed"]


@pytest.fixture(scope="module")
def cluster():
    """One worker is enough to finish a small graph."""
    with LocalCluster(n_workers=1, timeout=30) as local:
        yield local


def test_states_from_a_real_run(g, client, k):
    dsk, keys = g.to_call_dict("a.csv")
    assert client.get(dsk, keys) == report("a.csv")
    entry = client.status()["graphs"][-1]
    states = states_from_snapshot(g, entry)
    assert set(states) == set(g.task_keys()) | {k.clean}
    assert set(states.values()) == {"done"}
    rows = by_id(figure(g, states))
    assert {row["color"] for row in rows.values() if row["kind"] in ("call", "operator", "subgraph", "output")} == {
        STATE_COLORS["done"]}


# ---------------------------------------------------------------------------
# the notebook


def test_mimebundle_is_self_contained(g):
    bundle = mimebundle(g)
    assert bundle["text/plain"] == repr(g)
    page = bundle["text/html"]
    assert page.startswith("<iframe srcdoc='") and page.endswith("</iframe>")
    document = html.unescape(re.match(r"<iframe srcdoc='([^']*)'", page).group(1))
    assert document.startswith("<!DOCTYPE html>")
    assert not re.search(r"<(script|link)[^>]*(src|href)=[\"']?(https?:)?//", document)  # nothing to fetch
    assert "cdn.bokeh.org" not in document
    assert "Bokeh" in document and "extract_emails" in document
    assert len(page) < 2_000_000  # BokehJS alone, without the widget, table, GL or MathJax bundles


def test_a_graph_displays_its_drawing(g):
    bundle = g._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}
    assert "read_table" in bundle["text/html"]
