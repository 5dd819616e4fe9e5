"""``%%scaler``: run a notebook cell as a task on the cluster, or once per item with ``--map``.

    %%scaler [--tags T,...] [--timeout S] [--no-wait NAME] [-o x,y] [--map NAME=ITERABLE]

What happens, in order (nothing is sent until every check has passed):

1. The options are parsed; a mistake is one line (IPython's ``UsageError``).
2. The cell goes through IPython's own transforms, and its names through
   :mod:`~scaler_jupyter.jupyter.cell_analysis`: a syntax error is raised here, with
   the notebook's line numbers.
3. The names the cell reads are taken from the namespace and packed: modules travel
   by name, the notebook's functions and classes by value, large buffers (a numpy
   array) out-of-band without a copy. A value that cannot be pickled stops the cell
   here, naming the variable.
4. One task (or one per ``--map`` item, the shared values stored on the scheduler
   once) runs :func:`~scaler_jupyter.jupyter.cell_worker.run_cell` on a worker. What
   it prints and displays streams into this cell while it runs (grouped per item,
   in item order, with ``--map``), also after the cell has returned
   (:mod:`~scaler_jupyter.jupyter.cell_run` says how).
5. The names the cell binds (or those of ``-o``) are set in the namespace (as lists
   in item order with ``--map``) and the last expression's value is returned, so the
   notebook displays it with its rich repr. A task's exception is raised here, shown
   with the remote traceback in the cell's own lines. Ctrl-C cancels the tasks.

With ``--no-wait NAME`` step 5 happens when the tasks end: NAME is bound at once to a
:class:`~scaler_jupyter.jupyter.cell_run.CellFuture`, whose result is the dict of names set.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import traceback
from typing import Any

from IPython.core.error import UsageError

from scaler_jupyter.errors import SerializationError
from scaler_jupyter.jupyter import cell_worker
from scaler_jupyter.jupyter.cell_analysis import analyze
from scaler_jupyter.jupyter.cell_run import CellRun, one_line
from scaler_jupyter.jupyter.cell_worker import Cell, pack


def current_client():
    """The client ``%%scaler`` submits to: the kernel's (``%scaler start|connect``)."""
    from scaler_jupyter.jupyter.session import current_client as session_client

    return session_client()


# -- options ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one-line ``UsageError``s, and whose ``--help`` returns to the notebook."""

    def error(self, message: str):
        raise UsageError(f"%%scaler: {message} (see %%scaler --help)")

    def exit(self, status: int = 0, message: str | None = None):
        raise _HelpShown()


class _HelpShown(Exception):
    pass


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        raise argparse.ArgumentTypeError(f"not a Python name: {bad[0]!r}")
    return names


def _name(text: str) -> str:
    if not text.isidentifier():
        raise argparse.ArgumentTypeError(f"not a Python name: {text!r}")
    return text


def _map_option(text: str) -> tuple[str, str]:
    name, equals, expression = text.partition("=")
    if not equals or not name.strip().isidentifier() or not expression.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=ITERABLE, got {text!r}")
    return name.strip(), expression.strip()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


_PARSER = _Parser(prog="%%scaler", add_help=True,
                  description="Run the cell as one task on the cluster, or once per item with --map.")
_PARSER.add_argument("--tags", type=_names, default=[], help="run only on workers with these tags (comma-separated)")
_PARSER.add_argument("--timeout", type=_seconds, help="cancel the task(s) if not done after S seconds")
_PARSER.add_argument("--no-wait", type=_name, metavar="NAME",
                     help="return at once; NAME is a future whose result is the dict of names the cell set")
_PARSER.add_argument("-o", "--outputs", type=_names, metavar="x,y",
                     help="names to bring back (default: every name the cell binds)")
_PARSER.add_argument("--map", type=_map_option, metavar="NAME=ITERABLE",
                     help="run the cell once per item, in parallel, with NAME bound to the item; "
                          "names come back as lists in item order. Comes last: the rest of the line is "
                          "the iterable, spaces and all")
_MAP = re.compile(r"(?:^|\s)--map(?:\s+|=)")


