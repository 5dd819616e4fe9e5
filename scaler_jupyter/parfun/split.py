"""Split helpers: which arguments of a parallel function are partitioned, and by which partitioner.

- ``per_argument(xs=pf.py_list.by_chunk, df=pf.dataframe.by_row)``: one partitioner per argument,
  advanced together;
- ``multiple_arguments(("a", "b"), partitioner)``: one partitioner over several arguments;
- ``all_arguments(partitioner)``: one partitioner over every argument, in call order.

Arguments not named are passed whole to every partition's call.
"""

from __future__ import annotations

from typing import Any

from scaler_jupyter.parfun.partitioning import Partitioner, PartitionStream
from scaler_jupyter.parfun.signature import Parameters, Slot, slot_label


class Split:
    """A split helper's choice, checked against the function at decoration and applied at each call."""

    def __init__(self, helper: str, groups: tuple[tuple[tuple[str, ...], Partitioner], ...] | None,
                 everything: Partitioner | None = None) -> None:
        self.helper = helper
        self.groups = groups  # None: every argument, to ``everything``
        self.everything = everything
        for _, partitioner in groups or ((None, everything),):
            if not callable(partitioner):
                raise TypeError(f"{helper}: {partitioner!r} is not a partitioner (a function returning a generator)")

    def check(self, parameters: Parameters) -> None:
        """Fail at decoration if a named argument does not exist."""
        for names, _ in self.groups or ():
            for name in names:
                parameters.check_slot_name(name, self.helper)

    def open(self, values: dict[Slot, Any], function_name: str) -> tuple[dict[Slot, Any], PartitionStream]:
        """The arguments passed whole, and the stream of partitions of the others, for one call."""
        if self.groups is None:
            if not values:
                raise ValueError(f"all_arguments: {function_name}() was called without arguments to partition")
            groups = [(tuple(values), self.everything)]
        else:
            groups = list(self.groups)
        for slots, _ in groups:
            for slot in slots:
                if slot not in values:
                    raise ValueError(f"{self.helper}: {function_name}() was called without the argument "
                                     f"{slot_label(slot)!r} that it partitions")
        partitioned = {slot for slots, _ in groups for slot in slots}
        fixed = {slot: value for slot, value in values.items() if slot not in partitioned}
        total = self._common_length(groups, values)
        return fixed, PartitionStream(groups, values, total)

    def _common_length(self, groups: list, values: dict[Slot, Any]) -> int | None:
        """The number of items to partition, if the partitioners tell; lengths that disagree are an error."""
        lengths: dict[Slot, int] = {}
        for slots, partitioner in groups:
            length_of = getattr(partitioner, "partition_length", None)
            if length_of is None:
                continue
            for slot in slots:
                lengths[slot] = length_of(values[slot])
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{slot_label(slot)} has {n}" for slot, n in lengths.items())
            raise ValueError(f"{self.helper}: the arguments to partition have different lengths ({described})")
        return next(iter(lengths.values()), None)

    def __call__(self, arguments: Any) -> tuple[Any, Any]:
        """Citi's way to apply a split to a call's ``NamedArguments``: see :func:`~scaler_jupyter.parfun.citi.split`."""
        from scaler_jupyter.parfun import citi  # Citi's argument records live there, and citi imports this module

        return citi.split(self, arguments)

    def __repr__(self) -> str:
        if self.groups is None:
            return f"all_arguments({_name(self.everything)})"
        inner = ", ".join(f"{'/'.join(names)}={_name(p)}" for names, p in self.groups)
        return f"{self.helper}({inner})"


def per_argument(**partitioners: Partitioner) -> Split:
    """Partition each named argument with its own partitioner; their partitions advance together.

    ``per_argument(lines=pf.py_list.by_chunk)``
    """
    if not partitioners:
        raise ValueError("per_argument() needs at least one argument=partitioner")
    return Split("per_argument", tuple(((name,), partitioner) for name, partitioner in partitioners.items()))


def multiple_arguments(names: str | tuple[str, ...] | list[str], partitioner: Partitioner) -> Split:
    """Partition several arguments with one partitioner, which receives them together (in this order).

    ``multiple_arguments(("xs", "ys"), pf.py_list.by_chunk)``
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"multiple_arguments: names must be a name or a tuple of names, not {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"multiple_arguments: a name appears twice in {names!r}")
    return Split("multiple_arguments", ((names, partitioner),))


def all_arguments(partitioner: Partitioner) -> Split:
    """Partition every argument of each call with one partitioner, which receives them in call order.

    ``all_arguments(pf.dataframe.by_group(by="year"))``
    """
    return Split("all_arguments", None, partitioner)


def _name(partitioner: Any) -> str:
    module = getattr(partitioner, "__module__", "") or ""
    name = getattr(partitioner, "__qualname__", repr(partitioner))
    return f"{module.rsplit('.', 1)[-1]}.{name}" if module.startswith("scaler_jupyter.parfun") else name
