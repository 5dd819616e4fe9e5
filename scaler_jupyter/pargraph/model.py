"""The Graph: what tracing a ``@graph`` function yields, and what it turns into.

A graph is four explicit parts: ``inputs`` (the unbound parameters, with their
defaults), ``consts`` (values fixed at trace time), ``nodes`` (calls, in
dependency order) and ``outputs`` (named results). Every argument of a node is a
:class:`Ref` to one of those, so the graph is data: it compares, prints, culls,
renames, fuses and serializes without running anything, and becomes a Dask-format
dict (:meth:`Graph.to_dict`) that any Dask-compatible engine runs.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
import json
import operator
import pickle
import reprlib
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import cloudpickle

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__reduce__": lambda self: "MISSING"})()


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """Where an argument comes from: an input, a constant, or a node's output (``index`` for one of several)."""

    kind: str  # "input", "const" or "node"
    name: str
    index: int | None = None

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


@dataclasses.dataclass(frozen=True, slots=True)
class Input:
    """A parameter left unbound when the graph was traced: ``to_dict`` fills it, or its default does."""

    name: str
    default: Any = MISSING


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A call of ``function`` (or of a nested ``subgraph``) on refs. ``outputs`` > 1: it returns that many values
    as a tuple, each referred to by index."""

    key: str
    label: str
    function: Callable | None
    args: tuple[Ref, ...]
    kwargs: tuple[tuple[str, Ref], ...] = ()
    outputs: int = 1
    subgraph: Graph | None = None
    implicit: bool = False  # made by an operator on a traced value, not by a decorated call

    def refs(self) -> Iterator[Ref]:
        yield from self.args
        for _, ref in self.kwargs:
            yield ref


@dataclasses.dataclass(eq=False)
class Graph:
    """A traced program. See the module docstring; build one with ``fn.to_graph(...)``."""

    inputs: dict[str, Input]
    consts: dict[str, Any]
    nodes: dict[str, Node]
    outputs: dict[str, Ref]
    multiple: bool = False  # the program returns a tuple of its outputs (a tuple annotation)
    name: str = "graph"

    # -- running it elsewhere --------------------------------------------------

    def to_dict(self, *args: Any, **kwargs: Any) -> tuple[dict, str | tuple[str, ...]]:
        """The graph as a Dask-format dict, its inputs filled as a call would fill them; and the output keys:
        one key, or a tuple of keys if the program returns a tuple (``dask.get`` wants ``list(keys)`` then).

        Every key ends in ``@`` and a digest of the graph and its inputs, as Dask's own keys are tokens of
        their content: Dask distributed keeps results by key, so the same names for other inputs would
        return stale results.
        """
        values = self._bind(args, kwargs)
        flat = self.explode_subgraphs()
        try:
            token = _digest(flat.fingerprint().encode() + _value_bytes(values))
        except Exception:  # an input that cannot be pickled here: a fresh token, never a stale hit
            token = uuid.uuid4().hex[:16]
        return _DictBuilder(flat, values, token).build()

    def task_keys(self) -> dict[str, str]:
        """For each node of :meth:`explode_subgraphs`, the key :meth:`to_dict` gives its task, without its
        ``@`` suffix (see :func:`base_key`): how a monitor's per-task states (``Client.status()["graphs"]``)
        map back onto this graph's nodes."""
        keys = _DictBuilder(self.explode_subgraphs(), {}, "").assign_keys()
        return {ref.name: key for ref, key in keys.items() if ref.kind == "node"}

    def _bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        names = list(self.inputs)
        if len(args) > len(names):
            raise TypeError(f"{self.name} takes {len(names)} inputs ({', '.join(names) or 'none'}) "
                            f"but {len(args)} were given")
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name not in self.inputs:
                raise TypeError(f"{self.name} has no input {name!r}; its inputs: {', '.join(names) or 'none'}")
            if name in values:
                raise TypeError(f"{self.name} got input {name!r} twice")
            values[name] = value
        for name, spec in self.inputs.items():
            if name not in values:
                if spec.default is MISSING:
                    raise ValueError(f"input {name!r} of {self.name} has no value and no default")
                values[name] = spec.default
        return values

    # -- transformations -----------------------------------------------------

    def cull(self) -> Graph:
        """Without the nodes and constants no output needs (inputs stay: they are the graph's signature)."""
        needed: set[str] = set()
        stack = [ref for ref in self.outputs.values()]
        consts: set[str] = set()
        while stack:
            ref = stack.pop()
            if ref.kind == "const":
                consts.add(ref.name)
            elif ref.kind == "node" and ref.name not in needed:
                needed.add(ref.name)
                stack.extend(self.nodes[ref.name].refs())
        return dataclasses.replace(
            self,
            consts={k: v for k, v in self.consts.items() if k in consts},
            nodes={k: (dataclasses.replace(n, subgraph=n.subgraph.cull()) if n.subgraph else n)
                   for k, n in self.nodes.items() if k in needed},
        )

    def stabilize(self) -> Graph:
        """Rename constants and nodes from their content, so that tracing the same program twice gives equal
        graphs (trace-time names count calls, which differ from one trace to the next)."""
        renamed: dict[Ref, Ref] = {}
        consts = {}
        for name, value in self.consts.items():
            new = f"const-{_digest(_value_bytes(value))}"
            consts[new] = value
            renamed[Ref("const", name)] = Ref("const", new)

        def rename(ref: Ref) -> Ref:
            if ref.kind == "node":
                return Ref("node", renamed[Ref("node", ref.name)].name, ref.index)
            return renamed.get(ref, ref)

        nodes = {}
        for node in self.nodes.values():
            args = tuple(rename(r) for r in node.args)
            kwargs = tuple((k, rename(r)) for k, r in node.kwargs)
            subgraph = node.subgraph.stabilize() if node.subgraph is not None else None
            identity = [node.label, _function_name(node.function) if node.function is not None else "",
                        [str(r) for r in args], [(k, str(r)) for k, r in kwargs], node.outputs,
                        subgraph.fingerprint() if subgraph is not None else ""]
            key = f"{node.label}-{_digest(json.dumps(identity).encode())}"
            while key in nodes:  # the same call twice (a function with side effects): keep both
                key = f"{key}-{len(nodes)}"
            renamed[Ref("node", node.key)] = Ref("node", key)
            nodes[key] = dataclasses.replace(node, key=key, args=args, kwargs=kwargs, subgraph=subgraph)
        outputs = {name: rename(ref) for name, ref in self.outputs.items()}
        return dataclasses.replace(self, consts=consts, nodes=nodes, outputs=outputs)

    def explode_subgraphs(self) -> Graph:
        """The same graph with every nested ``@graph`` call replaced by its nodes (recursively)."""
        if not any(node.subgraph is not None for node in self.nodes.values()):
            return self
        consts = dict(self.consts)
        nodes: dict[str, Node] = {}
        mapped: dict[str, list[Ref]] = {}  # a subgraph node's key -> the refs of its outputs

        def rename(ref: Ref) -> Ref:
            if ref.kind == "node" and ref.name in mapped:
                outs = mapped[ref.name]
                return outs[0 if ref.index is None else ref.index]
            return ref

        for node in self.nodes.values():
            args = tuple(rename(r) for r in node.args)
            kwargs = tuple((k, rename(r)) for k, r in node.kwargs)
            if node.subgraph is None:
                nodes[node.key] = dataclasses.replace(node, args=args, kwargs=kwargs)
                continue
            inner = node.subgraph.explode_subgraphs()
            prefix = f"{node.key}/"
            bound = dict(zip(inner.inputs, args, strict=False))
            bound.update(kwargs)

            def inner_ref(ref: Ref, prefix=prefix, bound=bound, inner=inner) -> Ref:
                if ref.kind == "input":
                    if ref.name in bound:
                        return bound[ref.name]
                    default_key = f"{prefix}{ref.name}"
                    consts[default_key] = inner.inputs[ref.name].default
                    return Ref("const", default_key)
                return Ref(ref.kind, prefix + ref.name, ref.index)

            for name, value in inner.consts.items():
                consts[prefix + name] = value
            for inner_node in inner.nodes.values():
                key = prefix + inner_node.key
                nodes[key] = dataclasses.replace(
                    inner_node, key=key, args=tuple(inner_ref(r) for r in inner_node.args),
                    kwargs=tuple((k, inner_ref(r)) for k, r in inner_node.kwargs))
            mapped[node.key] = [inner_ref(ref) for ref in inner.outputs.values()]
        outputs = {name: rename(ref) for name, ref in self.outputs.items()}
        return dataclasses.replace(self, consts=consts, nodes=nodes, outputs=outputs)

    def fuse_sequential(self) -> Graph:
        """Merge each chain of calls where a node's only consumer is the next node, and that node reads no other
        node: one task instead of many, for chains of small steps."""
        graph = self.explode_subgraphs()
        consumers: dict[str, int] = {}
        for node in graph.nodes.values():
            for ref in node.refs():
                if ref.kind == "node":
                    consumers[ref.name] = consumers.get(ref.name, 0) + 1
        for ref in graph.outputs.values():
            if ref.kind == "node":
                consumers[ref.name] = consumers.get(ref.name, 0) + 2  # an output is never fused away

        def fusable_into(node: Node) -> str | None:
            """The node ``node`` would absorb: its single node argument, if nothing else reads it."""
            upstream = {ref.name for ref in node.refs() if ref.kind == "node"}
            if len(upstream) != 1 or node.outputs != 1:
                return None
            [name] = upstream
            before = graph.nodes[name]
            if consumers.get(name) != 1 or before.outputs != 1 or any(r.kind == "node" and r.index is not None
                                                                        for r in node.refs()):
                return None
            return name

        nodes: dict[str, Node] = {}
        for node in graph.nodes.values():
            name = fusable_into(node)
            if name is None or name not in nodes:
                nodes[node.key] = node
                continue
            before = nodes.pop(name)
            stages = before.function.stages if isinstance(before.function, Chain) else (
                Stage(before.function, tuple(("arg", i) for i in range(len(before.args))),
                      tuple((k, ("arg", len(before.args) + i)) for i, (k, _) in enumerate(before.kwargs))),)
            refs = [*before.args, *(r for _, r in before.kwargs)]
            slots = []
            for ref in node.args:
                if ref.kind == "node":
                    slots.append(("previous",))
                else:
                    refs.append(ref)
                    slots.append(("arg", len(refs) - 1))
            kwarg_slots = []
            for k, ref in node.kwargs:
                if ref.kind == "node":
                    kwarg_slots.append((k, ("previous",)))
                else:
                    refs.append(ref)
                    kwarg_slots.append((k, ("arg", len(refs) - 1)))
            chain = Chain((*stages, Stage(node.function, tuple(slots), tuple(kwarg_slots))))
            nodes[node.key] = Node(node.key, f"{before.label}+{node.label}", chain, tuple(refs))
        return dataclasses.replace(graph, nodes=nodes)

    # -- serialization ---------------------------------------------------------

    def to_json(self) -> dict:
        """A JSON-compatible dict: functions by import path when they have one, else pickled (base64);
        constants as JSON when they round-trip exactly, else pickled."""
        return {
            "format": "scaler_jupyter.pargraph/1",
            "name": self.name,
            "multiple": self.multiple,
            "inputs": [{"name": i.name, **({} if i.default is MISSING else {"default": _encode_value(i.default)})}
                       for i in self.inputs.values()],
            "consts": {name: _encode_value(value) for name, value in self.consts.items()},
            "nodes": [_encode_node(node) for node in self.nodes.values()],
            "outputs": {name: _encode_ref(ref) for name, ref in self.outputs.items()},
        }

    @staticmethod
    def from_json(data: Mapping | str) -> Graph:
        """The graph :meth:`to_json` wrote (the dict, or its text)."""
        if isinstance(data, str):
            data = json.loads(data)
        if data.get("format") != "scaler_jupyter.pargraph/1":
            raise ValueError(f"not a pargraph graph: format {data.get('format')!r}")
        return Graph(
            inputs={i["name"]: Input(i["name"], _decode_value(i["default"]) if "default" in i else MISSING)
                    for i in data["inputs"]},
            consts={name: _decode_value(value) for name, value in data["consts"].items()},
            nodes={n["key"]: _decode_node(n) for n in data["nodes"]},
            outputs={name: _decode_ref(ref) for name, ref in data["outputs"].items()},
            multiple=data["multiple"],
            name=data["name"],
        )

    def fingerprint(self) -> str:
        """A digest of the graph's structure, functions and constants: equal graphs have equal fingerprints."""
        return _digest(json.dumps(self._canonical(), sort_keys=True).encode(), 16)

    def _canonical(self) -> dict:
        """What equality compares: structure, functions by what they are (import path, or code and captured
        values: a function pickled by value is another object after a round trip), constants by content."""
        return {
            "name": self.name,
            "multiple": self.multiple,
            "inputs": [[i.name, None if i.default is MISSING else _value_identity(i.default)]
                       for i in self.inputs.values()],
            "consts": {name: _value_identity(value) for name, value in self.consts.items()},
            "nodes": [[node.key, node.label, [str(r) + r.kind for r in node.args],
                       [[k, str(r) + r.kind] for k, r in node.kwargs], node.outputs, node.implicit,
                       node.subgraph._canonical() if node.subgraph is not None else _identity(node.function)]
                      for node in self.nodes.values()],
            "outputs": {name: [ref.kind, str(ref)] for name, ref in self.outputs.items()},
        }

    # -- drawing ---------------------------------------------------------------

    def to_dot(self) -> str:
        """The graph in Graphviz's DOT language: inputs as ellipses, constants as notes, calls as boxes,
        outputs as double octagons."""
        def quote(text: str) -> str:  # a DOT string: double quotes and backslashes escaped, nothing else
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

        lines = [f"digraph {quote(self.name)} {{", "  rankdir=LR;", "  node [fontname=Helvetica];"]

        def node_id(ref: Ref) -> str:
            return quote(f"{ref.kind}:{ref.name}")

        for name in self.inputs:
            lines.append(f"  {node_id(Ref('input', name))} [label={quote(name)}, shape=ellipse];")
        for name, value in self.consts.items():
            lines.append(f"  {node_id(Ref('const', name))} [label={quote(_short(value))}, shape=note];")
        for node in self.nodes.values():
            style = ", style=dashed" if node.implicit else ""
            shape = "box3d" if node.subgraph is not None else "box"
            lines.append(f"  {node_id(Ref('node', node.key))} [label={quote(node.label)}, shape={shape}{style}];")
            for position, ref in enumerate(node.args):
                lines.append(f"  {node_id(ref)} -> {node_id(Ref('node', node.key))} "
                             f"[label={quote(_edge_label(ref, str(position)))}];")
            for name, ref in node.kwargs:
                lines.append(f"  {node_id(ref)} -> {node_id(Ref('node', node.key))} "
                             f"[label={quote(_edge_label(ref, name))}];")
        for name, ref in self.outputs.items():
            out = quote(f"output:{name}")
            lines.append(f"  {out} [label={quote(name)}, shape=doubleoctagon];")
            lines.append(f"  {node_id(ref)} -> {out};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """An interactive drawing where HTML is shown (a notebook), else the repr: the drawing embeds BokehJS,
        about 1.3 MB, which a terminal has no use for."""
        if (include is not None and "text/html" not in include) or (exclude is not None and "text/html" in exclude):
            return {"text/plain": repr(self)}
        from scaler_jupyter.pargraph.drawing import mimebundle

        return mimebundle(self)

    # -- comparison and display ----------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self._canonical() == other._canonical()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        inputs = ", ".join(name if spec.default is MISSING else f"{name}={_short(spec.default)}"
                           for name, spec in self.inputs.items())
        calls = ", ".join(node.label for node in self.nodes.values())
        outputs = ", ".join(self.outputs)
        return f"<Graph {self.name}({inputs}) -> ({outputs}): {len(self.nodes)} nodes [{calls}]>"


# -- fused chains ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Stage:
    """One call of a fused chain: where each argument comes from (``("arg", i)`` or ``("previous",)``)."""

    function: Callable
    args: tuple
    kwargs: tuple


@dataclasses.dataclass(frozen=True, slots=True)
class Chain:
    """Several calls run as one task, each fed the previous one's result."""

    stages: tuple[Stage, ...]

    @property
    def __name__(self) -> str:
        return "+".join(_label(stage.function) for stage in self.stages)

    def __call__(self, *args: Any) -> Any:
        previous = None
        for stage in self.stages:
            values = [*args, previous]  # ("previous",) reads the last element
            previous = stage.function(*[values[s[1]] if s[0] == "arg" else values[-1] for s in stage.args],
                                      **{k: values[s[1]] if s[0] == "arg" else values[-1] for k, s in stage.kwargs})
        return previous


# -- to_dict ---------------------------------------------------------------------


class _Quoted:
    """A constant that Dask would misread (a string equal to a key, a tuple that looks like a task), carried
    opaquely and unwrapped by the task that reads it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self):
        return (_Quoted, (self.value,))


def unquote(quoted: _Quoted) -> Any:
    return quoted.value


@dataclasses.dataclass(frozen=True, slots=True)
class KeywordCall:
    """A call with keyword arguments in Dask's tuple form, ``(KeywordCall(f, names), *args, *kwarg_values)``:
    the names ride in the callable, where Dask never mistakes them for keys."""

    function: Callable
    names: tuple[str, ...]

    @property
    def __name__(self) -> str:
        return _label(self.function)

    def __call__(self, *values: Any) -> Any:
        split = len(values) - len(self.names)
        return self.function(*values[:split], **dict(zip(self.names, values[split:], strict=True)))


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
            if ref.kind == "node" and ref.index is None and Ref("node", ref.name) not in self.keys:
                self.keys[Ref("node", ref.name)] = name + self.suffix
        for name in graph.inputs:
            self.keys[Ref("input", name)] = self._fresh(f"input-{name}", taken)
        for name in graph.consts:
            self.keys[Ref("const", name)] = self._fresh(name, taken)
        for key in graph.nodes:
            if Ref("node", key) not in self.keys:
                self.keys[Ref("node", key)] = self._fresh(key, taken)
        self.every_key = taken
        return self.keys

    def build(self) -> tuple[dict, str | tuple[str, ...]]:
        graph = self.graph
        self.assign_keys()
        for name, value in self.values.items():
            self.dsk[self.keys[Ref("input", name)]] = self._literal(value)
        for name, value in graph.consts.items():
            self.dsk[self.keys[Ref("const", name)]] = self._literal(value)
        for node in graph.nodes.values():
            args = [self._key(ref) for ref in node.args]
            if node.kwargs:
                function = KeywordCall(node.function, tuple(k for k, _ in node.kwargs))
                task = (function, *args, *(self._key(ref) for _, ref in node.kwargs))
            else:
                task = (node.function, *args)
            self.dsk[self.keys[Ref("node", node.key)]] = task
        outputs = []
        for name, ref in graph.outputs.items():
            key = name + self.suffix
            outputs.append(key)
            if key in self.dsk:
                continue  # the node's own key
            if ref.kind == "node" and ref.index is not None:
                self.dsk[key] = (operator.getitem, self.keys[Ref("node", ref.name)], ref.index)
            elif ref.kind == "node":
                self.dsk[key] = self.keys[Ref("node", ref.name)]  # two outputs of one node: an alias
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
        return value if _inert(value, self.every_key) else (unquote, _Quoted(value))


def base_key(key: str) -> str:
    """A :meth:`Graph.to_dict` key without its ``@`` content digest: the name a node has in every call."""
    return key.rpartition("@")[0] if "@" in key else key


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


# -- JSON ----------------------------------------------------------------------


def _encode_value(value: Any) -> dict:
    if _json_exact(value):
        return {"json": value}
    return {"pickle": base64.b64encode(cloudpickle.dumps(value)).decode()}


def _decode_value(data: dict) -> Any:
    if "json" in data:
        return data["json"]
    return pickle.loads(base64.b64decode(data["pickle"]))


def _json_exact(value: Any) -> bool:
    """Whether ``value`` comes back from JSON as equal and of the same types."""
    if value is None or type(value) in (bool, int, str):
        return True
    if type(value) is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if type(value) is list:
        return all(_json_exact(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    return False


def _encode_ref(ref: Ref) -> list:
    return [ref.kind, ref.name] if ref.index is None else [ref.kind, ref.name, ref.index]


def _decode_ref(data: list) -> Ref:
    return Ref(*data)


def _encode_function(function: Callable) -> dict:
    path = _import_path(function)
    if path is not None:
        return {"import": path}
    return {"pickle": base64.b64encode(cloudpickle.dumps(function)).decode()}


def _decode_function(data: dict) -> Callable:
    if "import" in data:
        module, _, qualname = data["import"].partition(":")
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target
    return pickle.loads(base64.b64decode(data["pickle"]))


def _encode_node(node: Node) -> dict:
    data: dict = {"key": node.key, "label": node.label, "args": [_encode_ref(r) for r in node.args]}
    if node.kwargs:
        data["kwargs"] = [[k, _encode_ref(r)] for k, r in node.kwargs]
    if node.outputs != 1:
        data["outputs"] = node.outputs
    if node.implicit:
        data["implicit"] = True
    if node.subgraph is not None:
        data["subgraph"] = node.subgraph.to_json()
    else:
        data["function"] = _encode_function(node.function)
    return data


def _decode_node(data: dict) -> Node:
    subgraph = Graph.from_json(data["subgraph"]) if "subgraph" in data else None
    return Node(data["key"], data["label"], None if subgraph is not None else _decode_function(data["function"]),
                tuple(_decode_ref(r) for r in data["args"]),
                tuple((k, _decode_ref(r)) for k, r in data.get("kwargs", ())),
                data.get("outputs", 1), subgraph, data.get("implicit", False))


def _import_path(function: Callable) -> str | None:
    """``module:qualname`` if importing it gives back this very object, else None."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if target is function else None


# -- small helpers -------------------------------------------------------------


def _digest(data: bytes, size: int = 8) -> str:
    return hashlib.blake2b(data, digest_size=size).hexdigest()


def _value_bytes(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        return cloudpickle.dumps(value, protocol=5)


def _function_name(function: Callable) -> str:
    return _import_path(function) or _digest(json.dumps(_identity(function)).encode())


def _value_identity(value: Any) -> str:
    return _digest(_value_bytes(value), 16)


def _identity(function: Any, _seen: frozenset = frozenset()) -> Any:
    """What a function is, for equality: its import path, or its code and what it captured; a fused chain by
    its stages. A function pickled by value is a new object after a round trip, but the same function."""
    path = _import_path(function)
    if path is not None:
        return ["import", path]
    if id(function) in _seen:  # a recursive function refers to itself
        return ["self"]
    _seen = _seen | {id(function)}
    if isinstance(function, Chain):
        return ["chain", [[_identity(st.function, _seen), list(map(list, st.args)),
                           [[k, list(v)] for k, v in st.kwargs]] for st in function.stages]]
    if getattr(function, "pargraph_kind", None) is not None:  # a decorated function: what it wraps
        return ["pargraph", function.pargraph_kind, _identity(function.__wrapped__, _seen)]
    code = getattr(function, "__code__", None)
    if code is not None:
        cells = [_identity(c, _seen) if callable(c) else _value_identity(c)
                 for c in (cell.cell_contents for cell in function.__closure__ or () if _cell_filled(cell))]
        return ["code", function.__module__, function.__qualname__, _code_identity(code), cells,
                _value_identity((function.__defaults__, function.__kwdefaults__))]
    return ["pickle", _value_identity(function)]


def _code_identity(code: Any) -> str:
    consts = [_code_identity(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
    return _digest(code.co_code + repr((code.co_names, code.co_varnames, consts)).encode(), 16)


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _label(function: Callable) -> str:
    return getattr(function, "__name__", None) or type(function).__name__


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 24


def _short(value: Any) -> str:
    """A bounded repr: a large constant must not cost its full repr in ``repr(graph)`` or ``to_dot``."""
    return _SHORT.repr(value)


def _edge_label(ref: Ref, slot: str) -> str:
    return slot if ref.index is None else f"{slot} ← [{ref.index}]"
