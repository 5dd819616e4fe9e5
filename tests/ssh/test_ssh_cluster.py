"""SSHCluster against real sshd servers on loopback (see conftest): tasks on each host, keys, clean-up, errors."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import psutil
import pytest

from scaler_jupyter import Client, SSHCluster
from scaler_jupyter.errors import AuthenticationError, SSHError
from tests.helpers import alive_children, wait_gone, wait_until

pytestmark = pytest.mark.timeout(180)

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hosts do not import the tests

DEATH_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


def held_agent(started: str, go: str) -> int:
    """On a worker: say it started, hold its only processor until ``go`` exists, return its agent's pid."""
    Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getppid()


@pytest.fixture(scope="module")
def second_sshd(sshd_factory):
    """Another host: an sshd on 127.0.0.2."""
    return sshd_factory.start("127.0.0.2")


def remote_processes(sshd_factory) -> list[psutil.Process]:
    """Every live process below the test's sshd servers: their sessions, tethers and engine processes."""
    return [p for server in sshd_factory.servers for p in alive_children(psutil.Process(server.process.pid))]


def test_tasks_run_on_workers_of_each_host_with_the_keys_shipped_and_removed(sshd, second_sshd, sshd_factory,
                                                                             tmp_path):
    hosts = [sshd.destination, sshd.destination, second_sshd.destination]  # workers on both hosts
    with SSHCluster(hosts, ssh_options=sshd.options(known_hosts=None), connect_timeout=CONNECT_TIMEOUT,
                    death_timeout=DEATH_TIMEOUT) as cluster:
        record = cluster.record()
        assert record["kind"] == "ssh" and record["n_workers"] == 2
        assert cluster.address.startswith("tcp://127.0.0.1:")
        scheduler, *workers = record["processes"]
        # the scheduler binds the host's address, requires the keys and refuses a remote shutdown
        command = psutil.Process(scheduler["pid"]).cmdline()
        assert cluster.address.rsplit(":", 1)[0] + ":0" in command and "--protected" in command
        assert command[command.index("--keys") + 1] == scheduler["keys"]
        shipped = {p["keys"]: sorted(os.listdir(p["keys"])) for p in record["processes"]}
        assert shipped[scheduler["keys"]] == ["client.key", "scheduler.key_secret"]
        assert all(shipped[w["keys"]] == ["client.key_secret", "scheduler.key"] for w in workers)
        for directory in shipped:
            assert os.stat(directory).st_mode & 0o777 == 0o700
            assert all(os.stat(Path(directory) / name).st_mode & 0o777 == 0o600 for name in shipped[directory])
        assert sorted(os.listdir(cluster.keys)) == ["client.key", "client.key_secret", "scheduler.key",
                                                    "scheduler.key_secret"]

        with cluster.get_client() as client:
            futures = [client.submit(held_agent, str(tmp_path / f"started{i}"), str(tmp_path / "go"))
                       for i in range(2)]
            # each worker has one processor: two tasks running at once run on two workers
            wait_until(lambda: all((tmp_path / f"started{i}").exists() for i in range(2)), 30,
                       "a task to start on each worker")
            (tmp_path / "go").touch()
            agents = {f.result(timeout=30) for f in futures}
        hosts_ran = {w["host"] for w in workers if w["pid"] in agents}
        assert hosts_ran == {sshd.destination, second_sshd.destination}

        with pytest.raises((AuthenticationError, TimeoutError), match=r"requires? keys"):  # no keys, no entry
            Client(cluster.address, timeout=5)
        remote = remote_processes(sshd_factory)
        assert {scheduler["pid"], *(w["pid"] for w in workers)} <= {p.pid for p in remote}
    assert not wait_gone(remote, 15), "remote processes outlived close()"
    assert not os.path.exists(cluster.keys)
    assert not any(os.path.exists(directory) for directory in shipped)


def test_scale_spreads_workers_over_the_worker_hosts(sshd, second_sshd):
    hosts = [sshd.destination, sshd.destination, second_sshd.destination]
    with SSHCluster(hosts, workers_per_host=0, ssh_options=sshd.options(known_hosts=None),
                    connect_timeout=CONNECT_TIMEOUT) as cluster:
        assert cluster.n_workers == 0
        cluster.scale(3)
        per_host = sorted(p["host"] for p in cluster.processes if p["role"] == "worker")
        assert per_host == sorted([sshd.destination, sshd.destination, second_sshd.destination])
        cluster.scale(1)
        assert cluster.n_workers == 1
        with cluster.get_client() as client:
            assert client.submit(pow, 2, 10).result(timeout=30) == 1024


