"""A worker agent's rules: a state machine fed decoded messages, processor exits and clock ticks.

Nothing here touches a socket, a pipe or a process (``agent.py`` is the loop around it,
which only reads, decodes, calls, encodes and writes). Processors are known by a number
the state gives them. Every handler records what to do; ``flush()`` then grows or shrinks
the pool, hands waiting tasks to processors and returns :class:`Actions`: the messages for
the scheduler (at most one ``Output`` and one ``Results`` per turn, however many tasks
ended), the messages for each processor (at most one ``DeleteObjects``, ``Cancel`` and
``Assign`` each per turn), and the processors to start and to kill.

State:

- ``queue``: tasks the scheduler sent that no processor holds yet (:class:`WaitingTasks`).
- ``processors``: number -> :class:`ProcessorInfo`: the tasks it holds (``outstanding``,
  in the order it runs them, so the first is the running one), the objects it holds, and
  whether it is ready (its imports done), retiring or killed on purpose.
- ``objects``: the payloads (functions, data) the scheduler sent, until it deletes them.
- ``blocked``: running tasks that wait on their own children.
- ``cancelling``: cancels forwarded to a processor for tasks it had not started, not yet answered.
- ``depth``: tasks a processor may hold, learned from task times (``queue_depth.py``).
- ``lent``: inode -> processor, the shared-memory segments of results a processor holds until the
  scheduler has taken them (``protocol/shared_memory.py``).

Rules:

- Queue order: children of running tasks first (their parents wait on them), then higher
  priority, then arrival; tasks put back from a dead processor go before others of their rank.
- Dispatch: a processor holds its running task and about ``PROCESSOR_QUEUE_SECONDS`` of
  work behind it (at least one task), by the rule the scheduler uses per worker; waiting
  tasks are shared evenly among processors with room. None go to a processor whose task
  waits on its children (they would queue behind their own parent), nor to one retiring or
  killed. A task whose object the scheduler has freed fails with ``SERIALIZATION``.
- Blocked parents: one more processor runs per running task that waits on its children, and
  no more: once the parent ends, an idle processor retires.
- Cancel: a queued task is cancelled at once; one a processor holds but has not started is
  cancelled by that processor; a running one by killing its processor.
- Take-back: the scheduler gets back exactly the tasks no processor holds yet.
- Crashes: a processor that exits is replaced. The task it was running is reported
  ``CRASHED`` (the scheduler counts crashes and decides on retries); its unstarted tasks go
  back to the queue. A processor killed on purpose crashes nothing; one that dies before it
  is ready blames no task, and ``MAX_START_FAILURES`` such deaths in a row stop the worker.
- Joining: hello once every processor is ready (or ``READY_TIMEOUT`` after the start), so
  the first tasks do not wait for Python to start; heartbeats only once welcomed. A
  ``Rejected`` before the welcome (another protocol version) stops the worker; after it,
  the scheduler forgot us and gave our tasks to others, so the queue is dropped and the
  worker joins again.
- Shared memory: processors send large result parts as segments. When the scheduler shares this
  host, they go on as they are, and the scheduler's ``ReleaseSegments`` goes on to the processor
  that holds them; else the agent maps them into bytes for the scheduler and the processor lets
  go at once.
- Liveness: a heartbeat every ``heartbeat`` seconds; the worker stops when the scheduler has
  been silent for ``death_timeout``.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import math
from collections.abc import Iterable

from scaler_jupyter import queue_depth
from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    Assign,
    Cancel,
    DeleteObjects,
    Heartbeat,
    ObjectSpec,
    Output,
    OutputLine,
    Payload,
    Rejected,
    ReleaseSegments,
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
    needed_objects,
    shared_memory,
)

logger = logging.getLogger(__name__)

PROCESSOR_QUEUE_SECONDS = 0.005  # work, by measured task time, handed to a processor ahead of time
MAX_PROCESSOR_DEPTH = 128
READY_TIMEOUT = 30.0  # join the scheduler after this long even if a processor is slow to start
MAX_START_FAILURES = 3  # processors in a row that die before answering: the worker cannot run tasks


@dataclasses.dataclass(slots=True)
class AgentConfig:
    """Every setting of a worker; the command line fills it."""

    processors: int = 1
    tags: tuple[str, ...] = ()
    heartbeat: float = 1.0
    death_timeout: float = 30.0  # exit when the scheduler has been silent this long
    name: str = ""
    keys: str | None = None  # the cluster's keys directory (`scaler-jupyter keys`), if it requires keys


@dataclasses.dataclass(slots=True, eq=False)
class ProcessorInfo:
    """One processor as the rules see it; its process and pipes belong to the loop."""

    ready: bool = False  # it said so once its imports were done
    retiring: bool = False
    killed: bool = False  # killed on purpose (a cancel), so its death is no crash
    outstanding: dict[int, TaskSpec] = dataclasses.field(default_factory=dict)  # in the order it runs them
    objects: set[bytes] = dataclasses.field(default_factory=set)
    lent: set[int] = dataclasses.field(default_factory=set)  # segments of its results the scheduler has not taken


@dataclasses.dataclass(slots=True)
class Actions:
    """What the loop does after a turn, in this order: start processors (the messages may be for them),
    write to processors, kill processors, write to the scheduler. Every processor named is one the state
    holds: started, or to be started in this turn, and not yet reported exited."""

    start: list[int] = dataclasses.field(default_factory=list)
    to_processors: list[tuple[int, object]] = dataclasses.field(default_factory=list)
    kill: list[int] = dataclasses.field(default_factory=list)
    to_scheduler: list = dataclasses.field(default_factory=list)


class WaitingTasks:
    """Tasks the agent holds for its processors, best first: children of running tasks, then
    higher priority, then arrival. Tasks put back go before others of their rank."""

    def __init__(self) -> None:
        self._heap: list[tuple] = []
        self._later = itertools.count()
        self._sooner = itertools.count(-1, -1)

    def __len__(self) -> int:
        return len(self._heap)

    @staticmethod
    def _rank(spec: TaskSpec) -> tuple[int, int]:
        return (0 if spec.parent_id is not None else 1, -spec.priority)

    def push(self, specs: Iterable[TaskSpec]) -> None:
        for spec in specs:
            heapq.heappush(self._heap, (self._rank(spec), next(self._later), spec))

    def push_back(self, specs: Iterable[TaskSpec]) -> None:
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


class AgentState:
    """A worker agent without its sockets, pipes and processes: ``on_*`` methods in, ``flush()`` out."""

    def __init__(self, config: AgentConfig, address: str, name: str, host: str, pid: int, now: float) -> None:
        self.config = config
        self.address = address  # the scheduler's, for what the log says
        self.name, self.host, self.pid = name, host, pid
        self.host_id = shared_memory.host_id()
        self.shares_host = False  # with the scheduler: known from its welcome
        self.lent: dict[int, int] = {}
        self.queue = WaitingTasks()
        self.processors: dict[int, ProcessorInfo] = {}
        self.objects: dict[bytes, Payload] = {}
        self.blocked: set[int] = set()
        self.cancelling: set[int] = set()
        self.mean_task_seconds: float | None = None
        self.depth = 1  # one until measured
        self.welcomed = False
        self.running = True
        self.exit_code = 0  # 1 when it stops because it cannot join the scheduler
        self.next_tick = now  # when on_tick is due: a heartbeat at once, then every config.heartbeat
        self._started = now
        self._last_heard = now
        self._hello_sent = False
        self._said_bye = False
        self._start_failures = 0
        self._numbers = itertools.count()
        self._actions = Actions()
        self._cancels: dict[int, list[int]] = {}  # by processor: coalesced into one Cancel per turn
        self._deletes: dict[int, list[bytes]] = {}  # likewise, one DeleteObjects
        self._releases: dict[int, list[int]] = {}  # likewise, one ReleaseSegments
        self._output: list[OutputLine] = []
        self._results: list[TaskResult] = []
        for _ in range(config.processors):
            self._add_processor()

    # -- the entry points ----------------------------------------------------

    def on_scheduler_message(self, message, now: float) -> None:
        """Apply one decoded message from the scheduler."""
        self._last_heard = now
        handler = self._SCHEDULER_HANDLERS.get(type(message))
        if handler is None:
            logger.warning("dropping %s from the scheduler: not a message a worker takes", type(message).__name__)
            return
        handler(self, message, now)

    def on_processor_message(self, number: int, message, now: float) -> None:
        """Apply one decoded message from processor ``number``."""
        proc = self.processors.get(number)
        if proc is None:  # it exited already: what it said was applied before its exit
            return
        handler = self._PROCESSOR_HANDLERS.get(type(message))
        if handler is None:
            logger.warning("dropping %s from processor %d: not a message a processor sends",
                           type(message).__name__, number)
            return
        handler(self, proc, message, now)

    def on_processor_exit(self, number: int, pid: int, code: int, now: float) -> None:
        """Processor ``number`` (process ``pid``) exited with ``code`` (negative: killed by that signal)."""
        proc = self.processors.pop(number, None)
        if proc is None:
            return
        actions = self._actions  # what this turn meant for it has nobody to go to
        actions.to_processors = [(n, m) for n, m in actions.to_processors if n != number]
        self._cancels.pop(number, None)
        self._deletes.pop(number, None)
        self._releases.pop(number, None)
        for inode in proc.lent:  # gone with it: the scheduler, if it had not taken them, runs their tasks again
            self.lent.pop(inode, None)
        actions.kill = [n for n in actions.kill if n != number]
        unstarted = list(proc.outstanding.values())
        for spec in unstarted:
            self.blocked.discard(spec.task_id)
        if not proc.ready and not proc.killed:  # it died starting, before any task: blame none
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                logger.error("%d processors in a row died at start (last: exit code %s); worker %s stops: "
                             "see the processors' errors above", self._start_failures, code, self.name)
                self.running = False
        elif unstarted and not proc.killed:
            crashed = unstarted.pop(0)
            reason = f"signal {-code}" if code < 0 else f"exit code {code}"
            logger.warning("processor %d died (%s) running task %d", pid, reason, crashed.task_id)
            self._results.append(TaskResult(crashed.task_id, Status.CRASHED, None,
                                            f"the task killed its processor (pid {pid}, {reason})", []))
        cancelled = [spec for spec in unstarted if spec.task_id in self.cancelling]
        for spec in cancelled:
            self.cancelling.discard(spec.task_id)
            self._cancelled(spec.task_id)
        self.queue.push_back(spec for spec in unstarted if spec not in cancelled)
        if self.running and not proc.retiring:
            self._add_processor()

    def on_tick(self, now: float, cpu: float, memory: int) -> None:
        """Heartbeat (``cpu`` percent and ``memory`` bytes of the agent and its processors, as measured by
        the loop); join when processors are slow to start; stop if the scheduler has fallen silent.
        Due at ``next_tick``."""
        self._say_hello_when_ready(now)
        if self.welcomed:  # before that, the scheduler does not know us
            running = sum(1 for p in self.processors.values() if p.outstanding)
            queued = len(self.queue) + sum(len(p.outstanding) for p in self.processors.values()) - running
            self._actions.to_scheduler.append(Heartbeat(cpu, memory, queued, running))
        self.next_tick = now + self.config.heartbeat
        if now - self._last_heard > self.config.death_timeout:
            logger.error("scheduler silent for %.0fs: worker %s exits", now - self._last_heard, self.name)
            self.running = False

    def on_scheduler_gone(self, reason: str) -> None:
        """The local link to the scheduler ended (or never began): nobody will send us tasks; stop."""
        if self.running:
            logger.warning("worker %s leaves: the scheduler at %s is gone (%s)", self.name, self.address, reason)
            self.running = False
            self.exit_code = 0 if self.welcomed else 1

    def on_handshake_failure(self, failure: str, definite: bool) -> None:
        """The security handshake failed; ``definite`` when every retry must fail alike (a refused key,
        keys on one side only): say so and stop."""
        if definite:
            logger.error("worker %s cannot join the scheduler at %s: %s", self.name, self.address, failure)
            self.running = False
            self.exit_code = 1
        else:
            logger.warning("worker %s: %s", self.name, failure)

    def stop(self) -> None:
        """Stop: the next flush says goodbye to the scheduler and starts nothing more."""
        self.running = False

    def flush(self) -> Actions:
        """Resize the pool and hand out waiting tasks; return everything to do, batched."""
        if self.running:
            self._resize_pool()
            self._dispatch()
        actions, self._actions = self._actions, Actions()
        actions.to_processors[:0] = [*((n, DeleteObjects(ids)) for n, ids in self._deletes.items()),
                                     *((n, Cancel(ids)) for n, ids in self._cancels.items()),
                                     *((n, ReleaseSegments(ids)) for n, ids in self._releases.items())]
        self._deletes, self._cancels, self._releases = {}, {}, {}
        if self._output:
            actions.to_scheduler.append(Output(self._output))
            self._output = []
        if self._results:
            actions.to_scheduler.append(Results(self._results))
            self._results = []
        if not self.running and not self._said_bye:
            self._said_bye = True
            actions.to_scheduler.append(WorkerBye())
        return actions

    # -- from the scheduler --------------------------------------------------

    def _on_assign(self, msg: Assign, now: float) -> None:
        for obj in msg.objects:
            self.objects[obj.object_id] = obj.payload
        self.queue.push(msg.tasks)

    def _on_cancel(self, msg: Cancel, now: float) -> None:
        task_ids = set(msg.task_ids)
        for spec in self.queue.remove(task_ids):
            self._cancelled(spec.task_id)
        for number, proc in self.processors.items():
            asked = [t for t in proc.outstanding if t in task_ids]
            if not asked:
                continue
            if next(iter(proc.outstanding)) in asked:  # it is running: stopping it means stopping its process
                for task_id in asked:
                    del proc.outstanding[task_id]
                    self.blocked.discard(task_id)
                    self._cancelled(task_id)
                if not proc.killed:
                    proc.killed = True
                    self._actions.kill.append(number)
            else:
                self.cancelling.update(asked)
                self._cancels.setdefault(number, []).extend(asked)

    def _on_delete_objects(self, msg: DeleteObjects, now: float) -> None:
        for object_id in msg.object_ids:
            self.objects.pop(object_id, None)
        for number, proc in self.processors.items():
            held = [o for o in msg.object_ids if o in proc.objects]
            if held:
                proc.objects.difference_update(held)
                self._deletes.setdefault(number, []).extend(held)

    def _on_release_segments(self, msg: ReleaseSegments, now: float) -> None:
        """The scheduler took these result segments: the processors that hold them may let go."""
        for inode in msg.inodes:
            number = self.lent.pop(inode, None)
            if number is not None:
                self.processors[number].lent.discard(inode)
                self._releases.setdefault(number, []).append(inode)

    def _on_task_blocked(self, msg: TaskBlocked, now: float) -> None:
        if any(msg.task_id in p.outstanding for p in self.processors.values()):
            self.blocked.add(msg.task_id)

    def _on_shutdown(self, msg: Shutdown, now: float) -> None:
        logger.info("scheduler asked worker %s to stop: %s", self.name, msg.reason)
        self.running = False

    def _on_take_back(self, msg: TakeBack, now: float) -> None:
        returned = self.queue.remove(set(msg.task_ids))  # only tasks no processor has
        self._actions.to_scheduler.append(TakenBack([spec.task_id for spec in returned]))

    def _on_rejected(self, msg: Rejected, now: float) -> None:
        if not self.welcomed:  # refused at hello (another protocol version): nothing to retry
            logger.error("scheduler rejected worker %s: %s", self.name, msg.reason)
            self.running = False
            return
        # The scheduler lost track of us and gave our tasks to others: drop them and join again.
        logger.warning("scheduler forgot worker %s (%s): joining again", self.name, msg.reason)
        self.queue = WaitingTasks()
        self.welcomed = self._hello_sent = False
        self._say_hello_when_ready(now)

    def _on_welcome(self, msg: WorkerWelcome, now: float) -> None:
        self.welcomed = True
        self.shares_host = bool(self.host_id) and msg.host_id == self.host_id

    def _on_scheduler_heartbeat(self, msg: Heartbeat, now: float) -> None:
        pass  # hearing it is the point: the scheduler lives

    # -- from the processors -------------------------------------------------

    def _on_results(self, proc: ProcessorInfo, msg: Results, now: float) -> None:
        walls = []
        for result in msg.results:
            self._pass_segments(proc, result)
            self.cancelling.discard(result.task_id)
            if proc.outstanding.pop(result.task_id, None) is not None:
                self._results.append(result)
                self.blocked.discard(result.task_id)
                if result.profile:
                    walls.append(result.profile[0])
        if walls:
            self.mean_task_seconds, self.depth = queue_depth.learn(
                self.mean_task_seconds, sum(walls) / len(walls), PROCESSOR_QUEUE_SECONDS, 1, MAX_PROCESSOR_DEPTH)

    def _pass_segments(self, proc: ProcessorInfo, result: TaskResult) -> None:
        """A result's segments go to the scheduler as they are, held by ``proc`` until it takes them; or, for a
        scheduler on another host, as bytes mapped here, and ``proc`` lets go now."""
        inodes = shared_memory.inodes(result.payload)
        if not inodes:
            return
        number = next(n for n, p in self.processors.items() if p is proc)
        if self.shares_host:
            proc.lent.update(inodes)
            self.lent.update(dict.fromkeys(inodes, number))
        else:
            result.payload = shared_memory.materialize(result.payload)[0]
            self._releases.setdefault(number, []).extend(inodes)

    def _on_output(self, proc: ProcessorInfo, msg: Output, now: float) -> None:
        self._output.extend(msg.lines)

    def _on_ready(self, proc: ProcessorInfo, msg: Heartbeat, now: float) -> None:
        proc.ready = True
        self._start_failures = 0
        self._say_hello_when_ready(now)

    # -- processors ----------------------------------------------------------

    def _add_processor(self) -> None:
        number = next(self._numbers)
        self.processors[number] = ProcessorInfo()
        self._actions.start.append(number)

    def _say_hello_when_ready(self, now: float) -> None:
        """Join the scheduler once every processor can run tasks, so the first tasks do not wait
        for Python to start."""
        if not self._hello_sent and (all(p.ready for p in self.processors.values())
                                     or now - self._started > READY_TIMEOUT):
            self._hello_sent = True
            self._actions.to_scheduler.append(WorkerHello(PROTOCOL_VERSION, self.name, self.host, self.pid,
                                                          self.config.processors, list(self.config.tags),
                                                          self.host_id))

    def _resize_pool(self) -> None:
        """Run one more processor per running task that waits for its own children, and no more."""
        active = [(n, p) for n, p in self.processors.items() if not p.retiring]
        target = self.config.processors + len(self.blocked)
        if len(active) < target:
            self._add_processor()
        elif len(active) > target:
            idle = next(((n, p) for n, p in active if not p.outstanding), None)
            if idle is not None:
                number, proc = idle
                proc.retiring = True
                self._actions.to_processors.append((number, Shutdown("pool shrinks")))

    def _dispatch(self) -> None:
        """Hand waiting tasks to processors with room, an even share each; never to a processor whose
        task waits on its children, which would queue them behind their own parent."""
        if not self.queue:
            return
        ready = [(n, p) for n, p in self.processors.items()
                 if not p.retiring and not p.killed and len(p.outstanding) < self.depth
                 and not any(t in self.blocked for t in p.outstanding)]
        for i, (number, proc) in enumerate(ready):
            room = min(self.depth - len(proc.outstanding), math.ceil(len(self.queue) / (len(ready) - i)))
            tasks, objects = [], []
            while self.queue and len(tasks) < room:
                spec = self.queue.pop()
                needed = needed_objects(spec)
                missing = [o for o in needed if o not in self.objects]
                if missing:  # the scheduler freed it: the task cannot run here
                    self._results.append(TaskResult(spec.task_id, Status.SERIALIZATION, None,
                                                    f"object {missing[0].hex()} is no longer held", []))
                    continue
                tasks.append(spec)
                proc.outstanding[spec.task_id] = spec
                for object_id in needed:
                    if object_id not in proc.objects:
                        proc.objects.add(object_id)
                        objects.append(ObjectSpec(object_id, self.objects[object_id]))
            if tasks:
                self._actions.to_processors.append((number, Assign(objects, tasks)))

    def _cancelled(self, task_id: int) -> None:
        self._results.append(TaskResult(task_id, Status.CANCELLED, None, "cancelled", []))

    _SCHEDULER_HANDLERS = {
        Assign: _on_assign,
        Cancel: _on_cancel,
        DeleteObjects: _on_delete_objects,
        TaskBlocked: _on_task_blocked,
        ReleaseSegments: _on_release_segments,
        Shutdown: _on_shutdown,
        TakeBack: _on_take_back,
        Rejected: _on_rejected,
        WorkerWelcome: _on_welcome,
        Heartbeat: _on_scheduler_heartbeat,
    }

    _PROCESSOR_HANDLERS = {
        Results: _on_results,
        Output: _on_output,
        Heartbeat: _on_ready,  # a processor's first message: its imports are done
    }
