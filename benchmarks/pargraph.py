"""pargraph benchmarks: graphs built with ``@delayed`` / ``@graph``, run by ``GraphEngine`` on this engine and on Dask.

Systems, each with 2 workers of one process (one thread) each:

- ``ours``  ``LocalCluster(n_workers=2)``, ``GraphEngine(Client)`` (the graph runs scheduler-side, ``Client.get``);
- ``dask``  Dask distributed: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``,
  ``GraphEngine(distributed.Client)`` (Dask's own ``Client.get``).

Both run the same dict, ``program.to_graph(...).to_call_dict()``. Benchmarks (wall-clock seconds in this process,
the median of ``--repeat`` runs after one untimed warm-up; the dict is built once, outside the timing):

1. fan-out: 20 independent leaves ``nap(i)``, each ``time.sleep(0.05)``, then one ``total`` of them. Ideal:
   20 x 0.05 s over 2 workers = 0.5 s.
2. random DAG: 2,000 tiny tasks, seeded; each depends on up to 3 earlier ones (chosen at random among all
   earlier nodes), and one ``total`` reads every node nothing else reads, so no node is culled.

The table gives each time, ours over the ideal where there is one, and Dask's time over ours (above 1: ours
is faster). Targets (issue 6): the fan-out within 6% of 0.5 s; the DAG at least 5x faster than on Dask.

The task functions are imported from ``benchmarks.pargraph`` (this file, under its module name) so that both
systems send them by reference, as they would a library's, not by value as a script's ``__main__``.

Usage::

    python benchmarks/pargraph.py [--repeat 3] [--only ours,dask]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# workers import the task functions by module name: they need the checkout on their path too
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))

sys.path.insert(0, str(Path(__file__).resolve().parent))  # workers import this module, and it imports graphs
from graphs import dask_client, our_client, print_table  # noqa: E402 (benchmarks/graphs.py: the same two clusters)

from scaler_jupyter.pargraph import GraphEngine, delayed, graph  # noqa: E402 (after the path is set)

N_WORKERS = 2
LEAVES = 20
NAP = 0.05
DAG_NODES = 2_000
DAG_SEED = 2024
MAX_DEPENDENCIES = 3


# ---------------------------------------------------------------------------
# The programs


@delayed
def nap(i: int) -> int:
    time.sleep(NAP)
    return i


@delayed
def total(*values: int) -> int:
    return sum(values)


@delayed
def combine(*values: int) -> int:
    """A tiny task: the sum of its dependencies, plus one, kept small."""
    return (sum(values) + 1) % 1_000_003


@graph
def fan_out(leaves: int) -> int:
    return total(*[nap(i) for i in range(leaves)])


@graph
def random_dag(nodes: int, seed: int) -> int:
    """``nodes`` calls of ``combine``, each on up to 3 earlier ones; the ones nothing reads go to ``total``."""
    rng = random.Random(seed)
    values: list = []
    read: set[int] = set()
    for i in range(nodes):
        chosen = rng.sample(range(i), min(i, rng.randint(0, MAX_DEPENDENCIES)))
        read.update(chosen)
        values.append(combine(*(values[j] for j in chosen)))
    return total(*(value for i, value in enumerate(values) if i not in read))


def programs() -> dict[str, tuple[dict, str, object, float | None]]:
    """name -> (dsk, key, expected value, ideal seconds or None), built from this module under its import name."""
    tasks = importlib.import_module("benchmarks.pargraph")  # not __main__: functions travel by reference
    fan = tasks.fan_out.to_graph(LEAVES).to_call_dict()
    dag = tasks.random_dag.to_graph(DAG_NODES, DAG_SEED).to_call_dict()
    return {
        "fan-out": (*fan, sum(range(LEAVES)), LEAVES * NAP / N_WORKERS),
        "random DAG": (*dag, tasks.random_dag(DAG_NODES, DAG_SEED), None),
    }


# ---------------------------------------------------------------------------
# The systems


@contextlib.contextmanager
def ours() -> Iterator[GraphEngine]:
    with our_client() as client:
        yield GraphEngine(client)


@contextlib.contextmanager
def dask() -> Iterator[GraphEngine]:
    with dask_client() as client:
        yield GraphEngine(client)


SYSTEMS = {"ours": ours, "dask": dask}


def with_fresh_keys(dsk: dict, key: str, tag: str) -> tuple[dict, str]:
    """The same graph with ``tag`` appended to every key. Each run gets its own keys: Dask's scheduler would
    otherwise hand back results of the previous run that it has not yet forgotten, and time nothing."""
    def fresh(value):
        return f"{value}@{tag}" if type(value) is str and value in dsk else value

    renamed = {}
    for k, value in dsk.items():
        if type(value) is tuple and value and callable(value[0]):  # to_dict's tasks: (function, *keys or ints)
            value = (value[0], *map(fresh, value[1:]))
        renamed[fresh(k)] = fresh(value)
    return renamed, fresh(key)


def timed(get: Callable[[dict, str], object], dsk: dict, key: str, expected: object, repeat: int) -> float:
    runs = [with_fresh_keys(dsk, key, f"run{i}") for i in range(repeat + 1)]  # built before any timing
    assert get(*runs[0]) == expected  # warm-up: functions shipped, workers' imports done
    times = []
    for run_dsk, run_key in runs[1:]:
        started = time.perf_counter()
        value = get(run_dsk, run_key)
        times.append(time.perf_counter() - started)
        assert value == expected, (value, expected)
    return statistics.median(times)


def run(name: str, repeat: int, graphs: dict) -> dict[str, float]:
    with SYSTEMS[name]() as engine:
        return {label: timed(engine.get, dsk, key, expected, repeat)
                for label, (dsk, key, expected, _) in graphs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(SYSTEMS))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    graphs = programs()
    tasks = {label: sum(1 for value in dsk.values() if type(value) is tuple and value and callable(value[0]))
             for label, (dsk, *_) in graphs.items()}
    print(f"# pargraph benchmark: {platform.python_version()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}, {N_WORKERS} workers per system, median of {args.repeat}")
    results = {}
    for name in names:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        results[name] = run(name, args.repeat, graphs)
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        if left:
            print(f"# {name} left {len(left)} processes: ended", file=sys.stderr)
            for process in left:
                process.kill()
    rows = [(f"fan-out, {LEAVES} x sleep({NAP:g}) + sum, {tasks['fan-out']} tasks (s)", "fan-out"),
            (f"random DAG, {tasks['random DAG']:,} tiny tasks (s)", "random DAG")]
    both = {"ours", "dask"} <= set(names)
    header = ["benchmark", "ideal", *names] + (["ours / ideal"] if "ours" in names else []) + (
        ["dask / ours"] if both else [])
    table = [header]
    for label, metric in rows:
        ideal = graphs[metric][3]
        row = [label, "-" if ideal is None else f"{ideal:.3f}", *(f"{results[n][metric]:.3f}" for n in names)]
        if "ours" in names:
            row.append("-" if ideal is None else f"{results['ours'][metric] / ideal:.3f}")
        if both:
            row.append(f"{results['dask'][metric] / results['ours'][metric]:.2f}x")
        table.append(row)
    print_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
