"""Dask as a client of the engine: ``scheduler=client.get`` gives what Dask's own synchronous scheduler gives.

Each computation runs twice, on the module's two-worker cluster and with
``scheduler="sync"`` in this process, and the two results must be equal. Sizes are
small: what is under test is that every kind of graph Dask hands over (its task
spec objects, aliases, data nodes, nested keys) runs, not the engine's speed.
"""

from __future__ import annotations

import sys

import pytest

dask = pytest.importorskip("dask")

import cloudpickle  # noqa: E402 - after the skip: nothing here matters without Dask
import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402
import numpy as np  # noqa: E402
from dask import delayed  # noqa: E402

from tests.helpers import wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(90)

# Functions defined here travel by value, as those of a notebook do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT = 30.0


# ---------------------------------------------------------------------------
# Functions the graphs call (they run on workers)


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def scaled_sum(values, *, scale=1, offset=0):
    return scale * sum(values) + offset


def describe(mapping, *, label):
    return label, sorted(mapping.items())


def is_even(x):
    return x % 2 == 0


class InteropError(Exception):
    """Raised by :func:`refuse`, so the test can check that the exception's own type comes back."""


def refuse(x):
    raise InteropError(f"refused {x}")


# ---------------------------------------------------------------------------
# Helpers


def on_both(client, *collections):
    """The collections computed on the cluster and with Dask's synchronous scheduler, as a pair of tuples."""
    ours = dask.compute(*collections, scheduler=client.get, timeout=RESULT_TIMEOUT)
    reference = dask.compute(*collections, scheduler="sync")
    return ours, reference


def assert_arrays_equal(client, array) -> None:
    np.testing.assert_allclose(array.compute(scheduler=client.get), array.compute(scheduler="sync"), rtol=1e-12)


def objects_once_alone(client) -> int:
    """The scheduler's object count once this client is its only one (earlier clients' objects are gone)."""

    def alone():
        status = client.status()
        return status if len(status["clients"]) == 1 else None

    return wait_until(alone, RESULT_TIMEOUT, "earlier clients to leave")["scheduler"]["objects"]


@pytest.fixture(scope="module")
def matrix():
    """A 60 x 40 dask.array in uneven 25 x 15 chunks, with its numpy original."""
    values = np.random.default_rng(20_240_601).standard_normal((60, 40))
    return da.from_array(values, chunks=(25, 15)), values


@pytest.fixture(scope="module")
def square():
    values = np.random.default_rng(7).standard_normal((48, 48))
    return da.from_array(values, chunks=16), values


# ---------------------------------------------------------------------------
# dask.delayed


def test_delayed_chain(client):
    x = delayed(inc)(1)
    for _ in range(20):
        x = delayed(inc)(x)
    assert x.compute(scheduler=client.get) == x.compute(scheduler="sync") == 22


def test_nested_delayed_and_keyword_arguments(client):
    parts = [delayed(inc)(i) for i in range(10)]
    pairs = [delayed(add)(a, b) for a, b in zip(parts[::2], parts[1::2], strict=True)]
    total = delayed(scaled_sum)(pairs, scale=delayed(inc)(2), offset=delayed(add)(parts[0], 100))
    labelled = delayed(describe)({"total": total, "first": parts[0]}, label="sums")
    assert total.compute(scheduler=client.get) == total.compute(scheduler="sync") == 3 * 55 + 101
    ours, reference = on_both(client, labelled, [total, pairs[0]], {"nested": (parts[1], [parts[2]])})
    assert ours == reference
    assert ours[0] == ("sums", [("first", 1), ("total", 266)])


def test_delayed_failure_raises_the_task_s_own_exception(client):
    x = delayed(refuse)(delayed(inc)(1))
    with pytest.raises(InteropError, match="refused 2"):
        x.compute(scheduler=client.get)
    assert delayed(inc)(1).compute(scheduler=client.get) == 2


# ---------------------------------------------------------------------------
# dask.array


def test_array_elementwise(client, matrix):
    x, values = matrix
    expression = (x * 2 + 1) ** 2 - np.sin(x)
    assert_arrays_equal(client, expression)
    np.testing.assert_allclose(expression.compute(scheduler=client.get), (values * 2 + 1) ** 2 - np.sin(values))


def test_array_plus_its_transpose(client, square):
    x, values = square
    assert_arrays_equal(client, x + x.T)
    np.testing.assert_allclose((x + x.T).compute(scheduler=client.get), values + values.T)
    assert float((x + x.T).mean().compute(scheduler=client.get)) == pytest.approx((values + values.T).mean())


