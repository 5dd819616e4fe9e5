"""The engine's features beyond the Executor contract, end to end on real processes."""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time

import cloudpickle
import psutil
import pytest

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.errors import NoWorkerError, SerializationError, TaskCrashedError
from tests.helpers import (
    alive,
    alive_children,
    block_until,
    connect,
    free_port,
    held_tasks,
    kill_all,
    touch,
    wait_gone,
    wait_until,
    write_atomically,
)

pytestmark = pytest.mark.timeout(90)

# Functions defined here travel by value, as those of a notebook do: workers cannot import this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT = 20.0
QUICK_TIMEOUT = 10.0  # for a few tiny tasks on an idle cluster
START_TIMEOUT = 20.0


# ---------------------------------------------------------------------------
# Tasks (they run on workers)


def add(a, b=0):
    return a + b


def released_at(started, go):
    """Hold the processor until ``go`` exists (see :func:`block_until`); return when it was released."""
    block_until(started, go)
    return time.monotonic_ns()


def value_or_block(i, started, go):
    """Tasks 0-49 return at once; task 50 holds its processor until ``go`` exists."""
    return block_until(started, go, i, timeout=2 * RESULT_TIMEOUT) if i == 50 else i


def stamp(name):
    return name, time.monotonic_ns()


def sleep_long(started):
    write_atomically(started, str(os.getpid()))
    time.sleep(60)
    return "slept"


def leave_a_mark(path):
    touch_here(path)
    return "ran"


def touch_here(path):
    with open(path, "w"):
        pass


def crash(log):
    with open(log, "a") as file:
        file.write(f"{os.getpid()}\n")
    os._exit(1)


def describe(obj):
    return type(obj).__name__, len(obj), obj[:4]


def square(x):
    return x * x


def fan_out(n):
    """A task that is itself a client: ``Client()`` in a task connects to the task's own scheduler."""
    with Client() as inner:
        return sum(inner.map(square, range(n), timeout=30))


