"""Split helpers and argument handling: which arguments are partitioned, and the errors that name them."""

from __future__ import annotations

import pytest

import scaler_jupyter.parfun as pf


def in_caller(function, *args, **kwargs):
    """Call a parallel function with its partitions run in this process, one by one."""
    with pf.set_parallel_backend_context("local_single_process"):
        return function(*args, **kwargs)


def test_per_argument_partitions_the_named_arguments_and_passes_the_others_whole():
    calls = []

    @pf.parallel(split=pf.per_argument(xs=pf.py_list.by_chunk, ys=pf.py_list.by_chunk),
                 combine_with=pf.py_list.concat, fixed_partition_size=2)
    def weighted(xs, ys, weight, *, offset=0):
        calls.append((xs, ys, weight, offset))
        return [x * y * weight + offset for x, y in zip(xs, ys, strict=True)]

    expected = [x * y * 10 + 1 for x, y in zip(range(5), range(5, 10), strict=True)]
    assert in_caller(weighted, list(range(5)), list(range(5, 10)), 10, offset=1) == expected
    assert in_caller(weighted, xs=list(range(5)), weight=10, ys=list(range(5, 10)), offset=1) == expected
    assert calls[:3] == [((0, 1), (5, 6), 10, 1), ((2, 3), (7, 8), 10, 1), ((4,), (9,), 10, 1)]


def test_multiple_arguments_gives_one_partitioner_several_arguments_in_order():
    @pf.parallel(split=pf.multiple_arguments(("keys", "values"), pf.py_list.by_chunk), combine_with=dict,
                 fixed_partition_size=2)
    def pairs(values, keys):
        return dict(zip(keys, values, strict=True))

    def merge(parts):
        merged = {}
        for part in parts:
            merged.update(part)
        return merged

    pairs.combine_with = merge
    assert in_caller(pairs, [1, 2, 3], ["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}


def test_all_arguments_partitions_every_positional_value_including_star_args():
    @pf.parallel(split=pf.all_arguments(pf.py_list.by_chunk), combine_with=pf.py_list.concat, fixed_partition_size=2)
    def add(*columns):
        return [sum(row) for row in zip(*columns, strict=True)]

    assert in_caller(add, [1, 2, 3], [10, 20, 30], [100, 200, 300]) == [111, 222, 333]
    assert [p.size for p in add.last_trace().partitions] == [2, 1]


def test_arguments_of_different_lengths_are_a_value_error_naming_them():
    @pf.parallel(split=pf.per_argument(xs=pf.py_list.by_chunk, ys=pf.py_list.by_chunk), combine_with=list)
    def pairwise(xs, ys):
        return list(zip(xs, ys, strict=True))

    with pytest.raises(ValueError, match=r"different lengths \(xs has 3, ys has 4\)"):
        in_caller(pairwise, [1, 2, 3], [1, 2, 3, 4])

    @pf.parallel(split=pf.multiple_arguments(("xs", "ys"), pf.py_list.by_chunk), combine_with=list)
    def pairwise_together(xs, ys):
        return list(zip(xs, ys, strict=True))

    with pytest.raises(ValueError, match=r"multiple_arguments: .*xs has 2, ys has 1"):
        in_caller(pairwise_together, [1, 2], [1])


def test_partitioners_that_end_apart_are_a_value_error_naming_the_arguments():
    def one_at_a_time(values):  # plain, and without the length attribute: the difference shows at the end
        for value in values:
            yield ([value],)

    @pf.parallel(split=pf.per_argument(xs=one_at_a_time, ys=one_at_a_time), combine_with=list)
    def pairwise(xs, ys):
        return list(zip(xs, ys, strict=True))

    with pytest.raises(ValueError, match="partitions of xs ended before those of ys"):
        in_caller(pairwise, [1, 2], [1, 2, 3])


def test_plain_and_size_aware_partitioners_mix_while_their_sizes_agree():
    def pairs(values):
        for start in range(0, len(values), 2):
            yield (values[start:start + 2],)

    def pairwise(xs, ys):
        return list(zip(xs, ys, strict=True))

    split = pf.per_argument(xs=pairs, ys=pf.py_list.by_chunk)
    in_pairs = pf.parallel(split=split, combine_with=list, fixed_partition_size=2)(pairwise)
    assert in_caller(in_pairs, [1, 2, 3], [4, 5, 6]) == [[(1, 4), (2, 5)], [(3, 6)]]

    in_threes = pf.parallel(split=split, combine_with=list, fixed_partition_size=3)(pairwise)
    with pytest.raises(ValueError, match="partitions of different sizes"):
        in_caller(in_threes, [1, 2, 3], [4, 5, 6])


def test_names_that_are_no_parameter_fail_at_decoration():
    def count(lines):
        return len(lines)

    with pytest.raises(ValueError, match=r"per_argument: count\(\) has no parameter 'line' \(it has: lines\)"):
        pf.parallel(split=pf.per_argument(line=pf.py_list.by_chunk), combine_with=sum)(count)
    with pytest.raises(ValueError, match="catch-all"):
        pf.parallel(split=pf.per_argument(rest=pf.py_list.by_chunk), combine_with=sum)(lambda *rest: 0)
    with pytest.raises(ValueError, match="appears twice"):
        pf.multiple_arguments(("a", "a"), pf.py_list.by_chunk)

    @pf.parallel(split=pf.per_argument(lines=pf.py_list.by_chunk), combine_with=sum)
    def count_keywords(**options):  # any name may come through **kwargs: checked at the call
        return len(options["lines"])

    with pytest.raises(ValueError, match="called without the argument 'lines' that it partitions"):
        in_caller(count_keywords, other=[1])
    assert in_caller(count_keywords, lines=[1, 2, 3]) == 3


def test_positional_only_parameters_without_star_args_are_a_value_error_at_decoration():
    def scale(values, factor, /):
        return [v * factor for v in values]

    with pytest.raises(ValueError, match=r"positional-only parameters \(values, factor\)"):
        pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat)(scale)

    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=2)
    def scale_all(values, /, *factors):
        return [v * f for v in values for f in factors]

    assert in_caller(scale_all, [1, 2, 3], 10) == [10, 20, 30]


def test_defaults_are_partitioned_like_passed_arguments():
    @pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=pf.py_list.concat,
                 fixed_partition_size=1)
    def doubled(values=(1, 2, 3)):
        return [2 * v for v in values]

    assert in_caller(doubled) == [2, 4, 6]
    assert len(doubled.last_trace().partitions) == 3


def test_split_and_combine_are_checked_at_decoration():
    with pytest.raises(TypeError, match="split must come from per_argument"):
        pf.parallel(split=lambda args: args, combine_with=sum)
    with pytest.raises(TypeError, match="combine_with must be a function"):
        pf.parallel(split=pf.all_arguments(pf.py_list.by_chunk), combine_with=3)
    with pytest.raises(TypeError, match="not a partitioner"):
        pf.per_argument(xs=[1, 2])
    with pytest.raises(ValueError, match="needs at least one"):
        pf.per_argument()
