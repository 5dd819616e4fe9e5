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
   once) runs :func:`~scaler_jupyter.jupyter.cell_runner.run_cell` on a worker. What
   it prints and displays streams into this cell while it runs (grouped per item,
   in item order, with ``--map``), from the client's I/O thread: the cell's context
   is captured when the cell starts, and ipykernel keeps the cell's parent header in
   context variables, so output lands in this cell even after it has returned.
5. The names the cell binds (or those of ``-o``) are set in the namespace (as lists
   in item order with ``--map``) and the last expression's value is returned, so the
   notebook displays it with its rich repr. A task's exception is raised here, shown
   with the remote traceback in the cell's own lines. Ctrl-C cancels the tasks.

With ``--no-wait NAME`` step 5 happens when the tasks end: NAME is bound at once to a
:class:`CellFuture`, whose result is the dict of names set.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextvars
import functools
import json
import re
import shlex
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from IPython.core.error import UsageError

from scaler_jupyter.errors import SerializationError
from scaler_jupyter.jupyter import cell_runner
from scaler_jupyter.jupyter.cell_analysis import analyze
from scaler_jupyter.jupyter.cell_runner import Cell, pack, unpack

_client = None  # set by use_client() until the kernel's session (``%scaler start|connect``) provides one


def use_client(client) -> None:
    """Run ``%%scaler`` cells on ``client``; None goes back to the kernel's session client."""
    global _client
    _client = client


def current_client():
    """The client ``%%scaler`` submits to: the one given to :func:`use_client`, else the kernel's session's."""
    if _client is not None:
        return _client
    try:
        from scaler_jupyter.jupyter.session import current_client as session_client
    except ImportError:
        raise RuntimeError("no cluster: run %scaler start or %scaler connect ADDRESS") from None
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
    cell_run = _CellRun(shell, spec, analysis.deletes, _CellOutput(shell), map_name, items)
    cell_run.submit(client, packed, options.tags)
    if options.no_wait is not None:
        shell.user_ns[options.no_wait] = cell_run.future(options.timeout)
        return None
    return cell_run.wait(options.timeout)


@functools.lru_cache(maxsize=256)
def _transformed(shell, cell: str) -> str:
    """The cell after IPython's transforms (a pure function of its text, so cached), with a blank first line
    standing for the ``%%scaler`` line so that line numbers are the notebook's."""
    return "\n" + shell.transform_cell(cell)


def _pack_values(values: dict[str, Any]) -> cell_runner.Packed:
    try:
        return pack(values)
    except Exception as exc:
        culprit = cell_runner.unpicklable(values)
        if culprit is None:  # only together (a shared reference pickles differently): name them all
            raise _one_line(SerializationError(
                f"%%scaler: the cell's variables {', '.join(values)} cannot be sent to the cluster: "
                f"{type(exc).__name__}: {exc}")) from None
        name, error = culprit
        raise _one_line(SerializationError(
            f"%%scaler: the variable {name!r} ({type(values[name]).__name__}) cannot be sent to the cluster: "
            f"{type(error).__name__}: {error}")) from None


def _one_line(exc: BaseException, lines: Sequence[str] | None = None) -> BaseException:
    """Make IPython show ``exc`` as ``lines`` (default: ``Type: message``), not as a local traceback."""
    rendered = list(lines) if lines is not None else [f"{type(exc).__name__}: {exc}"]
    try:
        exc._render_traceback_ = lambda: rendered  # IPython's hook for exceptions that render themselves
    except AttributeError:
        pass
    return exc


class CellSyntaxError(Exception):
    """A syntax error in a ``%%scaler`` cell, found before anything is sent, shown as Python shows one.

    Not a ``SyntaxError`` subclass: IPython would show those with the magic's own frames."""


def _syntax_error(exc: SyntaxError, filename: str) -> CellSyntaxError:
    located = SyntaxError(exc.msg, (filename, exc.lineno, exc.offset, exc.text, exc.end_lineno, exc.end_offset))
    lines = "".join(traceback.format_exception_only(SyntaxError, located)).rstrip("\n").splitlines()
    return _one_line(CellSyntaxError(f"{exc.msg} ({filename}, line {exc.lineno})"), lines)


