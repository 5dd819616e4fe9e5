"""How user objects become payloads, and the references that let a task name a stored object.

The default serializer is cloudpickle with pickle protocol 5, so functions
defined in a notebook travel by value and large buffers (numpy arrays, bytes)
travel out-of-band as their own frames, never copied into the pickle stream.
A custom serializer is any object with ``dumps(obj) -> bytes`` and
``loads(bytes) -> obj``; it travels to the workers with the tasks that use it.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
from typing import Any, Protocol

import cloudpickle

from scaler_jupyter.protocol.messages import CONTENT_ID_BYTES, Payload


class Serializer(Protocol):
    """What a custom serializer must provide."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def dumps(obj: Any, serializer: Serializer | None = None) -> Payload:
    """Serialize ``obj``; large buffers stay out-of-band as separate parts.

    The C pickler is tried first: it is several times faster than cloudpickle on
    the small argument tuples most tasks carry. Its output is kept only if it
    names nothing in ``__main__`` (a notebook's or script's own functions and
    classes, which a worker cannot import); everything else goes to cloudpickle,
    which sends those by value.
    """
    if serializer is not None:
        return Payload([serializer.dumps(obj)])
    buffers: list = []
    try:
        stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except Exception:
        stream = None
    if stream is None or b"__main__" in stream or _names_a_by_value_module(stream):
        buffers = []
        stream = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if buffers:
        return Payload([stream, *[b.raw() for b in buffers]])
    return Payload([stream])


def _names_a_by_value_module(stream: bytes) -> bool:
    """True if the pickle refers to a module registered with ``cloudpickle.register_pickle_by_value``."""
    modules = cloudpickle.list_registry_pickle_by_value()
    return bool(modules) and any(name.encode() in stream for name in modules)


def loads(payload: Payload, serializer: Serializer | None = None, writable: bool = False,
          copy: bool = False) -> Any:
    """Rebuild the object in ``payload``.

    ``writable`` gives arrays the caller can modify in place, as with any local call:
    the payload is the caller's own, so a writable buffer (a received ZeroMQ frame, a
    slice of a pipe read) becomes the array without a copy, and a read-only one (a
    small part inline in a message header) is copied. ``copy`` copies every buffer,
    for a payload that is kept and loaded again (a worker's cached object): what one
    load's arrays are given stays private to it.
    """
    stream, *buffers = payload.parts
    if serializer is not None:
        return serializer.loads(bytes(stream))
    if copy:
        buffers = [bytearray(b) for b in buffers]
    elif writable:
        buffers = [b if not memoryview(b).readonly else bytearray(b) for b in buffers]
    return pickle.loads(stream, buffers=buffers)


def content_id(payload: Payload) -> bytes:
    """A 16-byte digest of the payload: the same object sent twice is stored once."""
    digest = hashlib.blake2b(digest_size=CONTENT_ID_BYTES)
    for part in payload.parts:
        digest.update(part)
    return digest.digest()


# ---------------------------------------------------------------------------
# Object references

class _PerThread(threading.local):
    collected: list | None = None  # where ObjectRefs met while pickling record their ids
    resolve = None  # how ObjectRefs met while unpickling become their objects


_here = _PerThread()


class ObjectRef:
    """A handle to an object held by the scheduler; pass it as a task argument instead of the object."""

    __slots__ = ("nbytes", "object_id")

    def __init__(self, object_id: bytes, nbytes: int = 0) -> None:
        self.object_id = object_id
        self.nbytes = nbytes

    def __reduce__(self):
        refs = _here.collected
        if refs is not None:
            refs.append(self.object_id)
        return (_resolve, (self.object_id, self.nbytes))

    def __repr__(self) -> str:
        return f"<ObjectRef {self.object_id.hex()[:12]} {self.nbytes} bytes>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other.object_id == self.object_id

    def __hash__(self) -> int:
        return hash(self.object_id)


def _resolve(object_id: bytes, nbytes: int):
    """On a worker, an ObjectRef unpickles as the object it names; elsewhere, as itself."""
    resolve = _here.resolve
    if resolve is None:
        return ObjectRef(object_id, nbytes)
    return resolve(object_id)


def dumps_collecting_refs(obj: Any, serializer: Serializer | None = None) -> tuple[Payload, list[bytes]]:
    """Serialize ``obj`` and return the ids of the ObjectRefs found inside it."""
    refs: list[bytes] = []
    _here.collected = refs
    try:
        payload = dumps(obj, serializer)
    finally:
        _here.collected = None
    return payload, (list(dict.fromkeys(refs)) if refs else refs)


def loads_resolving_refs(payload: Payload, resolve, serializer: Serializer | None = None) -> Any:
    """Rebuild ``obj``, replacing each ObjectRef by ``resolve(object_id)``."""
    _here.resolve = resolve
    try:
        return loads(payload, serializer, writable=True)
    finally:
        _here.resolve = None
