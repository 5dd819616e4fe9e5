"""The client's link to the scheduler, written by the threads that send, read by one I/O thread.

A user thread sends its message itself (:meth:`Connection.send`): it encodes it,
then writes it under a lock. Handing it to the I/O thread instead would cost a
thread wake-up per message, a good share of a task's round trip on a VM. The lock
is also what lets several threads share the link (a ZeroMQ socket may be used by
one thread at a time only). Received messages are decoded and handed to the
``on_message`` callback in the I/O thread, outside the lock, which is where
futures complete. The I/O thread also heartbeats and, over ZeroMQ, watches the
security handshake. While replies come quickly it polls a little before it sleeps
(``protocol/busy_poll.py``).

Two kinds of link (:class:`ZmqLink`, :class:`UnixLink`), one loop:

- ZeroMQ (``tcp://``): one DEALER socket. The I/O thread does not poll the socket
  but its notification descriptor (``zmq.FD``), and reads the socket under the
  lock. That descriptor is edge-triggered (it fires when the socket's state may
  have changed, and a send may consume the change), so a sender that leaves a
  message waiting to be read wakes the I/O thread through a pipe. A scheduler that
  falls silent for ``silence_timeout`` is lost.
- A local cluster's Unix socket (``unix://``, ``protocol/unix_link.py``): messages
  are written straight into the socket; output the socket cannot take yet waits
  for the I/O thread, which a sender then wakes. The scheduler is lost as soon as
  the socket ends.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable

import zmq

from scaler_jupyter.protocol import Heartbeat, deliver, encode, unix_link
from scaler_jupyter.protocol.busy_poll import BusyPoll
from scaler_jupyter.protocol.channel import Channel, ChannelClosed
from scaler_jupyter.protocol.transport import POLLIN, POLLOUT, receive, send_encoded
from scaler_jupyter.security import ClusterKeys, HandshakeWatch

logger = logging.getLogger(__name__)

_LINGER_S = 1.0  # how long a closing link may take to deliver what waits (the bye)


class LinkClosed(Exception):
    """The scheduler ended the connection."""


class ZmqLink:
    """A DEALER socket to the scheduler; every method but ``poll_items``/``close`` runs under the lock."""

    def __init__(self, address: str, keys: ClusterKeys | None) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.IDENTITY, b"c" + secrets.token_bytes(8))
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        # With no high-water mark a send blocks only when libzmq has dropped the connection for good
        # (a refused security handshake): then what is sent is dropped rather than hang this thread.
        self._socket.setsockopt(zmq.SNDTIMEO, 0)
        if keys is not None:
            keys.connect(self._socket)
        self.handshakes: HandshakeWatch | None = HandshakeWatch(self._socket, keyed=keys is not None)
        self._socket.connect(address)
        self._notifications = self._socket.get(zmq.FD)

    def poll_items(self) -> list[tuple[int, int]]:
        return [(self._notifications, POLLIN)]

    def write(self, frames: list) -> bool:
        """Send; return True if the I/O thread must be woken (the send took its notification)."""
        try:
            send_encoded(self._socket, frames)
        except zmq.Again:
            logger.debug("a message was dropped: the scheduler refused this connection")
        return bool(self._socket.get(zmq.EVENTS) & POLLIN)

    def serve(self, events: dict) -> list[list]:
        """Every message waiting on the socket, undecoded."""
        received = []
        while (frames := receive(self._socket)) is not None:
            received.append(frames)
        return received

    def close(self, linger: bool) -> None:
        if not linger or self.handshakes.failure is not None:  # nobody will take what is queued
            self._socket.setsockopt(zmq.LINGER, 0)
        self.handshakes.close()
        self._socket.close()
        self._context.term()


class UnixLink:
    """A local cluster's Unix socket to the scheduler; every method but ``close`` runs under the lock."""

    handshakes = None

    def __init__(self, address: str) -> None:
        fd = unix_link.connect(address).detach()
        self._channel = Channel(fd, fd)

    def poll_items(self) -> list[tuple[int, int]]:
        return [(self._channel.read_fd, POLLIN | (POLLOUT if self._channel.wants_write else 0))]

    def write(self, frames: list) -> bool:
        """Write; return True if the I/O thread must be woken (output waits for room in the socket)."""
        try:
            self._channel.send(frames)
        except ChannelClosed:
            return True  # the I/O thread reads the end
        return self._channel.wants_write

    def serve(self, events: dict) -> list[list]:
        """Write what waits if there is room; return the messages read. Raise LinkClosed at the end."""
        event = events.get(self._channel.read_fd, 0)
        try:
            if event & POLLOUT:
                self._channel.flush()
            return self._channel.receive()
        except ChannelClosed as exc:
            raise LinkClosed(str(exc)) from None

    def close(self, linger: bool) -> None:
        self._channel.flush_until(time.monotonic() + (_LINGER_S if linger else 0.0))
        self._channel.close()


