"""Resilience end to end: workers killed mid-map, a client killed mid-map, and a fuzzed scheduler port.

Every test runs its own LocalCluster (it kills part of it) on 127.0.0.1. Tasks
that must be counted append ``"<index> <agent pid>\\n"`` to a log with
``O_APPEND``, so the test knows how often each index ran and on which worker.

The contract under test (DESIGN.md §2, failure): when a worker dies, every task it
held runs again elsewhere and its result reaches the client exactly once; a task
that was running (or had finished, its result not yet sent) on the dead worker
may have *started* twice, on the dead worker and on a live one, never more.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import os
import random
import signal
import subprocess
import sys
import time

import cloudpickle
import msgpack
import psutil
import pytest
import zmq

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.errors import WorkerDiedError
from scaler_jupyter.protocol import (
    INLINE_LIMIT,
    PROTOCOL_VERSION,
    GraphTask,
    ObjectSpec,
    OutputLine,
    Payload,
    StatusReply,
    StatusRequest,
    TaskResult,
    TaskSpec,
    decode,
    encode,
    messages,
)
from tests.helpers import alive, connect, count_deliveries, processors_of, record_run, wait_gone, wait_until

pytestmark = pytest.mark.timeout(120)

# Functions defined here travel by value, as those of a notebook do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

START_TIMEOUT = 20.0
WORKER_TIMEOUT = 3  # seconds: --worker-timeout, so a death is noticed quickly even without disconnect detection
MAP_TIMEOUT = 60.0
N_TASKS = 2_000
KILL_AFTER = 400  # runs logged before the kill: the map is well under way on both workers


# ---------------------------------------------------------------------------
# Tasks (they run on workers)


def logged_double(log, i):
    """Record that index ``i`` ran on this worker, then return 2i."""
    record_run(log, i)
    time.sleep(0.002)
    return 2 * i


def add(a, b):
    return a + b


# ---------------------------------------------------------------------------
# Helpers


def read_runs(log) -> dict[int, list[int]]:
    """Index -> the agent pids it ran on, in order."""
    runs: dict[int, list[int]] = collections.defaultdict(list)
    if os.path.exists(log):
        with open(log) as file:
            for line in file:
                index, pid = line.split()
                runs[int(index)].append(int(pid))
    return runs


def count_lines(log) -> tuple[int, collections.Counter]:
    """(runs logged, runs per agent pid)."""
    by_pid: collections.Counter = collections.Counter()
    if os.path.exists(log):
        with open(log) as file:
            for line in file:
                by_pid[line.split()[1]] += 1
    return sum(by_pid.values()), by_pid


def kill_worker_mid_run(cluster: LocalCluster, log) -> tuple[int, int]:
    """Once the map runs on both workers, ``kill -9`` the first worker's agent; return (victim, survivor) pids.

    Its processors die with it (they are started with PR_SET_PDEATHSIG).
    """
    victim, survivor = cluster.pids[1], cluster.pids[2]
    processors = processors_of(victim)

    def under_way():
        total, by_pid = count_lines(log)
        return total >= KILL_AFTER and by_pid[str(victim)] > 0 and by_pid[str(survivor)] > 0

    wait_until(under_way, MAP_TIMEOUT, f"{KILL_AFTER} tasks to run on both workers")
    os.kill(victim, signal.SIGKILL)
    left = wait_gone([psutil.Process(pid) for pid in processors if alive(pid)], 10)
    assert left == [], "the dead worker's processors outlived it"
    return victim, survivor


def worker_pids(client: Client) -> list[int]:
    return sorted(w["pid"] for w in client.status()["workers"])


@pytest.fixture
def fragile_cluster():
    """Two workers, and a scheduler that declares a silent worker dead after WORKER_TIMEOUT seconds."""
    with LocalCluster(n_workers=2, scheduler_args=("--worker-timeout", str(WORKER_TIMEOUT)),
                      timeout=START_TIMEOUT) as local:
        yield local


# ---------------------------------------------------------------------------
# A worker killed mid-map


def test_kill_9_of_a_worker_mid_map_loses_and_duplicates_no_result(fragile_cluster, tmp_path):
    log = str(tmp_path / "runs")
    with connect(fragile_cluster.address, timeout=START_TIMEOUT) as client:
        assert worker_pids(client) == sorted(fragile_cluster.pids[1:])
        deliveries = count_deliveries(client)
        results = client.map(logged_double, itertools.repeat(log), range(N_TASKS), timeout=MAP_TIMEOUT)
        victim, survivor = kill_worker_mid_run(fragile_cluster, log)

        assert list(results) == [2 * i for i in range(N_TASKS)]
        assert len(deliveries) == N_TASKS and set(deliveries.values()) == {1}, "a result was delivered twice"
        assert worker_pids(client) == [survivor]

    runs = read_runs(log)
    assert sorted(runs) == list(range(N_TASKS))
    twice = {i: pids for i, pids in runs.items() if len(pids) > 1}
    assert all(len(pids) == 2 for pids in twice.values()), "a task ran more than twice"
    # a second run is the re-run of a task the dead worker held: first there, then on the survivor
    assert all(pids == [victim, survivor] for pids in twice.values()), twice
    assert not alive(victim) and alive(survivor)


def test_kill_9_of_a_worker_with_store_tasks_false_fails_only_its_tasks(fragile_cluster, tmp_path):
    log = str(tmp_path / "runs")
    with connect(fragile_cluster.address, store_tasks=False, timeout=START_TIMEOUT) as client:
        futures = [client.submit(logged_double, log, i) for i in range(N_TASKS)]
        victim, survivor = kill_worker_mid_run(fragile_cluster, log)
        _, not_done = concurrent.futures.wait(futures, timeout=MAP_TIMEOUT)
        assert not not_done, f"{len(not_done)} futures never completed"
        assert worker_pids(client) == [survivor]

    died, succeeded = set(), set()
    for i, future in enumerate(futures):
        error = future.exception()
        if error is None:
            assert future.result() == 2 * i
            succeeded.add(i)
        else:
            assert isinstance(error, WorkerDiedError), repr(error)
            died.add(i)
    assert died, "the killed worker held no task: the kill came too late to test anything"
    assert len(died) + len(succeeded) == N_TASKS

    runs = read_runs(log)
    assert all(len(pids) == 1 for pids in runs.values()), "with store_tasks=False no task runs twice"
    assert all(runs[i] == [victim] for i in died if i in runs), "a failed task had run on the survivor"
    assert all(i in runs for i in succeeded)


# ---------------------------------------------------------------------------
# A client killed mid-map

DOOMED_CLIENT = """
import sys, time
from scaler_jupyter import Client

