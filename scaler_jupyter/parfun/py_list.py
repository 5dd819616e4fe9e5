"""Partition and combine Python sequences and iterables.

``by_chunk`` slices sequences (lists, tuples, ranges): a chunk costs one copy of its
references, never a tuple per item; other iterables are read chunk by chunk, lazily.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterable, Sequence
from typing import Any


def by_chunk(*iterables: Iterable) -> Generator[tuple[int, tuple[tuple, ...]] | None, int, None]:
    """Partition one or several iterables of equal length into chunks of the requested size, as tuples.

    ``by_chunk([1, 2, 3], "abc")`` at size 2 yields ``((1, 2), ("a", "b"))`` then ``((3,), ("c",))``.
    """
    if not iterables:
        raise ValueError("by_chunk needs at least one iterable to partition")
    lengths = [_length(values) for values in iterables]
    known = [n for n in lengths if n is not None]
    if len(set(known)) > 1:
        raise ValueError(f"by_chunk: the iterables have different lengths ({', '.join(map(str, lengths))})")
    size = yield None
    if all(isinstance(values, Sequence) and not isinstance(values, str) for values in iterables):
        total = known[0]
        start = 0
        while start < total:
            stop = min(total, start + size)
            size = yield stop - start, tuple(_chunk(values, start, stop) for values in iterables)
            start = stop
        return
    iterators = [iter(values) for values in iterables]
    while True:
        chunks = tuple(tuple(itertools.islice(iterator, size)) for iterator in iterators)
        counts = {len(chunk) for chunk in chunks}
        if len(counts) > 1:
            raise ValueError("by_chunk: the iterables have different lengths")
        count = counts.pop()
        if count == 0:
            return
        size = yield count, chunks


by_chunk.partition_length = lambda values: _length(values)  # type: ignore[attr-defined]


def concat(values: Iterable[Iterable]) -> list:
    """Chain the partial results (lists, tuples) into one list, reading them as they come."""
    return list(itertools.chain.from_iterable(values))


def _chunk(values: Sequence, start: int, stop: int) -> tuple:
    chunk = values[start:stop]
    return chunk if type(chunk) is tuple else tuple(chunk)


def _length(values: Any) -> int | None:
    try:
        return len(values)
    except TypeError:
        return None
