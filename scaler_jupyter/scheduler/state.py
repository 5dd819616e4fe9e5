"""The scheduler's rules: a state machine fed decoded messages and clock ticks.

Nothing here touches a socket (see ``server.py`` for the loop around it). Every
handler records what to send in the outbox; ``flush()`` then assigns waiting
tasks to workers and returns the messages, coalesced so that each peer gets at
most one ``Assign`` or ``Results`` per turn of the loop, however many tasks moved.

State:

- ``clients``: identity -> :class:`ClientInfo`, each with the ids of its live tasks.
- ``workers``: identity -> :class:`WorkerInfo`, each with the tasks in its queue
  (sent, not yet finished), the objects it holds, its tags and its capacity.
- ``tasks``: task id -> :class:`Task`, every task not yet finished.
- ``pending``: the ids of tasks waiting for a worker (:class:`PendingQueue`).
- ``objects``: payloads of functions, serializers and ``send_object`` data, each
  owned by the clients that sent it, and graph tasks' results, each held by the
  tasks that need it (:class:`ObjectStore`).
- ``graphs``: (client, graph id) -> :class:`Graph`, the dependencies of every
  running graph (``graphs.py``); ``finished_graphs``: the last few that ended.
- ``segments``: the shared-memory segments the scheduler holds (``protocol/shared_memory.py``), a hold
  per payload that names one: a task's arguments until the task leaves ``tasks``, a stored object until
  it is collected, a result from when a worker's ``Results`` arrive until its client says it mapped it
  (``ClientInfo.lent``). Every segment a peer sends is taken (opened) on receipt, and the peer told at
  the next flush that it may let go (``ReleaseSegments``); a worker's result whose segment is already
  gone (its processor died) runs again. Peers on another host get bytes instead of segments.
- ``recent_tasks``: the last ``RECENT_TASKS`` tasks workers finished (:class:`FinishedTask`), for the
  monitor's task stream.
- ``unmatched``: tags -> :class:`Unmatched`, the tag sets pending tasks need and
  no connected worker offers (with no worker at all, every tag set, the empty one
  too). Checked each tick: past ``no_worker_grace`` seconds the tasks' clients get
  a ``TaskWarning`` (and the snapshot lists them); past ``no_worker_timeout`` the
  tasks fail with ``NO_WORKER``, instead of waiting silently for a worker that may
  never come.

A task is ``WAITING`` (a graph task whose dependencies are not all done),
``PENDING`` (in ``pending``) or ``ASSIGNED`` (in one worker's queue), and leaves
``tasks`` when its result is delivered or it is cancelled.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
import logging
import math
import re
from typing import NamedTuple

from scaler_jupyter import queue_depth
from scaler_jupyter.errors import SegmentLostError
from scaler_jupyter.protocol import (
    CONTENT_ID_BYTES,
    PROTOCOL_VERSION,
    TASK_ID_BITS,
    Assign,
    Cancel,
    ClientBye,
    ClientHello,
    ClientWelcome,
    DeleteObjects,
    Heartbeat,
    ObjectSpec,
    Output,
    Payload,
    PutObjects,
    Rejected,
    ReleaseSegments,
    Results,
    Segment,
    Shutdown,
    Status,
    StatusReply,
    StatusRequest,
    Submit,
    SubmitGraph,
    TakeBack,
    TakenBack,
    TaskBlocked,
    TaskResult,
    TaskSpec,
    TaskWarning,
    WorkerBye,
    WorkerHello,
    WorkerWelcome,
    needed_objects,
    result_object_id,
    shared_memory,
)
from scaler_jupyter.protocol.graph_states import GraphState, NodeState
from scaler_jupyter.scheduler import graphs
from scaler_jupyter.scheduler.graphs import Graph
from scaler_jupyter.scheduler.monitor import Monitor, build_snapshot
from scaler_jupyter.scheduler.object_store import ObjectStore
from scaler_jupyter.scheduler.pending import PendingQueue

logger = logging.getLogger(__name__)

_NO_TAGS: frozenset = frozenset()


class TaskState(enum.Enum):
    WAITING = "waiting"
    PENDING = "pending"
    ASSIGNED = "assigned"


@dataclasses.dataclass(slots=True)
class SchedulerConfig:
    """Every setting of the scheduler; the command line fills it."""

    worker_timeout: float = 10.0
    client_timeout: float = 30.0
    balance_interval: float = 0.5  # seconds between moves of queued tasks from busy workers to idle ones; 0: never
    max_retries: int = 3
    max_waiting: int = 1_000_000
    no_worker_grace: float = 5.0  # seconds tasks may wait for tags no connected worker offers before it is said
    no_worker_timeout: float = 0.0  # seconds after which such tasks fail with NoWorkerError; 0: they wait on
    heartbeat_interval: float = 1.0
    queue_seconds: float = 0.05  # how much work, by measured task time, a worker may hold per processor
    max_depth: int = 256  # most tasks per processor in a worker's queue
    queue_bytes: int = 32 * 1024 * 1024  # most argument bytes queued per processor: big arguments spread out
    monitor_address: str | None = None  # where the feed is published; None: the scheduler's port + 1
    local_address: str | None = None  # a unix:// path in a private directory, also listened on, for this host
    monitor_interval: float = 0.5  # seconds between snapshots on the feed
    keys: str | None = None  # a directory written by `scaler-jupyter keys`: only peers holding its keys get in
    protected: bool = False  # refuse Shutdown from clients: the cluster stops only where it runs


@dataclasses.dataclass(slots=True)
class Task:
    spec: TaskSpec
    client: bytes
    tags: frozenset
    nbytes: int
    state: TaskState = TaskState.PENDING
    worker: bytes | None = None
    crashes: int = 0
    cancelled: bool = False
    order: int | None = None  # its place among equals in the pending queue, kept when it comes back
    graph: Graph | None = None
    needed: tuple[bytes, ...] = ()  # needed_objects(spec): held while it lives, sent with it (shared, see _Shared)


class FinishedTask(NamedTuple):
    """A task a worker finished, for the monitor's task stream; times are the state's clock.

    A tuple of what the result handler has at hand (a frozen dataclass cost a microsecond a task to build);
    the names the stream shows are worked out when a snapshot reads them."""

    task_id: int
    worker: int  # the worker's number
    function: str  # the function's name ("" for a graph task: see ``name``)
    key: str | None  # a graph task's key
    origin: str | None  # what submitted it (a notebook cell), if known
    start: float
    end: float
    code: int  # its Status

    @property
    def name(self) -> str:
        """The function's name, or what a graph task's key says it runs."""
        return self.function or _key_name(self.key)

    @property
    def status(self) -> str:
        return _STATUS_NAMES.get(self.code, "unknown")


RECENT_TASKS = 256  # finished tasks kept for the monitor's task stream (bounded: a snapshot stays small)


@dataclasses.dataclass(slots=True)
class Unmatched:
    """Waiting tasks that need a tag set no connected worker offers: since when, and whether it was said."""

    since: float
    warned: bool = False


@dataclasses.dataclass(slots=True)
class ClientInfo:
    number: int
    name: str
    host: str
    pid: int
    store_tasks: bool
    last_seen: float
    tasks: set[int] = dataclasses.field(default_factory=set)
    objects: set[bytes] = dataclasses.field(default_factory=set)
    submitted: int = 0
    done: int = 0
    origins: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # live tasks by origin
    host_id: str = ""
    lent: set[int] = dataclasses.field(default_factory=set)  # segments of results sent, until it mapped them


@dataclasses.dataclass(slots=True)
class WorkerInfo:
    number: int
    name: str
    host: str
    pid: int
    processors: int
    tags: frozenset
    last_seen: float
    queue: dict[int, Task] = dataclasses.field(default_factory=dict)
    queued_bytes: int = 0
    objects: set[bytes] = dataclasses.field(default_factory=set)
    blocked: set[int] = dataclasses.field(default_factory=set)  # running parents waiting on children
    asked_back: set[int] = dataclasses.field(default_factory=set)  # TakeBack sent, answer awaited
    mean_task_seconds: float | None = None
    cpu: float = 0.0
    memory: int = 0
    running: int = 0
    done: int = 0
    host_id: str = ""

    depth: int = 4  # tasks per processor the worker may hold, learned from task times

    @property
    def capacity(self) -> int:
        """How many tasks the worker may hold: enough to keep its processors busy, and no more."""
        return self.processors * self.depth + len(self.blocked)


class SchedulerState:
    """The scheduler without its sockets: ``on_*`` methods in, ``flush()`` out."""

    def __init__(self, config: SchedulerConfig | None = None, *, now: float, monitor: Monitor | None = None) -> None:
        """A scheduler started at monotonic time ``now``; ``monitor`` supplies what snapshots read beyond the
        state (by default nothing of the machine: see ``monitor.py``)."""
        self.config = config or SchedulerConfig()
        self.clients: dict[bytes, ClientInfo] = {}
        self.workers: dict[bytes, WorkerInfo] = {}
        self.tasks: dict[int, Task] = {}
        self.pending = PendingQueue()
        self.segments = shared_memory.SegmentHolder()
        self.host_id = shared_memory.host_id()
        self.objects = ObjectStore(on_collect=self.segments.drop)
        self.graphs: dict[tuple[bytes, int], Graph] = {}
        self.finished_graphs: collections.deque[Graph] = collections.deque(maxlen=graphs.FINISHED_KEPT)
        self.unmatched: dict[frozenset, Unmatched] = {}
        self.started = now
        self.monitor = monitor or Monitor(now)
        self.workers_joined = 0  # workers that ever joined; the newest one's number
        self._client_numbers = itertools.count()  # a client's task ids start at its number << TASK_ID_BITS
        self._outbox: list[tuple[bytes, object]] = []
        self._results: dict[bytes, list[TaskResult]] = {}
        self._assigned: dict[bytes, list[Task]] = {}
        self._deleted: dict[bytes, list[bytes]] = {}  # objects workers may drop, coalesced per worker
        self._released: dict[bytes, list[int]] = {}  # segments a peer sent that are taken, coalesced per peer
        self.finished = 0  # tasks ended since the start: succeeded, failed, crashed or cancelled
        self.recent_tasks: collections.deque[FinishedTask] = collections.deque(maxlen=RECENT_TASKS)
        self._next_balance = self.started
        self._someone_idle = False  # a worker ran out of work since the last flush: balance then, not a tick later
        self.stopping = False  # a client shut the cluster down: the loop sends what is flushed, then stops

    # -- the entry points ----------------------------------------------------

    def on_message(self, peer: bytes, message, now: float) -> None:
        """Apply one decoded message from ``peer``."""
        handler = self._HANDLERS.get(type(message))
        if handler is None:
            logger.warning("dropping %s from %r: not a message the scheduler takes", type(message).__name__, peer)
            return
        if peer in self.clients:
            self.clients[peer].last_seen = now
        elif peer in self.workers:
            self.workers[peer].last_seen = now
        handler(self, peer, message, now)

    def on_tick(self, now: float) -> None:
        """Declare silent peers dead; move queued tasks from busy workers to idle ones; say which tasks no
        worker can run."""
        self._check_unmatched(now)
        if now >= self._next_balance:
            self._next_balance = now + max(self.config.balance_interval, 0.1)
            self._balance()
        for identity, worker in list(self.workers.items()):
            if now - worker.last_seen > self.config.worker_timeout:
                logger.warning("worker %s silent for %.1fs: declared dead", worker.name, now - worker.last_seen)
                self._remove_worker(identity)
        for identity, client in list(self.clients.items()):
            if now - client.last_seen > self.config.client_timeout:
                logger.warning("client %s silent for %.1fs: disconnected", client.name, now - client.last_seen)
                self._remove_client(identity)

    def on_disconnect(self, peer: bytes) -> None:
        """A peer's connection dropped: a worker is dead at once, a client gone."""
        if peer in self.workers:
            logger.warning("worker %s disconnected", self.workers[peer].name)
            self._remove_worker(peer)
        elif peer in self.clients:
            self._remove_client(peer)

    def flush(self) -> list[tuple[bytes, object]]:
        """Assign what can be assigned; return every message to send, coalesced by peer."""
        self._schedule()
        if self._someone_idle:
            self._someone_idle = False
            self._balance()
        out = self._outbox
        for identity, inodes in self._released.items():
            out.append((identity, ReleaseSegments(inodes)))
        for identity, object_ids in self._deleted.items():
            out.append((identity, DeleteObjects(object_ids)))
        for identity, tasks in self._assigned.items():
            worker = self.workers[identity]
            objects = []
            last = None
            for task in tasks:
                if task.needed is last:  # the tasks of one map share the tuple: its objects are on their way
                    continue
                last = task.needed
                for object_id in last:
                    if object_id not in worker.objects:
                        worker.objects.add(object_id)
                        objects.append(ObjectSpec(object_id, self.objects.get(object_id)))
            specs = [task.spec for task in tasks]
            if self.segments and not self._shares_host(worker.host_id):
                objects, specs = _materialized(objects, specs)
            out.append((identity, Assign(objects, specs)))
        for identity, results in self._results.items():
            out.append((identity, Results(self._lend(identity, results))))
        self._outbox, self._results, self._assigned, self._deleted, self._released = [], {}, {}, {}, {}
        return out

    # -- shared memory -------------------------------------------------------

    def _shares_host(self, host_id: str) -> bool:
        return bool(self.host_id) and host_id == self.host_id

    def _note_sent(self, peer: bytes, payloads) -> None:
        """``peer`` sent these payloads: whatever segments they name, it may let go after this turn (those the
        scheduler keeps it has taken by then, the others it does not want)."""
        for payload in payloads:
            if payload is not None:
                inodes = shared_memory.inodes(payload)
                if inodes:
                    self._released.setdefault(peer, []).extend(inodes)

    def _take(self, payload: Payload, host_id: str, may_hand) -> Payload:
        """The scheduler's own hold on ``payload``'s segments; raise SegmentLostError if it cannot have them."""
        if not shared_memory.inodes(payload):
            return payload
        if not self._shares_host(host_id):
            raise SegmentLostError("shared memory segments from a peer on another host")
        return self.segments.take(payload, may_hand)

    def _take_from_client(self, client: ClientInfo, payload: Payload) -> Payload:
        return self._take(payload, client.host_id, lambda pid: pid == client.pid)

    def _lend(self, identity: bytes, results: list[TaskResult]) -> list[TaskResult]:
        """Results go to a client: their segments stay held until it says it mapped them; a client on
        another host gets bytes, and the holds go once they are sent."""
        if not self.segments:
            return results
        client = self.clients[identity]
        if self._shares_host(client.host_id):
            for result in results:
                client.lent.update(shared_memory.inodes(result.payload))
            return results
        sent = []
        for result in results:
            if shared_memory.inodes(result.payload):
                payload = shared_memory.materialize(result.payload)[0]
                self.segments.drop(result.payload)
                result = dataclasses.replace(result, payload=payload)
            sent.append(result)
        return sent

    def _on_release_segments(self, peer: bytes, msg: ReleaseSegments, now: float) -> None:
        """A client mapped these results: the scheduler's holds on them go."""
        client = self.clients.get(peer)
        if client is None:
            return
        released = [inode for inode in msg.inodes if inode in client.lent]
        client.lent.difference_update(released)
        self.segments.release(released)

    # -- clients -------------------------------------------------------------

    def _on_client_hello(self, peer: bytes, msg: ClientHello, now: float) -> None:
        if msg.version != PROTOCOL_VERSION:
            self._outbox.append((peer, _version_mismatch(msg.version)))
            return
        if peer in self.clients:
            self._remove_client(peer)
        number = next(self._client_numbers)
        self.clients[peer] = ClientInfo(number, msg.name, msg.host, _clamp(msg.pid, 0, _MAX_REPORTED),
                                        msg.store_tasks, now, host_id=msg.host_id)
        self._outbox.append((peer, ClientWelcome(number, self.config.heartbeat_interval, self.host_id)))

    def _on_client_bye(self, peer: bytes, msg: ClientBye, now: float) -> None:
        self._remove_client(peer)

    def _on_submit(self, peer: bytes, msg: Submit, now: float) -> None:
        client = self.clients.get(peer)
        if client is None:
            self._outbox.append((peer, Rejected("submit before hello: connect with Client(address)")))
            return
        self._store_objects(client, peer, msg.objects)
        room = self.config.max_waiting - len(self.pending)
        shared = _Shared()
        released: list[int] = []
        present = None  # needed objects found stored this turn: none can go before it ends
        for spec in msg.tasks:
            inodes = shared_memory.inodes(spec.args)
            if inodes:
                released.extend(inodes)  # the client may let go after this turn, whatever becomes of the task
            if spec.task_id >> TASK_ID_BITS != client.number or spec.task_id in self.tasks:
                logger.warning("client %s sent task id %d, not a new one of its own: ignored", client.name,
                               spec.task_id)
                continue
            client.submitted += 1
            needed = shared.needed(spec)
            if needed is not present:
                missing = [o for o in needed if o not in self.objects]
                if missing:
                    self._reply(peer, TaskResult(spec.task_id, Status.SERIALIZATION, None,
                                                 f"object {missing[0].hex()} is not on the scheduler (deleted?)",
                                                 []))
                    continue
                present = needed
            if room <= 0:
                self._reply(peer, TaskResult(spec.task_id, Status.NO_WORKER, None,
                                             f"the scheduler already holds {len(self.pending)} waiting tasks "
                                             f"(--max-waiting {self.config.max_waiting}): wait for results "
                                             "or add workers before submitting more", []))
                continue
            if inodes:
                try:
                    spec.args = self._take_from_client(client, spec.args)
                except SegmentLostError as exc:
                    self._reply(peer, TaskResult(spec.task_id, Status.SERIALIZATION, None,
                                                 f"the task's arguments could not be read: {exc}", []))
                    continue
            room -= 1
            shared.apply(spec)
            task = Task(spec, peer, frozenset(spec.tags) if spec.tags else _NO_TAGS, _queued_bytes(spec.args),
                        needed=needed)
            for object_id in needed:
                self.objects.hold(object_id)
            self.tasks[spec.task_id] = task
            client.tasks.add(spec.task_id)
            if spec.origin is not None:
                client.origins[spec.origin] += 1
            task.order = self.pending.push(spec.task_id, task.tags, spec.priority, spec.parent_id is not None)
            if spec.parent_id is not None:
                self._mark_blocked(spec.parent_id)
        if released:
            self._released.setdefault(peer, []).extend(released)

    def _on_submit_graph(self, peer: bytes, msg: SubmitGraph, now: float) -> None:
        """A graph, whole: its tasks without dependencies are pending at once, the others wait."""
        client = self.clients.get(peer)
        if client is None:
            self._outbox.append((peer, Rejected("submit before hello: connect with Client(address)")))
            return
        self._note_sent(peer, [spec.args for spec in msg.tasks])
        self._store_objects(client, peer, msg.objects)
        first = msg.tasks[0].task_id if msg.tasks else (msg.nodes[0].task_id if msg.nodes else None)
        problem = graphs.check(msg, client.number, self.tasks)
        if problem is None and (peer, msg.graph_id) in self.graphs:
            problem = f"graph {msg.graph_id} is already running"
        if problem is not None:
            logger.warning("client %s sent a malformed graph: %s", client.name, problem)
            if first is not None:
                self._reply(peer, TaskResult(first, Status.INVALID, None, f"malformed graph: {problem}", []))
            return
        missing = next((o for spec in msg.tasks for o in needed_objects(spec) if o not in self.objects), None)
        if missing is not None:
            self._reply(peer, TaskResult(first, Status.SERIALIZATION, None,
                                         f"object {missing.hex()} is not on the scheduler (deleted?)", []))
            return
        if len(self.pending) + len(msg.tasks) > self.config.max_waiting:
            self._reply(peer, TaskResult(first, Status.NO_WORKER, None,
                                         f"a graph of {len(msg.tasks)} tasks does not fit: the scheduler holds "
                                         f"{len(self.pending)} waiting tasks (--max-waiting "
                                         f"{self.config.max_waiting})", []))
            return
        taken = []
        try:
            for spec in msg.tasks:
                spec.args = self._take_from_client(client, spec.args)
                taken.append(spec.args)
        except SegmentLostError as exc:
            for payload in taken:
                self.segments.drop(payload)
            self._reply(peer, TaskResult(first, Status.SERIALIZATION, None,
                                         f"the graph's arguments could not be read: {exc}", []))
            return
        graph = graphs.build(msg, peer, client.number, now)
        self.graphs[peer, msg.graph_id] = graph
        client.submitted += len(msg.tasks)
        for spec, node in zip(msg.tasks, msg.nodes):  # noqa: B905 - equal lengths, checked
            for object_id in needed_objects(spec):
                self.objects.hold(object_id)
            # the results it waits for travel to its worker as objects; each is held from when it is stored
            spec.object_ids.extend(result_object_id(d) for d in dict.fromkeys(node.dependencies))
            task = Task(spec, peer, frozenset(spec.tags) if spec.tags else _NO_TAGS, _queued_bytes(spec.args),
                        graph=graph, needed=tuple(needed_objects(spec)))
            self.tasks[spec.task_id] = task
            client.tasks.add(spec.task_id)
            if spec.origin is not None:
                client.origins[spec.origin] += 1
            if node.dependencies:
                task.state = TaskState.WAITING
            else:
                task.order = self.pending.push(spec.task_id, task.tags, spec.priority, spec.parent_id is not None)
        parents = {spec.parent_id for spec in msg.tasks if spec.parent_id is not None}
        for parent_id in parents:  # a task that runs a graph waits for it: its worker may start one more
            self._mark_blocked(parent_id)

    def _on_put_objects(self, peer: bytes, msg: PutObjects, now: float) -> None:
        client = self.clients.get(peer)
        if client is not None:
            self._store_objects(client, peer, msg.objects)
        else:
            self._note_sent(peer, [obj.payload for obj in msg.objects])

    def _on_delete_objects(self, peer: bytes, msg: DeleteObjects, now: float) -> None:
        client = self.clients.get(peer)
        if client is None:
            return
        for object_id in msg.object_ids:
            if object_id in client.objects:
                client.objects.discard(object_id)
                self._release_object(object_id, peer)

    def _on_cancel(self, peer: bytes, msg: Cancel, now: float) -> None:
        by_worker: dict[bytes, list[int]] = {}
        for task_id in msg.task_ids:
            task = self.tasks.get(task_id)
            if task is None or task.client != peer:
                continue
            if task.graph is not None:  # a graph is cancelled whole; its client stops waiting for it
                self._end_graph(task.graph, GraphState.CANCELLED)
                continue
            if task.state is TaskState.PENDING:
                self._finish(task, TaskResult(task_id, Status.CANCELLED, None, "cancelled", []))
            elif not task.cancelled:
                task.cancelled = True
                by_worker.setdefault(task.worker, []).append(task_id)
        for identity, task_ids in by_worker.items():
            self._outbox.append((identity, Cancel(task_ids)))

    def _on_shutdown(self, peer: bytes, msg: Shutdown, now: float) -> None:
        """A client stops the cluster: every worker and client is told, then the loop stops (``stopping``).
        A ``--protected`` scheduler refuses."""
        client = self.clients.get(peer)
        if client is None:
            self._outbox.append((peer, Rejected("shutdown from an unknown peer: connect with Client(address)")))
            return
        if self.config.protected:
            logger.warning("client %s asked for shutdown: refused (--protected)", client.name)
            self._outbox.append((peer, Rejected("this scheduler was started with --protected: it refuses remote "
                                                "shutdown; stop it on its own host (SIGINT or SIGTERM)")))
            return
        logger.info("client %s shut the cluster down (%s)", client.name, msg.reason)  # asked for: no warning
        self.stop_cluster(f"client {client.name} shut the cluster down")

    def stop_cluster(self, reason: str) -> None:
        """Stop: every worker and client is told why (a normal end, not a lost scheduler), then the loop
        stops (``stopping``)."""
        self.stopping = True
        notice = Shutdown(reason)
        self._outbox.extend((identity, notice) for identity in [*self.workers, *self.clients])

    def _on_status_request(self, peer: bytes, msg: StatusRequest, now: float) -> None:
        self._outbox.append((peer, StatusReply(msg.request_id, build_snapshot(self, now))))

    def _store_objects(self, client: ClientInfo, peer: bytes, objects: list[ObjectSpec]) -> None:
        self._note_sent(peer, [obj.payload for obj in objects])
        for obj in objects:
            if len(obj.object_id) != CONTENT_ID_BYTES:  # other ids are the scheduler's own (graph results)
                logger.warning("client %s sent an object with a %d-byte id: ignored", client.name, len(obj.object_id))
                continue
            payload = obj.payload
            if obj.object_id not in self.objects:
                try:
                    payload = self._take_from_client(client, payload)
                except SegmentLostError as exc:  # tasks that need it fail: it is not on the scheduler
                    logger.warning("client %s sent object %s that cannot be read: %s", client.name,
                                   obj.object_id.hex(), exc)
                    continue
            self.objects.put(obj.object_id, payload, peer)
            client.objects.add(obj.object_id)

    def _release_object(self, object_id: bytes, owner: bytes) -> None:
        if self.objects.release(object_id, owner):
            self._drop_from_workers(object_id)

    def _drop_from_workers(self, object_id: bytes) -> None:
        for identity, worker in self.workers.items():
            if object_id in worker.objects:
                worker.objects.discard(object_id)
                self._deleted.setdefault(identity, []).append(object_id)

    def _unhold_objects(self, task: Task) -> None:
        """A task left: its arguments and the objects it needed are held no more by it."""
        self.segments.drop(task.spec.args)
        for object_id in task.needed:
            if self.objects.unhold(object_id):
                self._drop_from_workers(object_id)

    def _remove_client(self, peer: bytes) -> None:
        """Cancel a gone client's tasks and free its objects."""
        client = self.clients.pop(peer, None)
        if client is None:
            return
        self._drop_tasks([self.tasks[task_id] for task_id in client.tasks])
        for key in [key for key in self.graphs if key[0] == peer]:
            del self.graphs[key]
        for object_id in client.objects:
            self._release_object(object_id, peer)
        for result in self._results.pop(peer, ()):
            self.segments.drop(result.payload)
        self.segments.release(client.lent)
        logger.info("client %s left: %d tasks cancelled, %d objects released",
                    client.name, len(client.tasks), len(client.objects))

    def _drop_tasks(self, tasks: list[Task]) -> None:
        """Forget live tasks without a word to their clients; workers holding them are told to stop them."""
        by_worker: dict[bytes, list[int]] = {}
        for task in tasks:
            task_id = task.spec.task_id
            del self.tasks[task_id]
            self._unhold_objects(task)
            client = self.clients.get(task.client)
            if client is not None:
                client.tasks.discard(task_id)
            if task.state is TaskState.PENDING:
                self.pending.discard(task_id)
            elif task.state is TaskState.ASSIGNED:
                worker = self.workers[task.worker]
                del worker.queue[task_id]
                worker.queued_bytes -= task.nbytes
                worker.blocked.discard(task_id)
                by_worker.setdefault(task.worker, []).append(task_id)
        for identity, task_ids in by_worker.items():
            self._outbox.append((identity, Cancel(task_ids)))

    # -- graphs --------------------------------------------------------------

    def _graph_task_done(self, task: Task, result: TaskResult) -> bool:
        """A graph task ended: keep its result for the tasks that need it and release those it was the last
        dependency of; on failure, end the graph. Return whether its client wants the result."""
        graph = task.graph
        task_id = task.spec.task_id
        node = graph.index[task_id]
        if result.status != Status.OK:
            cancelled = result.status == Status.CANCELLED
            graph.ended[node] = NodeState.CANCELLED if cancelled else NodeState.FAILED
            self._end_graph(graph, GraphState.CANCELLED if cancelled else GraphState.FAILED)
            return True  # the client learns why its graph failed
        graph.ended[node] = NodeState.DONE
        graph.record(task_id, result.profile, result.message)
        waiting = [self.tasks[d] for d in graph.dependents[node] if d in self.tasks]
        if waiting and self.objects.put_result(result_object_id(task_id), result.payload, len(waiting)):
            self.segments.retain(result.payload)
        for ready in graph.release(task_id):
            dependent = self.tasks.get(ready)
            if dependent is not None and dependent.state is TaskState.WAITING:
                dependent.state = TaskState.PENDING
                dependent.order = self.pending.push(ready, dependent.tags, dependent.spec.priority,
                                                    dependent.spec.parent_id is not None)
        wanted = graph.outputs[node]
        if not graph.remaining:
            self._close_graph(graph, GraphState.DONE)
        return wanted

    def _end_graph(self, graph: Graph, how: GraphState) -> None:
        """The first failure (or a cancel) ends the whole graph: its other tasks are dropped."""
        live = [self.tasks[t] for t in graph.task_ids if t in self.tasks]
        for task in live:
            graph.ended.setdefault(graph.index[task.spec.task_id], NodeState.CANCELLED)
        self._drop_tasks(live)
        self.finished += len(live)
        self._close_graph(graph, how)

    def _close_graph(self, graph: Graph, how: GraphState) -> None:
        if self.graphs.pop((graph.client, graph.graph_id), None) is not None:
            graphs.finish(graph, how)
            self.finished_graphs.append(graph)

    # -- workers -------------------------------------------------------------

    def _on_worker_hello(self, peer: bytes, msg: WorkerHello, now: float) -> None:
        if msg.version != PROTOCOL_VERSION:
            self._outbox.append((peer, _version_mismatch(msg.version)))
            return
        if peer in self.workers:
            self._remove_worker(peer)
        self.workers_joined += 1
        self.workers[peer] = WorkerInfo(self.workers_joined, msg.name, msg.host, _clamp(msg.pid, 0, _MAX_REPORTED),
                                        _clamp(msg.processors, 1, _MAX_PROCESSORS), frozenset(msg.tags), now,
                                        host_id=msg.host_id)
        self._outbox.append((peer, WorkerWelcome(self.workers_joined, self.host_id)))
        self._someone_idle = True
        logger.info("worker %s joined (%d processors, tags %s)", msg.name, msg.processors, sorted(msg.tags) or "none")

    def _on_worker_bye(self, peer: bytes, msg: WorkerBye, now: float) -> None:
        self._remove_worker(peer)

    def _on_heartbeat(self, peer: bytes, msg: Heartbeat, now: float) -> None:
        """Workers and clients heartbeat; the answer tells them the scheduler lives."""
        worker = self.workers.get(peer)
        if worker is not None:  # what a peer reports is clamped: one bad peer must not spoil every snapshot
            worker.cpu = _clamp(msg.cpu, 0.0, 100.0 * 4096)
            worker.memory = _clamp(msg.memory, 0, _MAX_REPORTED)
            worker.running = _clamp(msg.running, 0, worker.processors + len(worker.blocked))
        if worker is not None or peer in self.clients:
            self._outbox.append((peer, Heartbeat(0.0, 0, len(self.pending), len(self.tasks) - len(self.pending))))
        else:
            self._outbox.append((peer, Rejected(_UNKNOWN_PEER)))

    def _on_results(self, peer: bytes, msg: Results, now: float) -> None:
        worker = self.workers.get(peer)
        if worker is None:
            logger.debug("dropping results from unknown worker %r", peer)
            return
        walls = []
        released: list[int] = []
        for result in msg.results:
            inodes = shared_memory.inodes(result.payload)
            if inodes:
                released.extend(inodes)  # the worker may let go after this turn, whatever becomes of the result
            worker.blocked.discard(result.task_id)
            task = worker.queue.pop(result.task_id, None)
            if task is None:  # cancelled, or taken back from this worker
                continue
            worker.queued_bytes -= task.nbytes
            if inodes:
                try:
                    result.payload = self._take(result.payload, worker.host_id,
                                                lambda pid: shared_memory.parent_pid(pid) == worker.pid)
                except SegmentLostError as exc:
                    if task.cancelled:
                        result = TaskResult(result.task_id, Status.CANCELLED, None, "cancelled", result.profile)
                    else:  # its processor died before the scheduler took the result: run it again, a few times
                        task.crashes += 1
                        if task.crashes < self.config.max_retries:
                            logger.warning("the result of task %d is lost (%s): running it again", result.task_id,
                                           exc)
                            self._requeue(task)
                            continue
                        result = TaskResult(result.task_id, Status.SERIALIZATION, None,
                                            f"the task's result could not be read, on each of its {task.crashes} "
                                            f"runs: {exc}", result.profile)
            if result.profile:
                walls.append(result.profile[0])
            if result.status == Status.CRASHED and not task.cancelled:
                task.crashes += 1
                if task.crashes < self.config.max_retries:
                    logger.warning("task %d crashed its processor (%d of %d): retrying",
                                   result.task_id, task.crashes, self.config.max_retries)
                    self._requeue(task)
                    continue
                runs = "its only run" if task.crashes == 1 else f"each of its {task.crashes} runs"
                result.message = (f"{result.message}, on {runs}: the scheduler's --max-retries "
                                  f"({self.config.max_retries}) sets how many runs a crashing task gets")
            worker.done += 1
            wall = result.profile[0] if result.profile else 0.0
            self.recent_tasks.append(FinishedTask(result.task_id, worker.number, task.spec.name,
                                                  None if task.graph is None else _graph_key(task),
                                                  task.spec.origin, now - wall, now, result.status))
            self._finish(task, result)
        if released:
            self._released.setdefault(peer, []).extend(released)
        if walls:
            self._learn_task_time(worker, sum(walls) / len(walls))
        if len(worker.queue) < worker.processors:
            self._someone_idle = True

    def _on_taken_back(self, peer: bytes, msg: TakenBack, now: float) -> None:
        """The worker returned these unstarted tasks: they wait for the next free worker."""
        worker = self.workers.get(peer)
        if worker is None:
            return
        worker.asked_back.clear()
        for task_id in msg.task_ids:
            task = worker.queue.pop(task_id, None)
            if task is None:
                continue
            worker.queued_bytes -= task.nbytes
            if task.cancelled:
                self._finish(task, TaskResult(task_id, Status.CANCELLED, None, "cancelled", []))
            else:
                self._requeue(task)

    def _on_output(self, peer: bytes, msg: Output, now: float) -> None:
        by_client: dict[bytes, list] = {}
        for line in msg.lines:
            task = self.tasks.get(line.task_id)
            if task is not None:
                by_client.setdefault(task.client, []).append(line)
        for identity, lines in by_client.items():
            self._outbox.append((identity, Output(lines)))

    def _remove_worker(self, peer: bytes) -> None:
        """A worker left or died: its tasks wait for another, or fail if their client asked so."""
        worker = self.workers.pop(peer, None)
        if worker is None:
            return
        self._assigned.pop(peer, None)
        for task in worker.queue.values():
            client = self.clients.get(task.client)
            if task.cancelled or client is None:
                self._finish(task, TaskResult(task.spec.task_id, Status.CANCELLED, None, "cancelled", []))
            elif client.store_tasks:
                self._requeue(task)
            else:
                self._finish(task, TaskResult(task.spec.task_id, Status.WORKER_DIED, None,
                                              f"worker {worker.name} died while holding the task", []))
        # no warning: a worker leaving (its cluster stops or scales down) is normal, and a death was warned of
        logger.info("worker %s removed; %d of its tasks rescheduled or failed", worker.name, len(worker.queue))

    def _learn_task_time(self, worker: WorkerInfo, seconds: float) -> None:
        """Per processor, about ``queue_seconds`` of work, and never less than one task queued behind the running one.

        The queued task is there when the running one ends: no round trip to the scheduler idles
        the processor between two tasks (about 2.5 ms here, 5% of a 50 ms task). No more than
        that, so that at the end of a batch no worker holds tasks another could be running.
        """
        worker.mean_task_seconds, worker.depth = queue_depth.learn(worker.mean_task_seconds, seconds,
                                                                   self.config.queue_seconds, 2, self.config.max_depth)

    def _mark_blocked(self, parent_id: int) -> None:
        parent = self.tasks.get(parent_id)
        if parent is None or parent.state is not TaskState.ASSIGNED:
            return
        worker = self.workers[parent.worker]
        if parent_id not in worker.blocked:
            worker.blocked.add(parent_id)
            self._outbox.append((parent.worker, TaskBlocked(parent_id)))

    # -- assignment ----------------------------------------------------------

    def _schedule(self) -> None:
        """Give waiting tasks to workers with room, least loaded first, an even share each."""
        while self.pending and not self.stopping:  # workers told to stop must not start anything more
            candidates = [w for w in self.workers.items() if self._has_room(w[1])]
            if not candidates:
                return
            candidates.sort(key=lambda item: len(item[1].queue) / item[1].capacity)
            share = math.ceil(len(self.pending) / len(candidates))
            moved = 0
            for identity, worker in candidates:
                for _ in range(min(share, worker.capacity - len(worker.queue))):
                    if not self._has_room(worker):
                        break
                    task_id = self.pending.pop_for(worker.tags)
                    if task_id is None:
                        break
                    task = self.tasks[task_id]
                    task.state, task.worker = TaskState.ASSIGNED, identity
                    worker.queue[task_id] = task
                    worker.queued_bytes += task.nbytes
                    self._assigned.setdefault(identity, []).append(task)
                    moved += 1
            if not moved:
                return

    def _has_room(self, worker: WorkerInfo) -> bool:
        """Room by count, learned from task times; and by bytes, so large arguments spread out.
        A worker always gets one task per processor, however large."""
        queued = len(worker.queue)
        if queued >= worker.capacity:
            return False
        return queued < worker.processors or worker.queued_bytes < self.config.queue_bytes * worker.processors

    def _balance(self) -> None:
        """Ask workers with a backlog to return unstarted tasks that idle workers could run now.

        A task moves only after its worker confirms it had not started it (``TakenBack``),
        so a move never runs a task twice and never loses one.
        """
        if self.config.balance_interval <= 0:
            return
        idle = [w for w in self.workers.values() if len(w.queue) < w.processors]
        if not idle or self.pending:
            return
        free = sum(w.capacity - len(w.queue) for w in idle)
        mean = sum(len(w.queue) for w in self.workers.values()) / len(self.workers)
        donors = sorted((w for w in self.workers.items() if not w[1].asked_back),
                        key=lambda item: len(item[1].queue) - item[1].processors, reverse=True)
        for identity, donor in donors:
            excess = len(donor.queue) - max(donor.processors, math.ceil(mean))
            if free <= 0 or excess <= 0:
                return
            asked = []
            for task in reversed(donor.queue.values()):  # the newest are the least likely started
                if len(asked) == min(excess, free):
                    break
                if not task.cancelled and any(task.tags <= w.tags for w in idle):
                    asked.append(task.spec.task_id)
            if asked:
                donor.asked_back.update(asked)
                free -= len(asked)
                self._outbox.append((identity, TakeBack(asked)))

    def _check_unmatched(self, now: float) -> None:
        """Track the tag sets no connected worker offers; warn their clients, or fail their tasks, in time."""
        offered = {w.tags for w in self.workers.values()}
        unmatched = {}
        for tags in self.pending.tag_sets():
            if any(tags <= worker_tags for worker_tags in offered):
                continue
            entry = unmatched[tags] = self.unmatched.get(tags) or Unmatched(now)
            waited = now - entry.since
            timeout = self.config.no_worker_timeout
            if timeout > 0 and waited >= timeout:
                task_ids = self.pending.with_tags(tags)
                message = self.no_worker_message(tags, len(task_ids), waited)
                for task_id in task_ids:
                    task = self.tasks.get(task_id)
                    if task is not None and task.state is TaskState.PENDING:  # not dropped with its failed graph
                        self._finish(task, TaskResult(task_id, Status.NO_WORKER, None,
                                                      f"{message} (--no-worker-timeout {timeout:g})", []))
                del unmatched[tags]  # tasks that need these tags from now on get a timeout of their own
            elif not entry.warned and waited >= self.config.no_worker_grace:
                entry.warned = True
                self._warn_unmatched(tags, waited)
        self.unmatched = unmatched

    def _warn_unmatched(self, tags: frozenset, waited: float) -> None:
        by_client: dict[bytes, list[int]] = {}
        for task_id in self.pending.with_tags(tags):
            by_client.setdefault(self.tasks[task_id].client, []).append(task_id)
        for identity, task_ids in by_client.items():
            message = self.no_worker_message(tags, len(task_ids), waited)
            logger.warning("client %s: %s", self.clients[identity].name if identity in self.clients else "?", message)
            self._outbox.append((identity, TaskWarning(message, task_ids[:_WARNED_IDS])))

    def no_worker_message(self, tags: frozenset, count: int, waited: float) -> str:
        """What to tell a user whose ``count`` tasks need ``tags`` that no worker has offered for ``waited`` s."""
        tasks = "1 task waits" if count == 1 else f"{count} tasks wait"
        wanted = ",".join(sorted(map(str, tags)))
        if not self.workers:
            return (f"{tasks} for a worker{f' with tags {{{wanted}}}' if tags else ''}, and none has been "
                    f"connected for {waited:.1f}s: start workers (scaler-jupyter worker ADDRESS"
                    f"{f' --tags {wanted}' if tags else ''}) or scale the cluster")
        return (f"{tasks} for a worker with tags {{{wanted}}}, and none of the {len(self.workers)} connected "
                f"workers has offered them for {waited:.1f}s: start one with --tags {wanted}, or submit without "
                "these tags")

    def _requeue(self, task: Task) -> None:
        """Back to pending; the caller has taken it out of its worker's queue."""
        task.state, task.worker = TaskState.PENDING, None
        self.pending.push(task.spec.task_id, task.tags, task.spec.priority, task.spec.parent_id is not None,
                          task.order)

    def _finish(self, task: Task, result: TaskResult) -> None:
        task_id = task.spec.task_id
        if self.tasks.pop(task_id, None) is not None:
            self._unhold_objects(task)
        self.pending.discard(task_id)
        self.finished += 1
        client = self.clients.get(task.client)
        if client is not None:
            client.tasks.discard(task_id)
            client.done += 1
            origin = task.spec.origin
            if origin is not None and origin in client.origins:
                client.origins[origin] -= 1
                if not client.origins[origin]:
                    del client.origins[origin]
        wanted = task.graph is None or self._graph_task_done(task, result)
        if client is not None and wanted:
            self._reply(task.client, result)
        else:
            self.segments.drop(result.payload)

    def _reply(self, client: bytes, result: TaskResult) -> None:
        self._results.setdefault(client, []).append(result)

    _HANDLERS = {
        ClientHello: _on_client_hello,
        ClientBye: _on_client_bye,
        Submit: _on_submit,
        SubmitGraph: _on_submit_graph,
        PutObjects: _on_put_objects,
        DeleteObjects: _on_delete_objects,
        Cancel: _on_cancel,
        StatusRequest: _on_status_request,
        Shutdown: _on_shutdown,
        WorkerHello: _on_worker_hello,
        WorkerBye: _on_worker_bye,
        Heartbeat: _on_heartbeat,
        Results: _on_results,
        Output: _on_output,
        TakenBack: _on_taken_back,
        ReleaseSegments: _on_release_segments,
    }



