"""Engine benchmarks: scaler_jupyter side by side with its peers, in one run, on one machine.

Systems, each with 2 workers of one process each:

- ``ours``   scaler_jupyter: ``LocalCluster(n_workers=2)`` and its ``Client`` (a concurrent.futures.Executor);
- ``pool``   ``concurrent.futures.ProcessPoolExecutor(2)`` (spawn context, as the other systems spawn too);
- ``dask``   Dask distributed: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` and its Client;
- ``scaler`` Citi's Scaler (``scaler`` on PyPI): ``SchedulerClusterCombo(n_workers=2)`` and its Client;
- ``ipp``    ipyparallel: ``Cluster(n=2)`` (an ipcontroller and 2 ipengines, on localhost) and a load-balanced view.

Each system is started, waited on until both workers have run a task, measured on every benchmark,
then stopped, and any process it left behind is reported and ended, before the next system starts.

Benchmarks (every figure is wall-clock time in this process, ``time.perf_counter``):

1. throughput: ``map(noop, range(N))`` over 10,000 no-op tasks (and 100,000 with ``--full``), all results
   collected, in tasks/s; after an untimed warm-up map of 200 tasks.
2. latency: 300 sequential ``submit(noop, 1).result()`` round trips after 20 untimed ones; p50 and p99 in ms.
3. Monte Carlo pi: 2e7 points in 100 tasks, each a pure-Python loop over ``random.random()``; the speedup
   is the time of the same 100 chunks run one after the other in this process (measured once per run)
   over the time of mapping them on the system.
4. large arguments: 50 tasks, each given its own 10 MB float64 array (1.25M elements, distinct contents, so
   no system can deduplicate them) and returning ``arr.nbytes``; MB/s = 500 MB over the time from the
   first submit to the last result; after an untimed warm-up of 4 such tasks, so that every worker has
   imported numpy (the first unpickled array costs a worker that import, ~0.1-0.3 s, on every system).
5. large results: 50 tasks, each returning its own 10 MB float64 array (filled with its index); MB/s = 500 MB
   over the time from the first submit to the last result in this process (the fill is part of the time);
   after the same kind of warm-up.

Each benchmark prints one table: a row per system, each figure followed by its ratio to the best *peer*
(every system but ``ours``), oriented so that a ratio above 1 means better than the best peer (for a
latency: best peer latency / this latency). A system that cannot start, or a benchmark that fails or
overruns ``--timeout``, shows ``n/a`` with the reason; its traceback goes to stderr.

Usage::

    python benchmarks/engine.py                      # every system, default sizes (a few minutes on 2 cores)
    python benchmarks/engine.py --only pool,dask     # some systems
    python benchmarks/engine.py --full               # also 100,000-task throughput
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import logging
import multiprocessing
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

N_WORKERS = 2

THROUGHPUT_WARMUP = 200
LATENCY_WARMUP = 20
LATENCY_SAMPLES = 300
PI_POINTS = 20_000_000
PI_TASKS = 100
PI_POINTS_PER_TASK = PI_POINTS // PI_TASKS
LARGE_TASKS = 50
LARGE_ELEMENTS = 1_250_000  # float64: 10,000,000 bytes = 10 MB
MB = 1_000_000

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- tasks: module-level so that every system can pickle them ------------------------------------------------


def noop(x: Any) -> Any:
    return x


def worker_pid(delay: float) -> int:
    """Sleep a little (so one worker cannot take every task) and say which process ran."""
    time.sleep(delay)
    return os.getpid()


def pi_chunk(seed: int) -> int:
    """Count the points of one chunk that fall in the quarter disc, in pure Python."""
    random.seed(seed)
    rand = random.random
    hits = 0
    for _ in range(PI_POINTS_PER_TASK):
        x = rand()
        y = rand()
        if x * x + y * y <= 1.0:
            hits += 1
    return hits


def array_nbytes(array: np.ndarray) -> int:
    return array.nbytes


def filled_array(value: int) -> np.ndarray:
    return np.full(LARGE_ELEMENTS, float(value))


# --- systems: each one a context manager that starts it and yields an adapter -------------------------------


@dataclass(frozen=True)
class Adapter:
    """What the benchmarks need from a system, whatever its API."""

    submit_and_wait: Callable[..., Any]  # (fn, *args) -> fn(*args), one task, one round trip
    map_all: Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]  # (fn, items) -> [fn(x) for x in items]


def executor_adapter(executor: Executor) -> Adapter:
    return Adapter(
        submit_and_wait=lambda fn, *args: executor.submit(fn, *args).result(),
        map_all=lambda fn, items: list(executor.map(fn, items)),
    )


def _import_ours() -> tuple[type, type]:
    """``scaler_jupyter``'s Client and LocalCluster, from the installed package or else from this checkout."""
    try:
        import scaler_jupyter
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        # the cluster's children run ``python -m scaler_jupyter``: they need the checkout too
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        import scaler_jupyter
    return scaler_jupyter.Client, scaler_jupyter.LocalCluster


