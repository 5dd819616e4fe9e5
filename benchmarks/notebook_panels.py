"""Live panels left running: does a notebook, or its kernel, grow?

A notebook (run by nbclient in a real kernel, widget state stored as Jupyter saves it) shows the four
cluster panels (workers, queues, task stream, throughput) and a live DAG, against a cluster that this
script keeps busy with short tasks from a client of its own. After a warm-up, the saved notebook's size and
the kernel's resident memory are taken; again after ``--minutes`` (10 by default). Meanwhile a trivial cell
runs every ``--poke`` seconds, as a user would, so the kernel's IOPub is drained. Issue targets: under 1 MB of
notebook growth and under 50 MB of kernel RSS growth over 10 minutes.

    python benchmarks/notebook_panels.py [--minutes 10] [--poke 30]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import nbformat
import psutil
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from scaler_jupyter import Client, LocalCluster

WARM_UP = 20.0  # seconds of updates before the first measurement: every panel's data source fills up to its bound

SETUP = """
import os
from scaler_jupyter import Client, panels
from scaler_jupyter.pargraph import delayed, graph

client = Client({address!r})

@delayed
def double(x):
    return 2 * x

@graph
def pipeline(x):
    return double(x) + double(x + 1)

g = pipeline.to_graph()
"""
PANELS = ["panels.workers(client)", "panels.queues(client)", "panels.task_stream(client)",
          "panels.throughput(client)", "panels.graph(g, client)"]


def keep_busy(client: Client, stop: threading.Event) -> int:
    """Short tasks, a batch at a time, until ``stop``; return how many ran."""
    done = 0
    while not stop.is_set():
        done += len(list(client.map(time.sleep, [0.002] * 200)))
    return done


def measure(notebook_client: NotebookClient, notebook: nbformat.NotebookNode, pid: int) -> tuple[int, int]:
    """The notebook's size as Jupyter would save it (outputs and widget state), and the kernel's RSS."""
    notebook_client.set_widgets_metadata()
    return len(nbformat.writes(notebook).encode()), psutil.Process(pid).memory_info().rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the panels run (default 10)")
    parser.add_argument("--poke", type=float, default=30.0, help="seconds between two trivial cells (default 30)")
    args = parser.parse_args()

    with LocalCluster(n_workers=2) as cluster, Client(cluster.address) as feeder:
        stop = threading.Event()
        ran: list[int] = []
        busy = threading.Thread(target=lambda: ran.append(keep_busy(feeder, stop)), daemon=True)
        busy.start()
        notebook = new_notebook(cells=[new_code_cell(SETUP.format(address=cluster.address)),
                                       *map(new_code_cell, PANELS),
                                       new_code_cell("dsk, keys = g.to_dict(x=3); client.get(dsk, keys)"),
                                       new_code_cell("os.getpid()")])
        runner = NotebookClient(notebook, timeout=120, kernel_name="python3", store_widget_state=True,
                                resources={"metadata": {"path": tempfile.mkdtemp()}})
        try:
            with runner.setup_kernel():
                for index, cell in enumerate(notebook.cells):
                    runner.execute_cell(cell, index)
                pid = int(notebook.cells[-1].outputs[0]["data"]["text/plain"])
                poke = new_code_cell("1 + 1")
                notebook.cells.append(poke)

                def idle(seconds: float) -> None:
                    deadline = time.monotonic() + seconds
                    while (remaining := deadline - time.monotonic()) > 0:
                        time.sleep(min(args.poke, remaining))
                        runner.execute_cell(poke, len(notebook.cells) - 1)

                idle(WARM_UP)
                size_before, rss_before = measure(runner, notebook, pid)
                idle(args.minutes * 60)
                size_after, rss_after = measure(runner, notebook, pid)
                poke.source = "panels.close_all(); client.shutdown()"
                runner.execute_cell(poke, len(notebook.cells) - 1)
        finally:
            stop.set()
            busy.join(timeout=30)

    print(f"5 live panels for {args.minutes:g} min against 2 busy workers ({sum(ran):,} tasks run), after a "
          f"{WARM_UP:g} s warm-up")
    print(f"{'':<22} {'before':>12} {'after':>12} {'growth':>12} {'target (10 min)':>16}")
    print(f"{'saved notebook':<22} {size_before / 1e6:>10.3f}MB {size_after / 1e6:>10.3f}MB "
          f"{(size_after - size_before) / 1e6:>10.3f}MB {'< 1 MB':>16}")
    print(f"{'kernel RSS':<22} {rss_before / 1e6:>10.1f}MB {rss_after / 1e6:>10.1f}MB "
          f"{(rss_after - rss_before) / 1e6:>10.1f}MB {'< 50 MB':>16}")


if __name__ == "__main__":
    main()
