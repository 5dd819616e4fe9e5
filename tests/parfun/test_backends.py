"""parfun on real backends: a process pool, this engine's clusters, Dask clusters; streaming, nesting, errors.

Partitions report the pid that ran them, so each test sees where its work went.
"""

from __future__ import annotations

import collections
import operator
import os
import subprocess
import sys
import textwrap
import time
from itertools import chain

import pytest

import scaler_jupyter.parfun as pf
from tests.helpers import held_tasks, touch, wait_until

RESULT_TIMEOUT = 30.0


# --- work for the partitions: module-level, so that workers import it by name -------------------------------


@pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
             fixed_partition_size=5)
def tag_with_pid(values, offset=0):
    return [(v + offset, os.getpid()) for v in values]


@pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
             fixed_partition_size=2)
def inner_pids(values):
    return [os.getpid() for _ in values]


@pf.parallel(split=pf.per_argument(sizes=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
             fixed_partition_size=1)
def outer_with_inner(sizes):
    """Each partition calls another parallel function: nested on this engine, sequential elsewhere."""
    return [(os.getpid(), inner_pids(list(range(size)))) for size in sizes]


def add_counters(parts):
    return sum(parts, collections.Counter())


@pf.parallel(split=pf.per_argument(lines=pf.py_list.by_chunk), combine_with=add_counters)
def count_words(lines):
    return collections.Counter(chain.from_iterable(map(str.split, lines)))


@pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
             fixed_partition_size=3)
def fails_on_seven(values, flag):
    """The partitions after the failing one hold their worker for long once it failed, unless cancelled.

    Before it fails they return at once: one of them started first must not hold the failing partition
    queued behind it on its worker.
    """
    if 7 in values:
        touch(flag)
        raise LookupError("seven")
    if values[0] > 7 and os.path.exists(flag):
        time.sleep(10 * RESULT_TIMEOUT)
    return list(values)


def wait_for_flag_unless_first(values, flag):
    """Partitions but the first wait until the caller's combine_with has received the first result."""
    if values[0] != 0:
        deadline = time.monotonic() + RESULT_TIMEOUT
        while not os.path.exists(flag):
            if time.monotonic() > deadline:
                return ["timed out: combine_with did not get the first result while the others ran"]
            time.sleep(0.005)
    return list(values)


LINES = [f"w{i % 97} w{i % 13} common w{i % 7}" for i in range(60_000)]
WORDS = collections.Counter(chain.from_iterable(map(str.split, LINES)))


@pytest.fixture(scope="module")
def pool():
    """One process pool of 2 for the module (a backend instance: contexts use it, never shut it)."""
    backend = pf.LocalMultiprocessingBackend(max_workers=2)
    yield backend
    backend.shutdown()


# --- every backend runs partitions where it should -----------------------------------------------------------


def check_ran_elsewhere(result, values, offset=0):
    assert [v for v, _ in result] == [v + offset for v in values]
    pids = {pid for _, pid in result}
    assert os.getpid() not in pids
    return pids


def test_local_multiprocessing(pool):
    with pf.set_parallel_backend_context(pool):
        pids = check_ran_elsewhere(tag_with_pid(list(range(40)), offset=1), range(40), offset=1)
    assert len(pids) <= 2


def test_scaler_remote_on_a_running_cluster(cluster):
    with pf.set_parallel_backend_context("scaler_remote", cluster.address) as backend:
        assert backend.n_workers == 2
        check_ran_elsewhere(tag_with_pid(list(range(40))), range(40))


def test_scaler_local_starts_and_stops_its_own_cluster():
    with pf.set_parallel_backend_context("scaler_local", n_workers=1) as backend:
        pids = backend.cluster.pids
        check_ran_elsewhere(tag_with_pid(list(range(20))), range(20))
    wait_until(lambda: not any(_alive(pid) for pid in pids), RESULT_TIMEOUT, "the private cluster to stop")


def test_an_executor_the_caller_made_is_used_and_left_open(client):
    with pf.set_parallel_backend_context(client):
        check_ran_elsewhere(tag_with_pid(list(range(12))), range(12))
    assert client.submit(operator.add, 1, 2).result(RESULT_TIMEOUT) == 3


def test_dask_remote(dask_cluster):
    with pf.set_parallel_backend_context("dask_remote", dask_cluster) as backend:
        assert backend.n_workers == 2
        check_ran_elsewhere(tag_with_pid(list(range(30))), range(30))


def test_dask_local_starts_and_stops_its_own_cluster():
    pytest.importorskip("distributed")
    from tests.helpers import children_pids

    before = children_pids()
    with pf.set_parallel_backend_context("dask_local", n_workers=1):
        started = children_pids() - before
        check_ran_elsewhere(tag_with_pid(list(range(10))), range(10))
    assert started
    wait_until(lambda: not any(_alive(pid) for pid in started), RESULT_TIMEOUT, "the Dask cluster to stop")


# --- nesting -------------------------------------------------------------------------------------------------


def test_a_parallel_function_inside_a_task_runs_nested_on_the_same_cluster(cluster):
    with pf.set_parallel_backend_context("scaler_remote", cluster.address):
        result = outer_with_inner([3, 4])
    for outer_pid, inner in result:
        assert inner and outer_pid not in inner  # the inner partitions ran on other processes of the cluster


def test_a_parallel_function_inside_a_pool_task_runs_sequentially(pool):
    with pf.set_parallel_backend_context(pool):
        result = outer_with_inner([3, 4])
    for outer_pid, inner in result:
        assert inner == [outer_pid] * len(inner)


# --- streaming, order, errors --------------------------------------------------------------------------------


