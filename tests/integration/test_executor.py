"""The Client is a ``concurrent.futures.Executor``: the standard contract, on a real cluster."""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time

import cloudpickle
import pytest

from scaler_jupyter import Client, Future

pytestmark = pytest.mark.timeout(60)

# Functions defined here travel by value, as those of a notebook do: workers cannot import this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT = 20.0


def add(a, b=0, *, c=0):
    return a + b + c


def sleep_then_return(seconds, value):
    time.sleep(seconds)
    return value


def fail_with_value_error(text):
    raise ValueError(f"bad value: {text}")


class CustomError(Exception):
    def __init__(self, code):
        super().__init__(f"custom error {code}")
        self.code = code


def fail_with_custom_error(code):
    raise CustomError(code)


def identity(x):
    return x


def test_submit_and_result(client):
    future = client.submit(add, 2, 3)
    assert isinstance(future, concurrent.futures.Future) and isinstance(future, Future)
    assert future.result(RESULT_TIMEOUT) == 5
    assert future.done() and not future.cancelled()
    assert future.exception() is None


def test_submit_with_kwargs(client):
    assert client.submit(add, 1, b=2, c=3).result(RESULT_TIMEOUT) == 6
    assert client.submit(add, a=4, c=5).result(RESULT_TIMEOUT) == 9
    assert client.submit(dict, x=1, y=[2]).result(RESULT_TIMEOUT) == {"x": 1, "y": [2]}


def test_submit_builtin_and_lambda(client):
    assert client.submit(pow, 2, 10).result(RESULT_TIMEOUT) == 1024
    offset = 7
    assert client.submit(lambda x: x + offset, 1).result(RESULT_TIMEOUT) == 8


def test_large_arguments_and_results_round_trip(client):
    data = bytes(range(256)) * 4096  # 1 MiB: travels as its own frames
    assert client.submit(identity, data).result(RESULT_TIMEOUT) == data


def test_result_timeout(client):
    future = client.submit(sleep_then_return, 30, "late")
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.2)
    assert future.cancel()


def test_map_with_several_iterables(client):
    assert list(client.map(pow, [2, 3, 4], [5, 6, 7])) == [32, 729, 16384]
    assert list(client.map(add, range(10), range(0, 100, 10))) == [i + 10 * i for i in range(10)]
    assert list(client.map(add, [1, 2, 3], [10])) == [11]  # stops at the shortest, like zip


def test_map_keeps_input_order(client):
    delays = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0]
    assert list(client.map(sleep_then_return, delays, range(6), timeout=RESULT_TIMEOUT)) == list(range(6))


def test_map_of_many_small_tasks(client):
    assert list(client.map(add, range(3000), range(3000), timeout=RESULT_TIMEOUT)) == [2 * i for i in range(3000)]


def test_map_of_nothing(client):
    assert list(client.map(add, [])) == []


def test_map_timeout_raises_timeout_error(client):
    started = time.monotonic()
    results = client.map(sleep_then_return, [0.0, 30.0, 30.0], ["a", "b", "c"], timeout=1.0)
    assert next(results) == "a"
    with pytest.raises(TimeoutError):
        next(results)
    assert time.monotonic() - started < 10


def test_map_with_chunksize(client):
    before = _submitted_by(client)
    assert list(client.map(add, range(100), range(100), chunksize=7)) == [2 * i for i in range(100)]
    assert _submitted_by(client) - before == 15  # ceil(100 / 7) tasks, not 100
    assert list(client.map(add, range(5), chunksize=10)) == list(range(5))


def _submitted_by(client: Client) -> int:
    [me] = [c for c in client.status()["clients"] if c["id"] == client.client_number]
    return me["submitted"]


def test_exception_comes_back_with_its_type_and_remote_traceback(client):
    future = client.submit(fail_with_value_error, "x")
    with pytest.raises(ValueError, match="bad value: x") as info:
        future.result(RESULT_TIMEOUT)
    cause = info.value.__cause__
    assert cause is not None
    remote = str(cause)
    assert "fail_with_value_error" in remote and "ValueError: bad value: x" in remote
    assert isinstance(future.exception(), ValueError)


def test_custom_exception_keeps_its_class_and_attributes(client):
    with pytest.raises(CustomError) as info:
        client.submit(fail_with_custom_error, 42).result(RESULT_TIMEOUT)
    assert info.value.code == 42
    assert "fail_with_custom_error" in str(info.value.__cause__)


