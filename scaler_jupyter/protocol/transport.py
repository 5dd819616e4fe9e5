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

# Poll flags as plain ints: pyzmq's are IntFlag members, and an operator on those runs enum code in
# Python (microseconds) where the loops that test them run once per message.
POLLIN, POLLOUT, POLLERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)


def send(socket: zmq.Socket, message, identity: bytes | None = None) -> None:
    """Encode and send ``message``; on a ROUTER socket, to the peer ``identity``."""
    send_encoded(socket, encode(message), identity)


def send_encoded(socket: zmq.Socket, frames: list, identity: bytes | None = None) -> None:
    """Send a message :func:`encode` made, so that a socket shared under a lock is held only to write."""
    if identity is not None:
        socket.send(identity, zmq.SNDMORE)
    last = len(frames) - 1
    socket.send(frames[0], zmq.SNDMORE if last else 0)
    for i in range(1, last + 1):
        socket.send(frames[i], 0 if i == last else zmq.SNDMORE, copy=False)


def receive(socket: zmq.Socket) -> list | None:
    """Return the frames of the next waiting message, or None.

    The frames are undecoded; pass them to :func:`decode`, which raises ProtocolError on garbage.
    """
    if not socket.get(zmq.EVENTS) & POLLIN:
        return None
    frames = [socket.recv()]
    while socket.get(zmq.RCVMORE):
        frames.append(socket.recv(copy=False))
    return frames


def receive_routed(socket: zmq.Socket) -> tuple[bytes, int | None, list] | None:
    """On a ROUTER socket: ``(identity, source fd, frames)`` of the next waiting message, or None.

    The source fd (None where the transport has none) ties a peer to the connection
    whose drop the socket monitor reports.
    """
    if not socket.get(zmq.EVENTS) & POLLIN:
        return None
    identity = socket.recv(copy=False)
    try:
        source_fd = identity.get(zmq.SRCFD)
    except zmq.ZMQError:
        source_fd = None
    frames = [socket.recv()] if socket.get(zmq.RCVMORE) else []
    while socket.get(zmq.RCVMORE):
        frames.append(socket.recv(copy=False))
    return identity.bytes, source_fd, frames


__all__ = ["POLLERR", "POLLIN", "POLLOUT", "decode", "encode", "receive", "receive_routed", "send", "send_encoded"]
