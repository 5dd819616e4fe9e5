"""``kill -9`` trials for the shared-memory path (issue 13): a client, a worker or the scheduler is killed while
segments are in use, and once the rest has recovered no process holds a segment and nothing is in /dev/shm.

Used by ``tests/integration/test_shared_memory.py`` (a few trials) and ``benchmarks/shared_memory.py`` (20).
Each trial starts its own ``LocalCluster(n_workers=2)`` and stops it.
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.errors import ConnectionLostError
from scaler_jupyter.protocol import shared_memory
from tests.helpers import wait_until

ELEMENTS = 1_250_000  # 10 MB of float64: an argument or result goes through shared memory
START_TIMEOUT = 60.0
RECOVERY_TIMEOUT = 30.0
KINDS = ("client", "worker", "scheduler")
REPO_ROOT = Path(__file__).resolve().parents[1]


def slow_sum(array: np.ndarray, seconds: float) -> float:
    """Hold the argument's mapping for a while, then answer with a result that is a segment too."""
    time.sleep(seconds)
    return float(array.sum())


def filled(value: float, seconds: float) -> np.ndarray:
    time.sleep(seconds)
    return np.full(ELEMENTS, value)


def argument(i: int) -> np.ndarray:
    return np.full(ELEMENTS, float(i))


def tree_pids() -> list[int]:
    """This process and every descendant: every process a trial starts."""
    me = psutil.Process()
    return [me.pid, *(p.pid for p in me.children(recursive=True))]


def segments_held() -> dict[int, int]:
    """Processes of the tree that hold a segment (an fd or a mapping), with how many."""
    gc.collect()  # results a trial dropped are unmapped once collected
    counts = {pid: shared_memory.held_by(pid) for pid in tree_pids()}
    return {pid: n for pid, n in counts.items() if n}


def dev_shm_entries() -> list[str]:
    """What the engine could have left in /dev/shm: nothing there is ever named for it."""
    try:
        return sorted(name for name in os.listdir("/dev/shm") if "scaler" in name)
    except FileNotFoundError:
        return []


DOOMED_CLIENT = """
import sys, time
import numpy as np
from scaler_jupyter import Client
from tests.shm_trials import argument, slow_sum

client = Client(sys.argv[1], name="doomed")
ref = client.send_object(argument(99))
futures = [client.submit(slow_sum, argument(i), 60.0) for i in range(6)] + [client.submit(slow_sum, ref, 60.0)]
print("submitted", flush=True)
time.sleep(300)
"""


def _kill_client(cluster: LocalCluster) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *sys.path]))
    doomed = subprocess.Popen([sys.executable, "-c", DOOMED_CLIENT, cluster.address], stdout=subprocess.PIPE,
                              env=env, text=True)
    try:
        assert doomed.stdout.readline().strip() == "submitted", "the doomed client did not submit"
        with Client(cluster.address, name="observer") as observer:
            wait_until(lambda: observer.status()["tasks"]["running"] >= 2, START_TIMEOUT,
                       "the doomed client's tasks to run")
            assert observer.status()["scheduler"]["segments"] >= 7
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(10)
            wait_until(lambda: all(c["name"] != "doomed" for c in observer.status()["clients"]), RECOVERY_TIMEOUT,
                       "the scheduler to drop the killed client")
            _check_still_works(observer)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)


def _kill_worker(cluster: LocalCluster) -> None:
    with Client(cluster.address) as client:
        futures = [client.submit(slow_sum, argument(i), 0.05) for i in range(16)]
        futures += [client.submit(filled, float(i), 0.05) for i in range(16)]
        wait_until(lambda: sum(f.done() for f in futures) >= 4, START_TIMEOUT, "the first results")
        os.kill(cluster.pids[1], signal.SIGKILL)
        not_done = concurrent.futures.wait(futures, timeout=RECOVERY_TIMEOUT).not_done
        assert not not_done, f"{len(not_done)} tasks never finished after the worker died"
        assert [f.result() for f in futures[:16]] == [float(i) * ELEMENTS for i in range(16)]
        assert all(f.result()[0] == i and f.result()[-1] == i for i, f in enumerate(futures[16:]))
        futures.clear()  # the results go, and with them their mappings
        _check_still_works(client)


def _kill_scheduler(cluster: LocalCluster) -> None:
    client = Client(cluster.address, timeout=3.0)
    try:
        futures = [client.submit(slow_sum, argument(i), 60.0) for i in range(6)]
        wait_until(lambda: client.status()["tasks"]["running"] >= 2, START_TIMEOUT, "the tasks to run")
        os.kill(cluster.pids[0], signal.SIGKILL)
        for future in futures:
            assert isinstance(future.exception(RECOVERY_TIMEOUT), ConnectionLostError)
        workers = [psutil.Process(pid) for pid in cluster.pids[1:]]
        # the workers leave once the scheduler has been silent for their --death-timeout
        _, alive = psutil.wait_procs(workers, timeout=RECOVERY_TIMEOUT)
        assert not alive, f"workers {[p.pid for p in alive]} outlived their scheduler"
    finally:
        client.shutdown(wait=False, cancel_futures=True)


def _check_still_works(client: Client) -> None:
    assert client.submit(slow_sum, argument(3), 0.0).result(START_TIMEOUT) == 3.0 * ELEMENTS


def trial(kind: str) -> tuple[float, dict[int, int], list[str]]:
    """Kill a ``kind`` process mid-work; return the seconds until no process held a segment (or the bound),
    what is still held then (pid -> fds and mappings), and what is in /dev/shm."""
    worker_args = ("--death-timeout", "3") if kind == "scheduler" else ()
    with LocalCluster(n_workers=2, worker_args=worker_args, timeout=START_TIMEOUT) as cluster:
        {"client": _kill_client, "worker": _kill_worker, "scheduler": _kill_scheduler}[kind](cluster)
        started = time.monotonic()
        try:
            wait_until(lambda: not segments_held(), RECOVERY_TIMEOUT, "every segment to be freed")
        except AssertionError:
            pass
        return time.monotonic() - started, segments_held(), dev_shm_entries()
