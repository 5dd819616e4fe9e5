"""A scheduler and 2 workers on 2 SSH hosts, ready, side by side with Dask's SSHCluster; and kill -9 trials.

Two Debian sshd servers on loopback (127.0.0.1 and 127.0.0.2, each its own port, host key and authorized key:
the test suite's ``tests/ssh`` fixtures), so both systems pay SSH's real costs (key exchange,
authentication, a session per process, a remote Python start):

- ``ours``  ``SSHCluster([h1, h2], workers_per_host=2)`` (secure: keys made and shipped), returning once the
  scheduler counts 2 workers;
- ``dask``  ``distributed.deploy.ssh.SSHCluster([h1, h2], worker_options={"n_workers": 2, "nthreads": 1})``
  and ``Client(cluster).wait_for_workers(2)`` (no TLS: Dask's default).

One run each (``--repeat`` for more), as seconds from the call to 2 workers ready, and to everything
closed. Then ``--kill-trials`` times: a script builds our cluster, is killed with ``kill -9``, and the
time until no process is left below the sshd servers (sessions, tethers, scheduler, workers) is taken;
the target is every trial within the death timeout (10 s). Target (issue 16): ready in under 5 s.

Needs root and /usr/sbin/sshd (``make test`` installs openssh-server). Usage::

    python benchmarks/ssh.py [--repeat 1] [--kill-trials 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from tests.helpers import wait_gone  # after the path is set
from tests.ssh.conftest import SshdFactory, skip_reason

DEATH_TIMEOUT = 10.0
KILLED_CALLER = """
import json, sys
from scaler_jupyter import SSHCluster
hosts, options, death_timeout = json.loads(sys.argv[1])
cluster = SSHCluster(hosts, workers_per_host=2, ssh_options=options, death_timeout=death_timeout)
print(json.dumps(cluster.record()), flush=True)
sys.stdin.readline()
"""


def ours(servers) -> tuple[float, float]:
    from scaler_jupyter import SSHCluster

    began = time.perf_counter()
    cluster = SSHCluster([s.destination for s in servers], workers_per_host=2,
                         ssh_options=servers[0].options(known_hosts=None))
    ready = time.perf_counter() - began
    assert cluster.n_workers == 2
    cluster.close()
    return ready, time.perf_counter() - began


def dask(servers) -> tuple[float, float]:
    from distributed import Client
    from distributed.deploy.ssh import SSHCluster

    options = [{"port": s.port, **s.options(known_hosts=None)} for s in servers]
    began = time.perf_counter()
    cluster = SSHCluster([s.host for s in servers], connect_options=options,
                         worker_options={"n_workers": 2, "nthreads": 1},
                         scheduler_options={"dashboard_address": None}, remote_python=sys.executable)
    client = Client(cluster)
    client.wait_for_workers(2, timeout=60)
    ready = time.perf_counter() - began
    client.close()
    cluster.close()
    return ready, time.perf_counter() - began


def below(servers) -> list[psutil.Process]:
    return [p for s in servers for p in psutil.Process(s.process.pid).children(recursive=True)]


def kill_trial(servers) -> float:
    """Seconds from kill -9 of a cluster's owner to no process left below the sshd servers."""
    spec = json.dumps([[s.destination for s in servers], servers[0].options(known_hosts=None), DEATH_TIMEOUT])
    caller = subprocess.Popen([sys.executable, "-c", KILLED_CALLER, spec], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        if not caller.stdout.readline():
            raise RuntimeError("the caller could not start its cluster")
        remote = below(servers)
        caller.kill()
        killed = time.perf_counter()
        caller.wait(10)
        left = wait_gone(remote, DEATH_TIMEOUT * 3)
        if left:
            raise RuntimeError(f"{len(left)} processes alive {DEATH_TIMEOUT * 3:g}s after kill -9")
        return time.perf_counter() - killed
    finally:
        caller.kill()
        caller.wait(10)
        caller.stdout.close()
        caller.stdin.close()


def table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per system (default %(default)s)")
    parser.add_argument("--kill-trials", type=int, default=10, help="kill -9 trials (default %(default)s)")
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 0
    with contextlib.suppress(ImportError):
        import distributed  # noqa: F401  (its logging set-up first, then quieter)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    factory = SshdFactory(Path(tempfile.mkdtemp(prefix="bench-ssh-")))
    try:
        servers = [factory.start("127.0.0.1"), factory.start("127.0.0.2")]
        results: dict[str, list[tuple[float, float]]] = {}
        for name, run in (("ours", ours), ("dask", dask)):
            try:
                results[name] = [run(servers) for _ in range(args.repeat)]
            except Exception as exc:  # a peer that fails is reported; the others still run
                print(f"{name}: failed: {exc!r}", file=sys.stderr)
        peers = [statistics.median(r for r, _ in times) for name, times in results.items() if name != "ours"]
        best = min(peers) if peers else None
        print(f"scheduler + 2 workers on 2 loopback SSH hosts; {os.cpu_count()} cores, load "
              f"{os.getloadavg()[0]:.1f}; median of {args.repeat} (seconds)")
        rows = [["system", "ready", "ready+closed", "best peer / this"]]
        for name, times in results.items():
            ready = statistics.median(r for r, _ in times)
            rows.append([name, f"{ready:.2f}", f"{statistics.median(t for _, t in times):.2f}",
                         f"{best / ready:.2f}x" if best else "-"])
        table(rows)
        if "ours" in results:
            ready = statistics.median(r for r, _ in results["ours"])
            print(f"target: ours ready under 5 s: {'reached' if ready < 5 else 'NOT reached'}")
        if args.kill_trials:
            trials = []
            for _ in range(args.kill_trials):
                try:
                    trials.append(kill_trial(servers))
                except RuntimeError as exc:
                    print(f"kill trial failed: {exc}", file=sys.stderr)
            within = sum(t <= DEATH_TIMEOUT for t in trials)
            print(f"kill -9 of the owner: every remote process gone within {DEATH_TIMEOUT:g} s in {within} of "
                  f"{args.kill_trials} trials (median {statistics.median(trials):.2f} s, max {max(trials):.2f} s)"
                  if trials else "kill -9 trials: none succeeded")
    finally:
        factory.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
