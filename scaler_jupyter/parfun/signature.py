"""Arguments by name: from a call's ``*args, **kwargs`` to named slots, and back to a call on a worker.

A *slot* names one argument value: a parameter's name, a ``**kwargs`` key, or
``(name, i)`` for the i-th value caught by ``*name``. Split helpers choose slots
to partition; a :class:`Layout` rebuilds the call from slot values, so that each
partition's call passes every argument exactly as the caller did.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Slot = str | tuple[str, int]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each slot goes in a call: positionally, in order, or by keyword."""

    positional: tuple[Slot, ...]
    keywords: tuple[tuple[str, Slot], ...]

    def call(self, function: Callable, values: Mapping[Slot, Any]) -> Any:
        return function(*[values[slot] for slot in self.positional],
                        **{keyword: values[slot] for keyword, slot in self.keywords})


class Parameters:
    """A function's parameters, checked once at decoration, used to name the arguments of each call."""

    def __init__(self, function: Callable) -> None:
        self.name = getattr(function, "__name__", repr(function))
        self.signature = inspect.signature(function)
        parameters = list(self.signature.parameters.values())
        self.var_positional = next((p.name for p in parameters if p.kind is p.VAR_POSITIONAL), None)
        self.var_keyword = next((p.name for p in parameters if p.kind is p.VAR_KEYWORD), None)
        self.named = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        positional_only = [p.name for p in parameters if p.kind is p.POSITIONAL_ONLY]
        if positional_only and self.var_positional is None:
            raise ValueError(f"{self.name}() has positional-only parameters ({', '.join(positional_only)}): "
                             "parallel() names the arguments it splits, so make them regular parameters "
                             "(remove the '/'), or take them with *args")

    def check_slot_name(self, name: str, helper: str) -> None:
        """Fail at decoration if a split helper names an argument the function cannot take."""
        if name in self.named:
            return
        if name in (self.var_positional, self.var_keyword):
            raise ValueError(f"{helper}: {name!r} is a catch-all parameter of {self.name}(); "
                             "partition its values with all_arguments()")
        if self.var_keyword is not None:  # it may come in **kwargs
            return
        raise ValueError(f"{helper}: {self.name}() has no parameter {name!r} (it has: {', '.join(self.named)})")

    def bind(self, args: tuple, kwargs: dict) -> tuple[dict[Slot, Any], Layout]:
        """Name every argument of one call (defaults included) and how to pass each back."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values: dict[Slot, Any] = {}
        positional: list[Slot] = []
        keywords: list[tuple[str, Slot]] = []
        for parameter in self.signature.parameters.values():
            value = bound.arguments[parameter.name]
            if parameter.kind in _POSITIONAL:
                values[parameter.name] = value
                positional.append(parameter.name)
            elif parameter.kind is parameter.VAR_POSITIONAL:
                for i, item in enumerate(value):
                    values[(parameter.name, i)] = item
                    positional.append((parameter.name, i))
            elif parameter.kind is parameter.KEYWORD_ONLY:
                values[parameter.name] = value
                keywords.append((parameter.name, parameter.name))
            else:  # VAR_KEYWORD
                for key, item in value.items():
                    values[key] = item
                    keywords.append((key, key))
        return values, Layout(tuple(positional), tuple(keywords))


def slot_label(slot: Slot) -> str:
    """How an error message names a slot: ``lines``, or ``args[2]``."""
    return slot if isinstance(slot, str) else f"{slot[0]}[{slot[1]}]"
