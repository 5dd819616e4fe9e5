"""The scheduler's event loop: read, decode, apply, encode, write. The rules live in ``state.py``."""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import zmq

from scaler_jupyter.errors import ProtocolError
from scaler_jupyter.protocol import decode
from scaler_jupyter.protocol.transport import receive, send
from scaler_jupyter.scheduler.state import SchedulerConfig, SchedulerState

logger = logging.getLogger(__name__)

_DRAIN = 1000  # messages read per turn before the state is flushed, so one busy peer cannot starve the rest
_TICK = 0.5  # seconds between liveness checks


def zmq_address(address: str) -> str:
    """Accept port 0 for "any free port", as ZeroMQ spells it."""
    return address[: -len(":0")] + ":*" if address.endswith(":0") else address


class SchedulerServer:
    """One ROUTER socket, one thread, one :class:`SchedulerState`."""

    def __init__(self, address: str, config: SchedulerConfig | None = None) -> None:
        self.state = SchedulerState(config)
        self._context = zmq.Context()
        self._router = self._context.socket(zmq.ROUTER)
        for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0)):
            self._router.setsockopt(option, value)
        self._router.bind(zmq_address(address))
        self.address = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._running = True
        self.malformed = 0

    def stop(self) -> None:
        """Stop the loop; safe from a signal handler or another thread."""
        self._running = False
        os.write(self._wakeup_w, b"x")

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wakeup_r, zmq.POLLIN)
        state, router = self.state, self._router
        next_tick = time.monotonic() + _TICK
        logger.info("scheduler listening on %s", self.address)
        try:
            while self._running:
                events = dict(poller.poll(max(0.0, next_tick - time.monotonic()) * 1000))
                now = time.monotonic()
                if router in events:
                    for _ in range(_DRAIN):
                        item = receive(router, routed=True)
                        if item is None:
                            break
                        self._apply(*item, now)
                if now >= next_tick:
                    state.on_tick(now)
                    next_tick = now + _TICK
                for identity, message in state.flush():
                    send(router, message, identity)
        finally:
            router.close()
            self._context.term()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)

    def _apply(self, identity: bytes, frames: list, now: float) -> None:
        try:
            message = decode(frames)
        except ProtocolError as exc:
            self.malformed += 1
            logger.warning("dropping a malformed message from %r: %s", identity, exc)
            return
        try:
            self.state.on_message(identity, message, now)
        except Exception:  # a bug must cost one message, never the scheduler
            logger.exception("error handling %s from %r", type(message).__name__, identity)


def run_scheduler(address: str, config: SchedulerConfig, ready_fd: int | None = None) -> None:
    """Run a scheduler in this process until SIGINT or SIGTERM; report its address on ``ready_fd``."""
    server = SchedulerServer(address, config)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.stop())
    if ready_fd is not None:
        with os.fdopen(ready_fd, "w") as ready:
            ready.write(json.dumps({"address": server.address, "pid": os.getpid()}) + "\n")
    server.run()
