"""Driving the Scaler sidebar from a test or a benchmark: open it, start, scale and stop clusters by clicking."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from scaler_jupyter import clusters

# Records the longest gap between animation frames since it was installed: a blocked UI thread shows as a gap.
RAF_PROBE = """() => {
  window.__sjGap = 0;
  let last = performance.now();
  const frame = now => { window.__sjGap = Math.max(window.__sjGap, now - last); last = now;
                         window.__sjProbe = requestAnimationFrame(frame); };
  window.__sjProbe = requestAnimationFrame(frame);
}"""
RAF_GAP = "() => window.__sjGap"


class Sidebar:
    """The sidebar of a Lab page."""

    def __init__(self, page) -> None:
        self.page = page
        self.node = page.locator("#scaler-jupyter-sidebar")

    def open(self) -> None:
        """Show the sidebar: a click on its tab in the left bar, unless Lab restored it open (a click closes it)."""
        tab = self.page.locator(".jp-SideBar [data-id='scaler-jupyter-sidebar']")
        tab.wait_for()
        if "lm-mod-current" not in (tab.get_attribute("class") or ""):
            tab.click()
        self.node.wait_for()

    def cluster(self, cluster_id: str):
        """The locator of one cluster's entry."""
        return self.node.locator(f".sj-Cluster[data-cluster-id='{cluster_id}']")

    def wait_workers(self, cluster_id: str, n: int, timeout: float = 60_000) -> None:
        """Wait until the entry of ``cluster_id`` lists ``n`` workers."""
        self.cluster(cluster_id).locator(f".sj-Workers[data-count='{n}']").wait_for(timeout=timeout)

    def ids(self) -> set[str]:
        return set(self.node.locator(".sj-Cluster").evaluate_all("nodes => nodes.map(n => n.dataset.clusterId)"))

    def click_new_cluster(self, n_workers: int, tags: str = "") -> float:
        """Fill and accept the "New cluster" dialog; ``time.perf_counter()`` just before the Start click."""
        self.node.locator(".sj-NewCluster").click()
        dialog = self.page.locator(".jp-Dialog")
        dialog.locator(".sj-Workers-input").fill(str(n_workers))
        dialog.locator(".sj-Tags-input").fill(tags)
        start = dialog.locator(".jp-Dialog-button.jp-mod-accept")
        start.wait_for()
        clicked = time.perf_counter()
        start.click()
        dialog.wait_for(state="detached")
        return clicked

    def wait_new_cluster(self, before: set[str], n_workers: int, timeout: float = 60_000) -> str:
        """Wait for a cluster not in ``before`` listed with ``n_workers`` workers; its id."""
        known = "".join(f":not([data-cluster-id='{i}'])" for i in before)
        entry = self.node.locator(f".sj-Cluster{known}:has(.sj-Workers[data-count='{n_workers}'])")
        entry.wait_for(timeout=timeout)
        return entry.get_attribute("data-cluster-id")

    def scale(self, cluster_id: str, n_workers: int) -> None:
        """Click Scale and accept ``n_workers`` in its dialog."""
        self.cluster(cluster_id).get_by_role("button", name="Scale", exact=True).click()
        dialog = self.page.locator(".jp-Dialog")
        dialog.locator("input").fill(str(n_workers))
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        dialog.wait_for(state="detached")

    def stop(self, cluster_id: str) -> None:
        """Click Stop and wait for the entry to go."""
        self.cluster(cluster_id).get_by_role("button", name="Stop", exact=True).click()
        self.cluster(cluster_id).wait_for(state="detached", timeout=60_000)


def start_from_command_line(n_workers: int) -> str:
    """``scaler-jupyter start -n N``, as a user types it; the new cluster's id."""
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", "start", "-n", str(n_workers)],
                          capture_output=True, text=True, timeout=120, check=True)
    return re.search(r"started cluster (\w+)", done.stdout).group(1)


def stop_all() -> None:
    """Stop every recorded cluster (those the tests started, in this test run's own runtime dir)."""
    for record in clusters.list_clusters():
        clusters.stop(record["id"])
