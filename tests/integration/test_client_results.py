"""What the caller gets back, on a real cluster: values it owns, Dask's shapes, many keys, a dropped client, errors.

Issue 17 (writable results and inputs, nested key lists, many output keys, a dropped
client that knows it), issue 13 item 2 (a map holds nothing it yielded) and issue 15
item 6 (errors that say what to do).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import weakref

import cloudpickle
import numpy as np
import psutil
import pytest

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.client import client as client_module
from scaler_jupyter.errors import DeletedObjectError, ProtocolError, TaskCrashedError
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(120)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT = 30.0
WAIT = 30.0
MB = 1_000_000


def make_array(n: int, fill: float = 1.0) -> np.ndarray:
    return np.full(n, fill)


def fill_and_sum(array: np.ndarray, value: float) -> float:
    """Write the task's input in place, then read it back: another task's writes would show."""
    before = float(array.sum())
    array[:] = value
    return before


def inc(x: int) -> int:
    return x + 1


def crash(_: int) -> None:
    os._exit(13)


# -- results and inputs the caller and each task own -----------------------------------------------


@pytest.mark.parametrize("n", [10, 2_000_000])  # inline in the message header, and a frame of its own
def test_results_are_the_caller_s_to_change(client, n):
    values = [client.submit(make_array, n).result(RESULT_TIMEOUT), next(client.map(make_array, [n])),
              client.get({"a": (make_array, n)}, "a", timeout=RESULT_TIMEOUT),
              client.get({"a": (make_array, n)}, "a", block=False).result(RESULT_TIMEOUT)]
    for value in values:
        value[0] = 5.0  # raises if read-only
        assert value[0] == 5.0 and value[-1] == 1.0


@pytest.mark.parametrize("n", [10, 2_000_000])
def test_a_task_owns_its_inputs_even_those_other_tasks_share(n):
    """One processor runs every task, so a stored object or a graph result is cached where each reads it."""
    with LocalCluster(n_workers=1) as cluster, Client(cluster.address) as client:
        assert client.submit(fill_and_sum, np.ones(n), 2.0).result(RESULT_TIMEOUT) == n
        ref = client.send_object(np.ones(n))
        assert [client.submit(fill_and_sum, ref, 9.0).result(RESULT_TIMEOUT) for _ in range(3)] == [n] * 3
        dsk = {"ones": (make_array, n), **{("fill", i): (fill_and_sum, "ones", 9.0) for i in range(4)}}
        assert client.get(dsk, [("fill", i) for i in range(4)], timeout=RESULT_TIMEOUT) == (n,) * 4


def test_a_graph_future_has_its_profile_as_a_submitted_one_does(client):
    submitted = client.submit(inc, 1)
    [graph] = client.get({"a": (inc, 1)}, ["a"], block=False)
    for future in (submitted, graph):
        assert future.result(RESULT_TIMEOUT) == 2
        assert set(future.profile) == {"wall_time", "cpu_time", "peak_memory"}, future.profile
        assert future.profile["peak_memory"] > 0


# -- Dask's shapes and many keys ----------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["a", ["a"], ["a", "b"], [["a", "b"]], ["a", ["b", ["a"]]], [], [[]], ("t", 1)])
def test_values_come_back_shaped_as_dask_get_returns_them(client, keys):
    dask = pytest.importorskip("dask")
    dsk = {"a": (inc, 0), "b": (inc, "a"), ("t", 1): (inc, "b")}
    assert client.get(dsk, keys, timeout=RESULT_TIMEOUT) == dask.get(dsk, keys)


def test_ten_thousand_output_keys(client):
    dsk = {("inc", i): (inc, i) for i in range(10_000)}
    values = client.get(dsk, list(dsk), timeout=120)
    assert values == tuple(range(1, 10_001))
    assert client.submit(inc, 1).result(RESULT_TIMEOUT) == 2, "the client was dropped"


def test_dask_computes_a_ten_thousand_chunk_array(client):
    """Dask's ``test_arange_very_large_args``: one chunk per element, so 10,000 output keys."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    start, stop = 2**63 - 10_000, 2**63 - 1
    (computed,) = dask.compute(da.arange(start, stop, 1, chunks=1), scheduler=client.get)
    np.testing.assert_array_equal(computed, np.arange(start, stop, 1))
    computed[0] = 0  # the caller's own array


def test_a_slow_done_callback_does_not_stall_the_client(client):
    """User code attached to a future runs off the network thread: the client still talks to the scheduler."""
    entered, release = threading.Event(), threading.Event()

    def slow(_future) -> None:
        entered.set()
        release.wait(WAIT)

    future = client.submit(inc, 1)
    future.add_done_callback(slow)
    try:
        assert entered.wait(WAIT)
        assert client.status(timeout=10)["clients"], "the scheduler did not answer while a callback ran"
    finally:
        release.set()
    assert client.submit(inc, 2).result(RESULT_TIMEOUT) == 3


# -- a map holds nothing it yielded ---------------------------------------------------------------------


