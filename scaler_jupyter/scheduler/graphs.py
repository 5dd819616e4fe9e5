"""Task graphs on the scheduler: which task waits for which, and where each graph stands.

A graph's tasks are ordinary tasks of the scheduler (see ``state.py``) that start
``WAITING``: a task joins the pending queue when the last task it depends on is
done. This module holds only what graphs add: dependents, counts of unfinished
dependencies, and how each finished task ended, for the monitor feed; for a graph
small enough to draw (``DETAILS_REPORTED`` tasks), also how long each task ran and a
short repr of what it returned, which its tasks are asked to send (``TaskSpec.summarize``)
so a DAG panel shows them when a node is clicked.

A graph arrives whole and in dependency order, so a task can only depend on tasks
sent before it: a cycle, or a dependency on another client's task, cannot be
expressed, only refused as malformed (:func:`check`).
"""

from __future__ import annotations

import dataclasses

from scaler_jupyter.protocol import TASK_ID_BITS, SubmitGraph
from scaler_jupyter.protocol.graph_states import GraphState, NodeState


@dataclasses.dataclass(slots=True, eq=False)
class Graph:
    """One submitted graph. Nodes are numbered by their place in the submission."""

    graph_id: int
    client: bytes
    client_number: int
    name: str
    keys: list[str]
    index: dict[int, int]  # task id -> node number
    task_ids: list[int]
    dependents: list[list[int]]  # node number -> task ids that wait for it
    waiting: list[int]  # node number -> dependencies not yet done
    outputs: list[bool]
    started: float  # when it was submitted, on the scheduler's (monotonic) clock
    ended: dict[int, NodeState] = dataclasses.field(default_factory=dict)  # node number -> DONE, FAILED, CANCELLED
    # node number -> (wall seconds, short repr of the result), for graphs of up to DETAILS_REPORTED tasks
    details: dict[int, tuple[float, str]] = dataclasses.field(default_factory=dict)
    state: GraphState = GraphState.RUNNING
    final: dict | None = None  # once ended: its monitor entry, all that is kept of it

    @property
    def remaining(self) -> int:
        return len(self.task_ids) - len(self.ended)

    def record(self, task_id: int, profile: list[float], summary: str) -> None:
        """A task ended well: keep how long it ran and what it returned, if this graph reports them."""
        if len(self.task_ids) <= DETAILS_REPORTED:
            self.details[self.index[task_id]] = (profile[0] if profile else 0.0, summary)

    def release(self, task_id: int) -> list[int]:
        """The task ended well: return the tasks it was the last dependency of."""
        ready = []
        for dependent in self.dependents[self.index[task_id]]:
            node = self.index[dependent]
            self.waiting[node] -= 1
            if self.waiting[node] == 0:
                ready.append(dependent)
        return ready


def check(msg: SubmitGraph, client_number: int, known: dict) -> str | None:
    """Why a submitted graph is malformed, or None. ``known``: the scheduler's live task ids."""
    if len(msg.tasks) != len(msg.nodes):
        return f"{len(msg.tasks)} tasks but {len(msg.nodes)} nodes"
    if not msg.tasks:
        return "an empty graph"
    seen: set[int] = set()
    for spec, node in zip(msg.tasks, msg.nodes):  # noqa: B905 - lengths checked above
        task_id = spec.task_id
        if task_id != node.task_id:
            return f"task {task_id} is described by node {node.task_id}"
        if task_id >> TASK_ID_BITS != client_number or task_id in known or task_id in seen:
            return f"task id {task_id} is not a new one of this client's"
        for dependency in node.dependencies:
            if dependency not in seen:
                return f"task {task_id} depends on {dependency}, not a task sent before it in this graph"
        seen.add(task_id)
    return None


def build(msg: SubmitGraph, client: bytes, client_number: int, now: float) -> Graph:
    """The bookkeeping of a graph that passed :func:`check`, submitted at ``now``."""
    index = {node.task_id: i for i, node in enumerate(msg.nodes)}
    if len(msg.tasks) <= DETAILS_REPORTED:
        for spec in msg.tasks:
            spec.summarize = True
    dependents: list[list[int]] = [[] for _ in msg.nodes]
    for node in msg.nodes:
        for dependency in set(node.dependencies):
            dependents[index[dependency]].append(node.task_id)
    return Graph(msg.graph_id, client, client_number, msg.name, [node.key for node in msg.nodes], index,
                 [node.task_id for node in msg.nodes], dependents,
                 [len(set(node.dependencies)) for node in msg.nodes], [node.output for node in msg.nodes], now)


FINISHED_KEPT = 8  # finished graphs the monitor feed still shows, so a DAG panel sees how each ended
TASKS_REPORTED = 20_000  # larger graphs report their counts, not each task
DETAILS_REPORTED = 1_000  # larger graphs report no durations or results: too many nodes to click


def finish(graph: Graph, how: GraphState) -> None:
    """The graph ended (every task of it did): keep its monitor entry and drop the rest, so the few finished
    graphs the feed still shows cost their entries only."""
    graph.state = how
    graph.final = describe(graph, _ended_already)
    graph.index, graph.task_ids, graph.keys, graph.ended, graph.details = {}, [], [], {}, {}
    graph.dependents, graph.waiting, graph.outputs = [], [], []


def _ended_already(task_id: int) -> NodeState:
    raise AssertionError(f"task {task_id} of a finished graph is still live")


def describe(graph: Graph, live_state) -> dict:
    """The monitor feed's entry for ``graph``, its ``started`` on the scheduler's clock (the monitor makes it
    epoch seconds). ``live_state(task_id)`` gives the state of an unfinished task: ``WAITING``, ``READY``
    or ``RUNNING``."""
    if graph.final is not None:
        return graph.final
    counts = dict.fromkeys(NodeState, 0)
    tasks = {} if len(graph.task_ids) <= TASKS_REPORTED else None
    for node, task_id in enumerate(graph.task_ids):
        state = graph.ended.get(node) or live_state(task_id)
        counts[state] += 1
        if tasks is not None:
            tasks[graph.keys[node]] = state
    entry = {
        "id": graph.graph_id,
        "client": graph.client_number,
        "name": graph.name,
        "state": graph.state,
        "started": graph.started,
        "total": len(graph.task_ids),
        "counts": counts,
    }
    if tasks is not None:
        entry["tasks"] = tasks
    if graph.details:
        entry["durations"] = {graph.keys[node]: seconds for node, (seconds, _) in graph.details.items()}
        entry["results"] = {graph.keys[node]: summary for node, (_, summary) in graph.details.items()}
    return entry
