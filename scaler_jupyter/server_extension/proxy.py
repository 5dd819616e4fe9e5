"""``{base_url}scaler-jupyter/dashboard/{id}/{path}``: a recorded cluster's dashboard, through the Jupyter server.

So a Lab tab reaches a dashboard on the server's own origin (no mixed content, no second port to
open, works under any base_url and behind JupyterHub). Rules:

- Only registered dashboards, by cluster id: the target is the ``dashboard_address`` of a live
  cluster file, and only if it is on this host's loopback. No URL from the request is ever dialled.
- Authenticated like the rest of the server (403 otherwise, for HTTP and websockets alike), and the
  websocket's origin is checked by Jupyter's rules before the dashboard is dialled.
- The user's credentials stay here: Cookie and Authorization are not forwarded. The dashboard sees
  its own origin (it accepts sessions from no other), every websocket subprotocol the page asked
  for (Bokeh passes its session token as the second), and messages up to Bokeh's own limit.
- The dashboard's websocket is opened *before* the browser's handshake is answered, so the
  subprotocol answered is the one the dashboard chose.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import httpclient, web, websocket

from scaler_jupyter import clusters
from scaler_jupyter.server_extension import POOL_SETTING
from scaler_jupyter.server_extension.handlers import AUTH_RESOURCE

logger = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 20 * 1024 * 1024  # Bokeh's server default (bokeh.server.tornado); tornado's own is 10 MiB
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
_NOT_FORWARDED = {"cookie", "authorization", "host", "origin", "connection", "upgrade", "keep-alive",
                  "proxy-authorization", "te", "trailer", "transfer-encoding", "content-length",
                  "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
                  "x-xsrftoken", "accept-encoding"}
_NOT_RETURNED = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server",
                 "set-cookie", "date"}


def dashboard_of(cluster_id: str) -> str | None:
    """The dashboard URL recorded for the live cluster ``cluster_id``, if it is on this host's loopback."""
    record = next((r for r in clusters.list_clusters() if r["id"] == cluster_id), None)
    url = None if record is None else record.get("dashboard_address")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in _LOOPBACK:
        logger.warning("cluster %s records a dashboard at %s, not on this host's loopback: not proxied", cluster_id,
                       url)
        return None
    return url if url.endswith("/") else url + "/"


class DashboardProxyHandler(WebSocketMixin, websocket.WebSocketHandler, JupyterHandler):
    """Forwards HTTP requests and websockets to a cluster's dashboard server."""

    auth_resource = AUTH_RESOURCE
    _backend: websocket.WebSocketClientConnection | None = None
    _relay: asyncio.Future | None = None
    _dashboard_root = "/"  # the path of the dashboard's own root (its --prefix)

    @property
    def max_message_size(self) -> int:
        return MAX_MESSAGE_SIZE

    async def _target(self, cluster_id: str, path: str) -> str:
        """The dashboard URL for this request's ``path`` (below the cluster's proxy root)."""
        pool = self.settings[POOL_SETTING]
        dashboard = await asyncio.get_running_loop().run_in_executor(pool, dashboard_of, cluster_id)
        if dashboard is None:
            raise web.HTTPError(404, f"no dashboard for cluster {cluster_id!r}")
        self._dashboard_root = urlsplit(dashboard).path
        url = dashboard + path.lstrip("/")
        return url + (f"?{self.request.query}" if self.request.query else "")

    def _forwarded_headers(self) -> dict[str, str]:
        return {name: value for name, value in self.request.headers.get_all() if name.lower() not in _NOT_FORWARDED}

    @ws_authenticated
    @authorized
    async def get(self, cluster_id: str, path: str | None) -> None:
        if not path:  # relative links need the trailing slash
            self.redirect(self.request.path + "/" + (f"?{self.request.query}" if self.request.query else ""))
            return
        target = await self._target(cluster_id, path)
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._open_backend(target)
            await super().get(cluster_id, path)  # the browser's handshake (which may refuse its origin)
            if self.ws_connection is None and self._backend is not None:
                self._backend.close()  # refused: the dashboard's side goes too
                self._backend = None
        else:
            await self._forward(target, path)

    # -- HTTP --------------------------------------------------------------------------

    async def _forward(self, target: str, path: str) -> None:
        request = httpclient.HTTPRequest(target, method=self.request.method, headers=self._forwarded_headers(),
                                         body=self.request.body if self.request.method in ("POST", "PUT", "PATCH")
                                         else None, follow_redirects=False, request_timeout=30)
        response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        if response.code == 599:
            raise web.HTTPError(502, f"the dashboard did not answer: {response.error}")
        self.set_status(response.code, response.reason)
        for name, value in response.headers.get_all():
            if name.lower() in _NOT_RETURNED:
                continue
            if name.lower() == "location":
                value = self._proxied_location(value, target, path)
            self.set_header(name, value)
        if response.body:
            self.write(response.body)
        self.finish()

    def _proxied_location(self, location: str, target: str, path: str) -> str:
        """A redirect to a path of the dashboard becomes one to the same path under this proxy."""
        parts = urlsplit(location)
        if parts.netloc and parts.netloc != urlsplit(target).netloc:
            return location  # elsewhere: left alone
        if not parts.path.startswith(self._dashboard_root):
            return location  # relative already (right under the proxy too), or outside the dashboard
        proxy_root = self.request.path[: len(self.request.path) - len(path)] + "/"
        return proxy_root + parts.path[len(self._dashboard_root):] + (f"?{parts.query}" if parts.query else "")

    # -- websockets --------------------------------------------------------------------

    async def _open_backend(self, target: str) -> None:
        parts = urlsplit(target)
        url = parts._replace(scheme="ws").geturl()
        offered = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        request = httpclient.HTTPRequest(url, headers={**self._forwarded_headers(), "Origin": f"http://{parts.netloc}"},
                                         connect_timeout=10, request_timeout=10)
        try:
            self._backend = await websocket.websocket_connect(request, subprotocols=offered or None,
                                                              max_message_size=MAX_MESSAGE_SIZE)
        except (OSError, httpclient.HTTPClientError, websocket.WebSocketError) as exc:
            raise web.HTTPError(502, f"the dashboard refused the websocket: {exc}") from None

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return None if self._backend is None else self._backend.selected_subprotocol

    def open(self, *args, **kwargs) -> None:
        super().open(*args, **kwargs)
        self._relay = asyncio.ensure_future(self._relay_from_backend())  # kept: a task nobody holds may vanish

    async def _relay_from_backend(self) -> None:
        backend = self._backend
        while backend is not None:
            message = await backend.read_message()
            if message is None:
                break
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except websocket.WebSocketClosedError:
                break
        self.close()

    async def on_message(self, message: str | bytes) -> None:
        if self._backend is not None:
            try:
                await self._backend.write_message(message, binary=isinstance(message, bytes))
            except websocket.WebSocketClosedError:
                self.close()

    def on_close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