def _rendered(exc: BaseException) -> list[str]:
    render = getattr(exc, "_render_traceback_", None)
    return render() if render is not None else [f"{type(exc).__name__}: {exc}"]


def _remote_error(exc: BaseException, header: str | None = None) -> BaseException:
    """A task's exception, shown with its traceback in the cell's own lines (or the engine's message)."""
    text = getattr(exc, cell_runner.TRACEBACK_ATTRIBUTE, None)
    lines = text.rstrip("\n").splitlines() if text else [f"{type(exc).__name__}: {exc}"]
    if header is not None:
        lines.insert(0, header)
    return _one_line(exc, lines)


class _CellOutput:
    """Writes into the cell that ran ``%%scaler``, from any thread, also after the cell has returned.

    ipykernel 7 keeps the parent header (which cell output belongs to) in context
    variables; a copy of the cell's context, entered for each write, routes the
    streams and displays of tasks there.
    """

    def __init__(self, shell) -> None:
        self._shell = shell
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()  # a Context is entered by one thread at a time

    def write(self, stream: str, text: str) -> None:
        with self._lock:
            self._context.run(self._write, stream, text)

    def _write(self, stream: str, text: str) -> None:
        if stream == cell_runner.DISPLAY_STREAM:
            bundle = json.loads(text)
            self._shell.display_pub.publish(data=bundle["data"], metadata=bundle["metadata"])
        else:
            (sys.stderr if stream == "stderr" else sys.stdout).write(text)


class _ItemOutput:
    """One ``--map`` run's output, held until the runs before it have shown theirs."""

    def __init__(self, header: str) -> None:
        self.header = header
        self.lines: list[tuple[str, str]] = []

    def write(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))


class CellFuture(concurrent.futures.Future):
    """What ``%%scaler --no-wait NAME`` binds to NAME: once the cell's tasks end, the dict of the names
    set in the namespace; ``cancel()`` cancels the tasks."""

    def __init__(self, cancel_tasks: Callable[[], None]) -> None:
        super().__init__()
        self._cancel_tasks = cancel_tasks

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self.set_running_or_notify_cancel()  # as an executor's futures do, so wait() counts it done
        self._cancel_tasks()
        return True


