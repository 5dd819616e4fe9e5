"""The client's result side without a network: outcomes, sinks, the delivery thread, the graph message.

Results here are real ``TaskResult`` records with payloads made by the real
serializer, as a worker makes them; what is not here is only the socket.
"""

from __future__ import annotations

import concurrent.futures
import gc
import itertools
import threading
import weakref

import numpy as np
import pytest

from scaler_jupyter import errors
from scaler_jupyter.client import graph_message
from scaler_jupyter.client.delivery import Delivery
from scaler_jupyter.client.future import Future
from scaler_jupyter.client.graph import plan
from scaler_jupyter.client.graph_run import GraphRun
from scaler_jupyter.client.map_results import OrderedResults
from scaler_jupyter.client.outcome import ERRORS, Outcome, TaskState, outcome_of
from scaler_jupyter.errors import ConnectionLostError, DeletedObjectError, TaskCrashedError
from scaler_jupyter.protocol import Payload, Results, Status, TaskResult, decode, encode, serialization
from scaler_jupyter.protocol.serialization import ObjectRef


def ok(task_id: int, value, profile=(0.5, 0.25, 1024)) -> TaskResult:
    return TaskResult(task_id, Status.OK, serialization.dumps(value), "", list(profile))


def failed(task_id: int, status: Status, message: str = "it failed") -> TaskResult:
    return TaskResult(task_id, status, None, message, [])


def received(result: TaskResult) -> TaskResult:
    """``result`` as the client gets it: encoded to frames and decoded again (large parts are frames)."""
    frames = encode(Results([result]))
    return decode([frames[0], *[memoryview(bytearray(f)) for f in frames[1:]]]).results[0]


class Recorded:
    """A sink that records what it is told."""

    def __init__(self) -> None:
        self.delivered: list[Outcome] = []
        self.lost: list[tuple[int, BaseException]] = []
        self.done = threading.Event()

    def deliver(self, outcome: Outcome) -> None:
        self.delivered.append(outcome)
        self.done.set()

    def lose(self, task_id: int, error: BaseException) -> None:
        self.lost.append((task_id, error))
        self.done.set()


# -- outcomes: one per result, each wire status one error type --------------------------------


def test_each_failure_status_is_one_error_type():
    assert ERRORS == {
        Status.CRASHED: errors.TaskCrashedError,
        Status.WORKER_DIED: errors.WorkerDiedError,
        Status.NO_WORKER: errors.NoWorkerError,
        Status.SERIALIZATION: errors.SerializationError,
        Status.INVALID: errors.GraphError,
    }
    for status, kind in ERRORS.items():
        outcome = outcome_of(failed(7, status, "why"))
        assert outcome.state is TaskState.FAILED and type(outcome.error) is kind and str(outcome.error) == "why"
    invalid = outcome_of(failed(7, Status.INVALID)).error
    assert not isinstance(invalid, ConnectionLostError), "a refused graph is not a lost connection"


def test_an_unknown_status_is_a_protocol_error():
    outcome = outcome_of(failed(7, 99))
    assert isinstance(outcome.error, errors.ProtocolError) and "status 99" in str(outcome.error)


def test_a_result_carries_its_value_and_profile_and_a_cancel_is_a_cancel():
    outcome = outcome_of(ok(3, {"a": 1}))
    assert outcome == Outcome(3, TaskState.DONE, {"a": 1}, None,
                              {"wall_time": 0.5, "cpu_time": 0.25, "peak_memory": 1024})
    cancelled = outcome_of(failed(3, Status.CANCELLED))
    assert cancelled.state is TaskState.CANCELLED and isinstance(cancelled.error, concurrent.futures.CancelledError)


def test_a_task_s_exception_comes_back_as_itself_with_the_remote_traceback():
    payload = serialization.dumps((KeyError("missing"), "Traceback ...\nKeyError: 'missing'\n"))
    outcome = outcome_of(TaskResult(4, Status.ERROR, payload, "'missing'", []))
    assert type(outcome.error) is KeyError and "KeyError: 'missing'" in str(outcome.error.__cause__)


