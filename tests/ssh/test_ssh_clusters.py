"""SSH clusters in cluster files: seen and stopped by `scaler-jupyter list|stop`, started by `scaler-jupyter start
--ssh` and by `%scaler start --ssh` in a real kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from scaler_jupyter import SSHCluster, clusters
from tests.helpers import wait_gone, wait_until
from tests.jupyter.kernel import Kernel
from tests.ssh.test_ssh_cluster import remote_processes

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def second_sshd(sshd_factory):
    return sshd_factory.start("127.0.0.2")


def cli(*args: str, env: dict | None = None, timeout: float = 90) -> str:
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_another_process_lists_and_stops_a_scripts_ssh_cluster(sshd, second_sshd, sshd_factory):
    cluster = SSHCluster([sshd.destination, second_sshd.destination], ssh_options=sshd.options(known_hosts=None))
    try:
        [listed] = [r for r in json.loads(cli("list", "--json")) if r["id"] == cluster.id]
        assert listed["kind"] == "ssh" and listed["pids"] == [] and listed["n_workers"] == 1
        assert listed["hosts"] == [sshd.destination, second_sshd.destination] and not listed["detached"]
        assert listed["owner_pid"] == os.getpid()
        scaled = clusters.scale(cluster.id, 2)  # what the JupyterLab sidebar does, through the owner
        assert scaled["n_workers"] == cluster.n_workers == 2
        remote = remote_processes(sshd_factory)
        assert f"stopped cluster {cluster.id}" in cli("stop", cluster.id)
        assert not wait_gone(remote, 15), "remote processes outlived `scaler-jupyter stop`"
        wait_until(lambda: not os.path.exists(cluster.keys), 15, "the owner to finish closing")
        assert cluster.id not in {r["id"] for r in clusters.list_clusters()}
        assert not cluster.running()
    finally:
        cluster.close()


def test_scaler_jupyter_start_ssh_is_detached_and_stops_by_id(sshd, second_sshd, sshd_factory):
    config = sshd_factory.ssh_config([sshd, second_sshd])
    started = cli("start", "--ssh", f"{sshd.destination},{second_sshd.destination}", "-n", "2",
                  "--ssh-config", str(config))
    cluster_id = started.split()[2]
    [record] = [r for r in clusters.list_clusters() if r["id"] == cluster_id]
    assert record["kind"] == "ssh" and record["detached"] and record["n_workers"] == 2
    supervisor = psutil.Process(record["owner_pid"])
    assert clusters.scale(cluster_id, 3)["n_workers"] == 3
    [record] = [r for r in clusters.list_clusters() if r["id"] == cluster_id]
    assert sorted(p["host"] for p in record["processes"] if p["role"] == "worker") == [second_sshd.destination] * 3
    remote = remote_processes(sshd_factory)
    assert {p["pid"] for p in record["processes"]} <= {p.pid for p in remote}
    assert f"stopped cluster {cluster_id}" in cli("stop", cluster_id)
    assert not wait_gone([*remote, supervisor], 15), "the supervisor or a remote process outlived the stop"
    assert not os.path.exists(record["keys"])


def test_scaler_start_ssh_in_a_kernel(sshd, second_sshd, sshd_factory, tmp_path):
    config = sshd_factory.ssh_config([sshd, second_sshd])
    kernel = Kernel(tmp_path, env={"JUPYTER_RUNTIME_DIR": os.environ["JUPYTER_RUNTIME_DIR"]})
    try:
        kernel.run("%load_ext scaler_jupyter")
        output = kernel.run(f"%scaler start --ssh {sshd.destination},{second_sshd.destination} -n 2 "
                            f"--ssh-config {config}", timeout=90)
        assert any("2 workers" in bundle.get("text/plain", "") for bundle in output.displays), output.displays
        [record] = [r for r in clusters.list_clusters() if r["owner_pid"] == kernel.pid]
        assert record["kind"] == "ssh" and record["n_workers"] == 2 and record["keys"]
        result = kernel.run("import scaler_jupyter\nprint(sum(scaler_jupyter.current_client().map(abs, "
                            "range(-3, 3))))", timeout=60)
        assert result.stdout.strip() == "9"
        assert "stopped cluster" in kernel.run("%scaler stop", timeout=60).stdout
        assert not wait_gone(remote_processes(sshd_factory), 15)
        assert not os.path.exists(record["keys"])
    finally:
        kernel.shutdown()
