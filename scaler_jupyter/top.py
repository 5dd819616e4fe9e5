"""``scaler-jupyter top ADDRESS``: a live terminal table of a scheduler's monitor feed, like ``top``.

Where the feed is: unless ``--monitor-address`` says, ``top`` asks the scheduler at
ADDRESS for one snapshot (a ``StatusRequest``, answered without joining as a
client), which names the feed's address and is drawn at once. Then it subscribes
to the feed (see ``scaler_jupyter.scheduler.monitor``) and redraws on every
snapshot, and once a second regardless so a silent scheduler shows as such.
Against a scheduler started with ``--keys``, both sockets need the cluster's keys
(``top --keys DIR``), as every client does.

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

from scaler_jupyter.errors import AuthenticationError, KeysError, ProtocolError
from scaler_jupyter.protocol import Rejected, StatusReply, StatusRequest, decode
from scaler_jupyter.protocol.transport import send
from scaler_jupyter.scheduler.monitor import TOPIC, decode_snapshot
from scaler_jupyter.security import ClusterKeys, HandshakeWatch, load_keys

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
_WILDCARD_HOSTS = ("0.0.0.0", "*", "[::]", "::", "")
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


# ---------------------------------------------------------------------------
# Talking to the scheduler


def request_snapshot(address: str, timeout: float, context: zmq.Context | None = None,
                     keys: ClusterKeys | None = None) -> dict:
    """Ask the scheduler at ``address`` for one snapshot, without joining it as a client."""
    ctx = context or zmq.Context.instance()
    socket = ctx.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.connect(socket)
    handshakes = HandshakeWatch(socket, keyed=keys is not None)
    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    poller.register(handshakes.socket, zmq.POLLIN)
    try:
        socket.connect(address)
        send(socket, StatusRequest(1))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            events = dict(poller.poll(remaining * 1000))
            if handshakes.socket in events:
                handshakes.read()
                if handshakes.definite:
                    raise AuthenticationError(f"cannot join the scheduler at {address}: {handshakes.failure}")
            if socket not in events:
                continue
            try:
                message = decode(socket.recv_multipart())
            except ProtocolError as exc:
                raise ConnectionError(f"{address} does not speak this version's protocol ({exc})") from None
            if isinstance(message, StatusReply):
                return message.snapshot
            if isinstance(message, Rejected):
                raise ConnectionError(f"the scheduler at {address} refused: {message.reason}")
        if handshakes.failure is not None:
            raise TimeoutError(f"could not join the scheduler at {address} within {timeout:g}s: "
                               f"{handshakes.failure}")
        raise TimeoutError(f"no scheduler answered at {address} within {timeout:g}s: "
                           "check the address, and that the scheduler runs")
    finally:
        handshakes.close()
        socket.close()


def feed_address(snapshot: dict, scheduler_address: str) -> str | None:
    """Where the snapshot says the feed is, reachable from here (a wildcard host becomes the scheduler's host).

    None if the snapshot does not say.
    """
    published = snapshot.get("scheduler", {}).get("monitor_address")
    if not published:
        return None
    scheme, _, rest = published.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and host in _WILDCARD_HOSTS:
        host = scheduler_address.partition("://")[2].rpartition(":")[0]
        return f"tcp://{host}:{port}"
    return published


def _latest(socket: zmq.Socket) -> dict | None:
    """The newest snapshot waiting on the feed socket (older ones are skipped), or None."""
    latest = None
    while True:
        try:
            frames = socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return latest
        latest = decode_snapshot(frames) or latest


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
        cluster_keys = load_keys(keys)
    except KeysError as exc:
        print(f"scaler-jupyter top: {exc}", file=sys.stderr)
        return 1
    context = zmq.Context()
    feed = context.socket(zmq.SUB)
    feed.setsockopt(zmq.LINGER, 0)
    feed.setsockopt(zmq.SUBSCRIBE, TOPIC)
    if cluster_keys is not None:
        cluster_keys.connect(feed)
    try:
        try:
            first = request_snapshot(address, timeout, context, cluster_keys)
            monitor_address = monitor_address or feed_address(first, address)
            if monitor_address is None:
                raise ConnectionError(f"the scheduler at {address} does not say where its monitor feed is: "
                                      "give --monitor-address")
            feed.connect(monitor_address)
        except (TimeoutError, ConnectionError) as exc:
            print(f"scaler-jupyter top: {exc}", file=sys.stderr)
            return 1
        except zmq.ZMQError as exc:
            print(f"scaler-jupyter top: cannot connect ({exc}): an address reads like tcp://host:port",
                  file=sys.stderr)
            return 1
        view = TopView(address, first, time.monotonic())
        keys = sys.stdin.fileno() if sys.stdin.isatty() else None
        poller = zmq.Poller()
        poller.register(feed, zmq.POLLIN)
        if keys is not None:
            poller.register(keys, zmq.POLLIN)
        with _cbreak(keys), Live(render(view, time.monotonic(), console.height), console=console, screen=True,
                                 auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                events = dict(poller.poll(1000))
                if keys in events:
                    typed = os.read(keys, 64).decode(errors="ignore")
                    if not typed or not all(view.press(key) for key in typed):  # EOF: the terminal went
                        return 0
                if feed in events:
                    snapshot = _latest(feed)
                    if snapshot is not None:
                        view.snapshot, view.received = snapshot, time.monotonic()
                live.update(render(view, time.monotonic(), console.height), refresh=True)
    except KeyboardInterrupt:
        return 130
    finally:
        feed.close()
        context.term()
