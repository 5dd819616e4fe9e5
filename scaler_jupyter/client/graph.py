"""Dask-format task graphs made ready for the scheduler: culled, checked and ordered.

A graph is a mapping of key to value. A value is a task, ``(callable, *args)``,
whose arguments may be keys of the graph, nested tasks, or lists, tuples, sets
and dicts of those; a bare key (an alias); or a literal. Newer Dask hands its
graphs over as ``dask._task_spec`` objects instead (or mixed with tuples); those
are normalized with Dask's own ``convert_legacy_graph`` and run by calling each
node with its dependencies' values, as Dask's schedulers do. Tuple graphs need no
Dask: they are walked here (:func:`_scan`), with the semantics of Dask's current
schedulers.

Everything here runs in the client before anything is sent, so a cycle or a
missing key is an error with nothing started.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from scaler_jupyter.errors import GraphError


@dataclasses.dataclass(slots=True)
class Node:
    """One key of a culled graph: a task to run, or a literal value that needs none."""

    key: Hashable
    expression: Any  # the task (tuple form or a Dask node), or the literal value
    dependencies: list[Hashable]
    literal: bool = False
    level: int = 0  # longest chain of tasks below it: the scheduler runs deeper tasks first, to free memory sooner
    runner: Callable | None = None  # what runs it on a worker: ``runner(expression, values)``


@dataclasses.dataclass(slots=True)
class Plan:
    """A graph ready to submit: its nodes in dependency order, and the keys asked for."""

    nodes: list[Node]
    outputs: list[Hashable]  # the requested keys, flat, without repeats
    shape: Any  # ``keys`` as given, for :func:`repack`


def plan(dsk: Any, keys: Any) -> Plan:
    """Cull ``dsk`` to what ``keys`` needs, check it and order it; raise :class:`GraphError` if it cannot run."""
    if not isinstance(dsk, Mapping) and hasattr(dsk, "__dask_graph__"):  # a Dask expression or collection
        dsk = dsk.__dask_graph__()
    if not isinstance(dsk, Mapping):
        raise TypeError(f"a task graph is a mapping of key to task, not {type(dsk).__name__}")
    outputs = list(dict.fromkeys(_flatten(keys)))
    if _uses_task_spec(dsk):
        nodes = _dask_nodes(dsk, outputs)
    else:
        nodes = _tuple_nodes(dsk, outputs)
    ordered = _order(nodes, outputs)
    return Plan(ordered, outputs, keys)


def repack(shape: Any, values: Mapping) -> Any:
    """``shape`` (a key, or nested lists of keys) with each key replaced by its value, and each list by a
    tuple: what Dask's own ``get`` returns (``compute_as_if_collection`` relies on it)."""
    if isinstance(shape, list):
        return tuple([repack(item, values) for item in shape])
    return values[shape]


def _flatten(keys: Any):
    if isinstance(keys, list):
        for item in keys:
            yield from _flatten(item)
    else:
        try:
            hash(keys)
        except TypeError:
            raise GraphError(f"{keys!r} is not a key: keys are hashable (str, tuples...), or lists of keys") from None
        yield keys


def _missing(key: Hashable, needed_by: Hashable | None) -> GraphError:
    if needed_by is None:
        return GraphError(f"key {key!r} is not in the graph")
    return GraphError(f"key {key!r} is not in the graph, but {needed_by!r} depends on it")


def _cull(dsk: Mapping, outputs: list, dependencies_of: Callable[[Hashable, Any], list]) -> dict[Hashable, list]:
    """The dependencies of every key the outputs need, found by walking back from them."""
    needed: dict[Hashable, list] = {}
    stack = [(key, None) for key in reversed(outputs)]
    while stack:
        key, needed_by = stack.pop()
        if key in needed:
            continue
        try:
            value = dsk[key]
        except KeyError:
            raise _missing(key, needed_by) from None
        dependencies = dependencies_of(key, value)
        needed[key] = dependencies
        stack.extend((dependency, key) for dependency in dependencies if dependency not in needed)
    return needed