class Connection:
    """See the module docstring. ``on_lost(reason)`` is called once if the scheduler falls silent or, over a
    local link, ends the connection; ``on_refused(reason)`` when the scheduler refuses the security handshake
    in a way every retry would repeat (a key not the cluster's, keys on one side only). A ``unix://`` address
    nothing listens on raises ``ConnectionError`` here."""

    def __init__(self, address: str, on_message: Callable, on_lost: Callable[[str], None],
                 silence_timeout: float, heartbeat_interval: float = 1.0, keys: ClusterKeys | None = None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.address = address
        self._on_message = on_message
        self._on_lost = on_lost
        self._silence_timeout = silence_timeout
        self._heartbeat_interval = heartbeat_interval
        self._link: ZmqLink | UnixLink = UnixLink(address) if unix_link.is_unix(address) else ZmqLink(address, keys)
        self._on_refused = on_refused
        self._lock = threading.Lock()  # whoever uses the link holds it
        self._wake_pending = False
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._closing = False
        self._linger = True
        self._thread = threading.Thread(target=self._run, name="scaler-jupyter-client", daemon=True)
        self._thread.start()

    def send(self, message) -> None:
        """Send ``message`` from this thread; dropped once the connection is closed."""
        frames = encode(message)  # outside the lock: other threads may send meanwhile
        with self._lock:
            if self._closing:
                return
            if self._link.write(frames):
                self._wake()

    def _wake(self) -> None:
        """Wake the I/O thread (with the lock held)."""
        if not self._wake_pending:
            self._wake_pending = True
            os.write(self._wakeup_w, b"x")

    @property
    def handshake_failure(self) -> str | None:
        """Why the last security handshake with the scheduler failed, if it did since the last success."""
        handshakes = self._link.handshakes
        return None if handshakes is None else handshakes.failure

    def close(self, last_message=None, linger: bool = True) -> None:
        """Send ``last_message``, then stop the thread and close the link.

        With ``linger=False`` what the scheduler has not taken yet is dropped (it is gone)."""
        frames = None if last_message is None else encode(last_message)
        with self._lock:
            if self._closing:
                return
            self._linger = linger
            if frames is not None:
                self._link.write(frames)
            self._closing = True
            os.write(self._wakeup_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        link = self._link
        poller = zmq.Poller()
        polled = dict(link.poll_items())
        for fd, flags in polled.items():
            poller.register(fd, flags)
        poller.register(self._wakeup_r, POLLIN)
        handshakes = link.handshakes
        if handshakes is not None:
            poller.register(handshakes.socket, POLLIN)
        last_heard = time.monotonic()
        next_heartbeat = last_heard + self._heartbeat_interval  # after the hello sent at start
        heartbeat = encode(Heartbeat(0.0, 0, 0, 0))
        lost = False
        busy_poll = BusyPoll()
        try:
            while True:
                timeout_ms = math.ceil(max(0.0, next_heartbeat - time.monotonic()) * 1000)
                events = dict(busy_poll.wait(poller.poll, timeout_ms))
                if self._wakeup_r in events:
                    os.read(self._wakeup_r, 4096)
                received, ended = [], None
                with self._lock:
                    self._wake_pending = False
                    if self._closing:
                        return
                    if not lost:
                        try:
                            received = link.serve(events)
                        except LinkClosed as exc:
                            ended = f"the scheduler at {self.address} closed the connection ({exc})"
                        for fd, flags in link.poll_items():  # room to write is watched while output waits
                            if polled.get(fd) != flags:
                                poller.modify(fd, flags)
                                polled[fd] = flags
                if received:
                    last_heard = time.monotonic()
                    for frames in received:
                        deliver(frames, self._on_message, "the scheduler")
                    del received, frames  # no local keeps a delivered message (and its buffers) alive
                if ended is not None:
                    lost = True
                    for fd in polled:  # at its end a socket stays readable: stop polling it
                        poller.unregister(fd)
                    polled = {}
                    self._on_lost(ended)
                if handshakes is not None and handshakes.socket in events:
                    failure = handshakes.read()
                    if failure is not None and handshakes.definite and self._on_refused is not None:
                        self._on_refused(failure)
                now = time.monotonic()
                if now >= next_heartbeat:
                    if not lost:
                        with self._lock:
                            link.write(heartbeat)
                    next_heartbeat = now + self._heartbeat_interval
                    if not lost and now - last_heard > self._silence_timeout:
                        lost = True
                        reason = f"the scheduler at {self.address} has not answered for {now - last_heard:.0f}s"
                        if handshakes is not None and handshakes.failure is not None:
                            reason += f": {handshakes.failure}"
                        self._on_lost(reason)
        except Exception:
            logger.exception("the client's I/O thread failed")
            self._on_lost("the client's I/O thread failed; see the log")
        finally:
            with self._lock:
                self._closing = True  # no thread sends any more
                link.close(self._linger)
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
