"""parfun benchmark: a word count with the partition size learned, against fixed sizes and Citi's parfun, in one run.

Workload: 2,000,000 synthetic lines (5 words each, drawn from 5,000 words, seeded), counted
by ``Counter(chain.from_iterable(map(str.split, lines)))`` per partition and combined by
summing the Counters (``sum(parts, Counter())``), on 2 workers.

Runs, each checked against the sequential count:

1. sequential: the function on the whole input, in this process (the better of a run before and one
   after the others); and the machine's ceiling for 2 workers: two forked processes counting half the
   lines each, the input already in both;
2. learned: 5 successive calls of one ``@pf.parallel`` function on ``--backend`` (default
   ``scaler_local``, 2 workers), its size learned from scratch; the chosen size and the
   overhead that ``profile=True`` reports are shown;
3. fixed: the same function with ``fixed_partition_size`` from a grid (1k, 5k, 20k, 100k,
   500k), one call each, on the same backend;
4. Citi's parfun 7.2.2 (``parfun`` on PyPI) with its ``local_multiprocessing`` backend
   (2 processes), its size learned from scratch, one call (after a small untimed call that
   starts its pool, as our backends are started before they are timed).

Every figure is wall-clock time in this process (``time.perf_counter``). The table shows each
run's time against the sequential time and against the best fixed size of the grid; above 1
is faster. A run that fails shows ``n/a`` and the reason; its traceback goes to stderr.

Usage::

    python benchmarks/parfun_wordcount.py                     # about two minutes on 2 cores
    python benchmarks/parfun_wordcount.py --backend local_multiprocessing
    python benchmarks/parfun_wordcount.py --lines 200000      # a quick look
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.metadata
import io
import logging
import os
import platform
import random
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from engine import descendants, end_leftovers  # benchmarks/engine.py: the same process bookkeeping

N_WORKERS = 2
LINES = 2_000_000
WORDS_PER_LINE = 5
VOCABULARY = 5_000
LEARNED_CALLS = 5
GRID = (1_000, 5_000, 20_000, 100_000, 500_000)
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


def timed(call: Callable[[], collections.Counter], expected: collections.Counter) -> float:
    start = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - start
    if result != expected:
        raise AssertionError("the parallel count differs from the sequential one")
    return elapsed


def backend_settings(backend: str) -> dict:
    return {"max_workers": N_WORKERS} if backend == "local_multiprocessing" else {"n_workers": N_WORKERS}


def run_ours(backend: str, lines: list[str], expected: collections.Counter) -> list[Row]:
    pf = _import_ours()
    split = pf.per_argument(lines=pf.py_list.by_chunk)
    learned = pf.parallel(split=split, combine_with=add_counters)(count_words)
    rows: list[Row] = []
    with pf.set_parallel_backend_context(backend, **backend_settings(backend)):
        # every worker started and ready before anything is timed (a process pool starts its processes lazily)
        list(pf.parallel_map(abs, range(4 * N_WORKERS)))
        for call in range(1, LEARNED_CALLS + 1):
            row = Row(f"ours, learned, call {call}")
            try:
                row.seconds = timed(lambda: learned(lines), expected)
                model = learned.partition_model()
                profile = learned.last_profile()
                sizes = [p.size for p in learned.last_trace().partitions]
                row.size = f"{model['chosen_size']:,}"
                row.overhead = f"{100 * profile['overhead_seconds'] / profile['cpu_seconds']:.1f}%"
                row.note = f"{model['state']}, {len(sizes)} partitions"
            except Exception as exc:
                report_failure(row.label, exc)
                row.note = reason(exc)
            rows.append(row)
        print(f"\nprofile=True report of the last learned call:\n{pf_report(learned)}\n", file=sys.stderr)
        for size in GRID:
            fixed = pf.parallel(split=split, combine_with=add_counters, fixed_partition_size=size)(count_words)
            row = Row(f"ours, fixed {size:,}", f"{size:,}")
            try:
                row.seconds = timed(lambda fixed=fixed: fixed(lines), expected)
                profile = fixed.last_profile()
                row.overhead = f"{100 * profile['overhead_seconds'] / profile['cpu_seconds']:.1f}%"
                row.note = f"{profile['partitions']} partitions"
            except Exception as exc:
                report_failure(row.label, exc)
                row.note = reason(exc)
            rows.append(row)
    return rows


def pf_report(function) -> str:
    from scaler_jupyter.parfun.profiling import report

    return report(function.last_trace())


def run_citi(lines: list[str], expected: collections.Counter) -> Row:
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
                row.seconds = timed(lambda: citi_count_words(lines), expected)
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


def machine_ceiling(lines: list[str]) -> float | None:
    """Seconds for two forked processes to count half the lines each: what this machine allows for 2 workers now.

    Two cores of a shared machine do not always give twice the work (neighbours, shared caches);
    this bound, measured in the same run, says how much of a shortfall is the machine's.
    """
    if not hasattr(os, "fork"):
        return None
    half = len(lines) // 2
    start = time.perf_counter()
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
    return time.perf_counter() - start


# --- reporting -----------------------------------------------------------------------------------------------


def reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 80 else text[:77] + "..."


def report_failure(label: str, exc: BaseException) -> None:
    print(f"\n[{label}] failed:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


def ratio(reference: float | None, seconds: float | None) -> str:
    if reference is None or seconds is None or seconds <= 0:
        return "-"
    return f"{reference / seconds:.2f}x"


def print_table(rows: list[Row], sequential: float) -> None:
    fixed = [row.seconds for row in rows if row.label.startswith("ours, fixed") and row.seconds is not None]
    best_fixed = min(fixed) if fixed else None
    headers = ["run", "partition size", "seconds", "vs sequential", "vs best fixed", "overhead", "note"]
    table = [[row.label, row.size, "n/a" if row.seconds is None else f"{row.seconds:.3f}",
              ratio(sequential, row.seconds), ratio(best_fixed, row.seconds), row.overhead, row.note]
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
        "vs sequential, vs best fixed: that time over this run's; above 1 is faster. overhead: the share of the CPU "
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
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logging.basicConfig(handlers=[handler])
    load_before = os.getloadavg()[0]
    print(f"making {args.lines:,} lines ...", file=sys.stderr, flush=True)
    lines = make_lines(args.lines)
    print("counting them sequentially ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    expected = count_words(lines)
    sequential = time.perf_counter() - start
    sequential_row = Row("sequential, in this process", "-", sequential, "-", f"{sum(expected.values()):,} words")
    rows = [sequential_row]
    ceiling = machine_ceiling(lines)
    if ceiling is not None:
        rows.append(Row("ceiling: 2 forked processes, halves", f"{len(lines) // 2:,}", ceiling, "-",
                        "the input already in both: no data moves, nothing combined"))
    before = set(descendants())
    print(f"running ours on {args.backend} ...", file=sys.stderr, flush=True)
    try:
        rows += run_ours(args.backend, lines, expected)
    finally:
        end_leftovers("ours", before)
    if not args.skip_citi:
        print("running Citi's parfun ...", file=sys.stderr, flush=True)
        try:
            rows.append(run_citi(lines, expected))
        finally:
            end_leftovers("citi", before)
    # the baseline is the better of two sequential runs, before and after: a slow spell of the machine must not
    # flatter the parallel runs
    again = timed(lambda: count_words(lines), expected)
    sequential_row.note += f"; best of {sequential:.3f} s (before) and {again:.3f} s (after)"
    sequential_row.seconds = sequential = min(sequential, again)
    print()
    print(machine_note(args.backend, load_before))
    print(f"\nWord count: {args.lines:,} lines, {N_WORKERS} workers, combined by summing Counters")
    print_table(rows, sequential)
    return 0


if __name__ == "__main__":
    sys.exit(main())
