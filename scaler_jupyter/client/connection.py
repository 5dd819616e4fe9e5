"""The client's link to the scheduler: one DEALER socket owned by one I/O thread.

User threads queue messages with :meth:`Connection.send`; the I/O thread sends
them, merging consecutive ``Submit`` messages so a loop of ``submit`` calls costs
a few messages, not one per task. Received messages are decoded and handed to
the ``on_message`` callback in the I/O thread, which is where futures complete.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

import zmq

from scaler_jupyter.protocol import Heartbeat, Submit, deliver
from scaler_jupyter.protocol.transport import receive, send
from scaler_jupyter.security import ClusterKeys, HandshakeWatch

logger = logging.getLogger(__name__)

_MAX_TASKS_PER_MESSAGE = 4096


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
        self._outgoing: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._closing = False
        self._linger = True
        self._thread = threading.Thread(target=self._run, name="scaler-jupyter-client", daemon=True)
        self._thread.start()

    def send(self, message) -> None:
        with self._lock:
            if self._closing:
                return
            self._outgoing.append(message)
            if not self._wake_pending:
                self._wake_pending = True
                os.write(self._wakeup_w, b"x")

    @property
    def handshake_failure(self) -> str | None:
        """Why the last security handshake with the scheduler failed, if it did since the last success."""
        return self._handshakes.failure

    def close(self, last_message=None, linger: bool = True) -> None:
        """Send ``last_message`` and what is queued, then stop the thread and close the socket.

        With ``linger=False`` what the scheduler has not taken yet is dropped (it is gone)."""
        with self._lock:
            if self._closing:
                return
            self._linger = linger
            if last_message is not None:
                self._outgoing.append(last_message)
            self._closing = True
            os.write(self._wakeup_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wakeup_r, zmq.POLLIN)
        poller.register(self._handshakes.socket, zmq.POLLIN)
        last_heard = time.monotonic()
        next_heartbeat = last_heard + self._heartbeat_interval  # after the hello queued at start
        lost = False
        try:
            while True:
                events = dict(poller.poll(max(0.0, next_heartbeat - time.monotonic()) * 1000))
                if self._wakeup_r in events:
                    os.read(self._wakeup_r, 4096)
                    with self._lock:
                        self._wake_pending = False
                        outgoing, self._outgoing = self._outgoing, collections.deque()
                        closing = self._closing
                    for message in _coalesce(outgoing):
                        self._send(message)
                    if closing:
                        return
                if self._socket in events:
                    last_heard = time.monotonic()
                    self._receive()
                if self._handshakes.socket in events:
                    failure = self._handshakes.read()
                    if failure is not None and self._handshakes.definite and self._on_refused is not None:
                        self._on_refused(failure)
                now = time.monotonic()
                if now >= next_heartbeat:
                    self._send(Heartbeat(0.0, 0, 0, 0))
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
            if not self._linger or self._handshakes.failure is not None:  # nobody will take what is queued
                self._socket.setsockopt(zmq.LINGER, 0)
            self._handshakes.close()
            self._socket.close()
            self._context.term()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)

    def _send(self, message) -> None:
        try:
            send(self._socket, message)
        except zmq.Again:
            logger.debug("%s dropped: the scheduler refused this connection", type(message).__name__)

    def _receive(self) -> None:
        while (frames := receive(self._socket)) is not None:
            deliver(frames, self._on_message, "the scheduler")


def _coalesce(messages):
    """Merge runs of consecutive ``Submit`` messages, keeping every message's order."""
    merged: Submit | None = None
    for message in messages:
        if isinstance(message, Submit):
            if merged is not None and len(merged.tasks) + len(message.tasks) <= _MAX_TASKS_PER_MESSAGE:
                merged.objects.extend(message.objects)
                merged.tasks.extend(message.tasks)
                continue
            if merged is not None:
                yield merged
            merged = Submit(list(message.objects), list(message.tasks))
            continue
        if merged is not None:
            yield merged
            merged = None
        yield message
    if merged is not None:
        yield merged
