"""GraphEngine without a cluster: in this process, and on a thread pool (the path every executor takes).

The programs in ``CASES`` (engine_programs.py) are checked as every pargraph test
module checks its own (cases.py): traced and run, each gives what its plain call gives.

Tasks that must be seen from the test record themselves in module-level state
(this process runs them); a task that must still be running when another fails
waits for a ``threading.Event`` the test sets, so every ordering comes from events.
"""

from __future__ import annotations

import concurrent.futures
import operator
import threading
import weakref
from collections.abc import Iterator

import pytest

from scaler_jupyter.errors import GraphError
from scaler_jupyter.pargraph import GraphEngine, delayed, graph
from tests.pargraph.cases import check_cases
from tests.pargraph.engine_programs import CASES, inc, three_outputs

WAIT = 10.0  # seconds any one event may take

@pytest.fixture(scope="module")
def thread_pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield pool


# ---------------------------------------------------------------------------
# The programs of engine_programs.py


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_program_here_runs_as_its_plain_call(case, tmp_path):
    check_cases(case, tmp_path)


# ---------------------------------------------------------------------------
# Keys in any shape


def test_keys_nested_as_lists_tuples_and_dicts_come_back_in_that_shape(thread_pool):
    dsk, (q, r, third) = three_outputs.to_graph().to_call_dict(50, 3)
    keys = {"all": [q, (r, third)], "one": q, "nested": {"deeper": [[third]]}}
    want = {"all": [10, (2, 58)], "one": 10, "nested": {"deeper": [[58]]}}
    assert GraphEngine().get(dsk, keys) == want
    assert GraphEngine(thread_pool).get(dsk, keys) == want


def test_a_tuple_that_is_a_key_of_the_graph_is_a_key_not_a_shape(thread_pool):
    dsk = {("x", 0): 1, ("x", 1): (operator.add, ("x", 0), 10), "y": (inc.__wrapped__, ("x", 1))}
    for engine in (GraphEngine(), GraphEngine(thread_pool)):
        assert engine.get(dsk, ("x", 1)) == 11
        assert engine.get(dsk, [("x", 1), "y"]) == [11, 12]
        assert engine.get(dsk, (("x", 0), "y")) == (1, 12)


def test_graphs_written_by_hand_run_too(thread_pool):
    """Any Dask-format dict: nested tasks, lists of keys in arguments, aliases and literals."""
    dsk = {"a": 1, "b": (operator.add, "a", (operator.mul, "a", 10)), "c": (sum, ["a", "b", 100]), "d": "c",
           "text": "not a key"}
    for engine in (GraphEngine(), GraphEngine(thread_pool)):
        assert engine.get(dsk, ["d", "text"]) == [112, "not a key"]


def test_a_backend_without_submit_or_get_is_refused():
    with pytest.raises(TypeError, match="needs submit\\(\\) or get\\(\\)"):
        GraphEngine(object()).get({"a": 1}, "a")


def test_repr_says_where_graphs_run(thread_pool):
    assert repr(GraphEngine()) == "GraphEngine(in this process)"
    assert repr(GraphEngine(thread_pool)) == "GraphEngine(ThreadPoolExecutor)"


# ---------------------------------------------------------------------------
# Intermediate results are dropped once no task needs them

ALIVE: set[str] = set()  # names of the Tracked values alive in this process


class Tracked:
    """A value whose name is in ``ALIVE`` for exactly as long as it lives."""

    def __init__(self, name: str) -> None:
        self.name = name
        ALIVE.add(name)
        weakref.finalize(self, ALIVE.discard, name)


@delayed
def make(name):
    return Tracked(name)


@delayed
def grow(previous, name):
    return Tracked(name)  # reads ``previous`` and lets it go


@delayed
def survivors(last):
    """What is still alive while the last task runs (its own argument included)."""
    return sorted(name for name in ALIVE if name.startswith(last.name.split("-")[0]))


@graph
def tracked_chain(prefix, length):
    value = make(f"{prefix}-0")
    for i in range(1, length):  # ``length`` is bound: a loop at trace time
        value = grow(value, f"{prefix}-{i}")
    return survivors(value)


def test_in_this_process_each_intermediate_is_dropped_once_its_last_reader_ran():
    assert tracked_chain("plain", 5) == ["plain-4"], "the plain call keeps only the value in hand"
    dsk, keys = tracked_chain.to_graph(length=5).to_call_dict("here")
    assert GraphEngine().get(dsk, keys) == ["here-4"], "the graph kept intermediates the plain call dropped"
    assert not {name for name in ALIVE if name.startswith("here")}, "nothing of the graph outlives get()"


