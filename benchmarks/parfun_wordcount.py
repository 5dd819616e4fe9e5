"""parfun benchmark: a word count with the partition size learned, against fixed sizes and Citi's parfun, in one run.

Workload: 2,000,000 synthetic lines (5 words each, drawn from 5,000 words, seeded), counted
by ``Counter(chain.from_iterable(map(str.split, lines)))`` per partition and combined by
summing the Counters (``sum(parts, Counter())``), on 2 workers.

Every parallel run comes right after a sequential count in this process, and is compared with
it: this machine's speed drifts by tens of percent within minutes, a pair of runs seconds apart
does not. Runs, each checked against the sequential count:

1. sequential: the function on the whole input, in this process (the median of the runs made
   right before each other run); the machine's ceiling for 2 workers: two forked processes counting
   half the lines each, the input already in both; and the floor of the overhead: the CPU time
   to serialize and load the lines against counting them, in this process alone (what any
   backend that moves the lines to other processes reports at least);
2. fixed: ``@pf.parallel`` with ``fixed_partition_size`` from a grid (1k, 5k, 20k, 100k, 500k),
   one call each, then two more calls of the sizes within 1.5x of the best speed-up (their
   median kept), on ``--backend`` (default ``scaler_local``, 2 workers);
3. learned: 5 successive calls of one ``@pf.parallel`` function on the same backend, its size
   learned from scratch, each between two calls at the best fixed size of the grid (their mean
   time is compared with the learned call's: a drift of the machine's speed cancels out); the
   chosen size and the overhead that ``profile=True`` reports are shown, and the medians of
   calls 3 to 5;
4. Citi's parfun 7.2.2 (``parfun`` on PyPI) with its ``local_multiprocessing`` backend
   (2 processes), its size learned from scratch, one call (after a small untimed call that
   starts its pool, as our backends are started before they are timed).

Every figure is wall-clock time in this process (``time.perf_counter``). The table shows each
run's speed-up over its sequential run, and against the best fixed size: for a learned call,
the mean time of the best fixed size's runs around it over its own; for a fixed size, its
speed-up over the best one's. Above 1 is faster. A run that fails shows ``n/a`` and the
reason; its traceback goes to stderr.

Usage::

    python benchmarks/parfun_wordcount.py                     # about four minutes on 2 cores
    python benchmarks/parfun_wordcount.py --backend local_multiprocessing
    python benchmarks/parfun_wordcount.py --lines 200000      # a quick look
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.metadata
import io
import os
import platform
import random
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from engine import descendants, end_leftovers, warnings_only  # benchmarks/engine.py: the same bookkeeping

N_WORKERS = 2
LINES = 2_000_000
WORDS_PER_LINE = 5
VOCABULARY = 5_000
LEARNED_CALLS = 5
GRID = (1_000, 5_000, 20_000, 100_000, 500_000)
CONTENDERS = 1.5  # fixed sizes within this factor of the fastest are run twice more
SEED = 20240601

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- the workload: module-level, so that every backend can import it -------------------------------------


def count_words(lines: Sequence[str]) -> collections.Counter:
    """How often each word appears in ``lines``."""
    return collections.Counter(chain.from_iterable(map(str.split, lines)))


def add_counters(parts: Iterator[collections.Counter]) -> collections.Counter:
    return sum(parts, collections.Counter())


# Citi's parfun pickles a decorated function's original by the name it gives it in its module: the decoration
# must happen at import, so that its spawned workers (which import this script as __mp_main__) make that name too.
try:
    import parfun as citi
except ImportError:
    citi = None

if citi is not None:

    @citi.parallel(split=citi.per_argument(lines=citi.py_list.by_chunk), combine_with=add_counters, profile=True)
    def citi_count_words(lines: Sequence[str]) -> collections.Counter:
        return count_words(lines)

    @citi.parallel(split=citi.per_argument(lines=citi.py_list.by_chunk), combine_with=add_counters,
                   fixed_partition_size=10)
    def citi_warm_up(lines: Sequence[str]) -> collections.Counter:
        return count_words(lines)


def make_lines(n: int) -> list[str]:
    rng = random.Random(SEED)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = sorted({"".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(VOCABULARY * 2)})
    vocabulary = rng.sample(vocabulary, VOCABULARY)
    return [" ".join(rng.choices(vocabulary, k=WORDS_PER_LINE)) for _ in range(n)]


# --- runs ----------------------------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    size: str = "-"
    seconds: float | None = None
    overhead: str = "-"
    note: str = ""
    timed: bool = True  # False for a row of figures other than a time
    sequential: float | None = None  # the sequential run just before this one, that this one is compared with
    versus_best: float | None = None  # runs at the grid's best fixed size around this one: their mean time over this


def _import_ours():
    """``scaler_jupyter.parfun`` from the installed package, or else from this checkout."""
    try:
        import scaler_jupyter.parfun as pf
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        # the backends' children run ``python -m scaler_jupyter``: they need the checkout too
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        import scaler_jupyter.parfun as pf
    return pf


def timed(call: Callable[[], collections.Counter | None], expected: collections.Counter) -> float:
    """Seconds ``call`` took; its count must be ``expected`` (None: it has nothing to check)."""
    start = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - start
    if result is not None and result != expected:
        raise AssertionError("the parallel count differs from the sequential one")
    return elapsed


class Paired:
    """Times each run right after a sequential count, and compares the two.

    This machine's speed drifts by tens of percent within minutes (other tenants, shared
    cores): a ratio of two runs made seconds apart says more than one against a baseline
    taken minutes before.
    """

    def __init__(self, lines: list[str], expected: collections.Counter) -> None:
        self.lines = lines
        self.expected = expected
        self.sequential: list[float] = []

    def time(self, row: Row, call: Callable[[], collections.Counter | None]) -> None:
        """Set ``row.sequential`` and ``row.seconds``: a sequential count, then ``call``."""
        row.sequential = timed(lambda: count_words(self.lines), self.expected)
        self.sequential.append(row.sequential)
        row.seconds = timed(call, self.expected)


def backend_settings(backend: str) -> dict:
    return {"max_workers": N_WORKERS} if backend == "local_multiprocessing" else {"n_workers": N_WORKERS}


def run_ours(backend: str, lines: list[str], paired: Paired) -> list[Row]:
    """The grid of fixed sizes first, then the learned calls, each between two calls at the best fixed size."""
    pf = _import_ours()
    split = pf.per_argument(lines=pf.py_list.by_chunk)
    learned = pf.parallel(split=split, combine_with=add_counters)(count_words)
    rows: list[Row] = []
    with pf.set_parallel_backend_context(backend, **backend_settings(backend)):
        # every worker started and ready before anything is timed (a process pool starts its processes lazily)
        list(pf.parallel_map(abs, range(4 * N_WORKERS)))
        grid = run_grid(pf, split, lines, paired)
        best = max(grid, key=lambda row: speedup(row) or 0.0)
        best_size = GRID[grid.index(best)]
        best_fixed = pf.parallel(split=split, combine_with=add_counters, fixed_partition_size=best_size)(count_words)
        for call in range(1, LEARNED_CALLS + 1):
            row = Row(f"ours, learned, call {call}")
            try:
                before_call = timed(lambda: best_fixed(lines), paired.expected)
                paired.time(row, lambda: learned(lines))
                model = learned.partition_model()
                profile = learned.last_profile()
                sizes = [p.size for p in learned.last_trace().partitions]
                row.size = f"{model['chosen_size']:,}"
                row.overhead = f"{100 * profile['overhead_seconds'] / profile['cpu_seconds']:.1f}%"
                row.note = f"{model['state']}, {len(sizes)} partitions; best fixed around it: "
                after = timed(lambda: best_fixed(lines), paired.expected)
                row.versus_best = (before_call + after) / 2 / row.seconds
                row.note += f"{before_call:.3f} and {after:.3f} s"
            except Exception as exc:
                report_failure(row.label, exc)
                row.note = reason(exc)
            rows.append(row)
        print(f"\nprofile=True report of the last learned call:\n{pf_report(learned)}\n", file=sys.stderr)
        rows.append(median_row([row for row in rows if row.label.endswith(("call 3", "call 4", "call 5"))],
                               "ours, learned, calls 3-5 (median)"))
    return rows + grid


def run_grid(pf, split, lines: list[str], paired: Paired) -> list[Row]:
    """Each fixed size once; then the sizes within ``CONTENDERS`` of the fastest twice more, their median kept.

    One run of each size is what the machine's noise makes of it: the median of three keeps a lucky
    or an unlucky run from deciding which size is best.
    """
    runs: dict[int, list[Row]] = {}
    for attempt in range(3):
        best = max((speedup(row) or 0.0 for rows in runs.values() for row in rows), default=0.0)
        for size in GRID:
            if attempt and (speedup(runs[size][0]) or 0.0) * CONTENDERS < best:
                continue
            fixed = pf.parallel(split=split, combine_with=add_counters, fixed_partition_size=size)(count_words)
            row = Row(f"ours, fixed {size:,}", f"{size:,}")
            try:
                paired.time(row, lambda fixed=fixed: fixed(lines))
                profile = fixed.last_profile()
                row.overhead = f"{100 * profile['overhead_seconds'] / profile['cpu_seconds']:.1f}%"
                row.note = f"{profile['partitions']} partitions"
            except Exception as exc:
                report_failure(row.label, exc)
                row.note = reason(exc)
            runs.setdefault(size, []).append(row)
    rows = []
    for size in GRID:
        done = runs[size]
        if len(done) == 1:
            rows.append(done[0])
        else:
            row = median_row(done, done[0].label)
            row.size = done[0].size
            row.note = f"{done[0].note}; median of {len(done)}"
            rows.append(row)
    return rows


def median_row(rows: list[Row], label: str) -> Row:
    """The run of median speed-up over its sequential run among ``rows`` (failed ones left out), as ``label``."""
    done = sorted((row for row in rows if speedup(row) is not None), key=speedup)
    if not done:
        return Row(label, note="no run succeeded")
    middle = done[(len(done) - 1) // 2]
    speedups = ", ".join(f"{speedup(row):.2f}x" for row in rows if speedup(row) is not None)
    versus = [row.versus_best for row in rows if row.versus_best is not None]
    return Row(label, middle.size, middle.seconds, middle.overhead, f"medians of {speedups} and of "
               f"{', '.join(f'{v:.2f}x' for v in versus)} vs best fixed", sequential=middle.sequential,
               versus_best=statistics.median(versus) if versus else None)


def speedup(row: Row) -> float | None:
    """The row's sequential run's time over its own; None if either is missing."""
    if row.sequential is None or row.seconds is None or row.seconds <= 0:
        return None
    return row.sequential / row.seconds


def transfer_floor(lines: list[str], size: int) -> Row:
    """What moving the lines to another process costs at all, measured in this process alone.

    Each partition of ``size`` lines is serialized as parfun does and loaded back, and counted:
    CPU time of this thread, no backend, no other process. The serialize + load share of
    that CPU time is the least overhead any backend that moves the lines reports for this
    workload; the rest of a real run's overhead is the backend's and the combining's.
    """
    from scaler_jupyter.parfun import payload

    moved = computed = 0.0
    for start in range(0, len(lines), size):
        part = tuple(lines[start:start + size])
        begin = time.thread_time()
        data = payload.dumps(part)
        loaded = payload.loads(data)
        middle = time.thread_time()
        count_words(loaded)
        computed += time.thread_time() - middle
        moved += middle - begin
        del data, loaded
    share = moved / (moved + computed)
    return Row("floor: serialize + load only, 1 process", f"{size:,}", None, f"{100 * share:.1f}%", timed=False, note=
               f"{1e9 * moved / len(lines):.0f} ns a line to move, {1e9 * computed / len(lines):.0f} ns to count: "
               "the least overhead a backend that moves the lines can report")


def pf_report(function) -> str:
    from scaler_jupyter.parfun.profiling import report

    return report(function.last_trace())


def run_citi(lines: list[str], paired: Paired) -> Row:
    row = Row("Citi parfun, learned, call 1")
    if citi is None:
        row.note = "not installed (pip install parfun==7.2.2)"
        return row
    row.label = f"Citi parfun {importlib.metadata.version('parfun')}, learned, call 1"
    try:
        citi.set_parallel_backend("local_multiprocessing", max_workers=N_WORKERS)
        try:
            citi_warm_up(lines[:100])  # starts the process pool, untimed
            report = io.StringIO()
            with contextlib.redirect_stderr(report):  # its profile report: where it tells the size it learned
                paired.time(row, lambda: citi_count_words(lines))
            print(f"Citi's parfun profile report:\n{report.getvalue()}", file=sys.stderr)
            found = re.search(r"estimated partition size: (\d+)", report.getvalue())
            row.size = f"{int(found.group(1)):,}" if found else "-"
            row.note = "local_multiprocessing"
        finally:
            citi.set_parallel_backend("none")
    except Exception as exc:
        report_failure(row.label, exc)
        row.note = reason(exc)
    return row


def machine_ceiling(lines: list[str]) -> None:
    """Two forked processes count half the lines each: what this machine allows for 2 workers now.

    Two cores of a shared machine do not always give twice the work (neighbours, shared caches);
    this bound, measured in the same run, says how much of a shortfall is the machine's.
    """
    half = len(lines) // 2
    children = []
    for part in (slice(0, half), slice(half, None)):
        pid = os.fork()
        if pid == 0:  # the child: count its half, exit without running any cleanup of the parent's
            try:
                count_words(lines[part])
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


# --- reporting -----------------------------------------------------------------------------------------------


def reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 80 else text[:77] + "..."


def report_failure(label: str, exc: BaseException) -> None:
    print(f"\n[{label}] failed:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or reference <= 0:
        return "-"
    return f"{value / reference:.2f}x"


def against_best(row: Row, best_speedup: float | None) -> str:
    """The best fixed size's time over this row's: from the runs made around it if any, else by speed-ups."""
    if row.versus_best is not None:
        return f"{row.versus_best:.2f}x"
    return ratio(speedup(row), best_speedup)


def print_table(rows: list[Row]) -> None:
    fixed = [speedup(row) for row in rows if row.label.startswith("ours, fixed") and speedup(row) is not None]
    best_fixed = max(fixed) if fixed else None
    headers = ["run", "partition size", "seconds", "vs sequential", "vs best fixed", "overhead", "note"]
    table = [[row.label, row.size, "-" if not row.timed else "n/a" if row.seconds is None else f"{row.seconds:.3f}",
              ratio(speedup(row), 1.0), against_best(row, best_fixed), row.overhead, row.note]
             for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *table, strict=True)]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        aligned = [first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(rest[:-1], widths[1:-1],
                                                                                        strict=True))]
        return "  ".join([*aligned, rest[-1]]).rstrip()

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for cells in table:
        print(line(cells))


def machine_note(backend: str, load_before: float) -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return "\n".join([
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; {N_WORKERS} workers; 1-min load "
        f"{load_before:.2f} before the run (other load skews figures)",
        f"ours: scaler_jupyter {version('scaler_jupyter')} on {backend}; peer: parfun {version('parfun')} "
        "(Citi) on local_multiprocessing",
        "vs sequential: the time of a sequential count made just before this run, over this run's (above 1 is "
        "faster); vs best fixed: a learned call's time against the mean of two calls at the best fixed size made "
        "right before and after it, a fixed size's speed-up against the best one's. overhead: the share of the CPU "
        "time that profile=True reports as overhead (partitioning, transfer, scheduling, combining)",
    ])


# --- command line --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="scaler_local",
                        choices=["scaler_local", "local_multiprocessing", "dask_local"],
                        help="where our runs go (default: this engine's private cluster)")
    parser.add_argument("--lines", type=int, default=LINES, help=f"lines to count (default {LINES:,})")
    parser.add_argument("--skip-citi", action="store_true", help="do not run Citi's parfun")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings_only()
    load_before = os.getloadavg()[0]
    print(f"making {args.lines:,} lines ...", file=sys.stderr, flush=True)
    lines = make_lines(args.lines)
    print("counting them sequentially ...", file=sys.stderr, flush=True)
    expected = count_words(lines)
    paired = Paired(lines, expected)
    rows = []
    if hasattr(os, "fork"):
        rows.append(Row("ceiling: 2 forked processes, halves", f"{len(lines) // 2:,}",
                        note="the input already in both: no data moves, nothing combined"))
        paired.time(rows[-1], lambda: machine_ceiling(lines))
    rows.append(transfer_floor(lines, GRID[3]))
    before = set(descendants())
    print(f"running ours on {args.backend} ...", file=sys.stderr, flush=True)
    try:
        rows += run_ours(args.backend, lines, paired)
    finally:
        end_leftovers("ours", before)
    if not args.skip_citi:
        print("running Citi's parfun ...", file=sys.stderr, flush=True)
        try:
            rows.append(run_citi(lines, paired))
        finally:
            end_leftovers("citi", before)
    runs = sorted(paired.sequential)
    median = statistics.median_high(runs)  # a time that was measured, not the mean of two
    rows.insert(0, Row("sequential, in this process", "-", median, "-", sequential=median,
                       note=f"{sum(expected.values()):,} words; median of {len(runs)} runs, one before each other run "
                            f"({runs[0]:.3f} to {runs[-1]:.3f} s)"))
    print()
    print(machine_note(args.backend, load_before))
    print(f"\nWord count: {args.lines:,} lines, {N_WORKERS} workers, combined by summing Counters")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
