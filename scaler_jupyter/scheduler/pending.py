"""Tasks waiting for a worker, in priority order, grouped by the tags they need."""

from __future__ import annotations

import heapq
import itertools


class PendingQueue:
    """A priority queue per tag set; a worker pops the best task among the tag sets it satisfies.

    Keys sort ascending: children of running tasks first (so a parent waiting on them
    never deadlocks its worker), then higher ``priority``, then submission order.
    Removal is lazy: a cancelled task stays in its heap until popped and skipped.
    """

    def __init__(self) -> None:
        self._heaps: dict[frozenset, list] = {}
        self._order = itertools.count()
        self._members: dict[int, frozenset] = {}  # task id -> its tags
        self._counts: dict[frozenset, int] = {}  # tags -> how many members need exactly these

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, task_id: int) -> bool:
        return task_id in self._members

    def push(self, task_id: int, tags: frozenset, priority: int, is_child: bool, order: int | None = None) -> int:
        """Add a task; return its order, to be given back when it returns (it keeps its place)."""
        if order is None:
            order = next(self._order)
        key = (0 if is_child else 1, -priority, order)
        heapq.heappush(self._heaps.setdefault(tags, []), (key, task_id))
        self._members[task_id] = tags
        self._counts[tags] = self._counts.get(tags, 0) + 1
        return order

    def discard(self, task_id: int) -> None:
        tags = self._members.pop(task_id, None)
        if tags is not None:
            self._uncount(tags)

    def tag_sets(self) -> dict[frozenset, int]:
        """The tag sets waiting tasks need, each with how many tasks need it (a view: do not change it)."""
        return self._counts

    def with_tags(self, tags: frozenset) -> list[int]:
        """The waiting tasks that need exactly ``tags`` (a pass over their heap: for rare events only)."""
        members = self._members
        return list(dict.fromkeys(task_id for _, task_id in self._heaps.get(tags, ()) if task_id in members))

    def pop_for(self, worker_tags: frozenset) -> int | None:
        """Remove and return the best task a worker with ``worker_tags`` can run, or None."""
        best = None
        for tags, heap in self._heaps.items():
            if not tags <= worker_tags:
                continue
            while heap and heap[0][1] not in self._members:
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best[0]):
                best = (heap[0], heap)
        if best is None:
            return None
        _, task_id = heapq.heappop(best[1])
        self._uncount(self._members.pop(task_id))
        return task_id

    def _uncount(self, tags: frozenset) -> None:
        left = self._counts[tags] - 1
        if left:
            self._counts[tags] = left
        else:
            del self._counts[tags]
