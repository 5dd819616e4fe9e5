"""The monitor snapshot, built from a SchedulerState driven by messages: no sockets, a fake clock."""

from __future__ import annotations

import os
import re

import msgpack
import pytest

from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    ClientHello,
    GraphTask,
    Heartbeat,
    ObjectSpec,
    Payload,
    Results,
    Submit,
    SubmitGraph,
    TaskResult,
    TaskSpec,
    WorkerHello,
)
from scaler_jupyter.protocol.feed import TOPIC, decode_snapshot, encode_snapshot
from scaler_jupyter.protocol.messages import Status
from scaler_jupyter.scheduler import monitor
from scaler_jupyter.scheduler.monitor import RATE_WINDOW, SNAPSHOT_VERSION, Monitor, ProcessFacts, build_snapshot
from scaler_jupyter.scheduler.server import default_monitor_address
from scaler_jupyter.scheduler.state import RECENT_TASKS, SchedulerState

FN = b"F" * 16
CLIENT, W1, W2 = b"client", b"w1", b"w2"

# The documented format, as a shape: keys, nested; a list of records by one record.
FORMAT = {
    "version": None,
    "time": None,
    "scheduler": {key: None for key in ("address", "monitor_address", "pid", "uptime", "cpu", "memory",
                                        "tasks_per_second", "objects", "object_bytes", "segments",
                                        "segment_bytes")},
    "tasks": {key: None for key in ("pending", "assigned", "queued", "running", "held", "finished")},
    "workers": [{key: None for key in ("id", "name", "host", "pid", "tags", "processors", "cpu", "memory",
                                       "queued", "running", "done", "heartbeat_lag")}],
    "clients": [{**{key: None for key in ("id", "name", "host", "pid", "tasks", "submitted", "done")}, "origins": {}}],
    "graphs": None,
    "unmatched": None,
    "recent_tasks": [{key: None for key in ("id", "worker", "function", "origin", "start", "end", "status")}],
}


def shape(value) -> object:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [shape(value[0])]
    return None


def spec(task_id: int) -> TaskSpec:
    return TaskSpec(task_id, FN, Payload([b"args"]), [], None, [], 0, None, name="double")


def ok(task_id: int) -> TaskResult:
    return TaskResult(task_id, Status.OK, Payload([b"result"]), "", [0.01, 0.01, 1000])


class Cluster:
    """A SchedulerState with a fake clock, fed the messages a client and its workers would send."""

    def __init__(self) -> None:
        self.now = 100.0
        self.state = SchedulerState(now=self.now)

    def send(self, peer: bytes, message) -> None:
        self.state.on_message(peer, message, self.now)
        self.state.flush()

    def snapshot(self) -> dict:
        return build_snapshot(self.state, self.now)


@pytest.fixture
def cluster() -> Cluster:
    """One client, worker ``w1`` (one processor) and ``w2`` (two, tagged gpu); 20 tasks submitted."""
    c = Cluster()
    c.send(CLIENT, ClientHello(PROTOCOL_VERSION, "notebook", "laptop", 11, True))
    c.send(W1, WorkerHello(PROTOCOL_VERSION, "w-one", "node-a", 21, 1, []))
    c.send(W2, WorkerHello(PROTOCOL_VERSION, "w-two", "node-b", 22, 2, ["gpu", "big"]))
    c.send(CLIENT, Submit([ObjectSpec(FN, Payload([b"f" * 10]))], [spec(i) for i in range(1, 21)]))
    return c


def test_the_snapshot_has_the_documented_keys(cluster):
    cluster.send(W1, Results([ok(next(iter(cluster.state.workers[W1].queue)))]))  # a finished task, to list
    snapshot = cluster.snapshot()
    assert shape(snapshot) == FORMAT
    assert snapshot["version"] == SNAPSHOT_VERSION
    assert snapshot["graphs"] == []
    assert msgpack.unpackb(msgpack.packb(snapshot), raw=False) == snapshot  # it travels as msgpack


def test_every_key_is_documented_in_the_module():
    documented = set(re.findall(r"``(\w+)``", monitor.__doc__))
    keys = set()

    def collect(value) -> None:
        if isinstance(value, dict):
            keys.update(value)
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(FORMAT)
    assert keys <= documented, f"undocumented: {sorted(keys - documented)}"


