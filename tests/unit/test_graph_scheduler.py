"""Graphs in the scheduler's rules, without sockets: release on dependencies, results kept and freed, failures."""

from __future__ import annotations

import msgpack

from scaler_jupyter.protocol import (
    Cancel,
    DeleteObjects,
    GraphTask,
    Payload,
    PutObjects,
    Results,
    SubmitGraph,
    TaskResult,
    is_result_object_id,
    result_object_id,
)
from scaler_jupyter.protocol.feed import encode_snapshot
from scaler_jupyter.protocol.graph_states import GraphState, NodeState
from scaler_jupyter.protocol.messages import ObjectSpec, Status
from scaler_jupyter.scheduler import graphs
from tests.unit.scheduler_harness import (
    CLIENT,
    FUNCTION,
    OTHER,
    OTHER_CLIENT,
    W1,
    W2,
    Scheduler,
    assigned,
    messages,
    ok,
    spec,
)


def graph(*nodes: tuple[int, list[int], bool], graph_id: int = 1) -> SubmitGraph:
    """``nodes``: (task id, dependencies, output) in dependency order."""
    return SubmitGraph(graph_id, "g", [FUNCTION], [spec(t) for t, _, _ in nodes],
                       [GraphTask(t, f"key-{t}", list(deps), out) for t, deps, out in nodes])


def results_to(out, peer) -> list[TaskResult]:
    return [r for m in messages(out, peer, Results) for r in m.results]


def failed(task_id: int) -> TaskResult:
    return TaskResult(task_id, Status.ERROR, Payload([b"pickled exception"]), "ValueError: boom", [0.1, 0.1, 0])


def setup(workers=(W1,)) -> Scheduler:
    s = Scheduler()
    s.client()
    for w in workers:
        s.worker(w)
    return s


def diamond(s: Scheduler) -> list:
    """0 -> (1, 2) -> 3; only 3 is an output."""
    s.send(CLIENT, graph((0, [], False), (1, [0], False), (2, [0], False), (3, [1, 2], True)))
    return s.flush()


def test_only_tasks_without_dependencies_start():
    s = setup()
    out = diamond(s)
    assert assigned(out) == {W1: [0]}
    assert s.snapshot()["graphs"][0]["counts"] == {"waiting": 3, "ready": 0, "running": 1, "done": 0,
                                                   "failed": 0, "cancelled": 0}


def test_a_result_is_kept_for_its_dependents_and_travels_with_them():
    s = setup()
    diamond(s)
    out = s.report(W1, ok(0))
    assert results_to(out, CLIENT) == []  # not an output: it stays on the scheduler
    assert sorted(assigned(out)[W1]) == [1, 2]
    [assign] = [m for p, m in out if p == W1 and hasattr(m, "tasks")]
    assert result_object_id(0) in {o.object_id for o in assign.objects}
    assert result_object_id(0) in assign.tasks[0].object_ids
    assert result_object_id(0) in s.state.objects


def test_a_result_is_freed_when_its_last_dependent_ends():
    s = setup()
    diamond(s)
    s.report(W1, ok(0))
    out = s.report(W1, ok(1))
    assert result_object_id(0) in s.state.objects  # task 2 still needs it
    assert assigned(out) == {}  # 3 waits for 2
    out = s.report(W1, ok(2))
    assert result_object_id(0) not in s.state.objects
    assert [m.object_ids for m in messages(out, W1, DeleteObjects)] == [[result_object_id(0)]]
    assert assigned(out) == {W1: [3]}
    out = s.report(W1, ok(3))
    assert [r.task_id for r in results_to(out, CLIENT)] == [3]
    assert not any(is_result_object_id(o) for o in s.state.objects)
    assert not s.state.tasks and not s.state.graphs
    [entry] = s.snapshot()["graphs"]
    assert entry["state"] == "done" and entry["counts"]["done"] == 4
    assert entry["tasks"] == {f"key-{t}": "done" for t in range(4)}


