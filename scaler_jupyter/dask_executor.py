"""DaskExecutor: a ``concurrent.futures.Executor`` over a Dask distributed cluster.

parfun's ``dask_*`` backends (and pargraph's Dask engine) run on Dask through this
one adapter, so that everything above it speaks only the standard Executor
contract: ``submit`` returns a real ``concurrent.futures.Future``, ``map`` yields
results in order, ``shutdown`` waits for (or cancels) what is pending.

Dask is an optional dependency: it is imported here only, when an executor is made.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_INSTALL_HINT = "DaskExecutor needs Dask distributed, an optional dependency: pip install scaler_jupyter[dask]"


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return distributed


def _apply(fn: Callable, args: tuple, kwargs: dict) -> Any:
    """Run ``fn(*args, **kwargs)`` on a Dask worker; keeps the caller's keywords apart from ``Client.submit``'s own."""
    return fn(*args, **kwargs)


class DaskFuture(concurrent.futures.Future):
    """A standard future for one Dask task; ``cancel()`` reaches the task, even a running one.

    Like this engine's futures it never enters the RUNNING state (the client does not
    learn when a worker starts a task), so it can be cancelled until it is done.
    """

    def __init__(self, dask_future: Any) -> None:
        super().__init__()
        self.key = dask_future.key
        self._dask_future = dask_future

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self.set_running_or_notify_cancel()  # as an executor must, so that wait() and as_completed() see it
        dask_future, self._dask_future = self._dask_future, None
        if dask_future is not None:
            dask_future.cancel()
        return True

    def __repr__(self) -> str:
        return f"<DaskFuture {self.key} {self._state.lower()}>"


class DaskExecutor(concurrent.futures.Executor):
    """Run Python functions on a Dask cluster, as on a ``ProcessPoolExecutor``.

    With ``address`` (``tcp://host:port`` of a Dask scheduler) it connects to that
    cluster. Without, it starts a private ``distributed.LocalCluster`` on 127.0.0.1:
    ``n_workers`` worker processes (default: one per core) of one thread each, no
    dashboard; it is closed on :meth:`shutdown`. ``cluster_kwargs`` go to that
    LocalCluster. ``client`` is the underlying ``distributed.Client``, for what the
    Executor contract does not cover (``scatter``, the dashboard).
    """

    def __init__(self, address: str | None = None, n_workers: int | None = None, *, timeout: float = 30.0,
                 **cluster_kwargs: Any) -> None:
        distributed = _import_distributed()
        self._cluster = None
        if address is None:
            settings = {"n_workers": n_workers or os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None, "host": "127.0.0.1", **cluster_kwargs}
            with warnings.catch_warnings():
                # with the dashboard off the scheduler still serves /health, on 8787 if free: another port is fine
                warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
                self._cluster = distributed.LocalCluster(**settings)
            address = self._cluster.scheduler_address
        elif n_workers is not None or cluster_kwargs:
            raise ValueError("n_workers and cluster settings apply only to the private cluster started without address")
        try:
            self.client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except BaseException:
            if self._cluster is not None:
                self._cluster.close()
            raise
        self.address: str = address
        self._pending: dict[str, DaskFuture] = {}  # keeps each task's Dask future alive until its outcome arrives
        self._lock = threading.Lock()
        self._closed = False

    @property
    def n_workers(self) -> int:
        """How many tasks the cluster runs at once: the sum of its workers' threads."""
        workers = self.client.scheduler_info().get("workers", {})
        return sum(worker.get("nthreads", 1) for worker in workers.values())

    # -- the Executor contract -----------------------------------------------

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> DaskFuture:
        """Run ``fn(*args, **kwargs)`` on a Dask worker; return its future."""
        self._check_open()
        key = _key_for(fn)
        if kwargs:
            dask_future = self.client.submit(_apply, fn, args, kwargs, key=key, pure=False)
        else:
            dask_future = self.client.submit(fn, *args, key=key, pure=False)
        return self._relay(dask_future)

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Like ``Executor.map``: every call is submitted at once (in one message), results come in order.

        ``chunksize`` is accepted for compatibility and ignored: each call is one Dask task.
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = list(zip(*iterables))  # noqa: B905 - stops at the shortest, as Executor.map
        if not calls:
            return iter(())
        name = _key_for(fn)
        keys = [f"{name}-{i}" for i in range(len(calls))]
        dask_futures = self.client.map(fn, *zip(*calls, strict=True), key=keys, pure=False)
        futures = [self._relay(dask_future) for dask_future in dask_futures]
        return _ordered_results(futures, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the client (and the private cluster) once pending tasks are done, as ``Executor.shutdown``.

        With ``cancel_futures`` pending tasks are cancelled; with ``wait=False`` this
        returns at once and the client and cluster close when pending tasks are done.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending.values())
        if cancel_futures:
            for future in pending:
                future.cancel()

        def close_when_done() -> None:
            concurrent.futures.wait(pending)
            self._close()

        if wait:
            close_when_done()
        else:
            threading.Thread(target=close_when_done, name="dask-executor-shutdown", daemon=True).start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._pending)} pending"
        return f"<DaskExecutor {self.address} {state}>"

    # -- internals -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _relay(self, dask_future: Any) -> DaskFuture:
        """A standard future that takes the Dask future's outcome when it arrives."""
        future = DaskFuture(dask_future)
        with self._lock:
            self._pending[future.key] = future

        def on_done(done: Any) -> None:  # in Dask's callback thread
            try:
                if done.status == "finished":
                    outcome = done.result()
                    if not future.done():
                        future.set_result(outcome)
                elif done.status == "cancelled":
                    future.cancel()
                else:
                    error = done.exception()
                    if not future.done():
                        future.set_exception(error.with_traceback(done.traceback()))
            except concurrent.futures.InvalidStateError:  # cancelled meanwhile by the user
                pass
            except BaseException as exc:  # the result could not be fetched (lost worker, closed client)
                if not future.done():
                    future.set_exception(exc)
            finally:
                future._dask_future = None  # the cluster may free the result: this future holds it now
                with self._lock:
                    self._pending.pop(future.key, None)

        dask_future.add_done_callback(on_done)
        return future

    def _close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None


_task_numbers = itertools.count()


def _key_for(fn: Callable) -> str:
    """A unique Dask key that names the function, so the dashboard shows what runs."""
    name = getattr(fn, "__name__", type(fn).__name__)
    return f"{name}-{uuid.uuid4().hex[:16]}-{next(_task_numbers)}"


def _ordered_results(futures: list[DaskFuture], deadline: float | None) -> Iterator:
    """Yield the futures' results in order; cancel those not reached if the consumer stops early."""
    index = 0
    try:
        for index, future in enumerate(futures):  # noqa: B007 - read in finally
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield future.result(remaining)
        index = len(futures)
    finally:
        for future in futures[index:]:
            future.cancel()
