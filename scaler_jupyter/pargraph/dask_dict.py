"""A Graph as a Dask-format dict: ``{key: literal | key | (callable, *arguments)}`` and its output keys.

Keys: an output is keyed by its name; an input by ``input-NAME``; a constant and a node
by their graph names, made unique with ``~N``. Every key ends in ``@`` and a digest of
the graph and its inputs, as Dask's own keys are tokens of their content: Dask distributed
keeps results by key, so the same names for other inputs would return stale results
(:func:`base_key` strips it). A node with keyword arguments becomes a :class:`KeywordCall`,
a constant Dask would misread is quoted, and a node's output ``i`` of several is a
``getitem`` task of its own.
"""

from __future__ import annotations

import operator
import uuid
from typing import Any

from scaler_jupyter.pargraph import identity, transforms
from scaler_jupyter.pargraph.calls import KeywordCall, Quoted, unquote
from scaler_jupyter.pargraph.model import MISSING, Graph, Ref, RefKind


def to_dict(graph: Graph, args: tuple, kwargs: dict) -> tuple[dict, str | tuple[str, ...]]:
    """The graph as a Dask-format dict, its inputs filled from ``args`` and ``kwargs`` as a call would fill
    them; and the output keys: one key, or a tuple of keys if the program returns a tuple."""
    values = bind(graph, args, kwargs)
    flat = transforms.explode_subgraphs(graph)
    try:
        token = identity.digest(identity.fingerprint(flat).encode() + identity.value_bytes(values))
    except Exception:  # an input that cannot be pickled here: a fresh token, never a stale hit
        token = uuid.uuid4().hex[:identity.KEY_DIGEST_CHARS]
    return _DictBuilder(flat, values, token).build()


def task_keys(graph: Graph) -> dict[str, str]:
    """For each node of ``explode_subgraphs(graph)``, the key :func:`to_dict` gives its task, without its
    ``@`` suffix (see :func:`base_key`)."""
    keys = _DictBuilder(transforms.explode_subgraphs(graph), {}, "").assign_keys()
    return {ref.name: key for ref, key in keys.items() if ref.kind == RefKind.NODE}


def base_key(key: str) -> str:
    """A :func:`to_dict` key without its ``@`` content digest: the name a node has in every call."""
    return key.rpartition("@")[0] if "@" in key else key


def bind(graph: Graph, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The value of every input of ``graph`` for a call with ``args`` and ``kwargs``, defaults filled in."""
    names = list(graph.inputs)
    if len(args) > len(names):
        raise TypeError(f"{graph.name} takes {len(names)} inputs ({', '.join(names) or 'none'}) "
                        f"but {len(args)} were given")
    values = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name not in graph.inputs:
            raise TypeError(f"{graph.name} has no input {name!r}; its inputs: {', '.join(names) or 'none'}")
        if name in values:
            raise TypeError(f"{graph.name} got input {name!r} twice")
        values[name] = value
    for name, spec in graph.inputs.items():
        if name not in values:
            if spec.default is MISSING:
                raise ValueError(f"input {name!r} of {graph.name} has no value and no default")
            values[name] = spec.default
    return values


class _DictBuilder:
    """Turns a flat graph (no subgraphs) and its input values into a Dask dict and output keys."""

    def __init__(self, graph: Graph, values: dict, token: str) -> None:
        self.graph = graph
        self.values = values
        self.suffix = f"@{token}" if token else ""
        self.keys: dict[Ref, str] = {}
        self.dsk: dict = {}

    def assign_keys(self) -> dict[Ref, str]:
        """The Dask key of every input, constant and node; outputs are keyed by their names."""
        graph = self.graph
        taken = {name + self.suffix for name in graph.outputs}
        # an output produced by a node takes the output's name as the node's key: no alias task
        for name, ref in graph.outputs.items():
            if ref.kind == RefKind.NODE and ref.index is None and Ref(RefKind.NODE, ref.name) not in self.keys:
                self.keys[Ref(RefKind.NODE, ref.name)] = name + self.suffix
        for name in graph.inputs:
            self.keys[Ref(RefKind.INPUT, name)] = self._fresh(f"input-{name}", taken)
        for name in graph.consts:
            self.keys[Ref(RefKind.CONST, name)] = self._fresh(name, taken)
        for key in graph.nodes:
            if Ref(RefKind.NODE, key) not in self.keys:
                self.keys[Ref(RefKind.NODE, key)] = self._fresh(key, taken)
        self.every_key = taken
        return self.keys

    def build(self) -> tuple[dict, str | tuple[str, ...]]:
        graph = self.graph
        self.assign_keys()
        for name, value in self.values.items():
            self.dsk[self.keys[Ref(RefKind.INPUT, name)]] = self._literal(value)
        for name, value in graph.consts.items():
            self.dsk[self.keys[Ref(RefKind.CONST, name)]] = self._literal(value)
        for node in graph.nodes.values():
            args = [self._key(ref) for ref in node.args]
            if node.kwargs:
                function = KeywordCall(node.function, tuple(k for k, _ in node.kwargs))
                task = (function, *args, *(self._key(ref) for _, ref in node.kwargs))
            else:
                task = (node.function, *args)
            self.dsk[self.keys[Ref(RefKind.NODE, node.key)]] = task
        outputs = []
        for name, ref in graph.outputs.items():
            key = name + self.suffix
            outputs.append(key)
            if key in self.dsk:
                continue  # the node's own key
            if ref.kind == RefKind.NODE and ref.index is not None:
                self.dsk[key] = (operator.getitem, self.keys[Ref(RefKind.NODE, ref.name)], ref.index)
            elif ref.kind == RefKind.NODE:
                self.dsk[key] = self.keys[Ref(RefKind.NODE, ref.name)]  # two outputs of one node: an alias
            else:
                self.dsk[key] = self.dsk[self._key(ref)]  # an input or a constant, as it is
        return self.dsk, (tuple(outputs) if graph.multiple else outputs[0])

    def _fresh(self, key: str, taken: set[str]) -> str:
        candidate, n = key, 1
        while candidate + self.suffix in taken:
            n += 1
            candidate = f"{key}~{n}"
        taken.add(candidate + self.suffix)
        return candidate + self.suffix

    def _key(self, ref: Ref) -> str:
        whole = self.keys[Ref(ref.kind, ref.name)]
        if ref.index is None:
            return whole
        key = f"{base_key(whole)}[{ref.index}]{self.suffix}"
        if key not in self.dsk:
            self.dsk[key] = (operator.getitem, whole, ref.index)
        return key

    def _literal(self, value: Any) -> Any:
        return value if _inert(value, self.every_key) else (unquote, Quoted(value))


def _inert(value: Any, keys: set) -> bool:
    """Whether Dask would read ``value`` as the literal it is (no task, no key inside)."""
    if type(value) is tuple and value and callable(value[0]):
        return False
    try:
        if value in keys:
            return False
    except TypeError:  # unhashable: cannot be a key
        pass
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_inert(item, keys) for item in value)
    if isinstance(value, dict):
        return all(_inert(item, keys) for item in value.values())
    return True
