"""``scaler-jupyter top ADDRESS``: a live terminal table of a scheduler's monitor feed, like ``top``.

``top`` watches the scheduler as everything else does, through
``scaler_jupyter.monitor.subscribe``: the scheduler's answer is drawn at once,
then every snapshot of the feed, and the screen is redrawn once a second
regardless so a silent scheduler shows as such. ``--monitor-address`` names the
feed where the scheduler's own answer cannot (a feed behind another address).
Against a scheduler started with ``--keys``, ``top --keys DIR`` as every client.

Keys sort the worker table (``SORT_KEYS``; the same key again reverses the order)
and ``q`` quits. The terminal is put in cbreak mode, so keys arrive one at a time
and unechoed while output and Ctrl-C work as usual, and is restored on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import termios
import time
import tty
from collections.abc import Iterator

import zmq
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from scaler_jupyter.errors import KeysError, ProtocolError
from scaler_jupyter.monitor import subscribe

# key -> (worker field, what the footer calls it, largest first)
SORT_KEYS: dict[str, tuple[str, str, bool]] = {
    "c": ("cpu", "cpu", True),
    "m": ("memory", "memory", True),
    "u": ("queued", "queued", True),  # q quits
    "r": ("running", "running", True),
    "d": ("done", "done", True),
    "n": ("name", "name", False),
    "h": ("host", "host", False),
    "l": ("heartbeat_lag", "lag", True),
}
QUIT = "q"
STALE_AFTER = 3.0  # seconds without a snapshot before the header says so
_ROWS_AROUND_TABLE = 9  # header, table borders, footer: what the worker rows must leave room for


@dataclasses.dataclass(slots=True)
class TopView:
    """What the screen shows: the latest snapshot, when it came, and the worker table's order."""

    address: str
    snapshot: dict
    received: float  # monotonic seconds
    sort: str = "name"
    descending: bool = False

    def press(self, key: str) -> bool:
        """Apply one key; False when it means quit."""
        if key == QUIT:
            return False
        if key in SORT_KEYS:
            field, _, descending = SORT_KEYS[key]
            self.descending = not self.descending if field == self.sort else descending
            self.sort = field
        return True

    def sorted_workers(self) -> list[dict]:
        workers = self.snapshot.get("workers", [])
        by_name = sorted(workers, key=lambda w: str(w.get("name", "")))
        return sorted(by_name, key=lambda w: _sort_value(w.get(self.sort)), reverse=self.descending)


def _sort_value(value) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def render(view: TopView, now: float, height: int = 50) -> RenderableType:
    """The whole screen for ``view`` at monotonic time ``now``, fitting ``height`` lines."""
    snap = view.snapshot
    sched, tasks, workers = snap.get("scheduler", {}), snap.get("tasks", {}), view.sorted_workers()
    age = now - view.received
    title = Text.assemble(("scaler-jupyter top", "bold"), "  ", (view.address, "cyan"),
                          f"  up {_duration(sched.get('uptime', 0.0))}")
    if age > STALE_AFTER:
        title.append(f"  no snapshot for {age:.0f}s: is the scheduler alive?", style="bold red")
    scheduler_line = Text.assemble(
        ("Scheduler ", "bold"),
        f"pid {sched.get('pid', '?')}  CPU {sched.get('cpu', 0.0):.1f}%  "
        f"memory {_bytes(sched.get('memory', 0))}  "
        f"{sched.get('tasks_per_second', 0.0):,.1f} tasks/s  "
        f"objects {sched.get('objects', 0):,} ({_bytes(sched.get('object_bytes', 0))})")
    processors = sum(w.get("processors", 0) for w in workers)
    tasks_line = Text.assemble(
        ("Tasks ", "bold"),
        f"{tasks.get('pending', 0):,} pending  {tasks.get('queued', 0):,} queued  "
        f"{tasks.get('running', 0):,} running  {tasks.get('finished', 0):,} finished    ",
        ("Workers ", "bold"), f"{len(workers)} ({processors} processors)    ",
        ("Clients ", "bold"), f"{len(snap.get('clients', []))}")
    return Group(title, scheduler_line, tasks_line, _worker_table(view, workers, height), _footer(view))


