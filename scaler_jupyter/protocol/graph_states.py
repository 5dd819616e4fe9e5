"""How far a graph, and each task of it, has got: the states the monitor feed reports for graphs.

On the wire (the ``graphs`` entries of a snapshot, specified in ``scheduler/monitor.py``)
a state is its string value; in code it is one of these enums. Their members are strings
too (they compare and hash as their values), so a snapshot decoded from the wire reads the
same with either, and ``NodeState(text)`` turns a wire value back into a member.
"""

from __future__ import annotations

import enum


class NodeState(str, enum.Enum):
    """A graph task's state."""

    WAITING = "waiting"  # for a task it depends on
    READY = "ready"  # every dependency done: waiting for a worker
    RUNNING = "running"  # given to a worker (in its queue, or running)
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # cancelled, or dropped when another task of its graph failed

    def __str__(self) -> str:
        return self.value


class GraphState(str, enum.Enum):
    """A graph's state: running until every task is done, or the first failure or a cancel ends it."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value
