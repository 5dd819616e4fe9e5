"""What runs on a worker for each partition: from bytes to bytes, timed.

A task gets the function and the call (the arguments passed whole, and how to pass
each argument) as ``(key, bytes)`` references, loaded once per worker process and
kept by key, and the partition's own values as bytes. It returns the result as bytes
with the seconds spent loading, computing and dumping, so that the caller learns the
worker's share of each partition's cost. Arguments passed whole are thus shared by the
partitions that run in one worker process: a parallel function must not modify them.
"""

from __future__ import annotations

import contextvars
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from scaler_jupyter.parfun import payload
from scaler_jupyter.parfun.signature import Layout, Slot
from scaler_jupyter.protocol import pickling

Buffer = bytes | bytearray | memoryview | pickle.PickleBuffer  # bytes, or bytes sent without a copy
Ref = tuple[bytes, Buffer]  # (content key, serialized value)

_CACHE_ENTRIES = 8
_MISSING = object()
_loaded: OrderedDict[bytes, Any] = OrderedDict()

# Set while a partition runs: a parallel function called from inside one runs nested (or sequentially).
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("scaler_jupyter_parfun_inside", default=False)


def inside_task() -> bool:
    """True while this thread runs a partition of a parallel function (or an item of ``parallel_map``)."""
    return _inside.get()


def make_ref(value: Any) -> Ref:
    data = payload.dumps(value)
    return pickling.content_id(data), data


def run_partition(function_ref: Ref, call_ref: Ref, blobs: tuple[Buffer, ...]) -> tuple:
    """Run one partition on a worker.

    Returns ``(result bytes, setup s, load s, compute s, compute CPU s, dump s, cold)``, in CPU
    time but the function's wall time: ``setup`` loads the function and the call's whole
    arguments (once per worker and call), ``load`` the partition; ``cold`` is true for the
    first partition of this function in this worker process, whose costs include one-time
    ones (imports, caches) that say nothing about partition sizes.
    """
    start = time.thread_time()
    cold = function_ref[0] not in _loaded
    function = _load(function_ref)
    layout, slots, fixed, out_of_band = _load(call_ref)
    set_up = time.thread_time()
    values = dict(fixed)
    values.update(zip(slots, map(payload.loads, blobs), strict=True))
    loaded = time.thread_time()
    wall = time.perf_counter()
    result = call(function, layout, values)
    wall = time.perf_counter() - wall
    computed = time.thread_time()
    data: Buffer = payload.dumps(result)
    dumped = time.thread_time()
    if out_of_band:
        data = pickle.PickleBuffer(data)
    return data, set_up - start, loaded - set_up, wall, computed - loaded, dumped - computed, cold


def run_item(function_ref: Ref, args: bytes) -> bytes:
    """Run one item of ``parallel_map`` on a worker: ``function(*args)``, bytes in and out."""
    function = _load(function_ref)
    return payload.dumps(call_item(function, payload.loads(args)))


def call(function: Callable, layout: Layout, values: Mapping[Slot, Any]) -> Any:
    """Call ``function`` on one partition's arguments, marked as inside a partition (for nested calls)."""
    token = _inside.set(True)
    try:
        return layout.call(function, values)
    finally:
        _inside.reset(token)


def call_item(function: Callable, args: tuple) -> Any:
    """Call ``function(*args)`` for ``parallel_map``, marked as inside a partition (for nested calls)."""
    token = _inside.set(True)
    try:
        return function(*args)
    finally:
        _inside.reset(token)


def _load(ref: Ref) -> Any:
    key, data = ref
    value = _loaded.get(key, _MISSING)
    if value is _MISSING:
        value = payload.loads(data)
        _loaded[key] = value
        while len(_loaded) > _CACHE_ENTRIES:
            _loaded.popitem(last=False)
    else:
        _loaded.move_to_end(key)
    return value
