"""The remote end of an :class:`~scaler_jupyter.SSHCluster` process: one engine process tied to its SSH channel.

``SSHCluster`` runs ``python -m scaler_jupyter.ssh_tether`` on a host over SSH, without a
pty, and talks to it through the channel's stdin and stdout. The tether starts one
``scaler-jupyter`` command (a scheduler or a worker) in a process group of its own, and
ends that group when its caller goes away:

- stdin reaches end of file: the SSH channel closed (the caller closed the cluster,
  exited, or was killed: the kernel closes a dead process's sockets, sshd sees the
  connection end and closes the channel);
- nothing arrives on stdin for ``liveness`` seconds: the caller sends a newline every
  second or so, so silence means it lost the network or stopped (a sleeping laptop),
  which sshd alone would notice only after TCP's keepalive, hours later;
- SIGTERM, SIGHUP or SIGINT reaches the tether.

The group is sent SIGTERM, then SIGKILL after :data:`GRACE` seconds. The child also dies
with the tether if the tether itself is killed (``processes.spawn``: ``PR_SET_PDEATHSIG``).

The protocol, one JSON object a line:

- in, first line: ``{"args": [...], "keys": {filename: text} | null, "ready": bool, "liveness": s}``;
  ``args`` follow ``scaler-jupyter`` (``["worker", "tcp://..."]``). With ``keys``, the files are
  written owner-only (0600) in a fresh private (0700) directory, the command gets ``--keys DIR``,
  and the directory is deleted when the tether ends. With ``ready``, the command gets
  ``--ready-fd`` (a scheduler) and what it writes there is passed on.
- out: ``{"started": {"pid": child, "tether_pid": tether, "keys": DIR | null}}``, then, with
  ``ready``, ``{"ready": {...the scheduler's address and monitor address...}}``.
- the exit status is the child's (or 0 when the tether stopped it).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from scaler_jupyter.processes import spawn

GRACE = 3.0  # seconds the process group gets to stop on SIGTERM before SIGKILL


class _Stop(Exception):
    """A signal asked the tether to stop."""


def _raise_stop(*_) -> None:
    raise _Stop


def _say(message: dict) -> None:
    """One line to the caller; a closed channel is not an error here (the caller is gone: we are ending)."""
    with contextlib.suppress(OSError):
        os.write(sys.stdout.fileno(), json.dumps(message).encode() + b"\n")


def _write_keys(keys: dict[str, str]) -> str:
    directory = tempfile.mkdtemp(prefix="scaler-jupyter-keys-")  # mode 0700
    for name, text in keys.items():
        if os.sep in name or name.startswith("."):
            raise ValueError(f"not a key file name: {name!r}")
        fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
    return directory


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM the child (which stops its own children: a worker its processors), then SIGKILL whatever is
    left of its process group after GRACE seconds."""
    child.terminate()
    try:
        child.wait(GRACE)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)  # the agent's processors too, if the agent did not stop them
    child.wait()


def _watch(child: subprocess.Popen, ready_fd: int | None, liveness: float) -> int | None:
    """Relay the child's ready line; return its exit status once it exits, or None when the caller is gone."""
    selector = selectors.DefaultSelector()
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ, "stdin")
    pidfd = os.pidfd_open(child.pid) if hasattr(os, "pidfd_open") else None
    if pidfd is not None:
        selector.register(pidfd, selectors.EVENT_READ, "child")
    if ready_fd is not None:
        selector.register(ready_fd, selectors.EVENT_READ, "ready")
    ready = b""
    heard = time.monotonic()
    try:
        while True:
            if child.poll() is not None:
                return child.returncode
            remaining = heard + liveness - time.monotonic()
            if remaining <= 0:
                return None  # the caller fell silent
            for key, _ in selector.select(remaining if pidfd is not None else min(remaining, 0.5)):
                if key.data == "stdin":
                    if not os.read(stdin, 4096):
                        return None  # the channel closed
                    heard = time.monotonic()
                elif key.data == "ready":
                    chunk = os.read(ready_fd, 4096)
                    ready += chunk
                    if not chunk or ready.endswith(b"\n"):
                        selector.unregister(ready_fd)
                        if ready.strip():
                            _say({"ready": json.loads(ready)})
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)


def main() -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _raise_stop)
    spec = json.loads(sys.stdin.buffer.readline() or b"null")
    if not isinstance(spec, dict):
        return 2  # the caller went away before saying what to run
    keys_dir = child = ready_r = None
    try:
        args = ["-m", "scaler_jupyter", *spec["args"]]
        if spec.get("keys"):
            keys_dir = _write_keys(spec["keys"])
            args += ["--keys", keys_dir]
        pass_fds: tuple[int, ...] = ()
        if spec.get("ready"):
            ready_r, ready_w = os.pipe()
            args += ["--ready-fd", str(ready_w)]
            pass_fds = (ready_w,)
        # its stdout goes to stderr with its logs: stdout carries this protocol's lines only
        child = spawn(args, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                      start_new_session=True)
        if pass_fds:
            os.close(pass_fds[0])
        _say({"started": {"pid": child.pid, "tether_pid": os.getpid(), "keys": keys_dir}})
        status = _watch(child, ready_r, float(spec.get("liveness", 10.0)))
        return 0 if status is None else status
    except _Stop:
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # the clean-up below runs to its end
        if child is not None:
            _stop_group(child)
        if ready_r is not None:
            os.close(ready_r)
        if keys_dir is not None:
            shutil.rmtree(keys_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
