"""The client's link to the scheduler: one DEALER socket, written by the threads that send, read by one I/O thread.

A user thread sends its message itself (:meth:`Connection.send`): it encodes it,
then writes it under a lock. Handing it to the I/O thread instead would cost a
thread wake-up per message, a good share of a task's round trip on a VM. A ZeroMQ
socket may be used by one thread at a time only, and the lock is that rule: the
I/O thread does not poll the socket but its notification descriptor
(``zmq.FD``), and reads the socket under the same lock. That descriptor is
edge-triggered (it fires when the socket's state may have changed, and a send
may consume the change), so a sender that leaves a message waiting to be read
wakes the I/O thread through a pipe. Received messages are decoded and handed to
the ``on_message`` callback in the I/O thread, outside the lock, which is where
futures complete. The I/O thread also heartbeats and watches the security
handshake.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

import zmq

from scaler_jupyter.protocol import Heartbeat, deliver, encode
from scaler_jupyter.protocol.transport import receive, send_encoded
from scaler_jupyter.security import ClusterKeys, HandshakeWatch

logger = logging.getLogger(__name__)


class Connection:
    """See the module docstring. ``on_lost(reason)`` is called once if the scheduler falls silent;
    ``on_refused(reason)`` when the scheduler refuses the security handshake in a way every retry
    would repeat (a key not the cluster's, keys on one side only)."""

    def __init__(self, address: str, on_message: Callable, on_lost: Callable[[str], None],
                 silence_timeout: float, heartbeat_interval: float = 1.0, keys: ClusterKeys | None = None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.address = address
        self._on_message = on_message
        self._on_lost = on_lost
        self._silence_timeout = silence_timeout
        self._heartbeat_interval = heartbeat_interval
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
        self._handshakes = HandshakeWatch(self._socket, keyed=keys is not None)
        self._on_refused = on_refused
        self._socket.connect(address)
        self._lock = threading.Lock()  # whoever uses the socket holds it
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
            self._send(frames)
            if self._socket.get(zmq.EVENTS) & zmq.POLLIN:  # the send took the I/O thread's notification
                self._wake()

    def _wake(self) -> None:
        """Wake the I/O thread (with the lock held)."""
        if not self._wake_pending:
            self._wake_pending = True
            os.write(self._wakeup_w, b"x")

    @property
    def handshake_failure(self) -> str | None:
        """Why the last security handshake with the scheduler failed, if it did since the last success."""
        return self._handshakes.failure

    def close(self, last_message=None, linger: bool = True) -> None:
        """Send ``last_message``, then stop the thread and close the socket.

        With ``linger=False`` what the scheduler has not taken yet is dropped (it is gone)."""
        frames = None if last_message is None else encode(last_message)
        with self._lock:
            if self._closing:
                return
            self._linger = linger
            if frames is not None:
                self._send(frames)
            self._closing = True
            os.write(self._wakeup_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        poller = zmq.Poller()
        notifications = self._socket.get(zmq.FD)
        poller.register(notifications, zmq.POLLIN)
        poller.register(self._wakeup_r, zmq.POLLIN)
        poller.register(self._handshakes.socket, zmq.POLLIN)
        last_heard = time.monotonic()
        next_heartbeat = last_heard + self._heartbeat_interval  # after the hello sent at start
        heartbeat = encode(Heartbeat(0.0, 0, 0, 0))
        lost = False
        try:
            while True:
                events = dict(poller.poll(max(0.0, next_heartbeat - time.monotonic()) * 1000))
                if self._wakeup_r in events:
                    os.read(self._wakeup_r, 4096)
                with self._lock:
                    self._wake_pending = False
                    if self._closing:
                        return
                    received = self._receive()
                if received:
                    last_heard = time.monotonic()
                    for frames in received:
                        deliver(frames, self._on_message, "the scheduler")
                    del received, frames  # no local keeps a delivered message (and its buffers) alive
                if self._handshakes.socket in events:
                    failure = self._handshakes.read()
                    if failure is not None and self._handshakes.definite and self._on_refused is not None:
                        self._on_refused(failure)
                now = time.monotonic()
                if now >= next_heartbeat:
                    with self._lock:
                        self._send(heartbeat)
                    next_heartbeat = now + self._heartbeat_interval
                    if not lost and now - last_heard > self._silence_timeout:
                        lost = True
                        reason = f"the scheduler at {self.address} has not answered for {now - last_heard:.0f}s"
                        if self._handshakes.failure is not None:
                            reason += f": {self._handshakes.failure}"
                        self._on_lost(reason)
        except Exception:
            logger.exception("the client's I/O thread failed")
            self._on_lost("the client's I/O thread failed; see the log")
        finally:
            with self._lock:
                self._closing = True  # no thread sends any more
                if not self._linger or self._handshakes.failure is not None:  # nobody will take what is queued
                    self._socket.setsockopt(zmq.LINGER, 0)
                self._handshakes.close()
                self._socket.close()
                self._context.term()
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)

    def _send(self, frames: list) -> None:
        try:
            send_encoded(self._socket, frames)
        except zmq.Again:
            logger.debug("a message was dropped: the scheduler refused this connection")

    def _receive(self) -> list[list]:
        """Every message waiting on the socket, undecoded (with the lock held)."""
        received = []
        while (frames := receive(self._socket)) is not None:
            received.append(frames)
        return received
