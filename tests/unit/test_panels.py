"""What the notebook panels show, from snapshots and models: the pure functions of scaler_jupyter.panels."""

from __future__ import annotations

import pytest

from scaler_jupyter import panel_plots, panels
from scaler_jupyter.jupyter import graph_details
from scaler_jupyter.pargraph import delayed, graph
from scaler_jupyter.pargraph import drawing as pargraph_drawing


def worker(id: int, name: str, cpu: float = 0.0, memory: int = 0, queued: int = 0, running: int = 0) -> dict:
    return {"id": id, "name": name, "host": "h", "pid": 1, "tags": [], "processors": 1, "cpu": cpu,
            "memory": memory, "queued": queued, "running": running, "done": 0, "heartbeat_lag": 0.0}


def task(id: int, worker: int, function: str, start: float, end: float, origin: str | None = None) -> dict:
    return {"id": id, "worker": worker, "function": function, "origin": origin, "start": start, "end": end,
            "status": "ok"}


def snapshot(workers=(), recent=(), graphs=(), time: float = 1000.0, rate: float = 0.0) -> dict:
    return {"version": 1, "time": time, "scheduler": {"tasks_per_second": rate},
            "tasks": {"running": 3, "pending": 5}, "workers": list(workers), "clients": [],
            "graphs": list(graphs), "recent_tasks": list(recent)}


def test_workers_are_labelled_by_name_and_by_id_only_where_names_clash():
    labels = panels.worker_labels(snapshot([worker(0, "a"), worker(1, "b"), worker(2, "b")]))
    assert labels == {0: "a", 1: "b #1", 2: "b #2"}


def test_worker_columns_give_cpu_and_memory_in_mb():
    columns = panels.worker_columns(snapshot([worker(0, "a", cpu=150.0, memory=64 * 1024 * 1024), worker(1, "b")]))
    assert columns == {"worker": ["a", "b"], "cpu": [150.0, 0.0], "memory": [64.0, 0.0], "processors": [1, 1]}


def test_queue_columns_split_what_a_worker_holds():
    columns = panels.queue_columns(snapshot([worker(0, "a", queued=4, running=1)]))
    assert columns == {"worker": ["a"], "running": [1], "queued": [4], "held": [5]}


def test_task_rows_are_the_tasks_not_seen_in_the_previous_snapshot():
    first = snapshot([worker(0, "a"), worker(1, "b")],
                     [task(1, 0, "inc", 10.0, 10.5, "In [3]: inc(1)"), task(2, 1, "add", 10.2, 11.0)])
    rows, seen = panels.new_task_rows(first, set())
    assert rows["worker"] == ["a", "b"] and rows["function"] == ["inc", "add"]
    assert rows["start"] == [10_000.0, 10_200.0] and rows["end"] == [10_500.0, 11_000.0]  # ms, for Bokeh
    assert rows["origin"] == ["In [3]: inc(1)", ""] and rows["duration"] == [pytest.approx(0.5), pytest.approx(0.8)]
    assert rows["color"][0] == panels.function_color("inc") != panels.function_color("add")
    second = snapshot([worker(0, "a")], [task(2, 1, "add", 10.2, 11.0), task(3, 0, "inc", 11.0, 11.1)])
    rows, seen = panels.new_task_rows(second, seen)
    assert rows["function"] == ["inc"] and seen == {2, 3}
    rows, _ = panels.new_task_rows(snapshot([], [task(4, 7, "", 1.0, 2.0)]), seen)
    assert rows["worker"] == ["worker #7"] and rows["function"] == ["?"]  # a worker that left, an unnamed task


def test_function_colours_are_stable_and_from_the_palette():
    assert panels.function_color("simulate") == panels.function_color("simulate")
    assert panels.function_color("simulate").startswith("#")


def test_throughput_row_is_one_sample():
    assert panels.throughput_row(snapshot(time=2.5, rate=40.0)) == {
        "time": [2500.0], "tasks_per_second": [40.0], "running": [3], "pending": [5]}


def test_partition_model_columns_show_measurements_and_the_fitted_curve():
    model = {"measurements": [{"size": 10, "seconds": 0.02, "exploring": True},
                              {"size": 100, "seconds": 0.11, "exploring": False}],
             "per_item_seconds": 0.001, "per_partition_seconds": 0.01, "chosen_size": 200, "state": "learned"}
    measured, curve = panels.partition_model_columns(model, points=5)
    assert measured == {"size": [10, 100], "per_item": [pytest.approx(0.002), pytest.approx(0.0011)],
                        "exploring": ["exploring", "learned"]}
    assert curve["size"][0] == pytest.approx(10) and curve["size"][-1] == pytest.approx(400)  # to twice the choice
    assert all(y == pytest.approx(0.001 + 0.01 / n) for n, y in zip(curve["size"], curve["per_item"], strict=True))
    assert panels.partition_model_columns({"measurements": [], "per_item_seconds": None,
                                           "per_partition_seconds": None}) == (
        {"size": [], "per_item": [], "exploring": []}, {"size": [], "per_item": []})


@delayed
def double(x: int) -> int:
    return 2 * x


@delayed
def add(x: int, y: int) -> int:
    return x + y


@graph
def pipeline(x: int) -> int:
    return add(double(x), double(x + 1))