def chatty(go, timeout):
    print("first line")
    print("to stderr", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("last line")
    return "spoke"


class TaggingSerializer:
    """Tags every blob with the pid that made it, refuses blobs it did not make, and logs each call."""

    MAGIC = b"TAGGED:"

    def __init__(self, log):
        self.log = log

    def _note(self, what, obj):
        with open(self.log, "a") as file:
            file.write(f"{what} {os.getpid()} {type(obj).__name__}\n")

    def dumps(self, obj):
        self._note("dumps", obj)
        return self.MAGIC + str(os.getpid()).encode() + b":" + cloudpickle.dumps(obj)

    def loads(self, data):
        if not data.startswith(self.MAGIC):
            raise ValueError("a blob TaggingSerializer did not make")
        obj = pickle.loads(data[len(self.MAGIC):].partition(b":")[2])
        self._note("loads", obj)
        return obj


def pid_and_double(x):
    return os.getpid(), 2 * x


def first_of(items):
    return items[0]


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def single():
    """One worker with one processor: the order in which tasks run is observable."""
    with LocalCluster(n_workers=1, processors_per_worker=1, timeout=START_TIMEOUT) as local:
        yield local


# ---------------------------------------------------------------------------
# Serializer


def test_custom_serializer_is_used_on_both_sides(cluster, tmp_path):
    log = tmp_path / "serializer.log"
    with connect(cluster.address, serializer=TaggingSerializer(str(log))) as client:
        ref = client.send_object([7, 8, 9])
        processor, doubled = client.submit(pid_and_double, 21).result(RESULT_TIMEOUT)
        assert doubled == 42
        assert client.submit(first_of, ref).result(RESULT_TIMEOUT) == 7
    me = os.getpid()
    assert processor != me
    calls = [line.split() for line in log.read_text().splitlines()]
    here = {(what, kind) for what, pid, kind in calls if int(pid) == me}
    there = {(what, kind) for what, pid, kind in calls if int(pid) == processor}
    assert {("dumps", "function"), ("dumps", "tuple"), ("dumps", "list"), ("loads", "tuple")} <= here
    # the worker loaded the function and the arguments with it, and serialized the result with it
    assert {("loads", "function"), ("loads", "tuple"), ("dumps", "tuple")} <= there


# ---------------------------------------------------------------------------
# send_object


def test_send_object_is_stored_once_and_resolved_in_tasks(client):
    data = bytes(range(256)) * 1024
    ref = client.send_object(data)
    assert client.submit(describe, ref).result(RESULT_TIMEOUT) == ("bytes", len(data), data[:4])
    assert client.submit(first_of, [ref]).result(RESULT_TIMEOUT) == data
    before = client.status()["scheduler"]  # the object and both functions are stored now
    assert before["object_bytes"] >= len(data)
    futures = [client.submit(describe, ref) for _ in range(20)]
    futures += [client.submit(first_of, [ref, ref])]
    assert all(f.result(RESULT_TIMEOUT) == ("bytes", len(data), data[:4]) for f in futures[:-1])
    assert futures[-1].result(RESULT_TIMEOUT) == data
    assert list(client.map(describe, [ref] * 10, timeout=RESULT_TIMEOUT)) == [("bytes", len(data), data[:4])] * 10
    after = client.status()["scheduler"]
    assert (after["objects"], after["object_bytes"]) == (before["objects"], before["object_bytes"])
    assert client.send_object(data) == ref  # the same content is the same object


def test_functions_of_a_module_registered_by_value_travel_by_value(client, tmp_path, monkeypatch):
    """A helper module the workers cannot import (next to a notebook, say), registered with cloudpickle."""
    (tmp_path / "local_helpers_for_by_value_test.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # here only: workers do not see tmp_path
    module = importlib.import_module("local_helpers_for_by_value_test")
    cloudpickle.register_pickle_by_value(module)
    try:
        assert client.submit(module.triple, 5).result(RESULT_TIMEOUT) == 15
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["local_helpers_for_by_value_test"]


# ---------------------------------------------------------------------------
# Tags


@pytest.fixture
def cpu_and_gpu_cluster():
    """A LocalCluster worker without tags, and a second worker, started by the command line, tagged gpu."""
    local = LocalCluster(n_workers=1, timeout=START_TIMEOUT)
    gpu = subprocess.Popen([sys.executable, "-m", "scaler_jupyter", "worker", local.address,
                            "--tags", "gpu", "--name", "gpu-worker", "--log-level", "WARNING"])
    try:
        with Client(local.address) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield local
    finally:
        gpu.send_signal(signal.SIGTERM)
        try:
            gpu.wait(10)
        except subprocess.TimeoutExpired:
            gpu.kill()
            gpu.wait()
        local.close()


def test_tagged_tasks_run_only_on_tagged_workers(cpu_and_gpu_cluster):
    with connect(cpu_and_gpu_cluster.address) as client:
        workers = {w["name"]: w for w in client.status()["workers"]}
        assert workers["gpu-worker"]["tags"] == ["gpu"]
        gpu_worker = workers["gpu-worker"]["pid"]
        [cpu_worker] = [w["pid"] for name, w in workers.items() if name != "gpu-worker"]

        # untagged tasks spread over both workers, so tags are what keeps these on one
        futures = [client.submit_with(pid_and_double, (i,), tags={"gpu"}) for i in range(8)]
        pids = {f.result(RESULT_TIMEOUT)[0] for f in futures}
        assert {psutil.Process(pid).ppid() for pid in pids} == {gpu_worker}
        untagged = {pid for pid, _ in client.map(pid_and_double, range(40), timeout=RESULT_TIMEOUT)}
        assert {psutil.Process(pid).ppid() for pid in untagged} == {gpu_worker, cpu_worker}

        # no worker has "tpu": the task waits, it does not fail, and other work goes on
        waiting = client.submit_with(add, (1, 2), tags={"tpu"})
        assert client.submit(add, 2, 2).result(RESULT_TIMEOUT) == 4
        assert client.status()["tasks"]["pending"] == 1
        assert not waiting.done()
        assert waiting.cancel()


# ---------------------------------------------------------------------------
# Priority


def test_higher_priority_runs_first(single, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    with connect(single.address) as client:
        try:
            blocker = client.submit(released_at, str(started), str(go))
            wait_until(started.exists, START_TIMEOUT, "the blocking task to start")
            low = client.submit_with(stamp, ("low",), priority=0)
            wait_until(lambda: held_tasks(client) == 2, 10, "the scheduler to hold the low-priority task")
            high = client.submit_with(stamp, ("high",), priority=10)
            wait_until(lambda: held_tasks(client) == 3, 10, "the scheduler to hold the high-priority task")
        finally:
            touch(go)
        released = blocker.result(RESULT_TIMEOUT)
        (_, low_ran), (_, high_ran) = low.result(RESULT_TIMEOUT), high.result(RESULT_TIMEOUT)
        assert released < high_ran
        assert high_ran < low_ran, "the low-priority task, submitted first, ran before the high-priority one"


# ---------------------------------------------------------------------------
# Nested tasks


DEADLOCK_TIMEOUT = 15.0  # a parent and its few children take about a second; a deadlock never ends


def test_nested_tasks_do_not_deadlock_a_single_processor(single):
    with connect(single.address) as client:
        assert client.submit(fan_out, 5).result(DEADLOCK_TIMEOUT) == 0 + 1 + 4 + 9 + 16
        # after many tiny tasks the worker hands its processors several tasks at a time: still no deadlock
        assert list(client.map(add, range(500), range(500), timeout=RESULT_TIMEOUT)) == [2 * i for i in range(500)]
        assert client.submit(fan_out, 5).result(DEADLOCK_TIMEOUT) == 30
        # two parents at once, each waiting on its own children
        parents = [client.submit(fan_out, 3), client.submit(fan_out, 4)]
        assert [f.result(DEADLOCK_TIMEOUT) for f in parents] == [5, 14]


# ---------------------------------------------------------------------------
# Output


def test_task_output_is_streamed_to_the_client(client, capsys, tmp_path):
    go = tmp_path / "go"
    seen = {"out": "", "err": ""}

    def heard(text):
        captured = capsys.readouterr()
        seen["out"] += captured.out
        seen["err"] += captured.err
        return text in seen["out"]

    try:
        future = client.submit(chatty, str(go), 30)
        # the first line arrives while the task still runs
        wait_until(lambda: heard("first line\n"), RESULT_TIMEOUT, "the task's first line")
        assert not future.done()
    finally:
        touch(go)
    assert future.result(RESULT_TIMEOUT) == "spoke"
    heard("")
    assert seen["out"] == "first line\nlast line\n"
    assert seen["err"] == "to stderr\n"


# ---------------------------------------------------------------------------
# Cancellation


def test_cancel_a_queued_task(single, tmp_path):
    started, go, mark = tmp_path / "started", tmp_path / "go", tmp_path / "ran"
    with connect(single.address) as client:
        try:
            blocker = client.submit(released_at, str(started), str(go))
            wait_until(started.exists, START_TIMEOUT, "the blocking task to start")
            queued = client.submit(leave_a_mark, str(mark))
            wait_until(lambda: held_tasks(client) == 2, 10, "the scheduler to hold the queued task")
            assert queued.cancel()
            assert queued.cancelled()
        finally:
            touch(go)
        assert isinstance(blocker.result(RESULT_TIMEOUT), int)  # the running task was left alone
        # one processor runs tasks in order: once a later task is done, the cancelled one would have run
        assert client.submit(add, 1, 2).result(RESULT_TIMEOUT) == 3
        assert not mark.exists()
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result(0)
        wait_until(lambda: held_tasks(client) == 0, 10, "the scheduler to forget the cancelled task")


def test_cancel_a_running_task_stops_it(single, tmp_path):
    started = tmp_path / "started"
    with connect(single.address) as client:
        future = client.submit(sleep_long, str(started))
        wait_until(started.exists, START_TIMEOUT, "the long task to start")
        processor = int(started.read_text())
        assert future.cancel()
        wait_until(lambda: not alive(processor), 10, "the processor running the cancelled task to stop")
        began = time.monotonic()
        assert client.submit(add, 40, 2).result(RESULT_TIMEOUT) == 42
        assert time.monotonic() - began < 10
        wait_until(lambda: held_tasks(client) == 0, 10, "the scheduler to forget the cancelled task")


def mark_then_sleep(marks, i, seconds):
    touch_here(os.path.join(marks, str(i)))
    time.sleep(seconds)
    return i


def test_tasks_cancelled_by_a_map_timeout_never_start(single, tmp_path):
    """The calls a timed-out ``map`` cancels do not run, even those already handed to a processor."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with connect(single.address) as client:
        results = client.map(mark_then_sleep, [str(marks)] * 4, range(4), [2.0] * 4, timeout=0.5)
        with pytest.raises(TimeoutError):
            list(results)
        # one processor runs tasks in order: once a later task is done, no cancelled one can start any more
        assert client.submit(add, 1, 2).result(RESULT_TIMEOUT) == 3
        assert sorted(os.listdir(marks)) == ["0"]


def test_a_result_does_not_wait_for_the_task_after_it(single, tmp_path):
    """A processor sends results in batches, but never holds one until the long task queued after it ends."""
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    with connect(single.address) as client:
        list(client.map(add, range(500)))  # short tasks: the worker now hands its processor many at once
        results = client.map(value_or_block, range(51), [started] * 51, [go] * 51, timeout=RESULT_TIMEOUT)
        assert [next(results) for _ in range(50)] == list(range(50))  # all while the last task still blocks
        touch(go)
        assert next(results) == 50


# ---------------------------------------------------------------------------
# Serialization errors


def test_unpicklable_argument_fails_at_submit_naming_it(client):
    lock = threading.Lock()
    with pytest.raises(SerializationError) as info:
        client.submit(add, 1, lock)
    message = str(info.value)
    assert "argument 1" in message and "lock" in message.lower() and "add" in message
    with pytest.raises(SerializationError, match="keyword argument 'b'"):
        client.submit(add, 1, b=lock)
    with pytest.raises(SerializationError):
        client.submit(lambda: lock)  # the function itself drags the lock along
    assert client.submit(add, 1, 2).result(RESULT_TIMEOUT) == 3  # the client is unharmed


# ---------------------------------------------------------------------------
# Admission


def test_admission_limit_fails_fast_with_no_worker_error():
    with LocalCluster(n_workers=0, scheduler_args=("--max-waiting", "5"), timeout=START_TIMEOUT) as local:
        with connect(local.address) as client:
            futures = [client.submit(add, i, 1) for i in range(10)]
            refused = []
            for future in concurrent.futures.as_completed(futures, timeout=RESULT_TIMEOUT):
                refused.append(future)
                if len(refused) == 5:
                    break
            assert all(isinstance(f.exception(0), NoWorkerError) for f in refused)
            assert "max-waiting" in str(refused[0].exception(0))
            assert client.status()["tasks"]["pending"] == 5
            waiting = [f for f in futures if f not in refused]
            assert not any(f.done() for f in waiting)
            # a worker arrives: the admitted tasks run
            local.scale(1)
            assert sorted(f.result(RESULT_TIMEOUT) for f in waiting) == sorted(futures.index(f) + 1 for f in waiting)


# ---------------------------------------------------------------------------
# Objects


def test_deleting_an_object_a_waiting_task_needs_does_not_kill_the_scheduler():
    with LocalCluster(n_workers=0, timeout=START_TIMEOUT) as local:
        scheduler = local.pids[0]
        with connect(local.address, timeout=10) as client:
            ref = client.send_object(b"x" * 1000)
            future = client.submit(len, ref)
            wait_until(lambda: client.status()["tasks"]["pending"] == 1, 10, "the task to wait")
            client.delete_object(ref)
            client.status()  # answered after the delete: the scheduler has applied it
            local.scale(1, wait=False)
            wait_until(lambda: future.done() or not alive(scheduler), 15, "the task to end")
            assert alive(scheduler), "the scheduler process died"
            assert future.exception() is None or isinstance(future.exception(), SerializationError)
            assert client.submit(add, 1, 1).result(RESULT_TIMEOUT) == 2


# ---------------------------------------------------------------------------
# Failures


CLIENT_SCRIPT = """
import os, sys, time
from scaler_jupyter import Client

address, started = sys.argv[1], sys.argv[2]

def long_task(i):
    open(os.path.join(started, f"{i}-{os.getpid()}"), "w").close()
    time.sleep(120)

client = Client(address)
client.send_object(b"owned by the doomed client")
futures = [client.submit(long_task, i) for i in range(4)]
time.sleep(120)
"""


def test_killed_client_is_dropped_and_its_tasks_stopped(tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    with LocalCluster(n_workers=2, scheduler_args=("--client-timeout", "2"), timeout=START_TIMEOUT) as local:
        doomed = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, local.address, str(started)])
        try:
            wait_until(lambda: len(os.listdir(started)) >= 2, START_TIMEOUT, "two of its tasks to start")
        finally:
            doomed.kill()
            doomed.wait(10)
        running = [int(name.split("-")[1]) for name in os.listdir(started)]
        with connect(local.address) as client:

            def forgotten():
                status = client.status()
                return ([c["id"] for c in status["clients"]] == [client.client_number]
                        and status["tasks"]["pending"] == 0 and status["tasks"]["assigned"] == 0
                        and status["scheduler"]["objects"] == 0)

            wait_until(forgotten, 15, "the scheduler to drop the killed client, its tasks and its objects")
            wait_until(lambda: not any(alive(pid) for pid in running), 10, "its running tasks to be stopped")
            assert list(client.map(add, range(4), range(4), timeout=QUICK_TIMEOUT)) == [0, 2, 4, 6]


def test_crashing_task_fails_after_retries_and_the_worker_survives(single, tmp_path):
    """One worker, so every retry lands on it: the task fails, the worker stays (DESIGN §2, failure)."""
    log = tmp_path / "attempts"
    with connect(single.address) as client:
        [worker] = [w["pid"] for w in client.status()["workers"]]
        future = client.submit(crash, str(log))
        with pytest.raises(TaskCrashedError):
            future.result(RESULT_TIMEOUT)
        attempts = log.read_text().split()
        assert len(attempts) > 1  # retried on fresh processors
        assert len(set(attempts)) == len(attempts)
        assert not any(alive(int(pid)) for pid in attempts)
        assert alive(worker)
        assert [w["pid"] for w in client.status()["workers"]] == [worker]
        assert client.submit(add, 2, 2).result(RESULT_TIMEOUT) == 4


# ---------------------------------------------------------------------------
# Processes


def test_local_cluster_close_stops_every_process():
    local = LocalCluster(n_workers=2, processors_per_worker=2, timeout=START_TIMEOUT)
    try:
        processes = [psutil.Process(pid) for pid in local.pids]
        for worker in local.pids[1:]:
            processes += psutil.Process(worker).children()
        assert len(processes) == 1 + 2 + 2 * 2
        with connect(local.address) as client:
            assert client.submit(add, 1, 1).result(RESULT_TIMEOUT) == 2
    finally:
        local.close()
    assert wait_gone(processes, 3) == []
    local.close()  # twice is harmless


def test_client_without_address_runs_a_private_cluster():
    before = {p.pid for p in alive_children()}
    client = Client()
    try:
        started = [p for p in alive_children() if p.pid not in before]
        assert len(started) >= 3  # a scheduler, and workers with their processors
        assert client.submit(os.getpid).result(RESULT_TIMEOUT) in {p.pid for p in started}
    finally:
        client.shutdown()
    assert wait_gone(started, 5) == []


@pytest.mark.parametrize("command", ["scheduler", "worker", "cluster"])
def test_cli_help(command):
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", command, "--help"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    expected = {
        "scheduler": ["--worker-timeout", "--max-retries", "--client-timeout", "--max-waiting"],
        "worker": ["--processors", "--tags", "--heartbeat"],
        "cluster": ["-n", "--processors", "--tags"],
    }[command]
    assert all(option in done.stdout for option in expected)


def test_cli_scheduler_has_the_documented_monitor_and_balancing_options():
    done = subprocess.run([sys.executable, "-m", "scaler_jupyter", "scheduler", "--help"],
                          capture_output=True, text=True, timeout=30)
    assert "--monitor-address" in done.stdout and "--balance-interval" in done.stdout


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_cli_scheduler_and_cluster_run_tasks_and_stop_on_sigterm():
    address = f"tcp://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "scaler_jupyter"]
    scheduler = subprocess.Popen([*command, "scheduler", address, "--log-level", "WARNING"])
    workers = subprocess.Popen([*command, "cluster", address, "-n", "2", "--log-level", "WARNING"])
    try:
        with connect(address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
            assert list(client.map(add, range(10), range(10), timeout=RESULT_TIMEOUT)) == [2 * i for i in range(10)]
            agents = [psutil.Process(w["pid"]) for w in client.status()["workers"]]
        processes = agents + [p for agent in agents for p in agent.children()]
        assert {agent.ppid() for agent in agents} == {workers.pid}

        workers.send_signal(signal.SIGTERM)
        assert workers.wait(15) == 0
        assert wait_gone(processes, 5) == []
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(15) == 0
    finally:
        _stop(workers)
        _stop(scheduler)


PARENT_SCRIPT = """
import json, sys
import psutil
from scaler_jupyter import LocalCluster

cluster = LocalCluster(n_workers=2)
print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
sys.stdin.read()
"""


def test_cluster_dies_with_its_parent_on_kill_9():
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    processes = []
    try:
        readable, _, _ = select.select([parent.stdout], [], [], START_TIMEOUT)
        assert readable, "the parent did not start its cluster"
        processes = [psutil.Process(pid) for pid in json.loads(parent.stdout.readline())]
        assert len(processes) >= 1 + 2 + 2  # the scheduler, two workers, their processors
    finally:
        parent.kill()  # SIGKILL: no atexit, no close()
        parent.wait(10)
        parent.stdin.close()
        parent.stdout.close()
    left = wait_gone(processes, 10)
    kill_all(left)
    assert left == [], "processes outlived their parent's kill -9"
