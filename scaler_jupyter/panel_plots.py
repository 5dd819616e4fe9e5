"""What a live panel shows, wherever it is shown: a notebook widget (``scaler_jupyter.panels``) or a
Bokeh server app (``scaler_jupyter.dashboard``).

Needs Bokeh only (no kernel, no widget library), so the dashboard server runs without the notebook face.

- Pure functions turn a monitor snapshot into a panel's columns (``*_columns``, :func:`new_task_rows`,
  :func:`throughput_row`, :func:`graph_columns`); they are tested without Bokeh documents.
- Builders (:func:`workers_plot`, :func:`queues_plot`, :func:`task_stream_plot`, :func:`throughput_plot`,
  :func:`graphs_plot`) make a fresh Bokeh layout and a :class:`PanelPlot` whose ``apply(snapshot)`` puts
  that snapshot's columns into the layout's data sources. Whoever shows the layout calls ``apply``
  on its own loop: the kernel's for a notebook panel, the Bokeh server's for a dashboard session.
- A :class:`Feed` is one scheduler's monitor subscription shared by every panel of a process that
  watches it, open while one of them is (``Feed.of`` ... ``release``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bokeh.layouts import row
from bokeh.models import ColumnDataSource, DataRange1d, FactorRange, HoverTool, LayoutDOM
from bokeh.palettes import Category20
from bokeh.plotting import figure

from scaler_jupyter import monitor

INTERVAL = 0.25  # seconds between updates: a few a second
TASK_ROWS = 2000  # tasks a task stream keeps
TASK_WINDOW = 30.0  # seconds of tasks a task stream shows (it follows the newest)
THROUGHPUT_POINTS = 1200  # samples a throughput panel keeps: 5 minutes at the feed's 0.25 s
WIDTH, HEIGHT = 640, 240
_MB = 1024 * 1024
_PALETTE = Category20[20]
GRAPH_STATES = ("done", "running", "ready", "waiting", "failed", "cancelled")  # protocol.graph_states.NodeState
_GRAPH_COLORS = ("#2ca02c", "#1f77b4", "#aec7e8", "#e0e0e0", "#d62728", "#7f7f7f")


@dataclass(slots=True)
class PanelPlot:
    """A panel's Bokeh layout, its main data source, and what puts a snapshot into it."""

    kind: str
    layout: LayoutDOM
    source: ColumnDataSource
    apply: Callable[[Any], None]


# -- snapshot -> columns: pure ------------------------------------------------------


def worker_labels(snapshot: Mapping) -> dict[int, str]:
    """Each worker's label on a panel's axis: its name, with its id if another worker has the same name."""
    workers = snapshot.get("workers", [])
    names = [w["name"] for w in workers]
    return {w["id"]: w["name"] if names.count(w["name"]) == 1 else f"{w['name']} #{w['id']}" for w in workers}


def worker_columns(snapshot: Mapping) -> dict[str, list]:
    """A row per worker: ``worker`` (label), ``cpu`` (percent of one core), ``memory`` (MB), ``processors``."""
    labels = worker_labels(snapshot)
    workers = snapshot.get("workers", [])
    return {
        "worker": [labels[w["id"]] for w in workers],
        "cpu": [float(w["cpu"]) for w in workers],
        "memory": [w["memory"] / _MB for w in workers],
        "processors": [w["processors"] for w in workers],
    }


def queue_columns(snapshot: Mapping) -> dict[str, list]:
    """A row per worker: ``worker`` (label), ``running`` and ``queued`` tasks, and their sum ``held``."""
    labels = worker_labels(snapshot)
    workers = snapshot.get("workers", [])
    return {
        "worker": [labels[w["id"]] for w in workers],
        "running": [w["running"] for w in workers],
        "queued": [w["queued"] for w in workers],
        "held": [w["running"] + w["queued"] for w in workers],
    }


TASK_COLUMNS = ("worker", "start", "end", "function", "origin", "duration", "status", "color")


def new_task_rows(snapshot: Mapping, seen: set[int]) -> tuple[dict[str, list], set[int]]:
    """The snapshot's recent tasks not in ``seen`` (the ids of the previous snapshot's), as task-stream rows.

    Returns the rows (``TASK_COLUMNS``; ``start`` and ``end`` in milliseconds since the epoch, as
    Bokeh's datetime axes count) and the ids to pass as ``seen`` with the next snapshot. A task the
    scheduler finished between two snapshots a panel missed is not drawn: the panel samples.
    """
    labels = worker_labels(snapshot)
    rows: dict[str, list] = {name: [] for name in TASK_COLUMNS}
    recent = snapshot.get("recent_tasks", [])
    for task in recent:
        if task["id"] in seen:
            continue
        name = task["function"] or "?"
        for column, value in (("worker", labels.get(task["worker"], f"worker #{task['worker']}")),
                              ("start", task["start"] * 1000), ("end", task["end"] * 1000), ("function", name),
                              ("origin", task.get("origin") or ""), ("duration", task["end"] - task["start"]),
                              ("status", task["status"]), ("color", function_color(name))):
            rows[column].append(value)
    return rows, {task["id"] for task in recent}


