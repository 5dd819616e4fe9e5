"""Moving encoded messages over ZeroMQ sockets: the one place that sends and receives frames.

By the codec's layout every frame after the header is a large payload part, so
routing and header frames are copied (cheap for small frames, where pyzmq's
zero-copy bookkeeping costs tens of microseconds) and payload frames are never
copied. Receiving checks ``EVENTS`` instead of catching ``zmq.Again`` to end a
drain, for the same reason.
"""

from __future__ import annotations

import zmq

from scaler_jupyter.protocol.messages import decode, encode


def send(socket: zmq.Socket, message, identity: bytes | None = None) -> None:
    """Encode and send ``message``; on a ROUTER socket, to the peer ``identity``."""
    frames = encode(message)
    if identity is not None:
        socket.send(identity, zmq.SNDMORE)
    last = len(frames) - 1
    socket.send(frames[0], zmq.SNDMORE if last else 0)
    for i in range(1, last + 1):
        socket.send(frames[i], 0 if i == last else zmq.SNDMORE, copy=False)


def receive(socket: zmq.Socket, routed: bool = False) -> tuple[bytes | None, list] | None:
    """Return ``(identity, frames)`` of the next waiting message (identity None unless ``routed``), or None.

    ``frames`` are undecoded; pass them to :func:`decode`, which raises ProtocolError on garbage.
    """
    if not socket.get(zmq.EVENTS) & zmq.POLLIN:
        return None
    identity = socket.recv() if routed else None
    frames = [socket.recv()] if not routed or socket.get(zmq.RCVMORE) else []
    while socket.get(zmq.RCVMORE):
        frames.append(socket.recv(copy=False))
    return identity, frames


__all__ = ["decode", "encode", "receive", "send"]
