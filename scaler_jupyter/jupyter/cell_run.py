"""One ``%%scaler`` cell in flight: its task(s), their output in the cell, and what comes back.

Output is written from the client's I/O thread (tasks stream it while they run,
and a ``--no-wait`` cell's tasks after the cell has returned). ipykernel 7 keeps the
parent header, which says the cell that output belongs to, in context variables;
a copy of the cell's context, taken when the cell runs and entered for each write,
routes streams and displays to that cell whatever thread writes them.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import json
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from scaler_jupyter.errors import SerializationError
from scaler_jupyter.jupyter import cell_worker
from scaler_jupyter.jupyter.cell_worker import Cell, pack, unpack


def one_line(exc: BaseException, lines: Sequence[str] | None = None) -> BaseException:
    """Make IPython show ``exc`` as ``lines`` (default: ``Type: message``), not as a local traceback."""
    rendered = list(lines) if lines is not None else [f"{type(exc).__name__}: {exc}"]
    try:
        exc._render_traceback_ = lambda: rendered  # IPython's hook for exceptions that render themselves
    except AttributeError:
        pass
    return exc


def _rendered(exc: BaseException) -> list[str]:
    render = getattr(exc, "_render_traceback_", None)
    return render() if render is not None else [f"{type(exc).__name__}: {exc}"]


def _remote_error(exc: BaseException, header: str | None = None) -> BaseException:
    """A task's exception, shown with its traceback in the cell's own lines (or the engine's message)."""
    text = getattr(exc, cell_worker.TRACEBACK_ATTRIBUTE, None)
    lines = text.rstrip("\n").splitlines() if text else [f"{type(exc).__name__}: {exc}"]
    if header is not None:
        lines.insert(0, header)
    return one_line(exc, lines)


class CellOutput:
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
        if stream == cell_worker.DISPLAY_STREAM:
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


class CellRun:
    """The task(s) of one ``%%scaler`` cell, their output, and what they bring back to the namespace."""

    def __init__(self, shell, spec: Cell, deletes: Sequence[str], map_name: str | None, items: list | None) -> None:
        self.shell = shell
        self.spec = spec
        self.deletes = deletes
        self.output = CellOutput(shell)  # made now, in the cell: it captures the cell's context
        self.map_name = map_name
        self.items = items
        self.futures: list[concurrent.futures.Future] = []
        self._groups: list[_ItemOutput] = []
        self._shown = 0  # --map: the runs whose output is shown, a prefix in item order
        self._lock = threading.Lock()

    # -- sending ------------------------------------------------------------------

    def submit(self, client, packed: cell_worker.Packed, tags: list[str]) -> None:
        if self.items is None:
            future = client.submit_with(cell_worker.run_cell, (self.spec, packed), tags=tags)
            future.on_output = self.output.write
            self.futures.append(future)
            return
        extras = []
        for index, item in enumerate(self.items):
            try:
                extras.append(pack({self.map_name: item}))
            except Exception as exc:
                raise one_line(SerializationError(
                    f"%%scaler --map: item {index} ({type(item).__name__}) cannot be sent to the cluster: "
                    f"{type(exc).__name__}: {exc}")) from None
        shared = client.send_object(packed)  # stored once on the scheduler, whatever the number of items
        try:
            for index, extra in enumerate(extras):
                group = _ItemOutput(f"[{self.map_name}={_short_repr(self.items[index])}]\n")
                future = client.submit_with(cell_worker.run_cell, (self.spec, shared, extra), tags=tags)
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
        _when_all_done(self.futures, lambda: client.delete_object(shared))

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
            raise one_line(KeyboardInterrupt(), ["KeyboardInterrupt: the cell's task(s) were cancelled"]) from None
        except concurrent.futures.TimeoutError:
            self.cancel()
            raise one_line(TimeoutError(f"%%scaler: the cell did not finish within {timeout:g}s; "
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

        def end_at_first_failure(future) -> None:
            if not future.cancelled() and future.exception() is not None:
                self.cancel()

        def all_done() -> None:
            if timer is not None:
                timer.cancel()
            if cell_future.done():  # cancelled by the user
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
            future.add_done_callback(end_at_first_failure)
        _when_all_done(self.futures, all_done)
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
            raise one_line(concurrent.futures.CancelledError("%%scaler: the cell's task(s) were cancelled"))
        if self.items is None:
            names, value = outcomes[0]["names"], outcomes[0]["value"]
            cell_worker.rebind_globals(names, self.shell.user_ns)  # functions the cell defined see the notebook
            for name in self.deletes:
                if name not in names:
                    self.shell.user_ns.pop(name, None)
        else:
            bound = dict.fromkeys(name for outcome in outcomes for name in outcome["names"])
            names = {name: [outcome["names"].get(name) for outcome in outcomes] for name in bound}
            value = [outcome["value"] for outcome in outcomes]
        self.shell.user_ns.update(names)
        return names, (value if self.spec.last_expression else None)


def _when_all_done(futures: Sequence[concurrent.futures.Future], callback: Callable[[], None]) -> None:
    """Call ``callback`` once, in the thread that ends the last of ``futures``."""
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_future) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            callback()

    for future in futures:
        future.add_done_callback(one_done)


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