CALLER = textwrap.dedent("""
    import json, sys
    from scaler_jupyter import Client, SSHCluster
    hosts, options, death_timeout = json.loads(sys.argv[1])
    cluster = SSHCluster(hosts, ssh_options=options, death_timeout=death_timeout)
    print(json.dumps(cluster.record()), flush=True)
    sys.stdin.readline()  # until killed
""")


def test_kill_9_of_the_caller_ends_every_remote_process(sshd, second_sshd, sshd_factory):
    spec = json.dumps([[sshd.destination, second_sshd.destination], sshd.options(known_hosts=None), DEATH_TIMEOUT])
    caller = subprocess.Popen([sys.executable, "-c", CALLER, spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        record = json.loads(caller.stdout.readline() or "null")
        assert record is not None, "the caller failed to start its cluster"
        remote = remote_processes(sshd_factory)
        assert {p["pid"] for p in record["processes"]} <= {p.pid for p in remote}
        caller.send_signal(signal.SIGKILL)
        caller.wait(10)
        left = wait_gone(remote, DEATH_TIMEOUT)
        assert not left, f"alive {DEATH_TIMEOUT:g}s after kill -9 of the caller: {[p.pid for p in left]}"
        assert not any(os.path.exists(p["keys"]) for p in record["processes"]), "key files left on a host"
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(10)
        caller.stdout.close()
        caller.stdin.close()


def assert_fails_in_time(hosts, options, match: str, host: str, **kwargs) -> SSHError:
    began = time.monotonic()
    with pytest.raises(SSHError, match=match) as raised:
        SSHCluster(hosts, ssh_options=options, connect_timeout=CONNECT_TIMEOUT, **kwargs)
    assert time.monotonic() - began < CONNECT_TIMEOUT + 5, "the error took longer than connect_timeout"
    assert raised.value.host == host and host in str(raised.value)
    return raised.value


def test_a_host_that_never_answers_fails_within_connect_timeout(sshd, sshd_factory):
    with socket.socket() as silent:  # accepts connections (the kernel does), never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = f"127.0.0.1:{silent.getsockname()[1]}"
        assert_fails_in_time([sshd.destination, hung], sshd.options(known_hosts=None), "no SSH answer", hung)
    assert not remote_processes_below_sessions(sshd_factory)


def test_a_closed_port_and_a_refused_key_fail_naming_the_host_and_cause(sshd, sshd_factory):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    assert_fails_in_time([closed], sshd.options(), "connection refused", closed)
    stranger = sshd.options(client_keys=[str(sshd_factory.stranger_key)])
    assert_fails_in_time([sshd.destination], stranger, "authentication refused", sshd.destination)
    assert not remote_processes_below_sessions(sshd_factory)


def test_a_host_without_scaler_jupyter_fails_and_a_worker_that_cannot_start_stops_the_scheduler(sshd,
                                                                                                 sshd_factory):
    error = assert_fails_in_time([sshd.destination], sshd.options(), "is scaler_jupyter installed",
                                 sshd.destination, python="/usr/bin/python3")
    assert "No module named" in str(error)
    # the scheduler starts, the worker does not (a bad argument): the scheduler is stopped too
    with pytest.raises(SSHError, match="unrecognized arguments"):
        SSHCluster([sshd.destination], ssh_options=sshd.options(), worker_args=("--no-such-option",))
    assert not remote_processes_below_sessions(sshd_factory)


def remote_processes_below_sessions(sshd_factory) -> list[psutil.Process]:
    """What is left below the sshd servers once their sessions have had time to end."""
    return wait_gone(remote_processes(sshd_factory), 15)


def test_secure_false_warns(sshd, caplog):
    with caplog.at_level(logging.WARNING, logger="scaler_jupyter.ssh_cluster"), \
            SSHCluster([sshd.destination], ssh_options=sshd.options(), secure=False) as cluster:
        assert cluster.keys is None
        with cluster.get_client() as client:
            assert client.submit(abs, -3).result(timeout=30) == 3
    assert any("secure=False" in r.getMessage() for r in caplog.records)
