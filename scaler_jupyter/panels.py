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
  :func:`new_task_rows`, ...), tested without a kernel, and drawn by the plots of
  ``scaler_jupyter.panel_plots``, which the dashboard server shows too; the panel only puts
  each snapshot into them.
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
from collections.abc import Callable, Mapping
from typing import Any

from bokeh.models import CategoricalColorMapper, ColumnDataSource, HoverTool, LayoutDOM, Span
from bokeh.resources import Resources
from jupyter_bokeh import BokehModel

from scaler_jupyter import panel_plots
from scaler_jupyter.jupyter import graph_details
from scaler_jupyter.panel_plots import (  # the pure functions, here where notebook users look for them
    INTERVAL,
    TASK_COLUMNS,
    TASK_WINDOW,
    THROUGHPUT_POINTS,
    Feed,
    PanelPlot,
    function_color,
    graph_columns,
    new_figure,
    new_task_rows,
    queue_columns,
    replace_data,
    throughput_row,
    worker_columns,
    worker_labels,
)
from scaler_jupyter.pargraph import drawing
from scaler_jupyter.pargraph.model import Graph

logger = logging.getLogger(__name__)

TASK_ROWS = panel_plots.TASK_ROWS  # tasks a task stream keeps (read when a panel is made)


# -- snapshot -> columns: pure ------------------------------------------------------




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



def _feed(client: Any, keys: Any) -> Feed:
    """The feed of ``client``'s scheduler: a ``Client``, a ``LocalCluster``, or a scheduler's address."""
    return Feed.of(client if isinstance(client, str) else client.address, keys)



# -- the panels ---------------------------------------------------------------------


def _live(plot: PanelPlot, client: Any, keys: Any) -> LivePanel:
    return LivePanel(plot.kind, plot.layout, plot.source, _feed(client, keys), plot.apply)


def workers(client: Any, *, keys: Any = None) -> LivePanel:
    """CPU (percent of one core) and memory (MB) of each worker of ``client``'s cluster, live."""
    return _live(panel_plots.workers_plot(), client, keys)


def queues(client: Any, *, keys: Any = None) -> LivePanel:
    """Tasks running and queued on each worker of ``client``'s cluster, live."""
    return _live(panel_plots.queues_plot(), client, keys)


def task_stream(client: Any, *, keys: Any = None) -> LivePanel:
    """The tasks ``client``'s cluster ran lately, a bar per task on its worker's line, coloured by function;
    hovering shows the function, its run time and the notebook cell that submitted it."""
    return _live(panel_plots.task_stream_plot(TASK_ROWS), client, keys)


def throughput(client: Any, *, keys: Any = None) -> LivePanel:
    """Tasks finished per second on ``client``'s cluster over time, with the tasks running and pending."""
    return _live(panel_plots.throughput_plot(), client, keys)


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
            graph_details.update_run_details(source, g, found[0])

    return LivePanel("graph", graph_details.with_node_details(plot, g.explode_subgraphs() if explode else g), source,
                     _feed(client, keys), apply)


def partition_model(function: Any) -> LivePanel:
    """What a ``@parallel`` function's partition-size learner knows: the cost per item of each partition measured,
    the fitted ``a + b/n``, and the chosen size; live while the function runs in other cells."""
    model_of = getattr(function, "partition_model", None)
    if not callable(model_of):
        raise TypeError(f"panels.partition_model shows a @parallel function's model, not {function!r}")
    measured = ColumnDataSource({"size": [], "per_item": [], "exploring": []})
    curve = ColumnDataSource({"size": [], "per_item": []})
    plot = new_figure(f"{getattr(function, '__name__', 'function')}(): cost per item by partition size",
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
        replace_data(measured, points)
        replace_data(curve, fit)
        chosen.location = model.get("chosen_size") or model.get("fixed_size")
        plot.title.text = f"{getattr(function, '__name__', 'function')}(): {_model_title(model)}"

    return LivePanel("partition model", plot, measured, None, apply, poll=model_of)


def _model_title(model: Mapping) -> str:
    if model.get("fixed_size"):
        return f"partition size fixed at {model['fixed_size']:,}"
    chosen = model.get("chosen_size")
    return f"{model.get('state', '')}, chosen size {chosen:,}" if chosen else f"{model.get('state', '')}"


__all__ = [
    "TASK_COLUMNS",
    "TASK_WINDOW",
    "THROUGHPUT_POINTS",
    "LivePanel",
    "close_all",
    "function_color",
    "graph",
    "graph_columns",
    "new_task_rows",
    "partition_model",
    "queue_columns",
    "queues",
    "task_stream",
    "throughput",
    "throughput_row",
    "worker_columns",
    "worker_labels",
    "workers",
]
