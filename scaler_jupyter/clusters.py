"""Cluster files: every local cluster on this machine, where a kernel, the command line and the Jupyter server look.

Each :class:`~scaler_jupyter.LocalCluster` records itself in
``jupyter_runtime_dir()/scaler_jupyter/clusters/<id>.json`` when it starts, rewrites
the file when it scales and removes it when it closes. Files are written atomically
(a temporary file in the same folder, then a rename), so a reader never sees half of
one. A file whose owner or scheduler process is gone (the owner was killed) is stale:
:func:`list_clusters` skips it and deletes it.

A cluster file holds one JSON object:

- ``id`` (str): short and unique, what ``scaler-jupyter stop ID`` and ``%scaler connect ID`` take.
- ``address`` (str): the scheduler, for ``Client(address)``.
- ``monitor_address`` (str): the scheduler's monitor feed.
- ``dashboard_address`` (str or None): the dashboard server's URL; None while there is none.
- ``dashboard_pid`` (int or None): the dashboard server's process, stopped with the cluster.
- ``pids`` (list of int): the scheduler's, then each worker's.
- ``owner_pid`` (int): the process that started the cluster and holds it (a kernel, a script, a supervisor).
- ``n_workers`` (int), ``tags`` (list of str).
- ``started`` (float): seconds since the Unix epoch.
- ``keys`` (str or None): the keys directory the cluster requires.
- ``control_address`` (str or None): where the owner takes requests from other processes (set for
  detached clusters and SSH clusters); ``detached`` (bool): the cluster outlives whoever asked for it.
- ``kind`` (str, absent for local clusters): ``"ssh"`` for an :class:`~scaler_jupyter.SSHCluster`,
  whose ``pids`` is empty (its processes run on other hosts: ``hosts`` lists them as given, and
  ``processes`` each remote process's host, role, name, pid and tether's pid). Its owner holds
  them (they end when it does), so it is live while its owner is, and another process stops it
  by a request to its ``control_address``: its scheduler is ``--protected``, and signalling the
  owner would end a kernel with it.

Detached clusters. :func:`start_detached` (``scaler-jupyter start``, ``%scaler start --keep``)
starts a *supervisor* (``python -m scaler_jupyter supervise``) in a session of its own, so it
survives the process that asked for it. The supervisor runs the ``LocalCluster`` and answers
JSON requests on a REP socket on 127.0.0.1 (its ``control_address``): ``{"scale": N}`` and
``{"stop": true}``; SIGTERM stops it too. The cluster's scheduler and workers die with it, and its
cluster file goes with them. :func:`scale` and :func:`stop` are the API the command line and the
Jupyter server extension use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import zmq

from scaler_jupyter.errors import ClusterError

if TYPE_CHECKING:
    from scaler_jupyter.ssh_cluster import SSHSpec

logger = logging.getLogger(__name__)

STARTUP_SLACK = 2.0  # seconds a recorded process may have started after its record's ``started`` (clock rounding)


def clusters_dir() -> Path:
    """The folder of cluster files (created owner-only if missing)."""
    from jupyter_core.paths import jupyter_runtime_dir

    path = Path(jupyter_runtime_dir()) / "scaler_jupyter" / "clusters"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def new_id() -> str:
    """A fresh cluster id: 8 hex digits."""
    return secrets.token_hex(4)


def write(record: dict) -> None:
    """Record a cluster (or update its record), atomically."""
    folder = clusters_dir()
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{record['id']}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(record, file, indent=1)
        os.replace(temporary, folder / f"{record['id']}.json")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remove(cluster_id: str, log: bool = True) -> None:
    """Delete a cluster's file (and, with ``log``, its supervisor's log) and the keys an SSH cluster made
    for itself; nothing if there is none."""
    folder = clusters_dir()
    shutil.rmtree(folder / f"{cluster_id}.keys", ignore_errors=True)
    for name in (f"{cluster_id}.json", f"{cluster_id}.log")[:2 if log else 1]:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def _alive(pid: int, started: float) -> bool:
    """True if ``pid`` runs and is the process recorded (not a later one that reused the number)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= started + STARTUP_SLACK
    except psutil.Error:
        return False


