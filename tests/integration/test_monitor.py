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

from scaler_jupyter import LocalCluster
from scaler_jupyter.processes import spawn
from scaler_jupyter.scheduler.monitor import SNAPSHOT_VERSION, decode_snapshot
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
