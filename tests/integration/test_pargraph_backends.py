"""pargraph's graphs on real processes: this engine's Client, a process pool, Dask distributed, and in-process.

Every program of tests/pargraph (the ``CASES`` of its ``*_programs`` modules) runs on every backend
and must give what its plain call gives. The backends:

- ``client``: this engine's ``Client`` (the conftest's module-scoped two-worker ``LocalCluster``), which runs
  the graph scheduler-side;
- ``process_pool``: ``concurrent.futures.ProcessPoolExecutor(2)`` with spawned processes, which find every
  function by reference (plain ``pickle``): what Citi's pargraph fails at; programs pickled by value skip it;
- ``dask``: a Dask ``distributed.Client`` on ``distributed.LocalCluster(n_workers=2, threads_per_worker=1,
  processes=True)``;
- ``in_process``: ``GraphEngine()``.

Then the talk's report example proves its two branches run at once: the first
task of each branch waits for the other to start and logs its pid and times.
Tasks observed from here write files; a task that must still be running when
another fails waits for a "go" file, so every ordering comes from events.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.resource_tracker
import os
import weakref
from collections.abc import Iterator

import pytest

from scaler_jupyter.errors import GraphError
from scaler_jupyter.pargraph import GraphEngine, delayed, graph
from tests.helpers import (
    dask_local_cluster,
    stop_resource_tracker,
    touch,
    wait_for_file,
    wait_until,
    write_atomically,
)
from tests.pargraph import engine_programs, model_programs, tracing_programs
from tests.pargraph.cases import assert_runs_as_plain_call
from tests.pargraph.engine_programs import three_outputs
from tests.pargraph.model_programs import offset
from tests.pargraph.tracing_programs import report, report_files

pytestmark = pytest.mark.timeout(90)

WAIT = 15.0  # seconds any one event may take
RESULT_TIMEOUT = 30.0  # seconds a graph may take on this engine's Client
BACKENDS = ("client", "process_pool", "dask", "in_process")
PARALLEL_BACKENDS = ("client", "process_pool", "dask")
CASES = [*tracing_programs.CASES, *model_programs.CASES, *engine_programs.CASES]


# ---------------------------------------------------------------------------
# Backends


@pytest.fixture(scope="module", autouse=True)
def resource_tracker():
    """Spawned processes (the pool's, Dask's) start multiprocessing's resource tracker; stop it with the module,
    once the pool and Dask are closed, so that no process outlives the module."""
    yield
    stop_resource_tracker()


@pytest.fixture(scope="module")
def process_pool(resource_tracker) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.fixture(scope="module")
def dask_client(resource_tracker):
    distributed = pytest.importorskip("distributed")
    with dask_local_cluster() as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=WAIT)
        yield client


@pytest.fixture
def backend(request):
    """The backend named by the test's parameter: None runs in this process."""
    return {"client": lambda: request.getfixturevalue("client"),
            "process_pool": lambda: request.getfixturevalue("process_pool"),
            "dask": lambda: request.getfixturevalue("dask_client"),
            "in_process": lambda: None}[request.param]()


def get_on(backend):
    """``GraphEngine(backend).get``, bounded on this engine's Client (the others take no timeout).

    On Dask it first waits until the scheduler has forgotten every earlier graph: Dask takes a key it still
    holds for the same value, and ``to_dict``'s keys repeat from graph to graph (see
    :func:`test_on_dask_a_graph_never_gets_another_graph_s_results`, a bug this wait keeps out of the others).
    """
    engine = GraphEngine(backend)
    if on_this_engine(backend):
        return lambda dsk, keys: engine.get(dsk, keys, timeout=RESULT_TIMEOUT)
    if backend is not None and not isinstance(backend, concurrent.futures.Executor):
        def after_earlier_graphs(dsk, keys):
            wait_until(lambda: idle(backend), WAIT, "Dask to forget the earlier graphs")
            return engine.get(dsk, keys)

        return after_earlier_graphs
    return engine.get


