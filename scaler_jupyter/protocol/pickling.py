"""What travels by value: the one pickling rule, and the one content id.

Every pickle the project makes of user objects (a task's function, arguments and result,
a parfun partition, a pargraph constant) comes from :func:`dumps`, so one rule decides
what a worker must be able to import and what is shipped whole:

- **by reference** (the C pickler, several times faster than cloudpickle on the small
  argument tuples most tasks carry): everything the worker can import by name, which is
  every function and class of an installed or importable module;
- **by value** (cloudpickle), when the C pickler's stream names

  - ``__main__``: what a script or a notebook defines itself (a Jupyter kernel runs cells
    in ``__main__``), which no worker can import;
  - a module registered with ``cloudpickle.register_pickle_by_value`` (which is how
    ``Client.register_by_value(module)`` ships a module to workers on other hosts);

  or when the C pickler refuses the object (a lambda, a function defined inside another).

:func:`travels_by_value` is the rule read from a pickle stream; :func:`import_path` is the same
rule asked of one object (where a decorator pickles itself, or a document names a function).

Content ids (:func:`content_id`) name stored objects by what they hold: the same function
sent twice is stored once, a worker keeps what it loaded under the id, and pargraph keys
its graphs and constants with them.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import sys
from typing import Any

import cloudpickle

from scaler_jupyter.protocol.messages import CONTENT_ID_BYTES

PROTOCOL = 5  # out-of-band buffers: large arrays and bytes travel as frames of their own, never copied


def dumps(obj: Any, buffers: list[pickle.PickleBuffer] | None = None) -> bytes:
    """Pickle ``obj`` by the rule above; with ``buffers`` (an empty list), large buffers are appended to it
    out-of-band instead of being copied into the stream."""
    found: list[pickle.PickleBuffer] = []
    callback = None if buffers is None else found.append
    try:
        stream = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=callback)
    except Exception:  # what only cloudpickle pickles: lambdas, local functions
        stream = None
    if stream is None or travels_by_value(stream):
        found.clear()
        stream = cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=callback)
    if buffers is not None:
        buffers.extend(found)
    return stream


_STACK_GLOBAL = pickle.STACK_GLOBAL  # the only opcode by which a protocol-4+ stream names a module's object


def travels_by_value(stream: bytes) -> bool:
    """True if a C pickler's ``stream`` names something a worker cannot import: ``__main__``, or a module
    registered for pickling by value."""
    if b"__main__" in stream:
        return True
    if _STACK_GLOBAL not in stream:  # it names no module at all (most arguments: numbers, strings, lists)
        return False
    modules = cloudpickle.list_registry_pickle_by_value()
    return bool(modules) and any(name.encode() in stream for name in modules)


def import_path(obj: Any) -> str | None:
    """``module:qualname`` if ``obj`` travels by reference under the rule above (a worker imports it by that
    name: it is found there, not in ``__main__``, not local, and its module is not registered by value); else
    None. For what pickles an object itself (a decorator's ``__reduce__``) or names it in a document."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module_name or not qualname or module_name == "__main__" or "<" in qualname:
        return None
    by_value = cloudpickle.list_registry_pickle_by_value()
    if any(module_name == name or module_name.startswith(name + ".") for name in by_value):
        return None
    try:
        found: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module_name}:{qualname}" if found is obj else None


def content_id(*parts: bytes | bytearray | memoryview) -> bytes:
    """A ``CONTENT_ID_BYTES``-byte digest of ``parts`` taken together (the parts of one payload, say)."""
    digest = hashlib.blake2b(digest_size=CONTENT_ID_BYTES)
    for part in parts:
        digest.update(part)
    return digest.digest()
