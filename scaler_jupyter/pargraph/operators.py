"""What operator nodes run: Python's operators and numeric protocols as plain module functions, marked implicit.

A traced ``x + y`` becomes a node whose function is :func:`add` here rather than
``operator.add``: a function of ours can carry the marker that Citi's pargraph puts on the
functions of implicit nodes (``getattr(node.function, "__implicit")`` is True), and it still
pickles and serializes to JSON by its import path. Each keeps the ``__name__`` of the builtin
it runs, so labels and task keys read as before.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable
from typing import Any

IMPLICIT = "__implicit"  # the attribute Citi's pargraph reads on an implicit node's function


def mark_implicit(function: Callable) -> Callable:
    """Mark a function of ours as one that implicit nodes run; return it."""
    setattr(function, IMPLICIT, True)
    return function


def _define(name: str, function: Callable) -> None:
    def run(*args: Any) -> Any:
        return function(*args)

    run.__name__ = run.__qualname__ = name
    run.__module__ = __name__
    run.__doc__ = f"{function.__module__ or 'builtins'}.{function.__name__}, as an implicit node runs it."
    globals()[name] = mark_implicit(run)


BINARY = ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "lshift", "rshift", "and_", "xor", "or_")
COMPARISONS = ("lt", "le", "eq", "ne", "gt", "ge", "getitem")
UNARY = ("neg", "pos", "abs", "invert")

for _name in (*BINARY, *COMPARISONS, *UNARY):
    _define(_name, getattr(operator, _name))
for _name in ("round", "divmod", "pow", "getattr"):
    _define(_name, getattr(builtins, _name))
for _name in ("floor", "ceil", "trunc"):
    _define(_name, getattr(math, _name))


def get(name: str) -> Callable:
    """The function an implicit node runs for ``name`` (an ``operator`` name, or a builtin or ``math`` one)."""
    return globals()[name]
