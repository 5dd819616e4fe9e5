"""GraphEngine: run a Dask-format graph on whatever executes tasks.

The backend decides how: this engine's :class:`~scaler_jupyter.Client` runs the
graph scheduler-side (``Client.get``); a Dask ``distributed.Client`` runs it with
Dask's scheduler; any other executor with ``submit`` (a ``ProcessPoolExecutor``,
loky, ipyparallel's views) gets each task as soon as its dependencies are done,
from here; and with no backend the graph runs in this process, in order. Either
way the graph is culled and checked first (a cycle or a missing key is a
``GraphError`` before anything runs), intermediate results are dropped as soon as
no remaining task needs them, and the first failure cancels the rest and is raised.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Hashable, Mapping
from typing import Any

from scaler_jupyter.client import Client
from scaler_jupyter.client.graph import Node, Plan, plan

# A search path, empty: Citi's ``pargraph.engine.engine`` is an alias module beneath this one (see citi.py).
__path__: list[str] = []


class GraphEngine:
    """Runs Dask-format graphs (``Graph.to_dict()``'s, or anyone's) on ``backend``; in this process if None."""

    def __init__(self, backend: Any = None) -> None:
        self.backend = backend

    def get(self, dsk: Mapping, keys: Any, **options: Any) -> Any:
        """The values of ``keys`` (a key, or lists, tuples and dicts of keys, nested), in the same shape.
        ``options`` go to the backend's own ``get`` where it has one."""
        flat: list = []
        shape = _shape(keys, dsk, flat)
        backend = self.backend
        if backend is None:
            values = _run_here(plan(dsk, flat))
        elif _has_scheduler_side_get(backend):
            if not isinstance(backend, Client):  # Dask checks late, with its own errors: the same checks first
                plan(dsk, flat)
            values = dict(zip(flat, backend.get(dsk, flat, **options), strict=True))
        elif hasattr(backend, "submit"):
            values = _run_on_executor(backend, plan(dsk, flat))
        else:
            raise TypeError(f"a GraphEngine backend needs submit() or get(): {type(backend).__name__} has neither")
        return _rebuild(shape, [values[key] for key in flat])

    def __repr__(self) -> str:
        return f"GraphEngine({'in this process' if self.backend is None else type(self.backend).__name__})"


def _has_scheduler_side_get(backend: Any) -> bool:
    """This engine's Client and Dask's distributed Client run whole graphs themselves."""
    if isinstance(backend, Client):
        return True
    return type(backend).__module__.startswith("distributed") and hasattr(backend, "get")


# -- running it ----------------------------------------------------------------


def _consumers(p: Plan) -> dict[Hashable, int]:
    """How many tasks read each key; a result is dropped when the last of them has run."""
    counts: dict[Hashable, int] = {}
    for node in p.nodes:
        for dependency in node.dependencies:
            counts[dependency] = counts.get(dependency, 0) + 1
    return counts


def _release(node: Node, results: dict, counts: dict, outputs: set) -> None:
    for dependency in node.dependencies:
        counts[dependency] -= 1
        if counts[dependency] == 0 and dependency not in outputs:
            del results[dependency]


def _run_here(p: Plan) -> dict:
    outputs = set(p.outputs)
    counts = _consumers(p)
    results: dict = {}
    for node in p.nodes:
        if node.literal:
            results[node.key] = node.expression
        else:
            results[node.key] = node.runner(node.expression, {d: results[d] for d in node.dependencies})
        _release(node, results, counts, outputs)
    return results


def _run_on_executor(executor: Any, p: Plan) -> dict:
    """Submit each task once its dependencies are done; the first failure cancels what has not started."""
    outputs = set(p.outputs)
    counts = _consumers(p)
    waiting = {node.key: len(set(node.dependencies)) for node in p.nodes}
    dependents: dict[Hashable, list[Node]] = {}
    for node in p.nodes:
        for dependency in set(node.dependencies):
            dependents.setdefault(dependency, []).append(node)
    results: dict = {}
    running: dict[concurrent.futures.Future, Node] = {}

    def done(node: Node, value: Any) -> None:
        results[node.key] = value
        _release(node, results, counts, outputs)
        for dependent in dependents.get(node.key, ()):
            waiting[dependent.key] -= 1
            if waiting[dependent.key] == 0:
                start(dependent)

    def start(node: Node) -> None:
        if node.literal:
            done(node, node.expression)
            return
        values = {d: results[d] for d in node.dependencies}
        running[executor.submit(node.runner, node.expression, values)] = node

    try:
        for node in [node for node in p.nodes if not node.dependencies]:  # before any start changes `waiting`
            start(node)
        while running:
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                node = running.pop(future)
                done(node, future.result())
    except BaseException:
        for future in running:
            future.cancel()
        raise
    return results


# -- the shape of keys -----------------------------------------------------------


class _Slot(int):
    """A position in the flat list of keys."""


def _shape(keys: Any, dsk: Mapping, flat: list) -> Any:
    """``keys`` with each key replaced by its position in ``flat``. A tuple is a key if the graph has it."""
    try:
        if keys in dsk:
            flat.append(keys)
            return _Slot(len(flat) - 1)
    except TypeError:  # unhashable: a list or a dict
        pass
    if isinstance(keys, list):
        return [_shape(k, dsk, flat) for k in keys]
    if isinstance(keys, tuple):
        return tuple(_shape(k, dsk, flat) for k in keys)
    if isinstance(keys, dict):
        return {name: _shape(k, dsk, flat) for name, k in keys.items()}
    flat.append(keys)  # not in the graph: plan() says so, naming it
    return _Slot(len(flat) - 1)


def _rebuild(shape: Any, values: list) -> Any:
    if isinstance(shape, _Slot):
        return values[shape]
    if isinstance(shape, list):
        return [_rebuild(s, values) for s in shape]
    if isinstance(shape, tuple):
        return tuple(_rebuild(s, values) for s in shape)
    return {name: _rebuild(s, values) for name, s in shape.items()}
