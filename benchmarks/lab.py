"""The JupyterLab sidebar's targets (issue 12), in a real JupyterLab driven through Debian's chromium.

- ``new cluster listed``: from the click on "Start" in the sidebar's "New cluster" dialog (2 workers) to
  the cluster listed with both workers; target under 3 s on this 2-core machine.
- ``longest frame gap``: the longest gap between ``requestAnimationFrame`` callbacks in Lab's page while
  a cluster starts and is scaled from 2 to 3 workers; target under 100 ms (Lab's UI thread never blocked).
- ``server CPU, idle``: the Jupyter server process's CPU, percent of one core, over ``--idle`` seconds
  with the sidebar and a dashboard tab (the workers panel) open on an idle 2-worker cluster; target under 2%.
  The cluster's own dashboard server is a process of the cluster and is printed beside it.

No peer is measured: dask-labextension starts its clusters inside the Jupyter server (the cost this
design removes) and is not installed here. Runs under the same non-root base URL as the tests, with a
runtime dir of its own; every cluster it starts is stopped.

Usage::

    python benchmarks/lab.py [--repeat 3] [--idle 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["JUPYTER_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="scaler-jupyter-bench-lab-")  # before our imports

import psutil
from playwright.sync_api import sync_playwright

from scaler_jupyter import clusters
from tests.ui.lab import CHROMIUM, CHROMIUM_FLAGS, JupyterLab
from tests.ui.sidebar import RAF_GAP, RAF_PROBE, Sidebar, stop_all


def cpu_percent(process: psutil.Process, seconds: float) -> float:
    """The process's CPU over ``seconds``, percent of one core."""
    before = process.cpu_times()
    time.sleep(seconds)  # the measurement window itself
    after = process.cpu_times()
    return 100 * ((after.user - before.user) + (after.system - before.system)) / seconds


def measure(lab: JupyterLab, page, repeat: int, idle: float) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"listed": [], "gap": []}
    page.goto(lab.page_url())
    sidebar = Sidebar(page)
    sidebar.open()
    page.locator("#scaler-jupyter-sidebar .sj-Empty, #scaler-jupyter-sidebar .sj-Cluster").first.wait_for()
    last = None
    for run in range(repeat):
        before = sidebar.ids()
        page.evaluate(RAF_PROBE)
        clicked = sidebar.click_new_cluster(2)
        new = sidebar.wait_new_cluster(before, 2)
        results["listed"].append(time.perf_counter() - clicked)
        sidebar.scale(new, 3)
        sidebar.wait_workers(new, 3)
        results["gap"].append(page.evaluate(RAF_GAP))
        if run < repeat - 1:
            sidebar.stop(new)
        last = new
    sidebar.scale(last, 2)
    sidebar.wait_workers(last, 2)
    panel = sidebar.cluster(last).locator(".sj-Panel").first
    panel.click()
    page.locator(".sj-DashboardTab:not(.lm-mod-hidden)").frame_locator("iframe").locator("canvas").first.wait_for()
    time.sleep(3)  # let the start settle before the idle window
    server = psutil.Process(lab.process.pid)
    dashboard_pid = clusters.find(last).get("dashboard_pid")
    dashboard = psutil.Process(dashboard_pid) if dashboard_pid else None
    dashboard_before = dashboard.cpu_times() if dashboard else None
    results["server_cpu"] = [cpu_percent(server, idle)]
    if dashboard:
        after = dashboard.cpu_times()
        spent = (after.user - dashboard_before.user) + (after.system - dashboard_before.system)
        results["dashboard_cpu"] = [100 * spent / idle]
    sidebar.stop(last)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="clusters started from the sidebar (default %(default)s)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle CPU window (default %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        lab = JupyterLab(Path(root))
        try:
            if not lab.has_cluster_api():
                print("the server extension does not answer under scaler-jupyter/api/clusters", file=sys.stderr)
                return 1
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.set_default_timeout(60_000)
                try:
                    results = measure(lab, page, args.repeat, args.idle)
                finally:
                    browser.close()
        finally:
            stop_all()
            lab.close()
    print(f"JupyterLab sidebar; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{args.repeat} starts, {args.idle:g} s idle window")
    targets = {"listed": ("new cluster listed (s)", 3.0), "gap": ("longest frame gap (ms)", 100.0),
               "server_cpu": ("server CPU, idle (% of a core)", 2.0),
               "dashboard_cpu": ("dashboard CPU, idle (% of a core)", None)}
    rows = [["measure", "median", "max", "target", "reached"]]
    for key, (label, target) in targets.items():
        values = results.get(key)
        if not values:
            continue
        worst = max(values)
        rows.append([label, f"{statistics.median(values):.2f}", f"{worst:.2f}",
                     f"< {target:g}" if target else "-", ("yes" if worst < target else "NO") if target else "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
