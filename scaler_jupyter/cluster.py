"""LocalCluster: a scheduler and workers as child processes of this one, on 127.0.0.1."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable

from scaler_jupyter import clusters, logging_config, monitor
from scaler_jupyter.processes import spawn, stop
from scaler_jupyter.protocol import unix_link
from scaler_jupyter.security import ClusterKeys

logger = logging.getLogger(__name__)

_live: weakref.WeakSet = weakref.WeakSet()
_DEATH_CHECK = 0.1  # seconds between looks at the worker processes while waiting for them to join


@atexit.register
def _close_all() -> None:
    for cluster in list(_live):
        cluster.close()


class LocalCluster:
    """A scheduler and ``n_workers`` workers on this machine, stopped by :meth:`close` or with this process.

    ``address`` defaults to a free port on 127.0.0.1. ``keys`` is a directory written
    by ``scaler-jupyter keys``: the scheduler then admits only peers holding its keys
    (``Client(cluster.address, keys=...)``). ``scheduler_args`` and ``worker_args``
    are extra command-line arguments (see ``scaler-jupyter scheduler --help``), so
    that every setting has one spelling. ``log_level`` is the level of its processes' logs
    on stderr (default: ``$SCALER_JUPYTER_LOG_LEVEL``, else WARNING: see
    :mod:`scaler_jupyter.logging_config`).

    It records itself in a cluster file (see :mod:`scaler_jupyter.clusters`) under
    ``id`` (default: a fresh one), so ``scaler-jupyter list`` and other kernels see
    it. ``control_address`` is for a detached cluster's supervisor: where it takes
    requests from other processes.

    With ``dashboard``, it also runs ``scaler-jupyter dashboard`` (its live panels over HTTP, on a
    free port of 127.0.0.1; the URL is ``dashboard_address`` and goes into the cluster file). Off by
    default here: a cluster made in a script or a test is short-lived and unwatched, and the
    dashboard's process costs a Python start-up with Bokeh on the machine's cores. Clusters started
    for people to watch (``scaler-jupyter start``, ``%scaler start``, the JupyterLab sidebar) have one.

    Its links run over a Unix socket without ZeroMQ (``local_address``, ``unix://`` in a private
    temporary folder; ``protocol/unix_link.py``) rather than TCP: its workers connect there, and so
    does a ``Client`` of this process given ``address`` (see :func:`local_address_of`). ``address``
    stays the TCP one, for everyone else. A cluster with ``keys`` has no local link: the Curve
    handshake is what admits its peers, on every path.
    """

    def __init__(self, n_workers: int | None = None, processors_per_worker: int = 1, tags: tuple[str, ...] = (),
                 address: str | None = None, scheduler_args: tuple[str, ...] = (), worker_args: tuple[str, ...] = (),
                 timeout: float = 30.0, keys: str | os.PathLike | None = None,
                 log_level: str | int | None = None, cluster_id: str | None = None,
                 control_address: str | None = None, dashboard: bool = False) -> None:
        self.id: str = cluster_id or clusters.new_id()
        self.dashboard_address: str | None = None
        self._dashboard: subprocess.Popen | None = None
        self.control_address = control_address
        self.started = time.time()
        self.processors_per_worker = processors_per_worker
        self.tags = tuple(tags)
        self.timeout = timeout
        # checked here, so that a missing key file is an error in this process, not a child's log line
        self.keys: str | None = (None if keys is None else
                                 str(ClusterKeys(keys).check_scheduler().check_client().directory))
        common_args = (*(("--keys", self.keys) if self.keys else ()),
                       "--log-level", logging_config.level(log_level, default="WARNING"))
        self._worker_args = (*common_args, *worker_args)
        self._workers: list[subprocess.Popen] = []
        self._scheduler: subprocess.Popen | None = None
        self._private_dir: str | None = None  # holds the local address's socket file
        self.local_address: str | None = None
        n_workers = os.cpu_count() or 1 if n_workers is None else n_workers
        for attempt in (1, 2):
            try:
                info = self._start(address, n_workers, (*common_args, *scheduler_args))
                break
            except RuntimeError:  # the scheduler exited at start: with a port chosen here, it may have been taken
                self.close()
                if attempt == 2 or address is not None:
                    raise
            except BaseException:
                self.close()
                raise
        self.monitor_address: str = info["monitor_address"]  # the scheduler's monitor feed (a PUB socket)
        dashboard_ready = self._spawn_dashboard() if dashboard else None  # starts while the workers join
        try:
            self.scale(n_workers)
        except BaseException:  # workers that cannot join must not leave the scheduler running
            if dashboard_ready is not None:
                os.close(dashboard_ready)
            self.close()
            raise
        if dashboard_ready is not None:
            self._dashboard_started(dashboard_ready)

    def _spawn_dashboard(self) -> int:
        """Start the dashboard's process; the descriptor on which it says where it listens."""
        ready_r, ready_w = os.pipe()
        self._dashboard = spawn(["-m", "scaler_jupyter", "dashboard", self.address, "--port", "0",
                                 "--ready-fd", str(ready_w), *(("--keys", self.keys) if self.keys else ()),
                                 "--log-level", "WARNING"], pass_fds=(ready_w,))
        os.close(ready_w)
        return ready_r

    def _dashboard_started(self, ready_fd: int) -> None:
        """Record the dashboard's address once it listens; a dashboard that fails leaves the cluster working."""
        try:
            self.dashboard_address = read_ready(ready_fd, self._dashboard, self.timeout, "the dashboard")["address"]
        except (TimeoutError, RuntimeError) as exc:
            logger.warning("cluster %s runs without its dashboard: %s", self.id, exc)
            stop(self._dashboard)
            self._dashboard = None
            return
        self._write_record()

    def _start(self, address: str | None, n_workers: int, scheduler_args: tuple[str, ...]) -> dict:
        """Start the scheduler, and the workers while it starts; what the scheduler says once it listens.

        With no ``address``, a free port is chosen here rather than by the scheduler, so that
        the workers (whose start costs as much as the scheduler's) need not wait for it.
        """
        if address is None:
            address = f"tcp://127.0.0.1:{_free_port()}"
            if "--monitor-address" not in scheduler_args:  # port + 1, the default, may be taken
                scheduler_args = ("--monitor-address", "tcp://127.0.0.1:0", *scheduler_args)
        if self.keys is None:  # a keyed cluster admits key holders only: its links stay on Curve, over TCP
            if self._private_dir is None:
                self._private_dir = tempfile.mkdtemp(prefix="scaler-jupyter-")  # mode 0700: this user's only
            self.local_address = f"unix://{self._private_dir}/scheduler"
            scheduler_args = ("--local-address", self.local_address, *scheduler_args)
        _live.add(self)
        ready_r, ready_w = os.pipe()
        self._scheduler = spawn(["-m", "scaler_jupyter", "scheduler", address, "--ready-fd", str(ready_w),
                                 *scheduler_args], pass_fds=(ready_w,))
        os.close(ready_w)
        self.address: str = address
        if not address.endswith(":0"):
            self._spawn_workers(n_workers)
        info = read_ready(ready_r, self._scheduler, self.timeout, "the scheduler")
        self.address = info["address"]
        return info

    @property
    def pids(self) -> list[int]:
        """The process ids of the scheduler and of each worker."""
        return [self._scheduler.pid, *(w.pid for w in self._workers)]

    @property
    def n_workers(self) -> int:
        return len(self._workers)

    def running(self) -> bool:
        """True while the scheduler process runs."""
        return self._scheduler.poll() is None

    def record(self) -> dict:
        """What its cluster file says (the keys are listed in :mod:`scaler_jupyter.clusters`)."""
        return {"id": self.id, "address": self.address, "monitor_address": self.monitor_address,
                "dashboard_address": self.dashboard_address,
                "dashboard_pid": None if self._dashboard is None else self._dashboard.pid,
                "pids": self.pids, "owner_pid": os.getpid(),
                "n_workers": self.n_workers, "tags": list(self.tags), "started": self.started, "keys": self.keys,
                "control_address": self.control_address, "detached": self.control_address is not None,
                "local_address": self.local_address, "host": socket.gethostname()}

    def _write_record(self) -> None:
        try:
            clusters.write(self.record())
        except OSError as exc:  # the cluster works without its file; only other processes miss it
            logger.warning("could not write the cluster file of %s: %s", self.id, exc)

    def scale(self, n: int, wait: bool = True) -> None:
        """Run ``n`` workers: start new ones, or stop the newest (their queued tasks go to the others).

        With ``wait``, return once the scheduler counts exactly ``n`` workers."""
        if n < 0:
            raise ValueError(f"a cluster runs 0 or more workers, not {n}")
        while len(self._workers) > n:
            stop(self._workers.pop())
        self._spawn_workers(n)
        self._write_record()
        if wait:
            self._wait_for(lambda count: count == n, f"exactly {n}")

    def _spawn_workers(self, n: int) -> None:
        while len(self._workers) < n:
            args = ["-m", "scaler_jupyter", "worker", self.local_address or self.address, "--processors",
                    str(self.processors_per_worker), "--name", f"local-{len(self._workers)}-{os.getpid()}"]
            if self.tags:
                args += ["--tags", ",".join(self.tags)]
            self._workers.append(spawn([*args, *self._worker_args]))

    def wait_for_workers(self, n: int = 1, timeout: float | None = None) -> None:
        """Block until at least ``n`` workers are connected to the scheduler, as ``Client.wait_for_workers``.

        Raises ``TimeoutError`` after ``timeout`` seconds (default: the cluster's ``timeout``), and
        ``RuntimeError`` at once if one of this cluster's worker processes exited.
        """
        self._wait_for(lambda count: count >= n, f"at least {n}", timeout)

    def _wait_for(self, enough: Callable[[int], bool], what: str, timeout: float | None = None) -> None:
        """Watch the monitor feed until ``enough(number of workers)``; the scheduler publishes at once
        when a worker joins or leaves, so this takes no polling."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with monitor.subscribe(self.address, self.keys, timeout, monitor_address=self.monitor_address) as feed:
            while True:
                snapshot = feed.latest(min(_DEATH_CHECK, max(0.0, deadline - time.monotonic())))
                if snapshot is not None and enough(len(snapshot["workers"])):
                    return
                dead = [w.pid for w in self._workers if w.poll() is not None]
                if dead:
                    raise RuntimeError(f"worker processes {dead} exited at start; see their log above")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{what} workers did not join {self.address} within {timeout:g}s")

    def close(self) -> None:
        """Stop every worker, then the scheduler."""
        _live.discard(self)
        if self._dashboard is not None:
            stop(self._dashboard)
        while self._workers:
            stop(self._workers.pop())
        if self._scheduler is not None:
            stop(self._scheduler)
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None
        with contextlib.suppress(OSError):
            clusters.remove(self.id)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalCluster {getattr(self, 'address', '?')} workers={len(self._workers)}>"


def local_address_of(address: str) -> str:
    """The address to reach the scheduler at ``address`` by: its local cluster's Unix socket when that
    cluster runs from this process, or when its cluster file says it runs on this host (a kernel joining a
    cluster that ``%scaler start`` or ``scaler-jupyter start`` made); else ``address`` itself."""
    for cluster in list(_live):
        if cluster.address == address and cluster.local_address is not None:
            return cluster.local_address
    if address.startswith("tcp://"):
        host = socket.gethostname()
        for record in clusters.list_clusters():
            local = record.get("local_address")
            if record["address"] == address and local and record.get("host") == host \
                    and os.path.exists(unix_link.path_of(local)):
                return local
    return address


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_ready(fd: int, process: subprocess.Popen, timeout: float, what: str) -> dict:
    """Wait for a child (``what``, for messages) to write one JSON line on ``fd``: what it says once it is ready."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what} did not start within {timeout:.0f}s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"{what} exited at start (code {process.wait()}); see its log")
                data += chunk
    finally:
        os.close(fd)
    return json.loads(data)
