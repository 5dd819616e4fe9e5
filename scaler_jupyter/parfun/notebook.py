"""parfun in a notebook: a live line while a call runs, a one-line summary when it ends, the profile as HTML.

In an IPython kernel, a ``@parallel`` call that has run ``DELAY`` seconds, or any call of a
function with ``profile=True``, shows one line, rewritten at most every ``REFRESH`` seconds::

    count_words(): 12/~40 partitions, 48,000 of 160,000 items, size 4,000, exploring

and, when the call ends, the same line becomes its summary::

    count_words(): 40 partitions, 160,000 items in 3.21 s on scaler_local (4 workers); size 4,096 learned

``profile=True`` shows the call's costs as an HTML table and the learner's cost curve
(``scaler_jupyter.panels.partition_model``) instead of printing the report. :func:`notebook_display`
sets when: ``"auto"`` (the above, the default), ``"always"`` (every call, from its start) or
``"never"``. Outside a kernel (a script, a terminal IPython, a worker) nothing is shown, and a call
made from another thread than the kernel's main one shows nothing either: output from threads lands
in whatever cell runs then.

The line is written from the calling thread, between partitions: a cell running a call keeps the
kernel's loop busy, so this is the thread that may write into the cell.
"""

from __future__ import annotations

import html
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from scaler_jupyter.parfun.profiling import CallTrace, report

if TYPE_CHECKING:
    from scaler_jupyter.parfun.decorator import ParallelFunction

MODES = ("auto", "always", "never")
DELAY = 2.0  # seconds a call runs before "auto" shows its line
REFRESH = 0.2  # seconds between two rewrites of the line

_mode = "auto"


def notebook_display(mode: str) -> None:
    """When calls of ``@parallel`` functions show a line in a notebook: ``"auto"``, ``"always"`` or ``"never"``."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"notebook_display takes one of {', '.join(map(repr, MODES))}, not {mode!r}")
    _mode = mode


def in_notebook() -> bool:
    """True in the main thread of an IPython kernel, where a display reaches the running cell."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


class CallDisplay:
    """One call's line in the notebook: shown after ``DELAY`` (at once if ``eager``), then its summary."""

    def __init__(self, function: ParallelFunction, trace: CallTrace, total_items: int | None, eager: bool) -> None:
        self.function = function
        self.trace = trace
        self.total_items = total_items
        self.started = time.monotonic()
        self.show_after = self.started if eager else self.started + DELAY
        self.done = 0
        self.items_done = 0
        self._handle: Any = None
        self._last = 0.0

    @classmethod
    def open(cls, function: ParallelFunction, trace: CallTrace, total_items: int | None) -> CallDisplay | None:
        """The display of a call starting now, or None if this call shows nothing (mode, not a notebook)."""
        if _mode == "never" or not in_notebook():
            return None
        return cls(function, trace, total_items, eager=_mode == "always" or function.profile)

    def partition_done(self, size: int) -> None:
        """A partition's result was combined; rewrite the line if it is time."""
        self.done += 1
        self.items_done += size
        now = time.monotonic()
        if now >= self.show_after and now - self._last >= REFRESH:
            self._last = now
            self._show(self.progress_line())

    def progress_line(self) -> str:
        """The line while the call runs."""
        partitions = self.trace.partitions
        size = partitions[-1].size if partitions else None
        total = ""
        if self.total_items is not None and size:
            pulled = sum(p.size for p in partitions)
            total = f"/~{len(partitions) + math.ceil(max(0, self.total_items - pulled) / size):,}"
        items = f"{self.items_done:,}" + (f" of {self.total_items:,}" if self.total_items is not None else "")
        state = "fixed" if self.function.fixed_partition_size is not None else self.function.learner.state.value
        return (f"{self.function.__name__}(): {self.done:,}{total} partitions, {items} items"
                + (f", size {size:,}" if size else "") + f", {state}")

    def close(self) -> None:
        """The call ended: its line, if shown (or eager), becomes the summary."""
        if self._handle is None and time.monotonic() < self.show_after:
            return
        self._show(summary_line(self.trace))

    def _show(self, line: str) -> None:
        from IPython.display import display

        bundle = {"text/plain": line, "text/html": f"<pre style='margin: 0'>{html.escape(line)}</pre>"}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def summary_line(trace: CallTrace) -> str:
    """One line for an ended call: partitions, items, wall time, where, and the partition size it settled on."""
    s = trace.summary()
    where = "in the caller" if trace.sequential else f"on {trace.backend} ({trace.n_workers} workers)"
    model = trace.model or {}
    if model.get("fixed_size") is not None:
        size = f"size fixed at {model['fixed_size']:,}"
    elif model.get("plain_generator"):
        size = "sizes chosen by the partitioner"
    elif model.get("chosen_size"):
        size = f"size {model['chosen_size']:,} {model.get('state', '')}".rstrip()
    else:
        size = f"size not learned yet ({model.get('state', 'exploring')})"
    return (f"{trace.function}(): {s['partitions']:,} partitions, {s['items']:,} items in "
            f"{s['wall_seconds']:.2f} s {where}; {size}")


_TABLE_ROWS = (
    ("compute", "compute_seconds", "the function, in the workers"),
    ("partitioning", "partitioning_seconds", "splitting the arguments, choosing sizes"),
    ("transfer", "transfer_seconds", "serializing partitions and results, both sides"),
    ("scheduling", "scheduling_seconds", "submitting partitions"),
    ("combining", "combining_seconds", "combine_with, in the caller"),
)


def profile_html(trace: CallTrace) -> str:
    """The profile of one call as an HTML table (the figures ``profiling.report`` prints)."""
    s = trace.summary()
    cpu = s["cpu_seconds"] or 1e-12
    rows = "".join(
        f"<tr><td style='text-align:left'>{name}</td><td>{s[key]:.4f} s</td><td>{100 * s[key] / cpu:.1f}%</td>"
        f"<td style='text-align:left'>{html.escape(what)}</td></tr>" for name, key, what in _TABLE_ROWS)
    caption = html.escape(summary_line(trace))
    return (f"<table><caption style='text-align:left'>{caption}</caption>"
            "<thead><tr><th>stage</th><th>CPU time</th><th>share</th><th></th></tr></thead>"
            f"<tbody>{rows}</tbody><tfoot><tr><td style='text-align:left'>wall</td>"
            f"<td>{s['wall_seconds']:.4f} s</td><td></td><td style='text-align:left'>workers busy "
            f"{100 * s['worker_utilization']:.0f}% of it</td></tr></tfoot></table>")


def show_profile(function: ParallelFunction, trace: CallTrace) -> bool:
    """In a notebook, show a profiled call's table and cost curve, and return True; elsewhere False."""
    if _mode == "never" or not in_notebook():
        return False
    from IPython.display import display

    from scaler_jupyter import panels

    display({"text/html": profile_html(trace), "text/plain": report(trace)}, raw=True)
    panel = _model_panels.get(function)
    if panel is None or panel._closed:  # one live panel per function, shown again under each profiled call
        panel = _model_panels[function] = panels.partition_model(function)
    display(panel)
    return True


_model_panels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