def test_workers_and_clients_as_the_messages_left_them(cluster):
    cluster.send(W2, Heartbeat(150.0, 2_000_000, 0, 2))
    cluster.now += 1.5
    snapshot = cluster.snapshot()
    one, two = snapshot["workers"]  # in the order they joined
    assert (one["name"], one["host"], one["pid"], one["tags"], one["processors"]) == ("w-one", "node-a", 21, [], 1)
    assert (two["tags"], two["processors"], two["cpu"], two["memory"]) == (["big", "gpu"], 2, 150.0, 2_000_000)
    held_by_two = two["queued"] + two["running"]
    assert two["running"] == 2 and held_by_two > 2
    assert one["heartbeat_lag"] == pytest.approx(1.5) and two["heartbeat_lag"] == pytest.approx(1.5)
    [client] = snapshot["clients"]
    assert (client["name"], client["host"], client["pid"]) == ("notebook", "laptop", 11)
    assert (client["tasks"], client["submitted"], client["done"]) == (20, 20, 0)
    assert snapshot["scheduler"]["uptime"] == pytest.approx(1.5)
    assert snapshot["scheduler"]["objects"] == 1 and snapshot["scheduler"]["object_bytes"] == 10


def test_totals_by_task_state(cluster):
    queues = {w["name"]: w["queued"] for w in cluster.snapshot()["workers"]}
    assigned = sum(queues.values())
    assert 0 < assigned < 20  # the workers' queues are bounded; the rest wait
    cluster.send(W1, Heartbeat(0.0, 0, 0, 1))
    cluster.send(W1, Results([ok(task_id) for task_id in list(cluster.state.workers[W1].queue)[:2]]))
    tasks = cluster.snapshot()["tasks"]
    assert tasks["finished"] == 2
    assert tasks["held"] == 18 == tasks["pending"] + tasks["assigned"]
    assert tasks["assigned"] == tasks["queued"] + tasks["running"] and tasks["running"] == 1
    assert cluster.snapshot()["clients"][0]["done"] == 2


def test_recent_tasks_say_who_ran_what_and_when(cluster):
    first, second = list(cluster.state.workers[W2].queue)[:2]
    cluster.now += 2.0
    cluster.send(W2, Results([ok(first)]))
    cluster.now += 1.0
    cluster.send(W2, Results([TaskResult(second, Status.ERROR, Payload([b"boom"]), "", [0.5, 0.5, 1000])]))
    snapshot = cluster.snapshot()
    older, newer = snapshot["recent_tasks"]  # oldest first
    assert (older["id"], newer["id"]) == (first, second)
    assert older["worker"] == newer["worker"] == snapshot["workers"][1]["id"]
    assert older["function"] == "double" and older["origin"] is None
    assert (older["status"], newer["status"]) == ("ok", "error")
    assert newer["end"] - newer["start"] == pytest.approx(0.5)  # its run time in the worker
    assert newer["end"] - older["end"] == pytest.approx(1.0)
    assert newer["end"] == pytest.approx(snapshot["time"])  # it ended as the snapshot was taken


def test_recent_tasks_are_bounded(cluster):
    cluster.send(CLIENT, Submit([], [spec(i) for i in range(21, RECENT_TASKS + 51)]))
    while cluster.state.tasks:  # the workers finish what they hold until nothing is left
        for peer in (W1, W2):
            cluster.send(peer, Results([ok(task_id) for task_id in list(cluster.state.workers[peer].queue)]))
    recent = cluster.snapshot()["recent_tasks"]
    assert len(recent) == RECENT_TASKS < cluster.snapshot()["tasks"]["finished"]
    assert recent[-1]["end"] >= recent[0]["end"]


def test_tasks_per_second_over_the_last_window(cluster):
    assert cluster.snapshot()["scheduler"]["tasks_per_second"] == 0.0
    cluster.now += 1.0
    cluster.send(W1, Results([ok(task_id) for task_id in list(cluster.state.workers[W1].queue)[:3]]))
    assert cluster.snapshot()["scheduler"]["tasks_per_second"] == pytest.approx(3 / 1.0)
    cluster.now += RATE_WINDOW  # nothing finished since: the rate falls back to 0
    assert cluster.snapshot()["scheduler"]["tasks_per_second"] == 0.0


def test_the_rate_counts_from_the_start_when_first_asked_late(cluster):
    cluster.send(W1, Results([ok(task_id) for task_id in list(cluster.state.workers[W1].queue)[:4]]))
    cluster.now += 2.0
    assert cluster.snapshot()["scheduler"]["tasks_per_second"] == pytest.approx(4 / 2.0)


