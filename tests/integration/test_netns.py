"""The engine across real interfaces: scheduler, two workers and the client each in a network namespace.

Topology (all inside this machine; 10.200.0.0/24 exists only in these namespaces)::

    sched 10.200.0.1 --+
    w1    10.200.0.2 --+-- br0, in a namespace of its own
    w2    10.200.0.3 --+
    client 10.200.0.4 -+

Each node namespace holds one end of a veth pair (``eth0``); the other end is a port
of the bridge. Pulling w1's cable is ``ip link set`` down on its bridge port: its
packets are dropped, no FIN or RST is sent, so the scheduler learns of it only by
its silence (``--worker-timeout``).

The scheduler and workers run as ``ip netns exec NS python -m scaler_jupyter ...``.
The client lives in this process: a thread joins the client namespace (``setns``)
and creates the Client there, so the threads that own its sockets (its I/O thread
and ZeroMQ's, started from that thread) inherit the namespace; the rest of the test
process stays where it was.

Needs root and iproute2; skipped, with the reason, where namespaces cannot be made.
Every namespace (and with it every link) and process is removed even on failure.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import cloudpickle
import pytest

from scaler_jupyter import Client
from tests.helpers import record_run, wait_until

pytestmark = pytest.mark.timeout(180)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SUBNET = "10.200.0"
PORT = 2345
WORKER_TIMEOUT = 3
START_TIMEOUT = 30.0
MAP_TIMEOUT = 60.0
N_TASKS = 600
CUT_AFTER = 120  # runs logged before w1's cable is pulled
CLONE_NEWNET = 0x40000000
ROLES = {"sched": 1, "w1": 2, "w2": 3, "client": 4}


# ---------------------------------------------------------------------------
# Tasks (they run on workers)


def logged_square(log, i):
    record_run(log, i)
    time.sleep(0.01)
    return i * i, os.getppid()


# ---------------------------------------------------------------------------
# The network


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed: apt-get install -y iproute2"
    probe = f"sjprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclasses.dataclass
class Net:
    bridge: str  # the namespace that holds br0
    namespaces: dict[str, str]  # role -> namespace
    ports: dict[str, str]  # role -> its veth's bridge-side end, in the bridge namespace

    def address(self, role: str) -> str:
        return f"{SUBNET}.{ROLES[role]}"

    def cable(self, role: str, up: bool) -> None:
        """Plug or pull ``role``'s cable: its bridge port goes up or down."""
        _ip("-n", self.bridge, "link", "set", self.ports[role], "up" if up else "down")


@pytest.fixture
def net(request):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    tag = f"sj{os.getpid() % 100_000}"
    bridge = f"{tag}-br"
    made: list[str] = []

    def remove_all() -> None:
        # Deleting a namespace deletes the veth ends in it, and with them their peers and the bridge.
        failures = [ns for ns in reversed(made) if _ip("netns", "del", ns, check=False).returncode != 0]
        left = set(_ip("netns", "list").stdout.split()) & set(made)
        assert not failures and not left, f"namespaces not removed: {sorted(left or failures)}"

    request.addfinalizer(remove_all)
    _ip("netns", "add", bridge)
    made.append(bridge)
    _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
    _ip("-n", bridge, "link", "set", "br0", "up")
    namespaces, ports = {}, {}
    for role, host in ROLES.items():
        ns, port = f"{tag}-{role}", f"v-{role}"
        _ip("netns", "add", ns)
        made.append(ns)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", bridge)
        _ip("-n", ns, "addr", "add", f"{SUBNET}.{host}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", bridge, "link", "set", port, "master", "br0")
        _ip("-n", bridge, "link", "set", port, "up")
        namespaces[role], ports[role] = ns, port
    return Net(bridge, namespaces, ports)


# ---------------------------------------------------------------------------
# Processes in namespaces


def _die_with_parent() -> None:  # in the child, before exec: SIGKILL it if this test process dies
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)


class Nodes:
    """The engine's processes, each started in a namespace, all stopped at the end; their logs for failures."""

    def __init__(self, net: Net, logs) -> None:
        self.net = net
        self.logs = logs
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, role: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.net.namespaces[role], sys.executable, "-m", "scaler_jupyter", *args],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def report(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(self.logs.glob("*.log")))


