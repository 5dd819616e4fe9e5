"""``%scaler VERB ...``: start, connect to, list, watch, scale and stop clusters from a notebook.

Each verb has ``--help``. A user's mistake or an unreachable cluster is one line
(IPython's ``UsageError``, shown without a traceback), never a stack of frames.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import time

import zmq
from IPython.core.error import UsageError
from IPython.display import display

from scaler_jupyter import clusters
from scaler_jupyter.cli import add_ssh_options
from scaler_jupyter.errors import ScalerJupyterError


class _Done(Exception):
    """``--help`` was printed: nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports to the notebook instead of exiting the kernel."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None):
        if status:
            raise UsageError(f"{self.prog}: {(message or '').strip()}")
        raise _Done


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _tags(text: str) -> tuple[str, ...]:
    return tuple(tag for tag in text.split(",") if tag)


def _parser() -> _Parser:
    root = _Parser(prog="%scaler", description="Manage the kernel's cluster. `%scaler VERB --help` for each verb.",
                   add_help=True)
    verbs = root.add_subparsers(dest="verb", required=True, parser_class=_Parser, metavar="VERB")

    start = verbs.add_parser("start", help="start a local cluster for this kernel and show it",
                             description="Start a scheduler and N workers on 127.0.0.1 and connect this kernel to "
                                         "it. It stops with the kernel, unless --keep.")
    start.add_argument("-n", type=_count, default=None, help="how many workers (default: one per core)")
    start.add_argument("--tags", type=_tags, default=(), help="comma-separated tags the workers offer, e.g. gpu")
    start.add_argument("--keep", action="store_true",
                       help="keep the cluster running after the kernel ends (stop it with %%scaler stop or "
                            "`scaler-jupyter stop ID`)")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the cluster to start")
    add_ssh_options(start)

    connect = verbs.add_parser("connect", help="connect to a running cluster, by address or id",
                               description="Connect this kernel to the scheduler at ADDRESS (tcp://host:port) or "
                                           "to a cluster listed by %%scaler list, by its id.")
    connect.add_argument("target", metavar="ADDRESS|ID")
    connect.add_argument("--keys", metavar="DIR", default=None, help="the cluster's keys directory, if it needs one")
    connect.add_argument("--timeout", type=float, default=5.0,
                         help="seconds to wait for the scheduler to answer (default %(default)s)")

    verbs.add_parser("list", help="the local clusters on this machine", description="List the recorded local "
                     "clusters on this machine (those of every kernel, and detached ones); * marks this kernel's.")
    verbs.add_parser("status", help="workers and task counts of the kernel's cluster",
                     description="Print the kernel's cluster: workers with CPU, memory and queues; task counts.")
    scale = verbs.add_parser("scale", help="run N workers", description="Start or stop workers of the kernel's "
                             "cluster (one this kernel started, or a detached one) until N run.")
    scale.add_argument("n", type=_count, metavar="N")
    verbs.add_parser("stop", help="stop the kernel's cluster (or disconnect from one started elsewhere)",
                     description="Stop the cluster this kernel started (also with --keep), or disconnect from a "
                                 "cluster it connected to.")
    verbs.add_parser("dashboard", help="where to watch the cluster live", description="Show the cluster's "
                     "dashboard link, or how to watch it in the notebook when it has no dashboard server.")
    return root


def run(shell, line: str):
    """Run ``%scaler LINE`` in ``shell``."""
    try:
        args = _parser().parse_args(shlex.split(line))
    except _Done:
        return None
    except ValueError as exc:  # shlex: an unclosed quote
        raise UsageError(f"%scaler: {exc}") from None
    try:
        return _VERBS[args.verb](args)
    except (ScalerJupyterError, RuntimeError, OSError, ValueError, zmq.ZMQError) as exc:
        # TimeoutError and ConnectionError are OSErrors: an unreachable cluster is a message, not a traceback
        raise UsageError(f"%scaler {args.verb}: {exc}") from None


def _start(args: argparse.Namespace) -> None:
    from scaler_jupyter.jupyter import session, widget

    ssh = None
    if args.ssh:
        from scaler_jupyter.ssh_cluster import SSHSpec

        ssh = SSHSpec(tuple(_tags(args.ssh)), args.python, args.ssh_config)
    n = args.n if args.n is not None else 1 if ssh else os.cpu_count() or 1
    current = session.start(n, args.tags, keep=args.keep, timeout=args.timeout, ssh=ssh)
    display(widget.session_widget())
    if args.keep:
        print(f"cluster {current.cluster_id} outlives this kernel: `%scaler stop` or "
              f"`scaler-jupyter stop {current.cluster_id}` stops it")


def _connect(args: argparse.Namespace) -> None:
    from scaler_jupyter.jupyter import session, widget

    session.connect(args.target, keys=args.keys, timeout=args.timeout)
    display(widget.session_widget())


def _list(args: argparse.Namespace) -> None:
    from scaler_jupyter.jupyter import session

    current = session.current()
    print(clusters.table(clusters.list_clusters(), time.time(), current.cluster_id if current else None))


def _status(args: argparse.Namespace) -> None:
    from scaler_jupyter.jupyter import session, widget

    client = session.current_client()
    print(widget.text_report(client.address, client.status()))


def _scale(args: argparse.Namespace) -> None:
    from scaler_jupyter.jupyter import session

    session.scale(args.n)
    print(f"{args.n} worker{'s' if args.n != 1 else ''} at {session.current_client().address}")


def _stop(args: argparse.Namespace) -> None:
    from scaler_jupyter.jupyter import session, widget

    message = session.stop()
    widget.session_stopped()
    print(message)


def _dashboard(args: argparse.Namespace) -> None:
    from scaler_jupyter.jupyter import session

    current = session.current()
    if current is None:
        raise RuntimeError(session.NO_CLUSTER)
    record = current.record()
    if record is not None and record.get("dashboard_address"):
        from scaler_jupyter.dashboard import PANELS

        url = record["dashboard_address"]
        print(f"dashboard: {url}\n" + "\n".join(f"  {panel.title}: {url}{panel.path}" for panel in PANELS))
        return
    panels = ("live panels in this notebook: scaler_jupyter.panels.workers(client), queues, task_stream, throughput"
              if importlib.util.find_spec("scaler_jupyter.panels") else "no live panels either")
    print(f"{current.address} has no dashboard server (it was started without one); {panels}")


_VERBS = {"start": _start, "connect": _connect, "list": _list, "status": _status, "scale": _scale, "stop": _stop,
          "dashboard": _dashboard}
