"""The clusters REST API of the jupyter-server extension, in a real server under the base_url ``/a%40b/``,
with real clusters: start, list, scale, stop, and every request it must refuse without starting anything."""

from __future__ import annotations

import asyncio
import json
import urllib.parse

import pytest
import tornado.httpclient

from scaler_jupyter import LocalCluster, clusters
from scaler_jupyter.server_extension import api
from tests.helpers import alive_children, wait_gone

API = ("scaler-jupyter", "api", "clusters")


async def call(jp_fetch, *parts, method="GET", body=None, **kwargs):
    """(status, its JSON body or None), whatever the status."""
    try:
        response = await jp_fetch(*parts, method=method, body=None if body is None else json.dumps(body)
                                  if not isinstance(body, (str, bytes)) else body, **kwargs)
    except tornado.httpclient.HTTPClientError as exc:
        response = exc.response
    is_json = response.headers.get("Content-Type", "").startswith("application/json") and response.body
    return response.code, json.loads(response.body) if is_json else None


async def test_unauthenticated_requests_are_refused(jp_fetch):
    for method, parts, body in (("GET", API, None), ("POST", API, {"n_workers": 1}),
                                ("GET", (*API, "abc"), None), ("PATCH", (*API, "abc"), {"n_workers": 1}),
                                ("DELETE", (*API, "abc"), None),
                                ("GET", ("scaler-jupyter", "dashboard", "abc", "index.json"), None)):
        status, _ = await call(jp_fetch, *parts, method=method, body=body, headers={"Authorization": ""})
        assert status == 403, (method, parts)
    assert clusters.list_clusters() == []


@pytest.mark.parametrize("body, message", [
    ("{not json", "not valid JSON"),
    ([1, 2], "JSON object"),
    ({}, "missing field"),
    ({"n_workers": -1}, "from 0 to"),
    ({"n_workers": 10**9}, "from 0 to"),
    ({"n_workers": "2"}, "must be an integer"),
    ({"n_workers": 2.5}, "must be an integer"),
    ({"n_workers": True}, "must be an integer"),
    ({"n_workers": 1, "workers": 3}, "unknown field"),
    ({"n_workers": 1, "tags": "gpu"}, "tags must be a list"),
    ({"n_workers": 1, "tags": ["a,b"]}, "is not a word"),
])
async def test_a_bad_start_request_is_a_400_and_starts_nothing(jp_fetch, body, message):
    before = alive_children()
    status, reply = await call(jp_fetch, *API, method="POST", body=body)
    assert status == 400
    assert message in reply["message"] and "\n" not in reply["message"]
    assert clusters.list_clusters() == []
    assert alive_children() == before


async def test_an_unknown_id_is_a_404(jp_fetch):
    for method, body in (("GET", None), ("PATCH", {"n_workers": 1}), ("DELETE", None)):
        status, reply = await call(jp_fetch, *API, "0123abcd", method=method, body=body)
        assert status == 404 and "0123abcd" in reply["message"], method
    status, _ = await call(jp_fetch, "scaler-jupyter", "dashboard", "0123abcd", "index.json")
    assert status == 404


async def test_start_list_scale_and_stop_a_cluster(jp_fetch, jp_base_url):
    status, started = await call(jp_fetch, *API, method="POST", body={"n_workers": 1, "tags": ["lab"]})
    assert status == 201
    cluster_id = started["id"]
    try:
        assert started["n_workers"] == 1 and len(started["workers"]) == 1 and started["tags"] == ["lab"]
        assert set(started["workers"][0]) == {"name", "cpu", "memory", "queued", "running"}
        assert "pending" in started["tasks"] and started["detached"] is True
        dashboard = started["dashboard"]
        assert dashboard["url"] == f"{jp_base_url}scaler-jupyter/dashboard/{cluster_id}/"
        assert [panel["name"] for panel in dashboard["panels"]][:2] == ["workers", "queues"]

        status, listing = await call(jp_fetch, *API)
        assert status == 200 and [c["id"] for c in listing["clusters"]] == [cluster_id]

        status, bad = await call(jp_fetch, *API, cluster_id, method="PATCH", body={"n_workers": -3})
        assert status == 400 and "from 0 to" in bad["message"]
        status, scaled = await call(jp_fetch, *API, cluster_id, method="PATCH", body={"n_workers": 2})
        assert status == 200 and scaled["n_workers"] == 2 and len(scaled["workers"]) == 2
        status, again = await call(jp_fetch, *API, cluster_id)
        assert status == 200 and again["n_workers"] == 2
    finally:
        record = clusters.find(cluster_id)
        status, _ = await call(jp_fetch, *API, cluster_id, method="DELETE")
    assert status == 204
    assert clusters.list_clusters() == []
    pids = [*record["pids"], record["owner_pid"], record["dashboard_pid"]]
    assert wait_gone([p for p in alive_children() if p.pid in pids], 10) == []
    status, _ = await call(jp_fetch, *API, cluster_id)
    assert status == 404