def test_a_map_keeps_no_reference_to_a_yielded_result(client):
    """CPython's ``test_free_reference``: a weak reference to a yielded and deleted result is dead."""
    for value in client.map(make_array, [100_000] * 10):
        yielded = weakref.ref(value)
        del value
        gc.collect()
        assert yielded() is None, "the map still holds a result it yielded"


def test_a_windowed_map_of_large_results_keeps_only_its_window_in_memory(client):
    count, size, window = 200, 10 * MB, 4
    process = psutil.Process()
    gc.collect()
    baseline = peak = process.memory_info().rss
    total = 0.0
    for value in client.map(make_array, [size // 8] * count, buffersize=window):
        total += value[0]
        del value
        peak = max(peak, process.memory_info().rss)
    assert total == count
    grown = (peak - baseline) / MB
    # all of it would be 2,000 MB; the window and the message being received are a few results
    assert grown < (window + 8) * size / MB, f"the client grew by {grown:.0f} MB for a window of {window}"


def test_map_refuses_a_window_that_is_not_a_positive_integer(client):
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="buffersize"):
            client.map(inc, [1], buffersize=bad)


# -- errors that say what to do ------------------------------------------------------------------------


def test_a_deleted_object_fails_at_submit_naming_the_argument(client):
    ref = client.send_object(np.ones(100_000))
    client.delete_object(ref)
    with pytest.raises(DeletedObjectError, match="argument 0 of fill_and_sum"):
        client.submit(fill_and_sum, ref, 1.0)
    with pytest.raises(DeletedObjectError, match="keyword argument 'array'"):
        client.submit(fill_and_sum, array=ref, value=1.0)
    with pytest.raises(DeletedObjectError, match="'uses'"):
        client.get({"uses": (fill_and_sum, ref, 1.0)}, "uses")
    again = client.send_object(np.ones(100_000))  # sent again: usable again
    assert client.submit(fill_and_sum, again, 1.0).result(RESULT_TIMEOUT) == 100_000


def test_a_protocol_version_mismatch_is_a_protocol_error(cluster, monkeypatch):
    monkeypatch.setattr(client_module, "PROTOCOL_VERSION", client_module.PROTOCOL_VERSION + 1)
    with pytest.raises(ProtocolError, match="protocol version"):
        Client(cluster.address, timeout=10)


def test_a_crashing_task_says_how_often_it_ran_and_what_sets_it():
    with (LocalCluster(n_workers=1, scheduler_args=("--max-retries", "2")) as cluster,
          Client(cluster.address) as client):
        with pytest.raises(TaskCrashedError, match=r"each of its 2 runs.*--max-retries \(2\)"):
            client.submit(crash, 1).result(RESULT_TIMEOUT)


# -- a dropped client knows it ---------------------------------------------------------------------------

DROPPED_CLIENT = """
import json, sys, time
from scaler_jupyter import Client
from scaler_jupyter.errors import ConnectionLostError

def sleep_then(seconds, value):
    time.sleep(seconds)
    return value

def outcome(call):
    try:
        return {"value": call()}
    except Exception as exc:
        return {"error": type(exc).__name__, "text": str(exc)}

client = Client(sys.argv[1], timeout=30)
pending = client.submit(sleep_then, 3, "late")
print(json.dumps({"client": client.client_number}), flush=True)
sys.stdin.readline()  # the test stops this process, the scheduler drops it, the test resumes it
report = {"pending": outcome(lambda: pending.result(60))}
report["later"] = outcome(lambda: client.submit(sleep_then, 0, "x"))
report["repr"] = repr(client)
client.reconnect()
report["reconnected"] = outcome(lambda: client.submit(sleep_then, 0, "back").result(60))
client.shutdown()
print(json.dumps(report), flush=True)
"""


def test_a_dropped_client_says_why_on_every_call_and_reconnects(tmp_path):
    script = tmp_path / "dropped.py"
    script.write_text(DROPPED_CLIENT)
    with (LocalCluster(n_workers=1, scheduler_args=("--client-timeout", "2")) as cluster,
          Client(cluster.address) as watcher):
        child = subprocess.Popen([sys.executable, str(script), cluster.address], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            number = json.loads(child.stdout.readline())["client"]

            def listed() -> bool:
                return any(c["id"] == number for c in watcher.status()["clients"])

            os.kill(child.pid, signal.SIGSTOP)  # silent: no heartbeat reaches the scheduler
            try:
                wait_until(lambda: not listed(), WAIT, "the scheduler to drop the silent client")
            finally:
                os.kill(child.pid, signal.SIGCONT)
            child.stdin.write("go\n")
            child.stdin.flush()
            report = json.loads(child.stdout.readline())
            assert child.wait(WAIT) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(WAIT)
    for call in ("pending", "later"):
        assert report[call]["error"] == "ConnectionLostError", report
        assert "dropped this client" in report[call]["text"] and "client.reconnect()" in report[call]["text"], report
    assert "disconnected" in report["repr"]
    assert report["reconnected"] == {"value": "back"}
