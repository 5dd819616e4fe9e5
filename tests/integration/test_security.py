"""Clusters that require keys, and remote shutdown, on real processes.

A peer without the cluster's keys never completes the CurveZMQ handshake, so
nothing it sends reaches the scheduler. The proof used here: a peer that speaks the
protocol directly submits a task that would create a file; the file must not
appear, while the same peer holding the keys does create it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import psutil
import pytest
import zmq

from scaler_jupyter import Client, LocalCluster, monitor
from scaler_jupyter.errors import AuthenticationError, ConnectionLostError, ShutdownRefusedError
from scaler_jupyter.processes import spawn, stop
from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    TASK_ID_BITS,
    ClientHello,
    ClientWelcome,
    ObjectSpec,
    Results,
    Status,
    Submit,
    TaskSpec,
    decode,
    serialization,
)
from scaler_jupyter.protocol.feed import TOPIC, decode_snapshot
from scaler_jupyter.protocol.transport import send
from scaler_jupyter.security import ClusterKeys
from tests.helpers import alive_children, free_port, raw_peer, wait_gone, wait_until

pytestmark = pytest.mark.timeout(90)

# Functions defined here travel by value, as those of a notebook do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 15.0  # seconds any one event may take
QUIET = 1.0  # seconds a refused peer's message is given to (not) arrive


# ---------------------------------------------------------------------------
# Tasks (they run on workers)


def square(x):
    return x * x


def create(path):
    with open(path, "w") as file:
        file.write("executed")
    return path


def nested_sum(n):
    with Client() as inner:  # finds its scheduler, and the keys it requires, from the worker
        return sum(inner.map(square, range(n)))


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> ClusterKeys:
    return ClusterKeys.create(tmp_path_factory.mktemp("cluster") / "keys")


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> ClusterKeys:
    """A key set made the same way, for another cluster."""
    directory = tmp_path_factory.mktemp("other") / "keys"
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", "keys", str(directory)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return ClusterKeys(directory)


@pytest.fixture(scope="module")
def keyed_cluster(keys) -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=2, keys=keys.directory, timeout=30) as local:
        yield local


@pytest.fixture
def keyed_client(keyed_cluster, keys) -> Iterator[Client]:
    client = Client(keyed_cluster.address, keys=keys.directory, timeout=30)
    yield client
    client.shutdown(cancel_futures=True)


# ---------------------------------------------------------------------------
# A cluster with keys works for those who hold them


def test_a_keyed_client_runs_a_map(keyed_client):
    assert list(keyed_client.map(square, range(200))) == [x * x for x in range(200)]


def test_a_nested_client_inside_a_task_joins_with_the_worker_s_keys(keyed_client):
    assert keyed_client.submit(nested_sum, 10).result(WAIT) == sum(x * x for x in range(10))


def test_a_local_cluster_listens_on_loopback_only(keyed_cluster):
    assert keyed_cluster.address.startswith("tcp://127.0.0.1:")
    assert keyed_cluster.monitor_address.startswith("tcp://127.0.0.1:")
    scheduler = psutil.Process(keyed_cluster.pids[0])
    listening = [c.laddr.ip for c in scheduler.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert len(listening) == 2  # the scheduler's socket and its monitor feed
    assert set(listening) == {"127.0.0.1"}


# ---------------------------------------------------------------------------
# ... and for nobody else


def test_a_client_without_keys_is_refused_with_a_clear_error(keyed_cluster):
    start = time.monotonic()
    with pytest.raises(AuthenticationError, match=r"requires keys.*keys=DIR"):
        Client(keyed_cluster.address, timeout=WAIT)
    assert time.monotonic() - start < WAIT  # refused, not left to time out


def test_a_client_with_another_key_set_times_out_saying_why(keyed_cluster, other_keys):
    with pytest.raises((TimeoutError, ConnectionLostError), match=r"security handshake failed.*another key set"):
        Client(keyed_cluster.address, keys=other_keys.directory, timeout=2)


def _only_the_scheduler_public_key(keys: ClusterKeys, other_keys: ClusterKeys, directory: Path) -> ClusterKeys:
    """A peer that knows the scheduler's public key but holds a key pair of its own."""
    directory.mkdir(exist_ok=True)
    shutil.copy(keys.directory / "scheduler.key", directory / "scheduler.key")
    shutil.copy(other_keys.directory / "client.key_secret", directory / "client.key_secret")
    return ClusterKeys(directory)


def hello(dealer: zmq.Socket) -> None:
    send(dealer, ClientHello(PROTOCOL_VERSION, "raw-peer", "host", os.getpid(), True))


