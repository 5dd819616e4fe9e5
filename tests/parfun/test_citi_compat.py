"""Citi's parfun 7.2.2 names and behaviours on ours: its module paths, sessions, the legacy names."""

from __future__ import annotations

import threading

import pytest

import scaler_jupyter.parfun as pf
from scaler_jupyter.parfun import backends


def square(x):
    return x * x


def fails(x):
    raise ValueError(f"no {x}")


def total(values):
    return sum(values)


def submit_nested(backend, x):
    """A task that submits a task of its own through the backend it was given."""
    with backend.session() as session:
        return session.submit(square, x).result()


def test_citis_module_paths_import_our_objects():
    from scaler_jupyter.parfun.backend.dask import DaskCurrentBackend, DaskLocalClusterBackend, DaskRemoteClusterBackend
    from scaler_jupyter.parfun.backend.local_multiprocessing import LocalMultiprocessingBackend
    from scaler_jupyter.parfun.backend.mixins import BackendEngine, BackendSession, ProfiledFuture
    from scaler_jupyter.parfun.backend.scaler import ScalerLocalBackend, ScalerRemoteBackend
    from scaler_jupyter.parfun.combine.collection import list_concat
    from scaler_jupyter.parfun.combine.dataframe import df_concat
    from scaler_jupyter.parfun.decorators import parallel
    from scaler_jupyter.parfun.entry_point import BACKEND_REGISTRY, set_parallel_backend_context
    from scaler_jupyter.parfun.functions import parallel_map
    from scaler_jupyter.parfun.partition.api import all_arguments, multiple_arguments, per_argument
    from scaler_jupyter.parfun.partition.collection import list_by_chunk
    from scaler_jupyter.parfun.partition.dataframe import df_by_group, df_by_row
    from scaler_jupyter.parfun.partition.object import (
        PartitionGenerator,
        SimplePartitionIterator,
        SmartPartitionGenerator,
    )
    from scaler_jupyter.parfun.partition.utility import with_partition_size

    from scaler_jupyter.parfun import parfun

    assert (parallel, per_argument, multiple_arguments, all_arguments) == (
        pf.parallel, pf.per_argument, pf.multiple_arguments, pf.all_arguments)
    assert (list_by_chunk, list_concat) == (pf.py_list.by_chunk, pf.py_list.concat)
    assert (df_by_row, df_by_group, df_concat) == (pf.dataframe.by_row, pf.dataframe.by_group, pf.dataframe.concat)
    assert (parallel_map, with_partition_size, set_parallel_backend_context) == (
        pf.parallel_map, pf.with_partition_size, pf.set_parallel_backend_context)
    assert (BackendEngine, BackendSession, ProfiledFuture) == (pf.Backend, pf.BackendSession, pf.ProfiledFuture)
    assert (LocalMultiprocessingBackend, ScalerLocalBackend, ScalerRemoteBackend) == (
        pf.LocalMultiprocessingBackend, pf.ScalerLocalBackend, pf.ScalerRemoteBackend)
    assert (DaskLocalClusterBackend, DaskRemoteClusterBackend, DaskCurrentBackend) == (
        pf.DaskLocalBackend, pf.DaskRemoteBackend, pf.DaskCurrentBackend)
    assert issubclass(DaskLocalClusterBackend, DaskRemoteClusterBackend)
    assert issubclass(ScalerLocalBackend, ScalerRemoteBackend)
    assert {"none", "dask_current", "scaler_local", "local_multiprocessing"} <= set(BACKEND_REGISTRY)
    assert BACKEND_REGISTRY["none"]() is None
    assert all(alias is not None for alias in (PartitionGenerator, SimplePartitionIterator, SmartPartitionGenerator))
    with pytest.warns(DeprecationWarning):
        legacy = parfun(split=pf.all_arguments(pf.py_list.by_chunk), combine_with=sum)(total)
    assert legacy([1, 2, 3]) == 6


def test_profile_times_a_block():
    from scaler_jupyter.parfun.profiler.functions import profile

    with profile() as duration:
        sum(range(10000))
    assert duration.value > 0


