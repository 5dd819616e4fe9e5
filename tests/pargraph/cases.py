"""The check every pargraph program passes: traced and run, it gives what its plain call gives.

A :class:`Case` is a program and the arguments of one call; :func:`assert_runs_as_plain_call`
proves that tracing it (``to_graph`` with the arguments it binds, ``to_dict`` with the rest)
and running the dict with a ``get`` gives what the plain call gives. The programs and their
cases are in ``tracing_programs``, ``model_programs`` and ``engine_programs``: each test
module of tests/pargraph checks its own with :func:`check_cases` (in this process, on a
thread pool, and with Dask's own ``dask.get``), and tests/integration/
test_pargraph_backends.py runs them all on real processes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask

from scaler_jupyter.pargraph import Graph, GraphEngine


@dataclasses.dataclass(frozen=True)
class Case:
    """A program and the keyword arguments of one call; ``bind`` names those given to ``to_graph`` (constants),
    the others go to ``to_dict`` (inputs). ``arguments`` makes them, given a scratch directory. ``transform``
    (``Graph.cull``, a JSON round trip...) must keep what the graph computes."""

    name: str
    program: Callable
    arguments: Callable[[Path], dict[str, Any]]
    bind: tuple[str, ...] = ()
    by_value: bool = False  # its functions cannot be imported: only backends that use cloudpickle run it
    transform: Callable[[Graph], Graph] | None = None  # applied to the traced graph before ``to_dict``

    def __str__(self) -> str:
        return self.name


def case(cases: list[Case], program: Callable, arguments: dict[str, Any], *, name: str | None = None,
         bind: tuple[str, ...] = (), by_value: bool = False) -> Case:
    """Add a case with fixed arguments to ``cases``; return it."""
    new = Case(name or program.__name__, program, lambda _directory: dict(arguments), bind, by_value)
    cases.append(new)
    return new


def traced(case: Case, directory: Path) -> tuple[Any, dict, Any]:
    """The plain call's value, and the program's Dask dict and keys for the same arguments."""
    arguments = case.arguments(directory)
    expected = case.program(**arguments)
    graph = case.program.to_graph(**{k: v for k, v in arguments.items() if k in case.bind})
    if case.transform is not None:
        graph = case.transform(graph)
    dsk, keys = graph.to_call_dict(**{k: v for k, v in arguments.items() if k not in case.bind})
    return expected, dsk, keys


def assert_runs_as_plain_call(case: Case, get: Callable[[dict, Any], Any], directory: Path) -> None:
    """``get(*to_call_dict(...))`` equals the plain call of ``case``."""
    expected, dsk, keys = traced(case, directory)
    got = get(dsk, keys)
    assert got == expected, f"{case}: the graph gave {got!r}, the plain call {expected!r}"


def dask_get(dsk: dict, keys: Any) -> Any:
    """Dask's own synchronous scheduler on the same dict (Dask reads a tuple as one key, so several are a list)."""
    if isinstance(keys, tuple):
        return tuple(dask.get(dsk, list(keys)))
    return dask.get(dsk, keys)


def check_cases(case: Case, directory: Path) -> None:
    """The check each module's parametrized test makes: in this process, on a thread pool, with dask.get."""
    assert_runs_as_plain_call(case, GraphEngine().get, directory)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert_runs_as_plain_call(case, GraphEngine(pool).get, directory)
    assert_runs_as_plain_call(case, dask_get, directory)