@pytest.mark.parametrize("n", [10, 1_000_000])  # inline in the header (bytes), and a frame of its own
def test_received_arrays_are_the_caller_s_to_change(n):
    outcome = outcome_of(received(ok(1, np.arange(n, dtype=np.float64))))
    array = outcome.value
    assert array.flags.writeable
    array[0] = -1.0
    assert array[0] == -1.0 and array[1] == 1.0


def test_a_received_frame_becomes_the_array_without_a_copy():
    result = received(ok(1, np.arange(1_000_000, dtype=np.float64)))
    frame = result.payload.parts[1]
    array = outcome_of(result).value
    assert np.shares_memory(array, np.frombuffer(frame, dtype=np.float64)), "a frame nobody else holds is copied"


def test_a_kept_payload_loaded_with_copy_gives_each_load_its_own_arrays():
    payload = serialization.dumps(np.zeros(100_000))
    payload = Payload([payload.parts[0], memoryview(bytearray(payload.parts[1]))])  # as a worker holds it
    first = serialization.loads(payload, copy=True)
    first[:] = 7.0
    second = serialization.loads(payload, copy=True)
    assert second.flags.writeable and not second.any(), "one task's writes reached another's input"


# -- sinks --------------------------------------------------------------------------------------


def test_a_future_gets_its_value_and_profile():
    future = Future(5, lambda task_id: None)
    future.deliver(outcome_of(ok(5, "five")))
    assert future.result(0) == "five" and future.profile["cpu_time"] == 0.25


def test_a_future_cancelled_by_its_user_stays_cancelled():
    cancels = []
    future = Future(5, cancels.append)
    assert future.cancel() and cancels == [5]
    future.deliver(outcome_of(ok(5, "late")))
    future.lose(5, ConnectionLostError("gone"))
    assert future.cancelled()


def test_ordered_results_yield_in_order_and_keep_nothing_yielded():
    cancelled = []
    results = OrderedResults(cancelled.extend)
    results.add([10, 11, 12])
    for task_id in (12, 10, 11):  # out of order
        results.deliver(Outcome(task_id, TaskState.DONE, value=np.full(3, task_id)))
    iterator = results.iterate(None, flatten=False)
    first = next(iterator)
    assert first[0] == 10
    yielded = weakref.ref(first)
    del first
    gc.collect()
    assert yielded() is None, "the map kept a result it had yielded"
    assert [value[0] for value in iterator] == [11, 12]
    assert cancelled == []


def test_ordered_results_raise_a_failure_in_its_place_and_cancel_the_rest():
    cancelled = []
    results = OrderedResults(cancelled.extend)
    results.add([1, 2, 3])
    results.deliver(Outcome(1, TaskState.DONE, value="one"))
    results.lose(2, ConnectionLostError("the scheduler went away"))
    iterator = results.iterate(None, flatten=False)
    assert next(iterator) == "one"
    with pytest.raises(ConnectionLostError, match="went away"):
        next(iterator)
    assert cancelled == [3]


def test_ordered_results_with_a_window_submit_one_call_per_result_taken():
    results = OrderedResults(lambda task_ids: None)
    task_ids = itertools.count()
    submitted = []

    def refill() -> None:  # what Client.map's window does: one more call per result taken, five in all
        if len(submitted) < 5:
            task_id = next(task_ids)
            submitted.append(task_id)
            results.add([task_id])
            results.deliver(Outcome(task_id, TaskState.DONE, value=task_id * 10))

    refill()
    refill()  # a window of two
    iterator = results.iterate(None, flatten=False, refill=refill)
    assert next(iterator) == 0 and len(submitted) == 3
    assert list(iterator) == [10, 20, 30, 40] and len(submitted) == 5


