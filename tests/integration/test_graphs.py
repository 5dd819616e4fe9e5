"""Task graphs on the engine, end to end: ``Client.get`` on real processes.

Most tests share the module's two-worker cluster; the test that kills a worker
starts its own. Tasks that must be observed from here write files: a marker when
they start (written atomically), or a line per run appended with ``O_APPEND``.
A task that must stay running waits for a "go" file the test creates, so every
ordering below comes from events, not from sleeps.

The scheduler's object count (``status()["scheduler"]["objects"]``) includes the
runner function a client sends with its first graph and keeps owning; so each
test that compares counts runs a small graph first and takes its baseline after.
"""

from __future__ import annotations

import concurrent.futures
import operator
import os
import signal
import subprocess
import sys
import time

import cloudpickle
import numpy as np
import psutil
import pytest
import zmq

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.errors import GraphError, TaskCrashedError
from scaler_jupyter.protocol import SubmitGraph
from scaler_jupyter.protocol.feed import decode_snapshot
from tests.helpers import alive, connect, processors_of, record_run, subscribed, touch, wait_gone, wait_until

pytestmark = pytest.mark.timeout(90)

# Functions defined here travel by value, as those of a notebook do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 15.0  # seconds any one event may take on an idle two-worker cluster
RESULT_TIMEOUT = 30.0  # seconds a whole graph may take
BLOCK_TIMEOUT = 30.0  # seconds a blocking task waits for its "go" file before giving up on its own


# ---------------------------------------------------------------------------
# Tasks (they run on workers)


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def mul(a, b):
    return a * b


def nested_total(groups):
    return sum(sum(group) for group in groups)


def weigh(parts):
    return 10 * parts["tens"] + parts["units"]


def part_sum(array, i, n):
    """The sum of the ``i``-th of ``n`` slices of ``array``."""
    size = len(array) // n
    return float(array[i * size:(i + 1) * size].sum())


def blob(i, size=50_000):
    """An intermediate result big enough to be worth freeing."""
    return bytes([i % 251]) * size


def grow(data):
    return data + data[:1000]


class GraphTaskError(Exception):
    """Raised by :func:`explode`: a type of this module's own, so the client must get exactly it back."""


def explode(value):
    raise GraphTaskError(f"exploded on {value!r}")


def crash(value):
    os._exit(3)


def record(log, name, *dependencies):
    """Append ``name`` to ``log``: the proof that this task ran."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name}\n".encode())
    finally:
        os.close(fd)
    return name


def write_atomically(path, text):
    with open(f"{path}.tmp", "w") as file:
        file.write(text)
    os.replace(f"{path}.tmp", path)


def wait_for(path, value):
    """Return ``value`` once ``path`` exists."""
    deadline = time.monotonic() + BLOCK_TIMEOUT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return value


def block_until(started, go, value=None):
    """Say we started, then hold the processor until ``go`` exists; return ``value``."""
    write_atomically(started, str(os.getpid()))
    deadline = time.monotonic() + BLOCK_TIMEOUT
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError("nobody released the blocking task")
        time.sleep(0.01)
    return value


def logged_leaf(log, i):
    """A leaf of the tree the worker-kill test cuts through: record where it ran, take a moment, return i."""
    record_run(log, i)
    time.sleep(0.003)
    return i


def nested_get(directory, i, n):
    """A task that runs a graph of its own, once all ``n`` such tasks run at once (so each holds a processor)."""
    write_atomically(os.path.join(directory, f"started-{i}"), "")
    deadline = time.monotonic() + WAIT
    while not all(os.path.exists(os.path.join(directory, f"started-{j}")) for j in range(n)):
        if time.monotonic() > deadline:
            raise TimeoutError("the other nested tasks never started")
        time.sleep(0.01)
    dsk = {("step", 0): i}
    dsk.update({("step", k): (inc, ("step", k - 1)) for k in range(1, 6)})
    dsk["doubled"] = (mul, ("step", 5), 2)
    with Client() as inner:
        return inner.get(dsk, "doubled", timeout=RESULT_TIMEOUT, name=f"inner-{i}")


# ---------------------------------------------------------------------------
# Helpers


def tree_reduction(n: int) -> tuple[dict, tuple]:
    """A graph of ``n`` leaf tasks ``inc(i)`` summed pairwise up to one root; return it and the root's key.

    An odd one out at a level is carried up by an alias, so every node is a task.
    """
    dsk: dict = {("tree", 0, i): (inc, i) for i in range(n)}
    level, width = 0, n
    while width > 1:
        for i in range(0, width - 1, 2):
            dsk["tree", level + 1, i // 2] = (add, ("tree", level, i), ("tree", level, i + 1))
        if width % 2:
            dsk["tree", level + 1, width // 2] = ("tree", level, width - 1)
        level, width = level + 1, (width + 1) // 2
    return dsk, ("tree", level, 0)


def settled_objects(client) -> int:
    """The scheduler's object count once this client is its only one, holds no task and has sent its runner."""
    assert client.get({"warm-up": (inc, 0)}, "warm-up", timeout=RESULT_TIMEOUT) == 1

    def settled():
        status = client.status()
        return status if len(status["clients"]) == 1 and status["tasks"]["held"] == 0 else None

    return wait_until(settled, WAIT, "earlier clients to leave and their tasks to end")["scheduler"]["objects"]


