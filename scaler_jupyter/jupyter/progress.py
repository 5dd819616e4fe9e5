"""Progress bars over futures and result iterators: an ipywidgets bar in a notebook, a text bar in a terminal.

tqdm's ``auto`` picks the kind. Bars are moved by the thread that consumes the
results (in a notebook, the cell's), never by the client's I/O thread, and tqdm's
monitor thread is off for them: ipykernel 7 misroutes widget messages sent from
other threads.
"""

from __future__ import annotations

import concurrent.futures
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

MAP_DELAY = 1.0  # seconds a map runs in a notebook before it shows a bar


def _bar(**options: Any):
    from tqdm.auto import tqdm

    class Bar(tqdm):
        monitor_interval = 0  # no refreshing thread: see the module's docstring

    return Bar(**options)


def progress(futures_or_iterator: Iterable, total: int | None = None):
    """Show a bar while futures complete or an iterator yields.

    Given a collection of futures (a list, a tuple, a set), wait for them all with
    a bar moving as each completes, and return the collection. Given anything
    else iterable (``client.map(...)``'s results, a generator), return an iterator
    over it that moves the bar as items come; ``total`` is the number of items
    when the iterable does not know it.
    """
    if isinstance(futures_or_iterator, (list, tuple, set, frozenset)) and futures_or_iterator and all(
            isinstance(item, concurrent.futures.Future) for item in futures_or_iterator):
        with _bar(total=len(futures_or_iterator), unit="task") as bar:
            for _ in concurrent.futures.as_completed(futures_or_iterator):
                bar.update()
        return futures_or_iterator
    if total is None and hasattr(futures_or_iterator, "__len__"):
        total = len(futures_or_iterator)
    return _counted(iter(futures_or_iterator), lambda: _bar(total=total, unit="item"), after=0.0)


def _counted(iterator: Iterator, make_bar, after: float) -> Iterator:
    """Yield from ``iterator``, with a bar (made once ``after`` seconds have passed) counting the items."""
    start = time.monotonic()
    bar = None
    done = 0
    try:
        if after <= 0:
            bar = make_bar()
        for item in iterator:
            done += 1
            if bar is not None:
                bar.update()
            elif time.monotonic() - start >= after:
                bar = make_bar()
                bar.update(done)
            yield item
    finally:
        if bar is not None:
            bar.close()
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def in_notebook() -> bool:
    """True inside a Jupyter kernel."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def map_progress(results: Iterator, total: int | None) -> Iterator:
    """``Client.map``'s results, with a bar in a notebook once the map has run for ``MAP_DELAY`` seconds."""
    if not in_notebook():
        return results
    try:
        import tqdm  # noqa: F401 - the jupyter extra's; without it, no bar
    except ImportError:
        return results
    return _counted(results, lambda: _bar(total=total, unit="task", desc="map"), after=MAP_DELAY)