async def test_a_kernels_cluster_is_listed_and_cannot_be_scaled_by_the_api(jp_fetch):
    with LocalCluster(n_workers=1) as cluster:
        status, listing = await call(jp_fetch, *API)
        assert status == 200
        (model,) = listing["clusters"]
        assert model["id"] == cluster.id and model["dashboard"] is None and model["detached"] is False
        status, reply = await call(jp_fetch, *API, cluster.id, method="PATCH", body={"n_workers": 2})
        assert status == 409 and str(cluster.record()["owner_pid"]) in reply["message"]


def test_connected_kernels_are_found_by_process_id():
    snapshot = {"clients": [{"pid": 10}, {"pid": 20}, {"pid": 30}]}
    kernels = {1: {"id": "k1"}, 2: {"id": "k2"}}
    parents = {10: [1], 20: [5, 2], 30: [7]}
    assert api.connected_kernels(snapshot, kernels, parents.__getitem__) == [{"id": "k1"}, {"id": "k2"}]
    assert api.connected_kernels(None, kernels, parents.__getitem__) == []


def test_the_dashboard_url_is_under_the_base_url():
    record = {"id": "ab12cd34", "address": "tcp://127.0.0.1:1", "dashboard_address": "http://127.0.0.1:2/",
              "n_workers": 0, "started": 0.0, "owner_pid": 1}
    model = api.cluster_model(record, None, [], "/a%40b/")
    assert model["dashboard"]["url"] == "/a%40b/scaler-jupyter/dashboard/ab12cd34/"
    assert urllib.parse.unquote(model["dashboard"]["url"]).startswith("/a@b/")
    assert model["workers"] == [] and model["tasks"] == {}


async def test_starting_a_cluster_leaves_the_server_answering(jp_fetch):
    """A start runs in the extension's threads: requests made meanwhile are answered before it ends."""
    starting = asyncio.ensure_future(call(jp_fetch, *API, method="POST", body={"n_workers": 1}))
    try:
        status, _ = await call(jp_fetch, "api", "status")
        assert status == 200 and not starting.done()
    finally:
        status, started = await starting
    assert status == 201
    status, _ = await call(jp_fetch, *API, started["id"], method="DELETE")
    assert status == 204 and clusters.list_clusters() == []


async def test_a_kernel_that_connects_is_listed_with_its_cluster(jp_fetch, jp_serverapp):
    """Found by the kernel's process id among the scheduler's clients; the kernel is driven here as a user
    would, the extension never runs code in it."""
    with LocalCluster(n_workers=0) as cluster:
        status, kernel = await call(jp_fetch, "api", "kernels", method="POST", body={"name": "python3"})
        assert status == 201
        manager = jp_serverapp.kernel_manager.get_kernel(kernel["id"])
        client = manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
            reply = await client.execute_interactive(
                f"from scaler_jupyter import Client\nclient = Client({cluster.address!r})", timeout=60)
            assert reply["content"]["status"] == "ok"
            status, model = await call(jp_fetch, *API, cluster.id)
            assert status == 200
            assert [k["id"] for k in model["kernels"]] == [kernel["id"]]
            assert model["kernels"][0]["name"] == "python3"
        finally:
            client.stop_channels()
            await jp_serverapp.kernel_manager.shutdown_kernel(kernel["id"], now=True)
