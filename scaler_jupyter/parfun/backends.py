"""Backends: where the partitions of a parallel function run.

Every backend but one is a ``concurrent.futures.Executor`` and a worker count:

- ``local_single_process``: in the caller, one partition after another (to debug a split or a combine);
- ``local_multiprocessing``: a ``ProcessPoolExecutor`` (spawned processes);
- ``scaler_local`` / ``scaler_remote``: this engine's :class:`~scaler_jupyter.Client`, on a private
  :class:`~scaler_jupyter.LocalCluster` or on a running scheduler; tasks may run parallel functions
  nested on the same cluster;
- ``dask_local`` / ``dask_remote``: a :class:`~scaler_jupyter.dask_executor.DaskExecutor`.

A backend made by name is owned by whoever set it, and shut down when replaced or when its
context ends; an instance passed in (a backend, or any Executor) is left running.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
from collections.abc import Callable
from typing import Any


class Backend:
    """Runs partitions: ``submit`` a call, know how many run at once, ``shutdown`` what was started."""

    name = "backend"
    in_process = False  # partitions run in the caller: nothing is serialized
    allows_nested_tasks = False  # a task may itself run a parallel function on this backend
    out_of_band = False  # its transport pickles with protocol 5 and sends PickleBuffers as their own frames

    def __init__(self, executor: concurrent.futures.Executor | None = None, n_workers: int | None = None,
                 owned: bool = False) -> None:
        self.executor = executor
        self._n_workers = n_workers
        self._owned = owned

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
    allows_nested_tasks = True
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


class ScalerLocalBackend(ScalerBackend):
    """A private LocalCluster of this engine with ``n_workers`` workers (default: one per core)."""

    name = "scaler_local"

    def __init__(self, n_workers: int | None = None, **cluster_kwargs: Any) -> None:
        from scaler_jupyter import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=n_workers, **cluster_kwargs)
        try:
            client = Client(self.cluster.address, keys=self.cluster.keys)
        except BaseException:
            self.cluster.close()
            raise
        super().__init__(client, owned=True)

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self.cluster.close()


class ScalerRemoteBackend(ScalerBackend):
    """A running scheduler of this engine, at ``scheduler_address``; ``client_kwargs`` go to its Client."""

    name = "scaler_remote"

    def __init__(self, scheduler_address: str, n_workers: int | None = None, **client_kwargs: Any) -> None:
        from scaler_jupyter import Client

        super().__init__(Client(scheduler_address, **client_kwargs), n_workers, owned=True)


class DaskBackend(Backend):
    """A Dask cluster, through the shared Executor adapter."""

    name = "dask"

    @property
    def n_workers(self) -> int:
        if self._n_workers is not None:
            return self._n_workers
        return max(1, self.executor.n_workers)


class DaskLocalBackend(DaskBackend):
    """A private Dask LocalCluster of ``n_workers`` single-threaded worker processes."""

    name = "dask_local"

    def __init__(self, n_workers: int | None = None, **cluster_kwargs: Any) -> None:
        from scaler_jupyter.dask_executor import DaskExecutor

        super().__init__(DaskExecutor(n_workers=n_workers, **cluster_kwargs), owned=True)


class DaskRemoteBackend(DaskBackend):
    """A running Dask scheduler at ``scheduler_address``."""

    name = "dask_remote"

    def __init__(self, scheduler_address: str, n_workers: int | None = None, timeout: float = 30.0) -> None:
        from scaler_jupyter.dask_executor import DaskExecutor

        super().__init__(DaskExecutor(scheduler_address, timeout=timeout), n_workers, owned=True)


class ExecutorBackend(Backend):
    """Any ``concurrent.futures.Executor`` the caller made (a Client, a pool): used, never shut down."""

    name = "executor"

    def __init__(self, executor: concurrent.futures.Executor, n_workers: int | None = None) -> None:
        super().__init__(executor, n_workers, owned=False)


REGISTRY: dict[str, Callable[..., Backend]] = {
    "local_single_process": LocalSingleProcessBackend,
    "local_multiprocessing": LocalMultiprocessingBackend,
    "scaler_local": ScalerLocalBackend,
    "scaler_remote": ScalerRemoteBackend,
    "dask_local": DaskLocalBackend,
    "dask_remote": DaskRemoteBackend,
}


def wrap_executor(executor: concurrent.futures.Executor) -> Backend:
    """A backend over an Executor the caller made: this engine's Client keeps its sharing and nesting."""
    from scaler_jupyter import Client

    if isinstance(executor, Client):
        return ScalerBackend(executor)
    return ExecutorBackend(executor)
