"""Partition generators built from others: ``map``, ``zip`` and a nested loop (``flatmap``) over partitions.

They take and return generators of either protocol of :mod:`scaler_jupyter.parfun.partitioning`
(plain, or size-aware: ``yield None`` first, then ``(size, partition)`` for each requested size),
so that a custom partitioner can be made of the library's ones::

    def by_year_then_rows(df):
        return partition_flatmap(pf.dataframe.by_row, pf.dataframe.by_group(by="year")(df))

The result is size-aware as soon as one generator it is made of is; a plain generator inside a
size-aware result counts each of its partitions as the length of the partition's first value.
These are Citi's ``parfun.partition.primitives``, under the same names and meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from scaler_jupyter.parfun.partitioning import plain_partition_size

Generated = Generator[Any, int, None]


def partition_map(function: Callable[..., Any], generator: Iterable) -> Generated:
    """``map`` over partitions: each partition ``p`` becomes ``function(*p)``, of the same size."""
    iterator = iter(generator)
    first = next(iterator, _END)
    if first is _END:
        return
    if first is not None:  # plain: no sizes to pass on
        yield function(*first)
        for partition in iterator:
            yield function(*partition)
        return
    size = yield None

    def requested() -> int:
        return size

    for n, partition in _sized(iterator, requested):
        size = yield n, function(*partition)


def partition_zip(*generators: Iterable) -> Generated:
    """``zip`` over partitions: the i-th partition is the tuple of every generator's i-th; ends with the shortest.

    Size-aware generators among them receive the same requested size and must yield partitions of equal size.
    """
    if not generators:
        raise ValueError("partition_zip() needs at least one partition generator")
    iterators = [iter(generator) for generator in generators]
    firsts = [next(iterator, _END) for iterator in iterators]
    if _END in firsts:
        return
    sized = [first is None for first in firsts]
    if not any(sized):
        yield tuple(firsts)
        yield from zip(*iterators, strict=False)  # ends with the shortest
        return
    size = yield None
    buffered = [None if is_sized else first for first, is_sized in zip(firsts, sized, strict=True)]
    while True:
        sizes, values = set(), []
        for i, iterator in enumerate(iterators):
            try:
                if sized[i]:
                    n, partition = _checked(iterator.send(size))  # type: ignore[attr-defined]
                    sizes.add(n)
                elif buffered[i] is not None:
                    partition, buffered[i] = buffered[i], None
                else:
                    partition = next(iterator)
            except StopIteration:
                return
            values.append(partition)
        if len(sizes) > 1:
            raise ValueError(f"partition_zip(): the size-aware generators yielded partitions of different sizes "
                             f"({', '.join(map(str, sorted(sizes)))}); they must split their inputs alike")
        size = yield sizes.pop(), tuple(values)


def partition_flatmap(function: Callable[..., Iterable], generator: Iterable) -> Generated:
    """A nested loop: the partitions of ``function(*p)`` for each partition ``p`` of ``generator``, in order.

    ``partition_flatmap(by_week, pf.dataframe.by_group(by="year")(df))`` partitions each year by weeks.
    A size-aware outer generator is asked for as many of its items as the inner partitions requested
    hold, judged from how many inner items its items held so far (one item at first).
    """
    outer = iter(generator)
    first = next(outer, _END)
    if first is _END:
        return
    size = 1
    outer_items = inner_items = 0

    def requested() -> int:
        return size

    def outer_request() -> int:
        return max(1, round(size * outer_items / inner_items)) if inner_items else 1

    if first is None:
        inners = _started(function, _sized(outer, outer_request))
    else:
        inners = _started(function, ((1, partition) for partition in _prepend(first, outer)))
        peeked = next((started for started in inners if started[1] is not _END), _END)
        if peeked is _END:
            return
        inners = _prepend(peeked, inners)
        if peeked[1] is not None:  # plain outside and inside: a plain chain
            for _, head, inner in inners:
                if head is None:
                    raise ValueError("partition_flatmap(): the function returned a plain generator, then a "
                                     "size-aware one; it must return generators of one kind")
                if head is not _END:
                    yield head
                    yield from inner
            return
    size = yield None
    for n_outer, head, inner in inners:
        outer_items += n_outer
        if head is None:  # size-aware inside: it receives the requested sizes
            for n, item in _sized(inner, requested):
                inner_items += n
                size = yield n, item
        elif head is not _END:
            for item in _prepend(head, inner):
                n = plain_partition_size(item)
                inner_items += n
                size = yield n, item


def _started(function: Callable[..., Iterable], partitions: Iterable[tuple[int, Any]]) -> Iterator[tuple]:
    """``(outer size, first item or _END, rest)`` of the inner generator of each outer partition."""
    for n, partition in partitions:
        inner = iter(function(*partition))
        yield n, next(inner, _END), inner


_END = object()


def _sized(generator: Any, request: Callable[[], int]) -> Iterator[tuple[int, Any]]:
    """The ``(size, partition)`` items of a started size-aware generator, each asked at ``request()``."""
    while True:
        try:
            item = generator.send(request())
        except StopIteration:
            return
        yield _checked(item)


def _checked(item: Any) -> tuple[int, Any]:
    if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int) and item[0] > 0):
        raise ValueError(f"a size-aware partition generator must yield (size, partition) tuples with a positive "
                         f"size, not {item!r:.80}")
    return item


def _prepend(head: Any, rest: Iterator) -> Iterator:
    yield head
    yield from rest
