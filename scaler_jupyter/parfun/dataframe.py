"""Partition and combine pandas DataFrames (pandas is imported when these are used, not before).

``by_row`` yields row slices (views, not copies); ``by_group`` keeps each group whole,
several groups to a partition, with groups aligned by key across several frames.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any


def by_row(*dfs: Any) -> Generator[tuple[int, tuple] | None, int, None]:
    """Partition one or several DataFrames (or Series) of equal length into consecutive rows."""
    _check_frames(dfs, "by_row")
    if len({len(df) for df in dfs}) > 1:
        raise ValueError(f"by_row: the DataFrames have different lengths ({', '.join(str(len(df)) for df in dfs)})")
    total = len(dfs[0])
    size = yield None
    start = 0
    while start < total:
        stop = min(total, start + size)
        size = yield stop - start, tuple(df.iloc[start:stop] for df in dfs)
        start = stop


by_row.partition_length = len  # type: ignore[attr-defined]


def by_group(*args: Any, **kwargs: Any) -> Callable[..., Generator]:
    """A partitioner that keeps groups whole: ``args`` and ``kwargs`` are those of ``DataFrame.groupby``.

    A partition holds whole groups, as many as fit the requested size, counted in rows per
    frame as Citi's does (a group's size is its rows in the frame where it has the most). With
    several frames, groups are matched by key; a key missing from a frame gives it an empty
    slice. Rows whose key is NA are dropped, as ``groupby`` does.
    """

    def by_group_partitioner(*dfs: Any) -> Generator[tuple[int, tuple] | None, int, None]:
        import numpy as np

        _check_frames(dfs, "by_group")
        indices = [df.groupby(*args, **kwargs).indices for df in dfs]  # key -> row positions
        keys = list(indices[0])
        seen = set(keys)
        for more in indices[1:]:
            for key in more:
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
        empty = np.empty(0, dtype=np.intp)
        size = yield None
        chosen: list = []
        rows = 0
        for key in keys:
            chosen.append(key)
            rows += max(len(index.get(key, empty)) for index in indices)
            if rows >= size:
                size = yield rows, _take(dfs, indices, chosen, empty)
                chosen, rows = [], 0
        if chosen:
            yield rows, _take(dfs, indices, chosen, empty)

    by_group_partitioner.partition_length = None  # type: ignore[attr-defined]  # frames may differ in length
    return by_group_partitioner


def concat(dfs: Iterable[Any], ignore_index: bool = True) -> Any:
    """Concatenate the partial DataFrames in order; with ``ignore_index`` (the default) renumber the rows."""
    import pandas as pd

    return pd.concat(list(dfs), ignore_index=ignore_index)


def _take(dfs: tuple, indices: list[dict], keys: list, empty: Any) -> tuple:
    import numpy as np

    return tuple(df.iloc[np.concatenate([index.get(key, empty) for key in keys])] for df, index in zip(dfs, indices,
                                                                                                         strict=True))


def _check_frames(dfs: tuple, name: str) -> None:
    import pandas as pd

    if not dfs:
        raise ValueError(f"{name} needs at least one DataFrame to partition")
    for df in dfs:
        if not isinstance(df, (pd.DataFrame, pd.Series)):
            raise ValueError(f"{name} partitions pandas DataFrames or Series, not {type(df).__name__}")