_WARNED_IDS = 256  # task ids a TaskWarning names at most; its message counts them all
_MAX_REPORTED = 1 << 53  # no real pid, memory size or count is larger
_MAX_PROCESSORS = 4096


def _graph_key(task: Task) -> str:
    return task.graph.keys[task.graph.index[task.spec.task_id]]


def _key_name(key: str | None) -> str:
    """What a graph task's key says it runs: ``inc-1f3a`` and ``('inc-1f3a', 0)`` read ``inc``."""
    if key is None:
        return ""
    return _KEY_NAME.match(key).group(1)


_KEY_NAME = re.compile(r"[(\s'\"]*([^-@'\",]*)")
_STATUS_NAMES = {status.value: status.name.lower() for status in Status}


class _Shared:
    """The fields a map's tasks all have alike (tags, environment, name), decoded once per task: equal ones
    share one object while the tasks wait, so a queued task costs its own fields only."""

    __slots__ = ("environment", "name", "needed_objects", "tags")

    def __init__(self) -> None:
        self.tags, self.environment, self.name, self.needed_objects = [], [], "", ()

    def needed(self, spec: TaskSpec) -> tuple[bytes, ...]:
        """The objects ``spec`` needs: the previous task's tuple when equal (the same object, which
        ``flush`` and the presence check rely on to skip repeats)."""
        needed = tuple(needed_objects(spec))
        if needed == self.needed_objects:
            return self.needed_objects
        self.needed_objects = needed
        return needed

    def apply(self, spec: TaskSpec) -> None:
        if spec.tags == self.tags:
            spec.tags = self.tags
        else:
            self.tags = spec.tags
        if spec.environment == self.environment:
            spec.environment = self.environment
        else:
            self.environment = spec.environment
        if spec.name == self.name:
            spec.name = self.name
        else:
            self.name = spec.name


