"""Backends: where the partitions of a parallel function run.

Every backend but one is a ``concurrent.futures.Executor`` and a worker count:

- ``local_single_process``: in the caller, one partition after another (to debug a split or a combine);
- ``local_multiprocessing``: a ``ProcessPoolExecutor`` (spawned processes);
- ``scaler_local`` / ``scaler_remote``: this engine's :class:`~scaler_jupyter.Client`, on a private
  :class:`~scaler_jupyter.LocalCluster` or on a running scheduler; tasks may run parallel functions
  nested on the same cluster;
- ``dask_local`` / ``dask_remote`` / ``dask_current``: a :class:`~scaler_jupyter.dask_executor.DaskExecutor`.

Beside ``submit`` (which never blocks: the runner bounds what it keeps in flight itself), a
backend opens sessions (Citi's interface): ``with backend.session() as s: s.submit(fn, *args)``
blocks while every worker is busy and returns a :class:`ProfiledFuture` that also tells the
task's CPU time.

A backend made by name is owned by whoever set it, and shut down when replaced or when its
context ends; an instance passed in (a backend, or any Executor) is left running.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any


class Backend:
    """Runs partitions: ``submit`` a call, know how many run at once, ``shutdown`` what was started."""

    name = "backend"
    in_process = False  # partitions run in the caller: nothing is serialized
    nested_tasks = False  # a task may itself run a parallel function on this backend
    out_of_band = False  # its transport pickles with protocol 5 and sends PickleBuffers as their own frames

    def __init__(self, executor: concurrent.futures.Executor | None = None, n_workers: int | None = None,
                 owned: bool = False) -> None:
        self.executor = executor
        self._n_workers = n_workers
        self._owned = owned
        self._per_worker = 1  # tasks a session keeps in flight per worker
        self._slots: threading.BoundedSemaphore | None = None  # shared by the sessions, made at the first one
        self._slots_lock = threading.Lock()

    def allows_nested_tasks(self) -> bool:
        """Whether a task may itself run a parallel function on this backend (else it runs sequentially there)."""
        return self.nested_tasks

    def session(self) -> BackendSession:
        """A session that submits at most one task per worker at a time (Citi's ``BackendEngine.session()``)."""
        if self.in_process:
            return BackendSession(self, None)
        with self._slots_lock:
            if self._slots is None:
                self._slots = threading.BoundedSemaphore(max(1, self.n_workers * self._per_worker))
        return BackendSession(self, self._slots)

    @property
    def n_workers(self) -> int:
        """How many partitions run at once."""
        if self._n_workers is not None:
            return self._n_workers
        return getattr(self.executor, "_max_workers", None) or os.cpu_count() or 1

    def submit(self, fn: Callable, /, *args: Any) -> concurrent.futures.Future:
        return self.executor.submit(fn, *args)

    def share(self, data: bytes) -> Any:
        """What to pass to tasks in place of ``data`` that every task of a call needs (by default, ``data``)."""
        return data

    def wrap(self, data: bytes) -> Any:
        """How a task's own bytes travel: as they are, or (see ``out_of_band``) without a copy into the pickle."""
        return pickle.PickleBuffer(data) if self.out_of_band else data

    def release(self, shared: Any) -> None:
        """Free what :meth:`share` stored, once the call is over."""

    def shutdown(self) -> None:
        """Stop what this backend started (pending partitions are cancelled)."""
        if self._owned and self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class LocalSingleProcessBackend(Backend):
    """Partitions run in the caller, one after another, as they are combined: for debugging."""

    name = "local_single_process"
    in_process = True

    def __init__(self) -> None:
        super().__init__(None, 1)

    def submit(self, fn: Callable, /, *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class LocalMultiprocessingBackend(Backend):
    """A pool of ``max_workers`` spawned processes (default: one per core)."""

    name = "local_multiprocessing"

    def __init__(self, max_workers: int | None = None, **pool_kwargs: Any) -> None:
        max_workers = max_workers or os.cpu_count() or 1
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers, mp_context=pool_kwargs.pop("mp_context", multiprocessing.get_context("spawn")),
            **pool_kwargs)
        super().__init__(pool, max_workers, owned=True)


class ScalerBackend(Backend):
    """This engine's Client: large arguments shared by a call are stored once on the scheduler."""

    name = "scaler"
    nested_tasks = True
    out_of_band = True
    SHARE_ABOVE = 64 * 1024  # bytes: smaller arguments travel with each task

    def __init__(self, client: Any, n_workers: int | None = None, owned: bool = False) -> None:
        super().__init__(client, n_workers, owned)
        self.out_of_band = client.serializer is None  # a custom serializer may not know PickleBuffers

    @property
    def n_workers(self) -> int:
        if self._n_workers is not None:
            return self._n_workers
        workers = self.executor.status()["workers"]  # a remote cluster may grow or shrink between calls
        return max(1, sum(worker.get("processors", 1) for worker in workers))

    def share(self, data: bytes) -> Any:
        return self.executor.send_object(data) if len(data) > self.SHARE_ABOVE else data

    def release(self, shared: Any) -> None:
        if not isinstance(shared, bytes):
            self.executor.delete_object(shared)

    def __reduce__(self) -> tuple:
        # Passed into a task, the backend becomes that process's client of the same scheduler.
        return _attach_scaler, (self.executor.address,)


def _attach_scaler(address: str) -> Backend:
    """An unpickled scaler backend: inside a task of that scheduler, the task's own client; else a new one."""
    from scaler_jupyter import Client, task_context
    from scaler_jupyter.parfun import current

    if task_context.scheduler_address() == address:
        return current.nested_backend(address)
    return ScalerBackend(Client(address), owned=True)


class ScalerRemoteBackend(ScalerBackend):
    """A running scheduler of this engine, at ``scheduler_address``; ``client_kwargs`` go to its Client.

    ``per_worker_queue_size`` is how many tasks a :meth:`~Backend.session` keeps in flight per worker.
    """

    name = "scaler_remote"

    def __init__(self, scheduler_address: str, n_workers: int | None = None, per_worker_queue_size: int = 1,
                 **client_kwargs: Any) -> None:
        from scaler_jupyter import Client

        super().__init__(Client(scheduler_address, **client_kwargs), n_workers, owned=True)
        self._per_worker = per_worker_queue_size


class ScalerLocalBackend(ScalerRemoteBackend):
    """A private LocalCluster of this engine with ``n_workers`` workers (default: one per core)."""

    name = "scaler_local"

    def __init__(self, n_workers: int | None = None, per_worker_queue_size: int = 1, **cluster_kwargs: Any) -> None:
        from scaler_jupyter import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=n_workers, **cluster_kwargs)
        try:
            client = Client(self.cluster.address, keys=self.cluster.keys)
        except BaseException:
            self.cluster.close()
            raise
        ScalerBackend.__init__(self, client, owned=True)
        self._per_worker = per_worker_queue_size

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self.cluster.close()