def test_an_output_with_dependents_goes_to_the_client_and_stays_for_them():
    s = setup()
    s.send(CLIENT, graph((0, [], True), (1, [0], True)))
    s.flush()
    out = s.report(W1, ok(0))
    assert [r.task_id for r in results_to(out, CLIENT)] == [0]
    assert assigned(out) == {W1: [1]}


def test_the_first_failure_ends_the_graph_and_stops_running_tasks():
    s = setup(workers=(W1, W2))
    s.send(CLIENT, graph((0, [], False), (1, [], False), (2, [0, 1], True), (3, [2], True)))
    out = s.flush()
    where = {t: w for w, ts in assigned(out).items() for t in ts}
    assert set(where) == {0, 1}
    out = s.report(where[0], failed(0))
    assert [(r.task_id, r.status) for r in results_to(out, CLIENT)] == [(0, Status.ERROR)]
    assert [m.task_ids for m in messages(out, where[1], Cancel)] == [[1]]
    assert not s.state.tasks and not s.state.graphs and not len(s.state.pending)
    entry = s.snapshot()["graphs"][0]
    assert entry["state"] == "failed"
    assert entry["counts"] == {"waiting": 0, "ready": 0, "running": 0, "done": 0, "failed": 1, "cancelled": 3}
    out = s.report(where[1], ok(1))  # it had finished before the cancel arrived: dropped
    assert results_to(out, CLIENT) == [] and result_object_id(1) not in s.state.objects


def test_graph_states_are_enums_in_the_scheduler_and_their_values_on_the_wire():
    s = setup()
    diamond(s)
    s.report(W1, ok(0))
    snapshot = s.snapshot()
    [entry] = snapshot["graphs"]
    assert entry["state"] is GraphState.RUNNING
    assert set(entry["tasks"].values()) == {NodeState.DONE, NodeState.RUNNING, NodeState.WAITING}
    wire = msgpack.unpackb(encode_snapshot(snapshot)[1])["graphs"][0]
    assert type(wire["state"]) is str and wire == entry
    assert set(wire["counts"]) == {state.value for state in NodeState}


def test_cancelling_any_task_cancels_the_graph():
    s = setup()
    diamond(s)
    s.report(W1, ok(0))
    s.send(CLIENT, Cancel([3]))  # a waiting task
    out = s.flush()
    assert sorted(t for m in messages(out, W1, Cancel) for t in m.task_ids) == [1, 2]
    assert not s.state.tasks and result_object_id(0) not in s.state.objects
    assert s.snapshot()["graphs"][0]["state"] == "cancelled"


def test_a_dead_worker_s_graph_tasks_run_elsewhere_with_the_results_they_need():
    s = setup(workers=(W1, W2))
    s.send(CLIENT, graph((0, [], False), (1, [0], True)))
    out = s.flush()
    [first] = [w for w, ts in assigned(out).items() if ts == [0]]
    out = s.report(first, ok(0))
    [second] = list(assigned(out))
    s.state.on_disconnect(second)
    out = s.flush()
    [third] = list(assigned(out))
    assert third != second and assigned(out)[third] == [1]
    [assign] = [m for p, m in out if p == third and hasattr(m, "tasks")]
    assert result_object_id(0) in {o.object_id for o in assign.objects} or result_object_id(0) in \
        s.state.workers[third].objects


def test_a_client_leaving_mid_graph_frees_everything():
    s = setup()
    diamond(s)
    s.report(W1, ok(0))
    s.send(CLIENT, PutObjects([]))
    s.state.on_disconnect(CLIENT)
    s.flush()
    assert not s.state.tasks and not s.state.graphs and len(s.state.objects) == 0


def test_malformed_graphs_are_refused_whole():
    s = setup()
    cases = [
        graph((0, [1], True), (1, [], False)),  # a dependency sent after its dependent: no cycle can be expressed
        graph((0, [], False), (0, [], True)),  # the same task twice
        graph((OTHER, [], True)),  # another client's id
        SubmitGraph(1, "g", [FUNCTION], [spec(0)], [GraphTask(1, "k", [], True)]),  # node and task disagree
        SubmitGraph(1, "g", [FUNCTION], [spec(0), spec(1)], [GraphTask(0, "k", [], True)]),
    ]
    for message in cases:
        s.send(CLIENT, message)
        out = s.flush()
        assert [r.status for r in results_to(out, CLIENT)] == [Status.INVALID]
        assert assigned(out) == {} and not s.state.tasks and not s.state.graphs


