"""The monitor snapshot: what ``Client.status()`` returns and the monitor feed publishes.

One snapshot is a plain dict (msgpack- and JSON-friendly). This docstring is its
specification; ``SNAPSHOT_VERSION`` goes up when a key is removed or renamed or
changes its meaning or unit. New keys may appear without a new version, so a
reader ignores keys it does not know.

Counts are of *now* unless marked cumulative (since the scheduler started).
Times are seconds, memory is bytes, CPU is percent of one core (so a process
busy on two cores reads 200).

- ``version`` (int): ``SNAPSHOT_VERSION``.
- ``time`` (float): when the snapshot was taken, seconds since the Unix epoch.
- ``scheduler`` (dict):
    - ``address`` (str): the address clients and workers connect to; ``""`` for a state with no server.
    - ``monitor_address`` (str): where the feed is published; ``""`` if it is not.
    - ``pid`` (int): the scheduler's process id.
    - ``uptime`` (float): seconds since the scheduler started.
    - ``cpu`` (float): the scheduler process's CPU, percent of one core, since the previous snapshot.
    - ``memory`` (int): its resident memory, bytes.
    - ``tasks_per_second`` (float): tasks finished per second over the last ``RATE_WINDOW`` seconds
      (or since the previous snapshot, if that is older).
    - ``objects`` (int): payloads in the object store (functions, ``send_object`` data).
    - ``object_bytes`` (int): their total size, bytes.
- ``tasks`` (dict), totals by state:
    - ``pending`` (int): waiting for a worker.
    - ``assigned`` (int): in a worker's queue, started or not (``queued + running``).
    - ``queued`` (int): in a worker's queue, not started.
    - ``running`` (int): running in a processor, as of each worker's last heartbeat (at most ``assigned``).
    - ``held`` (int): every task the scheduler holds (pending, assigned, or on its way between workers).
    - ``finished`` (int, cumulative): tasks ended: succeeded, failed, crashed or cancelled.
- ``workers`` (list, in the order they joined), each a dict:
    - ``id`` (int): the worker's number, unique within this scheduler.
    - ``name``, ``host`` (str); ``pid`` (int): as the worker reported them.
    - ``tags`` (list of str, sorted): what tasks it can run.
    - ``processors`` (int): processes that run its tasks.
    - ``cpu`` (float): agent and processors together, percent of one core, at the last heartbeat.
    - ``memory`` (int): their resident memory together, bytes, at the last heartbeat.
    - ``queued`` (int): tasks it holds and has not started.
    - ``running`` (int): tasks running in its processors, as of its last heartbeat.
    - ``done`` (int, cumulative): tasks it finished.
    - ``heartbeat_lag`` (float): seconds since the scheduler last heard from it.
- ``unmatched`` (list): tasks waiting for tags no connected worker offers (with no worker connected,
  any tasks), once that has lasted the scheduler's ``--no-worker-grace``; one dict per tag set:
    - ``tags`` (list of str, sorted): what the tasks need (empty: any worker would do, but none is connected).
    - ``tasks`` (int): how many wait for them.
    - ``waiting`` (float): seconds since no connected worker offers them.
    - ``message`` (str): the same as a sentence that says what to do (the clients were warned with it).
- ``clients`` (list, in the order they connected), each a dict:
    - ``id`` (int): the client's number; ``name``, ``host`` (str); ``pid`` (int).
    - ``tasks`` (int): its live tasks (pending or assigned).
    - ``submitted``, ``done`` (int, cumulative): tasks it submitted, and those that ended.
    - ``origins`` (dict): origin label -> its live tasks (pending or assigned), for the origins that
      have some. A task's origin is what submitted it, such as the notebook cell
      ``"In [5]: x = simulate(3)"`` (``scaler_jupyter.task_origin``); tasks without one are not counted.
- ``graphs`` (list), for DAG panels: the last few graphs to end (``graphs.FINISHED_KEPT``), then every
  running graph, each group oldest first. Each a dict:
    - ``id`` (int): the graph's number, unique per client; ``client`` (int): its client's ``id``.
    - ``name`` (str): what the client called it (by default its first output key).
    - ``state`` (str): ``running``, ``done``, ``failed`` or ``cancelled`` (``protocol.graph_states.GraphState``).
    - ``started`` (float): when it was submitted, seconds since the Unix epoch.
    - ``total`` (int): its tasks (after culling to what the outputs need).
    - ``counts`` (dict): tasks by state (``protocol.graph_states.NodeState``): ``waiting`` (for other
      tasks), ``ready`` (for a worker), ``running`` (in a worker's queue, started or not), ``done``,
      ``failed``, ``cancelled`` (dropped when the graph failed or was cancelled).
    - ``tasks`` (dict): key (as text) -> state, the same states; omitted for graphs of more than
      ``graphs.TASKS_REPORTED`` tasks.
    - ``durations`` (dict): key -> seconds its task ran in the worker, and ``results`` (dict): key -> a short
      repr of what it returned (at most 120 characters), for the tasks that ended well; only for graphs of up
      to ``graphs.DETAILS_REPORTED`` tasks, and absent until one ended.
- ``recent_tasks`` (list), for task-stream panels: the last ``state.RECENT_TASKS`` tasks workers
  finished (retried crashes not counted), oldest first. Each a dict:
    - ``id`` (int): the task's id, unique per scheduler; ``worker`` (int): the ``id`` of the worker that ran it.
    - ``function`` (str): the function's qualified name, or for a graph task its key's name (``inc`` for
      ``inc-1f3a``); ``""`` if the client did not say.
    - ``origin`` (str or None): what submitted it, such as a notebook cell, if known.
    - ``start``, ``end`` (float): when it started (its end less its run time in the worker) and when the
      scheduler learned it ended, seconds since the Unix epoch.
    - ``status`` (str): ``ok``, ``error``, ``cancelled``, ... (``protocol.Status`` names, in lower case).

On the feed, each snapshot is one ZeroMQ message of two frames: the topic and
the msgpack-encoded snapshot, as ``protocol/feed.py`` encodes them; watch it
with ``scaler_jupyter.monitor``.

What a snapshot reads beyond the scheduler's state (its addresses, the process's
pid, CPU and memory, the wall clock, a tasks/s meter) is a :class:`Monitor`,
given to the state when it is made (``SchedulerState(monitor=...)``): the server
gives one reading this process (:meth:`ProcessFacts.of_this_process`); a state
given none reports pid 0 and no CPU or memory, so it can be driven on a fake
clock without touching the machine. The state's times are monotonic seconds;
the wall clock turns them into the epoch seconds of ``time`` and ``started``.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import psutil

from scaler_jupyter.protocol.graph_states import NodeState
from scaler_jupyter.scheduler.graphs import describe as describe_graph

if TYPE_CHECKING:
    from scaler_jupyter.scheduler.state import SchedulerState

SNAPSHOT_VERSION = 1
RATE_WINDOW = 2.0  # seconds over which tasks/s is measured


def _no_usage() -> tuple[float, int]:
    return 0.0, 0


@dataclasses.dataclass(slots=True, frozen=True)
class ProcessFacts:
    """The scheduler's process as a snapshot reports it, and the wall clock; neutral by default."""

    pid: int = 0
    usage: Callable[[], tuple[float, int]] = _no_usage  # CPU (percent of one core, since the last call), memory
    wall_clock: Callable[[], float] = time.time  # seconds since the Unix epoch

    @classmethod
    def of_this_process(cls) -> ProcessFacts:
        """The facts of the process this runs in, read by psutil at each snapshot."""
        process = psutil.Process()
        return cls(os.getpid(), lambda: (process.cpu_percent(), process.memory_info().rss))