address, n = sys.argv[1], int(sys.argv[2])

def hold(blob, i):
    time.sleep(60)
    return len(blob)

client = Client(address, name="doomed")
futures = [client.submit(hold, bytes([i % 251]) * (1 << 20), i) for i in range(n)]
time.sleep(300)
"""

DOOMED_TASKS = 150  # 1 MiB arguments each: 150 MiB the scheduler must hold, then free
MEMORY_SLACK = 20 * 1024 * 1024


def test_killed_client_has_its_tasks_cancelled_and_scheduler_memory_returns_to_baseline():
    with LocalCluster(n_workers=2, scheduler_args=("--client-timeout", "2"), timeout=START_TIMEOUT) as local:
        with connect(local.address, timeout=START_TIMEOUT) as observer:
            # what the scheduler holds: its own memory, and the shared memory it holds segments of (issue 13)
            def held(status):
                return status["scheduler"]["memory"] + status["scheduler"]["segment_bytes"]

            baseline = held(observer.status())

            def doomed_clients(status):
                return [c for c in status["clients"] if c["name"] == "doomed"]

            doomed = subprocess.Popen([sys.executable, "-c", DOOMED_CLIENT, local.address, str(DOOMED_TASKS)])
            try:
                wait_until(lambda: any(c["submitted"] == DOOMED_TASKS for c in doomed_clients(observer.status())),
                           START_TIMEOUT * 2, "the doomed client to submit every task")
                loaded = held(observer.status())
            finally:
                doomed.kill()
                doomed.wait(10)
            assert loaded - baseline > DOOMED_TASKS * (1 << 20) // 2, (
                f"the scheduler grew by only {(loaded - baseline) >> 20} MiB holding {DOOMED_TASKS} MiB of arguments")

            def forgotten():
                status = observer.status()
                tasks = status["tasks"]
                return not doomed_clients(status) and tasks["pending"] == 0 and tasks["assigned"] == 0

            wait_until(forgotten, 15, "the scheduler to drop the killed client and cancel its tasks")
            memory = []

            def back_to_baseline():
                memory.append(held(observer.status()))
                return memory[-1] - baseline < MEMORY_SLACK

            try:
                wait_until(back_to_baseline, 15, "the scheduler's memory to return to its baseline", interval=0.2)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: baseline {baseline >> 20} MiB, loaded {loaded >> 20} MiB, "
                                     f"now {memory[-1] >> 20} MiB") from None
            assert list(observer.map(add, range(4), range(4), timeout=MAP_TIMEOUT)) == [0, 2, 4, 6]


# ---------------------------------------------------------------------------
# Fuzzing the scheduler's port

FUZZ_MESSAGES = 10_000
FUZZ_PEERS = 100
FUZZ_SEED = 20_240_601


class Fuzzer:
    """Makes hostile and broken multipart messages, reproducibly from one seed.

    Five kinds, mixed: random frames; valid messages cut short; msgpack headers of the
    wrong shape; well-typed messages with wild values (unknown ids, huge or negative
    numbers, mixed-type lists); valid messages with a few bits flipped. Payloads are
    random bytes, never a real pickle, so whatever reaches a worker cannot run.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kinds = [int(k) for k in messages.Kind]
        self.classes = [v for v in vars(messages).values() if isinstance(v, type) and hasattr(v, "KIND")]

    # -- values ---------------------------------------------------------------

    def blob(self, most: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, most))

    def integer(self) -> int:
        r = self.rng
        return r.choice([0, 1, -1, 2, 7, 2**31, 2**40 + r.randint(0, 99), 2**63 - 1, -(2**63), 2**64 - 1,
                         r.randint(-1000, 1000), r.getrandbits(48)])

    def text(self) -> str:
        return "".join(self.rng.choice("ab ☃\x00é\n") for _ in range(self.rng.randint(0, 12)))

    def scalar(self):
        r = self.rng
        return r.choice([None, True, False, self.integer(), r.random() * 1e6, float("nan"), float("inf"),
                         self.text(), self.blob(16)])

    def anything(self, depth: int = 0):
        r = self.rng
        roll = r.random()
        if depth < 3 and roll < 0.2:
            return [self.anything(depth + 1) for _ in range(r.randint(0, 4))]
        if depth < 3 and roll < 0.3:
            return {self.scalar() if r.random() < 0.5 else self.text(): self.anything(depth + 1)
                    for _ in range(r.randint(0, 3))}
        return self.scalar()

    def payload(self) -> Payload:
        parts = []
        for _ in range(self.rng.randint(0, 3)):
            size = INLINE_LIMIT + self.rng.randint(0, 4096) if self.rng.random() < 0.03 else self.rng.randint(0, 80)
            parts.append(self.rng.randbytes(size))
        return Payload(parts)

    def tags(self) -> list:
        r = self.rng
        pool = ["gpu", "cpu", "", "☃", 1, b"x", None, 2.5]
        return [r.choice(pool) for _ in range(r.randint(0, 3))] if r.random() < 0.3 else []

    def object_id(self) -> bytes:
        return self.blob(32) if self.rng.random() < 0.9 else b""

    # -- records and messages -------------------------------------------------

    def task_spec(self) -> TaskSpec:
        r = self.rng
        object_ids = [self.object_id() if r.random() < 0.8 else self.scalar() for _ in range(r.randint(0, 2))]
        return TaskSpec(self.integer(), self.object_id(), self.payload(), object_ids,
                        None if r.random() < 0.7 else self.object_id(), self.tags(), self.integer(),
                        None if r.random() < 0.8 else self.integer())

    def field(self, annotation: str):
        r = self.rng
        base = annotation.removesuffix("| None").strip()
        if annotation.endswith("| None") and r.random() < 0.3:
            return None
        makers = {
            "int": self.integer, "str": self.text, "bytes": self.object_id, "bool": lambda: r.random() < 0.5,
            "float": lambda: r.choice([0.0, -1.0, 1e300, float("nan"), r.random()]),
            "dict": lambda: {self.text(): self.anything() for _ in range(r.randint(0, 3))},
            "list": lambda: [self.anything() for _ in range(r.randint(0, 4))],
            "Payload": self.payload,
            "list[ObjectSpec]": lambda: [ObjectSpec(self.object_id(), self.payload()) for _ in range(r.randint(0, 2))],
            "list[TaskSpec]": lambda: [self.task_spec() for _ in range(r.randint(0, 4))],
            "list[TaskResult]": lambda: [TaskResult(self.integer(), r.randint(-1, 8), self.payload(), self.text(),
                                                    [self.scalar() for _ in range(r.randint(0, 3))])
                                         for _ in range(r.randint(0, 3))],
            "list[GraphTask]": lambda: [GraphTask(self.integer(), self.text(),
                                                  [self.integer() for _ in range(r.randint(0, 3))], r.random() < 0.5)
                                        for _ in range(r.randint(0, 4))],
            "list[OutputLine]": lambda: [OutputLine(self.integer(), r.choice(["stdout", "stderr", ""]), self.text())
                                         for _ in range(r.randint(0, 3))],
        }
        if base in makers:
            return makers[base]()
        if base.startswith("list[") and base[5:-1] in makers:  # a list of scalars: mostly well typed
            if r.random() < 0.7:
                return [makers[base[5:-1]]() for _ in range(r.randint(0, 4))]
            return [self.anything() for _ in range(r.randint(0, 4))]
        return self.anything()  # a field type this fuzzer does not know yet: anything at all

    def message(self):
        """A well-typed message of any kind, with wild values."""
        cls = self.rng.choice(self.classes)
        values = [self.field(f.type) for f in dataclasses.fields(cls)]
        if cls.__name__ in ("ClientHello", "WorkerHello") and self.rng.random() < 0.7:
            values[0] = PROTOCOL_VERSION  # get past the version check to the handler's logic
        return cls(*values)

    def frames(self) -> list[bytes]:
        r = self.rng
        roll = r.random()
        if roll < 0.2:  # random frames
            return [self.blob(300) for _ in range(r.randint(1, 4))]
        if roll < 0.35:  # a valid message, truncated
            frames = [bytes(memoryview(f)) for f in encode(self.message())]
            cut = r.randint(0, max(0, len(frames[0]) - 1))
            return [frames[0][:cut], *frames[1: r.randint(1, len(frames))]]
        if roll < 0.55:  # msgpack, wrong shape
            shape = r.random()
            if shape < 0.5:
                header = [r.choice([*self.kinds, 0, -1, 99, 2**40]), *[self.anything() for _ in range(r.randint(0, 5))]]
            elif shape < 0.7:
                header = [r.choice(self.kinds)]
            else:
                header = self.anything()
            extra = [self.blob(100) for _ in range(r.randint(0, 2))]
            return [msgpack.packb(header), *extra]
        frames = [bytes(memoryview(f)) for f in encode(self.message())]
        if roll < 0.8:  # well-typed, wild values
            return frames
        for _ in range(r.randint(1, 3)):  # bit flips
            i = r.randrange(len(frames))
            if frames[i]:
                data = bytearray(frames[i])
                bit = r.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
                frames[i] = bytes(data)
        return frames


