"""Scheduler scale: no-op throughput with 2, 100 and 1,000 simulated workers, and memory per queued task.

A real scheduler process (``LocalCluster(n_workers=0)``: ``python -m scaler_jupyter
scheduler``) and a real ``Client`` in this process; the workers are fakes. Each fake is
a DEALER socket with its own identity that speaks the real protocol: it sends a
``WorkerHello`` (one processor, no tags), heartbeats every second, and answers every
``Assign`` at once with ``Results`` (status OK, a pickled ``None``, a 10 us profile, as
a no-op reports), every ``Cancel`` with ``CANCELLED`` results. Many fakes share one
process and one poll loop; every configuration uses the same number of fake processes
(``--fake-processes``), so only the number of workers changes between rows.

Measured:

1. throughput: a ``map`` of ``--tasks`` no-op tasks (after an untimed warm-up map),
   ``--repeats`` times per worker count; tasks/s (median and best), the scheduler's CPU
   time per task, and the median's ratio to that with 2 workers;
2. memory: with no worker, ``--queued`` tasks submitted and waiting; the scheduler's RSS
   (psutil) over its idle baseline, in MB and bytes per queued task, then again once they
   are cancelled.

Targets (issue 3): 100 workers >= 80% of 2 workers' throughput, 1,000 >= 60%; 100,000 queued
tasks in under 100 MB over the idle baseline. Usage::

    python benchmarks/scheduler_scale.py
    python benchmarks/scheduler_scale.py --workers 2,100,1000,2000 --tasks 100000
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
import statistics
import subprocess
import sys
import time

import psutil
import zmq

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.protocol import messages, transport

MB = 1024 * 1024


def noop(x):
    return x


# ---------------------------------------------------------------------------
# The fakes (run as ``scheduler_scale.py --fake ADDRESS COUNT PREFIX``)


def run_fakes(address: str, count: int, prefix: str) -> None:
    """``count`` fake workers in one poll loop, until stdin closes."""
    context = zmq.Context()
    poller = zmq.Poller()
    sockets = []
    host, pid = socket.gethostname(), os.getpid()
    for k in range(count):
        sock = context.socket(zmq.DEALER)
        for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0)):
            sock.setsockopt(option, value)
        sock.setsockopt(zmq.IDENTITY, f"{prefix}-{k}".encode())
        sock.connect(address)
        poller.register(sock, zmq.POLLIN)
        sockets.append(sock)
        transport.send(sock, messages.WorkerHello(messages.PROTOCOL_VERSION, f"fake-{prefix}-{k}", host, pid, 1, []))
    stdin = sys.stdin.fileno()
    poller.register(stdin, zmq.POLLIN)
    ok = messages.Payload([pickle.dumps(None, protocol=5)])
    profile = [1e-5, 1e-5, 0]
    take_back = getattr(messages, "TakeBack", None)  # balancing: nothing is ever queued here, so nothing returns
    taken_back = getattr(messages, "TakenBack", None)
    heartbeat = messages.Heartbeat(0.0, 0, 0, 0)
    next_heartbeat = time.monotonic() + 1.0
    while True:
        for sock, _ in poller.poll(max(0.0, next_heartbeat - time.monotonic()) * 1000):
            if sock == stdin:
                if not os.read(stdin, 4096):
                    context.destroy(linger=0)
                    return
                continue
            while sock.get(zmq.EVENTS) & zmq.POLLIN:
                message = messages.decode(sock.recv_multipart())
                if type(message) is messages.Assign:
                    results = [messages.TaskResult(t.task_id, messages.Status.OK, ok, "", profile)
                               for t in message.tasks]
                    transport.send(sock, messages.Results(results))
                elif type(message) is messages.Cancel:
                    results = [messages.TaskResult(t, messages.Status.CANCELLED, None, "cancelled", [])
                               for t in message.task_ids]
                    transport.send(sock, messages.Results(results))
                elif take_back is not None and type(message) is take_back:
                    transport.send(sock, taken_back([]))
        now = time.monotonic()
        if now >= next_heartbeat:
            for sock in sockets:
                transport.send(sock, heartbeat)
            next_heartbeat = now + 1.0


class Fakes:
    """``n`` fake workers spread over ``processes`` processes; closing their stdin stops them."""

    def __init__(self, address: str, n: int, processes: int) -> None:
        self.processes = []
        per = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        for i, count in enumerate(c for c in per if c):
            self.processes.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--fake", address, str(count), f"p{i}"],
                stdin=subprocess.PIPE))

    def close(self) -> None:
        for process in self.processes:
            process.stdin.close()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def wait_for_workers(client: Client, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(client.status()["workers"]) != n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} fake workers did not join within {timeout:.0f}s")
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# Measurements


def throughput(n_workers: int, args: argparse.Namespace) -> dict:
    with LocalCluster(n_workers=0, timeout=60) as cluster:
        scheduler = psutil.Process(cluster.pids[0])
        fakes = Fakes(cluster.address, n_workers, min(args.fake_processes, n_workers))
        try:
            with Client(cluster.address, timeout=60) as client:
                wait_for_workers(client, n_workers, 60)
                assert list(client.map(noop, range(2000))) == [None] * 2000  # warm-up; fakes answer None
                rates, cpu = [], []
                for _ in range(args.repeats):
                    cpu_before = sum(scheduler.cpu_times()[:2])
                    started = time.perf_counter()
                    count = sum(1 for _ in client.map(noop, range(args.tasks)))
                    elapsed = time.perf_counter() - started
                    assert count == args.tasks
                    rates.append(args.tasks / elapsed)
                    cpu.append((sum(scheduler.cpu_times()[:2]) - cpu_before) / args.tasks * 1e6)
                assert len(client.status()["workers"]) == n_workers, "a fake worker was declared dead"
        finally:
            fakes.close()
    return {"median": statistics.median(rates), "best": max(rates), "cpu_us": statistics.median(cpu)}


def memory(args: argparse.Namespace) -> dict:
    with LocalCluster(n_workers=0, timeout=60) as cluster, Client(cluster.address, timeout=60) as observer:
        scheduler = psutil.Process(cluster.pids[0])
        observer.status()
        baseline = scheduler.memory_info().rss
        deadline = time.monotonic() + 120
        submitter = Client(cluster.address, timeout=60)
        try:
            submitter.map(noop, range(args.queued))
            while observer.status()["tasks"]["pending"] < args.queued:
                if time.monotonic() > deadline:
                    raise TimeoutError("the scheduler did not queue every task within 120 s")
                time.sleep(0.1)
            loaded = scheduler.memory_info().rss
        finally:
            submitter.shutdown(cancel_futures=True)  # no worker will ever run them
        while observer.status()["tasks"]["pending"] > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the scheduler did not cancel the queued tasks within 120 s")
            time.sleep(0.1)
        after = scheduler.memory_info().rss
    return {"baseline": baseline, "loaded": loaded, "after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="2,100,1000", help="simulated worker counts (default 2,100,1000)")
    parser.add_argument("--tasks", type=int, default=50_000, help="no-op tasks per timed map (default 50,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed maps per worker count (default 3)")
    parser.add_argument("--fake-processes", type=int, default=2, help="processes the fakes share (default 2)")
    parser.add_argument("--queued", type=int, default=100_000,
                        help="tasks queued for the memory test (default 100,000)")
    parser.add_argument("--fake", nargs=3, metavar=("ADDRESS", "COUNT", "PREFIX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake:
        run_fakes(args.fake[0], int(args.fake[1]), args.fake[2])
        return

    counts = [int(n) for n in args.workers.split(",")]
    print(f"# scheduler scale on {os.cpu_count()} cores: map of {args.tasks:,} no-op tasks, {args.repeats} repeats, "
          f"fakes in {args.fake_processes} processes")
    print(f"{'workers':>7} {'tasks/s median':>14} {'best':>9} {'sched CPU us/task':>17} {'ratio vs 2':>10} "
          f"{'target':>7}  verdict")
    targets = {100: 0.8, 1000: 0.6}
    base = None
    for n in counts:
        row = throughput(n, args)
        if base is None:
            base = row["median"]
        ratio = row["median"] / base
        target = targets.get(n)
        verdict = "" if target is None else ("OK" if ratio >= target else "MISSED")
        print(f"{n:>7} {row['median']:>14,.0f} {row['best']:>9,.0f} {row['cpu_us']:>17.1f} {ratio:>10.2f} "
              f"{'' if target is None else f'>={target:.2f}':>7}  {verdict}", flush=True)

    row = memory(args)
    over = row["loaded"] - row["baseline"]
    print()
    print(f"{'queued':>8} {'idle RSS MB':>11} {'loaded MB':>9} {'over MB':>8} {'bytes/task':>10} "
          f"{'after cancel MB':>15} {'target':>10}  verdict")
    print(f"{args.queued:>8,} {row['baseline'] / MB:>11.1f} {row['loaded'] / MB:>9.1f} {over / MB:>8.1f} "
          f"{over / args.queued:>10.0f} {row['after'] / MB:>15.1f} {'<100 MB':>10}  "
          f"{'OK' if over < 100 * MB else 'MISSED'}")


if __name__ == "__main__":
    main()
