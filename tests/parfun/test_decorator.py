"""The decorator in the caller's process: metadata, sequential fallback, order and laziness, errors, pickling,
backends' scoping, profile and trace export (no worker processes)."""

from __future__ import annotations

import csv
import inspect
import json
import pickle
import re

import cloudpickle
import pytest

import scaler_jupyter.parfun as pf


@pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
             fixed_partition_size=2)
def squares(values: list[int], offset: int = 0) -> list[int]:
    """Square each value, then add ``offset``."""
    return [v * v + offset for v in values]


def test_keeps_the_functions_name_docstring_signature_and_original():
    assert squares.__name__ == "squares"
    assert squares.__qualname__ == "squares"
    assert squares.__doc__ == "Square each value, then add ``offset``."
    assert str(inspect.signature(squares)) == "(values: 'list[int]', offset: 'int' = 0) -> 'list[int]'"
    assert squares.__wrapped__([1, 2], 1) == [2, 5]
    assert not isinstance(squares.__wrapped__, pf.ParallelFunction)


def test_without_a_backend_the_original_runs_once_on_the_whole_input(caplog):
    seen = []

    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=1)
    def record(values):
        seen.append(values)
        return list(values)

    assert record([1, 2, 3]) == [1, 2, 3]
    assert seen == [[1, 2, 3]]  # not partitioned, not combined
    assert "runs sequentially" in caplog.text
    with pf.set_parallel_backend_context("local_single_process"):
        with pf.set_parallel_backend_context("none"):
            assert record([4, 5]) == [4, 5]
        assert seen[-1] == [4, 5]
        assert record([6, 7]) == [6, 7]
    assert seen[-2:] == [(6,), (7,)]


def test_partitions_are_combined_in_order_lazily_as_combine_with_asks():
    events = []

    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=list, fixed_partition_size=2)
    def tagged(values):
        events.append(("run", values))
        return values

    def combine(parts):
        out = []
        for part in parts:
            events.append(("combine", part))
            out.extend(part)
        return out

    tagged.combine_with = combine
    with pf.set_parallel_backend_context("local_single_process"):
        assert tagged([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]
    # the partitions are run one by one as combine_with asks for them (the first two are read to see there are two)
    assert events == [("run", (1, 2)), ("combine", (1, 2)), ("run", (3, 4)), ("combine", (3, 4)),
                      ("run", (5,)), ("combine", (5,))]


def test_combine_with_may_stop_early_and_the_rest_is_not_run():
    ran = []

    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=lambda parts: next(iter(parts)),
                 fixed_partition_size=1)
    def first(values):
        ran.append(values)
        return values[0]

    with pf.set_parallel_backend_context("local_single_process"):
        assert first([7, 8, 9, 10]) == 7
    assert ran == [(7,)]


def test_an_empty_input_gives_combine_with_no_results():
    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk),
                 combine_with=lambda parts: ("combined", list(parts)))
    def never_called(values):
        raise AssertionError("no partition to run")

    with pf.set_parallel_backend_context("local_single_process"):
        assert never_called([]) == ("combined", [])
    assert never_called.last_profile()["partitions"] == 0


def test_one_partition_runs_in_the_caller_without_serialization():
    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=10)
    def unpicklable_result(values):
        return [lambda v=v: v for v in values]  # plain pickle cannot carry these: nothing is serialized

    with pf.set_parallel_backend_context("local_multiprocessing", max_workers=1) as backend:
        result = unpicklable_result([1, 2, 3])
        assert [f() for f in result] == [1, 2, 3]
        trace = unpicklable_result.last_trace()
        assert trace.sequential and len(trace.partitions) == 1
    with pytest.raises(RuntimeError, match="after shutdown"):  # no pool process was ever started, and it is shut
        backend.submit(abs, 1)


def test_errors_of_the_function_and_of_combine_with_reach_the_caller():
    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=1)
    def fails_on_three(values):
        if 3 in values:
            raise KeyError("three")
        return values

    with pf.set_parallel_backend_context("local_single_process"):
        with pytest.raises(KeyError, match="three"):
            fails_on_three([1, 2, 3, 4])

        def refuse(parts):
            raise ZeroDivisionError("combine")

        fails_on_three.combine_with = refuse
        with pytest.raises(ZeroDivisionError, match="combine"):
            fails_on_three([1, 2])


def test_partition_sizes_are_validated_and_taken_from_the_arguments():
    with pytest.raises(ValueError, match="cannot both be set"):
        pf.parallel(split=pf.all_arguments(pf.py_list.by_chunk), combine_with=list, initial_partition_size=2,
                    fixed_partition_size=3)
    for bad in (0, -1, 2.5, "10", True):
        with pytest.raises(ValueError, match="positive int"):
            pf.parallel(split=pf.all_arguments(pf.py_list.by_chunk), combine_with=list, fixed_partition_size=bad)

    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=lambda values, step: step)
    def stepped(values, step):
        return list(values)

    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 initial_partition_size=lambda values: len(values) // 4)
    def started(values):
        return list(values)

    with pf.set_parallel_backend_context("local_single_process"):
        assert stepped(list(range(10)), 4) == list(range(10))
        assert [p.size for p in stepped.last_trace().partitions] == [4, 4, 2]
        assert started(list(range(100))) == list(range(100))
        assert started.last_trace().partitions[0].requested_size == 25
        with pytest.raises(ValueError, match="fixed_partition_size must be a positive int"):
            stepped([1, 2], 0)


