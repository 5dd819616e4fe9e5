"""Cluster files of real clusters, and detached clusters through the command line and the Python API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from scaler_jupyter import Client, LocalCluster, clusters
from scaler_jupyter.errors import ClusterError
from tests.helpers import alive, wait_until


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path, monkeypatch):
    """A runtime dir of the test's own; detached clusters left in it are stopped, pass or fail."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    yield tmp_path
    for record in clusters.list_clusters():
        if record["detached"]:
            clusters.stop(record["id"])


def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaler_jupyter", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ)


def test_local_cluster_records_itself():
    with LocalCluster(n_workers=1) as cluster:
        [record] = clusters.list_clusters()
        assert record == cluster.record()
        assert record["pids"] == cluster.pids and record["owner_pid"] == os.getpid()
        assert record["address"] == cluster.address and record["monitor_address"] == cluster.monitor_address
        assert {"id", "address", "monitor_address", "dashboard_address", "pids", "owner_pid", "n_workers",
                "started", "keys"} <= set(record)
        cluster.scale(2)
        [record] = clusters.list_clusters()
        assert record["n_workers"] == 2 and len(record["pids"]) == 3
    assert clusters.list_clusters() == []
    assert list(clusters.clusters_dir().iterdir()) == []


def test_a_killed_owner_leaves_a_stale_file_that_listing_cleans(tmp_path):
    """An owner killed with SIGKILL cannot remove its file: its processes die with it and the next listing
    drops the file."""
    script = "from scaler_jupyter import LocalCluster\nc = LocalCluster(n_workers=1)\nprint(c.id, flush=True)\n" \
             "import time\ntime.sleep(600)\n"
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        cluster_id = owner.stdout.readline().strip()
        [record] = clusters.list_clusters()
        assert record["id"] == cluster_id and record["owner_pid"] == owner.pid
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    wait_until(lambda: not any(alive(pid) for pid in record["pids"]), 10, "the cluster to die with its owner")
    assert (clusters.clusters_dir() / f"{cluster_id}.json").exists()
    assert clusters.list_clusters() == []
    assert not (clusters.clusters_dir() / f"{cluster_id}.json").exists()


def test_cli_start_list_stop():
    started = cli("start", "-n", "2", "--tags", "gpu")
    assert started.returncode == 0, started.stderr
    [record] = clusters.list_clusters()
    assert started.stdout.split()[:5] == ["started", "cluster", record["id"], "at", record["address"]]
    assert record["detached"] and record["n_workers"] == 2 and record["tags"] == ["gpu"]
    assert all(alive(pid) for pid in [*record["pids"], record["owner_pid"]])  # the command has returned

    with Client(record["address"], timeout=30) as client:
        assert client.submit_with(abs, (-4,), tags={"gpu"}).result(timeout=30) == 4

    listed = cli("list")
    assert listed.returncode == 0 and record["id"] in listed.stdout and "(detached)" in listed.stdout
    assert record["address"] in cli("list", "--json").stdout

    stopped = cli("stop", record["id"][:4])
    assert stopped.returncode == 0 and f"stopped cluster {record['id']}" in stopped.stdout, stopped.stderr
    assert not any(alive(pid) for pid in [*record["pids"], record["owner_pid"]])
    assert clusters.list_clusters() == []

    missing = cli("stop", record["id"])
    assert missing.returncode == 1 and missing.stderr.strip() == (
        f"scaler-jupyter stop: no cluster '{record['id']}' on this machine: "
        "`scaler-jupyter list` shows those there are")


def test_scale_and_stop_a_detached_cluster_from_python():
    record = clusters.start_detached(1)
    scaled = clusters.scale(record["id"], 2)
    assert scaled["n_workers"] == 2 and clusters.find(record["id"])["n_workers"] == 2
    with Client(record["address"], timeout=30) as client:
        assert len(client.status()["workers"]) == 2
    with pytest.raises(ClusterError, match="0 or more workers"):
        clusters.scale(record["id"], -1)
    assert clusters.scale(record["id"], 0)["n_workers"] == 0
    clusters.stop(record["id"])
    assert not any(alive(pid) for pid in [*scaled["pids"], record["owner_pid"]])


def test_stop_a_cluster_owned_by_this_process():
    """``stop`` of a cluster another process owns asks its scheduler to shut down; the owner sees it gone."""
    cluster = LocalCluster(n_workers=1)
    try:
        clusters.stop(cluster.id)
        assert not cluster.running()
        assert clusters.list_clusters() == []
    finally:
        cluster.close()


def test_a_detached_cluster_that_cannot_start_says_why(tmp_path):
    failed = cli("start", "-n", "1", "--keys", str(tmp_path / "missing"))
    assert failed.returncode == 1 and failed.stderr.startswith("scaler-jupyter start: the cluster did not start")
    assert f"the keys directory {tmp_path / 'missing'} does not exist" in failed.stderr  # the supervisor's log
    assert list(clusters.clusters_dir().iterdir()) == []