def test_on_an_executor_intermediates_are_dropped_before_the_end():
    # one thread: a finished task's arguments are let go before the next task starts, so the count is exact
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        dsk, keys = tracked_chain.to_graph(length=5).to_call_dict("pool")
        assert GraphEngine(pool).get(dsk, keys) == ["pool-4"], "the graph kept intermediates the plain call dropped"
    assert not {name for name in ALIVE if name.startswith("pool")}, "nothing of the graph outlives get()"


def test_on_an_executor_of_two_threads_the_first_intermediates_are_gone_before_the_end(thread_pool):
    dsk, keys = tracked_chain.to_graph(length=6).to_call_dict("pair")
    alive_at_the_end = GraphEngine(thread_pool).get(dsk, keys)
    # pair-4 may still sit in the argument list of the task that just read it, on the other thread
    assert set(alive_at_the_end) <= {"pair-4", "pair-5"}, f"intermediates kept until the end: {alive_at_the_end}"


# ---------------------------------------------------------------------------
# The first failure cancels the rest

RAN: list[str] = []  # what the failure tests' tasks did, in order
GATE_STARTED = threading.Event()
RELEASE = threading.Event()


class Boom(Exception):
    """Raised by :func:`boom`: the engine must hand back exactly this."""


def boom(x):
    RAN.append("boom")
    if not GATE_STARTED.wait(WAIT):
        raise TimeoutError("the gate never started")
    raise Boom(f"boom on {x!r}")


def gate(x):
    """Still running when :func:`boom` fails: runs until the test releases it."""
    GATE_STARTED.set()
    if not RELEASE.wait(WAIT):
        raise TimeoutError("nobody released the gate")
    RAN.append("gate")
    return x


def record(name, *dependencies):
    RAN.append(name)
    return name


@pytest.fixture
def failure_state():
    RAN.clear()
    GATE_STARTED.clear()
    RELEASE.clear()
    yield RAN
    RELEASE.set()  # never leave a pool thread blocked


def test_in_this_process_nothing_runs_after_the_first_failure(failure_state):
    GATE_STARTED.set()  # no gate here: the graph runs in order, in this thread
    dsk = {"x": 1, "bad": (boom, "x"), "step": (inc.__wrapped__, "x"), "later": (record, "ran later", "step"),
           "end": (list, ["bad", "later"])}
    with pytest.raises(Boom, match="boom on 1"):
        GraphEngine().get(dsk, "end")
    assert failure_state == ["boom"], "a task ran after the failure"


def test_on_an_executor_the_first_failure_starts_nothing_more(failure_state):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        dsk = {"x": 1, "bad": (boom, "x"), "slow": (gate, "x"), "later": (record, "ran later", "slow"),
               "end": (list, ["bad", "later"])}
        with pytest.raises(Boom, match="boom on 1"):
            GraphEngine(pool).get(dsk, "end")
        assert "ran later" not in failure_state
        RELEASE.set()  # "slow" may now finish: had the graph gone on, "later" would start
    assert failure_state == ["boom", "gate"], "a task started after the failure"


def test_a_failure_raised_in_this_process_keeps_its_type_and_traceback(failure_state):
    GATE_STARTED.set()
    with pytest.raises(Boom) as raised:
        GraphEngine().get({"bad": (boom, 2)}, "bad")
    assert raised.traceback[-1].name == "boom"


# ---------------------------------------------------------------------------
# Graphs that cannot run are refused before anything runs


def test_a_cycle_is_a_graph_error_naming_its_keys(thread_pool, failure_state):
    dsk = {"a": (inc.__wrapped__, "c"), "b": (inc.__wrapped__, "a"), "c": (inc.__wrapped__, "b"),
           "free": (record, "ran free")}
    for engine in (GraphEngine(), GraphEngine(thread_pool)):
        with pytest.raises(GraphError, match="cycle") as raised:
            engine.get(dsk, ["free", "c"])
        assert all(repr(key) in str(raised.value) for key in "abc"), str(raised.value)
    assert failure_state == [], "a task ran although the graph has a cycle"


def test_a_missing_key_is_a_graph_error_naming_it(thread_pool, failure_state):
    dsk = {"a": (record, "ran a"), "b": (len, "a")}
    for engine in (GraphEngine(), GraphEngine(thread_pool)):
        with pytest.raises(GraphError, match="'absent' is not in the graph"):
            engine.get(dsk, {"x": ["a", "absent"]})
    assert failure_state == [], "a task ran although a key is missing"
