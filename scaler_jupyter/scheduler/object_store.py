"""Objects held by the scheduler: functions, serializers and ``send_object`` data.

Objects are content-addressed, so the same object sent twice is stored once. Each
object lives while some client owns it; a client's disconnect releases what it owned.
"""

from __future__ import annotations

import dataclasses

from scaler_jupyter.protocol import Payload


@dataclasses.dataclass(slots=True)
class StoredObject:
    payload: Payload
    nbytes: int
    owners: set[bytes]


class ObjectStore:
    """Payloads by object id, with the set of clients that own each."""

    def __init__(self) -> None:
        self._objects: dict[bytes, StoredObject] = {}
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, object_id: bytes) -> bool:
        return object_id in self._objects

    def put(self, object_id: bytes, payload: Payload, owner: bytes) -> None:
        stored = self._objects.get(object_id)
        if stored is None:
            nbytes = payload.nbytes
            self._objects[object_id] = StoredObject(payload, nbytes, {owner})
            self.nbytes += nbytes
        else:
            stored.owners.add(owner)

    def get(self, object_id: bytes) -> Payload:
        return self._objects[object_id].payload

    def release(self, object_id: bytes, owner: bytes) -> bool:
        """Drop ``owner``'s claim; return True if the object is now gone."""
        stored = self._objects.get(object_id)
        if stored is None:
            return False
        stored.owners.discard(owner)
        if stored.owners:
            return False
        del self._objects[object_id]
        self.nbytes -= stored.nbytes
        return True
