"""The cluster widget: a live view of one scheduler (address, workers, task counts) with controls to scale and stop.

It follows the scheduler's monitor feed (:func:`scaler_jupyter.monitor.subscribe`). The
feed's socket is watched by the kernel's own asyncio loop (``add_reader``), plus a
one-second timer that drains it too (the descriptor signals edges, and a missed edge
must not freeze the view) and says when the scheduler has gone quiet. Updates thus run
on the kernel's thread: ipykernel 7 drops or misroutes widget messages sent from others.
Outside a running loop (a plain script) the widget shows the first snapshot only.

What a snapshot holds is specified in ``scaler_jupyter.scheduler.monitor``; tasks that
no worker can run (its ``unmatched`` entries) are shown as warnings. The same
summary is the widget's ``text/html`` and ``text/plain`` for static renderers (GitHub,
nbviewer), and what ``%scaler status`` prints.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
import weakref
from collections.abc import Callable

import ipywidgets
import traitlets

from scaler_jupyter import monitor

logger = logging.getLogger(__name__)

TICK = 1.0  # seconds between timer drains of the feed
QUIET = 5.0  # seconds without a snapshot before the view says the scheduler is silent


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def summary(snapshot: dict) -> str:
    """One line: workers, and tasks by state."""
    tasks = snapshot["tasks"]
    workers = len(snapshot["workers"])
    rate = snapshot["scheduler"].get("tasks_per_second", 0.0)
    return (f"{workers} worker{'s' if workers != 1 else ''}; tasks: {tasks['pending']} pending, "
            f"{tasks['queued']} queued, {tasks['running']} running, {tasks['finished']} finished ({rate:.1f}/s)")


WORKER_COLUMNS = ("worker", "cpu", "memory", "queued", "running", "done")


def worker_rows(snapshot: dict) -> list[tuple[str, ...]]:
    """One row of text per worker, under ``WORKER_COLUMNS``."""
    return [(w["name"], f"{w['cpu']:.0f}%", human_bytes(w["memory"]), str(w["queued"]), str(w["running"]),
             str(w["done"])) for w in snapshot["workers"]]


def text_report(address: str, snapshot: dict) -> str:
    """The snapshot as plain text: a summary line and a table of workers."""
    rows = [WORKER_COLUMNS, *worker_rows(snapshot)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(WORKER_COLUMNS))]
    lines = [f"{address}: {summary(snapshot)}"]
    lines += [f"  ! {entry['message']}" for entry in snapshot.get("unmatched", ())]
    lines += ["  " + "  ".join(cell.rjust(width) if column else cell.ljust(width)
                               for column, (cell, width) in enumerate(zip(row, widths, strict=True)))
              for row in rows]
    return "\n".join(lines)


def html_report(title: str, snapshot: dict | None, note: str = "") -> str:
    """The snapshot as HTML: a title line and a table of workers."""
    parts = [f"<div><b>{html.escape(title)}</b>"]
    if snapshot is None:
        parts.append(f" &middot; {html.escape(note or 'waiting for the scheduler')}</div>")
        return "".join(parts)
    parts.append(f" &middot; {html.escape(summary(snapshot))}")
    if note:
        parts.append(f" &middot; <i>{html.escape(note)}</i>")
    parts.append("</div>")
    parts += [f"<div style='color:#b00020'>{html.escape(entry['message'])}</div>"
              for entry in snapshot.get("unmatched", ())]  # tasks no worker can run: say so where users look
    parts.append("<table><thead><tr>")
    parts += [f"<th style='text-align:{'left' if i == 0 else 'right'}'>{name}</th>"
              for i, name in enumerate(WORKER_COLUMNS)]
    parts.append("</tr></thead><tbody>")
    for row in worker_rows(snapshot):
        parts.append("<tr>" + "".join(f"<td style='text-align:{'left' if i == 0 else 'right'}'>{html.escape(cell)}"
                                      "</td>" for i, cell in enumerate(row)) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


class ClusterWidget(ipywidgets.VBox):
    """A live view of the scheduler at ``address``; ``scale(n)`` and ``stop()`` back its controls (None: no control).

    ``n_workers`` and ``tasks`` (the snapshot's task counts) follow the feed, for code
    that watches the cluster through the widget.
    """

    n_workers = traitlets.Int(0)
    tasks = traitlets.Dict()

    def __init__(self, address: str, keys: str | None = None, title: str | None = None,
                 scale: Callable[[int], None] | None = None, stop: Callable[[], object] | None = None,
                 timeout: float = 5.0) -> None:
        self.address = address
        self.title = title or f"scaler_jupyter {address}"
        self._scale = scale
        self._stop = stop
        self._snapshot: dict | None = None
        self._received = time.monotonic()
        self._note = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fd: int | None = None
        self.view = ipywidgets.HTML()
        self.count = ipywidgets.BoundedIntText(min=0, max=10_000, description="workers",
                                               layout=ipywidgets.Layout(width="160px"))
        self.scale_button = ipywidgets.Button(description="Scale", disabled=scale is None,
                                              tooltip="start or stop workers to reach this number")
        self.stop_button = ipywidgets.Button(description="Stop", button_style="danger", disabled=stop is None,
                                             tooltip="stop the cluster")
        self.scale_button.on_click(lambda _: self._on_scale())
        self.stop_button.on_click(lambda _: self._on_stop())
        controls = [self.count, self.scale_button, self.stop_button] if scale or stop else []
        super().__init__([self.view, ipywidgets.HBox(controls)])
        self._subscription = None
        try:
            self._subscription = monitor.subscribe(address, keys, timeout)
        except (OSError, ValueError) as exc:  # TimeoutError, ConnectionError, AuthenticationError are OSErrors
            self._note = str(exc)
            self._render()
            return
        self._drain()
        self.count.value = self.n_workers
        self._watch()

    # -- the feed ----------------------------------------------------------------

    def _watch(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # not in a kernel: a still picture
            self._subscription.close()
            self._subscription = None
            return
        self._fd = self._subscription.fileno()
        self._loop.add_reader(self._fd, self._drain)
        self._timer = self._loop.call_later(TICK, self._tick)

    def _drain(self) -> None:
        if self._subscription is None:
            return
        try:
            snapshot = self._subscription.latest(0)
        except Exception:  # a view must not take the kernel down; say why it froze
            logger.exception("the cluster widget lost its feed")
            self._note = "the monitor feed failed: see the kernel's log"
            self._unwatch()
            self._render()
            return
        if snapshot is not None:
            self._received = time.monotonic()
            self._snapshot = snapshot
            self._note = ""
            self.n_workers = len(snapshot["workers"])
            self.tasks = dict(snapshot["tasks"])
            self._render()

    def _tick(self) -> None:
        self._drain()
        silent = time.monotonic() - self._received
        if silent > QUIET and self._subscription is not None:
            self._note = f"no news from the scheduler for {silent:.0f}s"
            self._render()
        if self._loop is not None and self._subscription is not None:
            self._timer = self._loop.call_later(TICK, self._tick)

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def _render(self) -> None:
        self.view.value = html_report(self.title, self._snapshot, self._note)

    # -- the controls ------------------------------------------------------------

    def _on_scale(self) -> None:
        try:
            self._scale(self.count.value)
        except Exception as exc:  # shown where the user clicked, not as a traceback in some cell
            self._note = f"could not scale: {exc}"
            self._render()

    def _on_stop(self) -> None:
        try:
            self._stop()
        except Exception as exc:
            self._note = f"could not stop: {exc}"
            self._render()
            return
        self.stopped()

    def stopped(self) -> None:
        """The cluster is gone: freeze the view and disable the controls."""
        self._unwatch()
        self._note = "stopped"
        self.scale_button.disabled = self.stop_button.disabled = True
        self._render()

    def close(self) -> None:
        """Stop following the feed, and close the widget's views."""
        self._unwatch()
        super().close()

    # -- displays ----------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/html"] = self.view.value
        bundle["text/plain"] = (text_report(self.address, self._snapshot) if self._snapshot is not None
                                else f"{self.title}: {self._note}")
        return bundle


# One widget per displayed object, so showing a Client twice does not follow its feed twice.
_shown: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def for_object(obj) -> ClusterWidget:
    """The widget that displays a ``Client``, a ``LocalCluster`` or an ``SSHCluster``, made once per object."""
    from scaler_jupyter.client import Client
    from scaler_jupyter.cluster import LocalCluster
    from scaler_jupyter.jupyter import session
    from scaler_jupyter.ssh_cluster import SSHCluster

    widget = _shown.get(obj)
    if widget is not None and widget._subscription is not None:
        return widget
    ref = weakref.ref(obj)  # the widget's controls must not keep the object alive
    if isinstance(obj, (LocalCluster, SSHCluster)):
        widget = ClusterWidget(obj.address, obj.keys, f"{type(obj).__name__} {obj.id}",
                               scale=lambda n: ref().scale(n, wait=False), stop=lambda: ref().close())
    else:
        assert isinstance(obj, Client)
        current = session.current()
        if current is not None and current.client is obj:
            widget = session_widget()
        else:
            widget = ClusterWidget(obj.address, title=f"Client of {obj.address}")
    _shown[obj] = widget
    return widget


def session_widget() -> ClusterWidget:
    """A widget on the kernel's session (``%scaler start``), with controls if the kernel can scale its cluster."""
    from scaler_jupyter.jupyter import session

    current = session.current()
    if current is None:
        raise RuntimeError(session.NO_CLUSTER)
    title = f"cluster {current.cluster_id}" if current.cluster_id else f"cluster at {current.address}"
    widget = ClusterWidget(current.address, current.keys, title,
                           scale=session.scale if current.can_scale() else None, stop=_stop_session)
    _session_widgets.add(widget)
    return widget


_session_widgets: weakref.WeakSet = weakref.WeakSet()


def _stop_session() -> None:
    from scaler_jupyter.jupyter import session

    session.stop()
    session_stopped()


def session_stopped() -> None:
    """The session ended: every widget on it says so and lets its feed go."""
    for widget in list(_session_widgets):
        widget.stopped()
    _session_widgets.clear()


def mimebundle(obj, include=None, exclude=None) -> dict:
    """IPython's mimebundle formatter for ``Client`` and ``LocalCluster``: the widget, with HTML and text."""
    return for_object(obj)._repr_mimebundle_(include=include, exclude=exclude)
