"""The scheduler's event loop: read, decode, apply, encode, write. The rules live in ``state.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import select
import signal
import time

import zmq
from zmq.utils.monitor import parse_monitor_message

from scaler_jupyter.protocol import deliver, encode, shared_memory, unix_link
from scaler_jupyter.protocol.busy_poll import BusyPoll
from scaler_jupyter.protocol.channel import Channel, ChannelClosed, ChannelCorrupt
from scaler_jupyter.protocol.feed import TOPIC, encode_snapshot
from scaler_jupyter.protocol.transport import POLLIN, receive_routed, send
from scaler_jupyter.scheduler.connections import ConnectionTracker
from scaler_jupyter.scheduler.monitor import Monitor, ProcessFacts, build_snapshot
from scaler_jupyter.scheduler.state import SchedulerConfig, SchedulerState
from scaler_jupyter.security import ClusterKeys

logger = logging.getLogger(__name__)

_DRAIN = 1000  # messages read per turn before the state is flushed, so one busy peer cannot starve the rest
_TICK = 0.5  # most seconds between liveness checks
_SOONEST = 0.02  # seconds between two snapshots at least, when workers join or leave faster
_STOP_LINGER_MS = 2000  # after a client's shutdown, how long the last messages (Shutdown to each peer) may take


def zmq_address(address: str) -> str:
    """Accept port 0 for "any free port", as ZeroMQ spells it."""
    return address[: -len(":0")] + ":*" if address.endswith(":0") else address


def default_monitor_address(requested: str, bound: str) -> str:
    """The scheduler's host and port + 1; any free port when the scheduler was asked for any free port."""
    if not bound.startswith("tcp://"):
        raise ValueError(f"no default monitor address for {bound}: give one with --monitor-address")
    host, _, port = bound.rpartition(":")
    return f"{host}:0" if requested.endswith((":0", ":*")) else f"{host}:{int(port) + 1}"


class MonitorFeed:
    """The monitor feed: a snapshot every ``interval`` seconds on a publish socket, while anyone subscribes.

    The socket is an XPUB (a PUB that hears its subscriptions; subscribers use SUB), so
    a snapshot is built only when one is due and someone listens, and a new
    subscriber gets one at once rather than an interval later. A worker joining
    or leaving makes one due at once too (no sooner than ``_SOONEST`` after the
    last), so whoever waits for workers (``LocalCluster``) need not wait an interval.
    """

    def __init__(self, context: zmq.Context, address: str, interval: float, keys: ClusterKeys | None = None) -> None:
        self.interval = interval
        self.socket = context.socket(zmq.XPUB)
        if keys is not None:  # subscribers need the cluster's keys too: the feed names every worker and client
            keys.serve(self.socket)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 8)  # a stalled subscriber misses snapshots; our memory does not grow
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)  # hear every subscriber, not only each topic's first
        try:
            self.socket.bind(zmq_address(address))
        except zmq.ZMQError as exc:
            self.socket.close()
            raise OSError(exc.errno, f"cannot publish the monitor feed on {address} ({exc.strerror}): "
                                     "choose another address with --monitor-address") from None
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._topics: set[bytes] = set()  # subscribed prefixes that match TOPIC
        self._due = 0.0
        self._published = 0.0  # when the last snapshot went out
        self._membership = (0, 0)  # the workers as last seen: how many ever joined, how many are here

    def next_due(self) -> float:
        """When the next snapshot is due (monotonic seconds); infinity while nobody listens."""
        return self._due if self._topics else math.inf

    def note_workers(self, state: SchedulerState) -> None:
        """Make a snapshot due soon if a worker joined or left since the last look."""
        membership = (state.workers_joined, len(state.workers))  # a join raises the first, a leave lowers the second
        if membership != self._membership:
            self._membership = membership
            self._due = min(self._due, self._published + _SOONEST)

    def read_subscriptions(self) -> None:
        """Apply waiting (un)subscriptions; a new subscriber makes a snapshot due at once."""
        socket = self.socket
        while socket.get(zmq.EVENTS) & POLLIN:
            frame = socket.recv()
            while socket.get(zmq.RCVMORE):  # not a subscription: drop the rest
                socket.recv()
            if TOPIC.startswith(frame[1:]):
                if frame[:1] == b"\x01":
                    self._topics.add(frame[1:])
                    self._due = 0.0
                elif frame[:1] == b"\x00":  # the last subscriber of this prefix left
                    self._topics.discard(frame[1:])

    def publish_if_due(self, state: SchedulerState, now: float) -> bool:
        """Build and publish a snapshot if one is due and anyone listens; return whether it did."""
        if not self._topics or now < self._due:
            return False
        self._due, self._published = now + self.interval, now
        try:
            self.socket.send_multipart(encode_snapshot(build_snapshot(state, now)), zmq.NOBLOCK)
        except zmq.Again:
            pass
        return True

    def close(self) -> None:
        self.socket.close()


