"""The clusters REST handlers: thin async shells around :mod:`scaler_jupyter.clusters`, run in a thread pool."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import psutil
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from scaler_jupyter import clusters, monitor
from scaler_jupyter.errors import ClusterError, ScalerJupyterError
from scaler_jupyter.server_extension import POOL_SETTING, api

AUTH_RESOURCE = "scaler_jupyter"  # what an Authorizer is asked about (read: GET; write: POST, PATCH, DELETE)
SNAPSHOT_TIMEOUT = 2.0  # seconds a scheduler gets to answer a listing


def _ancestors(pid: int) -> list[int]:
    try:
        return [parent.pid for parent in psutil.Process(pid).parents()]
    except psutil.Error:
        return []


def _describe(record: dict, base_url: str, kernel_pids: dict[int, dict]) -> dict:
    """The API's model of one recorded cluster, asking its scheduler (blocking: run it in the pool)."""
    snapshot, error = None, None
    try:
        snapshot = monitor.snapshot(record["address"], record.get("keys"), timeout=SNAPSHOT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, ScalerJupyterError) as exc:  # listed anyway, with why
        error = str(exc).splitlines()[0]
    return api.cluster_model(record, snapshot, api.connected_kernels(snapshot, kernel_pids, _ancestors), base_url,
                             error)


def _find(cluster_id: str) -> dict | None:
    """The live cluster whose id is exactly ``cluster_id`` (the API takes no abbreviations)."""
    return next((record for record in clusters.list_clusters() if record["id"] == cluster_id), None)


class _ClustersBase(APIHandler):
    auth_resource = AUTH_RESOURCE

    async def _run(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in the extension's thread pool: the event loop never blocks."""
        pool = self.settings[POOL_SETTING]
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(function, *args, **kwargs))

    async def _kernel_pids(self) -> dict[int, dict]:
        """This server's kernels by process id, each ``{"id", "name", "path"}`` (path: its notebook, if any)."""
        paths = {}
        for session in await self.session_manager.list_sessions():
            paths[session["kernel"]["id"]] = session.get("path")
        found = {}
        for kernel_id in self.kernel_manager.list_kernel_ids():
            manager = self.kernel_manager.get_kernel(kernel_id)
            pid = getattr(getattr(manager, "provisioner", None), "pid", None)
            if pid is not None:
                found[pid] = {"id": kernel_id, "name": manager.kernel_name, "path": paths.get(kernel_id)}
        return found

    async def _model(self, record: dict) -> dict:
        return await self._run(_describe, record, self.base_url, await self._kernel_pids())

    async def _existing(self, cluster_id: str) -> dict:
        record = await self._run(_find, cluster_id)
        if record is None:
            raise web.HTTPError(404, f"no cluster {cluster_id!r} on this machine")
        return record

    def _parse(self, parse: Callable[[bytes], Any]) -> Any:
        try:
            return parse(self.request.body)
        except api.BadRequest as exc:
            raise web.HTTPError(400, str(exc)) from None

    def _reply(self, status: int, model: dict | None = None) -> None:
        self.set_status(status)
        self.finish(None if model is None else model)


class ClustersHandler(_ClustersBase):
    """``GET``: every recorded cluster; ``POST {"n_workers", "tags"}``: start a detached one."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        records = await self._run(clusters.list_clusters)
        kernel_pids = await self._kernel_pids()
        models = await asyncio.gather(*(self._run(_describe, r, self.base_url, kernel_pids) for r in records))
        self._reply(200, {"clusters": list(models)})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        n, worker_tags = self._parse(api.parse_start)
        try:
            record = await self._run(clusters.start_detached, n, worker_tags)
        except ClusterError as exc:
            raise web.HTTPError(500, str(exc).splitlines()[0]) from None
        self._reply(201, await self._model(record))


class ClusterHandler(_ClustersBase):
    """``GET``, ``PATCH {"n_workers"}`` (scale) and ``DELETE`` (stop) one cluster."""

    @web.authenticated
    @authorized
    async def get(self, cluster_id: str) -> None:
        self._reply(200, await self._model(await self._existing(cluster_id)))

    @web.authenticated
    @authorized
    async def patch(self, cluster_id: str) -> None:
        n = self._parse(api.parse_scale)
        record = await self._existing(cluster_id)
        if not record.get("control_address"):
            raise web.HTTPError(409, f"cluster {cluster_id} belongs to process {record['owner_pid']} (a kernel or "
                                     "a script): only that process can scale it")
        try:
            record = await self._run(clusters.scale, cluster_id, n)
        except ClusterError as exc:
            raise web.HTTPError(409, str(exc).splitlines()[0]) from None
        self._reply(200, await self._model(record))

    @web.authenticated
    @authorized
    async def delete(self, cluster_id: str) -> None:
        await self._existing(cluster_id)
        try:
            await self._run(clusters.stop, cluster_id)
        except ClusterError as exc:
            raise web.HTTPError(409, str(exc).splitlines()[0]) from None
        self._reply(204)
