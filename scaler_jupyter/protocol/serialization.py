"""How user objects become payloads, and the references that let a task name a stored object.

The default serializer is pickle protocol 5 by the rule in ``pickling.py``, so
functions defined in a notebook travel by value and large buffers (numpy arrays,
bytes) travel out-of-band as their own frames, never copied into the pickle stream.
A payload's content id is ``content_id(*payload.parts)``. Parts in shared memory
(:class:`~scaler_jupyter.protocol.messages.Segment`, see ``shared_memory.py``) are
mapped when the payload is loaded, privately: each load gets its own copy-on-write view.
A custom serializer is any object with ``dumps(obj) -> bytes`` and
``loads(bytes) -> obj``; it travels to the workers with the tasks that use it.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Protocol

from scaler_jupyter.protocol import pickling, shared_memory
from scaler_jupyter.protocol.messages import Payload, Segment
from scaler_jupyter.protocol.pickling import content_id

__all__ = ["ObjectRef", "Serializer", "content_id", "dumps", "dumps_collecting_refs", "loads", "loads_resolving_refs"]


class Serializer(Protocol):
    """What a custom serializer must provide."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def dumps(obj: Any, serializer: Serializer | None = None) -> Payload:
    """Serialize ``obj`` by the project's one pickling rule (:mod:`scaler_jupyter.protocol.pickling`: what a
    notebook or script defines goes by value); large buffers stay out-of-band as separate parts."""
    if serializer is not None:
        return Payload([serializer.dumps(obj)])
    buffers: list[pickle.PickleBuffer] = []
    stream = pickling.dumps(obj, buffers)
    if buffers:
        return Payload([stream, *[b.raw() for b in buffers]])
    return Payload([stream])


def loads(payload: Payload, serializer: Serializer | None = None, writable: bool = False,
          copy: bool = False) -> Any:
    """Rebuild the object in ``payload``.

    ``writable`` gives arrays the caller can modify in place, as with any local call:
    the payload is the caller's own, so a writable buffer (a received ZeroMQ frame, a
    slice of a pipe read) becomes the array without a copy, and a read-only one (a
    small part inline in a message header) is copied. ``copy`` copies every buffer,
    for a payload that is kept and loaded again (a worker's cached object): what one
    load's arrays are given stays private to it. A part in shared memory is mapped
    for this load alone, writable and copy-on-write: it is neither copied nor shared.
    """
    stream, *buffers = payload.parts
    if type(stream) is Segment:
        stream = shared_memory.map_segment(stream)
    if serializer is not None:
        return serializer.loads(bytes(stream))
    if copy:
        buffers = [shared_memory.map_segment(b) if type(b) is Segment else bytearray(b) for b in buffers]
    else:
        buffers = [shared_memory.map_segment(b) if type(b) is Segment
                   else bytearray(b) if writable and memoryview(b).readonly else b for b in buffers]
    return pickle.loads(stream, buffers=buffers)


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
