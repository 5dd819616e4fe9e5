"""Shared-memory segments after ``kill -9`` (issue 13, item 3): does anything stay held?

For each kind of process (a client, a worker, the scheduler), ``--trials`` times (20 by default): a fresh
``LocalCluster(n_workers=2)`` runs tasks whose 10 MB arguments and results travel as segments, the process
is killed with SIGKILL mid-work, the rest recovers (the scheduler drops the client and the cluster runs a
task again; the lost worker's tasks finish on the other; the client and the workers see the scheduler gone
and the workers leave), and then every process this script started is searched for a segment fd or
mapping, and /dev/shm for anything named for the engine. The trial routine is the tests' own
(``tests/shm_trials.py``). Printed per kind: trials, trials that left anything, and the time from recovery
to the last segment freed (median and worst).

Target: no segment left after 20 trials of each kind. Usage::

    python benchmarks/shared_memory.py              # 20 trials of each kind
    python benchmarks/shared_memory.py --trials 3 --kinds worker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' trial routine

from tests import shm_trials


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kinds", default=",".join(shm_trials.KINDS), help="client,worker,scheduler")
    args = parser.parse_args()
    rows, failed = [], False
    for kind in args.kinds.split(","):
        times, leaks, errors = [], 0, 0
        for i in range(args.trials):
            try:
                seconds, held, dev_shm = shm_trials.trial(kind)
            except Exception:
                errors += 1
                print(f"[{kind} trial {i + 1}] failed:", file=sys.stderr)
                traceback.print_exc()
                continue
            times.append(seconds)
            if held or dev_shm:
                leaks += 1
                print(f"[{kind} trial {i + 1}] left: held {held}, /dev/shm {dev_shm}", file=sys.stderr)
            print(f"{kind} trial {i + 1}/{args.trials}: freed {seconds:.2f}s after recovery"
                  f"{'' if not (held or dev_shm) else ', LEFT SOMETHING'}", file=sys.stderr, flush=True)
        failed |= bool(leaks or errors)
        rows.append((kind, args.trials, errors, leaks, statistics.median(times) if times else float("nan"),
                     max(times, default=float("nan"))))
    print(f"\nShared-memory segments after kill -9 ({args.trials} trials of each kind)")
    print(f"{'killed':<10} {'trials':>6} {'failed':>6} {'left':>5} {'freed p50 s':>11} {'freed max s':>11}")
    for kind, trials, errors, leaks, p50, worst in rows:
        print(f"{kind:<10} {trials:>6} {errors:>6} {leaks:>5} {p50:>11.2f} {worst:>11.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