def test_a_session_blocks_while_every_worker_is_busy(cluster, client):
    """Two workers: a third submit waits until a task is done; its callbacks see at most two running."""
    backend = pf.backends.ScalerBackend(client)
    running, most = 0, 0
    lock = threading.Lock()

    def finished(_):
        nonlocal running
        with lock:
            running -= 1

    with backend.session() as session:
        futures = []
        for x in range(8):
            with lock:
                running += 1
            future = session.submit(square, x)
            future.add_done_callback(finished)
            futures.append(future)
            with lock:
                most = max(most, running)
        assert [future.result(timeout=30) for future in futures] == [x * x for x in range(8)]
    assert most <= backend.n_workers == 2
    assert all(future.duration() is not None and future.duration() >= 0 for future in futures)


def test_a_session_reports_errors_and_maps(cluster, client):
    backend = pf.backends.ScalerBackend(client)
    with backend.session() as session:
        with pytest.raises(ValueError, match="no 3"):
            session.submit(fails, 3).result(timeout=30)
        assert list(pf.parallel_map(square, range(6), backend_session=session)) == [0, 1, 4, 9, 16, 25]


def test_scaler_backends_pickle_into_a_task_and_nest(cluster, client):
    backend = pf.ScalerRemoteBackend(cluster.address, keys=cluster.keys, per_worker_queue_size=2)
    try:
        assert backend.allows_nested_tasks()
        with backend.session() as session:
            assert session.submit(submit_nested, backend, 7).result(timeout=60) == 49
    finally:
        backend.shutdown()


def test_allows_nested_tasks_is_a_method():
    assert pf.LocalSingleProcessBackend().allows_nested_tasks() is False
    assert callable(backends.Backend.allows_nested_tasks)


def test_a_single_process_session_runs_in_the_caller_and_maps_in_order():
    with pf.LocalSingleProcessBackend().session() as session:
        assert session.submit(square, 3).duration() >= 0
        assert list(pf.parallel_map(square, range(4), backend_session=session)) == [0, 1, 4, 9]


def test_function_signature_names_a_calls_arguments_and_refuses_what_does_not_fit():
    from scaler_jupyter.parfun.kernel.function_signature import FunctionSignature

    def scale(values, factor=2, *rest, **options):
        return values

    signature = FunctionSignature.from_function(scale)
    assert signature.has_var_arg and signature.has_var_kwarg
    named = signature.assign([[1, 2], 3, 4], {"verbose": True})
    assert (list(named.args.items()), named.kwargs, named.var_args) == ([("values", [1, 2]), ("factor", 3)],
                                                                       {"verbose": True}, (4,))
    assert named["factor"] == 3 and named["verbose"] is True and named.keys() == {"values", "factor", "verbose"}
    assert named.as_args_kwargs() == ((4,), {"values": [1, 2], "factor": 3, "verbose": True})

    plain = FunctionSignature.from_function(lambda values, factor=2: values)
    assert not (plain.has_var_arg or plain.has_var_kwarg)
    for args, kwargs in [([], {}), ([1, 2, 3], {}), ([1], {"other": 0}), ([1], {"values": 1})]:
        with pytest.raises(ValueError):
            plain.assign(args, kwargs)


def test_a_split_helper_applies_to_named_arguments_as_citis_do():
    from scaler_jupyter.parfun.kernel.function_signature import NamedArguments
    from scaler_jupyter.parfun.partition.utility import with_partition_size

    arguments = NamedArguments(args={"xs": [1, 2, 3, 4, 5]}, kwargs={"ys": [5, 4, 3, 2, 1], "weight": 10})
    whole, partitions = pf.per_argument(xs=pf.py_list.by_chunk, ys=pf.py_list.by_chunk)(arguments)
    assert whole.keys() == {"weight"} and whole["weight"] == 10
    split = list(with_partition_size(partitions, partition_size=2))
    assert [(dict(p.args), p.kwargs) for p in split] == [
        ({"xs": (1, 2)}, {"ys": (5, 4)}), ({"xs": (3, 4)}, {"ys": (3, 2)}), ({"xs": (5,)}, {"ys": (1,)})]

    whole, partitions = pf.all_arguments(pf.py_list.by_chunk)(NamedArguments(kwargs={"a": [1, 2, 3], "b": [4, 5, 6]}))
    assert whole.keys() == set()
    assert [p.kwargs for p in with_partition_size(partitions, partition_size=3)] == [{"a": (1, 2, 3), "b": (4, 5, 6)}]


