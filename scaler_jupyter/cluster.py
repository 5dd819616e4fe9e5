"""LocalCluster: a scheduler and workers as child processes of this one, on 127.0.0.1."""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import time
import weakref
from collections.abc import Callable

from scaler_jupyter import monitor
from scaler_jupyter.processes import spawn, stop
from scaler_jupyter.security import ClusterKeys

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
    that every setting has one spelling.
    """

    def __init__(self, n_workers: int | None = None, processors_per_worker: int = 1, tags: tuple[str, ...] = (),
                 address: str | None = None, scheduler_args: tuple[str, ...] = (), worker_args: tuple[str, ...] = (),
                 timeout: float = 30.0, keys: str | os.PathLike | None = None) -> None:
        self.processors_per_worker = processors_per_worker
        self.tags = tuple(tags)
        self.timeout = timeout
        # checked here, so that a missing key file is an error in this process, not a child's log line
        self.keys: str | None = (None if keys is None else
                                 str(ClusterKeys(keys).check_scheduler().check_client().directory))
        keys_args = ("--keys", self.keys) if self.keys else ()
        self._worker_args = (*keys_args, *worker_args)
        self._workers: list[subprocess.Popen] = []
        ready_r, ready_w = os.pipe()
        self._scheduler = spawn(["-m", "scaler_jupyter", "scheduler", address or "tcp://127.0.0.1:0",
                                 "--ready-fd", str(ready_w), *keys_args, *scheduler_args], pass_fds=(ready_w,))
        os.close(ready_w)
        _live.add(self)
        try:
            info = _read_ready(ready_r, self._scheduler, timeout)
        except BaseException:
            self.close()
            raise
        self.address: str = info["address"]
        self.monitor_address: str = info["monitor_address"]  # the scheduler's monitor feed (a PUB socket)
        try:
            self.scale(os.cpu_count() or 1 if n_workers is None else n_workers)
        except BaseException:  # workers that cannot join must not leave the scheduler running
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """The process ids of the scheduler and of each worker."""
        return [self._scheduler.pid, *(w.pid for w in self._workers)]

    @property
    def n_workers(self) -> int:
        return len(self._workers)

    def scale(self, n: int, wait: bool = True) -> None:
        """Run ``n`` workers: start new ones, or stop the newest (their queued tasks go to the others).

        With ``wait``, return once the scheduler counts exactly ``n`` workers."""
        while len(self._workers) > n:
            stop(self._workers.pop())
        while len(self._workers) < n:
            args = ["-m", "scaler_jupyter", "worker", self.address, "--processors", str(self.processors_per_worker),
                    "--name", f"local-{len(self._workers)}-{os.getpid()}"]
            if self.tags:
                args += ["--tags", ",".join(self.tags)]
            self._workers.append(spawn([*args, *self._worker_args]))
        if wait:
            self._wait_for(lambda count: count == n, f"exactly {n}")

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
        while self._workers:
            stop(self._workers.pop())
        stop(self._scheduler)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalCluster {getattr(self, 'address', '?')} workers={len(self._workers)}>"


def _read_ready(fd: int, process: subprocess.Popen, timeout: float) -> dict:
    """Wait for the scheduler to write its address on ``fd``."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the scheduler did not start within {timeout:.0f}s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"the scheduler exited at start (code {process.wait()}); see its log above")
                data += chunk
    finally:
        os.close(fd)
    return json.loads(data)