class SchedulerServer:
    """One ROUTER socket, one thread, one :class:`SchedulerState`.

    A peer whose connection drops is reported to the state at once: each message's
    source fd ties its sender to a connection, and the socket monitor says when a
    connection closes (libzmq's ``ROUTER_NOTIFY`` would, but it is a draft API).

    With ``config.local_address`` (``unix://PATH``) the loop also serves the processes of
    this host (a local cluster's workers and clients) on a Unix socket, without ZeroMQ
    (``protocol/unix_link.py``): each connection is a :class:`LocalLink`, its peer known
    to the state by a name of its own, and gone as soon as its connection ends.
    """

    def __init__(self, address: str, config: SchedulerConfig | None = None) -> None:
        started = time.monotonic()
        monitor = Monitor(started, ProcessFacts.of_this_process())
        self.state = SchedulerState(config, now=started, monitor=monitor)
        config = self.state.config
        keys = ClusterKeys(config.keys).check_scheduler() if config.keys else None
        self.local_address = config.local_address
        self._listener = None
        if self.local_address is not None:
            unix_link.check_private(self.local_address)
            self._listener = unix_link.listen(self.local_address)
        self._links: dict[int, LocalLink] = {}  # by fd
        self._link_of: dict[bytes, LocalLink] = {}  # by the peer's name
        self._link_numbers = itertools.count(1)
        self._poller = select.poll()
        self._zmq_used = False  # this turn used a ZeroMQ socket (see run)
        self._context = zmq.Context()
        # the ZAP handler first: a socket bound before it would admit any key
        self._authenticator = keys.authenticator(self._context) if keys is not None else None
        self._router = self._context.socket(zmq.ROUTER)
        for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0)):
            self._router.setsockopt(option, value)
        if keys is not None:
            keys.serve(self._router)
        self._router.bind(zmq_address(address))
        self.address = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        try:
            self._feed = MonitorFeed(self._context, config.monitor_address
                                     or default_monitor_address(address, self.address), config.monitor_interval,
                                     keys)
        except BaseException:
            self._router.close()
            if self._listener is not None:
                self._listener.close()
            if self._authenticator is not None:
                self._authenticator.close()
            self._context.term()
            raise
        self.monitor_address = self._feed.address
        monitor.address, monitor.monitor_address = self.address, self.monitor_address
        self._connections = self._router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._tracker = ConnectionTracker()
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._running = True

    def stop(self) -> None:
        """Stop the loop; safe from a signal handler or another thread."""
        self._running = False
        os.write(self._wakeup_w, b"x")

    def run(self) -> None:
        """Serve until stopped.

        The loop polls file descriptors with ``select.poll``, its ZeroMQ sockets by their
        notification descriptors (``zmq.FD``), not with ``zmq.Poller``: ZeroMQ's poll checks every
        socket on every call (a dozen system calls a turn), which is most of a local link's
        round trip. That descriptor is edge-triggered, so after a turn that used a socket, the
        sockets are asked whether input waits (``EVENTS``), and the next poll does not block if so.
        While messages come quickly, the loop polls a little before it blocks (``protocol/busy_poll.py``).
        """
        poller, busy_poll = self._poller, BusyPoll()
        state, router, feed, authenticator = self.state, self._router, self._feed, self._authenticator
        sockets = [router, self._connections, feed.socket, *([authenticator.socket] if authenticator else [])]
        socket_at = {sock.get(zmq.FD): sock for sock in sockets}
        for fd in (*socket_at, self._wakeup_r):
            poller.register(fd, select.POLLIN)
        listener = self._listener
        if listener is not None:
            poller.register(listener.fileno(), select.POLLIN)
        tick = min(_TICK, state.config.balance_interval) if state.config.balance_interval > 0 else _TICK
        next_tick = time.monotonic() + tick
        waiting = {sock for sock in sockets if sock.get(zmq.EVENTS) & POLLIN}  # sockets known to hold input
        logger.info("scheduler listening on %s, monitor feed on %s", self.address, self.monitor_address)
        try:
            while True:
                wake = min(next_tick, feed.next_due())
                # milliseconds rounded up: waking a fraction early would spin until the deadline
                timeout = 0 if waiting else math.ceil(max(0.0, wake - time.monotonic()) * 1000)
                polled = busy_poll.wait(poller.poll, timeout)
                now = time.monotonic()
                if not self._running and not state.stopping:  # a signal: its peers hear so, as at a shutdown
                    state.stop_cluster("the scheduler was stopped")
                readable = waiting
                for fd, _ in polled:
                    sock = socket_at.get(fd)
                    if sock is not None and sock not in readable and sock.get(zmq.EVENTS) & POLLIN:
                        readable.add(sock)
                self._zmq_used = bool(readable)
                if authenticator is not None and authenticator.socket in readable:  # handshakes wait on it
                    authenticator.handle()
                # a peer's last messages (a worker's bye) before the news that its connection closed
                if router in readable or self._connections in readable:
                    for _ in range(_DRAIN):
                        item = receive_routed(router)
                        if item is None:
                            break
                        identity, source_fd, frames = item
                        if source_fd is not None:
                            gone = self._tracker.on_message(identity, source_fd)
                            if gone is not None:
                                state.on_disconnect(gone)
                        self._apply(identity, frames, now)
                if self._connections in readable:
                    self._on_connection_events()
                for fd, event in polled:
                    link = self._links.get(fd)
                    if link is not None:
                        self._serve_link(link, event, now)
                    elif listener is not None and fd == listener.fileno():
                        self._accept()
                if now >= next_tick:
                    state.on_tick(now)
                    next_tick = now + tick
                for identity, message in state.flush():
                    self._send(identity, message)
                if state.stopping:  # a shutdown or a signal: deliver what was flushed, then stop
                    router.setsockopt(zmq.LINGER, _STOP_LINGER_MS)
                    self._drain_links(time.monotonic() + _STOP_LINGER_MS / 1000)
                    break
                if feed.socket in readable:
                    feed.read_subscriptions()
                feed.note_workers(state)
                if feed.publish_if_due(state, now):
                    self._zmq_used = True
                # a send or receive may have taken a socket's notification: ask each whether input waits
                waiting = {sock for sock in sockets if sock.get(zmq.EVENTS) & POLLIN} if self._zmq_used else set()
        finally:
            for link in list(self._links.values()):
                link.channel.close()
            if listener is not None:
                listener.close()
                with contextlib.suppress(OSError):
                    os.unlink(unix_link.path_of(self.local_address))
            feed.close()
            router.disable_monitor()
            self._connections.close()
            router.close()
            if authenticator is not None:
                authenticator.close()
            self._context.term()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)

    def _on_connection_events(self) -> None:
        while self._connections.get(zmq.EVENTS) & POLLIN:
            event = parse_monitor_message(self._connections.recv_multipart())
            if event["event"] == zmq.EVENT_DISCONNECTED:
                peer = self._tracker.on_disconnected(event["value"])
                if peer is not None:
                    self.state.on_disconnect(peer)

    def _send(self, identity: bytes, message) -> None:
        link = self._link_of.get(identity)
        try:
            if link is None:
                send(self._router, message, identity)
                self._zmq_used = True
                return
            frames = encode(message)
        except (TypeError, ValueError, OverflowError):  # a bug must cost one message, never the scheduler
            logger.exception("could not encode %s for %r: dropped", type(message).__name__, identity)
            return
        try:
            link.channel.send(frames)
        except ChannelClosed:
            return  # the peer is gone: its end of file is read next
        self._watch_writable(link)

    # -- the local links -----------------------------------------------------

    def _accept(self) -> None:
        while (sock := unix_link.accept(self._listener)) is not None:
            fd = sock.detach()  # the channel owns it from now on
            link = LocalLink(b"local-%d" % next(self._link_numbers), fd, Channel(fd, fd))
            self._links[fd] = link
            self._link_of[link.name] = link
            self._poller.register(fd, select.POLLIN)

    def _serve_link(self, link: LocalLink, event: int, now: float) -> None:
        if event & select.POLLOUT:
            try:
                link.channel.flush()
            except ChannelClosed:
                pass
            self._watch_writable(link)
        if not event & (select.POLLIN | select.POLLERR | select.POLLHUP):
            return
        try:
            messages = link.channel.receive()
        except ChannelClosed as exc:  # its end (everything it sent before was read), or bytes that are no message
            if isinstance(exc, ChannelCorrupt):
                logger.warning("closing the local connection of %r: %s", link.name, exc)
            self._close_link(link)
            self.state.on_disconnect(link.name)
            return
        for frames in messages:
            self._apply(link.name, frames, now)

    def _watch_writable(self, link: LocalLink) -> None:
        """Poll a link for room only while output waits for it."""
        if link.channel.wants_write != link.writing:
            link.writing = link.channel.wants_write
            self._poller.modify(link.fd, select.POLLIN | (select.POLLOUT if link.writing else 0))

    def _close_link(self, link: LocalLink) -> None:
        self._poller.unregister(link.fd)
        del self._links[link.fd], self._link_of[link.name]
        link.channel.close()

    def _drain_links(self, deadline: float) -> None:
        """Before stopping: write what waits for the local links, for at most until ``deadline``."""
        for link in self._links.values():
            link.channel.flush_until(deadline)

    def _apply(self, identity: bytes, frames: list, now: float) -> None:
        deliver(frames, lambda message: self.state.on_message(identity, message, now), identity)


@dataclasses.dataclass(slots=True, eq=False)
class LocalLink:
    """A peer of this host on the Unix socket: the name the state knows it by, its connection."""

    name: bytes
    fd: int
    channel: Channel
    writing: bool = False  # polled for room to write


def run_scheduler(address: str, config: SchedulerConfig, ready_fd: int | None = None) -> None:
    """Run a scheduler in this process until SIGINT or SIGTERM; report its address on ``ready_fd``."""
    shared_memory.raise_fd_limit()  # it holds an fd per shared-memory segment of every live task and object
    server = SchedulerServer(address, config)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.stop())
    if ready_fd is not None:
        with os.fdopen(ready_fd, "w") as ready:
            ready.write(json.dumps({"address": server.address, "monitor_address": server.monitor_address,
                                    "local_address": server.local_address, "pid": os.getpid()}) + "\n")
    server.run()