def test_a_graph_cannot_depend_on_another_client_s_task():
    s = setup()
    s.client(OTHER_CLIENT)
    s.send(CLIENT, graph((0, [], False)))
    s.flush()
    s.send(OTHER_CLIENT, graph((OTHER, [0], True)))
    out = s.flush()
    assert [r.status for r in results_to(out, OTHER_CLIENT)] == [Status.INVALID]


def test_clients_cannot_store_objects_under_result_ids():
    s = setup()
    s.send(CLIENT, PutObjects([ObjectSpec(result_object_id(7), Payload([b"forged"]))]))
    s.flush()
    assert result_object_id(7) not in s.state.objects


def test_deeper_tasks_go_first_when_both_are_ready():
    """The client gives each task its depth as priority, so a released task overtakes waiting leaves and the
    results it needs are freed sooner."""
    s = setup()
    leaves = [(t, [], False) for t in range(10)]
    s.send(CLIENT, SubmitGraph(1, "g", [FUNCTION], [spec(t, priority=1) for t in range(10)] + [spec(10, priority=2)],
                               [GraphTask(t, f"leaf-{t}", [], False) for t, _, _ in leaves]
                               + [GraphTask(10, "top", [0], True)]))
    out = s.flush()
    held = len(assigned(out)[W1])
    assert held < 10  # the worker's queue is bounded: the other leaves wait on the scheduler
    out = s.report(W1, ok(0))
    assert assigned(out)[W1][0] == 10


def test_a_finished_graph_keeps_only_its_monitor_entry():
    s = setup()
    diamond(s)
    for task_id in range(4):
        s.report(W1, ok(task_id))
    [graph] = s.state.finished_graphs
    assert graph.task_ids == [] and graph.index == {} and graph.dependents == []
    [entry] = s.snapshot()["graphs"]
    assert entry["state"] == "done" and entry["total"] == 4 and entry["counts"]["done"] == 4
    assert len(entry["tasks"]) == 4


def test_a_small_graph_reports_each_task_s_run_time_and_result_and_asks_its_tasks_for_them():
    s = setup()
    out = diamond(s)
    [assign] = [m for p, m in out if p == W1 and hasattr(m, "tasks")]
    assert all(task.summarize for task in assign.tasks)  # the worker is asked for a short repr
    assert "durations" not in s.snapshot()["graphs"][0]  # nothing ended yet
    s.report(W1, TaskResult(0, Status.OK, Payload([b"r"]), "array([1, 2])", [0.25, 0.2, 1000]))
    [entry] = s.snapshot()["graphs"]
    assert entry["durations"] == {"key-0": 0.25} and entry["results"] == {"key-0": "array([1, 2])"}
    for task_id in (1, 2, 3):
        s.report(W1, TaskResult(task_id, Status.OK, Payload([b"r"]), str(task_id), [0.5, 0.5, 1000]))
    [entry] = s.snapshot()["graphs"]  # kept once the graph ended
    assert entry["state"] == "done"
    assert entry["results"] == {"key-0": "array([1, 2])", "key-1": "1", "key-2": "2", "key-3": "3"}
    assert entry["durations"]["key-3"] == 0.5


def test_a_graph_too_large_to_click_reports_no_details():
    s = setup()
    n = graphs.DETAILS_REPORTED + 1
    s.send(CLIENT, graph(*[(t, [], True) for t in range(n)]))
    out = s.flush()
    [assign] = [m for p, m in out if p == W1 and hasattr(m, "tasks")]
    assert not any(task.summarize for task in assign.tasks)
    s.report(W1, ok(assign.tasks[0].task_id))
    assert "durations" not in s.snapshot()["graphs"][0]