def submit_create(dealer: zmq.Socket, marker: Path, client_number: int = 1) -> None:
    """Submit one task that creates ``marker``, as client ``client_number`` (the scheduler's welcome says)."""
    function = serialization.dumps(create)
    function_id = serialization.content_id(function)
    args, refs = serialization.dumps_collecting_refs(((str(marker),), {}))
    task = TaskSpec(client_number << TASK_ID_BITS, function_id, args, refs, None, [], 0, None)
    send(dealer, Submit([ObjectSpec(function_id, function)], [task]))


def next_message(dealer: zmq.Socket, kind: type):
    """The next message of ``kind`` from the scheduler (heartbeats and others skipped)."""
    deadline = time.monotonic() + WAIT
    while (remaining := deadline - time.monotonic()) > 0:
        assert dealer.poll(remaining * 1000), f"no {kind.__name__} from the scheduler"
        message = decode(dealer.recv_multipart())
        if isinstance(message, kind):
            return message
    raise AssertionError(f"no {kind.__name__} from the scheduler within {WAIT:g}s")


@pytest.mark.parametrize("holding", ["no keys", "another key set", "only the scheduler's public key"])
def test_a_peer_without_the_keys_gets_nothing_executed(keyed_cluster, keys, other_keys, keyed_client, tmp_path,
                                                       holding):
    peer_keys = {"no keys": None, "another key set": other_keys,
                 "only the scheduler's public key": _only_the_scheduler_public_key(keys, other_keys,
                                                                                  tmp_path / "mixed")}[holding]
    marker = tmp_path / "executed"
    with raw_peer(keyed_cluster.address, peer_keys) as (dealer, watch):
        hello(dealer)
        submit_create(dealer, marker)  # without waiting for a welcome, which never comes
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(watch.socket, zmq.POLLIN)
        deadline = time.monotonic() + WAIT
        while watch.failure is None and time.monotonic() < deadline:
            events = dict(poller.poll(100))
            assert dealer not in events, "the scheduler answered a peer without the keys"
            if watch.socket in events:
                watch.read()
        assert watch.failure is not None, "the handshake neither failed nor was reported"
        assert not dealer.poll(QUIET * 1000), "the scheduler answered a peer without the keys"
    assert not marker.exists()
    status = keyed_client.status()
    assert "raw-peer" not in {c["name"] for c in status["clients"]}
    assert status["tasks"]["pending"] == status["tasks"]["assigned"] == 0


def test_the_same_peer_holding_the_keys_does_get_its_task_run(keyed_cluster, keys, tmp_path):
    """The control for the test above: what the refused peers sent would have run."""
    marker = tmp_path / "executed"
    with raw_peer(keyed_cluster.address, keys) as (dealer, _):
        hello(dealer)
        submit_create(dealer, marker, next_message(dealer, ClientWelcome).client_number)
        [result] = next_message(dealer, Results).results
        assert result.status == Status.OK
    assert marker.read_text() == "executed"


def test_a_worker_without_the_keys_says_so_and_exits(keyed_cluster):
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", "worker", keyed_cluster.address],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot join the scheduler" in done.stderr and "requires keys" in done.stderr


# ---------------------------------------------------------------------------
# The monitor feed and top


def first_snapshot(address: str, keys: ClusterKeys | None, timeout: float) -> dict | None:
    context = zmq.Context()
    feed = context.socket(zmq.SUB)
    feed.setsockopt(zmq.LINGER, 0)
    feed.setsockopt(zmq.SUBSCRIBE, TOPIC)
    if keys is not None:
        keys.connect(feed)
    feed.connect(address)
    try:
        return decode_snapshot(feed.recv_multipart()) if feed.poll(timeout * 1000) else None
    finally:
        feed.close()
        context.term()


def test_the_monitor_feed_publishes_only_to_key_holders(keyed_cluster, keys, other_keys):
    snapshot = first_snapshot(keyed_cluster.monitor_address, keys, WAIT)
    assert snapshot is not None and len(snapshot["workers"]) == keyed_cluster.n_workers
    assert first_snapshot(keyed_cluster.monitor_address, None, QUIET) is None
    assert first_snapshot(keyed_cluster.monitor_address, other_keys, QUIET) is None


_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78]")


def test_monitor_watches_a_keyed_cluster_with_its_keys(keyed_cluster, keys):
    assert len(monitor.snapshot(keyed_cluster.address, keys.directory, WAIT)["workers"]) == keyed_cluster.n_workers
    with monitor.subscribe(keyed_cluster.address, keys, WAIT) as feed:
        assert feed.latest() is not None  # the scheduler's answer
        assert len(next(iter(feed))["workers"]) == keyed_cluster.n_workers  # the feed's, over CURVE


def test_monitor_without_keys_is_refused_saying_why(keyed_cluster):
    with pytest.raises(AuthenticationError, match="requires keys"):
        monitor.subscribe(keyed_cluster.address, timeout=WAIT)