@contextlib.contextmanager
def run_ours() -> Iterator[Adapter]:
    client_type, cluster_type = _import_ours()
    with cluster_type(n_workers=N_WORKERS) as cluster, client_type(cluster.address) as client:
        yield executor_adapter(client)


@contextlib.contextmanager
def run_pool() -> Iterator[Adapter]:
    with ProcessPoolExecutor(N_WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield executor_adapter(pool)


@contextlib.contextmanager
def run_dask() -> Iterator[Adapter]:
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=N_WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        warnings.catch_warnings(),
    ):
        # 500 MB of arguments in one map makes Dask suggest client.scatter; we measure plain arguments everywhere
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        yield Adapter(
            submit_and_wait=lambda fn, *args: client.submit(fn, *args, pure=False).result(),
            map_all=lambda fn, items: client.gather(client.map(fn, items, pure=False)),
        )


@contextlib.contextmanager
def stdout_of_children_to(path: Path) -> Iterator[None]:
    """Point file descriptor 1 at ``path`` while child processes are started, so they inherit that."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def run_scaler() -> Iterator[Adapter]:
    import scaler

    # Scaler's worker agents log every event at INFO to /dev/stdout whatever logging_paths says (Worker.run
    # calls setup_logger() with its defaults): send its processes' stdout to a file instead of our tables.
    log = Path(tempfile.gettempdir()) / f"benchmark-scaler-{os.getpid()}.log"
    print(f"scaler's own log: {log}", file=sys.stderr)
    with stdout_of_children_to(log):
        combo = scaler.SchedulerClusterCombo(n_workers=N_WORKERS, logging_paths=(str(log),), logging_level="WARNING")
    try:
        with scaler.Client(address=combo.get_address()) as client:
            yield Adapter(
                submit_and_wait=lambda fn, *args: client.submit(fn, *args).result(),
                # Scaler's map is a blocking starmap: it takes a list of argument tuples and returns a list
                map_all=lambda fn, items: client.map(fn, [(item,) for item in items]),
            )
    finally:
        combo.shutdown()


@contextlib.contextmanager
def run_ipp() -> Iterator[Adapter]:
    import ipyparallel

    before = set(descendants())
    cluster_processes: dict[int, psutil.Process] = {}
    # a throwaway profile directory: the cluster's connection files and logs stay out of ~/.ipython
    with tempfile.TemporaryDirectory(prefix="benchmark-ipp-") as profile_dir:
        cluster = ipyparallel.Cluster(
            n=N_WORKERS,
            profile_dir=profile_dir,
            controller_ip="127.0.0.1",
            shutdown_atexit=True,
            log_level=logging.WARNING,
        )
        try:
            # the controller's and engines' output goes to a file in profile_dir, not into our tables
            with stdout_of_children_to(Path(profile_dir) / "stdout.log"):
                client = cluster.start_and_connect_sync()
            # each engine starts a nanny that outlives it by a few seconds, no longer our descendant by then:
            # note every process of the cluster now, to wait for them all once it is stopped
            cluster_processes.update((pid, p) for pid, p in descendants().items() if pid not in before)
            try:
                # ipyparallel pickles functions without their globals unless told to use cloudpickle, and the
                # engines cannot import this script: cloudpickle sends its functions by value, as Dask does
                client[:].use_cloudpickle().get()
                view = client.load_balanced_view()
                yield Adapter(
                    submit_and_wait=lambda fn, *args: view.apply_async(fn, *args).get(),
                    map_all=lambda fn, items: view.map_async(fn, items).get(),
                )
            finally:
                client.close()
        finally:
            cluster_processes.update((pid, p) for pid, p in descendants().items() if pid not in before)
            try:
                cluster.stop_cluster_sync()
            finally:
                end_processes("ipp", list(cluster_processes.values()))


SYSTEMS: dict[str, Callable[[], contextlib.AbstractContextManager[Adapter]]] = {
    "ours": run_ours,
    "pool": run_pool,
    "dask": run_dask,
    "scaler": run_scaler,
    "ipp": run_ipp,
}
PEERS = [name for name in SYSTEMS if name != "ours"]


def system_version(name: str) -> str:
    distribution = {"ours": "scaler_jupyter", "dask": "distributed", "scaler": "scaler", "ipp": "ipyparallel"}.get(name)
    if distribution is None:
        return f"Python {platform.python_version()}"
    try:
        return f"{distribution} {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{distribution} (checkout)" if name == "ours" else f"{distribution} not installed"


def wait_for_workers(adapter: Adapter, n: int, timeout: float = 60.0) -> None:
    """Block until ``n`` distinct worker processes have each run a task."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while len(seen) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)} of {n} workers ran a task within {timeout:.0f}s")
        seen.update(adapter.map_all(worker_pid, [0.1] * (2 * n)))


