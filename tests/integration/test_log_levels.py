"""A quiet terminal: a script or the demo shows only what its user printed; the engine's log level is settable."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.errors import ConnectionLostError
from scaler_jupyter.logging_config import LOG_LEVEL_ENV
from tests.helpers import connect, free_port

pytestmark = pytest.mark.timeout(120)

SCRIPT_TIMEOUT = 90.0
START_TIMEOUT = 20.0
RESULT_TIMEOUT = 20.0

SCRIPT = textwrap.dedent("""
    from scaler_jupyter import Client

    def square(x):
        return x * x

    if __name__ == "__main__":
        with Client({arguments}) as client:
            print(sum(client.map(square, range(10))))
""")


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != LOG_LEVEL_ENV}
    env.update(extra)
    return env


def _run_script(tmp_path, arguments: str = "", **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(arguments=arguments))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_environment(**env),
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)


def test_a_script_using_a_private_cluster_shows_only_what_it_printed(tmp_path):
    done = _run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "285\n"
    assert done.stderr == ""


def test_the_demo_shows_only_its_results(tmp_path):
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter.demo", "--points", "40000", "--tasks", "8"],
                          cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pi is about")
    assert done.stderr == ""


@pytest.mark.parametrize(("arguments", "env"), [('log_level="info"', {}), ("", {LOG_LEVEL_ENV: "info"})],
                         ids=["Client(log_level=)", LOG_LEVEL_ENV])
def test_the_private_cluster_s_log_level_is_settable(tmp_path, arguments, env):
    done = _run_script(tmp_path, arguments, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "285\n"
    assert " scheduler INFO " in done.stderr and "listening on" in done.stderr
    assert [line for line in done.stderr.splitlines() if "WARNING" in line] == []  # stopping it is no warning


def test_a_debug_worker_logs_debug_lines_and_a_normal_shutdown_logs_no_warning(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "scaler_jupyter"]
    scheduler_log, worker_log = tmp_path / "scheduler.log", tmp_path / "worker.log"
    with open(scheduler_log, "w") as scheduler_err, open(worker_log, "w") as worker_err:
        scheduler = subprocess.Popen([*command, "scheduler", address, "--log-level", "info"],
                                     stderr=scheduler_err, env=_environment())
        worker = subprocess.Popen([*command, "worker", address, "--log-level", "debug"],
                                  stderr=worker_err, env=_environment())
    try:
        with connect(address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(1, timeout=START_TIMEOUT)
            assert client.submit(pow, 2, 5).result(RESULT_TIMEOUT) == 32
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(15) == 0
    finally:
        for process in (worker, scheduler):
            if process.poll() is None:
                process.kill()
                process.wait(10)
    worker_text, scheduler_text = worker_log.read_text(), scheduler_log.read_text()
    assert " processor DEBUG " in worker_text  # its processors log at the worker's level
    assert " INFO " in scheduler_text and " DEBUG " not in scheduler_text
    assert [line for line in (worker_text + scheduler_text).splitlines() if "WARNING" in line] == []


def test_every_command_takes_a_log_level():
    for command in ("scheduler", "worker", "cluster", "top", "keys"):
        done = subprocess.run([sys.executable, "-m", "scaler_jupyter", command, "--help"],
                              capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
        assert "--log-level" in done.stdout, command
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", "worker", "tcp://127.0.0.1:1", "--log-level",
                           "loud"], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    assert done.returncode == 2 and "--log-level" in done.stderr


def test_a_cluster_shut_down_by_its_client_logs_no_warning_and_passes_its_level_on(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "scaler_jupyter"]
    log = tmp_path / "cluster.log"
    with open(log, "w") as err:  # the scheduler at the default level of a command run by hand, INFO
        scheduler = subprocess.Popen([*command, "scheduler", address], stderr=err, env=_environment())
        workers = subprocess.Popen([*command, "cluster", address, "-n", "2", "--log-level", "debug"], stderr=err,
                                   env=_environment())
    try:
        with connect(address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
            assert client.submit(pow, 3, 2).result(RESULT_TIMEOUT) == 9
            client.shutdown_cluster()
        assert scheduler.wait(15) == 0 and workers.wait(15) == 0
    finally:
        for process in (workers, scheduler):
            if process.poll() is None:
                process.kill()
                process.wait(10)
    text = log.read_text()
    assert "shut the cluster down" in text and " scheduler DEBUG " not in text
    assert " processor DEBUG " in text  # the cluster's level reaches its workers and their processors
    assert [line for line in text.splitlines() if "WARNING" in line] == []


def test_a_client_whose_cluster_is_stopped_hears_why_and_logs_no_warning(caplog):
    """As a kernel's client after ``%scaler stop``: the scheduler tells its peers it stops, so the client's
    tasks end with that reason, not with a lost connection and a warning to reconnect."""
    cluster = LocalCluster(n_workers=1, timeout=60)
    try:
        with Client(cluster.address) as client:
            assert client.submit(pow, 2, 3).result(RESULT_TIMEOUT) == 8
            waiting = client.submit(time.sleep, 60)
            with caplog.at_level(logging.INFO, logger="scaler_jupyter"):
                cluster.close()
                with pytest.raises(ConnectionLostError, match="the scheduler was stopped"):
                    waiting.result(RESULT_TIMEOUT)
    finally:
        cluster.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