def test_exception_in_map_is_raised_at_its_position(client):
    results = client.map(lambda x: 1 // x, [1, 1, 0, 1])
    assert next(results) == 1 and next(results) == 1
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_wait_and_as_completed(client):
    futures = [client.submit(sleep_then_return, d, i) for i, d in enumerate([0.6, 0.0, 0.3])]
    done, not_done = concurrent.futures.wait(futures, timeout=RESULT_TIMEOUT,
                                             return_when=concurrent.futures.FIRST_COMPLETED)
    assert done
    done, not_done = concurrent.futures.wait(futures, timeout=RESULT_TIMEOUT)
    assert not not_done and len(done) == 3
    more = [client.submit(sleep_then_return, d, i) for i, d in enumerate([0.5, 0.0, 0.2, 0.1])]
    finished = list(concurrent.futures.as_completed(more, timeout=RESULT_TIMEOUT))
    assert set(finished) == set(more)
    assert sorted(f.result() for f in finished) == [0, 1, 2, 3]


def test_wait_first_exception(client):
    futures = [client.submit(sleep_then_return, 30, 0), client.submit(fail_with_value_error, "y")]
    done, not_done = concurrent.futures.wait(futures, timeout=RESULT_TIMEOUT,
                                             return_when=concurrent.futures.FIRST_EXCEPTION)
    assert futures[1] in done and futures[0] in not_done


def test_add_done_callback(client):
    called = threading.Event()
    seen = []

    def callback(future):
        seen.append(future)
        called.set()

    future = client.submit(add, 20, 22)
    future.add_done_callback(callback)
    assert called.wait(RESULT_TIMEOUT)
    assert seen == [future] and future.result() == 42
    late = []
    future.add_done_callback(late.append)  # on a done future: called at once
    assert late == [future]


def test_profile_is_attached_to_results(client):
    future = client.submit(sleep_then_return, 0.2, None)
    future.result(RESULT_TIMEOUT)
    assert future.profile is not None
    assert future.profile["wall_time"] >= 0.2
    assert future.profile["cpu_time"] >= 0 and future.profile["peak_memory"] > 0


def test_cancel_a_finished_future_is_refused(client):
    future = client.submit(add, 1, 1)
    future.result(RESULT_TIMEOUT)
    assert not future.cancel()


def test_shutdown_waits_for_pending_tasks(cluster):
    client = Client(cluster.address)
    futures = [client.submit(sleep_then_return, 0.3, i) for i in range(4)]
    client.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(0) for f in futures] == [0, 1, 2, 3]


def test_shutdown_without_wait_returns_at_once_and_futures_still_complete(cluster):
    """``Executor.shutdown(wait=False)``: resources are freed when the pending futures are done."""
    client = Client(cluster.address)
    future = client.submit(sleep_then_return, 0.5, "finished")
    started = time.monotonic()
    client.shutdown(wait=False)
    assert time.monotonic() - started < 1
    with pytest.raises(RuntimeError):
        client.submit(add, 1, 2)
    try:
        assert future.result(10) == "finished"  # a half-second task
    finally:
        future.cancel()


def test_shutdown_cancel_futures(cluster):
    client = Client(cluster.address)
    quick = client.submit(add, 1, 2)
    assert quick.result(RESULT_TIMEOUT) == 3
    slow = [client.submit(sleep_then_return, 60, i) for i in range(4)]
    started = time.monotonic()
    client.shutdown(cancel_futures=True)
    assert time.monotonic() - started < 5
    assert all(f.cancelled() for f in slow)
    assert quick.result(0) == 3
    # the cluster is free again: the cancelled sleeps are not occupying its processors
    with Client(cluster.address) as other:
        assert list(other.map(add, range(4), range(4), timeout=RESULT_TIMEOUT)) == [0, 2, 4, 6]


def test_context_manager_shuts_down(cluster):
    with Client(cluster.address) as client:
        future = client.submit(sleep_then_return, 0.2, "done")
    assert future.done() and future.result(0) == "done"
    with pytest.raises(RuntimeError):
        client.submit(add, 1, 2)


def test_submit_after_shutdown_raises_runtime_error(cluster):
    client = Client(cluster.address)
    client.shutdown()
    with pytest.raises(RuntimeError):
        client.submit(add, 1, 2)
    with pytest.raises(RuntimeError):
        client.map(add, [1], [2])
    with pytest.raises(RuntimeError):
        client.submit_with(add, (1, 2))
    with pytest.raises(RuntimeError):
        client.send_object(b"data")
    client.shutdown()  # twice is harmless


def test_clients_are_independent(cluster):
    with Client(cluster.address) as one, Client(cluster.address) as two:
        a = one.map(add, range(50), range(50))
        b = two.map(add, range(50), [1] * 50)
        assert list(a) == [2 * i for i in range(50)]
        assert list(b) == [i + 1 for i in range(50)]
        assert one.client_number != two.client_number
