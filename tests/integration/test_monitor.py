"""The monitor feed and ``scaler-jupyter top`` against a live LocalCluster.

The feed publishes a snapshot to a new subscriber at once and then every
``--monitor-interval``, so every wait here is for an event, bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from scaler_jupyter import LocalCluster, monitor
from scaler_jupyter.processes import spawn
from scaler_jupyter.protocol.feed import decode_snapshot
from scaler_jupyter.scheduler.monitor import SNAPSHOT_VERSION
from scaler_jupyter.scheduler.server import MonitorFeed
from scaler_jupyter.scheduler.state import SchedulerState
from tests.helpers import free_port, subscribed

WAIT = 10.0  # seconds any one event may take


def next_snapshot(socket: zmq.Socket, timeout: float = WAIT) -> dict:
    assert socket.poll(timeout * 1000), f"no snapshot on the feed within {timeout:g}s"
    snapshot = decode_snapshot(socket.recv_multipart())
    assert snapshot is not None, "the feed sent something that is not a snapshot"
    return snapshot


def key_tree(value) -> object:
    """The shape of a snapshot: its keys, nested, with one element standing for each list."""
    if isinstance(value, dict):
        return {key: key_tree(item) for key, item in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [key_tree(value[0])]
    return None


def test_the_feed_delivers_snapshots_with_every_worker(cluster):
    with subscribed(cluster.monitor_address) as feed:
        snapshot = next_snapshot(feed)
        while len(snapshot["workers"]) != cluster.n_workers:  # bounded: each wait is, and workers are up already
            snapshot = next_snapshot(feed)
    assert snapshot["version"] == SNAPSHOT_VERSION
    assert snapshot["scheduler"]["address"] == cluster.address
    assert snapshot["scheduler"]["monitor_address"] == cluster.monitor_address
    assert snapshot["graphs"] == []


def test_client_status_returns_the_feed_s_snapshot_format(cluster, client):
    with subscribed(cluster.monitor_address) as feed:
        published = next_snapshot(feed)
    status = client.status()
    assert key_tree(status) == key_tree(published)
    assert {w["pid"] for w in status["workers"]} == {w["pid"] for w in published["workers"]}


def test_the_feed_follows_the_interval_and_a_given_address():
    address = f"tcp://127.0.0.1:{free_port()}"
    with LocalCluster(n_workers=0, scheduler_args=("--monitor-address", address, "--monitor-interval", "0.05"),
                      timeout=30) as local:
        assert local.monitor_address == address
        with subscribed(address) as feed:
            next_snapshot(feed)  # the one a new subscriber gets at once
            start = time.monotonic()
            times = [next_snapshot(feed)["time"] for _ in range(5)]
            elapsed = time.monotonic() - start
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.03 < gap < 1.0 for gap in gaps), gaps
    assert elapsed < 2.0


# ---------------------------------------------------------------------------
# scaler_jupyter.monitor: the one way to watch a cluster


def test_snapshot_asks_the_scheduler_once(cluster):
    snapshot = monitor.snapshot(cluster.address, timeout=WAIT)
    assert snapshot["version"] == SNAPSHOT_VERSION
    assert len(snapshot["workers"]) == cluster.n_workers
    assert snapshot["clients"] == []  # asking does not join the cluster as a client


def test_subscribe_has_a_snapshot_at_once_then_follows_the_feed(cluster):
    with monitor.subscribe(cluster.address, timeout=WAIT) as feed:
        assert feed.monitor_address == cluster.monitor_address
        first = feed.latest()  # the scheduler's answer: no waiting
        assert first is not None and len(first["workers"]) == cluster.n_workers
        published = next(iter(feed))  # the one the feed sends a new subscriber
        assert published["time"] >= first["time"]
        assert key_tree(published) == key_tree(first)
        assert isinstance(feed.fileno(), int)


def test_a_worker_joining_or_leaving_is_published_at_once():
    # an interval of an hour: any snapshot after the first comes from a change of workers
    with LocalCluster(n_workers=0, scheduler_args=("--monitor-interval", "3600"), timeout=30) as local, \
            monitor.subscribe(local.address, timeout=WAIT) as feed:
        assert feed.latest()["workers"] == []
        local.scale(1, wait=False)
        snapshot = feed.latest(WAIT)
        while snapshot is not None and len(snapshot["workers"]) != 1:
            snapshot = feed.latest(WAIT)
        assert snapshot is not None, "no snapshot when the worker joined"
        local.scale(0)  # the cluster waits on its own subscription for the scheduler to count none
        snapshot = feed.latest(WAIT)
        while snapshot is not None and snapshot["workers"]:
            snapshot = feed.latest(WAIT)
        assert snapshot is not None, "no snapshot when the worker left"


def test_wait_for_workers_means_at_least_n_on_cluster_and_client(cluster, client):
    cluster.wait_for_workers(cluster.n_workers - 1)  # more than asked for: returns at once
    client.wait_for_workers(cluster.n_workers - 1)
    with pytest.raises(TimeoutError, match=f"at least {cluster.n_workers + 1}"):
        cluster.wait_for_workers(cluster.n_workers + 1, timeout=0.3)
    with pytest.raises(TimeoutError):
        client.wait_for_workers(cluster.n_workers + 1, timeout=0.3)


def test_a_local_cluster_counts_its_workers_without_joining_as_a_client():
    with LocalCluster(n_workers=2, timeout=30) as local:
        assert monitor.snapshot(local.address, timeout=WAIT)["clients"] == []
        local.scale(1)
        assert len(monitor.snapshot(local.address, timeout=WAIT)["workers"]) == 1


def test_snapshot_says_when_no_scheduler_answers():
    with pytest.raises(TimeoutError, match="no scheduler answered"):
        monitor.snapshot(f"tcp://127.0.0.1:{free_port()}", timeout=0.3)


# ---------------------------------------------------------------------------
# top in a pseudo-terminal

_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78]")


def read_until(fd: int, process: subprocess.Popen, done: Callable[[str], bool], timeout: float) -> str:
    """Read the terminal's output (escape codes removed) until ``done(text)``, or the process exits."""
    deadline = time.monotonic() + timeout
    raw = b""
    while not done(_ESCAPES.sub(b"", raw).decode(errors="replace")):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (process.poll() is not None and not select.select([fd], [], [], 0)[0]):
            break
        if select.select([fd], [], [], min(remaining, 0.5))[0]:
            try:
                raw += os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
    return _ESCAPES.sub(b"", raw).decode(errors="replace")


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal 200 columns by 40 lines: (our end, the program's end)."""
    ours, theirs = pty.openpty()
    fcntl.ioctl(theirs, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    yield ours, theirs
    for fd in (ours, theirs):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_top_shows_the_workers_and_quits_on_q(cluster, client, terminal):
    names = {w["name"] for w in client.status()["workers"]}
    assert len(names) == cluster.n_workers
    ours, theirs = terminal
    modes = termios.tcgetattr(theirs)[3]
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "40"}
    top = spawn(["-m", "scaler_jupyter", "top", cluster.address], env=env,
                stdin=theirs, stdout=theirs, stderr=theirs, start_new_session=True)
    try:
        screen = read_until(ours, top, lambda text: all(name in text for name in names) and "tasks/s" in text, WAIT)
        assert all(name in screen for name in names), screen[-3000:]
        assert cluster.address in screen
        os.write(ours, b"c")  # sort by CPU: still running
        os.write(ours, b"q")
        read_until(ours, top, lambda text: False, WAIT)  # keep the terminal drained until top exits
        assert top.wait(WAIT) == 0
        assert termios.tcgetattr(theirs)[3] == modes  # echo and line editing are back
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(WAIT)


def test_top_says_when_no_scheduler_answers():
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", "top", f"tcp://127.0.0.1:{free_port()}",
                           "--timeout", "0.3"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "no scheduler answered" in done.stderr


def test_snapshots_are_built_only_while_someone_subscribes():
    context = zmq.Context()
    feed = MonitorFeed(context, "tcp://127.0.0.1:0", interval=0.5)
    try:
        assert feed.next_due() == math.inf  # nobody listens: no snapshot is ever due
        with subscribed(feed.address):
            assert feed.socket.poll(WAIT * 1000)
            feed.read_subscriptions()
            assert feed.next_due() == 0.0  # a new subscriber gets one at once
            feed.publish_if_due(SchedulerState(now=0.0), now=1.0)
            assert feed.next_due() == 1.5
        assert feed.socket.poll(WAIT * 1000)  # the subscriber left
        feed.read_subscriptions()
        assert feed.next_due() == math.inf
    finally:
        feed.close()
        context.term()
