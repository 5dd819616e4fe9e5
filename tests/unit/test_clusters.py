"""Cluster files without clusters: written atomically, found by id, stale ones cleaned, listed as a table."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from scaler_jupyter import clusters
from scaler_jupyter.errors import ClusterError


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def record(cluster_id: str, pid: int | None = None, started: float | None = None, **extra) -> dict:
    """A record whose processes are this test process (alive) unless ``pid`` says otherwise."""
    pid = os.getpid() if pid is None else pid
    return {"id": cluster_id, "address": f"tcp://127.0.0.1:{1000 + len(cluster_id)}", "monitor_address": "",
            "dashboard_address": None, "pids": [pid], "owner_pid": pid, "n_workers": 0, "tags": [],
            "started": time.time() if started is None else started, "keys": None, "control_address": None,
            "detached": False, **extra}


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_files_live_in_the_runtime_dir(runtime_dir):
    clusters.write(record("abc12345"))
    assert clusters.clusters_dir() == runtime_dir / "scaler_jupyter" / "clusters"
    assert [path.name for path in clusters.clusters_dir().iterdir()] == ["abc12345.json"]  # no temporary left
    assert clusters.list_clusters() == [record("abc12345", started=clusters.list_clusters()[0]["started"])]


def test_write_replaces_and_remove_deletes():
    clusters.write(record("abc12345", n_workers=1))
    clusters.write(record("abc12345", n_workers=3))
    assert [r["n_workers"] for r in clusters.list_clusters()] == [3]
    clusters.remove("abc12345")
    clusters.remove("abc12345")  # twice is fine
    assert clusters.list_clusters() == []


def test_stale_files_are_ignored_and_cleaned():
    clusters.write(record("live0001"))
    clusters.write(record("dead0001", pid=dead_pid()))
    # a pid that runs but started after the record was written belongs to another process
    clusters.write(record("reused01", started=time.time() - 3600 * 24 * 365 * 30))
    assert [r["id"] for r in clusters.list_clusters()] == ["live0001"]
    assert sorted(path.name for path in clusters.clusters_dir().iterdir()) == ["live0001.json"]


def test_unreadable_files_are_skipped():
    (clusters.clusters_dir() / "junk.json").write_text("{not json")
    clusters.write(record("live0001"))
    assert [r["id"] for r in clusters.list_clusters()] == ["live0001"]


def test_find_by_id_prefix_and_address():
    clusters.write(record("abc12345", started=time.time() - 2))
    clusters.write(record("abd99999"))
    assert clusters.find("abc")["id"] == "abc12345"
    assert clusters.find("abd99999")["id"] == "abd99999"
    with pytest.raises(ClusterError, match="names 2 clusters"):
        clusters.find("ab")
    with pytest.raises(ClusterError, match="no cluster 'zz'"):
        clusters.find("zz")
    assert clusters.find_by_address(record("abc12345")["address"])["id"] == "abc12345"
    assert clusters.find_by_address("tcp://127.0.0.1:1") is None


def test_only_detached_clusters_take_requests():
    clusters.write(record("abc12345"))
    with pytest.raises(ClusterError, match=f"belongs to process {os.getpid()}"):
        clusters.scale("abc12345", 2)


def test_table():
    now = time.time()
    rows = [record("abc12345", started=now - 75, n_workers=2),
            record("def67890", started=now - 3 * 3600 - 60, detached=True)]
    text = clusters.table(rows, now, current="def67890").splitlines()
    assert text[0].split() == ["ID", "ADDRESS", "WORKERS", "OWNER", "UP"]
    assert text[1].split() == ["abc12345", rows[0]["address"], "2", str(os.getpid()), "75s"]
    assert text[2].split() == ["def67890", "*", rows[1]["address"], "0", str(os.getpid()), "(detached)", "3h01m"]
    assert "scaler-jupyter start" in clusters.table([], now)