def test_addresses_come_from_the_server():
    state = SchedulerState(now=0.0)
    assert build_snapshot(state, 0.0)["scheduler"]["address"] == ""  # no server around this state
    state.monitor.address, state.monitor.monitor_address = "tcp://10.0.0.1:2345", "tcp://10.0.0.1:2346"
    scheduler = build_snapshot(state, 1.0)["scheduler"]
    assert (scheduler["address"], scheduler["monitor_address"]) == ("tcp://10.0.0.1:2345", "tcp://10.0.0.1:2346")
    assert SchedulerState(now=0.0).monitor.address == ""  # one monitor per state


def test_feed_frames_round_trip(cluster):
    snapshot = cluster.snapshot()
    frames = encode_snapshot(snapshot)
    assert frames[0] == TOPIC
    assert decode_snapshot(frames) == snapshot


@pytest.mark.parametrize("frames", [[b"graphs", msgpack.packb({"version": 1})], [TOPIC, b"\xc1garbage"],
                                    [TOPIC, msgpack.packb([1, 2])], [TOPIC], []])
def test_feed_messages_that_are_not_snapshots_decode_to_none(frames):
    assert decode_snapshot(frames) is None


@pytest.mark.parametrize(("requested", "bound", "expected"), [
    ("tcp://127.0.0.1:2345", "tcp://127.0.0.1:2345", "tcp://127.0.0.1:2346"),
    ("tcp://*:2345", "tcp://0.0.0.0:2345", "tcp://0.0.0.0:2346"),
    ("tcp://127.0.0.1:0", "tcp://127.0.0.1:41234", "tcp://127.0.0.1:0"),  # any free port, as the scheduler's
    ("tcp://[::1]:2345", "tcp://[::1]:2345", "tcp://[::1]:2346"),
])
def test_the_default_monitor_address_is_the_next_port(requested, bound, expected):
    assert default_monitor_address(requested, bound) == expected


def test_no_default_monitor_address_off_tcp():
    with pytest.raises(ValueError, match="--monitor-address"):
        default_monitor_address("ipc:///tmp/scheduler", "ipc:///tmp/scheduler")


def test_a_peer_s_odd_tags_do_not_break_the_snapshot(cluster):
    cluster.state.workers[W1].tags = frozenset({True, "gpu", 3})  # what a fuzzed WorkerHello can leave
    [odd, _] = cluster.snapshot()["workers"]
    assert odd["tags"] == sorted(["True", "gpu", "3"])


# ---------------------------------------------------------------------------
# What the snapshot reads beyond the state comes in with the monitor


def test_a_state_alone_reads_nothing_of_the_machine():
    scheduler = build_snapshot(SchedulerState(now=0.0), 1.0)["scheduler"]
    assert (scheduler["pid"], scheduler["cpu"], scheduler["memory"]) == (0, 0.0, 0)


def test_process_facts_and_the_wall_clock_come_from_the_monitor():
    wall = [1_700_000_000.0]
    facts = ProcessFacts(pid=4242, usage=lambda: (12.5, 3_000_000), wall_clock=lambda: wall[0])
    state = SchedulerState(now=50.0, monitor=Monitor(50.0, facts))
    state.on_message(CLIENT, ClientHello(PROTOCOL_VERSION, "notebook", "laptop", 11, True), 60.0)
    state.on_message(CLIENT, SubmitGraph(1, "report", [ObjectSpec(FN, Payload([b"f"]))], [spec(1), spec(2)],
                                         [GraphTask(1, "a", [], False), GraphTask(2, "b", [1], True)]), 60.0)
    state.flush()
    wall[0] += 5.0  # five seconds after the graph came, at monotonic 65
    snapshot = build_snapshot(state, 65.0)
    assert snapshot["time"] == 1_700_000_005.0
    assert (snapshot["scheduler"]["pid"], snapshot["scheduler"]["cpu"], snapshot["scheduler"]["memory"]) == (
        4242, 12.5, 3_000_000)
    [graph] = snapshot["graphs"]
    assert graph["started"] == pytest.approx(1_700_000_000.0)  # the caller's time of submission, as epoch


def test_this_process_s_facts():
    facts = ProcessFacts.of_this_process()
    cpu, memory = facts.usage()
    assert facts.pid == os.getpid() and cpu >= 0.0 and memory > 0