def list_clusters() -> list[dict]:
    """Every live recorded cluster, oldest first; stale files are deleted on the way."""
    found = []
    for path in clusters_dir().glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # removed meanwhile, or not ours
            continue
        # an SSH cluster's processes run on other hosts: its owner here holds them (see ssh_cluster)
        if _alive(record["owner_pid"], record["started"]) and (record.get("kind") == "ssh"
                                                               or _alive(record["pids"][0], record["started"])):
            found.append(record)
        else:
            logger.info("cluster %s is gone (its processes exited): removing its file", record["id"])
            remove(record["id"])
    return sorted(found, key=lambda record: record["started"])


def find(cluster_id: str) -> dict:
    """The live cluster whose id is ``cluster_id`` (or starts with it, if only one does)."""
    records = list_clusters()
    exact = [record for record in records if record["id"] == cluster_id]
    matches = exact or [record for record in records if record["id"].startswith(cluster_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ClusterError(f"no cluster {cluster_id!r} on this machine: `scaler-jupyter list` shows those there are")
    raise ClusterError(f"{cluster_id!r} names {len(matches)} clusters: give more of the id")


def find_by_address(address: str) -> dict | None:
    """The live recorded cluster whose scheduler is at ``address``, if any."""
    return next((record for record in list_clusters() if record["address"] == address), None)


def table(records: list[dict], now: float, current: str | None = None) -> str:
    """The records as a text table, for ``scaler-jupyter list`` and ``%scaler list`` (``current`` marked ``*``)."""
    if not records:
        return "no clusters on this machine (`scaler-jupyter start` or `%scaler start` starts one)"
    rows = [("ID", "ADDRESS", "WORKERS", "OWNER", "UP")]
    for record in records:
        owner = f"{record['owner_pid']}" + (" (detached)" if record.get("detached") else "")
        rows.append(((record["id"] + " *") if record["id"] == current else record["id"], record["address"],
                     str(record["n_workers"]), owner, _duration(now - record["started"])))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---------------------------------------------------------------------------
# Detached clusters


def start_detached(n_workers: int, tags: tuple[str, ...] = (), keys: str | os.PathLike | None = None,
                   timeout: float = 60.0, ssh: SSHSpec | None = None) -> dict:
    """Start a local cluster that outlives this process; return its record once its workers have joined.

    With ``ssh``, an :class:`~scaler_jupyter.SSHCluster` on those hosts instead, with ``n_workers``
    workers per worker host (it makes its own keys: ``keys`` is for local clusters)."""
    from scaler_jupyter.cluster import read_ready
    from scaler_jupyter.processes import spawn_detached, stop

    cluster_id = new_id()
    ready_r, ready_w = os.pipe()
    args = ["-m", "scaler_jupyter", "supervise", "--id", cluster_id, "-n", str(n_workers),
            "--ready-fd", str(ready_w), "--timeout", str(timeout)]
    if tags:
        args += ["--tags", ",".join(tags)]
    if keys is not None:
        args += ["--keys", str(keys)]
    if ssh is not None:
        args += ssh.arguments()
    log = clusters_dir() / f"{cluster_id}.log"
    supervisor = spawn_detached(args, log, pass_fds=(ready_w,))
    os.close(ready_w)
    try:
        return read_ready(ready_r, supervisor, timeout + 5, "the cluster's supervisor")
    except BaseException as exc:
        stop(supervisor)
        detail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
        remove(cluster_id)
        if isinstance(exc, (TimeoutError, RuntimeError)):
            raise ClusterError(f"the cluster did not start: {exc}" + "".join(f"\n  {line}" for line in detail)) \
                from None
        raise


def _request(record: dict, request: dict, timeout: float) -> dict:
    """Send one request to a detached cluster's supervisor; its reply."""
    if not record.get("control_address"):
        raise ClusterError(f"cluster {record['id']} belongs to process {record['owner_pid']} (a kernel or a script): "
                           "only that process can do this")
    context = zmq.Context.instance()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(record["control_address"])
        socket.send_json(request)
        if not socket.poll(timeout * 1000):
            raise ClusterError(f"the supervisor of cluster {record['id']} (pid {record['owner_pid']}) did not answer "
                               f"within {timeout:g}s")
        reply = socket.recv_json()
    finally:
        socket.close()
    if "error" in reply:
        raise ClusterError(f"cluster {record['id']}: {reply['error']}")
    return reply


def scale(cluster_id: str, n_workers: int, timeout: float = 60.0) -> dict:
    """Ask a detached cluster to run ``n_workers`` workers; its new record once they have joined (or left)."""
    return _request(find(cluster_id), {"scale": n_workers}, timeout)


def stop(cluster_id: str, timeout: float = 30.0) -> dict:
    """Stop a recorded cluster and wait until its processes are gone; return its last record.

    A detached cluster's supervisor is asked; any other cluster's scheduler is told to shut
    down (with its workers), which its owner then notices.
    """
    record = find(cluster_id)
    if record.get("control_address"):
        try:
            _request(record, {"stop": True}, min(timeout, 10.0))
        except ClusterError:  # a supervisor too busy to answer still obeys SIGTERM (an SSH cluster's owner
            if not record.get("detached"):  # may be a kernel: that one is not ended for its cluster)
                raise
            with contextlib.suppress(ProcessLookupError):
                os.kill(record["owner_pid"], signal.SIGTERM)
    else:
        from scaler_jupyter.client import Client

        with Client(record["address"], timeout=min(timeout, 10.0), keys=record["keys"],
                    name="scaler-jupyter-stop") as client:
            client.shutdown_cluster()
        if record.get("dashboard_pid") and _alive(record["dashboard_pid"], record["started"]):
            os.kill(record["dashboard_pid"], signal.SIGTERM)  # its owner may not notice the scheduler's end
    deadline = time.monotonic() + timeout
    pids = [*record["pids"], *filter(None, [record.get("dashboard_pid")])]
    if record.get("detached"):
        pids.append(record["owner_pid"])
    while any(_alive(pid, record["started"]) for pid in pids):
        if time.monotonic() > deadline:
            raise ClusterError(f"cluster {record['id']} did not stop within {timeout:g}s (pids {pids})")
        time.sleep(0.05)
    if not record.get("control_address"):
        remove(record["id"])  # its owner may not notice before the next listing
    return record


def supervise(cluster_id: str, n_workers: int, tags: tuple[str, ...], ready_fd: int, keys: str | None = None,
              timeout: float = 60.0, ssh: SSHSpec | None = None) -> None:
    """Run a detached cluster until asked to stop (``scaler-jupyter supervise``, started by :func:`start_detached`)."""
    from scaler_jupyter.cluster import LocalCluster

    def interrupt(*_) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    context = zmq.Context()
    control = context.socket(zmq.REP)
    control.setsockopt(zmq.LINGER, 0)
    port = control.bind_to_random_port("tcp://127.0.0.1")
    cluster = None
    try:
        if ssh is None:
            cluster = LocalCluster(n_workers, tags=tags, keys=keys, timeout=timeout, cluster_id=cluster_id,
                                   control_address=f"tcp://127.0.0.1:{port}", dashboard=True)
        else:
            cluster = ssh.cluster(n_workers, tags=tags, timeout=timeout, cluster_id=cluster_id,
                                  control_address=f"tcp://127.0.0.1:{port}")
        os.write(ready_fd, json.dumps(cluster.record()).encode() + b"\n")
        os.close(ready_fd)
        while cluster.running():
            if not control.poll(1000):
                continue
            request = control.recv_json()
            if request.get("stop"):
                control.send_json(cluster.record())
                break
            try:
                cluster.scale(int(request["scale"]))
                control.send_json(cluster.record())
            except (KeyError, TypeError, ValueError, TimeoutError, RuntimeError, ClusterError) as exc:
                control.send_json({"error": str(exc)})
    except KeyboardInterrupt:
        pass
    finally:
        if cluster is not None:
            cluster.close()
        control.close()
        context.term()
        remove(cluster_id, log=cluster is not None)  # a cluster that failed to start: its log says why