def test_decorates_methods():
    class Scaler:
        def __init__(self, factor):
            self.factor = factor

        @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                     fixed_partition_size=2)
        def scale(self, values):
            return [v * self.factor for v in values]

    with pf.set_parallel_backend_context("local_single_process"):
        assert Scaler(3).scale([1, 2, 3]) == [3, 6, 9]


def test_module_level_functions_pickle_by_reference():
    data = pickle.dumps(squares)
    assert len(data) < 200 and b"squares" in data
    assert pickle.loads(data) is squares
    assert cloudpickle.loads(cloudpickle.dumps(squares)) is squares


def test_nested_functions_pickle_by_value_with_cloudpickle():
    def make(offset):
        @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                     fixed_partition_size=2)
        def shifted(values):
            """Shift every value."""
            return [v + offset for v in values]

        return shifted

    shifted = make(100)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(shifted)  # the standard pickler cannot carry a function by value
    copy = cloudpickle.loads(cloudpickle.dumps(shifted))
    assert copy is not shifted and isinstance(copy, pf.ParallelFunction)
    assert (copy.__name__, copy.__doc__) == ("shifted", "Shift every value.")
    assert copy.__wrapped__([1]) == [101]
    with pf.set_parallel_backend_context("local_single_process"):
        assert copy([1, 2, 3]) == [101, 102, 103]


def test_backend_contexts_nest_restore_and_shut_down_only_what_they_made():
    made = pf.LocalSingleProcessBackend()
    assert pf.get_parallel_backend() is None
    pf.set_parallel_backend(made)
    with pf.set_parallel_backend_context("local_multiprocessing", max_workers=1) as outer:
        assert pf.get_parallel_backend() is outer
        with pf.set_parallel_backend_context("none"):
            assert pf.get_parallel_backend() is None
        assert pf.get_parallel_backend() is outer
    assert pf.get_parallel_backend() is made
    with pytest.raises(RuntimeError, match="after shutdown"):
        outer.submit(abs, 1)  # made by name in the context: shut down with it
    with pf.set_parallel_backend_context(made):
        pass
    assert made.submit(abs, -1).result() == 1  # an instance passed in is left running
    with pytest.raises(ValueError, match=r"unknown parallel backend 'gpu'.*local_multiprocessing"):
        pf.set_parallel_backend("gpu")
    with pytest.raises(ValueError, match="settings are given to a backend made by name"):
        pf.set_parallel_backend(made, n_workers=2)


def test_profile_prints_a_report_consistent_with_the_trace(capsys):
    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=500, profile=True)
    def words(values):
        return [len(v.split()) for v in values]

    with pf.set_parallel_backend_context("local_single_process"):
        words(["a b c"] * 2_000)
    report = capsys.readouterr().err
    assert re.search(r"words\(\): call 1, 2,000 items in 4 partitions on local_single_process \(1 workers\)", report)
    for label in ("CPU time", "compute", "overhead", "partitioning", "transfer", "scheduling", "combining",
                  "partition size  fixed at 500"):
        assert label in report
    figures = words.last_profile()
    assert figures["cpu_seconds"] == pytest.approx(figures["compute_seconds"] + figures["overhead_seconds"])
    assert figures["overhead_seconds"] == pytest.approx(
        figures["partitioning_seconds"] + figures["transfer_seconds"] + figures["scheduling_seconds"]
        + figures["combining_seconds"])
    assert 0 < figures["compute_seconds"] <= figures["wall_seconds"]  # in the caller: one partition at a time


def test_trace_export_appends_one_row_per_partition(tmp_path):
    path = tmp_path / "trace.csv"

    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=3, trace_export=str(path))
    def identity(values):
        return list(values)

    with pf.set_parallel_backend_context("local_single_process"):
        identity(list(range(7)))
        identity(list(range(4)))
    with open(path) as file:
        rows = list(csv.DictReader(file))
    assert [(row["call"], row["index"], row["size"]) for row in rows] == [
        ("1", "0", "3"), ("1", "1", "3"), ("1", "2", "1"), ("2", "0", "3"), ("2", "1", "1")]
    assert all(float(row["cost_seconds"]) >= float(row["compute_seconds"]) >= 0 for row in rows)


def test_with_a_plain_generator_the_partitioner_chooses_sizes_and_costs_are_still_learned(capsys):
    def thirds(values):  # plain: no sizes to receive
        step = -(-len(values) // 3)
        for start in range(0, len(values), step):
            yield (values[start:start + step],)

    @pf.parallel(split=pf.per_argument(values=thirds), combine_with=pf.py_list.concat, profile=True)
    def doubled(values):
        return [2 * v for v in values]

    with pf.set_parallel_backend_context("local_single_process"):
        assert doubled(list(range(30))) == [2 * v for v in range(30)]
    trace = doubled.last_trace()
    assert [(p.requested_size, p.size) for p in trace.partitions] == [(None, 10)] * 3
    assert [m["size"] for m in doubled.partition_model()["measurements"]] == [10, 10, 10]
    assert "chosen by the partitioner (a plain generator)" in capsys.readouterr().err


def test_partition_model_is_plain_data():
    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat)
    def identity(values):
        return list(values)

    with pf.set_parallel_backend_context("local_single_process"):
        for _ in range(3):
            assert identity(list(range(3_000))) == list(range(3_000))
    model = identity.partition_model()
    assert json.loads(json.dumps(model)) == model
    assert model["measurements"] and {"size", "seconds", "exploring"} <= set(model["measurements"][0])
    assert model["state"] in ("exploring", "learned") and model["chosen_size"] >= 1
