"""The monitor feed on the wire: its topic and the codec of one snapshot message.

The scheduler publishes (``scheduler/server.py``) and watchers subscribe
(``scaler_jupyter.monitor``); both import these names, so the two sides cannot
drift. What a snapshot holds is specified in ``scheduler/monitor.py``.

Each snapshot is one ZeroMQ message of two frames: ``TOPIC`` and the
msgpack-encoded snapshot. Subscribe to ``TOPIC`` with a SUB socket.
"""

from __future__ import annotations

import msgpack

TOPIC = b"status"


def encode_snapshot(snapshot: dict) -> list[bytes]:
    """The frames of one feed message: ``[TOPIC, msgpack(snapshot)]``."""
    return [TOPIC, msgpack.packb(snapshot)]


def decode_snapshot(frames: list) -> dict | None:
    """The snapshot in one feed message, or None if the message is not a snapshot (another topic, garbage)."""
    if len(frames) != 2 or bytes(frames[0]) != TOPIC:
        return None
    try:
        snapshot = msgpack.unpackb(frames[1], raw=False, strict_map_key=False)
    except Exception:  # msgpack raises many types on garbage
        return None
    return snapshot if isinstance(snapshot, dict) and "version" in snapshot else None