def test_citis_parallel_function_constructor_takes_the_functions_name():
    from scaler_jupyter.parfun.kernel.parallel_function import ParallelFunction

    function = ParallelFunction(function=lambda xs: sum(xs), function_name="total", combine_with=sum,
                                split=pf.per_argument(xs=pf.py_list.by_chunk))
    assert isinstance(function, pf.ParallelFunction) and function.__name__ == "total"
    with pf.set_parallel_backend_context("local_single_process"):
        assert function(list(range(10))) == 45
    with pytest.raises(ValueError, match="has no parameter 'ys'"):
        ParallelFunction(function=lambda xs: xs, function_name="f", combine_with=list,
                         split=pf.per_argument(ys=pf.py_list.by_chunk))


def test_partition_primitives_map_zip_and_nest_generators_of_both_kinds():
    from scaler_jupyter.parfun.partition.primitives import partition_flatmap, partition_map, partition_zip
    from scaler_jupyter.parfun.partition.utility import with_partition_size

    def run(generator, size):
        return list(with_partition_size(generator, partition_size=size))

    def pairs(values):  # a plain generator
        for start in range(0, len(values), 2):
            yield (values[start:start + 2],)

    xs = list(range(5))
    doubled = partition_map(lambda chunk: ([2 * x for x in chunk],), pf.py_list.by_chunk(xs))
    assert run(doubled, 2) == [([0, 2],), ([4, 6],), ([8],)]
    assert run(partition_map(lambda chunk: len(chunk), pairs(xs)), 1) == [2, 2, 1]

    zipped = partition_zip(pf.py_list.by_chunk(xs), pairs([10, 11, 12, 13]), iter(["same"] * 10))
    assert run(zipped, 2) == [(((0, 1),), ([10, 11],), "same"), (((2, 3),), ([12, 13],), "same")]
    with pytest.raises(ValueError, match="different sizes"):
        run(partition_zip(pf.py_list.by_chunk(xs), pf.py_list.by_chunk(xs[:3])), 2)

    nested = partition_flatmap(pairs, iter([([1, 2, 3],), ([4],)]))  # plain in plain: a plain chain
    assert list(nested) == [([1, 2],), ([3],), ([4],)]
    by_tens = partition_flatmap(lambda chunk: pf.py_list.by_chunk(chunk), pf.py_list.by_chunk(list(range(25))))
    sizes = [len(chunk) for (chunk,) in run(by_tens, 10)]
    assert sum(sizes) == 25 and max(sizes) <= 10


def test_flatmap_nests_a_plain_generator_in_each_group():
    pd = pytest.importorskip("pandas")
    from scaler_jupyter.parfun.partition.primitives import partition_flatmap
    from scaler_jupyter.parfun.partition.utility import with_partition_size

    df = pd.DataFrame({"year": [2020] * 10 + [2021] * 4, "day": list(range(10)) + list(range(4))})

    def by_three_days(frame):
        for _, part in frame.groupby(frame["day"] // 3):
            yield (part,)

    partitions = list(with_partition_size(partition_flatmap(by_three_days, pf.dataframe.by_group(by="year")(df)), 3))
    assert [(p["year"].iloc[0], len(p)) for (p,) in partitions] == [(2020, 3), (2020, 3), (2020, 3), (2020, 1),
                                                                    (2021, 3), (2021, 1)]


def test_citis_estimator_interface_chooses_our_learners_size_from_traces():
    from scaler_jupyter.parfun.partition_size_estimator.linear_regression_estimator import LinearRegessionEstimator
    from scaler_jupyter.parfun.partition_size_estimator.object import PartitionSizeEstimatorState
    from scaler_jupyter.parfun.profiler.object import PartitionedTaskTrace

    per_item, per_partition = 20_000, 4_000_000  # ns: 20 us an item, 4 ms a partition
    estimator = LinearRegessionEstimator(min_parallelism_efficiency=0.9)
    sizes = []
    for _ in range(12):
        state = estimator.state()
        size = estimator.estimate().value
        sizes.append((state, size))
        total = per_item * size + per_partition
        estimator.add_partition_trace(PartitionedTaskTrace(None, size, total // 10, total - total // 5, total // 10))
    learning = [size for state, size in sizes if state is PartitionSizeEstimatorState.Learning]
    assert learning == list(estimator.learning_sample_sizes[:estimator.learning_sample_count])
    best = per_partition / (per_item * 0.1)  # the fixed cost at 10% of the work
    assert all(abs(size - best) <= 0.05 * best for state, size in sizes[5:])
    assert estimator.estimate(dry_run=True).value == estimator.estimate().value
    with pytest.raises(ValueError):
        _ = PartitionedTaskTrace(None, 1, 10).total_duration
