"""A local cluster's own links: ``unix://PATH``, a Unix stream socket carrying :mod:`channel` messages.

The processes of one machine (a ``LocalCluster``'s workers, the clients of the process that
started it) reach the scheduler by a socket file in a folder only their user can enter. No
ZeroMQ sits on this path: a message is one ``writev`` by its sender and one read by the
receiver's loop, where ZeroMQ would wake an I/O thread on each side too, about two thirds of
a task's round trip on a VM. There is no Curve handshake here: the folder's mode already
admits only the cluster's user, who can read its keys anyway. A closed connection is seen at
once (end of file), by both ends.
"""

from __future__ import annotations

import os
import socket

SCHEME = "unix://"
_BACKLOG = 128


def is_unix(address: str) -> bool:
    return address.startswith(SCHEME)


def path_of(address: str) -> str:
    if not is_unix(address):
        raise ValueError(f"a local address is a {SCHEME} path, not {address}")
    return os.path.abspath(address[len(SCHEME):])


def check_private(address: str) -> None:
    """The socket's folder must belong to this user, mode 0700: then only that user's processes reach it."""
    folder = os.path.dirname(path_of(address))
    info = os.stat(folder)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} (of the local address {address}) must belong to this user, mode 0700")


def listen(address: str) -> socket.socket:
    """A non-blocking listening socket at ``address`` (a stale socket file there is replaced)."""
    path = path_of(address)
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(_BACKLOG)
    except BaseException:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


def connect(address: str) -> socket.socket:
    """A socket connected to ``address``; ``ConnectionError`` naming it if nothing listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path_of(address))
    except OSError as exc:
        sock.close()
        raise ConnectionError(f"cannot reach the scheduler at {address}: {exc.strerror or exc}") from None
    return sock


def accept(listener: socket.socket) -> socket.socket | None:
    """The next waiting connection, or None."""
    try:
        return listener.accept()[0]
    except BlockingIOError:
        return None
