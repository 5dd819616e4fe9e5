"""A worker's agent: holds the scheduler connection and keeps its processors fed.

The agent never runs user code, so it answers the scheduler (heartbeats, cancels)
even while every processor is busy. It keeps the tasks the scheduler sent in a
queue and hands each processor a few at a time, enough that it never idles
between tasks and few enough that the rest can still be cancelled or moved. It
watches each processor through a pidfd: a processor that dies is replaced, the
task it was running is reported ``CRASHED``, and the tasks it had not started go
back to the queue.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
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
from scaler_jupyter.errors import ProtocolError
from scaler_jupyter.processes import spawn
from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    Assign,
    Cancel,
    DeleteObjects,
    Heartbeat,
    ObjectSpec,
    Output,
    Payload,
    Rejected,
    Results,
    Shutdown,
    Status,
    TakeBack,
    TakenBack,
    TaskBlocked,
    TaskResult,
    TaskSpec,
    WorkerBye,
    WorkerHello,
    WorkerWelcome,
    decode,
    encode,
    needed_objects,
    transport,
)
from scaler_jupyter.security import HandshakeWatch, load_keys
from scaler_jupyter.worker.channel import Channel, ChannelClosed

logger = logging.getLogger(__name__)

_PROCESSOR_QUEUE_SECONDS = 0.005  # work, by measured task time, handed to a processor ahead of time
_MAX_PROCESSOR_DEPTH = 128
_READY_TIMEOUT = 30.0  # join the scheduler after this long even if a processor is slow to start
_BYE_LINGER_MS = 1000
_MAX_START_FAILURES = 3  # processors in a row that die before answering: the worker cannot run tasks


@dataclasses.dataclass(slots=True, eq=False)
class _Processor:
    process: subprocess.Popen
    channel: Channel
    pidfd: int
    stats: psutil.Process | None
    started: float
    ready: bool = False  # it said so once its imports were done
    retiring: bool = False
    killed: bool = False  # killed on purpose (a cancel), so its death is no crash
    outstanding: dict[int, TaskSpec] = dataclasses.field(default_factory=dict)  # in the order it runs them
    objects: set[bytes] = dataclasses.field(default_factory=set)


class _WaitingTasks:
    """Tasks the agent holds for its processors, best first: children of running tasks (their
    parents wait on them), then higher priority, then arrival. Tasks taken back from a dead
    processor go before others of their rank."""

    def __init__(self) -> None:
        self._heap: list[tuple] = []
        self._later = itertools.count()
        self._sooner = itertools.count(-1, -1)

    def __len__(self) -> int:
        return len(self._heap)

    @staticmethod
    def _rank(spec: TaskSpec) -> tuple[int, int]:
        return (0 if spec.parent_id is not None else 1, -spec.priority)

    def push(self, specs) -> None:
        for spec in specs:
            heapq.heappush(self._heap, (self._rank(spec), next(self._later), spec))

    def push_back(self, specs) -> None:
        for spec in specs:
            heapq.heappush(self._heap, (self._rank(spec), next(self._sooner), spec))

    def pop(self) -> TaskSpec:
        return heapq.heappop(self._heap)[2]

    def remove(self, task_ids: set[int]) -> list[TaskSpec]:
        removed = [entry[2] for entry in self._heap if entry[2].task_id in task_ids]
        if removed:
            self._heap = [entry for entry in self._heap if entry[2].task_id not in task_ids]
            heapq.heapify(self._heap)
        return removed


@dataclasses.dataclass(slots=True)
class AgentConfig:
    """Every setting of a worker; the command line fills it."""

    processors: int = 1
    tags: tuple[str, ...] = ()
    heartbeat: float = 1.0
    death_timeout: float = 30.0  # exit when the scheduler has been silent this long
    name: str = ""
    keys: str | None = None  # the cluster's keys directory (`scaler-jupyter keys`), if it requires keys


class WorkerAgent:
    """One worker: see the module docstring."""

    def __init__(self, scheduler_address: str, config: AgentConfig | None = None) -> None:
        self.address = scheduler_address
        self.config = config or AgentConfig()
        self.name = self.config.name or f"{socket.gethostname()}-{os.getpid()}"
        self._keys = load_keys(self.config.keys)  # a missing key file is reported now, not at the first connect
        self._context = zmq.Context()
        self._scheduler = self._context.socket(zmq.DEALER)
        if self._keys is not None:
            self._keys.connect(self._scheduler)
        self._handshakes = HandshakeWatch(self._scheduler, keyed=self._keys is not None)
        self._poller = zmq.Poller()
        self._procs: list[_Processor] = []
        self._by_fd: dict[int, _Processor] = {}  # pidfd and channel fds
        self._writing: set[int] = set()  # channel fds registered for POLLOUT
        self._queue = _WaitingTasks()
        self._objects: dict[bytes, Payload] = {}
        self._blocked: set[int] = set()  # running tasks that wait on their own children
        self._cancelling: set[int] = set()  # cancels sent to a processor, not yet answered
        self._start_failures = 0
        self._hello_sent = False
        self._welcomed = False
        self._started = time.monotonic()
        self._results: list[TaskResult] = []
        self._mean_task_seconds: float | None = None
        self._depth = 1  # tasks per processor, learned from task times; one until measured
        self._running = True
        self.exit_code = 0  # 1 when it stops because it cannot join the scheduler
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._stats = psutil.Process()

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped by :meth:`stop`, a signal, or a silent scheduler."""
        # With no high-water mark a send blocks only when libzmq has dropped the connection for good
        # (a refused security handshake): SNDTIMEO 0 drops the message instead of hanging the loop.
        for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0), (zmq.SNDTIMEO, 0)):
            self._scheduler.setsockopt(option, value)
        self._scheduler.connect(self.address)
        self._poller.register(self._scheduler, zmq.POLLIN)
        self._poller.register(self._wakeup_r, zmq.POLLIN)
        self._poller.register(self._handshakes.socket, zmq.POLLIN)
        for _ in range(self.config.processors):
            self._spawn_processor()
        last_heard = next_heartbeat = time.monotonic()
        try:
            while self._running:
                timeout = max(0.0, next_heartbeat - time.monotonic())
                events = dict(self._poller.poll(timeout * 1000))
                if self._scheduler in events:
                    self._receive_from_scheduler()
                    last_heard = time.monotonic()
                for fd, event in events.items():
                    proc = self._by_fd.get(fd)
                    if proc is None:
                        continue
                    if fd == proc.pidfd:
                        self._receive_from(proc)  # what it sent before dying comes first
                        self._on_processor_exit(proc)
                    elif event & zmq.POLLOUT:
                        self._flush_to(proc)
                    else:
                        self._receive_from(proc)
                if self._wakeup_r in events:
                    os.read(self._wakeup_r, 64)
                if self._handshakes.socket in events:
                    self._on_handshake_events()
                self._resize_pool()
                self._dispatch()
                if self._results:
                    self._send(Results(self._results))
                    self._results = []
                now = time.monotonic()
                if now >= next_heartbeat:
                    self._say_hello_when_ready()
                    if self._welcomed:  # before that, the scheduler does not know us
                        self._send(self._heartbeat())
                    next_heartbeat = now + self.config.heartbeat
                    if now - last_heard > self.config.death_timeout:
                        logger.error("scheduler silent for %.0fs: worker %s exits", now - last_heard, self.name)
                        break
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Stop the loop; safe to call from a signal handler."""
        self._running = False
        os.write(self._wakeup_w, b"x")

    def _send(self, message) -> None:
        try:
            transport.send(self._scheduler, message)
        except zmq.Again:  # see run(): the scheduler refused our handshake, and nothing can reach it
            logger.debug("%s dropped: the scheduler refused this worker's connection", type(message).__name__)

    def _send_to(self, proc: _Processor, message) -> None:
        try:
            proc.channel.send(encode(message))
        except ChannelClosed:
            return  # its exit is handled when its pidfd fires
        self._watch_writable(proc)

    def _flush_to(self, proc: _Processor) -> None:
        try:
            proc.channel.flush()
        except ChannelClosed:
            pass
        self._watch_writable(proc)

    def _watch_writable(self, proc: _Processor) -> None:
        """Poll a processor's pipe for room only while output waits for it."""
        fd = proc.channel.write_fd
        if proc.channel.wants_write and fd not in self._writing:
            self._writing.add(fd)
            self._by_fd[fd] = proc
            self._poller.register(fd, zmq.POLLOUT)
        elif not proc.channel.wants_write and fd in self._writing:
            self._writing.discard(fd)
            del self._by_fd[fd]
            self._poller.unregister(fd)

    # -- from the scheduler --------------------------------------------------

    def _receive_from_scheduler(self) -> None:
        while (frames := transport.receive(self._scheduler)) is not None:
            try:
                message = decode(frames)
            except ProtocolError as exc:
                logger.error("dropping a malformed message from the scheduler: %s", exc)
                continue
            if isinstance(message, Assign):
                for obj in message.objects:
                    self._objects[obj.object_id] = obj.payload
                self._queue.push(message.tasks)
            elif isinstance(message, Cancel):
                self._cancel(set(message.task_ids))
            elif isinstance(message, DeleteObjects):
                self._delete_objects(message.object_ids)
            elif isinstance(message, TaskBlocked):
                if any(message.task_id in p.outstanding for p in self._procs):
                    self._blocked.add(message.task_id)
            elif isinstance(message, Shutdown):
                logger.info("scheduler asked worker %s to stop: %s", self.name, message.reason)
                self._running = False
            elif isinstance(message, TakeBack):
                returned = self._queue.remove(set(message.task_ids))  # only tasks no processor has
                self._send(TakenBack([spec.task_id for spec in returned]))
            elif isinstance(message, Rejected):
                self._on_rejected(message.reason)
            elif isinstance(message, WorkerWelcome):
                self._welcomed = True
            elif isinstance(message, Heartbeat):
                pass

    def _on_handshake_events(self) -> None:
        """A refused key, or keys on one side only, fails every retry alike: say so and stop."""
        failure = self._handshakes.read()
        if failure is None:
            return
        if self._handshakes.definite:
            logger.error("worker %s cannot join the scheduler at %s: %s", self.name, self.address, failure)
            self._running = False
            self.exit_code = 1
        else:
            logger.warning("worker %s: %s", self.name, failure)

    def _on_rejected(self, reason: str) -> None:
        if not self._welcomed:  # refused at hello (another protocol version): nothing to retry
            logger.error("scheduler rejected worker %s: %s", self.name, reason)
            self._running = False
            return
        # The scheduler lost track of us and gave our tasks to others: drop them and join again.
        logger.warning("scheduler forgot worker %s (%s): joining again", self.name, reason)
        self._queue = _WaitingTasks()
        self._welcomed = self._hello_sent = False
        self._say_hello_when_ready()

    def _cancel(self, task_ids: set[int]) -> None:
        for spec in self._queue.remove(task_ids):
            self._results.append(TaskResult(spec.task_id, Status.CANCELLED, None, "cancelled", []))
        for proc in list(self._procs):
            asked = [t for t in proc.outstanding if t in task_ids]
            if not asked:
                continue
            if next(iter(proc.outstanding)) in asked:  # it is running: stopping it means stopping its process
                for task_id in asked:
                    del proc.outstanding[task_id]
                    self._blocked.discard(task_id)
                    self._results.append(TaskResult(task_id, Status.CANCELLED, None, "cancelled", []))
                proc.killed = True
                proc.process.kill()
            else:
                self._cancelling.update(asked)
                self._send_to(proc, Cancel(asked))

    def _delete_objects(self, object_ids: list[bytes]) -> None:
        for object_id in object_ids:
            self._objects.pop(object_id, None)
        for proc in self._procs:
            held = [o for o in object_ids if o in proc.objects]
            if held:
                proc.objects.difference_update(held)
                self._send_to(proc, DeleteObjects(held))

    # -- from the processors -------------------------------------------------

    def _receive_from(self, proc: _Processor) -> None:
        try:
            messages = proc.channel.receive()
        except ChannelClosed:
            messages = []
            if proc.channel.read_fd in self._by_fd:  # its exit is handled when its pidfd fires
                self._poller.unregister(proc.channel.read_fd)
                del self._by_fd[proc.channel.read_fd]
        for frames in messages:
            try:
                message = decode(frames)
            except ProtocolError as exc:
                logger.error("dropping a malformed message from a processor: %s", exc)
                continue
            if isinstance(message, Results):
                walls = []
                for result in message.results:
                    self._cancelling.discard(result.task_id)
                    if proc.outstanding.pop(result.task_id, None) is not None:
                        self._results.append(result)
                        self._blocked.discard(result.task_id)
                        if result.profile:
                            walls.append(result.profile[0])
                if walls:
                    self._learn_task_time(sum(walls) / len(walls))
            elif isinstance(message, Output):
                self._send(message)
            elif isinstance(message, Heartbeat):
                proc.ready = True
                self._start_failures = 0
                self._say_hello_when_ready()

    def _say_hello_when_ready(self) -> None:
        """Join the scheduler once every processor can run tasks, so the first tasks do not wait
        for Python to start."""
        if not self._hello_sent and (all(p.ready for p in self._procs) or
                                     time.monotonic() - self._started > _READY_TIMEOUT):
            self._hello_sent = True
            self._send(WorkerHello(PROTOCOL_VERSION, self.name, socket.gethostname(), os.getpid(),
                                   self.config.processors, list(self.config.tags)))

    def _learn_task_time(self, seconds: float) -> None:
        mean = seconds if self._mean_task_seconds is None else 0.7 * self._mean_task_seconds + 0.3 * seconds
        self._mean_task_seconds = mean
        self._depth = max(1, min(_MAX_PROCESSOR_DEPTH, math.ceil(_PROCESSOR_QUEUE_SECONDS / max(mean, 1e-6))))

    # -- processors ----------------------------------------------------------

    def _spawn_processor(self) -> None:
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
        proc = _Processor(process, Channel(from_child_r, to_child_w), os.pidfd_open(process.pid), stats,
                          time.monotonic())
        self._procs.append(proc)
        for fd in (proc.pidfd, proc.channel.read_fd):
            self._by_fd[fd] = proc
            self._poller.register(fd, zmq.POLLIN)

    def _on_processor_exit(self, proc: _Processor) -> None:
        if proc not in self._procs:
            return
        self._procs.remove(proc)
        for fd in (proc.pidfd, proc.channel.read_fd):
            if self._by_fd.pop(fd, None) is not None:
                self._poller.unregister(fd)
        if proc.channel.write_fd in self._writing:
            self._writing.discard(proc.channel.write_fd)
            del self._by_fd[proc.channel.write_fd]
            self._poller.unregister(proc.channel.write_fd)
        os.close(proc.pidfd)
        proc.channel.close()
        code = proc.process.wait()
        unstarted = list(proc.outstanding.values())
        for spec in unstarted:
            self._blocked.discard(spec.task_id)
        if not proc.ready and not proc.killed:  # it died starting, before any task: blame none
            self._start_failures += 1
            if self._start_failures >= _MAX_START_FAILURES:
                logger.error("%d processors in a row died at start (last: exit code %s); worker %s stops: "
                             "see the processors' errors above", self._start_failures, code, self.name)
                self._running = False
        elif unstarted and not proc.killed:
            crashed = unstarted.pop(0)
            reason = f"signal {-code}" if code < 0 else f"exit code {code}"
            logger.warning("processor %d died (%s) running task %d", proc.process.pid, reason, crashed.task_id)
            self._results.append(TaskResult(crashed.task_id, Status.CRASHED, None,
                                            f"the task killed its processor (pid {proc.process.pid}, {reason})", []))
        cancelled = [spec for spec in unstarted if spec.task_id in self._cancelling]
        for spec in cancelled:
            self._cancelling.discard(spec.task_id)
            self._results.append(TaskResult(spec.task_id, Status.CANCELLED, None, "cancelled", []))
        self._queue.push_back(spec for spec in unstarted if spec not in cancelled)
        if self._running and not proc.retiring:
            self._spawn_processor()

    def _resize_pool(self) -> None:
        """Run one more processor per running task that waits for its own children, and no more."""
        active = [p for p in self._procs if not p.retiring]
        target = self.config.processors + len(self._blocked)
        if len(active) < target:
            self._spawn_processor()
        elif len(active) > target:
            idle = next((p for p in active if not p.outstanding), None)
            if idle is not None:
                idle.retiring = True
                self._send_to(idle, Shutdown("pool shrinks"))

    def _dispatch(self) -> None:
        """Hand waiting tasks to processors with room, an even share each; never to a processor whose
        task waits on its children, which would queue them behind their own parent."""
        if not self._queue:
            return
        ready = [p for p in self._procs if not p.retiring and len(p.outstanding) < self._depth
                 and not any(t in self._blocked for t in p.outstanding)]
        for i, proc in enumerate(ready):
            share = math.ceil(len(self._queue) / (len(ready) - i))
            tasks, objects = [], []
            while self._queue and len(tasks) < min(self._depth - len(proc.outstanding), share):
                spec = self._queue.pop()
                missing = [o for o in needed_objects(spec) if o not in self._objects]
                if missing:  # the scheduler freed it: the task cannot run here
                    self._results.append(TaskResult(spec.task_id, Status.SERIALIZATION, None,
                                                    f"object {missing[0].hex()} is no longer held", []))
                    continue
                tasks.append(spec)
                proc.outstanding[spec.task_id] = spec
                for object_id in needed_objects(spec):
                    if object_id not in proc.objects:
                        proc.objects.add(object_id)
                        objects.append(ObjectSpec(object_id, self._objects[object_id]))
            if tasks:
                self._send_to(proc, Assign(objects, tasks))

    def _heartbeat(self) -> Heartbeat:
        cpu, memory = 0.0, 0
        for stats in [self._stats, *(p.stats for p in self._procs if p.stats is not None)]:
            try:
                cpu += stats.cpu_percent(None)
                memory += stats.memory_info().rss
            except psutil.Error:
                pass
        running = sum(1 for p in self._procs if p.outstanding)
        queued = len(self._queue) + sum(len(p.outstanding) for p in self._procs) - running
        return Heartbeat(cpu, memory, queued, running)

    def _shutdown(self) -> None:
        try:
            self._send(WorkerBye())
        except zmq.ZMQError:
            pass
        for proc in self._procs:
            proc.process.kill()
        for proc in self._procs:
            proc.process.wait()
            os.close(proc.pidfd)
            proc.channel.close()
        self._handshakes.close()
        # the bye must reach the scheduler (else it sees a dropped connection, a warning), but not hang an exit
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
