"""The quickstart: estimate pi by Monte Carlo, first on one core, then on the embedded local cluster.

Run it with ``make demo`` or ``python -m scaler_jupyter.demo [--points N] [--tasks T]``.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from scaler_jupyter import Client


def count_inside(points: int, seed: int) -> int:
    """How many of ``points`` random points in the unit square fall inside the quarter circle."""
    rng = random.Random(seed)
    inside = 0
    for _ in range(points):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000_000, help="points in all (default 2e7)")
    parser.add_argument("--tasks", type=int, default=100, help="tasks to split them into (default 100)")
    args = parser.parse_args(argv)
    per_task = args.points // args.tasks
    seeds = range(args.tasks)

    started = time.perf_counter()
    sequential = sum(count_inside(per_task, seed) for seed in seeds)
    sequential_seconds = time.perf_counter() - started

    with Client() as client:  # no address: a private cluster, one worker per core
        started = time.perf_counter()
        parallel = sum(client.map(count_inside, [per_task] * args.tasks, seeds))
        parallel_seconds = time.perf_counter() - started

    assert parallel == sequential, "the same seeds must give the same count"
    estimate = 4.0 * parallel / (per_task * args.tasks)
    print(f"pi is about {estimate:.6f} ({per_task * args.tasks:,} points in {args.tasks} tasks)")
    print(f"sequential: {sequential_seconds:.2f} s")
    print(f"on {os.cpu_count()} local workers: {parallel_seconds:.2f} s, "
          f"{sequential_seconds / parallel_seconds:.2f}x faster")


if __name__ == "__main__":
    main()
