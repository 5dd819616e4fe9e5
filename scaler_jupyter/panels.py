"""Live Bokeh panels for a notebook: workers, queues, the task stream, throughput, a graph's DAG, parfun's model.

::

    from scaler_jupyter import panels

    panels.workers(client)          # CPU and memory per worker
    panels.queues(client)           # tasks queued and running per worker
    panels.task_stream(client)      # recent tasks per worker, coloured by function, the cell on hover
    panels.throughput(client)       # tasks/s over time
    panels.graph(g, client)         # a pargraph Graph, each node coloured by its state while it runs
    panels.partition_model(fn)      # a @parallel function's measurements, fitted cost and chosen size

``client`` is a ``Client``, a ``LocalCluster`` or a scheduler's address; against a scheduler started
with ``--keys``, pass ``keys=DIR`` too. Each returns a :class:`LivePanel`, a ``jupyter_bokeh`` widget.
How it works:

- What a panel shows is computed by pure functions of a monitor snapshot (``*_columns``,
  :func:`new_task_rows`, ...), tested without a kernel; the panel only puts their columns into
  its Bokeh data sources.
- Every panel watching one scheduler shares one :class:`Feed`, a subscription to the monitor
  feed (``scaler_jupyter.monitor``). A :class:`Ticker` on the kernel's own asyncio loop, never a
  thread (ipykernel drops or misroutes widget messages sent from threads), reads each feed's newest
  snapshot every ``INTERVAL`` seconds and hands it to its panels. So panels update while the kernel
  is idle, and pause while a cell runs (the loop is busy running it); outside a kernel (no running
  loop) a panel is drawn once, and :meth:`LivePanel.update` moves it on.
- Data is bounded: the task stream and throughput keep their last ``TASK_ROWS`` and
  ``THROUGHPUT_POINTS`` rows (``ColumnDataSource.stream(rollover=...)``); the other panels replace
  their few rows. A panel left running for hours grows neither the notebook nor the kernel.
- BokehJS is loaded inline (no CDN), once per kernel, before the first panel: its core and widgets
  only, about 1.6 MB in the notebook that shows it.
- ``panel.close()`` stops its updates and, with the last panel of a feed, the subscription;
  :func:`close_all` closes every panel. A panel no view shows any more (its cell was re-run or
  cleared) stops sending updates until a view shows it again (ipywidgets' ``_view_count``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from bokeh.layouts import row
from bokeh.models import (
    CategoricalColorMapper,
    ColumnDataSource,
    DataRange1d,
    FactorRange,
    HoverTool,
    LayoutDOM,
    Span,
)
from bokeh.palettes import Category20
from bokeh.plotting import figure
from bokeh.resources import Resources
from jupyter_bokeh import BokehModel

from scaler_jupyter import monitor
from scaler_jupyter.jupyter.graph_details import with_node_details
from scaler_jupyter.pargraph import drawing
from scaler_jupyter.pargraph.model import Graph

logger = logging.getLogger(__name__)

INTERVAL = 0.25  # seconds between updates: a few a second
TASK_ROWS = 2000  # tasks a task stream keeps
TASK_WINDOW = 30.0  # seconds of tasks a task stream shows (it follows the newest)
THROUGHPUT_POINTS = 1200  # samples a throughput panel keeps: 5 minutes at the feed's 0.25 s
_WIDTH, _HEIGHT = 640, 240
_MB = 1024 * 1024
_PALETTE = Category20[20]


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


def graph_entry(graph: Graph, snapshot: Mapping) -> tuple[Mapping, dict[str, str]] | None:
    """The snapshot's newest run of ``graph`` and its nodes' states: the newest graph entry that has tasks of
    ``graph`` (by their keys), or for graphs too large to list their tasks, the newest of the same name."""
    for entry in reversed(snapshot.get("graphs", [])):  # oldest first in the snapshot
        if entry.get("tasks") is None and entry.get("name") != graph.name:
            continue
        states = drawing.states_from_snapshot(graph, entry)
        if states or entry.get("tasks") is None:
            return entry, states
    return None


def partition_model_columns(model: Mapping, points: int = 64) -> tuple[dict[str, list], dict[str, list]]:
    """A parfun partition model (``ParallelFunction.partition_model()``) as two sources: the measurements
    (``size``, ``per_item`` seconds, ``exploring``) and the fitted cost per item ``a + b/n`` over the
    sizes measured, at ``points`` sizes spaced evenly on a log scale (empty while there is no fit)."""
    measurements = [m for m in model.get("measurements", []) if m["size"] > 0]
    measured = {
        "size": [m["size"] for m in measurements],
        "per_item": [m["seconds"] / m["size"] for m in measurements],
        "exploring": ["exploring" if m["exploring"] else "learned" for m in measurements],
    }
    a, b = model.get("per_item_seconds"), model.get("per_partition_seconds")
    sizes = [m["size"] for m in measurements]
    if model.get("chosen_size"):
        sizes.append(model["chosen_size"])
    curve: dict[str, list] = {"size": [], "per_item": []}
    if a is not None and b is not None and sizes:
        low, high = math.log(min(sizes)), math.log(max(sizes) * 2)
        for i in range(points):
            n = math.exp(low + (high - low) * i / (points - 1))
            curve["size"].append(n)
            curve["per_item"].append(a + b / n)
    return measured, curve


# -- the kernel's loop --------------------------------------------------------------


class Ticker:
    """Calls every live panel's ``tick()`` every ``INTERVAL`` seconds on the kernel's asyncio loop.

    One per loop; it stops rescheduling itself when no panel is left, and starts again with the next.
    """

    _instances: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.panels: list[LivePanel] = []
        self._handle: asyncio.TimerHandle | None = None

    @classmethod
    def current(cls) -> Ticker | None:
        """The ticker of the loop running this thread (a kernel's), or None outside one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        ticker = cls._instances.get(loop)
        if ticker is None:
            ticker = cls._instances[loop] = cls(loop)
        return ticker

    def add(self, panel: LivePanel) -> None:
        self.panels.append(panel)
        if self._handle is None:
            self._handle = self.loop.call_later(INTERVAL, self._tick)

    def remove(self, panel: LivePanel) -> None:
        if panel in self.panels:
            self.panels.remove(panel)

    def _tick(self) -> None:
        self._handle = None
        for feed in {panel.feed for panel in self.panels if panel.feed is not None}:
            feed.poll()
        for panel in list(self.panels):
            try:
                panel.tick()
            except Exception:  # one broken panel must not stop the others
                logger.exception("a %s panel failed to update; it stops", panel.kind)
                panel.close()
        if self.panels:
            self._handle = self.loop.call_later(INTERVAL, self._tick)


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


class LivePanel(BokehModel):
    """A Bokeh plot in a notebook, kept up to date from the kernel's loop; ``close()`` stops it.

    ``source`` is the panel's main data source; ``update(snapshot)`` applies one snapshot by hand
    (what the loop does with each new one from the feed).
    """

    def __init__(self, kind: str, plot: LayoutDOM, source: ColumnDataSource, feed: Feed | None,
                 apply: Callable[[Any], None], poll: Callable[[], Any] | None = None) -> None:
        _load_bokehjs()
        # The first picture goes into the widget's initial state: jupyter_bokeh drops changes made before a
        # view exists, so a value set once (the worker names of a range's factors) never reached the browser.
        first = poll() if poll is not None else feed.snapshot if feed is not None else None
        if first is not None:
            apply(first)
        # the front end counts the views showing it (``_view_count``): a re-run cell's old panel has none
        super().__init__(plot, _view_count=0)
        self.kind = kind
        self.plot = plot
        self.source = source
        self.feed = feed
        self._apply = apply
        self._poll = poll  # for panels fed by something else than a feed (parfun's model)
        self._serial = feed.serial if feed is not None and first is not None else -1
        self._closed = False
        self._was_shown = False
        self.ticker = Ticker.current()
        self.tick()  # the first picture, before anything waits on the loop
        if self.ticker is not None:
            self.ticker.add(self)

    def update(self, snapshot: Any) -> None:
        """Show one snapshot (a monitor snapshot, or for ``partition_model`` a model)."""
        self._apply(snapshot)

    def tick(self) -> None:
        """Show what is new since the last tick, if anything; nothing while no view shows the panel (after one did)."""
        if self._view_count:
            self._was_shown = True
        elif self._was_shown:
            return
        if self._poll is not None:
            self._apply(self._poll())
        elif self.feed is not None and self.feed.serial != self._serial and self.feed.snapshot is not None:
            self._serial = self.feed.serial
            self._apply(self.feed.snapshot)

    def close(self) -> None:
        """Stop updating, release the feed, close the widget; again, nothing."""
        if self._closed:
            return
        self._closed = True
        if self.ticker is not None:
            self.ticker.remove(self)
            self.ticker = None
        if self.feed is not None:
            self.feed.release()
            self.feed = None
        super().close()

    def __repr__(self) -> str:
        return f"<{self.kind} panel{' (closed)' if self._closed else ''}>"


def close_all() -> None:
    """Close every live panel of this kernel (those of re-run cells included) and their subscriptions."""
    ticker = Ticker.current()
    for panel in list(ticker.panels if ticker is not None else ()):
        panel.close()


_bokehjs_loaded = False


def _load_bokehjs() -> None:
    """Put BokehJS (core and widgets) into the notebook once per kernel, inline: a panel needs it on the page."""
    global _bokehjs_loaded
    if _bokehjs_loaded:
        return
    from IPython import get_ipython

    if getattr(get_ipython(), "kernel", None) is None:  # not in a kernel: nothing to load into
        return
    from bokeh.io import output_notebook

    output_notebook(resources=Resources(mode="inline", components=["bokeh", "bokeh-widgets"]), hide_banner=True)
    _bokehjs_loaded = True


def _replace(source: ColumnDataSource, columns: dict[str, list]) -> None:
    """Replace a source's data if it changed: an unchanged panel sends nothing."""
    if dict(source.data) != columns:
        source.data = columns


def _set_factors(factor_range: FactorRange, factors: list[str]) -> None:
    if list(factor_range.factors) != factors:
        factor_range.factors = factors


def _feed(client: Any, keys: Any) -> Feed:
    """The feed of ``client``'s scheduler: a ``Client``, a ``LocalCluster``, or a scheduler's address."""
    return Feed.of(client if isinstance(client, str) else client.address, keys)


def _figure(title: str, **options: Any) -> Any:
    plot = figure(title=title, width=options.pop("width", _WIDTH), height=options.pop("height", _HEIGHT),
                  toolbar_location="above", tools=options.pop("tools", "pan,wheel_zoom,box_zoom,reset,save"),
                  **options)
    plot.toolbar.logo = None
    return plot


# -- the panels ---------------------------------------------------------------------


def workers(client: Any, *, keys: Any = None) -> LivePanel:
    """CPU (percent of one core) and memory (MB) of each worker of ``client``'s cluster, live."""
    source = ColumnDataSource({name: [] for name in ("worker", "cpu", "memory", "processors")})
    factors = FactorRange()
    cpu = _figure("CPU per worker (% of one core)", y_range=factors, x_range=DataRange1d(start=0),
                  width=_WIDTH // 2)
    cpu.hbar(y="worker", right="cpu", height=0.7, source=source, color="#1f77b4")
    memory = _figure("memory per worker (MB)", y_range=factors, x_range=DataRange1d(start=0), width=_WIDTH // 2)
    memory.hbar(y="worker", right="memory", height=0.7, source=source, color="#ff7f0e")
    memory.yaxis.visible = False
    for plot in (cpu, memory):
        plot.add_tools(HoverTool(tooltips=[("worker", "@worker"), ("CPU", "@cpu{0.0}%"),
                                           ("memory", "@memory{0.0} MB"), ("processors", "@processors")]))

    def apply(snapshot: Mapping) -> None:
        columns = worker_columns(snapshot)
        _set_factors(factors, columns["worker"])
        _replace(source, columns)

    return LivePanel("workers", row(cpu, memory), source, _feed(client, keys), apply)


def queues(client: Any, *, keys: Any = None) -> LivePanel:
    """Tasks running and queued on each worker of ``client``'s cluster, live."""
    source = ColumnDataSource({name: [] for name in ("worker", "running", "queued", "held")})
    factors = FactorRange()
    plot = _figure("tasks per worker", y_range=factors, x_range=DataRange1d(start=0))
    plot.hbar_stack(["running", "queued"], y="worker", height=0.7, source=source, color=["#2ca02c", "#c7c7c7"],
                    legend_label=["running", "queued"])
    plot.legend.location = "bottom_right"
    plot.add_tools(HoverTool(tooltips=[("worker", "@worker"), ("running", "@running"), ("queued", "@queued")]))

    def apply(snapshot: Mapping) -> None:
        columns = queue_columns(snapshot)
        _set_factors(factors, columns["worker"])
        _replace(source, columns)

    return LivePanel("queues", plot, source, _feed(client, keys), apply)


def task_stream(client: Any, *, keys: Any = None) -> LivePanel:
    """The tasks ``client``'s cluster ran lately, a bar per task on its worker's line, coloured by function;
    hovering shows the function, its run time and the notebook cell that submitted it."""
    source = ColumnDataSource({name: [] for name in TASK_COLUMNS})
    factors = FactorRange()
    plot = _figure("task stream", y_range=factors, x_axis_type="datetime",
                   x_range=DataRange1d(follow="end", follow_interval=TASK_WINDOW * 1000, range_padding=0))
    plot.hbar(y="worker", left="start", right="end", height=0.8, color="color", source=source)
    plot.add_tools(HoverTool(tooltips=[("function", "@function"), ("cell", "@origin"),
                                       ("run time", "@duration{0.000} s"), ("status", "@status"),
                                       ("worker", "@worker")]))
    seen: set[int] = set()

    def apply(snapshot: Mapping) -> None:
        nonlocal seen
        rows, seen = new_task_rows(snapshot, seen)
        labels = sorted(set(worker_labels(snapshot).values()) | set(rows["worker"]) | set(factors.factors))
        _set_factors(factors, labels)
        if rows["start"]:
            source.stream(rows, rollover=TASK_ROWS)

    return LivePanel("task stream", plot, source, _feed(client, keys), apply)


def throughput(client: Any, *, keys: Any = None) -> LivePanel:
    """Tasks finished per second on ``client``'s cluster over time, with the tasks running and pending."""
    source = ColumnDataSource({name: [] for name in ("time", "tasks_per_second", "running", "pending")})
    plot = _figure("throughput", x_axis_type="datetime", y_range=DataRange1d(start=0))
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

    return LivePanel("throughput", plot, source, _feed(client, keys), apply)


def graph(graph_or_run: Any, client: Any, *, explode: bool = False, keys: Any = None) -> LivePanel:
    """A pargraph ``Graph``'s drawing (or that of an object with a ``graph`` attribute), each node coloured by
    its state in the newest run of it on ``client``'s cluster, live: white before it runs."""
    g = graph_or_run if isinstance(graph_or_run, Graph) else getattr(graph_or_run, "graph", None)
    if not isinstance(g, Graph):
        raise TypeError(f"panels.graph draws a pargraph Graph (or what has one as .graph), not {graph_or_run!r}")
    plot = drawing.figure(g, {}, explode=explode)
    source = plot.select_one({"name": drawing.VERTICES})

    def apply(snapshot: Mapping) -> None:
        found = graph_entry(g, snapshot)
        if found is not None:
            drawing.update_states(source, g, found[1])

    return LivePanel("graph", with_node_details(plot, g.explode_subgraphs() if explode else g), source,
                     _feed(client, keys), apply)


def partition_model(function: Any) -> LivePanel:
    """What a ``@parallel`` function's partition-size learner knows: the cost per item of each partition measured,
    the fitted ``a + b/n``, and the chosen size; live while the function runs in other cells."""
    model_of = getattr(function, "partition_model", None)
    if not callable(model_of):
        raise TypeError(f"panels.partition_model shows a @parallel function's model, not {function!r}")
    measured = ColumnDataSource({"size": [], "per_item": [], "exploring": []})
    curve = ColumnDataSource({"size": [], "per_item": []})
    plot = _figure(f"{getattr(function, '__name__', 'function')}(): cost per item by partition size",
                   x_axis_type="log", y_axis_type="log", x_axis_label="partition size (items)",
                   y_axis_label="seconds per item")
    plot.scatter(x="size", y="per_item", source=measured, size=7, alpha=0.7, legend_group="exploring",
                 color={"field": "exploring", "transform": CategoricalColorMapper(
                     factors=["exploring", "learned"], palette=["#ff7f0e", "#1f77b4"])})
    plot.line(x="size", y="per_item", source=curve, color="#333333", line_width=2, legend_label="fit a + b/n")
    chosen = Span(dimension="height", line_color="#d62728", line_dash="dashed", line_width=2, location=None)
    plot.add_layout(chosen)
    plot.legend.location = "top_right"
    plot.add_tools(HoverTool(tooltips=[("size", "@size{0,0}"), ("per item", "@per_item{0.000000} s")]))
    previous: list = [None]

    def apply(model: Mapping) -> None:
        key = (len(model.get("measurements", [])), model.get("chosen_size"), model.get("state"))
        if key == previous[0]:
            return
        previous[0] = key
        points, fit = partition_model_columns(model)
        _replace(measured, points)
        _replace(curve, fit)
        chosen.location = model.get("chosen_size") or model.get("fixed_size")
        plot.title.text = f"{getattr(function, '__name__', 'function')}(): {_model_title(model)}"

    return LivePanel("partition model", plot, measured, None, apply, poll=model_of)


def _model_title(model: Mapping) -> str:
    if model.get("fixed_size"):
        return f"partition size fixed at {model['fixed_size']:,}"
    chosen = model.get("chosen_size")
    return f"{model.get('state', '')}, chosen size {chosen:,}" if chosen else f"{model.get('state', '')}"


__all__ = ["LivePanel", "close_all", "graph", "partition_model", "queues", "task_stream", "throughput", "workers"]