# --- benchmarks: each takes an adapter and returns its figures ----------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    header: str
    fmt: str
    higher_is_better: bool | None  # None: shown for information, no ratio


@dataclass(frozen=True)
class Benchmark:
    title: str
    metrics: tuple[Metric, ...]
    run: Callable[[Adapter], dict[str, float]]


def bench_throughput(adapter: Adapter, sizes: Sequence[int]) -> dict[str, float]:
    adapter.map_all(noop, range(THROUGHPUT_WARMUP))
    figures = {}
    for n in sizes:
        start = time.perf_counter()
        results = adapter.map_all(noop, range(n))
        elapsed = time.perf_counter() - start
        if list(results) != list(range(n)):
            raise AssertionError(f"map of {n} no-ops returned wrong results")
        figures[f"tasks_{n}"] = n / elapsed
    return figures


def bench_latency(adapter: Adapter) -> dict[str, float]:
    for _ in range(LATENCY_WARMUP):
        adapter.submit_and_wait(noop, 1)
    samples = []
    for _ in range(LATENCY_SAMPLES):
        start = time.perf_counter()
        if adapter.submit_and_wait(noop, 1) != 1:
            raise AssertionError("noop(1) did not return 1")
        samples.append((time.perf_counter() - start) * 1e3)
    percentiles = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": statistics.median(samples), "p99": percentiles[98]}


def run_pi_sequentially() -> float:
    """Seconds to run the 100 pi chunks one after the other in this process."""
    start = time.perf_counter()
    hits = sum(pi_chunk(seed) for seed in range(PI_TASKS))
    elapsed = time.perf_counter() - start
    check_pi(hits)
    return elapsed


def check_pi(hits: int) -> None:
    estimate = 4 * hits / PI_POINTS
    if abs(estimate - 3.14159) > 0.01:
        raise AssertionError(f"pi estimated as {estimate}")


def bench_pi(adapter: Adapter, sequential_seconds: float) -> dict[str, float]:
    start = time.perf_counter()
    hits = sum(adapter.map_all(pi_chunk, range(PI_TASKS)))
    elapsed = time.perf_counter() - start
    check_pi(hits)
    speedup = sequential_seconds / elapsed
    if speedup > N_WORKERS * 1.05:
        print(
            f"warning: pi speedup {speedup:.2f}x exceeds {N_WORKERS} workers: the sequential baseline was "
            "probably slowed by other load on the machine",
            file=sys.stderr,
        )
    return {"seconds": elapsed, "speedup": speedup}


def make_large_arguments() -> list[np.ndarray]:
    return [np.random.default_rng(seed).random(LARGE_ELEMENTS) for seed in range(LARGE_TASKS)]


LARGE_WARMUP = 4


def bench_large_arguments(adapter: Adapter, arrays: Sequence[np.ndarray]) -> dict[str, float]:
    adapter.map_all(array_nbytes, arrays[:LARGE_WARMUP])
    total = sum(array.nbytes for array in arrays)
    start = time.perf_counter()
    sizes = adapter.map_all(array_nbytes, arrays)
    elapsed = time.perf_counter() - start
    if sum(sizes) != total:
        raise AssertionError("tasks saw arrays of the wrong size")
    return {"seconds": elapsed, "mb_per_s": total / MB / elapsed}


def bench_large_results(adapter: Adapter) -> dict[str, float]:
    adapter.map_all(filled_array, range(LARGE_WARMUP))
    start = time.perf_counter()
    arrays = adapter.map_all(filled_array, range(LARGE_TASKS))
    elapsed = time.perf_counter() - start
    if [(a.nbytes, a[0], a[-1]) for a in arrays] != [(LARGE_ELEMENTS * 8, i, i) for i in range(LARGE_TASKS)]:
        raise AssertionError("results of the wrong size or contents")
    return {"seconds": elapsed, "mb_per_s": LARGE_TASKS * LARGE_ELEMENTS * 8 / MB / elapsed}


