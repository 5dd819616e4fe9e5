"""From "start a 2-worker cluster" in a notebook cell to the cluster's widget showing 2 workers, side by side.

In one real IPython kernel (driven over the Jupyter protocol, as a notebook front end drives it),
each system starts a local cluster of 2 single-threaded worker processes and displays its widget:

- ``ours``   ``%scaler start -n 2`` (the widget is displayed once the scheduler counts 2 workers);
- ``dask``   ``LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)``, ``Client(cluster)``,
  ``cluster.wait_for_workers(2)``, then ``cluster`` as the cell's value (its widget);
- ``ipyparallel`` (if installed) ``ipp.Cluster(n=2).start_and_connect_sync()``, ``wait_for_engines(2)``
  (it has no cluster widget: it prints the engine count).

Time: from the execute request to the kernel's idle, the median of ``--repeat`` runs after one untimed
warm-up (each run's cluster is stopped before the next). The widget's text says how many workers it shows;
a run whose widget does not say 2 counts as a failure. Target (issue 11): ours under 2 s.

Usage::

    python benchmarks/notebook_cluster.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.jupyter.kernel import Kernel  # after the path is set

SYSTEMS = {
    "ours": ("%load_ext scaler_jupyter",
             "%scaler start -n 2",
             "%scaler stop"),
    "dask": ("from distributed import LocalCluster, Client",
             "cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)\n"
             "client = Client(cluster)\ncluster.wait_for_workers(2)\ncluster",
             "client.close(); cluster.close()"),
    "ipyparallel": ("import ipyparallel as ipp",
                    "rc = ipp.Cluster(n=2).start_and_connect_sync()\nrc.wait_for_engines(2)\n"
                    "print(len(rc.ids), 'engines')",
                    "rc.cluster.stop_cluster_sync(); rc.close()"),
}
SHOWS_TWO = {"ours": "2 workers", "dask": "workers=2", "ipyparallel": "2 engines"}  # ipyparallel has no widget


def available(name: str) -> bool:
    module = {"ours": "scaler_jupyter", "dask": "distributed", "ipyparallel": "ipyparallel"}[name]
    return importlib.util.find_spec(module) is not None


def measure(name: str, repeat: int) -> list[float]:
    """Seconds per start, in a kernel of its own."""
    setup, start, stop = SYSTEMS[name]
    with tempfile.TemporaryDirectory() as folder:
        kernel = Kernel(folder, env={"JUPYTER_RUNTIME_DIR": folder})
        try:
            kernel.run(setup)
            times = []
            for run in range(repeat + 1):
                output = kernel.run(start, timeout=120)
                shown = output.stdout + "\n".join(bundle.get("text/plain", "") + bundle.get("text/html", "")
                                  for bundle in [*output.displays, output.result or {}])
                if SHOWS_TWO[name] not in shown:
                    raise AssertionError(f"{name}: the widget does not show 2 workers:\n{shown[:500]}")
                kernel.run(stop, timeout=60)
                if run:  # the first is a warm-up
                    times.append(output.elapsed)
            return times
        finally:
            kernel.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per system (default %(default)s)")
    args = parser.parse_args(argv)
    results = {}
    for name in SYSTEMS:
        if not available(name):
            print(f"{name}: not installed, skipped", file=sys.stderr)
            continue
        try:
            results[name] = measure(name, args.repeat)
        except Exception as exc:  # a peer that fails here is reported, and the others still run
            print(f"{name}: failed: {exc}", file=sys.stderr)
    peers = [statistics.median(times) for name, times in results.items() if name != "ours"]
    best_peer = min(peers) if peers else None
    print(f"start a 2-worker cluster to its widget showing 2 workers; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; median of {args.repeat} (seconds)")
    rows = [["system", "median", "min", "max", "best peer / this"]]
    for name, times in results.items():
        median = statistics.median(times)
        rows.append([name, f"{median:.2f}", f"{min(times):.2f}", f"{max(times):.2f}",
                     f"{best_peer / median:.2f}x" if best_peer else "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if "ours" in results:
        verdict = "reached" if statistics.median(results["ours"]) < 2.0 else "NOT reached"
        print(f"target: ours under 2 s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
