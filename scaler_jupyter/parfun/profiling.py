"""What one call of a parallel function cost, partition by partition: the trace, its report and its CSV export.

Each partition's cost is measured where it is spent, in CPU time of the thread doing it:
in the caller, partitioning, serializing, submitting, loading the result, combining; in
the worker, loading the partition, running the function, dumping the result. The function
is also timed by the clock: a function that mostly waits (on a disk, a network) counts by
its wall time instead. CPU time leaves out what a busy machine adds at random (a process
waiting for a core), which says nothing about partition sizes. The sum is what the
partition-size learner is fed.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass, field

STAGES = ("choose", "partition", "serialize", "submit", "setup", "load", "compute", "dump", "result_load", "combine")
WAITING = 0.5  # a function whose CPU time is less than this share of its wall time mostly waits


@dataclass(slots=True)
class PartitionTrace:
    """One partition's size and the seconds of each stage."""

    index: int
    requested_size: int | None
    size: int
    choose: float = 0.0  # caller: the learner choosing its size (not fed back: not a cost of the work)
    partition: float = 0.0  # caller: producing the partition (the partitioner)
    serialize: float = 0.0  # caller: its values to bytes
    submit: float = 0.0  # caller: handing the task to the backend
    setup: float = 0.0  # worker: loading the function and the whole arguments (once per worker and call)
    load: float = 0.0  # worker: the partition's bytes to values
    compute: float = 0.0  # worker: the function itself, wall time
    compute_cpu: float = 0.0  # worker: the function itself, CPU time
    dump: float = 0.0  # worker: the result to bytes
    result_load: float = 0.0  # caller: the result from bytes
    combine: float = 0.0  # caller: combine_with, on this result
    cold: bool = False  # the function's first partition in its worker process: one-time costs included

    @property
    def work(self) -> float:
        """The function's cost: its CPU time, or its wall time if it mostly waits."""
        return self.compute_cpu if self.compute_cpu >= WAITING * self.compute else self.compute

    @property
    def cost(self) -> float:
        """What this partition cost, caller and worker, but what does not depend on its size: what the learner is fed.

        Left out: the learner's own time, and the once-per-worker setup (loading the function
        and the arguments passed whole).
        """
        return (self.partition + self.serialize + self.submit + self.load + self.work + self.dump
                + self.result_load + self.combine)


@dataclass(slots=True)
class CallTrace:
    """One call: its partitions, where it ran, and its wall time."""

    function: str
    backend: str
    n_workers: int
    call_number: int
    partitions: list[PartitionTrace] = field(default_factory=list)
    wall: float = 0.0
    combine_tail: float = 0.0  # caller: combine_with after the last partition (a final concat, say)
    sequential: bool = False  # one partition: it ran in the caller
    model: dict | None = None  # the learner's snapshot after the call

    def total(self, stage: str) -> float:
        return sum(getattr(p, stage) for p in self.partitions)

    def summary(self) -> dict:
        """The figures of the report, as plain data."""
        compute = self.total("work")
        partitioning = self.total("partition") + self.total("choose")
        transfer = sum(self.total(stage) for stage in ("serialize", "setup", "load", "dump", "result_load"))
        scheduling = self.total("submit")
        combining = self.total("combine") + self.combine_tail
        overhead = partitioning + transfer + scheduling + combining
        cpu = compute + overhead
        computes = [p.work for p in self.partitions] or [0.0]
        in_workers = sum(self.total(stage) for stage in ("setup", "load", "compute", "dump"))
        return {
            "function": self.function,
            "backend": self.backend,
            "n_workers": self.n_workers,
            "call": self.call_number,
            "partitions": len(self.partitions),
            "items": sum(p.size for p in self.partitions),
            "wall_seconds": self.wall,
            "cpu_seconds": cpu,
            "compute_seconds": compute,
            "compute_wall_seconds": self.total("compute"),
            "overhead_seconds": overhead,
            "partitioning_seconds": partitioning,
            "transfer_seconds": transfer,
            "scheduling_seconds": scheduling,
            "combining_seconds": combining,
            "compute_min_seconds": min(computes),
            "compute_max_seconds": max(computes),
            "compute_mean_seconds": compute / max(1, len(self.partitions)),
            "worker_utilization": in_workers / (self.n_workers * self.wall) if self.wall > 0 else 0.0,
            "sequential": self.sequential,
            "model": self.model,
        }