def graph_named(client, name: str) -> dict:
    """This client's graph called ``name`` on the scheduler's snapshot."""
    found = [g for g in client.status()["graphs"] if g["name"] == name and g["client"] == client.client_number]
    assert len(found) == 1, f"graphs named {name!r}: {found}"
    return found[0]


def read_runs(log) -> dict[int, list[int]]:
    """Leaf index -> the agent pids it ran on, in order (lines written by :func:`record_run`)."""
    runs: dict[int, list[int]] = {}
    for line in read_lines(log):
        index, pid = line.split()
        runs.setdefault(int(index), []).append(int(pid))
    return runs


def read_lines(path) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return file.read().splitlines()


def submitted(client) -> int:
    """Tasks this client has submitted, as the scheduler counts them."""
    return next(c["submitted"] for c in client.status()["clients"] if c["id"] == client.client_number)


def feed_graph(socket: zmq.Socket, name: str, state: str) -> dict:
    """The first graph called ``name`` in state ``state`` on the monitor feed."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if not socket.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            break
        snapshot = decode_snapshot(socket.recv_multipart())
        for graph in (snapshot or {}).get("graphs", []):
            if graph["name"] == name and graph["state"] == state:
                return graph
    raise AssertionError(f"no snapshot on the feed showed graph {name!r} {state} within {WAIT:g}s")


# ---------------------------------------------------------------------------
# Shapes of graphs


def test_a_chain_of_200_tasks(client):
    dsk = {("chain", 0): (inc, 0), **{("chain", i): (inc, ("chain", i - 1)) for i in range(1, 200)}}
    assert client.get(dsk, ("chain", 199), timeout=RESULT_TIMEOUT) == 200
    graph = graph_named(client, "('chain', 199)")  # unnamed, a graph is called after its first output
    assert graph["state"] == "done" and graph["total"] == 200


def test_fan_out_and_fan_in(client):
    dsk = {"root": (list, (range, 50))}
    dsk.update({("square", i): (mul, (operator.getitem, "root", i), (operator.getitem, "root", i)) for i in range(50)})
    dsk["total"] = (sum, [("square", i) for i in range(50)])
    squares, total = client.get(dsk, [[("square", 7), ("square", 49)], "total"], timeout=RESULT_TIMEOUT)
    assert squares == [49, 49 * 49]
    assert total == sum(i * i for i in range(50))


def test_a_diamond_runs_its_top_once_and_joins_both_sides(client, tmp_path):
    log = str(tmp_path / "runs")
    dsk = {
        "top": (record, log, "ran top"),
        "left": (add, (len, "top"), 10),
        "right": (mul, (len, "top"), 100),
        "bottom": (add, "left", "right"),
    }
    assert client.get(dsk, ["bottom", "top"], timeout=RESULT_TIMEOUT) == [717, "ran top"]
    assert read_lines(log) == ["ran top"]


def test_nested_tasks_run_inside_out(client):
    dsk = {"x": 1, "y": (inc, "x"), "z": (add, (inc, "x"), 1), "deep": (add, (inc, (inc, "y")), (mul, "z", (inc, 9)))}
    assert client.get(dsk, ["z", "deep"], timeout=RESULT_TIMEOUT) == [3, 34]


def test_lists_and_dicts_of_keys_in_arguments(client):
    dsk = {("n", i): (inc, i) for i in range(6)}
    dsk["flat"] = (sum, [("n", i) for i in range(6)])
    dsk["nested"] = (nested_total, [[("n", 0), ("n", 1)], [("n", 2)], [], [("n", 3), ("n", 4), ("n", 5)]])
    dsk["named"] = (weigh, {"tens": ("n", 3), "units": ("n", 1)})
    dsk["mixed"] = (list, [("n", 0), "literal text", 7, (inc, ("n", 5))])
    assert client.get(dsk, ["flat", "nested", "named", "mixed"], timeout=RESULT_TIMEOUT) == [
        21, 21, 42, [1, "literal text", 7, 7]]


def test_aliases_of_tasks_and_of_literals(client):
    dsk = {
        "x": (inc, 41),
        "y": "x",  # an alias of a task
        "a1": "y",  # a chain of aliases
        "a2": "a1",
        "a3": "a2",
        "uses-alias": (add, "a3", 1),
        "lit": 7,
        "alias-of-lit": "lit",
    }
    assert client.get(dsk, ["a3", "uses-alias", "alias-of-lit", "y"], timeout=RESULT_TIMEOUT) == [42, 43, 7, 42]


def test_literals_are_not_tasks_and_can_be_asked_for(client):
    dsk = {"a": 5, "pair": (1, 2), "b": (inc, "a"), "unused": (explode, "never")}
    assert client.get(dsk, ["a", "b", "pair"], timeout=RESULT_TIMEOUT, name="literals") == [5, 6, (1, 2)]
    graph = graph_named(client, "literals")
    assert graph["total"] == 1 and graph["tasks"] == {"b": "done"}, graph  # "a" is a value; "unused" was culled
    before = submitted(client)
    assert client.get({"only": [1, 2, 3]}, "only") == [1, 2, 3]  # nothing to run: nothing sent
    assert client.get({"a": 5}, ["a", ["a"]]) == [5, [5]]
    assert submitted(client) == before


def test_a_large_numpy_literal_used_by_many_tasks_travels_once(client):
    baseline = settled_objects(client)
    array = np.arange(250_000, dtype=np.float64)  # 2 MB
    n = 40
    dsk = {"array": array, **{("part", i): (part_sum, "array", i, n) for i in range(n)}}
    dsk["total"] = (sum, [("part", i) for i in range(n)])
    dsk["head"] = (operator.getitem, "array", slice(0, 3))

    sent: list[SubmitGraph] = []
    assert hasattr(client, "_connection"), "Client._connection moved: update this test"
    send = client._connection.send

    def watched_send(message):
        if isinstance(message, SubmitGraph):
            sent.append(message)
        send(message)

    client._connection.send = watched_send
    try:
        total, head, parts = client.get(dsk, ["total", "head", [("part", 0), ("part", n - 1)]], timeout=RESULT_TIMEOUT)
    finally:
        client._connection.send = send
    assert total == float(array.sum())
    np.testing.assert_array_equal(head, array[:3])
    size = len(array) // n
    assert parts == [float(array[:size].sum()), float(array[-size:].sum())]

    (graph,) = sent
    objects = sum(obj.payload.nbytes for obj in graph.objects)
    arguments = sum(task.args.nbytes for task in graph.tasks)
    assert array.nbytes <= objects < array.nbytes + 100_000, f"{objects} bytes of objects for {array.nbytes} of array"
    assert arguments < array.nbytes // 10, f"the tasks' arguments hold {arguments} bytes: the array was copied in"
    assert client.status()["scheduler"]["objects"] == baseline, "the literal or a result outlived the graph"


def test_a_list_of_tasks_as_a_value_is_evaluated_as_dask_does(client):
    dask = pytest.importorskip("dask")
    dsk = {"listed": [(inc, 1), (inc, 2)], "paired": ((inc, 10), 5), "summed": (sum, "listed")}
    keys = ["listed", "paired", "summed"]
    assert list(dask.get(dsk, keys)) == [[2, 3], (11, 5), 5]  # Dask returns a tuple for a list of keys
    assert client.get(dsk, keys, timeout=RESULT_TIMEOUT) == [[2, 3], (11, 5), 5]


def test_tuple_keys_and_the_shape_of_keys(client):
    dsk = {("x", 0, 0): 1, ("x", 0, 1): (inc, ("x", 0, 0)), ("x", 1, 0): (add, ("x", 0, 0), ("x", 0, 1)), "s": "str"}
    assert client.get(dsk, ("x", 1, 0), timeout=RESULT_TIMEOUT) == 3  # a single tuple key: one value, not a list
    assert client.get(dsk, [("x", 1, 0)], timeout=RESULT_TIMEOUT) == [3]
    shaped = client.get(dsk, [[("x", 0, 0), [("x", 0, 1)]], [], [["s"]], ("x", 1, 0)], timeout=RESULT_TIMEOUT)
    assert shaped == [[1, [2]], [], [["str"]], 3]
    assert client.get(dsk, [], timeout=RESULT_TIMEOUT) == []


def test_a_key_asked_for_several_times_runs_once(client, tmp_path):
    log = str(tmp_path / "runs")
    dsk = {"once": (record, log, "ran once"), "after": (inc, (len, "once"))}
    result = client.get(dsk, ["once", "after", ["once", ["after", "once"]]], timeout=RESULT_TIMEOUT, name="repeats")
    assert result == ["ran once", 9, ["ran once", [9, "ran once"]]]
    assert read_lines(log) == ["ran once"]
    assert graph_named(client, "repeats")["total"] == 2


def test_a_tree_reduction_of_10_000_tasks(client):
    dsk, root = tree_reduction(5_000)
    dsk["total"] = root  # an alias as the output
    assert len(dsk) >= 10_000
    assert client.get(dsk, "total", timeout=RESULT_TIMEOUT, name="tree") == sum(range(1, 5_001))
    graph = graph_named(client, "tree")
    assert graph["state"] == "done" and graph["total"] == len(dsk)  # every node is a task
    assert graph["counts"]["done"] == len(dsk) and len(graph["tasks"]) == len(dsk)


# ---------------------------------------------------------------------------
# Failures


def test_a_failing_task_cancels_the_rest_and_raises_its_own_exception(client, tmp_path):
    log, started, go = str(tmp_path / "runs"), str(tmp_path / "started"), str(tmp_path / "go")
    dsk = {
        "first": (wait_for, started, 2),  # the failure comes once "slow" runs
        "bad": (explode, "first"),
        "after-bad": (record, log, "ran after-bad", "bad"),
        "slow": (block_until, started, go, "slow value"),  # the other branch: still running when "bad" fails
        "sibling": (record, log, "ran sibling", "slow"),
        "end": (list, ["after-bad", "sibling"]),
    }
    futures = client.get(dsk, ["end", "sibling"], block=False, name="failing")
    wait_until(lambda: os.path.exists(started), WAIT, "the slow branch to start")
    with pytest.raises(GraphTaskError, match="exploded on 2") as raised:
        futures[0].result(RESULT_TIMEOUT)
    assert type(raised.value) is GraphTaskError
    remote = raised.value.__cause__
    assert remote is not None and "in explode" in str(remote) and "GraphTaskError" in str(remote), str(remote)
    assert isinstance(futures[1].exception(WAIT), GraphTaskError), "every output fails with the graph"

    graph = graph_named(client, "failing")
    assert graph["state"] == "failed"
    assert graph["tasks"] == {"first": "done", "bad": "failed", "after-bad": "cancelled", "slow": "cancelled",
                              "sibling": "cancelled", "end": "cancelled"}, graph["tasks"]
    touch(go)  # had "slow" survived the failure, "sibling" could now run
    assert client.get({"a": (inc, 1), "b": (inc, 2)}, ["a", "b"], timeout=RESULT_TIMEOUT) == [2, 3]
    wait_until(lambda: client.status()["tasks"]["held"] == 0, WAIT, "the cluster to be idle")
    assert read_lines(log) == [], "a task ran after its graph failed"


def test_get_raises_the_task_s_exception_with_the_remote_traceback(client):
    dsk = {"x": 0, "ratio": (operator.truediv, 1, "x"), "more": (inc, "ratio")}
    with pytest.raises(ZeroDivisionError) as raised:
        client.get(dsk, "more", timeout=RESULT_TIMEOUT)
    assert "ZeroDivisionError" in str(raised.value.__cause__)
    with pytest.raises(GraphTaskError) as raised:
        client.get({"a": (explode, "here")}, "a", timeout=RESULT_TIMEOUT)
    assert type(raised.value) is GraphTaskError and str(raised.value) == "exploded on 'here'"
    assert "in explode" in str(raised.value.__cause__)
    assert client.get({"a": (inc, 1)}, "a", timeout=RESULT_TIMEOUT) == 2, "the client still works"


def test_a_crashing_task_fails_the_graph_with_task_crashed_error(client, tmp_path):
    log = str(tmp_path / "runs")
    dsk = {"a": (inc, 1), "crash": (crash, "a"), "after": (record, log, "ran after", "crash")}
    with pytest.raises(TaskCrashedError):
        client.get(dsk, "after", timeout=RESULT_TIMEOUT, name="crashing")
    graph = graph_named(client, "crashing")
    assert graph["state"] == "failed" and graph["tasks"] == {"a": "done", "crash": "failed", "after": "cancelled"}
    assert client.get({"a": (inc, 1)}, "a", timeout=RESULT_TIMEOUT) == 2
    assert read_lines(log) == []


def test_a_cycle_is_rejected_before_anything_runs(client, tmp_path):
    mark = str(tmp_path / "ran")
    before = submitted(client)
    for dsk in ({"mark": (record, mark, "ran"), "a": (inc, "b"), "b": (inc, "a"), "out": (add, "mark", "a")},
                {"mark": (record, mark, "ran"), "a": (inc, "a"), "out": (add, "mark", "a")},
                {"mark": (record, mark, "ran"), "a": "b", "b": "a", "out": (list, ["mark", "a"])}):
        with pytest.raises(GraphError, match="cycle"):
            client.get(dsk, "out")
    assert submitted(client) == before
    assert client.get({"a": (inc, 1)}, "a", timeout=RESULT_TIMEOUT) == 2
    assert not os.path.exists(mark)


def test_a_missing_key_is_rejected_before_anything_runs(client, tmp_path):
    from dask._task_spec import Task, TaskRef

    mark = str(tmp_path / "ran")
    before = submitted(client)
    with pytest.raises(GraphError, match="'absent' is not in the graph"):
        client.get({"mark": (record, mark, "ran")}, ["mark", "absent"])
    with pytest.raises(GraphError, match="'absent' is not in the graph, but 'needs' depends on it"):
        client.get({"mark": Task("mark", record, mark, "ran"), "needs": Task("needs", inc, TaskRef("absent"))},
                   ["mark", "needs"])
    with pytest.raises(GraphError):
        client.get({"mark": (record, mark, "ran")}, ["mark", {"not", "a", "key"}])
    assert submitted(client) == before
    assert client.get({"a": (inc, 1)}, "a", timeout=RESULT_TIMEOUT) == 2
    assert not os.path.exists(mark)


# ---------------------------------------------------------------------------
# Memory: intermediate results live on the scheduler only while needed


def test_intermediate_results_are_freed_once_the_graph_is_done(client):
    baseline = settled_objects(client)
    dsk = {("blob", i): (blob, i) for i in range(20)}
    dsk.update({("grown", i): (grow, ("blob", i)) for i in range(20)})
    dsk["sizes"] = (sum, [(len, ("grown", i)) for i in range(20)])
    dsk["first"] = (operator.getitem, ("grown", 0), slice(0, 3))
    sizes, first = client.get(dsk, ["sizes", "first"], timeout=RESULT_TIMEOUT, name="freed")
    assert sizes == 20 * 51_000 and first == b"\x00" * 3
    assert client.status()["scheduler"]["objects"] == baseline
    graph = graph_named(client, "freed")
    assert graph["state"] == "done" and graph["total"] == 42
    assert set(graph["tasks"].values()) == {"done"} and graph["counts"]["done"] == 42


def test_an_intermediate_result_is_freed_as_soon_as_no_task_needs_it(client, tmp_path):
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    baseline = settled_objects(client)
    dsk = {"x": (blob, 1), "y": (grow, "x"), "z": (block_until, started, go, "y"), "w": (len, "z")}
    future = client.get(dsk, "w", block=False)
    wait_until(lambda: os.path.exists(started), WAIT, "z to start")
    status = client.status()["scheduler"]
    assert status["objects"] == baseline + 1, "while z runs only y's result is needed: x's must be gone"
    assert status["object_bytes"] >= 51_000
    touch(go)
    assert future.result(RESULT_TIMEOUT) == 51_000
    assert client.status()["scheduler"]["objects"] == baseline


def test_the_monitor_feed_shows_a_running_graph_task_by_task(cluster, client, tmp_path):
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    dsk = {
        "a": (inc, 1),
        "gate": (block_until, started, go, "a"),
        **{("after", i): (add, "gate", i) for i in range(3)},
        "end": (sum, [("after", i) for i in range(3)]),
    }
    future = client.get(dsk, "end", block=False, name="watched")
    wait_until(lambda: os.path.exists(started), WAIT, "the gate task to start")
    graph = graph_named(client, "watched")
    assert graph["state"] == "running" and graph["total"] == 6
    assert graph["tasks"] == {"a": "done", "gate": "running", "('after', 0)": "waiting", "('after', 1)": "waiting",
                              "('after', 2)": "waiting", "end": "waiting"}, graph["tasks"]
    assert graph["counts"] == {"waiting": 4, "ready": 0, "running": 1, "done": 1, "failed": 0, "cancelled": 0}
    with subscribed(cluster.monitor_address) as feed:
        published = feed_graph(feed, "watched", "running")
        assert published["tasks"]["gate"] == "running" and published["tasks"]["end"] == "waiting"
        touch(go)
        assert future.result(RESULT_TIMEOUT) == 3 * 2 + 3
        done = feed_graph(feed, "watched", "done")
    assert done["counts"]["done"] == 6 and set(done["tasks"].values()) == {"done"}
    assert graph_named(client, "watched")["state"] == "done"


# ---------------------------------------------------------------------------
# Futures, cancelling and timeouts


def test_block_false_returns_futures_in_the_shape_of_keys(client):
    dsk = {"lit": 3, "a": (inc, "lit"), "b": (mul, "a", 10), ("t", 1): (add, "a", "b")}
    futures = client.get(dsk, [["b", "lit"], ("t", 1), "b"], block=False)
    assert isinstance(futures[0][0], concurrent.futures.Future) and isinstance(futures[1], concurrent.futures.Future)
    assert futures[0][0] is futures[2], "a key asked for twice has one future"
    assert futures[0][0].result(RESULT_TIMEOUT) == 40
    assert futures[0][1].result(RESULT_TIMEOUT) == 3
    assert futures[1].result(RESULT_TIMEOUT) == 44
    single = client.get(dsk, "a", block=False)
    assert single.result(RESULT_TIMEOUT) == 4


def test_cancelling_one_future_cancels_the_whole_graph(client, tmp_path):
    started, go, log = str(tmp_path / "started"), str(tmp_path / "go"), str(tmp_path / "runs")
    baseline = settled_objects(client)
    dsk = {
        "data": (blob, 3),
        "gate": (block_until, started, go, "data"),
        "left": (record, log, "ran left", "gate"),
        "right": (record, log, "ran right", "gate"),
    }
    left, right = client.get(dsk, ["left", "right"], block=False, name="cancelled")
    wait_until(lambda: os.path.exists(started), WAIT, "the gate task to start")
    assert left.cancel()
    assert right.cancelled(), "the other output of the graph is cancelled too"
    with pytest.raises(concurrent.futures.CancelledError):
        right.result(0)

    def ended():
        graph = graph_named(client, "cancelled")
        return graph if graph["state"] != "running" else None

    graph = wait_until(ended, WAIT, "the scheduler to end the graph")
    assert graph["state"] == "cancelled"
    assert graph["tasks"] == {"data": "done", "gate": "cancelled", "left": "cancelled", "right": "cancelled"}
    touch(go)
    wait_until(lambda: client.status()["tasks"]["held"] == 0, WAIT, "the cluster to be idle")
    assert client.status()["scheduler"]["objects"] == baseline, "the cancelled graph's intermediate result stayed"
    assert client.get({"a": (inc, 1)}, "a", timeout=RESULT_TIMEOUT) == 2
    assert read_lines(log) == []


def test_a_timeout_cancels_the_graph(client, tmp_path):
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    dsk = {"gate": (block_until, started, go, 1), "after": (inc, "gate")}
    with pytest.raises(concurrent.futures.TimeoutError):
        client.get(dsk, "after", timeout=0.3, name="timed-out")

    def ended():
        graph = graph_named(client, "timed-out")
        return graph if graph["state"] != "running" else None

    assert wait_until(ended, WAIT, "the scheduler to end the graph")["state"] == "cancelled"
    touch(go)


RACE_SECONDS = 4.0  # how long concurrent graphs keep trying to hit the race below (it shows within ~1s)


def test_threads_sharing_one_client_and_one_large_literal(client):
    array = np.arange(100_000, dtype=np.float64)  # above the inline limit: stored once, referred to
    assert client.get({"warm-up": (inc, 0)}, "warm-up", timeout=RESULT_TIMEOUT) == 1  # the runner is sent already
    expected = float(array.sum())

    def compute(i):
        try:
            return client.get({"array": array, "total": (part_sum, "array", 0, 1), "out": (add, "total", i)}, "out",
                              timeout=RESULT_TIMEOUT) - i
        except Exception as exc:  # reported below, with how many graphs ran before it
            return exc

    ran = 0
    deadline = time.monotonic() + RACE_SECONDS
    with concurrent.futures.ThreadPoolExecutor(8) as threads:
        while time.monotonic() < deadline:
            outcomes = list(threads.map(compute, range(ran, ran + 64)))
            failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            assert not failures, f"{len(failures)} of graphs {ran}..{ran + 63} failed; first: {failures[0]!r}"
            assert outcomes == [expected] * len(outcomes)
            ran += len(outcomes)


# ---------------------------------------------------------------------------
# Graphs from inside tasks, and graphs through failures of processes


def test_tasks_that_run_graphs_of_their_own(client, tmp_path):
    """Both processors hold a task that waits for its own graph: the workers must still run the inner graphs."""
    dsk = {("outer", i): (nested_get, str(tmp_path), i, 2) for i in range(2)}
    dsk["total"] = (add, ("outer", 0), ("outer", 1))
    assert client.get(dsk, ["total", ("outer", 1)], timeout=RESULT_TIMEOUT) == [(0 + 5) * 2 + (1 + 5) * 2, 12]


def test_a_worker_killed_mid_graph_still_gives_the_right_answer(tmp_path):
    log = str(tmp_path / "runs")
    n = 400
    dsk, root = tree_reduction(n)
    dsk.update({("tree", 0, i): (logged_leaf, log, i) for i in range(n)})
    with LocalCluster(n_workers=2, scheduler_args=("--worker-timeout", "3"), timeout=WAIT) as local:
        with connect(local.address, timeout=WAIT) as client:
            baseline = settled_objects(client)
            victim, survivor = local.pids[1], local.pids[2]
            processors = processors_of(victim)
            future = client.get(dsk, root, block=False)

            def under_way():
                pids = [pid for ran_on in read_runs(log).values() for pid in ran_on]
                return pids.count(victim) >= 40 and pids.count(survivor) >= 40

            wait_until(under_way, WAIT, "leaves to run on both workers")
            os.kill(victim, signal.SIGKILL)
            assert wait_gone([psutil.Process(pid) for pid in processors if alive(pid)], WAIT) == []
            assert future.result(RESULT_TIMEOUT) == sum(range(n))
            assert client.status()["scheduler"]["objects"] == baseline
            wait_until(lambda: [w["pid"] for w in client.status()["workers"]] == [survivor], WAIT,
                       "the scheduler to drop the killed worker")

    runs = read_runs(log)
    assert sorted(runs) == list(range(n))
    assert all(pids == [victim, survivor] for pids in runs.values() if len(pids) > 1), "a leaf ran thrice"


DOOMED_CLIENT = """
import os, sys, time
from scaler_jupyter import Client