def function_color(name: str) -> str:
    """A colour per function name, the same in every panel and every session."""
    return _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]


def throughput_row(snapshot: Mapping) -> dict[str, list]:
    """One throughput sample: ``time`` (ms since the epoch), ``tasks_per_second``, ``running``, ``pending``."""
    return {
        "time": [snapshot["time"] * 1000],
        "tasks_per_second": [float(snapshot["scheduler"]["tasks_per_second"])],
        "running": [snapshot["tasks"]["running"]],
        "pending": [snapshot["tasks"]["pending"]],
    }

GRAPH_COLUMNS = ("graph", "name", "state", "total", *GRAPH_STATES)


def graph_columns(snapshot: Mapping) -> dict[str, list]:
    """A row per graph the snapshot lists (running ones, and the last few to end), newest first:
    ``graph`` (a unique label), ``name``, ``state``, ``total`` and its tasks in each of ``GRAPH_STATES``."""
    columns: dict[str, list] = {name: [] for name in GRAPH_COLUMNS}
    for entry in sorted(snapshot.get("graphs", []), key=lambda entry: entry["started"], reverse=True):
        columns["graph"].append(f"{entry['name']} ({entry['client']}.{entry['id']})")
        columns["name"].append(entry["name"])
        columns["state"].append(entry["state"])
        columns["total"].append(entry["total"])
        for state in GRAPH_STATES:
            columns[state].append(entry["counts"].get(state, 0))
    return columns


# -- sharing a feed ---------------------------------------------------------------


class Feed:
    """One scheduler's monitor feed, shared by the panels watching it; closed with the last of them."""

    _open: dict[str, Feed] = {}

    def __init__(self, address: str, subscription: monitor.Subscription) -> None:
        self.address = address
        self.subscription = subscription
        self.snapshot: dict | None = subscription.latest(0.0)  # the first, from subscribing
        self.serial = 0  # goes up with each new snapshot, so a panel knows it has one to show
        self.users = 0

    @classmethod
    def of(cls, address: str, keys: Any = None) -> Feed:
        feed = cls._open.get(address)
        if feed is None:
            feed = cls._open[address] = cls(address, monitor.subscribe(address, keys))
        feed.users += 1
        return feed

    @classmethod
    def users_of(cls, address: str) -> int:
        """How many panels of this process watch ``address`` (0: no subscription is open)."""
        feed = cls._open.get(address)
        return 0 if feed is None else feed.users

    def poll(self) -> None:
        """Take the newest snapshot waiting, if any."""
        snapshot = self.subscription.latest(0.0)
        if snapshot is not None:
            self.snapshot = snapshot
            self.serial += 1

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.subscription.close()
            if Feed._open.get(self.address) is self:
                del Feed._open[self.address]


# -- the widget ---------------------------------------------------------------------


# -- drawing -----------------------------------------------------------------------


def replace_data(source: ColumnDataSource, columns: dict[str, list]) -> None:
    """Replace a source's data if it changed: an unchanged panel sends nothing."""
    if dict(source.data) != columns:
        source.data = columns


def set_factors(factor_range: FactorRange, factors: list[str]) -> None:
    """Set a categorical axis's factors if they changed."""
    if list(factor_range.factors) != factors:
        factor_range.factors = factors



def new_figure(title: str, **options: Any) -> Any:
    """A figure as every panel draws one: toolbar above, no logo."""
    plot = figure(title=title, width=options.pop("width", WIDTH), height=options.pop("height", HEIGHT),
                  toolbar_location="above", tools=options.pop("tools", "pan,wheel_zoom,box_zoom,reset,save"),
                  **options)
    plot.toolbar.logo = None
    return plot


# -- the panels ---------------------------------------------------------------------

# -- the panels' plots --------------------------------------------------------------