class DaskRemoteBackend(Backend):
    """A running Dask scheduler at ``scheduler_address``, through the shared Executor adapter."""

    name = "dask_remote"

    def __init__(self, scheduler_address: str, n_workers: int | None = None, timeout: float = 30.0) -> None:
        from scaler_jupyter.dask_executor import DaskExecutor

        super().__init__(DaskExecutor(scheduler_address, timeout=timeout), n_workers, owned=True)

    @property
    def n_workers(self) -> int:
        if self._n_workers is not None:
            return self._n_workers
        return max(1, self.executor.n_workers)


class DaskLocalBackend(DaskRemoteBackend):
    """A private Dask LocalCluster of ``n_workers`` single-threaded worker processes."""

    name = "dask_local"

    def __init__(self, n_workers: int | None = None, **cluster_kwargs: Any) -> None:
        from scaler_jupyter.dask_executor import DaskExecutor

        Backend.__init__(self, DaskExecutor(n_workers=n_workers, **cluster_kwargs), owned=True)


class DaskCurrentBackend(DaskRemoteBackend):
    """The Dask cluster of the current ``distributed`` client (``distributed.get_client()``)."""

    name = "dask_current"

    def __init__(self, n_workers: int | None = None, timeout: float = 30.0) -> None:
        import distributed

        super().__init__(distributed.get_client().scheduler.address, n_workers, timeout)