def test_a_graph_run_is_found_by_its_task_keys_and_coloured_by_state():
    g = pipeline.to_graph()
    keys = sorted(g.task_keys().values())
    entry = {"id": 3, "client": 0, "name": "whatever", "state": "running", "started": 1.0, "total": len(keys),
             "counts": {}, "tasks": {f"{key}@token": "done" for key in keys[:-1]} | {f"{keys[-1]}@token": "running"}}
    other = {"id": 4, "client": 0, "name": "other", "state": "running", "tasks": {"unrelated@x": "ready"}}
    found, states = panels.graph_entry(g, snapshot(graphs=[entry, other]))
    assert found is entry and sorted(states.values()) == ["done"] * (len(keys) - 1) + ["running"]
    assert panels.graph_entry(g, snapshot(graphs=[other])) is None
    big = {"id": 5, "client": 0, "name": g.name, "state": "done"}  # too large to list its tasks: by name
    found, states = panels.graph_entry(g, snapshot(graphs=[big]))
    assert found is big and set(states.values()) == {"done"}


def test_a_partition_model_panel_follows_its_function_outside_a_kernel():
    class Fake:
        __name__ = "count_words"

        def __init__(self) -> None:
            self.model = {"measurements": [], "per_item_seconds": None, "per_partition_seconds": None,
                          "chosen_size": None, "state": "exploring"}

        def partition_model(self) -> dict:
            return self.model

    function = Fake()
    panel = panels.partition_model(function)
    try:
        assert panel.ticker is None  # no running loop here: drawn once, moved on by hand
        assert list(panel.source.data["size"]) == []
        function.model = {"measurements": [{"size": 8, "seconds": 0.8, "exploring": True}], "chosen_size": 64,
                          "per_item_seconds": 0.05, "per_partition_seconds": 0.4, "state": "learned"}
        panel.tick()
        assert list(panel.source.data["size"]) == [8]
        assert "learned, chosen size 64" in panel.plot.title.text
    finally:
        panel.close()



def test_each_node_of_a_drawing_lists_what_it_reads():
    g = pipeline.to_graph()
    ids = ["input:x", *[f"node:{key}" for key in g.nodes]]
    arguments = graph_details.node_arguments(g, ids)
    assert arguments[0] == ""  # an input reads nothing
    reads = dict(zip(ids[1:], arguments[1:], strict=True))
    add_node = next(vertex for vertex in reads if "add" in vertex)
    assert len(reads[add_node].split(", ")) == 2  # the two doubles
    assert any(read == "x" for read in reads.values())  # the first double reads the input


def test_a_run_s_durations_and_results_fill_the_clicked_node_s_details():
    g = pipeline.to_graph()
    plot = pargraph_drawing.figure(g, {})
    layout = graph_details.with_node_details(plot, g)
    source = plot.select_one({"name": pargraph_drawing.VERTICES})
    keys = g.task_keys()
    add_node = next(node for node in keys if "add" in node)
    entry = {"durations": {f"{keys[add_node]}@token": 0.0123}, "results": {f"{keys[add_node]}@token": "7"}}
    # the node's row, and that of the output it gives when it is one
    outputs = sum(1 for kind, key in zip(source.data["kind"], source.data["state_key"], strict=True)
                  if kind == "output" and key == add_node)
    assert graph_details.update_run_details(source, g, entry) == 1 + outputs
    row = source.data["state_key"].index(add_node)
    assert (source.data["duration"][row], source.data["result"][row]) == ("12.3 ms", "7")
    assert graph_details.update_run_details(source, g, entry) == 0  # nothing new: no patch
    [show] = source.selected.js_property_callbacks["change:indices"]
    assert "ran for" in show.code and "d.result[i]" in show.code and layout.children[1].text == graph_details.HINT


def test_a_graph_s_notebook_display_shows_the_clicked_node_s_details():
    html = pipeline.to_graph()._repr_mimebundle_()["text/html"]
    assert "Click a node" in html and "TapTool" in html and "CustomJS" in html


def test_graph_columns_list_graphs_newest_first_with_their_tasks_by_state():
    older = {"id": 1, "client": 2, "name": "report", "state": "done", "started": 10.0, "total": 3,
             "counts": {"done": 3}}
    newer = {"id": 2, "client": 2, "name": "report", "state": "running", "started": 20.0, "total": 4,
             "counts": {"done": 1, "running": 2, "waiting": 1}}
    columns = panels.graph_columns(snapshot(graphs=[older, newer]))
    assert columns["graph"] == ["report (2.2)", "report (2.1)"]  # same name, told apart by client and id
    assert columns["state"] == ["running", "done"]
    assert columns["done"] == [1, 3] and columns["running"] == [2, 0] and columns["waiting"] == [1, 0]
    assert columns["failed"] == [0, 0] and columns["total"] == [4, 3]
    assert panels.graph_columns(snapshot()) == {name: [] for name in columns}


@pytest.mark.parametrize("build", [panel_plots.workers_plot, panel_plots.queues_plot, panel_plots.task_stream_plot,
                                   panel_plots.throughput_plot, panel_plots.graphs_plot])
def test_every_dashboard_plot_takes_a_snapshot(build):
    entry = {"id": 1, "client": 1, "name": "g", "state": "running", "started": 1.0, "total": 2,
             "counts": {"running": 2}}
    plot = build()
    plot.apply(snapshot([worker(0, "a", queued=1)], [task(1, 0, "inc", 1.0, 2.0)], [entry]))
    assert all(len(column) == 1 for column in plot.source.data.values())
