"""One way to watch a cluster: subscribe to a scheduler's monitor feed, or ask it for one snapshot.

``top``, ``LocalCluster``, the cluster widget, the notebook panels and the
dashboard all watch a scheduler through this module::

    from scaler_jupyter import monitor

    monitor.snapshot("tcp://127.0.0.1:2345")            # one snapshot, by request and reply
    with monitor.subscribe("tcp://127.0.0.1:2345") as feed:
        feed.latest()                                   # the scheduler's answer, at once
        for snapshot in feed:                           # then one every --monitor-interval
            ...

A snapshot is the dict specified in ``scaler_jupyter.scheduler.monitor`` (what
``Client.status()`` returns too). Neither call joins the cluster as a client:
:func:`snapshot` sends one ``StatusRequest`` on a socket of its own, and
:func:`subscribe` does that once, to learn where the feed is published and to
have a snapshot at hand at once, then subscribes to the feed. The scheduler
publishes to a new subscriber at once, then every ``--monitor-interval``
seconds, and at once when a worker joins or leaves.

An event loop watches :meth:`Subscription.fileno` and calls
``latest(timeout=0)`` when it is readable. The descriptor is ZeroMQ's: it
signals edges, not levels, so each wake-up must drain what waits, as
:meth:`Subscription.latest` does; call it once right after subscribing too.

Against a scheduler started with ``--keys``, pass the same keys directory
(``keys=DIR``): the feed publishes only to key holders.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import zmq

from scaler_jupyter.errors import AuthenticationError, ProtocolError
from scaler_jupyter.protocol import Rejected, StatusReply, StatusRequest, decode
from scaler_jupyter.protocol.feed import TOPIC, decode_snapshot
from scaler_jupyter.protocol.transport import send
from scaler_jupyter.security import ClusterKeys, HandshakeWatch, load_keys

Keys = str | os.PathLike | ClusterKeys | None
_WILDCARD_HOSTS = ("0.0.0.0", "*", "[::]", "::", "")
_RECEIVE_HWM = 16  # snapshots a slow reader may have waiting; older ones are dropped, only the newest matters


def snapshot(address: str, keys: Keys = None, timeout: float = 5.0) -> dict:
    """One snapshot of the scheduler at ``address``, by request and reply, without joining it as a client.

    Raises ``TimeoutError`` if no scheduler answers within ``timeout`` seconds,
    :class:`~scaler_jupyter.errors.AuthenticationError` if the keys do not
    match the scheduler's, :class:`~scaler_jupyter.errors.ProtocolError` if it
    speaks another protocol version, ``ConnectionError`` if it refuses, ``ValueError``
    if ``address`` is not one.
    """
    cluster_keys = _keys(keys)
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    if cluster_keys is not None:
        cluster_keys.connect(socket)
    handshakes = HandshakeWatch(socket, keyed=cluster_keys is not None)
    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    poller.register(handshakes.socket, zmq.POLLIN)
    try:
        _connect(socket, address)
        send(socket, StatusRequest(1))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            events = dict(poller.poll(remaining * 1000))
            if handshakes.socket in events:
                handshakes.read()
                if handshakes.definite:
                    raise AuthenticationError(f"cannot join the scheduler at {address}: {handshakes.failure}")
            if socket not in events:
                continue
            try:
                message = decode(socket.recv_multipart())
            except ProtocolError as exc:
                raise ProtocolError(f"{address} does not speak this version's protocol ({exc}): install the "
                                    "same scaler_jupyter version everywhere") from None
            if isinstance(message, StatusReply):
                return message.snapshot
            if isinstance(message, Rejected):
                raise ConnectionError(f"the scheduler at {address} refused: {message.reason}")
        if handshakes.failure is not None:
            raise TimeoutError(f"could not join the scheduler at {address} within {timeout:g}s: "
                               f"{handshakes.failure}")
        raise TimeoutError(f"no scheduler answered at {address} within {timeout:g}s: "
                           "check the address, and that the scheduler runs")
    finally:
        handshakes.close()
        socket.close()


def subscribe(address: str, keys: Keys = None, timeout: float = 10.0, *,
              monitor_address: str | None = None) -> Subscription:
    """Subscribe to the monitor feed of the scheduler at ``address``.

    The scheduler is asked once (as :func:`snapshot` does, with the same errors)
    where its feed is, unless ``monitor_address`` says; its answer is the first
    snapshot :meth:`Subscription.latest` returns. ``timeout`` bounds that
    question, and each wait of an iteration over the subscription.
    """
    cluster_keys = _keys(keys)
    first = snapshot(address, cluster_keys, timeout)
    feed = monitor_address or feed_address(first, address)
    if feed is None:
        raise ConnectionError(f"the scheduler at {address} does not say where its monitor feed is: "
                              "give its address (--monitor-address)")
    return Subscription(address, feed, cluster_keys, timeout, first)


def feed_address(snapshot: dict, scheduler_address: str) -> str | None:
    """Where ``snapshot`` says the feed is, reachable from here (a wildcard host becomes the scheduler's host).

    None if the snapshot does not say.
    """
    published = snapshot.get("scheduler", {}).get("monitor_address")
    if not published:
        return None
    scheme, _, rest = published.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and host in _WILDCARD_HOSTS:
        host = scheduler_address.partition("://")[2].rpartition(":")[0]
        return f"tcp://{host}:{port}"
    return published


class Subscription:
    """A subscription to one scheduler's monitor feed; made by :func:`subscribe`, closed by :meth:`close`.

    Not thread-safe (a ZeroMQ socket is not): use it from one thread, or one event loop.
    """

    def __init__(self, address: str, monitor_address: str, keys: ClusterKeys | None, timeout: float,
                 first: dict | None = None) -> None:
        self.address = address
        self.monitor_address = monitor_address
        self.timeout = timeout
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, _RECEIVE_HWM)
        if keys is not None:
            keys.connect(self.socket)
        self.socket.setsockopt(zmq.SUBSCRIBE, TOPIC)
        try:
            _connect(self.socket, monitor_address)
        except ValueError:
            self.socket.close()
            raise
        self._unread = first  # received, not yet returned by latest()

    def latest(self, timeout: float | None = 0.0) -> dict | None:
        """The newest snapshot not yet returned (older waiting ones are dropped), or None.

        Waits up to ``timeout`` seconds for one if none waits (None: without bound;
        0: not at all).
        """
        if self.socket.closed:
            raise ValueError("the subscription is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            newest, self._unread = self._drain(self._unread), None
            if newest is not None:
                return newest
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self.socket.poll(None if remaining is None else remaining * 1000)

    def fileno(self) -> int:
        """The feed socket's ZeroMQ descriptor, for an event loop: readable (edge-triggered) when snapshots wait."""
        return self.socket.getsockopt(zmq.FD)

    def close(self) -> None:
        """Stop listening. Safe to call twice."""
        self.socket.close()

    def __iter__(self) -> Iterator[dict]:
        """Each snapshot as it arrives (the newest, if several wait); ``TimeoutError`` after ``timeout``
        seconds without one, which means the scheduler is gone or the feed unreachable."""
        while True:
            newest = self.latest(self.timeout)
            if newest is None:
                raise TimeoutError(f"no snapshot from {self.monitor_address} within {self.timeout:g}s: "
                                   f"is the scheduler at {self.address} still running?")
            yield newest

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription {self.monitor_address}{' closed' if self.socket.closed else ''}>"

    def _drain(self, newest: dict | None) -> dict | None:
        socket = self.socket
        while socket.get(zmq.EVENTS) & zmq.POLLIN:
            newest = decode_snapshot(socket.recv_multipart()) or newest
        return newest


def _connect(socket: zmq.Socket, address: str) -> None:
    try:
        socket.connect(address)
    except zmq.ZMQError as exc:
        raise ValueError(f"cannot connect to {address!r} ({exc}): an address reads like tcp://host:port") from None


def _keys(keys: Keys) -> ClusterKeys | None:
    return keys if isinstance(keys, ClusterKeys) or keys is None else load_keys(keys)