class _CellRun:
    """The task(s) of one ``%%scaler`` cell, their output, and what they bring back to the namespace."""

    def __init__(self, shell, spec: Cell, deletes: Sequence[str], output: _CellOutput,
                 map_name: str | None, items: list | None) -> None:
        self.shell = shell
        self.spec = spec
        self.deletes = deletes
        self.output = output
        self.map_name = map_name
        self.items = items
        self.futures: list[concurrent.futures.Future] = []
        self._groups: list[_ItemOutput] = []
        self._shown = 0  # --map: the runs whose output is shown, a prefix in item order
        self._lock = threading.Lock()

    # -- sending ------------------------------------------------------------------

    def submit(self, client, packed: cell_runner.Packed, tags: list[str]) -> None:
        if self.items is None:
            future = client.submit_with(cell_runner.run_cell, (self.spec, packed), tags=tags)
            future.on_output = self.output.write
            self.futures.append(future)
            return
        extras = []
        for index, item in enumerate(self.items):
            try:
                extras.append(pack({self.map_name: item}))
            except Exception as exc:
                raise _one_line(SerializationError(
                    f"%%scaler --map: item {index} ({type(item).__name__}) cannot be sent to the cluster: "
                    f"{type(exc).__name__}: {exc}")) from None
        shared = client.send_object(packed)  # stored once on the scheduler, whatever the number of items
        try:
            for index, extra in enumerate(extras):
                group = _ItemOutput(f"[{self.map_name}={_short_repr(self.items[index])}]\n")
                future = client.submit_with(cell_runner.run_cell, (self.spec, shared, extra), tags=tags)
                future.on_output = group.write
                self._groups.append(group)
                self.futures.append(future)
                future.add_done_callback(self._show_groups)
        except BaseException:
            self.cancel()
            raise
        finally:
            self._release(client, shared)

    def _release(self, client, shared) -> None:
        """Free the shared values on the scheduler once every run has ended."""
        remaining = [len(self.futures)]
        lock = threading.Lock()

        def one_done(_future) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                client.delete_object(shared)

        for future in self.futures:
            future.add_done_callback(one_done)

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()

    def _show_groups(self, _future=None) -> None:
        """Show the output of every finished run not yet shown whose predecessors are all shown."""
        with self._lock:
            while self._shown < len(self.futures) and self.futures[self._shown].done():
                group = self._groups[self._shown]
                if group.lines:
                    self.output.write("stdout", group.header)
                    for stream, text in group.lines:
                        self.output.write(stream, text)
                self._shown += 1

    # -- waiting ------------------------------------------------------------------

    def wait(self, timeout: float | None) -> Any:
        """Block until the task(s) end; Ctrl-C or the timeout cancels them."""
        try:
            if self.items is None:
                self.futures[0].result(timeout)  # raises the task's exception: handled by apply
            else:
                self._wait_map(timeout)
        except KeyboardInterrupt:
            self.cancel()
            raise _one_line(KeyboardInterrupt(), ["KeyboardInterrupt: the cell's task(s) were cancelled"]) from None
        except concurrent.futures.TimeoutError:
            self.cancel()
            raise _one_line(TimeoutError(f"%%scaler: the cell did not finish within {timeout:g}s; "
                                         "its task(s) were cancelled")) from None
        except BaseException:
            pass  # a task failed: apply() raises it, named
        return self.apply()[1]

    def _wait_map(self, timeout: float | None) -> None:
        from tqdm.auto import tqdm

        with tqdm(total=len(self.futures), desc=f"%%scaler --map {self.map_name}", leave=True) as bar:
            for future in concurrent.futures.as_completed(self.futures, timeout):
                bar.update(1)
                if not future.cancelled() and future.exception() is not None:
                    self.cancel()
                    return

    def future(self, timeout: float | None) -> CellFuture:
        """``--no-wait``: a future that applies the outcome when the task(s) end."""
        cell_future = CellFuture(self.cancel)
        remaining = [len(self.futures)]
        lock = threading.Lock()

        def one_done(future) -> None:
            if not future.cancelled() and future.exception() is not None:
                self.cancel()  # the first failure ends the cell
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            if timer is not None:
                timer.cancel()
            if cell_future.done():
                return
            try:
                names, _ = self.apply()
            except BaseException as exc:
                self.output.write("stderr", "\n".join(_rendered(exc)) + "\n")  # where the cell's output went
                _set(cell_future, exception=exc)
            else:
                _set(cell_future, result=names)

        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self.cancel)
            timer.daemon = True
            timer.start()
        for future in self.futures:
            future.add_done_callback(one_done)
        return cell_future

    # -- bringing back ------------------------------------------------------------

    def apply(self) -> tuple[dict[str, Any], Any]:
        """Set the names the cell brought back; return them and the last expression's value (a list of
        them with ``--map``). Raises the first task's exception, named after its item."""
        outcomes = []
        for index, future in enumerate(self.futures):
            if future.cancelled():
                continue
            exc = future.exception()
            if exc is not None:
                header = None
                if self.items is not None:
                    header = (f"%%scaler --map: the run with {self.map_name}={_short_repr(self.items[index])} "
                              f"(item {index} of {len(self.items)}) failed:")
                raise _remote_error(exc, header)
            outcomes.append(unpack(future.result()))
        if len(outcomes) < len(self.futures):
            raise _one_line(concurrent.futures.CancelledError("%%scaler: the cell's task(s) were cancelled"))
        if self.items is None:
            names, value = outcomes[0]["names"], outcomes[0]["value"]
            for name in self.deletes:
                if name not in names:
                    self.shell.user_ns.pop(name, None)
        else:
            bound = dict.fromkeys(name for outcome in outcomes for name in outcome["names"])
            names = {name: [outcome["names"].get(name) for outcome in outcomes] for name in bound}
            value = [outcome["value"] for outcome in outcomes]
        self.shell.user_ns.update(names)
        return names, (value if self.spec.last_expression else None)


def _set(future: concurrent.futures.Future, result: Any = None, exception: BaseException | None = None) -> None:
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:  # cancelled meanwhile
        pass


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
