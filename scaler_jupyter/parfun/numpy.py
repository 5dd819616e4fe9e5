"""Partition and combine numpy arrays by rows or by columns (numpy is imported when these are used).

Partitions are slices (views); ``concat(parts, axis=1)`` puts column partitions back together.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any


def by_row(*arrays: Any) -> Generator[tuple[int, tuple] | None, int, None]:
    """Partition one or several arrays with as many rows into consecutive rows (the first axis)."""
    _check_arrays(arrays, "by_row", axis=0)
    yield from _by_axis(arrays, 0)


by_row.partition_length = lambda array: array.shape[0]  # type: ignore[attr-defined]


def by_col(*arrays: Any) -> Generator[tuple[int, tuple] | None, int, None]:
    """Partition one or several arrays with as many columns into consecutive columns (the second axis)."""
    _check_arrays(arrays, "by_col", axis=1)
    yield from _by_axis(arrays, 1)


by_col.partition_length = lambda array: array.shape[1]  # type: ignore[attr-defined]


def concat(parts: Iterable[Any], axis: int = 0) -> Any:
    """Join the partial arrays in order along ``axis``: 0 after ``by_row``, 1 after ``by_col``."""
    import numpy as np

    return np.concatenate(list(parts), axis=axis)


def _by_axis(arrays: tuple, axis: int) -> Generator[tuple[int, tuple] | None, int, None]:
    total = arrays[0].shape[axis]
    size = yield None
    start = 0
    while start < total:
        stop = min(total, start + size)
        if axis == 0:
            size = yield stop - start, tuple(array[start:stop] for array in arrays)
        else:
            size = yield stop - start, tuple(array[:, start:stop] for array in arrays)
        start = stop


def _check_arrays(arrays: tuple, name: str, axis: int) -> None:
    import numpy as np

    if not arrays:
        raise ValueError(f"{name} needs at least one array to partition")
    for array in arrays:
        if not isinstance(array, np.ndarray):
            raise ValueError(f"{name} partitions numpy arrays, not {type(array).__name__}")
        if array.ndim <= axis:
            raise ValueError(f"{name} needs arrays with at least {axis + 1} dimensions, not {array.ndim}")
    lengths = [array.shape[axis] for array in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(f"{name}: the arrays have different lengths along axis {axis} "
                         f"({', '.join(map(str, lengths))})")
