"""Partition generators, and the stream that pulls the partitions of one call from them.

A partitioner is a function of the argument values it splits that returns a generator
of partitions, each a tuple with one value per argument, in one of two protocols:

- plain: it yields the partitions, and chooses their sizes itself;
- size-aware: it first yields ``None`` to receive the requested size, then yields
  ``(actual_size, partition)`` and receives the next requested size in return::

      def by_chunk(values):
          size = yield None
          for start in range(0, len(values), ...):
              size = yield n, (values[start:start + n],)

Size-aware partitioners let the learner choose each partition's size. A partitioner may
carry a ``partition_length`` attribute (a function of one argument value), with which
lengths that disagree are reported before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from scaler_jupyter.parfun.signature import Slot, slot_label

Partitioner = Callable[..., Iterable]

_NOTHING = object()


class _Source:
    """One partitioner's generator, started: its protocol is known from its first yield."""

    __slots__ = ("buffered", "generator", "name", "sized", "slots")

    def __init__(self, partitioner: Partitioner, slots: tuple[Slot, ...], values: list) -> None:
        self.slots = slots
        self.name = getattr(partitioner, "__qualname__", repr(partitioner))
        self.generator: Iterator = iter(partitioner(*values))
        self.buffered: Any = _NOTHING
        try:
            first = next(self.generator)
        except StopIteration:
            self.sized = False
            self.generator = iter(())
            return
        self.sized = first is None
        if self.sized and not hasattr(self.generator, "send"):
            raise ValueError(f"partitioner {self.name} yielded None first, as a size-aware partitioner does, "
                             "but it is not a generator: it cannot receive sizes")
        if not self.sized:
            self.buffered = first

    def pull(self, size: int) -> tuple[int | None, tuple] | None:
        """The next partition, as ``(size or None if plain, values)``; None once exhausted."""
        try:
            if self.sized:
                item = self.generator.send(size)
            elif self.buffered is not _NOTHING:
                item, self.buffered = self.buffered, _NOTHING
            else:
                item = next(self.generator)
        except StopIteration:
            return None
        if not self.sized:
            values = self._values(item)
            return None, values
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int) and item[0] >= 0):
            raise ValueError(f"size-aware partitioner {self.name} yielded {_describe(item)}; after its first "
                             "`yield None` it must yield (size, partition) tuples")
        return item[0], self._values(item[1])

    def _values(self, partition: Any) -> tuple:
        if len(self.slots) == 1:  # a lone value may come bare or in a 1-tuple
            return partition if isinstance(partition, tuple) and len(partition) == 1 else (partition,)
        if not (isinstance(partition, tuple) and len(partition) == len(self.slots)):
            labels = ", ".join(map(slot_label, self.slots))
            raise ValueError(f"partitioner {self.name} yielded {_describe(partition)}; it must yield tuples of "
                             f"{len(self.slots)} values, one for each of {labels}")
        return partition

    def close(self) -> None:
        close = getattr(self.generator, "close", None)
        if close is not None:
            close()


class PartitionStream:
    """The partitions of one call, pulled one at a time at the size the caller asks for.

    Several partitioners (one per argument with ``per_argument``) advance together; their
    partitions must agree in size and end together, else a ``ValueError`` names the arguments.
    """

    def __init__(self, groups: list[tuple[tuple[Slot, ...], Partitioner]], values: dict[Slot, Any],
                 total: int | None) -> None:
        self.total = total  # items to partition, when the partitioners' inputs tell
        self.consumed = 0  # items in the partitions pulled so far
        self._sources: list[_Source] = []
        try:
            for slots, partitioner in groups:
                self._sources.append(_Source(partitioner, slots, [values[slot] for slot in slots]))
        except BaseException:
            self.close()
            raise
        # The learner chooses sizes if any partitioner is size-aware; plain ones beside them must follow those
        # sizes (as a fixed size lets them), else next() names the arguments whose partitions disagree.
        self.sized = any(source.sized for source in self._sources)

    def next(self, size: int) -> tuple[int, dict[Slot, Any]] | None:
        """The next partition at (about) ``size`` items: ``(actual size, {slot: value})``; None at the end."""
        pulled = [source.pull(size) for source in self._sources]
        if all(item is None for item in pulled):
            return None
        if any(item is None for item in pulled):
            ended = [slot_label(s) for source, item in zip(self._sources, pulled, strict=True) if item is None
                     for s in source.slots]
            going = [slot_label(s) for source, item in zip(self._sources, pulled, strict=True) if item is not None
                     for s in source.slots]
            raise ValueError(f"the partitions of {', '.join(ended)} ended before those of {', '.join(going)}: "
                             "the arguments to partition have different lengths")
        sizes = [n if n is not None else plain_partition_size(values) for n, values in pulled]
        if len(set(sizes)) > 1:
            described = ", ".join(f"{'/'.join(map(slot_label, source.slots))} has {n}"
                                  for source, n in zip(self._sources, sizes, strict=True))
            raise ValueError(f"partitions of different sizes for the arguments to partition ({described}): "
                             "their partitioners must split them alike")
        partition: dict[Slot, Any] = {}
        for source, (_, values) in zip(self._sources, pulled, strict=True):
            partition.update(zip(source.slots, values, strict=True))
        self.consumed += sizes[0]
        return sizes[0], partition

    def close(self) -> None:
        for source in self._sources:
            source.close()


def with_partition_size(generator: Iterable, partition_size: int | Callable[[], int] = 1) -> Iterator[tuple]:
    """Run a partitioner's generator at a given size, outside any parallel function: to test a partitioner.

    ``list(with_partition_size(pf.py_list.by_chunk([1, 2, 3]), 2))`` is ``[((1, 2),), ((3,),)]``.
    """
    iterator = iter(generator)
    try:
        first = next(iterator)
    except StopIteration:
        return
    if first is not None:
        yield first
        yield from iterator
        return
    while True:
        size = partition_size() if callable(partition_size) else partition_size
        try:
            item = iterator.send(size)
        except StopIteration:
            return
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ValueError(f"a size-aware partitioner must yield (size, partition) tuples, not {_describe(item)}")
        yield item[1]


def plain_partition_size(partition: Any) -> int:
    """The size of a plain generator's partition: the length of its (first) value, else 1."""
    value = partition[0] if isinstance(partition, tuple) and partition else partition
    try:
        return len(value)
    except TypeError:
        return 1


def _describe(value: Any) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text if len(text) <= 60 else text[:57] + '...'})"
