"""Test-side helpers: bounded waits, process bookkeeping, the monitor feed and a Dask cluster; and
:func:`record_run`, which tasks call on workers."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

import psutil
import zmq

from scaler_jupyter import Client
from scaler_jupyter.protocol.feed import TOPIC
from scaler_jupyter.security import ClusterKeys, HandshakeWatch


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02):
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout`` seconds.

    For conditions no API lets us block on (a file appears, a process exits, the
    scheduler's snapshot changes); every call is bounded.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True if ``pid`` is a running (not zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def alive_children(process: psutil.Process | None = None) -> list[psutil.Process]:
    """Every live descendant of ``process`` (default: this one), zombies excluded."""
    process = process or psutil.Process()
    found = []
    for child in process.children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid}: {' '.join(process.cmdline())}")
        except psutil.Error:
            lines.append(f"{process.pid}: (gone)")
    return "\n".join(lines)


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for ``processes`` to exit; return those still alive (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(process)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL processes this test run started (by pid, never by name) and reap what we can."""
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=5)


def processors_of(worker_pid: int) -> list[int]:
    """The pids of a worker agent's processor processes."""
    return [p.pid for p in psutil.Process(worker_pid).children() if p.status() != psutil.STATUS_ZOMBIE]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def touch(path: str | os.PathLike) -> None:
    with open(path, "w"):
        pass


@contextlib.contextmanager
def connect(address: str, **kwargs) -> Iterator[Client]:
    """A Client that cancels whatever it left running when the block ends, so a failing test never hangs."""
    client = Client(address, **kwargs)
    try:
        yield client
    finally:
        client.shutdown(cancel_futures=True)


def held_tasks(client: Client) -> int:
    """Tasks the scheduler holds: waiting for a worker or in a worker's queue."""
    tasks = client.status()["tasks"]
    return tasks["pending"] + tasks["assigned"]


def record_run(log: str, i: int) -> None:
    """On a worker: append "i agent-pid" to ``log`` (a processor's parent is its worker's agent).

    O_APPEND keeps lines whole when several processes write at once, so a test can count
    where and how often each index ran.
    """
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i} {os.getppid()}\n".encode())
    finally:
        os.close(fd)


def children_pids() -> set[int]:
    """Pids of this test run's live descendants."""
    return {child.pid for child in alive_children()}


def stop_resource_tracker() -> None:
    """Stop the resource tracker that spawned pools (ProcessPoolExecutor, Dask's nannies) start in this process.

    It lives as long as its parent unless told to stop, and the suite requires that no child
    outlives its module. It is started again if a later test needs it.
    """
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    stop = getattr(tracker, "_stop", None)
    if stop is not None:
        stop()
        return
    if getattr(tracker, "_fd", None) is not None:  # Pythons without _stop: what it does
        os.close(tracker._fd)
        os.waitpid(tracker._pid, 0)
        tracker._fd = tracker._pid = None


@contextlib.contextmanager
def dask_local_cluster(n_workers: int = 2):
    """A Dask ``LocalCluster`` of single-threaded worker processes on 127.0.0.1, without a dashboard."""
    import logging
    import warnings

    import distributed

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, host="127.0.0.1")
    try:
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def subscribed(address: str) -> Iterator[zmq.Socket]:
    """A SUB socket on a scheduler's monitor feed."""
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, TOPIC)
    socket.connect(address)
    try:
        yield socket
    finally:
        socket.close()
        context.term()


@contextlib.contextmanager
def raw_peer(address: str, keys: ClusterKeys | None) -> Iterator[tuple[zmq.Socket, HandshakeWatch]]:
    """A DEALER speaking the protocol directly, as any program could, and a watch on its handshakes."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.connect(dealer)
    watch = HandshakeWatch(dealer, keyed=keys is not None)
    dealer.connect(address)
    try:
        yield dealer, watch
    finally:
        watch.close()
        dealer.close()
        context.term()
