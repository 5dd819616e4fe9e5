"""Objects held by the scheduler: functions, serializers, ``send_object`` data and graph results.

Objects are content-addressed, so the same object sent twice is stored once. Each
object lives while some client owns it or some live task needs it; a client's
disconnect releases what it owned, and a task's end what it needed. A graph task's
result has no owner: it lives exactly as long as the tasks that wait for it.
``on_collect(payload)`` hears of every payload that leaves (the scheduler then lets go
of its shared-memory segments).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from scaler_jupyter.protocol import Payload


@dataclasses.dataclass(slots=True)
class StoredObject:
    payload: Payload
    nbytes: int
    owners: set[bytes]
    holds: int = 0  # live tasks that need it


class ObjectStore:
    """Payloads by object id, with the set of clients that own each."""

    def __init__(self, on_collect: Callable[[Payload], None] | None = None) -> None:
        self._objects: dict[bytes, StoredObject] = {}
        self.nbytes = 0
        self._on_collect = on_collect

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, object_id: bytes) -> bool:
        return object_id in self._objects

    def __iter__(self) -> Iterator[bytes]:
        """The ids of the stored objects."""
        return iter(self._objects)

    def put(self, object_id: bytes, payload: Payload, owner: bytes) -> None:
        stored = self._objects.get(object_id)
        if stored is None:
            nbytes = payload.nbytes
            self._objects[object_id] = StoredObject(payload, nbytes, {owner})
            self.nbytes += nbytes
        else:
            stored.owners.add(owner)

    def put_result(self, object_id: bytes, payload: Payload, holds: int) -> bool:
        """Keep a graph task's result for the ``holds`` live tasks that need it; each :meth:`unhold` one.
        Return False if it was kept already."""
        if object_id in self._objects:
            return False
        nbytes = payload.nbytes
        self._objects[object_id] = StoredObject(payload, nbytes, set(), holds)
        self.nbytes += nbytes
        return True

    def get(self, object_id: bytes) -> Payload:
        return self._objects[object_id].payload

    def hold(self, object_id: bytes) -> None:
        """A task that needs the object is live; the object stays until :meth:`unhold`."""
        self._objects[object_id].holds += 1

    def unhold(self, object_id: bytes) -> bool:
        """A task that needed the object ended; return True if the object is now gone."""
        stored = self._objects.get(object_id)
        if stored is None:
            return False
        stored.holds -= 1
        return self._collect(object_id, stored)

    def release(self, object_id: bytes, owner: bytes) -> bool:
        """Drop ``owner``'s claim; return True if the object is now gone."""
        stored = self._objects.get(object_id)
        if stored is None:
            return False
        stored.owners.discard(owner)
        return self._collect(object_id, stored)

    def _collect(self, object_id: bytes, stored: StoredObject) -> bool:
        if stored.owners or stored.holds > 0:
            return False
        del self._objects[object_id]
        self.nbytes -= stored.nbytes
        if self._on_collect is not None:
            self._on_collect(stored.payload)
        return True