def test_array_reductions(client, matrix):
    x, values = matrix
    for reduced in (x.sum(), x.mean(), x.std(), x.sum(axis=0), x.mean(axis=1), x.std(axis=0), x.max(), x.argmin()):
        assert_arrays_equal(client, reduced)
    assert float(x.std().compute(scheduler=client.get)) == pytest.approx(values.std())


def test_array_rechunk(client, matrix):
    x, values = matrix
    rechunked = x.rechunk((7, 40))
    assert rechunked.chunks[1] == (40,)
    assert_arrays_equal(client, rechunked)
    np.testing.assert_array_equal(rechunked.compute(scheduler=client.get), values)
    assert_arrays_equal(client, x.rechunk((30, 10)).sum(axis=1))


def test_array_matmul(client, matrix):
    x, values = matrix
    assert_arrays_equal(client, x @ x.T)
    assert_arrays_equal(client, x.T @ x)
    np.testing.assert_allclose((x.T @ x).compute(scheduler=client.get), values.T @ values)


def test_array_slicing(client, matrix):
    x, values = matrix
    for sliced in (x[3:57:2, ::3], x[-1], x[10:30, 5], x[[0, 5, 59], :], x[x[:, 0] > 0]):
        assert_arrays_equal(client, sliced)
    np.testing.assert_array_equal(x[3:57:2, ::3].compute(scheduler=client.get), values[3:57:2, ::3])


def test_array_from_a_generator_of_chunks(client):
    x = da.arange(1_000, chunks=100).reshape(10, 100).astype(np.float64)
    assert_arrays_equal(client, (x / (x + 1)).cumsum(axis=1))
    assert int(da.ones((30, 30), chunks=7, dtype=int).sum().compute(scheduler=client.get)) == 900


# ---------------------------------------------------------------------------
# dask.bag


@pytest.fixture(scope="module")
def numbers():
    return db.from_sequence(range(100), npartitions=7)


def test_bag_map_and_filter(client, numbers):
    result = numbers.map(inc).filter(is_even).compute(scheduler=client.get)
    assert result == numbers.map(inc).filter(is_even).compute(scheduler="sync") == list(range(2, 101, 2))


def test_bag_fold_frequencies_and_sum(client, numbers):
    words = db.from_sequence(["a", "b", "a", "c", "b", "a"] * 5, npartitions=4)
    ours, reference = on_both(client, numbers.fold(add), words.frequencies(), numbers.sum(), numbers.map(inc).sum())
    assert ours[0] == reference[0] == sum(range(100))
    assert sorted(ours[1]) == sorted(reference[1]) == [("a", 15), ("b", 10), ("c", 5)]
    assert ours[2:] == reference[2:] == (sum(range(100)), sum(range(1, 101)))


def test_bag_of_records(client):
    records = db.from_sequence([{"name": n, "value": i} for i, n in enumerate("abcdefgh" * 3)], npartitions=5)
    grouped = records.groupby(lambda record: record["name"]).map(lambda item: (item[0], len(item[1])))
    ours, reference = on_both(client, records.pluck("value").max(), grouped)
    assert ours[0] == reference[0] == 23
    assert sorted(ours[1]) == sorted(reference[1]) == [(name, 3) for name in "abcdefgh"]


# ---------------------------------------------------------------------------
# Several collections at once


def test_compute_of_several_collections_at_once(client, matrix, numbers):
    # Arrays first, then the rest: Dask 2026.8 itself (scheduler="sync" too) returns results out of order when
    # array collections follow others, or when collections sit in a container beside others.
    x, values = matrix
    total = delayed(scaled_sum)([delayed(inc)(i) for i in range(5)], scale=2)
    ours, reference = on_both(client, x.sum(axis=0), x[0, 0], numbers.count(), total)
    np.testing.assert_allclose(ours[0], reference[0])
    np.testing.assert_allclose(ours[0], values.sum(axis=0))
    assert ours[1:] == reference[1:] == (values[0, 0], 100, 30)


def test_a_dask_computation_leaves_no_object_behind(client, matrix):
    x, values = matrix  # 19 kB: Dask puts it in the graph as one data node, which travels once as an object
    assert_arrays_equal(client, x.sum())  # the runner function is sent and stays this client's
    objects = objects_once_alone(client)
    np.testing.assert_allclose((x @ x.T + 1).std(axis=0).compute(scheduler=client.get), (values @ values.T + 1).std(0))
    assert client.status()["scheduler"]["objects"] == objects


def test_the_engine_as_dask_s_configured_scheduler(client, square):
    x, values = square
    with dask.config.set(scheduler=client.get):
        result = (x + x.T).mean().compute()
        persisted = dask.persist(x.sum(axis=1))[0]
    assert float(result) == pytest.approx((values + values.T).mean())
    np.testing.assert_allclose(persisted.compute(scheduler="sync"), values.sum(axis=1))
