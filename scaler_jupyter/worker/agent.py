"""A worker's agent: the loop that holds the scheduler connection and its processors' pipes.

The agent never runs user code, so it answers the scheduler (heartbeats, cancels) even
while every processor is busy. Its rules (queue order, dispatch depth, crash accounting,
take-back, blocked parents) live in ``agent_state.py``; this loop only reads, decodes,
calls the state, and carries out what its ``flush()`` returns: it writes messages, starts
and kills processors. It watches each processor through a pidfd, so a processor's death
is noticed at once, after whatever it sent before dying.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import zmq

from scaler_jupyter import task_context
from scaler_jupyter.processes import spawn
from scaler_jupyter.protocol import deliver, encode, transport, unix_link
from scaler_jupyter.protocol.busy_poll import BusyPoll
from scaler_jupyter.protocol.channel import Channel, ChannelClosed
from scaler_jupyter.protocol.transport import POLLERR, POLLIN, POLLOUT
from scaler_jupyter.security import HandshakeWatch, load_keys
from scaler_jupyter.worker.agent_state import Actions, AgentConfig, AgentState

__all__ = ["AgentConfig", "WorkerAgent", "run_worker"]

logger = logging.getLogger(__name__)

_BYE_LINGER_MS = 1000  # how long the bye may take to reach the scheduler on exit
_CONNECT_RETRY_MS = 10  # between attempts to reach a starting scheduler's local socket

@dataclasses.dataclass(slots=True, eq=False)
class _Process:
    """A processor's process and pipes; its number is the state's name for it."""

    number: int
    process: subprocess.Popen
    channel: Channel
    pidfd: int
    stats: psutil.Process | None


class WorkerAgent:
    """One worker: see the module docstring."""

    def __init__(self, scheduler_address: str, config: AgentConfig | None = None) -> None:
        self.address = scheduler_address
        self.config = config or AgentConfig()
        self.name = self.config.name or f"{socket.gethostname()}-{os.getpid()}"
        self._keys = load_keys(self.config.keys)  # a missing key file is reported now, not at the first connect
        self.state = AgentState(self.config, scheduler_address, self.name, socket.gethostname(), os.getpid(),
                                time.monotonic())
        self._context = zmq.Context()
        # the scheduler: over ZeroMQ, or over a local cluster's Unix socket (protocol/unix_link.py)
        self._scheduler: zmq.Socket | None = None
        self._handshakes: HandshakeWatch | None = None
        self._link: Channel | None = None
        self._unsent: list = []  # messages for a local link not connected yet (the scheduler is starting)
        self._started = time.monotonic()
        if not unix_link.is_unix(scheduler_address):
            self._scheduler = self._context.socket(zmq.DEALER)
            if self._keys is not None:
                self._keys.connect(self._scheduler)
            self._handshakes = HandshakeWatch(self._scheduler, keyed=self._keys is not None)
        self._poller = zmq.Poller()
        self._processes: dict[int, _Process] = {}  # by the state's number
        self._by_fd: dict[int, _Process] = {}  # pidfd and channel fds
        self._writing: set[int] = set()  # channel fds registered for POLLOUT
        self._stopping = False
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._stats = psutil.Process()

    @property
    def exit_code(self) -> int:
        """1 when the worker stopped because it cannot join the scheduler, else 0."""
        return self.state.exit_code

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped by :meth:`stop`, a signal, the scheduler, or a silent scheduler."""
        self._poller.register(self._wakeup_r, POLLIN)
        state, busy_poll = self.state, BusyPoll()
        try:
            self._connect()
            self._carry_out(state.flush())  # start the processors
            while state.running and not self._stopping:
                # milliseconds rounded up: waking a fraction early would spin until the deadline
                timeout = math.ceil(max(0.0, state.next_tick - time.monotonic()) * 1000)
                if self._scheduler is None and self._link is None:
                    self._connect_link()
                    timeout = min(timeout, _CONNECT_RETRY_MS)
                events = dict(busy_poll.wait(self._poller.poll, timeout))
                now = time.monotonic()
                if self._scheduler is not None and self._scheduler in events:
                    self._receive_from_scheduler(now)
                if self._link is not None and self._link.read_fd in events:
                    self._receive_from_link(events[self._link.read_fd], now)
                for fd, event in events.items():
                    proc = self._by_fd.get(fd)
                    if proc is None:
                        continue
                    if fd == proc.pidfd:
                        self._receive_from(proc, now)  # what it sent before dying comes first
                        self._on_exit(proc, now)
                    elif event & POLLOUT:
                        self._flush_to(proc)
                    else:
                        self._receive_from(proc, now)
                if self._wakeup_r in events:
                    os.read(self._wakeup_r, 64)
                if self._handshakes is not None and self._handshakes.socket in events:
                    failure = self._handshakes.read()
                    if failure is not None:
                        state.on_handshake_failure(failure, self._handshakes.definite)
                if now >= state.next_tick:
                    state.on_tick(now, *self._usage())
                self._carry_out(state.flush())
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Stop the loop; safe to call from a signal handler."""
        self._stopping = True
        os.write(self._wakeup_w, b"x")

    def _carry_out(self, actions: Actions) -> None:
        for number in actions.start:  # first: tasks may be waiting for a processor started this turn
            self._start(number)
        for number, message in actions.to_processors:
            self._send_to(self._processes[number], message)
        for number in actions.kill:
            self._processes[number].process.kill()
        for message in actions.to_scheduler:
            self._send(message)

    def _connect(self) -> None:
        if self._scheduler is None:
            self._connect_link()
        else:
            # With no high-water mark a send blocks only when libzmq has dropped the connection for good
            # (a refused security handshake): SNDTIMEO 0 drops the message instead of hanging the loop.
            for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0), (zmq.SNDTIMEO, 0)):
                self._scheduler.setsockopt(option, value)
            self._scheduler.connect(self.address)
            self._poller.register(self._scheduler, POLLIN)
            self._poller.register(self._handshakes.socket, POLLIN)

    def _connect_link(self) -> None:
        """Connect the local link; while the scheduler starts (it starts beside its workers) its socket
        may not exist yet: try again a moment later, for at most ``death_timeout``."""
        try:
            fd = unix_link.connect(self.address).detach()
        except ConnectionError as exc:
            if time.monotonic() - self._started > self.config.death_timeout:
                self.state.on_scheduler_gone(str(exc))
            return
        self._link = Channel(fd, fd)
        self._poller.register(fd, POLLIN)
        unsent, self._unsent = self._unsent, []
        for message in unsent:
            self._send(message)

    def _send(self, message) -> None:
        if self._link is None and self._scheduler is None and self.state.running:
            self._unsent.append(message)
            return
        if self._link is not None:
            try:
                self._link.send(encode(message))
            except ChannelClosed:
                return  # its end is read next
            self._watch_link()
            return
        if self._scheduler is None:
            return  # the local link ended
        try:
            transport.send(self._scheduler, message)
        except zmq.Again:  # see run(): the scheduler refused our handshake, and nothing can reach it
            logger.debug("%s dropped: the scheduler refused this worker's connection", type(message).__name__)

    def _watch_link(self) -> None:
        """Poll the local link for room only while output waits for it."""
        link = self._link
        self._poller.modify(link.read_fd, POLLIN | (POLLOUT if link.wants_write else 0))

    def _receive_from_link(self, event: int, now: float) -> None:
        link = self._link
        if event & POLLOUT:
            with contextlib.suppress(ChannelClosed):
                link.flush()
            self._watch_link()
        if not event & (POLLIN | POLLERR):
            return
        try:
            messages = link.receive()
        except ChannelClosed:
            self._poller.unregister(link.read_fd)
            link.close()
            self._link = None
            self.state.on_scheduler_gone("it closed the connection")
            return
        state = self.state

        def handle(message) -> None:
            state.on_scheduler_message(message, now)

        for frames in messages:
            deliver(frames, handle, "the scheduler")

    def _send_to(self, proc: _Process, message) -> None:
        try:
            proc.channel.send(encode(message))
        except ChannelClosed:
            return  # its exit is handled when its pidfd fires
        self._watch_writable(proc)

    def _flush_to(self, proc: _Process) -> None:
        try:
            proc.channel.flush()
        except ChannelClosed:
            pass
        self._watch_writable(proc)

    def _watch_writable(self, proc: _Process) -> None:
        """Poll a processor's pipe for room only while output waits for it."""
        fd = proc.channel.write_fd
        if proc.channel.wants_write and fd not in self._writing:
            self._writing.add(fd)
            self._by_fd[fd] = proc
            self._poller.register(fd, POLLOUT)
        elif not proc.channel.wants_write and fd in self._writing:
            self._writing.discard(fd)
            del self._by_fd[fd]
            self._poller.unregister(fd)

    # -- reading -------------------------------------------------------------

    def _receive_from_scheduler(self, now: float) -> None:
        state = self.state

        def handle(message) -> None:
            state.on_scheduler_message(message, now)

        while (frames := transport.receive(self._scheduler)) is not None:
            deliver(frames, handle, "the scheduler")

    def _receive_from(self, proc: _Process, now: float) -> None:
        try:
            messages = proc.channel.receive()
        except ChannelClosed:
            messages = []
            if proc.channel.read_fd in self._by_fd:  # its exit is handled when its pidfd fires
                self._poller.unregister(proc.channel.read_fd)
                del self._by_fd[proc.channel.read_fd]
        state, number = self.state, proc.number

        def handle(message) -> None:
            state.on_processor_message(number, message, now)

        for frames in messages:
            deliver(frames, handle, f"processor {proc.process.pid}")

    # -- processes -----------------------------------------------------------

    def _start(self, number: int) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env[task_context.SCHEDULER_ENV] = self.address
        env.pop(task_context.KEYS_ENV, None)
        if self._keys is not None:  # so that a Client() inside a task can join the same scheduler
            env[task_context.KEYS_ENV] = str(self._keys.directory)
        try:
            process = spawn(["-m", "scaler_jupyter.worker.processor", str(to_child_r), str(from_child_w)],
                            env=env, pass_fds=(to_child_r, from_child_w))
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        try:
            stats = psutil.Process(process.pid)
        except psutil.Error:
            stats = None
        proc = _Process(number, process, Channel(from_child_r, to_child_w), os.pidfd_open(process.pid), stats)
        self._processes[number] = proc
        for fd in (proc.pidfd, proc.channel.read_fd):
            self._by_fd[fd] = proc
            self._poller.register(fd, POLLIN)

    def _on_exit(self, proc: _Process, now: float) -> None:
        if self._processes.pop(proc.number, None) is None:
            return
        for fd in (proc.pidfd, proc.channel.read_fd):
            if self._by_fd.pop(fd, None) is not None:
                self._poller.unregister(fd)
        if proc.channel.write_fd in self._writing:
            self._writing.discard(proc.channel.write_fd)
            del self._by_fd[proc.channel.write_fd]
            self._poller.unregister(proc.channel.write_fd)
        os.close(proc.pidfd)
        proc.channel.close()
        self.state.on_processor_exit(proc.number, proc.process.pid, proc.process.wait(), now)

    def _usage(self) -> tuple[float, int]:
        """CPU (percent of one core) and resident memory of the agent and its processors together."""
        cpu, memory = 0.0, 0
        for stats in [self._stats, *(p.stats for p in self._processes.values() if p.stats is not None)]:
            try:
                cpu += stats.cpu_percent(None)
                memory += stats.memory_info().rss
            except psutil.Error:
                pass
        return cpu, memory

    def _shutdown(self) -> None:
        self.state.stop()
        try:
            for message in self.state.flush().to_scheduler:  # the last results, and goodbye
                self._send(message)
        except Exception:  # the processes below must still be stopped
            logger.exception("worker %s could not say goodbye to the scheduler", self.name)
        for proc in self._processes.values():
            proc.process.kill()
        for proc in self._processes.values():
            proc.process.wait()
            os.close(proc.pidfd)
            proc.channel.close()
        # the bye must reach the scheduler (else it sees a dropped connection, a warning), but not hang an exit
        if self._link is not None:
            self._link.flush_until(time.monotonic() + _BYE_LINGER_MS / 1000)
            self._link.close()
        if self._scheduler is not None:
            self._handshakes.close()
            self._scheduler.close(linger=_BYE_LINGER_MS)
        self._context.term()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)


def run_worker(address: str, config: AgentConfig) -> None:
    """Run one worker in this process until SIGINT or SIGTERM."""
    agent = WorkerAgent(address, config)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: agent.stop())
    agent.run()
    sys.exit(agent.exit_code)
