"""Balancing: tasks of very different lengths where one worker receives all the long ones first.

Two workers (one processor each). A ``map`` of four long tasks then four short ones: the first
worker's queue takes the four long tasks, the other the short ones. With balancing, the idle
worker gets queued long tasks back from the busy one; without it (``--balance-interval 0``), the
busy worker runs all four. Issue target: total time within 15% of ideal, where ideal is the
best any schedule of these tasks on two workers can do.

    python benchmarks/balancing.py [--long 1.0] [--short 0.05] [--count 4]
"""

from __future__ import annotations

import argparse
import itertools
import time

from scaler_jupyter import Client, LocalCluster


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def ideal_makespan(durations: list[float], workers: int = 2) -> float:
    """The shortest total time of any assignment of these tasks to ``workers`` workers (brute force)."""
    best = float("inf")
    for assignment in itertools.product(range(workers), repeat=len(durations)):
        loads = [0.0] * workers
        for worker, seconds in zip(assignment, durations, strict=True):
            loads[worker] += seconds
        best = min(best, max(loads))
    return best


def run(durations: list[float], balance_interval: str) -> float:
    with LocalCluster(n_workers=2, scheduler_args=("--balance-interval", balance_interval)) as cluster, \
            Client(cluster.address) as client:
        started = time.perf_counter()
        assert list(client.map(sleep_for, durations)) == durations
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=float, default=1.0)
    parser.add_argument("--short", type=float, default=0.05)
    parser.add_argument("--count", type=int, default=4, help="long tasks, and as many short ones")
    args = parser.parse_args()
    durations = [args.long] * args.count + [args.short] * args.count
    ideal = ideal_makespan(durations)
    rows = [("balancing on (default 0.5 s)", run(durations, "0.5")), ("balancing off", run(durations, "0"))]
    print(f"{args.count} tasks of {args.long}s then {args.count} of {args.short}s on 2 workers; ideal {ideal:.2f}s")
    print(f"{'scheduler':<30} {'wall s':>7} {'over ideal':>10}")
    for name, seconds in rows:
        print(f"{name:<30} {seconds:7.2f} {100 * (seconds / ideal - 1):9.1f}%")


if __name__ == "__main__":
    main()
