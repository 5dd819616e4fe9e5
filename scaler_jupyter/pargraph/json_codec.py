"""A Graph as JSON: ``Graph.to_json`` and ``Graph.from_json``.

Format ``scaler_jupyter.pargraph/1``: ``name``, ``multiple``, ``inputs`` (a list of
``{"name", "default"?}``), ``consts`` (name -> value), ``nodes`` (in dependency order:
``key``, ``label``, ``args``, and ``kwargs``, ``outputs``, ``implicit``, ``function`` or
``subgraph`` where they differ from the defaults) and ``outputs`` (name -> ref). A ref is
``[kind, name]`` or ``[kind, name, index]``. A function is ``{"import": "module:qualname"}``
when importing that gives it back, else ``{"pickle": base64}``; a value is ``{"json": value}``
when it comes back from JSON equal and of the same types, else ``{"pickle": base64}``.
Pickles follow the project's one pickling rule.
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Callable, Mapping
from typing import Any

from scaler_jupyter.pargraph import identity
from scaler_jupyter.pargraph.model import MISSING, Graph, Input, Node, Ref, RefKind
from scaler_jupyter.protocol import pickling

FORMAT = "scaler_jupyter.pargraph/1"


def encode(graph: Graph) -> dict:
    """The JSON-compatible dict of ``graph``."""
    return {
        "format": FORMAT,
        "name": graph.name,
        "multiple": graph.multiple,
        "inputs": [{"name": i.name, **({} if i.default is MISSING else {"default": _encode_value(i.default)})}
                   for i in graph.inputs.values()],
        "consts": {name: _encode_value(value) for name, value in graph.consts.items()},
        "nodes": [_encode_node(node) for node in graph.nodes.values()],
        "outputs": {name: _encode_ref(ref) for name, ref in graph.outputs.items()},
    }


def decode(data: Mapping | str) -> Graph:
    """The graph :func:`encode` wrote (the dict, or its text)."""
    if isinstance(data, str):
        data = json.loads(data)
    if data.get("format") != FORMAT:
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


def _encode_value(value: Any) -> dict:
    if _json_exact(value):
        return {"json": value}
    return {"pickle": _pickled(value)}


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
    return [str(ref.kind), ref.name] if ref.index is None else [str(ref.kind), ref.name, ref.index]


def _decode_ref(data: list) -> Ref:
    kind, *rest = data
    return Ref(RefKind(kind), *rest)


def _encode_function(function: Callable) -> dict:
    path = pickling.import_path(function)
    if path is not None:
        return {"import": path}
    return {"pickle": _pickled(function)}


def _decode_function(data: dict) -> Callable:
    if "import" in data:
        return identity.resolve(data["import"])
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
        data["subgraph"] = encode(node.subgraph)
    else:
        data["function"] = _encode_function(node.function)
    return data


def _decode_node(data: dict) -> Node:
    subgraph = decode(data["subgraph"]) if "subgraph" in data else None
    return Node(data["key"], data["label"], None if subgraph is not None else _decode_function(data["function"]),
                tuple(_decode_ref(r) for r in data["args"]),
                tuple((k, _decode_ref(r)) for k, r in data.get("kwargs", ())),
                data.get("outputs", 1), subgraph, data.get("implicit", False))


def _pickled(value: Any) -> str:
    return base64.b64encode(pickling.dumps(value)).decode()