def case_params() -> list:
    # plain pickle cannot send a closure (that is what cloudpickle is for): the pool skips programs sent by value
    return [pytest.param(name, case, id=f"{name}-{case}") for name in BACKENDS for case in CASES
            if not (name == "process_pool" and case.by_value)]


# ---------------------------------------------------------------------------
# Every program of the tests, on every backend


@pytest.mark.parametrize(("backend", "case"), case_params(), indirect=["backend"])
def test_every_program_runs_as_its_plain_call(backend, case, tmp_path):
    assert_runs_as_plain_call(case, get_on(backend), tmp_path)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_keys_nested_as_lists_tuples_and_dicts(backend):
    dsk, (q, r, third) = three_outputs.to_graph().to_call_dict(50, 3)
    keys = {"all": [q, (r, third)], "one": q, "nested": {"deeper": [[third]]}}
    assert get_on(backend)(dsk, keys) == {"all": [10, (2, 58)], "one": 10, "nested": {"deeper": [[58]]}}


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "dask"], indirect=True)
def test_graphs_with_the_same_keys_back_to_back_each_get_their_own_results(backend):
    engine = GraphEngine(backend)
    assert [engine.get(*offset.to_graph().to_call_dict(x, 100)) for x in range(5)] == [100, 101, 102, 103, 104]


def test_on_dask_a_graph_never_gets_another_graph_s_results(dask_client):
    wait_until(lambda: idle(dask_client), WAIT, "Dask to forget the earlier graphs")
    first, key = offset.to_graph().to_call_dict(1, 5)
    [held] = dask_client.get(first, [key], sync=False)  # another user of the cluster still holds its result
    try:
        assert held.result(WAIT) == 6
        assert GraphEngine(dask_client).get(*offset.to_graph().to_call_dict(1, 100)) == 101
    finally:
        held.release()


def test_module_level_decorated_functions_reach_a_process_pool_by_reference(process_pool):
    """The pool pickles with plain pickle: a wrapper that did not carry its function's name would fail here."""
    assert process_pool.submit(tracing_programs.extract_emails, [{"email": "A@b.c"}]).result(WAIT) == ["a@b.c"]
    assert process_pool.submit(report, os.devnull, os.devnull).result(WAIT) == {}


# ---------------------------------------------------------------------------
# The talk's report: two independent branches run at once


def read_branches(directory) -> dict[str, tuple[int, float, float, bool]]:
    """What the first task of each branch logged: name -> (pid, start, end, whether it met the other)."""
    branches = {}
    for line in (directory / "branches").read_text().splitlines():
        name, pid, started, ended, met = line.split()
        branches[name] = (int(pid), float(started), float(ended), met == "True")
    return branches


@pytest.mark.parametrize("backend", PARALLEL_BACKENDS, indirect=True)
def test_the_report_s_two_branches_run_in_parallel(backend, tmp_path):
    files = report_files(tmp_path)
    expected = report(**files)  # the plain call: sequential, logs nothing (no rendezvous file yet)
    touch(tmp_path / "rendezvous")
    dsk, key = report.to_graph().to_call_dict(**files)
    assert get_on(backend)(dsk, key) == expected

    branches = read_branches(tmp_path)
    assert set(branches) == {"read_file", "read_table"}
    (file_pid, file_start, file_end, file_met), (table_pid, table_start, table_end, table_met) = (
        branches["read_file"], branches["read_table"])
    assert file_met and table_met, f"a branch waited {tracing_programs.MEET_TIMEOUT:g}s for the other: {branches}"
    assert file_pid != table_pid, "both branches ran in one process"
    assert file_start < table_end and table_start < file_end, f"the branches' runs do not overlap: {branches}"


# ---------------------------------------------------------------------------
# Intermediate results are dropped before the end, on a process pool
#
# A Marked value writes ``freed-<name>-<pid>`` when a copy of it dies in process ``pid``; unpickling makes a
# copy, so the files say which process let go of which value.


class Marked:
    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.name = name
        weakref.finalize(self, mark_freed, directory, name)

    def __reduce__(self):
        return Marked, (self.directory, self.name)


def mark_freed(directory: str, name: str) -> None:
    touch(os.path.join(directory, f"freed-{name}-{os.getpid()}"))


