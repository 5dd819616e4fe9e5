"""Task-graph benchmarks: scaler_jupyter's scheduler-side graphs side by side with Dask distributed, in one run.

Systems, each with 2 workers of one process (one thread) each:

- ``ours``  ``LocalCluster(n_workers=2)`` and ``Client.get``;
- ``dask``  Dask distributed: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` and its
  ``Client.get`` (the same graph dict) or ``compute`` (the same collection).

Benchmarks (wall-clock seconds in this process, the median of ``--repeat`` runs after one untimed warm-up):

1. tree reduction: 5,000 leaves ``inc(i)`` summed pairwise, ``add(a, b)``, level by level: 9,999 tasks in a
   Dask-format dict of tuples, one output key.
2. dask.array: ``(x + x.T).mean()`` with ``x = da.random.random((4000, 4000), chunks=(500, 500))``, computed
   with ``scheduler=client.get`` on ours and on Dask's own distributed scheduler.

The table gives each time and, for ours, Dask's time over ours (above 1: ours is faster). Targets (issue 4):
the tree reduction at least 5x faster than Dask, the array no slower.

Usage::

    python benchmarks/graphs.py [--repeat 3] [--only ours,dask]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import operator
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_WORKERS = 2
LEAVES = 5_000
ARRAY_SIDE = 4_000
CHUNK = 500


def inc(x: int) -> int:
    return x + 1


def tree_graph(leaves: int = LEAVES) -> tuple[dict, tuple]:
    """A pairwise sum of ``inc(i)`` over ``leaves`` leaves: ``2 * leaves - 1`` tasks; returns (dsk, root key)."""
    dsk: dict = {("leaf", i): (inc, i) for i in range(leaves)}
    level = [("leaf", i) for i in range(leaves)]
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for i in range(0, len(level) - 1, 2):
            key = ("sum", depth, i // 2)
            dsk[key] = (operator.add, level[i], level[i + 1])
            nxt.append(key)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return dsk, level[0]


def expected_tree(leaves: int = LEAVES) -> int:
    return sum(range(1, leaves + 1))


def array_expression():
    import dask.array as da

    x = da.random.random((ARRAY_SIDE, ARRAY_SIDE), chunks=(CHUNK, CHUNK))
    return (x + x.T).mean()


@contextlib.contextmanager
def our_client() -> Iterator:
    """This engine: ``LocalCluster(n_workers=2)`` and a Client of it, both workers joined."""
    from scaler_jupyter import Client, LocalCluster

    with LocalCluster(n_workers=N_WORKERS) as cluster, Client(cluster.address) as client:
        client.wait_for_workers(N_WORKERS, timeout=60)
        yield client


@contextlib.contextmanager
def dask_client() -> Iterator:
    """Dask distributed: a LocalCluster of 2 single-threaded worker processes and a Client of it."""
    import distributed

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with distributed.LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                                      dashboard_address=None, host="127.0.0.1") as cluster, \
                distributed.Client(cluster) as client:
            client.wait_for_workers(N_WORKERS, timeout=60)
            yield client


SYSTEMS = {"ours": our_client, "dask": dask_client}


def timed(fn: Callable[[], object], check: Callable[[object], None], repeat: int) -> float:
    check(fn())  # warm-up: functions shipped, workers' imports done
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
        check(value)
    return statistics.median(times)


def run(name: str, repeat: int) -> dict[str, float | str]:
    dsk, root = tree_graph()
    want = expected_tree()
    expression = array_expression()
    results: dict[str, float | str] = {}
    with SYSTEMS[name]() as client:
        get = client.get

        def check_tree(value):
            assert value == want, (value, want)

        def check_mean(value):
            assert 0.9 < float(value) < 1.1, value  # the mean of x + x.T for uniform x is about 1

        results["tree"] = timed(lambda: get(dsk, root), check_tree, repeat)
        results["array"] = timed(lambda: expression.compute(scheduler=get), check_mean, repeat)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(SYSTEMS))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    print(f"# graphs benchmark: {platform.python_version()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}, {N_WORKERS} workers per system, median of {args.repeat}")
    results = {}
    for name in names:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        results[name] = run(name, args.repeat)
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        if left:
            print(f"# {name} left {len(left)} processes: ended", file=sys.stderr)
            for process in left:
                process.kill()
    rows = [("tree reduction, 9,999 tasks (s)", "tree"), ("(x + x.T).mean(), 4000² in 500² chunks (s)", "array")]
    header = ["benchmark", *names] + (["dask / ours"] if {"ours", "dask"} <= set(names) else [])
    table = [header]
    for label, metric in rows:
        row = [label, *(f"{results[n][metric]:.3f}" for n in names)]
        if len(header) > len(names) + 1:
            row.append(f"{results['dask'][metric] / results['ours'][metric]:.2f}x")
        table.append(row)
    print_table(table)
    return 0


def print_table(table: list[list[str]]) -> None:
    """Rows of cells, columns padded to their widest cell."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