def _order(nodes: dict[Hashable, Node], outputs: list) -> list[Node]:
    """Nodes in an order where each comes after its dependencies; a cycle is a :class:`GraphError`."""
    sorter = graphlib.TopologicalSorter({key: node.dependencies for key, node in nodes.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(repr(key) for key in exc.args[1])
        raise GraphError(f"the graph has a cycle: {cycle}") from None
    ordered = [nodes[key] for key in order]
    for node in ordered:
        if not node.literal:
            node.level = 1 + max((nodes[d].level for d in node.dependencies), default=0)
    return ordered


# -- graphs of tuples -----------------------------------------------------------


def _is_task(value: Any) -> bool:
    return type(value) is tuple and bool(value) and callable(value[0])


def _tuple_nodes(dsk: Mapping, outputs: list) -> dict[Hashable, Node]:
    has_task: dict[Hashable, bool] = {}

    def dependencies_of(key, value) -> list:
        found: dict = {}
        has_task[key] = _scan(value, dsk, found)
        return list(found)

    nodes = {}
    for key, dependencies in _cull(dsk, outputs, dependencies_of).items():
        literal = not dependencies and not has_task[key]
        nodes[key] = Node(key, dsk[key], dependencies, literal, runner=None if literal else run_tuple_task)
    return nodes


def _is_key(value: Any, keys: Mapping) -> bool:
    """Whether ``value`` names another entry: only strings, numbers and tuples do, as in Dask."""
    if not isinstance(value, (str, int, float, tuple)):
        return False
    try:
        return value in keys
    except TypeError:  # a tuple holding something unhashable
        return False


def _scan(value: Any, dsk: Mapping, found: dict) -> bool:
    """Record in ``found`` the keys ``value`` reads; return whether a task appears in it.

    As in Dask: a task's arguments are read, and so are lists, tuples and sets, at any
    depth; a dict is read only as a task's direct argument; anything else is a literal.
    """
    if _is_task(value):
        for arg in value[1:]:
            for item in (arg.values() if type(arg) is dict else (arg,)):
                _scan(item, dsk, found)
        return True
    if _is_key(value, dsk):
        found[value] = None
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return any([_scan(item, dsk, found) for item in value])  # a list: every item is scanned
    return False


def run_tuple_task(expression: Any, values: dict) -> Any:
    """Evaluate a tuple-form task on a worker; ``values`` holds its dependencies' results by key."""
    if _is_task(expression):
        function, *args = expression
        return function(*[{name: run_tuple_task(item, values) for name, item in arg.items()} if type(arg) is dict
                          else run_tuple_task(arg, values) for arg in args])
    if _is_key(expression, values):
        return values[expression]
    if isinstance(expression, (list, tuple, set, frozenset)):
        items = [run_tuple_task(item, values) for item in expression]
        return type(expression)(*items) if hasattr(expression, "_fields") else type(expression)(items)
    return expression


# -- graphs of dask._task_spec nodes ----------------------------------------------


def _uses_task_spec(dsk: Mapping) -> bool:
    """Whether Dask's node objects appear in the graph (Dask is then installed: they came from it)."""
    return any(type(value).__module__ == "dask._task_spec" for value in dsk.values())


def _dask_nodes(dsk: Mapping, outputs: list) -> dict[Hashable, Node]:
    from dask._task_spec import DataNode, convert_legacy_graph

    converted = convert_legacy_graph(dsk)
    nodes = {}
    for key, dependencies in _cull(converted, outputs, lambda key, node: list(node.dependencies)).items():
        node = converted[key]
        if isinstance(node, DataNode):
            nodes[key] = Node(key, node.value, [], literal=True)
        else:
            nodes[key] = Node(key, node, dependencies, runner=run_dask_node)
    return nodes


def run_dask_node(node: Any, values: dict) -> Any:
    """Run a ``dask._task_spec`` node on a worker, as Dask's schedulers do."""
    return node(values)
