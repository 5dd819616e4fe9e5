"""The current backend: set for the process, or for a scope (nestable), and the one a call runs on.

``set_parallel_backend`` sets the process-wide backend (every thread sees it);
``set_parallel_backend_context`` sets one for a ``with`` block (this thread, or this
asyncio task), restores the previous one on exit and shuts down the backend it made.

A call made inside a partition, or inside any task of this engine, runs nested on that
task's own cluster; inside a partition on another backend it runs sequentially.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

from scaler_jupyter import task_context
from scaler_jupyter.parfun import task
from scaler_jupyter.parfun.backends import REGISTRY, Backend, ScalerBackend, wrap_executor

_UNSET = object()
_NONE = object()  # "none" set in a scope: sequential there, whatever the process-wide backend

_scoped: contextvars.ContextVar[Any] = contextvars.ContextVar("scaler_jupyter_parfun_backend", default=_UNSET)
_lock = threading.Lock()
_process_backend: Backend | None = None
_process_owned = False
_nested: dict[str, Backend] = {}  # per scheduler address: this process's client, when it runs tasks of this engine


def set_parallel_backend(backend: str | Backend | concurrent.futures.Executor, *args: Any, **kwargs: Any) -> None:
    """Set the backend of this process, by name (with its settings) or as an instance.

    Names: ``"none"``, ``"local_single_process"``, ``"local_multiprocessing"``, ``"scaler_local"``,
    ``"scaler_remote"``, ``"dask_local"``, ``"dask_remote"``. The previous process-wide backend is
    shut down if it was made by name here.
    """
    global _process_backend, _process_owned
    made, owned = _make(backend, args, kwargs)
    with _lock:
        previous, previous_owned = _process_backend, _process_owned
        _process_backend, _process_owned = made, owned
    if previous is not None and previous_owned and previous is not made:
        previous.shutdown()


@contextlib.contextmanager
def set_parallel_backend_context(backend: str | Backend | concurrent.futures.Executor, *args: Any,
                                 **kwargs: Any) -> Iterator[Backend | None]:
    """Use a backend within a ``with`` block: nestable; the previous one is back afterwards.

    ``with pf.set_parallel_backend_context("scaler_local", n_workers=4): count_words(lines)``
    """
    made, owned = _make(backend, args, kwargs)
    token = _scoped.set(_NONE if made is None else made)
    try:
        yield made
    finally:
        _scoped.reset(token)
        if owned and made is not None:
            made.shutdown()


def get_parallel_backend() -> Backend | None:
    """The backend calls made here run on, or None (sequential)."""
    scoped = _scoped.get()
    if scoped is _NONE:
        return None
    if scoped is not _UNSET:
        return scoped
    return _process_backend


def backend_for_call() -> Backend | None:
    """Where a parallel function called here runs: nested on this engine inside its tasks, else the current one."""
    address = task_context.scheduler_address()
    if task.inside_task():
        return nested_backend(address) if address is not None else None
    backend = get_parallel_backend()
    if backend is None and address is not None and _scoped.get() is _UNSET:
        return nested_backend(address)  # a task of this engine that calls a parallel function directly
    return backend


def nested_backend(address: str) -> Backend:
    """This process's client of the scheduler whose task it runs, made once and kept for the process."""
    with _lock:
        backend = _nested.get(address)
        if backend is None:
            from scaler_jupyter import Client

            backend = _nested[address] = ScalerBackend(Client(), owned=True)
        return backend


def _make(backend: Any, args: tuple, kwargs: dict) -> tuple[Backend | None, bool]:
    if isinstance(backend, str):
        if backend == "none":  # in REGISTRY too (Citi's BACKEND_REGISTRY has it), made here to check the settings
            if args or kwargs:
                raise ValueError("the 'none' backend takes no settings")
            return None, False
        factory = REGISTRY.get(backend)
        if factory is None:
            raise ValueError(f"unknown parallel backend {backend!r}; the backends are: "
                             f"{', '.join(REGISTRY)}")
        return factory(*args, **kwargs), True
    if args or kwargs:
        raise ValueError(f"settings are given to a backend made by name, not to an instance ({backend!r})")
    if isinstance(backend, Backend):
        return backend, False
    if isinstance(backend, concurrent.futures.Executor):
        return wrap_executor(backend), False
    raise TypeError(f"a parallel backend is a name, a Backend or a concurrent.futures.Executor, not {backend!r}")


@atexit.register
def _shutdown_at_exit() -> None:
    global _process_backend
    with _lock:
        backend, owned, _process_backend = _process_backend, _process_owned, None
        nested = list(_nested.values())
        _nested.clear()
    if backend is not None and owned:
        backend.shutdown()
    for client_backend in nested:
        client_backend.shutdown()