class Monitor:
    """What the snapshot needs beside a scheduler's state: its addresses, its process's facts, a tasks/s meter."""

    __slots__ = ("_samples", "address", "facts", "monitor_address")

    def __init__(self, started: float, facts: ProcessFacts | None = None, address: str = "",
                 monitor_address: str = "") -> None:
        self.facts = facts or ProcessFacts()
        self.address = address
        self.monitor_address = monitor_address
        # (time, finished count) samples; none had finished when the scheduler started
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(started, 0)])

    def tasks_per_second(self, now: float, finished: int) -> float:
        """Tasks finished per second over the last ``RATE_WINDOW`` seconds, given the cumulative count."""
        samples = self._samples
        if not samples or now - samples[-1][0] >= RATE_WINDOW / 8:  # a few samples per window, however often asked
            samples.append((now, finished))
        while len(samples) > 1 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        then, finished_then = samples[0]
        return (finished - finished_then) / (now - then) if now > then else 0.0


def build_snapshot(state: SchedulerState, now: float) -> dict:
    """The snapshot of ``state`` at monotonic time ``now``, in the format documented above.

    Costs a pass over workers, clients and the tasks of graphs, never over other
    tasks, so it stays cheap with 100,000 tasks queued.
    """
    monitor = state.monitor
    finished = state.finished
    cpu, memory = monitor.facts.usage()
    wall = monitor.facts.wall_clock()
    epoch = wall - now  # added to the state's monotonic times
    workers = []
    assigned = running = 0
    for w in state.workers.values():
        held = len(w.queue)
        busy = min(w.running, held)  # a heartbeat may lag behind a finished task
        assigned += held
        running += busy
        workers.append({
            "id": w.number,
            "name": w.name,
            "host": w.host,
            "pid": w.pid,
            "tags": sorted(map(str, w.tags)),  # str: a peer's odd tag must not break every snapshot after it
            "processors": w.processors,
            "cpu": w.cpu,
            "memory": w.memory,
            "queued": held - busy,
            "running": w.running,
            "done": w.done,
            "heartbeat_lag": now - w.last_seen,
        })
    return {
        "version": SNAPSHOT_VERSION,
        "time": wall,
        "scheduler": {
            "address": monitor.address,
            "monitor_address": monitor.monitor_address,
            "pid": monitor.facts.pid,
            "uptime": now - state.started,
            "cpu": cpu,
            "memory": memory,
            "tasks_per_second": monitor.tasks_per_second(now, finished),
            "objects": len(state.objects),
            "object_bytes": state.objects.nbytes,
        },
        "tasks": {
            "pending": len(state.pending),
            "assigned": assigned,
            "queued": assigned - running,
            "running": running,
            "held": len(state.tasks),
            "finished": finished,
        },
        "workers": workers,
        "clients": [
            {"id": c.number, "name": c.name, "host": c.host, "pid": c.pid,
             "tasks": len(c.tasks), "submitted": c.submitted, "done": c.done, "origins": dict(c.origins)}
            for c in state.clients.values()
        ],
        "graphs": [_graph_entry(g, state, epoch) for g in [*state.finished_graphs, *state.graphs.values()]],
        "unmatched": _unmatched(state, now),
        "recent_tasks": [{"id": t.task_id, "worker": t.worker, "function": t.name, "origin": t.origin,
                          "start": epoch + t.start, "end": epoch + t.end, "status": t.status}
                         for t in state.recent_tasks],
    }


def _unmatched(state: SchedulerState, now: float) -> list[dict]:
    entries = []
    for tags, entry in state.unmatched.items():
        count = len(state.pending.with_tags(tags)) if entry.warned else 0  # a pass over them: rare, and said
        if count:
            waiting = now - entry.since
            entries.append({"tags": sorted(map(str, tags)), "tasks": count, "waiting": waiting,
                            "message": state.no_worker_message(tags, count, waiting)})
    return entries


def _graph_entry(graph, state: SchedulerState, epoch: float) -> dict:
    entry = describe_graph(graph, lambda task_id: _GRAPH_STATES[state.tasks[task_id].state.value])
    return {**entry, "started": entry["started"] + epoch}


# a graph task's state on the feed, by the value of its TaskState
_GRAPH_STATES = {"waiting": NodeState.WAITING, "pending": NodeState.READY, "assigned": NodeState.RUNNING}
