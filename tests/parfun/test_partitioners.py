"""Partitioners and combiners: py_list, dataframe, numpy, and the two generator protocols (no processes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

import scaler_jupyter.parfun as pf


def sized(generator, *sizes):
    """Drive a size-aware partitioner with the given sizes (the last one repeats): its (size, partition) pairs."""
    assert next(generator) is None
    out = []
    requested = list(sizes)
    try:
        while True:
            out.append(generator.send(requested.pop(0) if len(requested) > 1 else requested[0]))
    except StopIteration:
        return out


class SliceOnly(Sequence):
    """A sequence that may be sliced but never walked item by item: partitioning it must cost slices only."""

    def __init__(self, values):
        self._values = list(values)
        self.slices = []

    def __len__(self):
        return len(self._values)

    def __getitem__(self, index):
        if not isinstance(index, slice):
            raise AssertionError(f"read item by item (index {index})")
        self.slices.append((index.start, index.stop))
        return self._values[index]

    def __iter__(self):
        raise AssertionError("iterated item by item")


# --- py_list -------------------------------------------------------------------------------------------------


def test_by_chunk_yields_tuples_of_the_requested_sizes():
    assert list(pf.with_partition_size(pf.py_list.by_chunk([1, 2, 3, 4, 5, 6, 7]), 3)) == [
        ((1, 2, 3),), ((4, 5, 6),), ((7,),)]
    assert sized(pf.py_list.by_chunk(list(range(10))), 1, 4, 2) == [
        (1, ((0,),)), (4, ((1, 2, 3, 4),)), (2, ((5, 6),)), (2, ((7, 8),)), (1, ((9,),))]


def test_by_chunk_partitions_several_iterables_alike():
    chunks = list(pf.with_partition_size(pf.py_list.by_chunk([1, 2, 3], ("a", "b", "c")), 2))
    assert chunks == [((1, 2), ("a", "b")), ((3,), ("c",))]


def test_by_chunk_slices_sequences_instead_of_walking_them():
    values = SliceOnly(range(100_000))
    chunks = list(pf.with_partition_size(pf.py_list.by_chunk(values), 30_000))
    assert [len(chunk) for (chunk,) in chunks] == [30_000, 30_000, 30_000, 10_000]
    assert values.slices == [(0, 30_000), (30_000, 60_000), (60_000, 90_000), (90_000, 100_000)]


def test_by_chunk_reads_an_iterator_only_as_far_as_asked():
    consumed = []

    def numbers():
        for i in range(1_000):
            consumed.append(i)
            yield i

    generator = pf.py_list.by_chunk(numbers())
    assert next(generator) is None
    assert generator.send(5) == (5, ((0, 1, 2, 3, 4),))
    assert len(consumed) == 5
    assert generator.send(3) == (3, ((5, 6, 7),))
    assert len(consumed) == 8


def test_by_chunk_rejects_iterables_of_different_lengths():
    with pytest.raises(ValueError, match=r"different lengths.*3, 4"):
        list(pf.with_partition_size(pf.py_list.by_chunk([1, 2, 3], [1, 2, 3, 4]), 2))
    with pytest.raises(ValueError, match="different lengths"):
        list(pf.with_partition_size(pf.py_list.by_chunk(iter([1, 2, 3]), iter([1, 2])), 2))


def test_py_list_concat_chains_partial_results_in_order_from_an_iterator():
    assert pf.py_list.concat(iter([[1, 2], (3,), [], [4, 5]])) == [1, 2, 3, 4, 5]


# --- dataframe -----------------------------------------------------------------------------------------------


def test_dataframe_by_row_and_concat_round_trip():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": range(10), "b": [x * x for x in range(10)]})
    squares = df["b"] * 2
    parts = list(pf.with_partition_size(pf.dataframe.by_row(df, squares), 4))
    assert [len(part_df) for part_df, _ in parts] == [4, 4, 2]
    assert all(part_df.index.equals(part_s.index) for part_df, part_s in parts)
    assert pf.dataframe.concat(part_df for part_df, _ in parts).equals(df)
    kept = pf.dataframe.concat((part_df for part_df, _ in parts), ignore_index=False)
    assert list(kept.index) == list(range(10))


def test_dataframe_by_row_rejects_frames_of_different_lengths_and_other_types():
    pd = pytest.importorskip("pandas")
    with pytest.raises(ValueError, match=r"different lengths \(3, 2\)"):
        list(pf.with_partition_size(pf.dataframe.by_row(pd.DataFrame({"a": [1, 2, 3]}), pd.DataFrame({"a": [1, 2]})),
                                    2))
    with pytest.raises(ValueError, match="not list"):
        list(pf.with_partition_size(pf.dataframe.by_row([1, 2, 3]), 2))


def test_dataframe_by_group_keeps_groups_whole_and_aligns_frames_by_key():
    pd = pytest.importorskip("pandas")
    users = pd.DataFrame({"country": ["BE", "US", "BE", "CN", "US", "US", "FR"], "user": range(7)})
    capitals = pd.DataFrame({"country": ["US", "CN", "BE", "DE"], "capital": ["DC", "Beijing", "Brussels", "Berlin"]})
    partitions = sized(pf.dataframe.by_group(by="country")(users, capitals), 4)
    seen = []
    for index, (rows, (part_users, part_capitals)) in enumerate(partitions):
        keys = set(part_users["country"]) | set(part_capitals["country"])
        # counted in rows per frame, as Citi's: each group by the frame where it has the most rows
        assert rows == sum(max((part["country"] == key).sum() for part in (part_users, part_capitals)) for key in keys)
        assert rows >= 4 or index == len(partitions) - 1  # whole groups until the size is reached
        assert not keys & set(seen), "a group was split across partitions"
        seen.extend(keys)
        for key in set(part_users["country"]):  # whole groups
            assert len(part_users[part_users["country"] == key]) == (users["country"] == key).sum()
        assert set(part_capitals["country"]) <= keys
    assert sorted(seen) == ["BE", "CN", "DE", "FR", "US"]
    combined = pf.dataframe.concat(part_users for _, (part_users, _) in partitions)
    assert sorted(combined["user"]) == list(range(7))


# --- numpy ---------------------------------------------------------------------------------------------------


def test_numpy_by_row_by_col_and_axis_aware_concat():
    np = pytest.importorskip("numpy")
    matrix = np.arange(24).reshape(4, 6)
    rows = [part for (part,) in pf.with_partition_size(pf.numpy.by_row(matrix), 3)]
    assert [part.shape for part in rows] == [(3, 6), (1, 6)]
    assert (pf.numpy.concat(iter(rows)) == matrix).all()
    columns = [part for (part,) in pf.with_partition_size(pf.numpy.by_col(matrix), 4)]
    assert [part.shape for part in columns] == [(4, 4), (4, 2)]
    assert (pf.numpy.concat(iter(columns), axis=1) == matrix).all()


def test_numpy_partitioners_reject_arrays_that_disagree():
    np = pytest.importorskip("numpy")
    with pytest.raises(ValueError, match=r"different lengths along axis 0 \(4, 3\)"):
        list(pf.with_partition_size(pf.numpy.by_row(np.zeros((4, 2)), np.zeros((3, 2))), 2))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        list(pf.with_partition_size(pf.numpy.by_col(np.zeros(4)), 2))


# --- custom partitioners, through a parallel function in the caller -----------------------------------------


def test_custom_plain_and_size_aware_partitioners():
    requested = []

    def halves(values):  # plain: chooses its own sizes, yields 1-tuples
        middle = len(values) // 2
        yield (values[:middle],)
        yield (values[middle:],)

    def pairs_then_asked(values):  # size-aware: the first partition has 2 items, then what is asked
        size = yield None
        start = 0
        while start < len(values):
            n = 2 if start == 0 else size
            requested.append(size)
            size = yield min(n, len(values) - start), (values[start:start + n],)
            start += n

    for partitioner in (halves, pairs_then_asked):
        @pf.parallel(split=pf.per_argument(values=partitioner), combine_with=pf.py_list.concat,
                     fixed_partition_size=3)
        def negate(values):
            return [-v for v in values]

        with pf.set_parallel_backend_context("local_single_process"):
            assert negate(list(range(9))) == [-v for v in range(9)]
        sizes = [p.size for p in negate.last_trace().partitions]
        assert sizes == ([4, 5] if partitioner is halves else [2, 3, 3, 1])
    assert requested and set(requested) == {3}


def test_a_size_aware_partitioner_must_yield_size_partition_pairs():
    def broken(values):
        yield None
        yield values  # no size

    @pf.parallel(split=pf.per_argument(values=broken), combine_with=list)
    def identity(values):
        return values

    with pf.set_parallel_backend_context("local_single_process"), \
            pytest.raises(ValueError, match=r"must yield \(size, partition\)"):
        identity([1, 2, 3])


def test_importing_parfun_imports_neither_pandas_nor_numpy_nor_scikit_learn():
    code = ("import sys, scaler_jupyter.parfun as pf; "
            "print(sorted(m for m in ('pandas', 'numpy', 'sklearn', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