@functools.lru_cache(maxsize=64)
def _parse(line: str) -> argparse.Namespace:
    """The options; ``--map``'s expression is the rest of the line, unsplit (``--map x=[1, 2]``).

    Cached: a cell run again costs no parsing (callers do not modify the result)."""
    found = _MAP.search(line)
    if found is None:
        return _PARSER.parse_args(shlex.split(line))
    options = _PARSER.parse_args(shlex.split(line[: found.start()]))
    try:
        options.map = _map_option(line[found.end():].strip())
    except argparse.ArgumentTypeError as exc:
        _PARSER.error(f"argument --map: {exc}")
    return options


# -- the magic -------------------------------------------------------------------


def run(shell, line: str, cell: str) -> Any:
    """``%%scaler LINE`` with body ``cell``, in ``shell``: see the module docstring."""
    try:
        options = _parse(line)
    except _HelpShown:
        _PARSER.print_help()
        return None
    except ValueError as exc:  # shlex: an unclosed quote
        raise UsageError(f"%%scaler: {exc}") from None
    filename = f"Cell In[{shell.execution_count}]"
    source = _transformed(shell, cell)
    try:
        analysis = analyze(source)
    except SyntaxError as exc:
        raise _syntax_error(exc, filename) from None
    if not source.strip():
        raise UsageError("%%scaler: the cell is empty")
    map_name, items = None, None
    if options.map is not None:
        map_name, expression = options.map
        try:
            items = list(eval(expression, shell.user_ns))
        except Exception as exc:
            raise UsageError(f"%%scaler --map {map_name}={expression}: {type(exc).__name__}: {exc}") from None
        if not items:
            raise UsageError(f"%%scaler --map {map_name}={expression}: no items, nothing to run")
    if "get_ipython" in analysis.reads:
        raise UsageError("%%scaler: line magics and shell commands (% and ! lines) cannot run on a worker")
    values = {name: shell.user_ns[name] for name in analysis.reads if name != map_name and name in shell.user_ns}
    packed = _pack_values(values)
    returns = options.outputs if options.outputs is not None else [n for n in analysis.binds if n != map_name]
    spec = Cell(source, filename, tuple(returns), analysis.last_expression)
    try:
        client = current_client()
    except RuntimeError as exc:
        raise UsageError(f"%%scaler: {exc}") from None
    cell_run = CellRun(shell, spec, analysis.deletes, map_name, items)
    try:
        cell_run.submit(client, packed, options.tags)
    except RuntimeError as exc:  # the client was shut down
        raise UsageError(f"%%scaler: {exc}") from None
    if options.no_wait is not None:
        shell.user_ns[options.no_wait] = cell_run.future(options.timeout)
        return None
    return cell_run.wait(options.timeout)


@functools.lru_cache(maxsize=256)
def _transformed(shell, cell: str) -> str:
    """The cell after IPython's transforms (a pure function of its text, so cached), with a blank first line
    standing for the ``%%scaler`` line so that line numbers are the notebook's."""
    return "\n" + shell.transform_cell(cell)


def _pack_values(values: dict[str, Any]) -> cell_worker.Packed:
    try:
        return pack(values)
    except Exception as exc:
        culprit = cell_worker.unpicklable(values)
        if culprit is None:  # only together (a shared reference pickles differently): name them all
            raise one_line(SerializationError(
                f"%%scaler: the cell's variables {', '.join(values)} cannot be sent to the cluster: "
                f"{type(exc).__name__}: {exc}")) from None
        name, error = culprit
        raise one_line(SerializationError(
            f"%%scaler: the variable {name!r} ({type(values[name]).__name__}) cannot be sent to the cluster: "
            f"{type(error).__name__}: {error}")) from None

class CellSyntaxError(Exception):
    """A syntax error in a ``%%scaler`` cell, found before anything is sent, shown as Python shows one.

    Not a ``SyntaxError`` subclass: IPython would show those with the magic's own frames."""


def _syntax_error(exc: SyntaxError, filename: str) -> CellSyntaxError:
    located = SyntaxError(exc.msg, (filename, exc.lineno, exc.offset, exc.text, exc.end_lineno, exc.end_offset))
    lines = "".join(traceback.format_exception_only(SyntaxError, located)).rstrip("\n").splitlines()
    return one_line(CellSyntaxError(f"{exc.msg} ({filename}, line {exc.lineno})"), lines)
