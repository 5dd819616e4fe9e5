"""The ``scaler-jupyter`` command: every setting is an argument."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from scaler_jupyter import logging_config
from scaler_jupyter.errors import ClusterError, KeysError
from scaler_jupyter.scheduler.state import SchedulerConfig
from scaler_jupyter.worker.agent import AgentConfig

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def _scheduler(args: argparse.Namespace) -> None:
    from scaler_jupyter.scheduler.server import run_scheduler

    config = SchedulerConfig(worker_timeout=args.worker_timeout, client_timeout=args.client_timeout,
                             max_retries=args.max_retries, max_waiting=args.max_waiting,
                             no_worker_grace=args.no_worker_grace, no_worker_timeout=args.no_worker_timeout,
                             balance_interval=args.balance_interval,
                             monitor_address=args.monitor_address, monitor_interval=args.monitor_interval,
                             local_address=args.local_address,
                             keys=args.keys, protected=args.protected)
    host = args.address.partition("://")[2].rpartition(":")[0]
    if not args.keys and args.address.startswith("tcp://") and host not in _LOOPBACK:
        logging.getLogger(__name__).warning(
            "listening on %s without --keys: anyone who can reach it can run code on its workers; "
            "see `scaler-jupyter keys --help`", args.address)
    run_scheduler(args.address, config, ready_fd=args.ready_fd)


def _agent_config(args: argparse.Namespace, name: str = "") -> AgentConfig:
    tags = tuple(t for t in args.tags.split(",") if t) if args.tags else ()
    return AgentConfig(processors=args.processors, tags=tags, heartbeat=args.heartbeat,
                       death_timeout=args.death_timeout, name=name, keys=args.keys)


def _worker(args: argparse.Namespace) -> None:
    from scaler_jupyter.worker.agent import run_worker

    run_worker(args.address, _agent_config(args, args.name or ""))


def _cluster(args: argparse.Namespace) -> None:
    """N workers in one command: each its own process, all stopped together."""
    from scaler_jupyter.processes import spawn, stop
    from scaler_jupyter.security import load_keys

    worker_args = ["--processors", str(args.processors), "--heartbeat", str(args.heartbeat),
                   "--death-timeout", str(args.death_timeout)]
    if args.tags:
        worker_args += ["--tags", args.tags]
    if args.keys:
        worker_args += ["--keys", str(load_keys(args.keys).directory)]  # checked once, not in N logs
    workers = [spawn(["-m", "scaler_jupyter", "worker", args.address, *worker_args]) for _ in range(args.n)]

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        while any(w.poll() is None for w in workers):
            os.wait()  # until a worker exits, or a signal interrupts
    except (KeyboardInterrupt, ChildProcessError):
        pass
    finally:
        for worker in workers:
            stop(worker)


def _top(args: argparse.Namespace) -> None:
    from scaler_jupyter.top import run_top

    sys.exit(run_top(args.address, monitor_address=args.monitor_address, timeout=args.timeout, keys=args.keys))


def _dashboard(args: argparse.Namespace) -> None:
    from scaler_jupyter.dashboard.server import run_dashboard

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    origins = tuple(o for o in args.allow_websocket_origin.split(",") if o)
    try:
        run_dashboard(args.address, args.port, args.prefix, args.keys, origins, ready_fd=args.ready_fd)
    except KeyboardInterrupt:
        pass


def _keys(args: argparse.Namespace) -> None:
    from scaler_jupyter.security import ClusterKeys

    keys = ClusterKeys.create(args.directory, force=args.force)
    print(f"wrote a cluster key set in {keys.directory}:\n"
          "  scheduler.key_secret, client.key     the scheduler's host needs these\n"
          "  scheduler.key, client.key_secret     every worker, client and `top` host needs these\n"
          "the .key_secret files are secret: copy them only over a secure channel. Then:\n"
          f"  scaler-jupyter scheduler tcp://0.0.0.0:2345 --keys {keys.directory}\n"
          f"  scaler-jupyter cluster tcp://HOST:2345 -n 4 --keys {keys.directory}\n"
          f"  Client('tcp://HOST:2345', keys='{keys.directory}')")


def _start(args: argparse.Namespace) -> None:
    from scaler_jupyter import clusters

    if args.n is None:
        args.n = 1 if args.ssh else os.cpu_count() or 1
    record = clusters.start_detached(args.n, tuple(t for t in args.tags.split(",") if t), keys=args.keys,
                                     timeout=args.timeout, ssh=_ssh_spec(args))
    print(f"started cluster {record['id']} at {record['address']} with {record['n_workers']} workers "
          f"(`scaler-jupyter stop {record['id']}` stops it)"
          + (f"; its keys: {record['keys']}" if record.get("kind") == "ssh" and record["keys"] else ""))


def _list(args: argparse.Namespace) -> None:
    from scaler_jupyter import clusters

    records = clusters.list_clusters()
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(clusters.table(records, now=time.time()))


def _stop(args: argparse.Namespace) -> None:
    from scaler_jupyter import clusters

    record = clusters.stop(args.id, timeout=args.timeout)
    print(f"stopped cluster {record['id']} ({record['address']})")


def _supervise(args: argparse.Namespace) -> None:
    from scaler_jupyter import clusters

    clusters.supervise(args.id, args.n, tuple(t for t in args.tags.split(",") if t), args.ready_fd, keys=args.keys,
                       timeout=args.timeout, ssh=_ssh_spec(args))


def _ssh_spec(args: argparse.Namespace):
    """What ``--ssh``, ``--python`` and ``--ssh-config`` ask for; None for a local cluster."""
    if not args.ssh:
        return None
    from scaler_jupyter.ssh_cluster import SSHSpec

    return SSHSpec(tuple(h for h in args.ssh.split(",") if h), args.python, args.ssh_config)


def add_ssh_options(parser: argparse.ArgumentParser) -> None:
    """``--ssh``, ``--python`` and ``--ssh-config``: of ``scaler-jupyter start`` and ``%scaler start``."""
    parser.add_argument("--ssh", metavar="HOST1,HOST2,...", default=None,
                        help="start it over SSH instead ([user@]host[:port] each): the scheduler on the first host, "
                             "-n workers on each host after it (with keys made and shipped; needs the `ssh` extra)")
    parser.add_argument("--python", default=None,
                        help="with --ssh: the hosts' Python, where scaler_jupyter is installed (default: this one's "
                             "path)")
    parser.add_argument("--ssh-config", metavar="FILE", default=None,
                        help="with --ssh: an OpenSSH client config file (User, Port, IdentityFile, "
                             "UserKnownHostsFile, ...), read besides ~/.ssh/config")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", help="the scheduler, e.g. tcp://127.0.0.1:2345")
    parser.add_argument("--processors", type=int, default=1, help="processes that run tasks (default 1)")
    parser.add_argument("--tags", default="", help="comma-separated tags this worker offers, e.g. gpu,highmem")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (default 1)")
    parser.add_argument("--death-timeout", type=float, default=30.0,
                        help="exit after the scheduler has been silent this many seconds (default 30)")
    _add_keys_option(parser)


def _add_keys_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", metavar="DIR", default=None,
                        help="the cluster's keys directory, written by `scaler-jupyter keys DIR`, for a scheduler "
                             "that requires keys (default: none)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="scaler-jupyter", description="A Jupyter-first distributed engine.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", type=str.upper, choices=logging_config.LEVELS, default=None,
                        help=f"DEBUG, INFO, WARNING or ERROR (default: ${logging_config.LOG_LEVEL_ENV}, else INFO)")
    commands = root.add_subparsers(dest="command", required=True)

    scheduler = commands.add_parser("scheduler", help="run the scheduler", parents=[common])
    scheduler.add_argument("address", help="where to listen, e.g. tcp://127.0.0.1:2345 (port 0: any free port)")
    defaults = SchedulerConfig()
    scheduler.add_argument("--worker-timeout", type=float, default=defaults.worker_timeout,
                           help="seconds of silence before a worker is declared dead (default %(default)s)")
    scheduler.add_argument("--client-timeout", type=float, default=defaults.client_timeout,
                           help="seconds of silence before a client is dropped (default %(default)s)")
    scheduler.add_argument("--balance-interval", type=float, default=defaults.balance_interval,
                           help="seconds between moves of queued tasks from busy workers to idle ones; "
                                "a worker running out of work also triggers one; 0 turns balancing off "
                                "(default %(default)s)")
    scheduler.add_argument("--max-retries", type=int, default=defaults.max_retries,
                           help="crashes of its processor before a task fails (default %(default)s)")
    scheduler.add_argument("--max-waiting", type=int, default=defaults.max_waiting,
                           help="waiting tasks beyond which submit fails with NoWorkerError (default %(default)s)")
    scheduler.add_argument("--no-worker-grace", type=float, default=defaults.no_worker_grace,
                           help="seconds tasks may wait for tags no connected worker offers (or for any worker, "
                                "with none connected) before their clients are warned and the monitor lists them "
                                "(default %(default)s)")
    scheduler.add_argument("--no-worker-timeout", type=float, default=defaults.no_worker_timeout,
                           help="seconds after which such tasks fail with NoWorkerError; 0: they wait for a "
                                "worker to come (default %(default)s)")
    scheduler.add_argument("--monitor-address", default=None,
                           help="where to publish the monitor feed (default: the scheduler's port + 1, "
                                "or any free port if the scheduler's port is 0)")
    scheduler.add_argument("--monitor-interval", type=_positive, default=defaults.monitor_interval,
                           help="seconds between monitor snapshots (default %(default)s)")
    scheduler.add_argument("--local-address", default=None,
                           help="also listen on this unix:// path, for workers and clients of this host (a shorter "
                                "round trip than TCP, without ZeroMQ or Curve); its folder must be private to "
                                "this user (mode 0700)")
    scheduler.add_argument("--keys", metavar="DIR", default=None,
                           help="require CurveZMQ keys: encrypt all traffic and admit only workers, clients and "
                                "`top` holding the keys in DIR (written by `scaler-jupyter keys DIR`)")
    scheduler.add_argument("--protected", action="store_true",
                           help="refuse remote shutdown (Client.shutdown_cluster()): stop only with a signal here")
    scheduler.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    scheduler.set_defaults(run=_scheduler)

    worker = commands.add_parser("worker", help="run one worker", parents=[common])
    _add_worker_options(worker)
    worker.add_argument("--name", default="", help="the worker's name in the monitor (default host-pid)")
    worker.set_defaults(run=_worker)

    cluster = commands.add_parser("cluster", help="run N workers", parents=[common])
    _add_worker_options(cluster)
    cluster.add_argument("-n", type=int, default=1, help="how many workers (default 1)")
    cluster.set_defaults(run=_cluster)

    top = commands.add_parser("top", help="a live terminal table of the scheduler and its workers",
                              parents=[common],
                              description="Keys: c cpu, m memory, u queued, r running, d done, n name, h host, "
                                          "l heartbeat lag (again: reverse order); q quits.")
    top.add_argument("address", help="the scheduler, e.g. tcp://127.0.0.1:2345")
    top.add_argument("--monitor-address", default=None,
                     help="the scheduler's monitor feed (default: ask the scheduler at ADDRESS)")
    top.add_argument("--timeout", type=_positive, default=10.0,
                     help="seconds to wait for the scheduler to answer (default %(default)s)")
    _add_keys_option(top)
    top.set_defaults(run=_top)

    dashboard = commands.add_parser("dashboard", help="serve the live panels over HTTP (Bokeh) on 127.0.0.1",
                                    parents=[common],
                                    description="Each panel is a Bokeh app at PREFIX + its path; PREFIX + "
                                                "index.json lists them. Pages link their resources relatively, "
                                                "so the dashboard works behind a proxy.")
    dashboard.add_argument("address", help="the scheduler, e.g. tcp://127.0.0.1:2345")
    dashboard.add_argument("--port", type=int, default=8787, help="where to listen (0: any free port; "
                                                                   "default %(default)s)")
    dashboard.add_argument("--prefix", default="/", help="the URL path the dashboard is served under "
                                                         "(default %(default)s)")
    dashboard.add_argument("--allow-websocket-origin", default="", metavar="HOST:PORT,...",
                           help="more origins whose pages may open sessions (default: only the dashboard's own)")
    dashboard.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    _add_keys_option(dashboard)
    dashboard.set_defaults(run=_dashboard)

    keys = commands.add_parser("keys", help="write a CurveZMQ key set for a cluster that requires keys",
                               parents=[common],
                               description="Writes scheduler.key[_secret] and client.key[_secret] in DIR (created "
                                           "owner-only if missing; secret files mode 600). Start the scheduler, "
                                           "workers, clients and top with --keys DIR.")
    keys.add_argument("directory", metavar="DIR", help="where to write the keys")
    keys.add_argument("--force", action="store_true", help="replace the keys already in DIR")
    keys.set_defaults(run=_keys)

    start = commands.add_parser("start", help="start a detached local cluster, recorded in a cluster file",
                                parents=[common],
                                description="Starts a scheduler and N workers on 127.0.0.1 (or, with --ssh, on SSH "
                                            "hosts) that keep running after this command returns, until "
                                            "`scaler-jupyter stop ID`. Prints the cluster's id and address.")
    start.add_argument("-n", type=int, default=None,
                       help="how many workers (default: one per core); with --ssh, per worker host (default 1)")
    start.add_argument("--tags", default="", help="comma-separated tags the workers offer, e.g. gpu,highmem")
    start.add_argument("--timeout", type=_positive, default=60.0,
                       help="seconds to wait for the cluster to start (default %(default)s)")
    _add_keys_option(start)
    add_ssh_options(start)
    start.set_defaults(run=_start)

    listing = commands.add_parser("list", help="the local clusters recorded on this machine", parents=[common])
    listing.add_argument("--json", action="store_true", help="print the cluster files' records as JSON")
    listing.set_defaults(run=_list)

    stopping = commands.add_parser("stop", help="stop a recorded local cluster", parents=[common])
    stopping.add_argument("id", help="the cluster's id (or its first characters), as `scaler-jupyter list` shows")
    stopping.add_argument("--timeout", type=_positive, default=30.0,
                          help="seconds to wait for its processes to exit (default %(default)s)")
    stopping.set_defaults(run=_stop)

    supervise = commands.add_parser("supervise", parents=[common])  # started by `start`, not by users
    supervise.add_argument("--id", required=True)
    supervise.add_argument("-n", type=int, required=True)
    supervise.add_argument("--tags", default="")
    supervise.add_argument("--ready-fd", type=int, required=True)
    supervise.add_argument("--timeout", type=float, default=60.0)
    _add_keys_option(supervise)
    add_ssh_options(supervise)
    supervise.set_defaults(run=_supervise)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        level = logging_config.level(args.log_level, default="INFO")
    except ValueError as exc:  # a bad $SCALER_JUPYTER_LOG_LEVEL: --log-level is checked by argparse
        sys.exit(f"scaler-jupyter {args.command}: {exc}")
    logging_config.configure(args.command, level)
    from scaler_jupyter.processes import exit_with_parent

    exit_with_parent()
    try:
        args.run(args)
    except (KeysError, ClusterError) as exc:  # a user's mistake with a clear message: no traceback
        sys.exit(f"scaler-jupyter {args.command}: {exc}")


if __name__ == "__main__":
    main()