def report(trace: CallTrace) -> str:
    """The human-readable profile of one call, as ``profile=True`` prints it."""
    s = trace.summary()
    cpu = s["cpu_seconds"] or 1e-12
    where = "in the caller (one partition)" if trace.sequential else f"on {trace.backend} ({trace.n_workers} workers)"
    lines = [
        f"{trace.function}(): call {trace.call_number}, {s['items']:,} items in {s['partitions']} partitions "
        f"{where}, {_seconds(s['wall_seconds'])} wall",
        f"  CPU time        {_seconds(cpu):>10}          busy {cpu / max(s['wall_seconds'], 1e-12):.2f} "
        f"cores on average over the wall time; the workers busy {100 * s['worker_utilization']:.0f}% of it",
        f"  compute         {_seconds(s['compute_seconds']):>10} {_share(s['compute_seconds'], cpu)}   the function, "
        f"per partition min {_seconds(s['compute_min_seconds'])}, mean {_seconds(s['compute_mean_seconds'])}, "
        f"max {_seconds(s['compute_max_seconds'])} (CPU time, or wall time where it mostly waits)",
        f"  overhead        {_seconds(s['overhead_seconds']):>10} {_share(s['overhead_seconds'], cpu)}",
        f"    partitioning  {_seconds(s['partitioning_seconds']):>10} {_share(s['partitioning_seconds'], cpu)}   "
        "splitting the arguments and choosing sizes, in the caller",
        f"    transfer      {_seconds(s['transfer_seconds']):>10} {_share(s['transfer_seconds'], cpu)}   "
        "serializing partitions and results, both sides",
        f"    scheduling    {_seconds(s['scheduling_seconds']):>10} {_share(s['scheduling_seconds'], cpu)}   "
        "submitting partitions to the backend",
        f"    combining     {_seconds(s['combining_seconds']):>10} {_share(s['combining_seconds'], cpu)}   "
        "combine_with, in the caller",
    ]
    model = trace.model
    if model is not None:
        lines.append(f"  partition size  {_model_line(model)}")
    return "\n".join(lines)


def _model_line(model: dict) -> str:
    if model.get("fixed_size") is not None:
        return f"fixed at {model['fixed_size']:,}"
    if model.get("plain_generator"):
        return "chosen by the partitioner (a plain generator); costs measured: " + _costs(model)
    chosen = model.get("chosen_size")
    text = f"estimator {model['state']}, chosen size {chosen:,}" if chosen else f"estimator {model['state']}"
    return f"{text}; {_costs(model)}"


def _costs(model: dict) -> str:
    a, b = model.get("per_item_seconds"), model.get("per_partition_seconds")
    points = len(model.get("measurements", ()))
    if a is None or b is None:
        return f"{points} measurements, not enough for a model yet"
    text = f"{_seconds(a)}/item + {_seconds(b)}/partition from {points} measurements"
    share = model.get("fixed_cost_share")
    if share is not None:
        target = 100 * model["target_share"]
        text += f", fixed cost {100 * share:.1f}% of the work at the chosen size (target {target:g}%)"
    if model.get("drifts"):
        text += f", relearned {model['drifts']} times after a drift"
    return text


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.3f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.2f} us"


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%"


CSV_COLUMNS = ("call", "index", "requested_size", "size", *(f"{stage}_seconds" for stage in STAGES),
               "compute_cpu_seconds", "cost_seconds", "cold")


def export_csv(trace: CallTrace, path: str | os.PathLike) -> None:
    """Append one row per partition of ``trace`` to the CSV file at ``path`` (with a header if new)."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(CSV_COLUMNS)
        for p in trace.partitions:
            row = dataclasses.asdict(p)
            writer.writerow([trace.call_number, p.index, p.requested_size, p.size,
                             *(f"{row[stage]:.9f}" for stage in STAGES), f"{p.compute_cpu:.9f}", f"{p.cost:.9f}",
                             int(p.cold)])
