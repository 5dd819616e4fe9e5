"""The bytes parfun sends: partitions, results, functions and whole arguments, serialized where they are timed.

parfun serializes values itself, before handing bytes to a backend, so that the cost of
moving data is measured (and learned from) on both sides instead of hidden inside the
backend; and so that every backend, a process pool included, carries functions defined
in a notebook or inside another function (cloudpickle, by value).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from typing import Any

import cloudpickle

# Immutable values with nothing inside them to share or to cycle back: a sequence of
# these needs no pickle memo.
_ATOMS = frozenset({str, bytes, int, float, bool, complex, type(None)})


def dumps(value: Any) -> bytes:
    """Serialize ``value``: the C pickler when it can, cloudpickle for what only it can (``__main__``, lambdas)."""
    if type(value) in (tuple, list) and _ATOMS.issuperset(map(type, value)):
        # The pickler's memo (a dict entry per object, to keep shared objects shared) costs
        # several times the writing of a short string; a flat sequence of atoms has nothing to share.
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=5)
        pickler.fast = True
        pickler.dump(value)
        return buffer.getvalue()
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception:
        data = None
    if data is None or b"__main__" in data or _names_a_by_value_module(data):
        return cloudpickle.dumps(value, protocol=5)
    return data


def loads(data: bytes | bytearray | memoryview) -> Any:
    return pickle.loads(data)


def digest(data: bytes) -> bytes:
    """A 16-byte content id: workers keep what they loaded under it, to load it once."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _names_a_by_value_module(data: bytes) -> bool:
    modules = cloudpickle.list_registry_pickle_by_value()
    return bool(modules) and any(name.encode() in data for name in modules)
