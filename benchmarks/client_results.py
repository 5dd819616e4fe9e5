"""Client result delivery: large results the caller owns, and graphs with many output keys (issue 17).

Systems, each with 2 workers of one process each:

- ``ours`` scaler_jupyter: ``LocalCluster(n_workers=2)`` and its ``Client``;
- ``pool`` ``concurrent.futures.ProcessPoolExecutor(2)`` (spawn context), for large results;
- ``dask-sync`` Dask's synchronous ``dask.get`` in this process, for many output keys (the floor: no
  transport at all).

Benchmarks (wall-clock time in this process, ``time.perf_counter``, the best of ``--repeat`` runs after
one untimed warm-up):

1. large results: 50 tasks, each returning its own 10 MB float64 array (distinct contents); MB/s = 500 MB
   over the time from the first submit to the last result. Every result is checked writable (an
   in-place write), as the caller's own array; a read-only one fails the run.
2. many output keys: ``get(dsk, keys)`` of a graph of N independent tasks, every key requested, for
   N = 2,000, 8,000 and 10,000, in seconds; then the cost ratio of 8,000 keys over 2,000 (linear is 4;
   the target is at most 5x that of 2,000), and whether 10,000 keys take under 1.5 s. Two rows for
   ours: the task's function defined in this script (``inc``: it travels by value inside every task,
   as a notebook's functions do) and one imported from a module (``operator.neg``: by reference, as
   Dask's own functions in a Dask collection's graph).

Usage::

    python benchmarks/client_results.py [--repeat 3] [--only ours,pool]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import operator
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
N_WORKERS = 2
LARGE_TASKS = 50
LARGE_ELEMENTS = 1_250_000  # float64: 10 MB
MB = 1_000_000
KEY_COUNTS = (2_000, 8_000, 10_000)


def make_array(seed: int) -> np.ndarray:
    return np.full(LARGE_ELEMENTS, float(seed))


def inc(x: int) -> int:
    return x + 1


def keys_graph(n: int, function: Callable[[int], int]) -> tuple[dict, list]:
    dsk = {("task", i): (function, i) for i in range(n)}
    return dsk, list(dsk)


def check_keys(values, n: int, function: Callable[[int], int]) -> None:
    if len(values) != n or values[0] != function(0) or values[-1] != function(n - 1):
        raise AssertionError("wrong values for the graph's keys")


def large_results(map_all: Callable) -> float:
    """MB/s of 50 results of 10 MB, each written in place once received."""
    started = time.perf_counter()
    arrays = map_all(make_array, range(LARGE_TASKS))
    elapsed = time.perf_counter() - started
    for seed, array in enumerate(arrays):
        if array[0] != seed:
            raise AssertionError("wrong result")
        array[0] = -1.0  # the caller's own array: raises if it is read-only
    return LARGE_TASKS * LARGE_ELEMENTS * 8 / MB / elapsed


def many_keys(get: Callable, n: int, function: Callable[[int], int] = inc) -> float:
    dsk, keys = keys_graph(n, function)
    started = time.perf_counter()
    values = get(dsk, keys)
    elapsed = time.perf_counter() - started
    check_keys(values, n, function)
    return elapsed


def best_of(repeat: int, measure: Callable[[], float], higher_is_better: bool) -> float:
    measure()  # warm-up: functions shipped, workers started
    figures = [measure() for _ in range(repeat)]
    return max(figures) if higher_is_better else min(figures)


@contextlib.contextmanager
def ours() -> Iterator:
    try:
        import scaler_jupyter
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        import scaler_jupyter
    with scaler_jupyter.LocalCluster(n_workers=N_WORKERS) as cluster, scaler_jupyter.Client(cluster.address) as client:
        client.wait_for_workers(N_WORKERS)
        yield client


def run(system: str, repeat: int) -> dict[str, dict]:
    """Figures by row of the tables: ``{row: {"large": MB/s} or {N: seconds}}``."""
    figures: dict[str, dict] = {}
    if system == "ours":
        with ours() as client:
            figures["ours"] = {"large": best_of(repeat, lambda: large_results(lambda f, xs: list(client.map(f, xs))),
                                                True)}
            by_reference = figures["ours, module function"] = {}
            for n in KEY_COUNTS:
                figures["ours"][n] = best_of(repeat, lambda n=n: many_keys(client.get, n), False)
                by_reference[n] = best_of(repeat, lambda n=n: many_keys(client.get, n, operator.neg), False)
    elif system == "pool":
        with ProcessPoolExecutor(N_WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
            figures["pool"] = {"large": best_of(repeat, lambda: large_results(lambda f, xs: list(pool.map(f, xs))),
                                                True)}
    elif system == "dask-sync":
        import dask

        figures["dask-sync"] = {n: best_of(repeat, lambda n=n: many_keys(dask.get, n), False) for n in KEY_COUNTS}
    return figures


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="ours,pool,dask-sync")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, dict] = {}
    for system in args.only.split(","):
        results.update(run(system, args.repeat))

    print(f"python {platform.python_version()}, {psutil.cpu_count()} cores, {N_WORKERS} workers, "
          f"best of {args.repeat}")
    print()
    print(f"large results: {LARGE_TASKS} x 10 MB, written in place by the caller")
    rows = [[s, f"{f['large']:.0f}"] for s, f in results.items() if "large" in f]
    print_table(["system", "MB/s"], rows)
    print()
    print("many output keys: get() of N independent tasks, every key requested")
    rows = []
    for system, figures in results.items():
        if KEY_COUNTS[0] not in figures:
            continue
        ratio = figures[8_000] / figures[2_000]
        rows.append([system, *(f"{figures[n]:.3f}" for n in KEY_COUNTS), f"{ratio:.1f}",
                     "yes" if figures[10_000] < 1.5 else "no"])
    print_table(["system", *(f"{n:,} keys s" for n in KEY_COUNTS), "8,000/2,000", "10,000 < 1.5 s"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