address, started = sys.argv[1], sys.argv[2]

def blob(i):
    return bytes([i]) * 100_000

def hold(started, *parts):
    with open(started + ".tmp", "w"):
        pass
    os.replace(started + ".tmp", started)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return sum(len(part) for part in parts)

client = Client(address, name="doomed")
dsk = {("blob", i): (blob, i) for i in range(6)}
dsk["hold"] = (hold, started, *[("blob", i) for i in range(6)])
dsk["out"] = (len, (str, "hold"))
client.get(dsk, "out", block=False, name="doomed-graph")
time.sleep(300)
"""


def test_a_client_gone_mid_graph_leaves_the_scheduler_clean(cluster, tmp_path):
    started = str(tmp_path / "started")
    with connect(cluster.address, timeout=WAIT) as observer:

        def alone():
            status = observer.status()
            return status if len(status["clients"]) == 1 and status["tasks"]["held"] == 0 else None

        baseline = wait_until(alone, WAIT, "earlier clients to leave")["scheduler"]["objects"]
        doomed = subprocess.Popen([sys.executable, "-c", DOOMED_CLIENT, cluster.address, started])
        try:
            wait_until(lambda: os.path.exists(started), WAIT * 2, "the doomed client's graph to reach its last task")
            status = observer.status()
            (graph,) = [g for g in status["graphs"] if g["name"] == "doomed-graph"]
            assert graph["state"] == "running" and graph["counts"]["done"] == 6
            assert status["scheduler"]["objects"] == baseline + 1 + 6, "its runner and six intermediate results"
        finally:
            doomed.kill()
            doomed.wait(WAIT)

        def clean():
            status = observer.status()
            return (len(status["clients"]) == 1 and status["tasks"]["held"] == 0
                    and status["scheduler"]["objects"] == baseline
                    and not any(g["name"] == "doomed-graph" and g["state"] == "running" for g in status["graphs"]))

        wait_until(clean, WAIT, "the scheduler to drop the gone client's graph and its results")
        assert observer.get({"a": (inc, 1)}, "a", timeout=RESULT_TIMEOUT) == 2