def workers_plot() -> PanelPlot:
    """CPU (percent of one core) and memory (MB) of each worker."""
    source = ColumnDataSource({name: [] for name in ("worker", "cpu", "memory", "processors")})
    factors = FactorRange()
    cpu = new_figure("CPU per worker (% of one core)", y_range=factors, x_range=DataRange1d(start=0),
                     width=WIDTH // 2)
    cpu.hbar(y="worker", right="cpu", height=0.7, source=source, color="#1f77b4")
    memory = new_figure("memory per worker (MB)", y_range=factors, x_range=DataRange1d(start=0), width=WIDTH // 2)
    memory.hbar(y="worker", right="memory", height=0.7, source=source, color="#ff7f0e")
    memory.yaxis.visible = False
    for plot in (cpu, memory):
        plot.add_tools(HoverTool(tooltips=[("worker", "@worker"), ("CPU", "@cpu{0.0}%"),
                                           ("memory", "@memory{0.0} MB"), ("processors", "@processors")]))

    def apply(snapshot: Mapping) -> None:
        columns = worker_columns(snapshot)
        set_factors(factors, columns["worker"])
        replace_data(source, columns)

    return PanelPlot("workers", row(cpu, memory), source, apply)


def queues_plot() -> PanelPlot:
    """Tasks running and queued on each worker."""
    source = ColumnDataSource({name: [] for name in ("worker", "running", "queued", "held")})
    factors = FactorRange()
    plot = new_figure("tasks per worker", y_range=factors, x_range=DataRange1d(start=0))
    plot.hbar_stack(["running", "queued"], y="worker", height=0.7, source=source, color=["#2ca02c", "#c7c7c7"],
                    legend_label=["running", "queued"])
    plot.legend.location = "bottom_right"
    plot.add_tools(HoverTool(tooltips=[("worker", "@worker"), ("running", "@running"), ("queued", "@queued")]))

    def apply(snapshot: Mapping) -> None:
        columns = queue_columns(snapshot)
        set_factors(factors, columns["worker"])
        replace_data(source, columns)

    return PanelPlot("queues", plot, source, apply)


def task_stream_plot(rows: int = TASK_ROWS) -> PanelPlot:
    """The tasks run lately, a bar per task on its worker's line, coloured by function; hovering shows
    the function, its run time and the notebook cell that submitted it. Keeps the last ``rows`` tasks."""
    source = ColumnDataSource({name: [] for name in TASK_COLUMNS})
    factors = FactorRange()
    plot = new_figure("task stream", y_range=factors, x_axis_type="datetime",
                      x_range=DataRange1d(follow="end", follow_interval=TASK_WINDOW * 1000, range_padding=0))
    plot.hbar(y="worker", left="start", right="end", height=0.8, color="color", source=source)
    plot.add_tools(HoverTool(tooltips=[("function", "@function"), ("cell", "@origin"),
                                       ("run time", "@duration{0.000} s"), ("status", "@status"),
                                       ("worker", "@worker")]))
    seen: set[int] = set()

    def apply(snapshot: Mapping) -> None:
        nonlocal seen
        new_rows, seen = new_task_rows(snapshot, seen)
        labels = sorted(set(worker_labels(snapshot).values()) | set(new_rows["worker"]) | set(factors.factors))
        set_factors(factors, labels)
        if new_rows["start"]:
            source.stream(new_rows, rollover=rows)

    return PanelPlot("task stream", plot, source, apply)


def throughput_plot() -> PanelPlot:
    """Tasks finished per second over time, with the tasks running and pending."""
    source = ColumnDataSource({name: [] for name in ("time", "tasks_per_second", "running", "pending")})
    plot = new_figure("throughput", x_axis_type="datetime", y_range=DataRange1d(start=0))
    plot.line(x="time", y="tasks_per_second", source=source, line_width=2, legend_label="tasks/s")
    plot.line(x="time", y="running", source=source, color="#2ca02c", legend_label="running")
    plot.line(x="time", y="pending", source=source, color="#c7c7c7", legend_label="pending")
    plot.legend.location = "top_left"
    plot.add_tools(HoverTool(tooltips=[("tasks/s", "@tasks_per_second{0.0}"), ("running", "@running"),
                                       ("pending", "@pending")], mode="vline"))
    last = [None]

    def apply(snapshot: Mapping) -> None:
        if snapshot["time"] != last[0]:
            last[0] = snapshot["time"]
            source.stream(throughput_row(snapshot), rollover=THROUGHPUT_POINTS)

    return PanelPlot("throughput", plot, source, apply)


def graphs_plot() -> PanelPlot:
    """Every graph running on the cluster (and the last few to end), a bar per graph split by its tasks' states.

    The notebook's ``panels.graph`` draws one graph's DAG, which it has; a dashboard knows graphs only
    from the snapshot, which counts their tasks by state."""
    source = ColumnDataSource({name: [] for name in GRAPH_COLUMNS})
    factors = FactorRange()
    plot = new_figure("graphs: tasks by state", y_range=factors, x_range=DataRange1d(start=0))
    plot.hbar_stack(list(GRAPH_STATES), y="graph", height=0.7, source=source, color=list(_GRAPH_COLORS),
                    legend_label=list(GRAPH_STATES))
    plot.legend.location = "bottom_right"
    plot.legend.orientation = "horizontal"
    plot.add_tools(HoverTool(tooltips=[("graph", "@name"), ("state", "@state"), ("tasks", "@total"),
                                       *((state, f"@{state}") for state in GRAPH_STATES)]))

    def apply(snapshot: Mapping) -> None:
        columns = graph_columns(snapshot)
        set_factors(factors, columns["graph"])
        replace_data(source, columns)

    return PanelPlot("graphs", plot, source, apply)