@delayed
def make_marked(directory, name):
    return Marked(directory, name)


@delayed
def grow_marked(previous, directory, name):
    return Marked(directory, name)


@delayed
def freed_in(last, directory, pid):
    """The Marked values process ``pid`` had let go of when this task started."""
    return sorted(name.split("-")[1] for name in os.listdir(directory) if name.endswith(f"-{pid}"))


@graph
def marked_chain(directory, pid, length):
    value = make_marked(directory, "m0")
    for i in range(1, length):
        value = grow_marked(value, directory, f"m{i}")
    return freed_in(value, directory, pid)


def test_on_a_process_pool_intermediates_are_dropped_before_the_end(process_pool, tmp_path):
    dsk, key = marked_chain.to_graph(length=5).to_call_dict(str(tmp_path), os.getpid())
    freed_before_the_end = GraphEngine(process_pool).get(dsk, key)
    assert {"m0", "m1", "m2"} <= set(freed_before_the_end), freed_before_the_end
    assert "m4" not in freed_before_the_end, "the last task's own argument was dropped"


# ---------------------------------------------------------------------------
# The first failure cancels the rest; a cycle is refused


class PargraphTaskError(Exception):
    """Raised by :func:`explode`: a type of this module's own, so the backend must hand back exactly it."""


@delayed
def hold(directory):
    """Say it started, run until the test writes ``go``, then say it ended."""
    write_atomically(os.path.join(directory, "hold-started"), str(os.getpid()))
    wait_for_file(os.path.join(directory, "go"), WAIT)
    write_atomically(os.path.join(directory, "hold-ended"), "")
    return "held"


@delayed
def explode(directory):
    wait_for_file(os.path.join(directory, "hold-started"), WAIT)  # fail only once ``hold`` runs
    raise PargraphTaskError("exploded")


@delayed
def ran(directory, name, dependency):
    """The proof that this task ran: a line in ``runs``."""
    fd = os.open(os.path.join(directory, "runs"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name}\n".encode())
    finally:
        os.close(fd)
    return name


@graph
def fails_midway(directory):
    return ran(directory, "after the failure", explode(directory)), ran(directory, "after hold", hold(directory))


def on_this_engine(backend) -> bool:
    return type(backend).__module__.startswith("scaler_jupyter")


def idle(backend) -> bool:
    """Nothing of any graph is left on the backend's scheduler (a process pool has none)."""
    if on_this_engine(backend):
        return backend.status()["tasks"]["held"] == 0
    if isinstance(backend, concurrent.futures.ProcessPoolExecutor):
        return True
    return backend.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_first_failure_cancels_the_rest(backend, tmp_path):
    dsk, key = fails_midway.to_graph().to_call_dict(str(tmp_path))
    if backend is None:  # in this process one task runs at a time: ``hold`` must not wait, nor ``explode``
        touch(tmp_path / "go")
        touch(tmp_path / "hold-started")
    with pytest.raises(PargraphTaskError, match="exploded") as raised:
        get_on(backend)(dsk, key)
    assert type(raised.value) is PargraphTaskError
    if backend is not None:
        touch(tmp_path / "go")  # had the graph gone on, "after hold" could now run
        if not on_this_engine(backend):  # this engine cancels ``hold``; the others let it end
            wait_until(lambda: os.path.exists(tmp_path / "hold-ended"), WAIT, "hold to end")
        wait_until(lambda: idle(backend), WAIT, "the backend to drop the failed graph")
    runs = (tmp_path / "runs").read_text().splitlines() if (tmp_path / "runs").exists() else []
    assert runs == [], f"tasks ran after the graph failed: {runs}"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_cycle_is_a_graph_error_before_anything_runs(backend, tmp_path):
    dsk = {"a": (ran.__wrapped__, str(tmp_path), "in the cycle", "b"), "b": (abs, "a"),
           "free": (ran.__wrapped__, str(tmp_path), "free")}
    with pytest.raises(GraphError, match="cycle"):
        get_on(backend)(dsk, ["free", "a"])
    assert not (tmp_path / "runs").exists(), "a task ran although the graph has a cycle"