def make_benchmarks(full: bool, skip_large: bool) -> list[Benchmark]:
    """The benchmarks to run; the pi baseline and the large arrays are made here, before any system starts."""
    sizes = [10_000, 100_000] if full else [10_000]
    print("running the pi chunks sequentially in this process ...", file=sys.stderr, flush=True)
    sequential_seconds = run_pi_sequentially()
    benchmarks = [
        Benchmark(
            "Throughput: map of no-op tasks (tasks/s)",
            tuple(Metric(f"tasks_{n}", f"{n:,} tasks/s", "{:,.0f}", True) for n in sizes),
            functools.partial(bench_throughput, sizes=sizes),
        ),
        Benchmark(
            f"Latency: one task round trip, {LATENCY_SAMPLES} sequential submit().result() (ms)",
            (Metric("p50", "p50 ms", "{:.3f}", False), Metric("p99", "p99 ms", "{:.3f}", False)),
            bench_latency,
        ),
        Benchmark(
            f"Monte Carlo pi: {PI_POINTS:.0e} points in {PI_TASKS} pure-Python tasks"
            f" (sequential in this process: {sequential_seconds:.2f}s)",
            (Metric("seconds", "wall s", "{:.2f}", None), Metric("speedup", "speedup", "{:.2f}x", True)),
            functools.partial(bench_pi, sequential_seconds=sequential_seconds),
        ),
    ]
    if not skip_large:
        arrays = make_large_arguments()
        benchmarks.append(
            Benchmark(
                f"Large arguments: {LARGE_TASKS} tasks, each with its own {LARGE_ELEMENTS * 8 // MB} MB numpy array",
                (Metric("seconds", "wall s", "{:.2f}", None), Metric("mb_per_s", "MB/s", "{:,.0f}", True)),
                functools.partial(bench_large_arguments, arrays=arrays),
            )
        )
        benchmarks.append(
            Benchmark(
                f"Large results: {LARGE_TASKS} tasks, each returning its own {LARGE_ELEMENTS * 8 // MB} MB numpy array",
                (Metric("seconds", "wall s", "{:.2f}", None), Metric("mb_per_s", "MB/s", "{:,.0f}", True)),
                bench_large_results,
            )
        )
    return benchmarks


# --- running: each system started, measured, stopped, in turn -----------------------------------------------

Outcome = dict[str, float] | str  # the figures, or why there are none


class BenchmarkTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise BenchmarkTimeout in the main thread if the block overruns (waits on futures are interruptible)."""

    def expire(signum: int, frame: Any) -> None:
        raise BenchmarkTimeout(f"{what} took over {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 100 else text[:97] + "..."


def report_failure(system: str, stage: str, exc: BaseException) -> None:
    print(f"\n[{system}] {stage} failed:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


def descendants() -> dict[int, psutil.Process]:
    """Our child processes, except multiprocessing's own helpers that live as long as this process."""
    found = {}
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.cmdline())
            if "resource_tracker" not in command and "forkserver" not in command:
                found[process.pid] = process
    return found


def end_leftovers(system: str, before: set[int], grace: float = 10.0) -> None:
    """Wait for the processes this system started to exit; end, by pid, those still running after ``grace``."""
    end_processes(system, [process for pid, process in descendants().items() if pid not in before], grace)


def end_processes(system: str, processes: list[psutil.Process], grace: float = 10.0) -> None:
    """Wait for ``processes`` to exit; end, by pid, those still running after ``grace``."""
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            print(
                f"[{system}] process {process.pid} ({' '.join(process.cmdline())[:80]}) outlived its system: ending it",
                file=sys.stderr,
            )
            process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=5)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def run_system(name: str, benchmarks: Sequence[Benchmark], timeout: float) -> dict[str, Outcome]:
    print(f"running {name} ({system_version(name)}) ...", file=sys.stderr, flush=True)
    outcomes: dict[str, Outcome] = {}
    before = set(descendants())
    try:
        with contextlib.ExitStack() as stack:
            try:
                with time_limit(timeout, "start"):
                    adapter = stack.enter_context(SYSTEMS[name]())
                    wait_for_workers(adapter, N_WORKERS)
            except Exception as exc:
                report_failure(name, "start", exc)
                return {bench.title: f"did not start: {reason(exc)}" for bench in benchmarks}
            for bench in benchmarks:
                try:
                    with time_limit(timeout, bench.title.split(":")[0]):
                        outcomes[bench.title] = bench.run(adapter)
                except BenchmarkTimeout as exc:
                    # tasks may still be queued: later figures would be wrong, so stop this system here
                    report_failure(name, bench.title, exc)
                    for rest in benchmarks[benchmarks.index(bench) :]:
                        outcomes[rest.title] = reason(exc) if rest is bench else "skipped after a timeout"
                    break
                except Exception as exc:
                    report_failure(name, bench.title, exc)
                    outcomes[bench.title] = reason(exc)
    except Exception as exc:  # stopping the system failed: its figures stand, its processes are ended below
        report_failure(name, "stop", exc)
    finally:
        end_leftovers(name, before)
    return outcomes


