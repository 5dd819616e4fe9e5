"""The dashboard server: its panels served and updating, directly and through the Jupyter server's proxy
under the base_url ``/a%40b/`` (HTTP, and the Bokeh websocket with its session token as a subprotocol)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from scaler_jupyter import Client, LocalCluster, clusters
from scaler_jupyter.cluster import read_ready
from scaler_jupyter.dashboard import PANELS
from scaler_jupyter.dashboard.server import MAX_MESSAGE_SIZE, UNUSED_SESSION_LIFETIME
from scaler_jupyter.processes import spawn, stop
from scaler_jupyter.server_extension import proxy
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def watched():
    """A cluster with its dashboard, as ``%scaler start`` makes one."""
    with LocalCluster(n_workers=1, dashboard=True) as cluster:
        yield cluster


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_the_index_lists_every_panel_and_each_page_loads_bokehjs_from_the_dashboard(watched):
    base = watched.dashboard_address
    assert base.startswith("http://127.0.0.1:") and watched.record()["dashboard_address"] == base
    index = json.loads(get(base + "index.json"))
    assert index["scheduler"] == watched.address
    assert [panel["path"] for panel in index["panels"]] == [panel.path for panel in PANELS]
    for panel in index["panels"]:
        page = get(base + panel["path"]).decode()
        scripts = re.findall(r'<script[^>]* src="([^"]+)"', page)
        assert scripts and all(src.startswith("static/js/") for src in scripts)  # relative: works under a proxy
    assert b"Bokeh Contributors" in get(base + scripts[0])[:200]  # BokehJS itself, from the dashboard (no CDN)


async def test_a_session_follows_the_tasks_directly(watched):
    base = watched.dashboard_address
    html = get(base + "task-stream").decode()
    token = re.search(r'"token":\s*"([^"]+)"', html).group(1)
    connection = await tornado.websocket.websocket_connect(base.replace("http:", "ws:") + "task-stream/ws",
                                                           subprotocols=["bokeh", token])
    try:
        assert (await receive(connection))[0]["msgtype"] == "ACK"
        await pull_document(connection)
        with Client(watched.address) as client:
            assert sum(client.map(abs, range(-20, 0))) == 210
            for _ in range(20):  # a patch per new snapshot: the one with the tasks comes within a few
                header, content = await receive(connection)
                streamed = [e for e in content.get("events", []) if e["kind"] == "ColumnsStreamed"]
                if streamed:
                    break
            columns = dict(streamed[0]["data"]["entries"])  # a map, as Bokeh serialises one
            assert header["msgtype"] == "PATCH-DOC" and set(columns["function"]) == {"abs"}
        assert json.loads(get(base + "index.json"))["sessions"] >= 1  # page loads make sessions too
    finally:
        connection.close()
    # the closed tab's session ends a few seconds later, and with it the subscription to the monitor feed
    assert wait_until(lambda: json.loads(get(base + "index.json"))["sessions"] == 0,
                      UNUSED_SESSION_LIFETIME * 3 + 5, "the dashboard to drop the closed session")


# -- through the Jupyter server's proxy --------------------------------------------------------


async def fetch(jp_fetch, *parts, **kwargs):
    try:
        return await jp_fetch(*parts, **kwargs)
    except tornado.httpclient.HTTPClientError as exc:
        return exc.response




async def receive(connection, timeout: float = 20.0) -> tuple[dict, dict]:
    """One Bokeh protocol message: (header, content); its buffers are skipped."""
    header = json.loads(await asyncio.wait_for(connection.read_message(), timeout))
    await asyncio.wait_for(connection.read_message(), timeout)  # metadata
    content = json.loads(await asyncio.wait_for(connection.read_message(), timeout))
    for _ in range(header.get("num_buffers", 0)):
        await asyncio.wait_for(connection.read_message(), timeout)  # the buffer's header, then its bytes
        await asyncio.wait_for(connection.read_message(), timeout)
    return header, content


async def pull_document(connection) -> dict:
    """Ask for the session's document (after which the server sends its changes); its JSON."""
    for frame in ({"msgid": "1", "msgtype": "PULL-DOC-REQ"}, {}, {}):
        await connection.write_message(json.dumps(frame))
    header, content = await receive(connection)
    assert header["msgtype"] == "PULL-DOC-REPLY" and "roots" in content["doc"]
    return content["doc"]


