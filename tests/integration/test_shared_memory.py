"""Large payload parts through shared memory on one host (issue 13, item 3), with real processes.

Arguments, ``send_object`` data, results and graph intermediates of 64 KiB or more travel as
segments: the scheduler holds them, never their bytes; a task's array is a private, writable,
copy-on-write mapping; the caller's result is one too. Nothing stays held once the work is done,
nor after a client, a worker or the scheduler is killed with ``kill -9``.
"""

from __future__ import annotations

import numpy as np
import pytest

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.protocol import shared_memory
from tests import shm_trials
from tests.helpers import wait_until

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not shared_memory.available(), reason="needs Linux memfd segments")]

ELEMENTS = shm_trials.ELEMENTS


def where(array: np.ndarray) -> str:
    """What this process's memory map says backs ``array``'s data."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= address < high:
                return line.split(maxsplit=5)[5].strip() if len(line.split()) > 5 else "anonymous"
    return "unmapped"


def scribble(array: np.ndarray) -> tuple[str, bool, float, float]:
    """Where the task's array lives, whether it may write it, what it saw first and what it wrote."""
    first = float(array[0])
    array[:] = -1.0
    return where(array), array.flags.writeable, first, float(array[1])


def made(value: float) -> np.ndarray:
    return np.full(ELEMENTS, value)


def double(array: np.ndarray) -> np.ndarray:
    return array * 2


def total(*arrays: np.ndarray) -> float:
    return float(sum(a.sum() for a in arrays))


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, timeout=60) as local:
        yield local


@pytest.fixture
def client(cluster):
    with Client(cluster.address) as c:
        yield c
    wait_until(lambda: not shm_trials.segments_held(), 20, "every segment to be freed after the test")


def test_an_argument_arrives_as_a_private_writable_mapping_of_a_segment(client):
    array = np.arange(ELEMENTS, dtype=np.float64)
    backing, writable, first, written = client.submit(scribble, array).result(60)
    assert backing.startswith("/memfd:scaler-jupyter")
    assert writable and first == 0.0 and written == -1.0
    assert array[0] == 0.0 and array[1] == 1.0  # the caller's own array is untouched


def test_tasks_sharing_a_sent_object_each_get_their_own_copy_on_write_view(client):
    ref = client.send_object(np.full(ELEMENTS, 5.0))
    seen = [f.result(60) for f in [client.submit(scribble, ref) for _ in range(6)]]
    assert all(backing.startswith("/memfd:scaler-jupyter") for backing, *_ in seen)
    assert [first for _, _, first, _ in seen] == [5.0] * 6  # no task saw another's writes
    client.delete_object(ref)


def test_a_result_arrives_as_the_caller_s_own_writable_mapping(client):
    result = client.submit(made, 7.0).result(60)
    assert where(result).startswith("/memfd:scaler-jupyter")
    assert result.flags.writeable and result[0] == 7.0 and result.shape == (ELEMENTS,)
    result[0] = 1.0
    assert result[0] == 1.0 and result[1] == 7.0


def test_the_scheduler_holds_segments_while_tasks_need_them_and_none_after(client):
    arrays = [np.full(ELEMENTS, float(i)) for i in range(4)]
    futures = [client.submit(shm_trials.slow_sum, a, 1.0) for a in arrays]
    wait_until(lambda: client.status()["scheduler"]["segment_bytes"] >= 4 * arrays[0].nbytes, 30,
               "the scheduler to hold the arguments' segments")
    assert [f.result(60) for f in futures] == [float(i) * ELEMENTS for i in range(4)]
    wait_until(lambda: client.status()["scheduler"]["segments"] == 0, 20, "the scheduler to let go")


def test_small_parts_stay_on_the_sockets(client):
    assert client.submit(scribble, np.zeros(1000)).result(60)[0] != "/memfd:scaler-jupyter"


def test_graph_intermediates_go_through_shared_memory(client):
    dsk = {"a": (made, 1.0), "b": (double, "a"), "c": (double, "b"), "d": (total, "a", "b", "c")}
    assert client.get(dsk, "d") == 7.0 * ELEMENTS
    c = client.get(dsk, "c")
    assert c[0] == 4.0 and where(c).startswith("/memfd:scaler-jupyter")


def test_a_map_of_large_arguments_and_results_is_correct(client):
    arrays = [np.full(ELEMENTS // 10, float(i)) for i in range(40)]
    assert [r[0] for r in client.map(double, arrays)] == [2.0 * i for i in range(40)]


@pytest.mark.parametrize("kind", shm_trials.KINDS)
def test_nothing_is_left_after_kill_9(kind):
    for _ in range(2):
        _, held, dev_shm = shm_trials.trial(kind)
        assert not held, f"after kill -9 of the {kind}, segments still held by {held}"
        assert not dev_shm, f"left in /dev/shm: {dev_shm}"