# --- reporting -----------------------------------------------------------------------------------------------


def ratio(value: float, best_peer: float | None, higher_is_better: bool) -> str:
    if best_peer is None or value <= 0 or best_peer <= 0:
        return "-"
    return f"{(value / best_peer if higher_is_better else best_peer / value):.2f}"


def best_peer(bench: Benchmark, metric: Metric, results: dict[str, dict[str, Outcome]]) -> float | None:
    values = [
        outcome[metric.key]
        for system, outcomes in results.items()
        if system in PEERS and isinstance(outcome := outcomes.get(bench.title), dict)
    ]
    if not values:
        return None
    return max(values) if metric.higher_is_better else min(values)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(row: list[str]) -> str:
        first, *rest = row
        cells = [first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True))]
        return "  ".join(cells).rstrip()

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


def table_row(system: str, bench: Benchmark, results: dict[str, dict[str, Outcome]]) -> list[str]:
    """The system's figures, each followed by its ratio to the best peer when the metric has one."""
    outcome = results[system].get(bench.title, "not run")
    row = [system]
    for metric in bench.metrics:
        with_ratio = metric.higher_is_better is not None
        if isinstance(outcome, str):
            row += ["n/a", ""] if with_ratio else ["n/a"]
            continue
        value = outcome[metric.key]
        row.append(metric.fmt.format(value))
        if with_ratio:
            row.append(ratio(value, best_peer(bench, metric, results), bool(metric.higher_is_better)))
    return row


def print_report(benchmarks: Sequence[Benchmark], results: dict[str, dict[str, Outcome]], note: str) -> None:
    print()
    print(note)
    for bench in benchmarks:
        headers = ["system"]
        for metric in bench.metrics:
            headers += [metric.header, "vs best peer"] if metric.higher_is_better is not None else [metric.header]
        print()
        print(bench.title)
        print_table(headers, [table_row(system, bench, results) for system in results])
        for system, outcomes in results.items():
            if isinstance(outcome := outcomes.get(bench.title, "not run"), str):
                print(f"  n/a {system}: {outcome}")


def machine_note(systems: Sequence[str], load_before: float) -> str:
    return "\n".join(
        [
            f"machine: {os.cpu_count()} cores, Python {platform.python_version()} ({platform.python_implementation()}),"
            f" {N_WORKERS} workers per system; 1-min load {load_before:.2f} before the run (other load skews figures)",
            "versions: " + ", ".join(f"{name}={system_version(name)}" for name in systems),
            "vs best peer: the figure against the best peer (every system but ours); above 1 is better than it",
        ]
    )


# --- command line --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(SYSTEMS), help=f"comma-separated systems to run, of {','.join(SYSTEMS)}"
    )
    parser.add_argument("--full", action="store_true", help="also measure throughput with 100,000 tasks")
    parser.add_argument("--skip-large", action="store_true",
                        help="skip the large-argument and large-result benchmarks (500 MB each)")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds allowed for a system's start and for each benchmark"
    )
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = sorted(chosen - set(SYSTEMS))
    if unknown or not chosen:
        parser.error(f"unknown system(s) {unknown}; choose from {','.join(SYSTEMS)}")
    args.systems = [name for name in SYSTEMS if name in chosen]  # always in the same order
    return args


def warnings_only() -> None:
    """Warnings and errors of every library on stderr, never their INFO chatter.

    Without a root handler, Scaler's client calls logging.info() at module level, which installs
    one that prints Dask's INFO records.
    """
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logging.basicConfig(handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings_only()
    load_before = os.getloadavg()[0]
    benchmarks = make_benchmarks(full=args.full, skip_large=args.skip_large)
    results = {name: run_system(name, benchmarks, args.timeout) for name in args.systems}
    print_report(benchmarks, results, machine_note(args.systems, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
