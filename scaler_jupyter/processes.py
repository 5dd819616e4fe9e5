"""The one place that starts and stops the engine's child processes.

Children started here die with their parent, even when the parent is killed with
``kill -9``: on Linux through ``PR_SET_PDEATHSIG``, elsewhere through a watchdog
thread in the child (see :func:`exit_with_parent`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

PARENT_PID_ENV = "SCALER_JUPYTER_PARENT_PID"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(args: list[str], env: dict[str, str] | None = None, pass_fds: tuple = (), **popen) -> subprocess.Popen:
    """Start ``python -m scaler_jupyter ...``-style children that cannot outlive this process."""
    child_env = dict(os.environ if env is None else env)
    child_env[PARENT_PID_ENV] = str(os.getpid())
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(
        [sys.executable, *args], env=child_env, pass_fds=pass_fds, preexec_fn=preexec, **popen
    )


def spawn_detached(args: list[str], log_path: str | os.PathLike, pass_fds: tuple = ()) -> subprocess.Popen:
    """Start a child that outlives this process (a detached cluster's supervisor): a session of its own,
    no parent-death signal, output appended to ``log_path``."""
    child_env = dict(os.environ)
    child_env.pop(PARENT_PID_ENV, None)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, *args], env=child_env, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def exit_with_parent() -> None:
    """Where the kernel cannot kill us with our parent, poll for it (started children call this)."""
    parent = os.environ.get(PARENT_PID_ENV)
    if parent is None or sys.platform.startswith("linux"):
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def stop(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """Ask a child to stop (SIGTERM), then kill it if it has not within ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("process %d ignored SIGTERM for %.0fs: killing it", process.pid, timeout)
        process.kill()
        process.wait(timeout)
