"""The bytes parfun sends: partitions, results, functions and whole arguments, serialized where they are timed.

parfun serializes values itself, before handing bytes to a backend, so that the cost of
moving data is measured (and learned from) on both sides instead of hidden inside the
backend; and so that every backend, a process pool included, carries functions defined
in a notebook or inside another function by value (the project's one pickling rule,
:mod:`scaler_jupyter.protocol.pickling`). Content ids are that module's too.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from scaler_jupyter.protocol import pickling

# Immutable values with nothing inside them to share or to cycle back: a sequence of
# these needs no pickle memo.
_ATOMS = frozenset({str, bytes, int, float, bool, complex, type(None)})


def dumps(value: Any) -> bytes:
    """Serialize ``value``: a flat sequence of atoms without the pickle memo, anything else by the one rule."""
    if type(value) in (tuple, list) and _ATOMS.issuperset(map(type, value)):
        # The pickler's memo (a dict entry per object, to keep shared objects shared) costs
        # several times the writing of a short string; a flat sequence of atoms has nothing to share.
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=pickling.PROTOCOL)
        pickler.fast = True
        pickler.dump(value)
        return buffer.getvalue()
    return pickling.dumps(value)


def loads(data: bytes | bytearray | memoryview) -> Any:
    return pickle.loads(data)