def test_combine_with_gets_results_while_later_partitions_still_run(cluster, tmp_path):
    flag = str(tmp_path / "first-result-combined")
    checked = pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=list,
                          fixed_partition_size=1)(wait_for_flag_unless_first)

    def combine(parts):
        out = []
        for part in parts:
            out.extend(part)
            touch(flag)  # only now may the other partitions finish
        return out

    checked.combine_with = combine
    with pf.set_parallel_backend_context("scaler_remote", cluster.address):
        assert checked(list(range(6)), flag) == list(range(6))


def first_waits_for_the_sixth(values, flag):
    """The first partition runs until the sixth has run: the other worker must go on meanwhile."""
    if values[0] == 5:
        touch(flag)
    if values[0] == 0:
        deadline = time.monotonic() + RESULT_TIMEOUT
        while not os.path.exists(flag):
            if time.monotonic() > deadline:
                return ["timed out: the sixth partition did not run while the first was running"]
            time.sleep(0.005)
    return list(values)


def test_a_straggler_does_not_stop_the_other_workers(cluster, tmp_path):
    straggling = pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                             fixed_partition_size=1)(first_waits_for_the_sixth)
    with pf.set_parallel_backend_context("scaler_remote", cluster.address):
        assert straggling(list(range(8)), str(tmp_path / "sixth-ran")) == list(range(8))


def test_partitions_stream_with_a_bounded_number_in_flight(pool):
    pulled = []

    def source():
        for i in range(300):
            pulled.append(i)
            yield i

    ahead = []

    def combine(parts):
        out = []
        for part in parts:
            out.extend(part)
            ahead.append(len(pulled) - len(out))
        return out

    numbered = pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=combine,
                           fixed_partition_size=10)(_identity)
    with pf.set_parallel_backend_context(pool):
        assert numbered(source()) == list(range(300))
    running = 2 * pool.n_workers  # partitions kept running per call; twice that at most not yet combined
    assert len(ahead) == 30
    assert ahead[0] > 0  # partitions were read and sent ahead while the first one ran: splitting overlaps work
    assert max(ahead) <= 2 * running * 10  # never more read ahead of what was combined: memory stays flat


def _identity(values):
    return list(values)


def test_an_error_in_a_partition_is_raised_in_the_caller_and_the_rest_is_cancelled(cluster, client, tmp_path):
    with pf.set_parallel_backend_context("scaler_remote", cluster.address), \
            pytest.raises(LookupError, match="seven"):
        fails_on_seven(list(range(60)), str(tmp_path / "failed"))
    # the partitions in flight after the failing one (each would sleep for minutes) are cancelled
    wait_until(lambda: held_tasks(client) == 0, RESULT_TIMEOUT, "the call's other partitions to be cancelled")
    assert client.submit(operator.add, 2, 2).result(RESULT_TIMEOUT) == 4  # the workers are free again


def test_functions_defined_in_a_test_travel_by_value_to_a_process_pool(pool):
    base = 1000

    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=4)
    def shifted(values):
        return [v + base for v in values]

    with pf.set_parallel_backend_context(pool):
        assert shifted(list(range(10))) == [v + 1000 for v in range(10)]


def test_functions_of_a_notebook_or_script_travel_by_value():
    # __main__ of a `python -c` process, as a notebook's: the pool's spawned workers cannot import it by name
    code = textwrap.dedent("""
        import scaler_jupyter.parfun as pf

        @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                     fixed_partition_size=2)
        def cubes(values):
            return [v ** 3 for v in values]

        if __name__ == "__main__":
            with pf.set_parallel_backend_context("local_multiprocessing", max_workers=1):
                print(cubes([1, 2, 3]), len(cubes.last_trace().partitions))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=RESULT_TIMEOUT * 2,
                         check=True)
    assert out.stdout.strip() == "[1, 8, 27] 2"


def test_parallel_map_and_starmap_are_ordered_and_lazy(cluster):
    pulled = []

    def source():
        for i in range(50):
            pulled.append(i)
            yield i

    with pf.set_parallel_backend_context("scaler_remote", cluster.address):
        results = pf.parallel_map(lambda x: x * x, source())
        assert next(results) == 0
        assert len(pulled) <= 2 * 2 + 1  # at most the in-flight bound read ahead
        assert list(results) == [x * x for x in range(1, 50)]
        assert list(pf.parallel_starmap(operator.sub, [(5, 1), (7, 2), (9, 3)])) == [4, 5, 6]
    assert list(pf.parallel_map(operator.add, [1, 2], [10, 20])) == [11, 22]  # no backend: the builtin map


# --- the learner on real runs --------------------------------------------------------------------------------


def test_the_partition_size_is_learned_from_real_runs(pool):
    with pf.set_parallel_backend_context(pool):
        for _ in range(3):
            assert count_words(LINES) == WORDS
    model = count_words.partition_model()
    trace = count_words.last_trace()
    assert len(model["measurements"]) >= 6
    assert model["per_item_seconds"] > 0 and model["per_partition_seconds"] >= 0
    assert 1 <= model["chosen_size"] <= -(-len(LINES) // (3 * 2))  # at least three partitions per worker
    assert len(trace.partitions) >= 2 and sum(p.size for p in trace.partitions) == len(LINES)
    figures = count_words.last_profile()
    # what the report shows adds up and fits the wall time of the call
    assert figures["cpu_seconds"] == pytest.approx(figures["compute_seconds"] + figures["overhead_seconds"])
    assert figures["compute_seconds"] <= figures["wall_seconds"] * pool.n_workers * 1.05
    assert 0 < figures["worker_utilization"] <= 1.05
    assert all(p.compute > 0 and p.load > 0 and p.result_load >= 0 for p in trace.partitions)


def _alive(pid: int) -> bool:
    from tests.helpers import alive

    return alive(pid)
