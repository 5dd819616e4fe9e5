"""Process bookkeeping for the parfun tests: multiprocessing's resource tracker, and the pids a backend owns."""

from __future__ import annotations

import os
from multiprocessing import resource_tracker

import psutil


def stop_resource_tracker() -> None:
    """Stop the resource tracker that spawned pools (ProcessPoolExecutor, Dask's nannies) start in this process.

    It lives as long as its parent unless told to stop, and the suite requires that no child
    outlives its module. It is started again if a later test needs it.
    """
    tracker = resource_tracker._resource_tracker
    stop = getattr(tracker, "_stop", None)
    if stop is not None:
        stop()
        return
    if getattr(tracker, "_fd", None) is not None:  # Pythons without _stop: what it does
        os.close(tracker._fd)
        os.waitpid(tracker._pid, 0)
        tracker._fd = tracker._pid = None


def children_pids() -> set[int]:
    """Pids of this test run's live descendants."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found
