"""The dashboard: a cluster's live panels served by a Bokeh server, for Lab tabs and browsers.

``scaler-jupyter dashboard tcp://127.0.0.1:2345 [--port P] [--prefix /path/]`` (started with the
local clusters of ``scaler-jupyter start`` and ``%scaler start``, its URL in their cluster file's
``dashboard_address``) serves on 127.0.0.1:

- ``{prefix}{panel.path}``: each panel of :data:`PANELS`, a Bokeh server app of its own;
- ``{prefix}index.json``: ``{"scheduler": ADDRESS, "panels": [{"name", "title", "path"}, ...],
  "sessions": N}``, paths relative to the prefix, ``sessions`` the Bokeh sessions open (the monitor
  feed is subscribed while there is one); the small document to probe (never an app page: each
  visit to one makes a Bokeh session);
- ``{prefix}``: a page linking the panels.

This module says what the panels are (no Bokeh import, so the Jupyter server extension can list them);
:mod:`scaler_jupyter.dashboard.server` serves them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Panel:
    """One dashboard panel: ``name`` (an id), ``title`` (for a tab), ``path`` (relative to the prefix)."""

    name: str
    title: str
    path: str

    def to_json(self) -> dict:
        return {"name": self.name, "title": self.title, "path": self.path}


PANELS: tuple[Panel, ...] = (
    Panel("workers", "Workers: CPU and memory", "workers"),
    Panel("queues", "Task queues", "queues"),
    Panel("task-stream", "Task stream", "task-stream"),
    Panel("throughput", "Throughput", "throughput"),
    Panel("graphs", "Graphs", "graphs"),
)

__all__ = ["PANELS", "Panel"]