class ProfiledFuture(concurrent.futures.Future):
    """A session's future: also tells the CPU time the task took in its worker (Citi's ``ProfiledFuture``)."""

    def __init__(self) -> None:
        super().__init__()
        self._duration: int | None = None

    def duration(self, timeout: float | None = None) -> int | None:
        """The task's CPU time in nanoseconds, once it is done (None if it raised)."""
        self.exception(timeout)
        return self._duration

    def result_and_duration(self, timeout: float | None = None) -> tuple[Any, int | None]:
        """``(result(), duration())``."""
        return self.result(timeout), self._duration


class BackendSession:
    """Submits tasks to a backend, blocking while every worker is busy (Citi's ``BackendSession``).

    ``with backend.session() as session: session.submit(fn, *args, **kwargs).result()``. The slots
    are the backend's, shared by its sessions; a task's slot is given back after its future's
    callbacks ran, so a callback that counts running tasks never sees more than the workers.
    """

    def __init__(self, backend: Backend, slots: threading.BoundedSemaphore | None) -> None:
        self.backend = backend
        self._slots = slots

    def __enter__(self) -> BackendSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def preload_value(self, value: Any) -> Any:
        """What to pass to :meth:`submit` in place of ``value`` (here: ``value`` itself)."""
        return value

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> ProfiledFuture:
        """Run ``fn(*args, **kwargs)`` on the backend, once a worker is free."""
        if self._slots is not None:
            self._slots.acquire()
        outer = ProfiledFuture()
        try:
            inner = self.backend.submit(_timed_call, fn, args, kwargs)
        except BaseException:
            self._release()
            raise
        inner.add_done_callback(lambda done: self._relay(done, outer))
        return outer

    def _relay(self, done: concurrent.futures.Future, outer: ProfiledFuture) -> None:
        try:
            if done.cancelled():
                outer.cancel()
            elif done.exception() is not None:
                outer.set_exception(done.exception())
            else:
                result, outer._duration = done.result()
                outer.set_result(result)
        finally:
            self._release()

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release()


def _timed_call(fn: Callable, args: tuple, kwargs: dict) -> tuple[Any, int]:
    start = time.thread_time_ns()
    result = fn(*args, **kwargs)
    return result, time.thread_time_ns() - start


class ExecutorBackend(Backend):
    """Any ``concurrent.futures.Executor`` the caller made (a Client, a pool): used, never shut down."""

    name = "executor"

    def __init__(self, executor: concurrent.futures.Executor, n_workers: int | None = None) -> None:
        super().__init__(executor, n_workers, owned=False)


def _no_backend() -> None:
    """The ``"none"`` backend: parallel functions run sequentially, as plain calls."""
    return None


REGISTRY: dict[str, Callable[..., Backend | None]] = {
    "none": _no_backend,
    "local_single_process": LocalSingleProcessBackend,
    "local_multiprocessing": LocalMultiprocessingBackend,
    "scaler_local": ScalerLocalBackend,
    "scaler_remote": ScalerRemoteBackend,
    "dask_local": DaskLocalBackend,
    "dask_remote": DaskRemoteBackend,
    "dask_current": DaskCurrentBackend,
}


def wrap_executor(executor: concurrent.futures.Executor) -> Backend:
    """A backend over an Executor the caller made: this engine's Client keeps its sharing and nesting."""
    from scaler_jupyter import Client

    if isinstance(executor, Client):
        return ScalerBackend(executor)
    return ExecutorBackend(executor)