async def test_the_proxy_serves_a_dashboard_and_its_websocket_under_the_base_url(jp_fetch, jp_ws_fetch, jp_base_url):
    with LocalCluster(n_workers=1, dashboard=True) as cluster:
        root = ("scaler-jupyter", "dashboard", cluster.id)
        index = await fetch(jp_fetch, *root, "index.json")
        assert index.code == 200 and json.loads(index.body)["scheduler"] == cluster.address
        page = await fetch(jp_fetch, *root, "throughput")
        assert page.code == 200
        html = page.body.decode()
        script = re.search(r'src="(static/js/bokeh\.min\.js)\?v=', html).group(1)
        assert b"Bokeh Contributors" in (await fetch(jp_fetch, *root, script)).body[:200]
        token = re.search(r'"token":\s*"([^"]+)"', html).group(1)

        connection = await jp_ws_fetch(*root, "throughput", "ws", subprotocols=["bokeh", token])
        try:
            assert connection.selected_subprotocol == "bokeh"
            header, _ = await receive(connection)
            assert header["msgtype"] == "ACK"
            await pull_document(connection)
            with Client(cluster.address) as client:
                assert client.submit(abs, -1).result(timeout=30) == 1
                header, content = await receive(connection)  # each new snapshot streams a sample
                assert header["msgtype"] == "PATCH-DOC"
                assert any(event["kind"] == "ColumnsStreamed" for event in content["events"])
        finally:
            connection.close()
        bare = await fetch(jp_fetch, *root, follow_redirects=False)  # relative links need the slash
        assert bare.code == 302 and bare.headers["Location"] == f"{jp_base_url}scaler-jupyter/dashboard/{cluster.id}/"
        missing = await fetch(jp_fetch, "scaler-jupyter", "dashboard", "0123abcd", "index.json")
        assert missing.code == 404
    assert jp_base_url == "/a%40b/"


def test_the_command_serves_under_a_prefix(watched):
    """``scaler-jupyter dashboard ADDRESS --prefix /a/b/``: every path under the prefix, links relative."""
    ready_r, ready_w = os.pipe()
    process = spawn(["-m", "scaler_jupyter", "dashboard", watched.address, "--port", "0", "--prefix", "/a/b/",
                     "--ready-fd", str(ready_w)], pass_fds=(ready_w,))
    os.close(ready_w)
    try:
        url = read_ready(ready_r, process, 30, "the dashboard")["address"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/a/b/")
        assert json.loads(get(url + "index.json"))["sessions"] == 0
        assert 'href="workers"' in get(url).decode()
        page = get(url + "queues").decode()
        script = re.search(r'src="(static/js/bokeh\.min\.js[^"]*)"', page).group(1)
        assert b"Bokeh Contributors" in get(url + script)[:200]
    finally:
        stop(process)


class _EchoHeaders(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish(dict(self.request.headers.get_all()))


class _EchoSocket(tornado.websocket.WebSocketHandler):
    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        self.offered = subprotocols
        return subprotocols[0] if subprotocols else None

    def open(self) -> None:
        headers = dict(self.request.headers.get_all())
        self.write_message(json.dumps({"offered": self.offered, "headers": headers}))

    def on_message(self, message) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


async def test_the_proxy_keeps_credentials_and_forwards_subprotocols(jp_fetch, jp_ws_fetch):
    """Against a server that echoes what it receives, recorded as a cluster's dashboard."""
    backend = tornado.web.Application([("/headers", _EchoHeaders), ("/ws", _EchoSocket)],
                                      websocket_max_message_size=MAX_MESSAGE_SIZE)  # as Bokeh's
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(backend)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    record = {"id": "ec0ec0ec", "address": "tcp://127.0.0.1:1", "monitor_address": "", "pids": [os.getpid()],
              "owner_pid": os.getpid(), "n_workers": 0, "tags": [], "started": time.time(), "keys": None,
              "dashboard_address": f"http://127.0.0.1:{port}/", "dashboard_pid": None,
              "control_address": None, "detached": False}
    clusters.write(record)
    try:
        root = ("scaler-jupyter", "dashboard", record["id"])
        response = await fetch(jp_fetch, *root, "headers", headers={"Cookie": "_xsrf=secret; session=secret"})
        seen = {name.lower(): value for name, value in json.loads(response.body).items()}
        assert response.code == 200 and "cookie" not in seen and "authorization" not in seen
        assert seen["host"] == f"127.0.0.1:{port}"

        connection = await jp_ws_fetch(*root, "ws", subprotocols=["bokeh", "a-session-token"],
                                       headers={"Cookie": "session=secret"}, max_message_size=MAX_MESSAGE_SIZE)
        try:
            hello = json.loads(await asyncio.wait_for(connection.read_message(), 10))
            assert hello["offered"] == ["bokeh", "a-session-token"] and connection.selected_subprotocol == "bokeh"
            seen = {name.lower(): value for name, value in hello["headers"].items()}
            assert seen["origin"] == f"http://127.0.0.1:{port}"  # the dashboard's own: it accepts no other
            assert not {"cookie", "authorization"} & set(seen)
            assert proxy.MAX_MESSAGE_SIZE == MAX_MESSAGE_SIZE
            big = bytes(12 * 1024 * 1024)  # over tornado's 10 MiB default, under Bokeh's 20 MiB
            await connection.write_message(big, binary=True)
            assert await asyncio.wait_for(connection.read_message(), 30) == big
        finally:
            connection.close()
    finally:
        clusters.remove(record["id"])
        server.stop()
