"""What a graph's tasks call besides the user's functions: fused chains, keyword calls and quoted constants.

A Dask-format task is a tuple ``(callable, *arguments)`` with positional arguments only,
and a string or a tuple among its arguments may be read as a key or a task. These
callables fill the gaps: :class:`Chain` runs several fused calls as one task,
:class:`KeywordCall` carries keyword names where Dask never mistakes them for keys, and
:func:`unquote` hands back a constant carried opaquely. Workers import them by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from scaler_jupyter.pargraph.model import function_label


@dataclasses.dataclass(frozen=True, slots=True)
class Stage:
    """One call of a fused chain: where each argument comes from (``("arg", i)`` or ``("previous",)``)."""

    function: Callable
    args: tuple
    kwargs: tuple


@dataclasses.dataclass(frozen=True, slots=True)
class Chain:
    """Several calls run as one task, each fed the previous one's result."""

    stages: tuple[Stage, ...]

    @property
    def __name__(self) -> str:
        return "+".join(function_label(stage.function) for stage in self.stages)

    def __call__(self, *args: Any) -> Any:
        previous = None
        for stage in self.stages:
            values = [*args, previous]  # ("previous",) reads the last element
            previous = stage.function(*[values[s[1]] if s[0] == "arg" else values[-1] for s in stage.args],
                                      **{k: values[s[1]] if s[0] == "arg" else values[-1] for k, s in stage.kwargs})
        return previous


@dataclasses.dataclass(frozen=True, slots=True)
class KeywordCall:
    """A call with keyword arguments in Dask's tuple form, ``(KeywordCall(f, names), *args, *kwarg_values)``:
    the names ride in the callable, where Dask never mistakes them for keys."""

    function: Callable
    names: tuple[str, ...]

    @property
    def __name__(self) -> str:
        return function_label(self.function)

    def __call__(self, *values: Any) -> Any:
        split = len(values) - len(self.names)
        return self.function(*values[:split], **dict(zip(self.names, values[split:], strict=True)))


class Quoted:
    """A constant that Dask would misread (a string equal to a key, a tuple that looks like a task), carried
    opaquely and unwrapped by the task that reads it: ``(unquote, Quoted(value))``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self):
        return (Quoted, (self.value,))


def unquote(quoted: Quoted) -> Any:
    return quoted.value
