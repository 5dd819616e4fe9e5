"""Provenance: every task carries what submitted it (a notebook cell), and the snapshot counts live tasks by it."""

from __future__ import annotations

from scaler_jupyter import task_origin
from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    ClientHello,
    ObjectSpec,
    Payload,
    Results,
    Submit,
    TaskResult,
    TaskSpec,
    WorkerHello,
    decode,
    encode,
)
from scaler_jupyter.protocol.messages import Status
from scaler_jupyter.scheduler.monitor import build_snapshot
from scaler_jupyter.scheduler.state import SchedulerState

FN = b"F" * 16
CLIENT, WORKER = b"client", b"worker"
CELL_A, CELL_B = "In [3]: x = simulate(1)", "In [4]: for k in range(3):"


def spec(task_id: int, origin: str | None) -> TaskSpec:
    return TaskSpec(task_id, FN, Payload([b"args"]), [], None, [], 0, None, origin=origin)


def origins(state: SchedulerState) -> dict:
    [client] = build_snapshot(state, 1.0)["clients"]
    return client["origins"]


def test_the_label_is_the_execution_count_and_the_first_line_of_the_body():
    assert task_origin.cell_label(5, "\n  x = f(3)  \ny = 2") == "In [5]: x = f(3)"
    assert task_origin.cell_label(6, "%%scaler --map k=range(3)\n\nr = k * 2") == "In [6]: r = k * 2"
    assert task_origin.cell_label(7, "") == "In [7]: "
    long = task_origin.cell_label(8, "x = " + "1 + " * 50)
    assert len(long) == task_origin.MAX_LENGTH and long.endswith("…")


def test_the_origin_travels_on_the_wire_and_is_optional():
    [labelled] = decode(encode(Submit([], [spec(1, CELL_A)]))).tasks
    [bare] = decode(encode(Submit([], [spec(2, None)]))).tasks
    assert (labelled.origin, bare.origin) == (CELL_A, None)
    assert TaskSpec(3, FN, Payload([b"a"]), [], None, [], 0, None).origin is None


def test_the_snapshot_counts_live_tasks_by_origin():
    state = SchedulerState(now=0.0)
    state.on_message(CLIENT, ClientHello(PROTOCOL_VERSION, "notebook", "host", 1, True), 0.0)
    state.on_message(WORKER, WorkerHello(PROTOCOL_VERSION, "w", "host", 2, 1, []), 0.0)
    state.on_message(CLIENT, Submit([ObjectSpec(FN, Payload([b"f"]))],
                                    [spec(1, CELL_A), spec(2, CELL_A), spec(3, CELL_B), spec(4, None)]), 0.0)
    state.flush()
    assert origins(state) == {CELL_A: 2, CELL_B: 1}  # tasks without an origin are not counted
    state.on_message(WORKER, Results([TaskResult(1, Status.OK, Payload([b"r"]), "", [])]), 0.0)
    state.flush()
    assert origins(state) == {CELL_A: 1, CELL_B: 1}
    state.on_message(CLIENT, Cancel([3]), 0.0)
    state.on_message(WORKER, Results([TaskResult(2, Status.OK, Payload([b"r"]), "", [])]), 0.0)
    state.flush()
    state.on_message(WORKER, Results([TaskResult(3, Status.CANCELLED, None, "cancelled", [])]), 0.0)
    state.flush()
    assert origins(state) == {}  # an origin with no live task left is gone