def test_a_graph_run_ends_once_its_outputs_are_done():
    ended = []
    run = GraphRun([1, 2, 3], lambda task_ids, cancel: ended.append((task_ids, cancel)))
    first, last = run.future_for(2), run.future_for(3)
    run.deliver(outcome_of(ok(2, "b")))
    assert first.result(0) == "b" and not last.done() and ended == []
    run.deliver(outcome_of(ok(3, "c")))
    assert last.result(0) == "c" and last.profile is not None
    assert ended == [([1, 2, 3], False)]


def test_a_graph_run_ends_at_its_first_failure_with_that_error_everywhere():
    ended = []
    run = GraphRun([1, 2, 3], lambda task_ids, cancel: ended.append((task_ids, cancel)))
    futures = [run.future_for(2), run.future_for(3)]
    run.deliver(outcome_of(failed(1, Status.CRASHED, "boom")))
    for future in futures:
        assert isinstance(future.exception(0), TaskCrashedError) and future.profile is None
    run.deliver(outcome_of(failed(2, Status.WORKER_DIED)))  # a late one changes nothing
    assert ended == [([1, 2, 3], False)]


def test_cancelling_one_future_of_a_graph_cancels_the_run():
    ended = []
    run = GraphRun([1, 2], lambda task_ids, cancel: ended.append((task_ids, cancel)))
    first, second = run.future_for(1), run.future_for(2)
    assert first.cancel()
    assert second.cancelled() and ended == [([1, 2], True)]


# -- the delivery thread ------------------------------------------------------------------------


def test_delivery_routes_each_result_once_to_its_sink_and_tells_listeners_of_every_one():
    delivery = Delivery()
    heard = []
    delivery.add_listener(lambda task_id, state: heard.append((task_id, state)))
    sink = Recorded()
    delivery.watch([1, 2], sink)
    delivery.post(Results([ok(1, "one"), ok(1, "again"), failed(2, Status.NO_WORKER), ok(9, "nobody's")]))
    delivery.wait_idle()
    delivery.close()
    assert [(o.task_id, o.state, o.value) for o in sink.delivered] == [
        (1, TaskState.DONE, "one"), (2, TaskState.FAILED, None)]
    assert heard == [(1, TaskState.DONE), (1, TaskState.DONE), (2, TaskState.FAILED), (9, TaskState.DONE)]


def test_a_lost_connection_reaches_every_sink_and_refuses_new_ones():
    delivery = Delivery()
    sink = Recorded()
    delivery.watch([1, 2], sink)
    error = ConnectionLostError("the scheduler dropped this client")
    delivery.post_lost(error)
    delivery.wait_idle()
    delivery.close()
    assert sorted(task_id for task_id, _ in sink.lost) == [1, 2]
    assert all(lost is error for _, lost in sink.lost)
    with pytest.raises(ConnectionLostError, match="dropped"):
        delivery.watch([3], Recorded())


def test_a_failing_sink_does_not_stop_delivery():
    class Broken(Recorded):
        def deliver(self, outcome: Outcome) -> None:
            raise RuntimeError("a sink's own bug")

    delivery = Delivery()
    good = Recorded()
    delivery.watch([1], Broken())
    delivery.watch([2], good)
    delivery.post(Results([ok(1, "one"), ok(2, "two")]))
    assert good.done.wait(10)
    delivery.close()
    assert [o.value for o in good.delivered] == ["two"]


# -- the graph message --------------------------------------------------------------------------


def test_a_task_using_a_deleted_object_is_refused_naming_its_key():
    deleted = ObjectRef(bytes(16))
    dsk = {"uses": (len, deleted), "fine": (len, "abc")}
    with pytest.raises(DeletedObjectError, match="'uses'"):
        graph_message.build(plan(dsk, ["fine", "uses"]), 1, None, itertools.count().__next__,
                            lambda fn: bytes(16), deleted={deleted.object_id})
