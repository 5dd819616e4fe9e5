"""``%%scaler`` round trip in a real kernel, beside the same cell without a magic and with ipyparallel's ``%%px``.

One IPython kernel (``jupyter_client``), driven as a notebook front end drives it. In it:
a ``LocalCluster(n_workers=1)`` of this project with its ``Client``, and an ipyparallel
``Cluster(n=1)`` (one engine) with its ``%%px`` magic on a DirectView of that engine.
Three cells run in turn, round robin, so that noise on the machine falls on all three alike:

- ``plain``     ``x = 1``
- ``%%scaler``  ``%%scaler`` then ``x = 1``  (the cell runs as a task; ``x`` comes back)
- ``%%px``      ``%%px`` then ``x = 1``      (the cell runs on the engine; blocking)

Each figure is timed from the kernel client: from sending the execute request to the
kernel's ``idle`` for it, as a user waits. ``--warmup`` untimed rounds, then ``--rounds``
timed ones (default 50); the table shows the median and the 90th percentile, and each
magic's cost over the plain cell. Issue 11's targets: ``%%scaler`` at most 20 ms, and its
cost over a plain cell at most a third of ``%%px``'s.

    python benchmarks/notebook.py [--rounds 50] [--warmup 5]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import tempfile
import time

from jupyter_client.manager import KernelManager

from scaler_jupyter import LocalCluster

CELLS = {
    "plain": "x = 1",
    "%%scaler": "%%scaler\nx = 1",
    "%%px": "%%px\nx = 1",
}


class Kernel:
    """A kernel of this interpreter; ``run`` returns the seconds from execute request to idle."""

    def __init__(self, cwd: str) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120.0) -> float:
        started = time.perf_counter()
        msg_id = self.client.execute(code)
        error = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no idle within {timeout:g}s for: {code!r}") from None
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "error":
                error = message["content"]
            elif message["msg_type"] == "stream" and message["content"]["name"] == "stderr":
                error = error or {"ename": "stderr", "evalue": message["content"]["text"]}
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                elapsed = time.perf_counter() - started
                break
        self.client.get_shell_msg(timeout=10)
        if error is not None:
            raise RuntimeError(f"{code!r} failed: {error['ename']}: {error['evalue']}")
        return elapsed

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CELLS}
    with LocalCluster(n_workers=1) as cluster, tempfile.TemporaryDirectory() as cwd:
        kernel = Kernel(cwd)
        try:
            kernel.run("%load_ext scaler_jupyter")
            kernel.run(f"%scaler connect {cluster.address}")
            kernel.run("import ipyparallel as ipp\n"
                       "ipp_cluster = ipp.Cluster(n=1, log_level=40)\n"
                       "rc = ipp_cluster.start_and_connect_sync(activate=True)\n"
                       "rc.wait_for_engines(1, timeout=60)\n"
                       "rc[:].activate()", timeout=180)
            for round_index in range(args.warmup + args.rounds):
                for name, code in CELLS.items():
                    elapsed = kernel.run(code)
                    if round_index >= args.warmup:
                        times[name].append(elapsed)
            kernel.run("import scaler_jupyter\nscaler_jupyter.current_client().shutdown()\nrc.close()\n"
                       "ipp_cluster.stop_cluster_sync()", timeout=120)
        finally:
            kernel.shutdown()
    report(times, args.rounds)


def report(times: dict[str, list[float]], rounds: int) -> None:
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    p90 = {name: statistics.quantiles(values, n=10)[-1] * 1000 for name, values in times.items()}
    cost = {name: medians[name] - medians["plain"] for name in times}
    print(f"cell round trip in a real kernel, execute request to idle; median of {rounds} "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    print(f"{'cell':<10} {'median ms':>10} {'p90 ms':>8} {'over plain ms':>14} {'cost / %%px cost':>17}")
    for name in times:
        ratio = "" if name == "plain" else f"{cost[name] / cost['%%px']:17.2f}" if cost["%%px"] > 0 else "n/a"
        print(f"{name:<10} {medians[name]:10.2f} {p90[name]:8.2f} {cost[name]:14.2f} {ratio:>17}")
    scaler_ok = medians["%%scaler"] <= 20 and cost["%%scaler"] <= cost["%%px"] / 3
    print(f"targets (%%scaler <= 20 ms and its cost <= 1/3 of %%px's): {'met' if scaler_ok else 'NOT met'}")


if __name__ == "__main__":
    main()
