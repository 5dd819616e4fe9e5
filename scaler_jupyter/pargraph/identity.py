"""What makes two graphs the same program: equality, fingerprints, and the digests that name keys.

Functions are compared by what they are, not by which object holds them: an importable
function by its import path (``module:qualname``), any other by its code and what it
captured, since a function pickled by value is a new object after a round trip but the
same function. Values are compared by their pickle (the project's one pickling rule) and
digested with the project's one content id (:mod:`scaler_jupyter.protocol.pickling`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from scaler_jupyter.pargraph.calls import Chain
from scaler_jupyter.pargraph.model import MISSING, Graph
from scaler_jupyter.protocol import pickling

KEY_DIGEST_CHARS = 16  # the hex digits of a digest in a key: 64 bits tell a graph's few thousand names apart


def fingerprint(graph: Graph) -> str:
    """A digest of the graph's structure, functions and constants: equal graphs have equal fingerprints."""
    return digest(json.dumps(canonical(graph), sort_keys=True).encode(), full=True)


def canonical(graph: Graph) -> dict:
    """What equality compares: structure, functions by what they are, constants by content."""
    return {
        "name": graph.name,
        "multiple": graph.multiple,
        "inputs": [[i.name, None if i.default is MISSING else value_identity(i.default)]
                   for i in graph.inputs.values()],
        "consts": {name: value_identity(value) for name, value in graph.consts.items()},
        "nodes": [[node.key, node.label, [str(r) + r.kind for r in node.args],
                   [[k, str(r) + r.kind] for k, r in node.kwargs], node.outputs, node.implicit,
                   canonical(node.subgraph) if node.subgraph is not None else function_identity(node.function)]
                  for node in graph.nodes.values()],
        "outputs": {name: [str(ref.kind), str(ref)] for name, ref in graph.outputs.items()},
    }


def digest(data: bytes, full: bool = False) -> str:
    """The content id of ``data`` in hex: whole with ``full``, else the ``KEY_DIGEST_CHARS`` a key carries."""
    text = pickling.content_id(data).hex()
    return text if full else text[:KEY_DIGEST_CHARS]


def value_bytes(value: Any) -> bytes:
    """``value`` pickled by the project's rule: what its identity is computed from."""
    return pickling.dumps(value)


def value_identity(value: Any) -> str:
    return digest(value_bytes(value), full=True)


def function_name(function: Callable) -> str:
    """A function's import path, or a digest of its identity where it has none."""
    return pickling.import_path(function) or digest(json.dumps(function_identity(function)).encode())


def function_identity(function: Any, _seen: frozenset = frozenset()) -> Any:
    """What a function is, for equality: its import path, or its code and what it captured; a fused chain by
    its stages. A function pickled by value is a new object after a round trip, but the same function."""
    path = pickling.import_path(function)
    if path is not None:
        return ["import", path]
    if id(function) in _seen:  # a recursive function refers to itself
        return ["self"]
    _seen = _seen | {id(function)}
    if isinstance(function, Chain):
        return ["chain", [[function_identity(st.function, _seen), list(map(list, st.args)),
                           [[k, list(v)] for k, v in st.kwargs]] for st in function.stages]]
    if getattr(function, "pargraph_kind", None) is not None:  # a decorated function: what it wraps
        return ["pargraph", function.pargraph_kind, function_identity(function.__wrapped__, _seen)]
    code = getattr(function, "__code__", None)
    if code is not None:
        cells = [function_identity(c, _seen) if callable(c) else value_identity(c)
                 for c in (cell.cell_contents for cell in function.__closure__ or () if _cell_filled(cell))]
        return ["code", function.__module__, function.__qualname__, _code_identity(code), cells,
                value_identity((function.__defaults__, function.__kwdefaults__))]
    return ["pickle", value_identity(function)]


def resolve(path: str) -> Any:
    """The object an import path (``pickling.import_path``) names."""
    module, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _code_identity(code: Any) -> str:
    consts = [_code_identity(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
    return digest(code.co_code + repr((code.co_names, code.co_varnames, consts)).encode(), full=True)


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True