def _drain_until_status_reply(sock: zmq.Socket, request_id: int, deadline: float, scheduler: int) -> None:
    """Read what the scheduler sends this peer until it answers ``request_id``: proof it processed all before."""
    while True:
        assert alive(scheduler), "the scheduler exited during the fuzz (see its log above)"
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the scheduler stopped answering a status request after the fuzz"
        if sock.poll(min(remaining, 1.0) * 1000, zmq.POLLIN):
            try:
                message = decode(sock.recv_multipart())
            except Exception:
                continue
            if isinstance(message, StatusReply) and message.request_id == request_id:
                return


def test_fuzzed_frames_neither_crash_the_scheduler_nor_stop_a_normal_client(capfd):
    rng = random.Random(FUZZ_SEED)
    fuzzer = Fuzzer(rng)
    # --protected: a fuzz peer that says a valid hello and then a valid Shutdown would otherwise stop the
    # cluster, as any client may (Client.shutdown_cluster); that is a feature, not a crash.
    with LocalCluster(n_workers=2, scheduler_args=("--worker-timeout", "2", "--client-timeout", "2", "--protected"),
                      timeout=START_TIMEOUT) as local:
        scheduler = local.pids[0]
        context = zmq.Context()
        try:
            peers, identities = [], set()
            while len(identities) < FUZZ_PEERS:  # distinct: a ROUTER refuses a second peer with a taken identity
                identities.add(bytes([rng.randint(1, 255)]) + rng.randbytes(rng.randint(0, 30)))
            for identity in sorted(identities):
                sock = context.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.IDENTITY, identity)
                sock.connect(local.address)
                peers.append(sock)
            for n in range(FUZZ_MESSAGES):
                frames = fuzzer.frames()
                if not frames:
                    continue
                sock = peers[n % FUZZ_PEERS]
                sock.send_multipart(frames)
                if n % 500 == 0:  # read what came back, so no queue grows without bound
                    for peer in peers:
                        while peer.poll(0, zmq.POLLIN):
                            peer.recv_multipart()
            for i, sock in enumerate(peers):
                sock.send_multipart(encode(StatusRequest(10**6 + i)))
            deadline = time.monotonic() + 30
            for i, sock in enumerate(peers):
                _drain_until_status_reply(sock, 10**6 + i, deadline, scheduler)
        finally:
            context.destroy(linger=0)

        assert alive(scheduler), "the scheduler died of the fuzz"
        with connect(local.address, timeout=START_TIMEOUT) as client:
            status = client.status()
            assert status["scheduler"]["pid"] == scheduler
            # the peers that said hello as workers are gone silent: once they are dropped, the real ones run it all
            assert list(client.map(add, range(200), range(200), timeout=MAP_TIMEOUT)) == [2 * i for i in range(200)]
        assert alive(scheduler)
    # DESIGN §2: a malformed message is rejected at the edge (a ProtocolError from the codec), never half
    # applied; a handler that raises (logged by the server's catch-all) means the codec let a bad shape through.
    errors = [line for line in capfd.readouterr().err.splitlines() if "scheduler ERROR" in line]
    assert not errors, f"{len(errors)} messages passed the codec and failed in a handler, e.g.:\n" + "\n".join(
        errors[:10])


# ---------------------------------------------------------------------------
# Clients coming and going on reused connections


def test_clients_connecting_while_another_keeps_the_scheduler_busy_are_never_dropped():
    """A new client may reuse the fd of one that just left, and its first messages may be read before the old
    connection's DISCONNECTED event: that event must not end the new client."""
    stop = False
    with LocalCluster(n_workers=1, timeout=START_TIMEOUT) as local:
        def keep_busy():
            with connect(local.address) as busy:
                while not stop:
                    assert list(busy.map(add, range(500), range(500), timeout=MAP_TIMEOUT))[-1] == 998

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            busy = pool.submit(keep_busy)
            try:
                for i in range(60):
                    with connect(local.address) as client:
                        assert client.submit(add, i, 1).result(MAP_TIMEOUT) == i + 1
            finally:
                stop = True
            busy.result(MAP_TIMEOUT)