def test_monitor_with_another_key_set_times_out_saying_why(keyed_cluster, other_keys):
    with pytest.raises(TimeoutError, match=r"security handshake failed.*another key set"):
        monitor.snapshot(keyed_cluster.address, other_keys.directory, timeout=2)


def test_top_with_keys_shows_a_keyed_cluster(keyed_cluster, keyed_client, keys):
    names = {w["name"] for w in keyed_client.status()["workers"]}
    ours, theirs = pty.openpty()
    fcntl.ioctl(theirs, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "40"}
    top = spawn(["-m", "scaler_jupyter", "top", keyed_cluster.address, "--keys", str(keys.directory)], env=env,
                stdin=theirs, stdout=theirs, stderr=theirs, start_new_session=True)
    raw, screen = b"", ""
    try:
        deadline = time.monotonic() + WAIT
        while not all(name in screen for name in names) and time.monotonic() < deadline:
            if select.select([ours], [], [], 0.5)[0]:
                raw += os.read(ours, 65536)
                screen = _ESCAPES.sub(b"", raw).decode(errors="replace")
        assert all(name in screen for name in names), screen[-3000:]
        os.write(ours, b"q")
        while top.poll() is None and time.monotonic() < deadline + WAIT:  # keep the terminal drained
            if select.select([ours], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    os.read(ours, 65536)
        assert top.wait(WAIT) == 0
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(WAIT)
        os.close(ours)
        os.close(theirs)


def test_top_without_keys_is_refused(keyed_cluster):
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", "top", keyed_cluster.address, "--timeout", "10"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "requires keys" in done.stderr


# ---------------------------------------------------------------------------
# Remote shutdown of a cluster started from the command line


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@contextlib.contextmanager
def cli_cluster(keys: ClusterKeys, *scheduler_args: str) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """``scaler-jupyter scheduler`` and ``scaler-jupyter cluster -n 2``, both with ``--keys``."""
    address = f"tcp://127.0.0.1:{free_port()}"
    keys_args = ("--keys", str(keys.directory))
    scheduler = spawn(["-m", "scaler_jupyter", "scheduler", address, "--monitor-address",
                       f"tcp://127.0.0.1:{free_port()}", *keys_args, *scheduler_args])
    workers = spawn(["-m", "scaler_jupyter", "cluster", address, "-n", "2", *keys_args])
    try:
        yield address, [scheduler, workers]
    finally:
        for process in (workers, scheduler):
            stop(process)


def test_shutdown_cluster_stops_every_process(keys):
    with cli_cluster(keys) as (address, (scheduler, workers)):
        with Client(address, keys=keys.directory, timeout=WAIT) as client:
            client.wait_for_workers(2, timeout=WAIT)
            everyone = [psutil.Process(scheduler.pid), psutil.Process(workers.pid),
                        *alive_children(psutil.Process(workers.pid))]
            assert len(everyone) == 2 + 2 * 2  # the scheduler, the cluster command, 2 agents with a processor each
            pending = client.submit(sleep_then, 60, "never")
            wait_until(lambda: client.status()["tasks"]["assigned"], WAIT, "the long task to reach a worker")
            client.shutdown_cluster()
            with pytest.raises(ConnectionLostError, match="shut down"):
                pending.result(WAIT)
            with pytest.raises(RuntimeError, match="after shutdown"):
                client.submit(square, 2)
        assert wait_gone(everyone, WAIT) == []
        assert scheduler.wait(WAIT) == 0
        assert workers.wait(WAIT) == 0


def test_a_protected_scheduler_refuses_remote_shutdown(keys):
    with cli_cluster(keys, "--protected") as (address, processes):
        with Client(address, keys=keys.directory, timeout=WAIT) as client:
            client.wait_for_workers(2, timeout=WAIT)
            with pytest.raises(ShutdownRefusedError, match="--protected"):
                client.shutdown_cluster()
            assert all(process.poll() is None for process in processes)
            assert client.submit(square, 7).result(WAIT) == 49  # the client and the cluster still work
            time.sleep(0.5)  # a shutdown in flight would have stopped them by now
            assert all(process.poll() is None for process in processes)


def test_a_client_s_pending_work_fails_at_once_when_another_shuts_the_cluster_down(keys):
    with cli_cluster(keys) as (address, _):
        with Client(address, keys=keys.directory, timeout=WAIT) as bystander:
            bystander.wait_for_workers(2, timeout=WAIT)
            pending = bystander.submit(sleep_then, 60, "never")
            with Client(address, keys=keys.directory, timeout=WAIT) as operator:
                operator.shutdown_cluster()
            start = time.monotonic()
            with pytest.raises(ConnectionLostError, match="shut the cluster down"):
                pending.result(WAIT)
            assert time.monotonic() - start < 5  # told, not left to find the scheduler silent
            assert isinstance(pending.exception(), ConnectionLostError)
    assert concurrent.futures.wait([pending], 0).done