def _queued_bytes(args: Payload) -> int:
    """What a task's arguments weigh in a worker's queue: the bytes that travel to it. Parts in shared memory
    (a few numbers each, mapped only when the task runs) weigh nothing, so they do not thin the queue that
    keeps its processors busy."""
    size = 0
    for part in args.parts:
        if type(part) is bytes:
            size += len(part)
        elif type(part) is not Segment:
            size += memoryview(part).nbytes
    return size


def _materialized(objects: list[ObjectSpec], specs: list[TaskSpec]) -> tuple[list[ObjectSpec], list[TaskSpec]]:
    """Copies of an Assign's objects and tasks with their segments as mapped bytes, for a worker on another
    host (the stored payloads keep their segments)."""
    objects = [ObjectSpec(o.object_id, shared_memory.materialize(o.payload)[0])
               if shared_memory.inodes(o.payload) else o for o in objects]
    specs = [dataclasses.replace(s, args=shared_memory.materialize(s.args)[0])
             if shared_memory.inodes(s.args) else s for s in specs]
    return objects, specs


def _clamp(value, low, high):
    return min(max(value, low), high)


_UNKNOWN_PEER = "this scheduler does not know you (it restarted, or declared you dead): connect again"


def _version_mismatch(version: int) -> Rejected:
    return Rejected(f"protocol version {version}, but this scheduler speaks {PROTOCOL_VERSION}: "
                    "install the same scaler_jupyter version everywhere")
