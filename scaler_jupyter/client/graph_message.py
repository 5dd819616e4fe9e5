"""The one message that submits a graph: its tasks, how they depend on each other, its large literals.

Sans-I/O: :func:`build` turns a :class:`~scaler_jupyter.client.graph.Plan` into a
``SubmitGraph`` message, given how to number tasks and how to name a function
(the client ships it once and returns its id); the client sends what it returns.
So what travels for a graph is tested without a cluster.

A task's dependencies reach it as references: to the result of another task of
the graph (kept on the scheduler while a task needs it), or to a large literal,
which travels once in the message as an object of the graph, however many tasks
read it; a small literal is copied into each task that reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Hashable
from typing import Any

from scaler_jupyter.client.graph import Plan
from scaler_jupyter.errors import DeletedObjectError, SerializationError
from scaler_jupyter.protocol import (
    GraphTask,
    ObjectSpec,
    SubmitGraph,
    TaskSpec,
    is_result_object_id,
    result_object_id,
    serialization,
)
from scaler_jupyter.protocol.serialization import ObjectRef, Serializer

INLINE_LITERAL_BYTES = 4096  # a graph literal smaller than this is copied into each task that uses it


@dataclasses.dataclass(slots=True)
class Submission:
    """A graph ready to send: its message, the task of each key that runs, the value of each literal key."""

    message: SubmitGraph
    task_ids: dict[Hashable, int]
    literals: dict[Hashable, Any]


def build(plan: Plan, graph_id: int, name: str | None, next_task_id: Callable[[], int],
          function_id: Callable[[Callable], bytes], serializer: Serializer | None = None,
          serializer_id: bytes | None = None, deleted: Collection[bytes] = (),
          parent_id: int | None = None, environment: list[bytes] | None = None) -> Submission:
    """The ``SubmitGraph`` message of ``plan``; a task that cannot be serialized, or that uses an object in
    ``deleted``, is an error naming its key, with nothing sent."""
    objects: list[ObjectSpec] = []  # large literals: in the graph's own message, held by its tasks there
    task_ids: dict[Hashable, int] = {}
    literals: dict[Hashable, Any] = {}
    specs: list[TaskSpec] = []
    nodes: list[GraphTask] = []
    outputs = set(plan.outputs)
    runners: dict[Callable, bytes] = {}
    literal_values: dict[Hashable, Any] = {}  # how each literal travels: itself, or a reference to its object
    for node in plan.nodes:
        if node.literal:
            literals[node.key] = node.expression
            continue
        if node.runner not in runners:
            runners[node.runner] = function_id(node.runner)
        values = {}
        for dependency in node.dependencies:
            if dependency in task_ids:
                values[dependency] = ObjectRef(result_object_id(task_ids[dependency]))
            else:
                if dependency not in literal_values:
                    literal_values[dependency] = _literal(dependency, literals[dependency], objects, serializer)
                values[dependency] = literal_values[dependency]
        try:
            payload, refs = serialization.dumps_collecting_refs(((node.expression, values), {}), serializer)
        except Exception as exc:
            raise SerializationError(f"the task of key {node.key!r} cannot be serialized: "
                                     f"{type(exc).__name__}: {exc}") from exc
        if deleted and not set(refs).isdisjoint(deleted):
            raise DeletedObjectError(f"the task of key {node.key!r} uses an object deleted with delete_object(): "
                                     "send it again with send_object() and put the new reference in the graph")
        task_id = next_task_id()
        task_ids[node.key] = task_id
        specs.append(TaskSpec(task_id, runners[node.runner], payload, [r for r in refs if not is_result_object_id(r)],
                              serializer_id, [], node.level, parent_id, environment or []))
        nodes.append(GraphTask(task_id, key_text(node.key), [task_ids[d] for d in node.dependencies if d in task_ids],
                               node.key in outputs))
    label = name or (key_text(plan.outputs[0]) if plan.outputs else f"graph-{graph_id}")
    return Submission(SubmitGraph(graph_id, label, objects, specs, nodes), task_ids, literals)


def key_text(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _literal(key: Hashable, value: Any, objects: list[ObjectSpec], serializer: Serializer | None) -> Any:
    """A literal of the graph as its dependents get it: inline when small, else stored once on the
    scheduler and referred to, so a large array feeding many tasks travels once. Each graph carries
    its own large literals: a claim shared between graphs could be dropped by one while another needs it."""
    if value is None or isinstance(value, (bool, int, float, complex)):
        return value
    try:
        payload = serialization.dumps(value, serializer)
    except Exception as exc:
        raise SerializationError(f"the value of key {key!r} ({type(value).__name__}) cannot be serialized: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if payload.nbytes < INLINE_LITERAL_BYTES:
        return value
    object_id = serialization.content_id(*payload.parts)
    objects.append(ObjectSpec(object_id, payload))
    return ObjectRef(object_id, payload.nbytes)