def _worker_table(view: TopView, workers: list[dict], height: int) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    columns = [("NAME", "name", "left"), ("HOST", "host", "left"), ("PID", "pid", "right"),
               ("TAGS", "tags", "left"), ("PROC", "processors", "right"), ("CPU%", "cpu", "right"),
               ("MEMORY", "memory", "right"), ("QUEUED", "queued", "right"), ("RUNNING", "running", "right"),
               ("DONE", "done", "right"), ("LAG", "heartbeat_lag", "right")]
    for header, field, justify in columns:
        if field == view.sort:
            header += " ▼" if view.descending else " ▲"
        table.add_column(header, justify=justify, no_wrap=True, header_style="bold reverse" if field == view.sort
                         else "bold")
    room = max(1, height - _ROWS_AROUND_TABLE)
    shown = workers if len(workers) <= room else workers[: room - 1]
    for w in shown:
        lag = w.get("heartbeat_lag", 0.0)
        table.add_row(str(w.get("name", "")), str(w.get("host", "")), str(w.get("pid", "")),
                      ",".join(w.get("tags", [])) or "-", str(w.get("processors", "")),
                      f"{w.get('cpu', 0.0):.1f}", _bytes(w.get("memory", 0)), f"{w.get('queued', 0):,}",
                      f"{w.get('running', 0):,}", f"{w.get('done', 0):,}",
                      Text(f"{lag:.1f}s", style="red" if lag > STALE_AFTER else ""))
    if len(shown) < len(workers):
        table.add_row(Text(f"... and {len(workers) - len(shown)} more", style="dim"))
    if not workers:
        table.add_row(Text("no workers connected", style="dim"))
    return table


def _footer(view: TopView) -> Text:
    footer = Text("sort: ", style="dim")
    for key, (field, label, _) in SORT_KEYS.items():
        footer.append(key, style="bold reverse" if field == view.sort else "bold")
        footer.append(f" {label}  ", style="dim")
    footer.append("(again: reverse)   ", style="dim")
    footer.append(QUIT, style="bold")
    footer.append(" quit", style="dim")
    return footer


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


@contextlib.contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """Keys one at a time, unechoed, for the block; the terminal as it was afterwards."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_top(address: str, monitor_address: str | None = None, timeout: float = 10.0,
            console: Console | None = None, keys: str | os.PathLike | None = None) -> int:
    """Show the live table until ``q`` (exit code 0) or Ctrl-C (130); 1 if the scheduler cannot be reached.

    ``keys`` is the cluster's keys directory, for a scheduler started with ``--keys``.
    """
    console = console or Console(highlight=False)
    try:
        feed = subscribe(address, keys, timeout, monitor_address=monitor_address)
    except (KeysError, TimeoutError, ConnectionError, ProtocolError, ValueError) as exc:
        print(f"scaler-jupyter top: {exc}", file=sys.stderr)
        return 1
    try:
        with feed:
            view = TopView(address, feed.latest(), time.monotonic())
            typed_fd = sys.stdin.fileno() if sys.stdin.isatty() else None
            poller = zmq.Poller()
            poller.register(feed.socket, zmq.POLLIN)
            if typed_fd is not None:
                poller.register(typed_fd, zmq.POLLIN)
            with _cbreak(typed_fd), Live(render(view, time.monotonic(), console.height), console=console,
                                         screen=True, auto_refresh=False, redirect_stdout=False,
                                         redirect_stderr=False) as live:
                while True:
                    events = dict(poller.poll(1000))
                    if typed_fd in events:
                        typed = os.read(typed_fd, 64).decode(errors="ignore")
                        if not typed or not all(view.press(key) for key in typed):  # EOF: the terminal went
                            return 0
                    snapshot = feed.latest()
                    if snapshot is not None:
                        view.snapshot, view.received = snapshot, time.monotonic()
                    live.update(render(view, time.monotonic(), console.height), refresh=True)
    except KeyboardInterrupt:
        return 130
