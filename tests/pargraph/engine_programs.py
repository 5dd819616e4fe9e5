"""The programs of test_engine.py (GraphEngine without a cluster), each with the arguments of one call in
``CASES``; module-level, so a process pool finds every function by reference."""

from __future__ import annotations

from typing import Annotated

from scaler_jupyter.pargraph import Result, delayed, graph
from tests.pargraph.cases import Case, case


@delayed
def inc(x):
    return x + 1


@delayed
def add(a, b):
    return a + b


@delayed
def split(x) -> tuple[Annotated[int, Result("quotient")], Annotated[int, Result("remainder")]]:
    return divmod(x, 7)


@graph
def three_outputs(x, y) -> tuple[Annotated[int, Result("q")], Annotated[int, Result("r")], int]:
    q, r = split(x)
    return add(q, y), inc(r), add(inc(x), q)


@graph
def wide(n, x):
    """``n`` independent branches joined by one sum; ``n`` is bound, so the loop runs at trace time."""
    return add(sum(inc(x + i) for i in range(n)), 0)


CASES: list[Case] = []  # this module's, checked by test_engine.py
case(CASES, three_outputs, {"x": 50, "y": 3})
case(CASES, three_outputs, {"x": 50, "y": 3}, name="three_outputs/bound-y", bind=("y",))
case(CASES, wide, {"n": 12, "x": 5}, bind=("n",))
