"""``parallel_map`` and ``parallel_starmap``: lazy, ordered maps over the current backend.

Items are submitted as results are consumed, at most ``IN_FLIGHT_PER_WORKER`` per worker
ahead, so an endless iterable works and memory stays flat; stopping early cancels what
is in flight. With no backend set they are the builtin ``map`` and ``itertools.starmap``.
Given a ``backend_session`` (Citi's argument) they submit through it instead, and its
``submit`` blocks while every worker is busy.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator

from scaler_jupyter.parfun import current, payload, task
from scaler_jupyter.parfun.backends import Backend, BackendSession
from scaler_jupyter.parfun.runner import IN_FLIGHT_PER_WORKER

_END = object()


def parallel_map(function: Callable, *iterables: Iterable, backend_session: BackendSession | None = None) -> Iterator:
    """``map(function, *iterables)`` on the current backend (or ``backend_session``): lazy, in order.

    ``list(pf.parallel_map(math.sqrt, [4, 9, 16]))`` is ``[2.0, 3.0, 4.0]``.
    """
    return parallel_starmap(function, zip(*iterables), backend_session=backend_session)  # noqa: B905 - as map


def parallel_starmap(function: Callable, iterable: Iterable[tuple],
                     backend_session: BackendSession | None = None) -> Iterator:
    """``itertools.starmap(function, iterable)`` on the current backend (or ``backend_session``): lazy, in order."""
    if backend_session is not None:
        return _in_session(backend_session, function, iter(iterable))
    backend = current.backend_for_call()
    if backend is None:
        return itertools.starmap(function, iterable)
    if backend.in_process:
        return _in_caller(function, iterable)
    return _on_backend(backend, function, iter(iterable))


def _in_caller(function: Callable, iterable: Iterable[tuple]) -> Iterator:
    for args in iterable:
        yield task.call_item(function, tuple(args))


def _in_session(session: BackendSession, function: Callable, calls: Iterator[tuple]) -> Iterator:
    in_flight: collections.deque = collections.deque()
    try:
        for args in calls:
            in_flight.append(session.submit(function, *args))  # blocks while every worker is busy
            while in_flight and in_flight[0].done():
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        for future in in_flight:
            future.cancel()


def _on_backend(backend: Backend, function: Callable, calls: Iterator[tuple]) -> Iterator:
    key, data = task.make_ref(function)
    shared = backend.share(data)
    function_ref = (key, shared)
    limit = max(2, IN_FLIGHT_PER_WORKER * backend.n_workers)
    in_flight: collections.deque = collections.deque()
    try:
        def submit(args: tuple) -> None:
            in_flight.append(backend.submit(task.run_item, function_ref, backend.wrap(payload.dumps(tuple(args)))))

        for args in itertools.islice(calls, limit):
            submit(args)
        while in_flight:
            future = in_flight.popleft()
            following = next(calls, _END)
            if following is not _END:
                submit(following)
            yield payload.loads(future.result())
    finally:
        for future in in_flight:
            future.cancel()
        backend.release(shared)
