"""Which peer is behind which TCP connection, so a dropped connection ends its peer at once.

libzmq's ROUTER does not say which peer a connection carried (ROUTER_NOTIFY is a
draft API), so the server ties each message's source fd to its sender, and the
socket monitor reports ``DISCONNECTED`` by fd. The monitor's events travel apart
from the messages, so they may be seen late: a new peer's first messages on a
reused fd can come before the old connection's ``DISCONNECTED``, and an old
peer's last messages after it. This bookkeeping orders them, sans I/O.

- A new identity on an fd means the fd's previous connection closed: that peer is
  gone now, and the ``DISCONNECTED`` still to come for it is stale.
- An identity seen on a new fd moved (it reconnected): its old fd's event is stale.
- A message from a peer whose connection on that fd is known closed is late (the
  router still held it, and reports the fd number, now another connection's): it
  maps nothing.
"""

from __future__ import annotations

import collections

_FORMER_KEPT = 4  # closed connections per fd whose late messages are recognised


class ConnectionTracker:
    def __init__(self) -> None:
        self._peer_at_fd: dict[int, bytes] = {}
        self._fd_of_peer: dict[bytes, int] = {}
        self._former: dict[int, collections.deque] = {}  # peers whose connections on the fd closed, newest last
        self._stale: dict[int, int] = {}  # DISCONNECTED events still to come for connections already accounted for

    def on_message(self, identity: bytes, fd: int) -> bytes | None:
        """A message from ``identity`` arrived on ``fd``; return a peer now known to be gone, if any."""
        current = self._peer_at_fd.get(fd)
        if current == identity or identity in self._former.get(fd, ()):
            return None
        gone = None
        if current is not None:  # the fd was reused before its old connection's event arrived
            self._stale[fd] = self._stale.get(fd, 0) + 1
            del self._fd_of_peer[current]
            self._closed(fd, current)
            gone = current
        previous_fd = self._fd_of_peer.get(identity)
        if previous_fd is not None:  # it reconnected: its old connection's event is stale
            self._stale[previous_fd] = self._stale.get(previous_fd, 0) + 1
            del self._peer_at_fd[previous_fd]
            self._closed(previous_fd, identity)
        self._peer_at_fd[fd] = identity
        self._fd_of_peer[identity] = fd
        return gone

    def on_disconnected(self, fd: int) -> bytes | None:
        """The monitor reported ``fd`` closed; return the peer that connection carried, if it is news."""
        if self._stale.get(fd):
            self._stale[fd] -= 1
            return None
        peer = self._peer_at_fd.pop(fd, None)
        if peer is not None:
            del self._fd_of_peer[peer]
            self._closed(fd, peer)
        return peer

    def _closed(self, fd: int, peer: bytes) -> None:
        self._former.setdefault(fd, collections.deque(maxlen=_FORMER_KEPT)).append(peer)
