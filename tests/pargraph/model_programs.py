"""The programs of test_model.py (the Graph as data), and the transformed graphs of them, each with the
arguments of one call in ``CASES``: each transformation must keep what the graph computes."""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Annotated

from scaler_jupyter.pargraph import Graph, Result, delayed, graph
from tests.pargraph.cases import Case, case
from tests.pargraph.engine_programs import add, inc


@delayed
def double(x):
    return 2 * x


@delayed
def note(value, label):
    """A side step whose result nothing reads: cull drops it."""
    return f"{label}: {value}"


@delayed
def label(value, *, prefix="="):
    return f"{prefix}{value}"


@delayed
def both(a, b):
    return [a, b]


@delayed
def halves(x) -> tuple[Annotated[int, Result("low")], Annotated[int, Result("high")]]:
    return x // 2, x - x // 2


@graph
def chain(x):
    """A chain of small steps, each read once: fuse_sequential makes it one task."""
    return inc(double(inc(inc(x))))


@graph
def diamond(x):
    top = inc(x)
    return add(double(top), inc(top))


@graph
def pipeline(x, y):
    """Two chains that meet; the second ends with a keyword call and a constant, which fuse too."""
    return both(inc(inc(x)), label(add(double(y), 10), prefix="#"))


@graph
def with_debug(x, debug):
    y = inc(x)
    if debug:  # bound at trace time
        note(y, "debug")
    return double(y)


@graph
def offset(x, k):
    return add(x, k)


@graph
def nested(x, y):
    return add(diamond(x), chain(y)), pipeline(x, y)


@graph
def keeps_an_intermediate(x) -> tuple[Annotated[int, Result("middle")], Annotated[int, Result("end")]]:
    middle = inc(inc(x))
    return middle, double(middle)


@graph
def splits(x):
    low, high = halves(inc(x))
    return add(double(low), high)


Pair = collections.namedtuple("Pair", "left right")


@graph
def odd_constants(x):
    """Constants JSON cannot carry exactly: pickled in the JSON, and back as the same types."""
    return (note(x, (1, 2)), note(x, (3,)), note(x, b"bytes"), note(x, {4, 5}), note(x, Pair(1, 2)), note(x, 1.5),
            note(x, float("inf")), note(x, [1, {"a": None, "b": [True]}]))


def make_local_programs():
    """Programs whose functions are not importable (closures, as a notebook's are): pickled by value."""
    scale = 3

    @delayed
    def scaled(x):
        return x * scale

    @graph
    def local(x, y=2):
        return add(scaled(x), scaled(y)) - 1

    return local


local_program = make_local_programs()


def from_json(g: Graph) -> Graph:
    return Graph.from_json(json.dumps(g.to_json()))


CASES: list[Case] = []
case(CASES, chain, {"x": 1})
case(CASES, diamond, {"x": 1})
case(CASES, pipeline, {"x": 1, "y": 2})
case(CASES, with_debug, {"x": 1, "debug": True}, bind=("debug",))
case(CASES, offset, {"x": 1, "k": 5}, bind=("k",))
case(CASES, nested, {"x": 3, "y": 4})
case(CASES, keeps_an_intermediate, {"x": 3})
case(CASES, splits, {"x": 7})
case(CASES, odd_constants, {"x": 1})
case(CASES, local_program, {"x": 5}, name="local", by_value=True)
for _program, _arguments in [(chain, {"x": 1}), (pipeline, {"x": 1, "y": 2}), (nested, {"x": 3, "y": 4}),
                             (keeps_an_intermediate, {"x": 3}), (splits, {"x": 7}), (odd_constants, {"x": 1})]:
    for _transform in ("cull", "stabilize", "explode_subgraphs", "fuse_sequential"):
        CASES.append(dataclasses.replace(case([], _program, _arguments), name=f"{_program.__name__}.{_transform}",
                                         transform=getattr(Graph, _transform)))
    CASES.append(dataclasses.replace(case([], _program, _arguments), name=f"{_program.__name__}.json",
                                     transform=from_json))
CASES.append(dataclasses.replace(case([], with_debug, {"x": 1, "debug": True}, bind=("debug",)),
                                 name="with_debug.cull.stabilize.fuse", transform=lambda g: g.cull().stabilize()
                                 .fuse_sequential()))
CASES.append(Case("local.json", local_program, lambda _: {"x": 5}, by_value=True, transform=from_json))