@pytest.fixture
def nodes(net, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Nodes(net, logs)
    yield started
    started.stop_all()


def client_in_namespace(namespace: str, address: str, **kwargs) -> Client:
    """A Client whose sockets live in ``namespace``; see the module docstring."""
    box: dict = {}

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            box["client"] = Client(address, **kwargs)
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=make, name=f"join-{namespace}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["client"]


def established_peers(namespace: str) -> dict[str, int]:
    """Remote address -> bytes waiting in the send queue, for each established TCP connection in ``namespace``."""
    done = subprocess.run(["ip", "netns", "exec", namespace, "ss", "-tnH", "state", "established"],
                          capture_output=True, text=True, timeout=20, check=True)
    peers = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        numbers = [f for f in fields if f.isdigit()]
        peer = fields[-1].rsplit(":", 1)[0]
        peers[peer] = peers.get(peer, 0) + int(numbers[1])  # Recv-Q, Send-Q
    return peers


def count_deliveries(client: Client) -> collections.Counter:
    """Every task result the client receives, by task id (``map`` would hide a duplicate)."""
    counts: collections.Counter = collections.Counter()
    client.add_result_listener(lambda task_id, state: counts.update((task_id,)))
    return counts


def runs_by_index(log) -> dict[int, list[int]]:
    runs: dict[int, list[int]] = collections.defaultdict(list)
    with open(log) as file:
        for line in file:
            index, pid = line.split()
            runs[int(index)].append(int(pid))
    return runs


# ---------------------------------------------------------------------------


def test_a_worker_cut_off_the_network_is_declared_dead_and_a_restarted_one_rejoins(net, nodes, tmp_path):
    address = f"tcp://{net.address('sched')}:{PORT}"
    nodes.start("scheduler", "sched", "scheduler", address, "--worker-timeout", str(WORKER_TIMEOUT))
    nodes.start("w1", "w1", "worker", address, "--name", "w1")
    nodes.start("w2", "w2", "worker", address, "--name", "w2")
    client = None
    try:
        client = client_in_namespace(net.namespaces["client"], address, timeout=START_TIMEOUT)
        client.wait_for_workers(2, timeout=START_TIMEOUT)
        pids = {w["name"]: w["pid"] for w in client.status()["workers"]}
        assert set(pids) == {"w1", "w2"}
        # the traffic crosses the veths: the scheduler sees each peer at its own address
        peers = established_peers(net.namespaces["sched"])
        assert {net.address(r) for r in ("w1", "w2", "client")} <= set(peers), peers

        log = str(tmp_path / "runs")
        deliveries = count_deliveries(client)
        results = client.map(logged_square, itertools.repeat(log), range(N_TASKS), timeout=MAP_TIMEOUT)

        def both_busy() -> bool:
            if not os.path.exists(log):
                return False
            ran = collections.Counter(line.split()[1] for line in open(log))
            return sum(ran.values()) >= CUT_AFTER and ran[str(pids["w1"])] > 0 and ran[str(pids["w2"])] > 0

        wait_until(both_busy, START_TIMEOUT, f"{CUT_AFTER} tasks to run on both workers")
        net.cable("w1", up=False)
        cut = time.monotonic()
        wait_until(lambda: [w["name"] for w in client.status()["workers"]] == ["w2"], WORKER_TIMEOUT + 10,
                   "the scheduler to declare the cut-off worker dead")
        declared_dead = time.monotonic() - cut
        assert declared_dead >= WORKER_TIMEOUT - 1.5, f"w1 declared dead {declared_dead:.1f}s after the cut"

        values = list(results)
        assert [v for v, _ in values] == [i * i for i in range(N_TASKS)]
        ran_on = collections.Counter(pid for _, pid in values)
        assert ran_on[pids["w2"]] > ran_on[pids["w1"]] > 0
        runs = runs_by_index(log)
        assert all(len(r) == 1 or r == [pids["w1"], pids["w2"]] for r in runs.values()), \
            "only the cut-off worker's tasks may run twice, there and then on w2"

        # Plug the cable back: what the cut-off worker still had to send (its late results) drains to the
        # scheduler, which must not deliver any of it again.
        net.cable("w1", up=True)
        wait_until(lambda: established_peers(net.namespaces["w1"]).get(net.address("sched"), 0) == 0,
                   60, "the cut-off worker's send queue to drain once its cable is back", interval=0.2)
        # Two round trips: whatever the scheduler did with the late data, it flushed it before the second reply.
        for _ in range(2):
            assert client.status()["tasks"]["finished"] >= N_TASKS
        assert len(deliveries) == N_TASKS and set(deliveries.values()) == {1}, "a result was delivered twice"

        # A restarted worker rejoins through the same cable.
        nodes.stop("w1")
        nodes.start("w1-restarted", "w1", "worker", address, "--name", "w1-restarted")
        wait_until(lambda: sorted(w["name"] for w in client.status()["workers"]) == ["w1-restarted", "w2"],
                   START_TIMEOUT, "the restarted worker to join")
        values = list(client.map(logged_square, itertools.repeat(str(tmp_path / "after")), range(200),
                                 timeout=MAP_TIMEOUT))
        assert [v for v, _ in values] == [i * i for i in range(200)]
        assert len({pid for _, pid in values}) == 2, "the restarted worker ran none of the new tasks"
    except BaseException:
        print(nodes.report())
        raise
    finally:
        if client is not None:
            client.shutdown(cancel_futures=True)
