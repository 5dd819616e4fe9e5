"""The dashboard's Bokeh server: one app per panel, fed by the scheduler's monitor feed.

How it works:

- Each panel of :data:`~scaler_jupyter.dashboard.PANELS` is a Bokeh app whose documents are built by
  ``scaler_jupyter.panel_plots`` (the same plots as the notebook's panels). A document polls the
  process's one :class:`~scaler_jupyter.panel_plots.Feed` every ``INTERVAL`` seconds on the server's
  event loop and applies each new snapshot. It runs in a process of its own, so it keeps updating
  while kernels are busy.
- No watcher, no cost: the feed is subscribed when the first session opens and closed when the last
  one is destroyed (Bokeh destroys a session a few seconds after its browser tab closed:
  ``UNUSED_SESSION_LIFETIME``). Between sessions the process only sleeps in its event loop.
- Behind a proxy: pages load BokehJS from the server itself (no CDN) by *relative* URLs
  (``static/...``), and BokehJS opens its websocket relative to the page, so the same pages work at
  ``http://127.0.0.1:PORT/workers`` and at ``{base_url}scaler-jupyter/dashboard/{id}/workers``.
  Websockets are accepted from the server's own origin only (``127.0.0.1:PORT``, ``localhost:PORT``,
  plus ``allow_websocket_origin``): the Jupyter server's proxy presents that origin after its own
  origin and authentication checks, so no other web page the browser shows can open a session.
"""

from __future__ import annotations

import json
import logging
import os

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.resources import Resources
from bokeh.server.server import BaseServer
from bokeh.server.tornado import DEFAULT_WEBSOCKET_MAX_MESSAGE_SIZE_BYTES, BokehTornado
from bokeh.server.util import bind_sockets
from bokeh.server.views.static_handler import StaticHandler
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.web import RequestHandler

from scaler_jupyter import panel_plots
from scaler_jupyter.dashboard import PANELS, Panel
from scaler_jupyter.monitor import Keys

logger = logging.getLogger(__name__)

UNUSED_SESSION_LIFETIME = 3.0  # seconds a session outlives its last connection (a page reload reuses it)
_BUILDERS = {
    "workers": panel_plots.workers_plot,
    "queues": panel_plots.queues_plot,
    "task-stream": panel_plots.task_stream_plot,
    "throughput": panel_plots.throughput_plot,
    "graphs": panel_plots.graphs_plot,
}
MAX_MESSAGE_SIZE = DEFAULT_WEBSOCKET_MAX_MESSAGE_SIZE_BYTES  # what a proxy in front must accept too


class _RelativeResourcesTornado(BokehTornado):
    """Bokeh's server app with BokehJS linked relative to each page, so it works under any proxy prefix."""

    def resources(self, absolute_url: str | bool | None = None) -> Resources:
        return Resources(mode="server", root_url="", path_versioner=StaticHandler.append_version)


class _IndexJSON(RequestHandler):
    def initialize(self, address: str) -> None:
        self.address = address

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"scheduler": self.address, "panels": [panel.to_json() for panel in PANELS],
                                "sessions": panel_plots.Feed.users_of(self.address)}))


class _IndexPage(RequestHandler):
    def get(self) -> None:
        links = "".join(f'<li><a href="{panel.path}">{panel.title}</a></li>' for panel in PANELS)
        self.finish(f"<!DOCTYPE html><title>scaler_jupyter dashboard</title><ul>{links}</ul>"
                    '<p><a href="index.json">index.json</a></p>')


def _application(panel: Panel, address: str, keys: Keys) -> Application:
    build = _BUILDERS[panel.name]

    def make_document(document: Document) -> None:
        feed = panel_plots.Feed.of(address, keys)  # subscribes if this is the first session
        plot = build()
        shown = [-1]

        def tick() -> None:
            feed.poll()
            if feed.serial != shown[0] and feed.snapshot is not None:
                shown[0] = feed.serial
                plot.apply(feed.snapshot)

        tick()
        document.title = panel.title
        document.add_root(plot.layout)
        document.add_periodic_callback(tick, int(panel_plots.INTERVAL * 1000))
        document.on_session_destroyed(lambda _context: feed.release())

    return Application(FunctionHandler(make_document))


def start_dashboard(address: str, port: int = 0, prefix: str = "/", keys: Keys = None,
                    allow_websocket_origin: tuple[str, ...] = ()) -> BaseServer:
    """Serve the panels of the scheduler at ``address`` on 127.0.0.1:``port`` (0: a free one), on the
    current tornado loop; ``server.port`` is the port it got. Stop it with ``server.stop()``."""
    sockets, port = bind_sockets("127.0.0.1", port)
    applications = {f"/{panel.path}": _application(panel, address, keys) for panel in PANELS}
    tornado_app = _RelativeResourcesTornado(
        applications,
        prefix=prefix,
        extra_websocket_origins=[f"127.0.0.1:{port}", f"localhost:{port}", *allow_websocket_origin],
        extra_patterns=[("/index.json", _IndexJSON, {"address": address}), (r"/?", _IndexPage)],
        unused_session_lifetime_milliseconds=int(UNUSED_SESSION_LIFETIME * 1000),
        check_unused_sessions_milliseconds=int(UNUSED_SESSION_LIFETIME * 1000) // 2,
        websocket_max_message_size_bytes=MAX_MESSAGE_SIZE,
    )
    http_server = HTTPServer(tornado_app, max_body_size=MAX_MESSAGE_SIZE)
    http_server.add_sockets(sockets)
    server = BaseServer(IOLoop.current(), tornado_app, http_server)
    server.start()
    return server


def dashboard_url(server: BaseServer) -> str:
    """The URL of a started dashboard's prefix, e.g. ``http://127.0.0.1:40123/``."""
    return f"http://127.0.0.1:{server.port}{server.prefix}/"


def run_dashboard(address: str, port: int = 0, prefix: str = "/", keys: Keys = None,
                  allow_websocket_origin: tuple[str, ...] = (), ready_fd: int | None = None) -> None:
    """Serve the dashboard until interrupted (``scaler-jupyter dashboard``); with ``ready_fd``, write
    ``{"address": URL}`` and a newline there once it listens."""
    server = start_dashboard(address, port, prefix, keys, allow_websocket_origin)
    url = dashboard_url(server)
    logger.info("dashboard of %s at %s", address, url)
    if ready_fd is not None:
        os.write(ready_fd, json.dumps({"address": url}).encode() + b"\n")
        os.close(ready_fd)
    try:
        server.io_loop.start()
    finally:
        server.stop()
