"""SSHCluster: a scheduler and workers on other machines, started over SSH from this process.

The first host runs the scheduler; every host after it runs ``workers_per_host`` workers
(a host may be named twice). Each remote process runs under
:mod:`scaler_jupyter.ssh_tether`, which ends it when its SSH channel closes or its
caller falls silent, so nothing is left running on any host when this process closes
the cluster, exits, is killed with ``kill -9`` or loses the network; workers also stop
by themselves ``death_timeout`` seconds after losing their scheduler.

Secure by default: a fresh CurveZMQ key set is made here (in the cluster-file folder,
owner-only), and each host gets the half it needs over its SSH channel (the tether writes
it 0600 in a private directory and deletes it when it ends); the scheduler binds the
address this process reached its host at (never 0.0.0.0) and is ``--protected``, so
a client cannot shut it down: its owner stops it (:meth:`SSHCluster.close`), also when
another process asks through the cluster file's ``control_address``.

The SSH side is asyncssh, on an asyncio loop in a thread of its own; the public API
is synchronous and works in a notebook, whose own loop is running.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import shlex
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import zmq
import zmq.asyncio

from scaler_jupyter import clusters, logging_config, monitor
from scaler_jupyter.errors import SSHError
from scaler_jupyter.security import CLIENT, PUBLIC_SUFFIX, SCHEDULER, SECRET_SUFFIX, ClusterKeys

logger = logging.getLogger(__name__)

HEARTBEAT = 1.0  # seconds between the newlines that tell each tether its caller is alive
SESSIONS_PER_CONNECTION = 8  # processes per SSH connection: sshd's MaxSessions defaults to 10
STOP_WAIT = 10.0  # seconds a remote process gets to end once its channel is told to close
_LOG_TAIL = 20  # stderr lines kept per remote process, for the error that says why it failed

# What each role's host is given of the key set (see scaler_jupyter.security).
_SCHEDULER_KEYS = (SCHEDULER + SECRET_SUFFIX, CLIENT + PUBLIC_SUFFIX)
_WORKER_KEYS = (SCHEDULER + PUBLIC_SUFFIX, CLIENT + SECRET_SUFFIX)

_live: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for cluster in list(_live):
        cluster.close()


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    """One SSH destination, from ``[user@]host[:port]`` (an IPv6 host with a port in brackets: ``[::1]:22``)."""

    host: str
    port: int | None = None
    username: str | None = None

    @classmethod
    def parse(cls, text: str) -> Host:
        username, _, rest = text.rpartition("@")
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            port = tail[1:] if tail.startswith(":") else ""
        elif rest.count(":") == 1:
            host, _, port = rest.partition(":")
        else:
            host, port = rest, ""
        if not host or (port and not port.isdigit()):
            raise ValueError(f"not an SSH host: {text!r} (expected [user@]host[:port])")
        return cls(host, int(port) if port else None, username or None)

    def options(self) -> dict:
        """What the host string sets of asyncssh's connection options."""
        return {k: v for k, v in (("port", self.port), ("username", self.username)) if v is not None}

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port else self.host
        return f"{self.username + '@' if self.username else ''}{host}{f':{self.port}' if self.port else ''}"


@dataclasses.dataclass(frozen=True, slots=True)
class SSHSpec:
    """Where and how to start an SSHCluster, as ``scaler-jupyter start --ssh`` and ``%scaler start --ssh`` say it.

    ``ssh_config`` is an OpenSSH client configuration file (``Host`` blocks with ``User``,
    ``Port``, ``IdentityFile``, ``UserKnownHostsFile``, ...), read besides ``~/.ssh/config``."""

    hosts: tuple[str, ...]
    python: str | None = None
    ssh_config: str | None = None

    def arguments(self) -> list[str]:
        """The same, as command-line arguments (``supervise`` takes them)."""
        return ["--ssh", ",".join(self.hosts), *(("--python", self.python) if self.python else ()),
                *(("--ssh-config", self.ssh_config) if self.ssh_config else ())]

    def cluster(self, workers_per_host: int, **kwargs) -> SSHCluster:
        """Start the cluster (``kwargs`` go to :class:`SSHCluster`)."""
        options = {"config": [self.ssh_config]} if self.ssh_config else None
        return SSHCluster(list(self.hosts), workers_per_host, python=self.python, ssh_options=options, **kwargs)


@dataclasses.dataclass(eq=False)
class RemoteProcess:
    """One engine process on a host, under its tether, and the SSH channel that ties it to this process."""

    host: Host
    role: str  # "scheduler" or "worker"
    name: str
    channel: object  # asyncssh.SSHClientProcess
    slot: int = 0  # for a worker: the index of its entry in the hosts list
    pid: int = 0
    tether_pid: int = 0
    keys: str | None = None  # the key directory the tether wrote on the host
    ready: dict | None = None
    log: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=_LOG_TAIL))
    tasks: list = dataclasses.field(default_factory=list)

    @property
    def exited(self) -> bool:
        return self.channel.exit_status is not None or self.channel.is_closing()

    def describe(self) -> dict:
        return {"host": str(self.host), "role": self.role, "name": self.name, "pid": self.pid,
                "tether_pid": self.tether_pid, "keys": self.keys}

    def why(self) -> str:
        """Its exit and the last lines it wrote, for an error message."""
        status = self.channel.exit_status
        tail = " | ".join(line for line in self.log if line.strip())[-1500:]
        return f"exit status {status}" + (f": {tail}" if tail else "")


class _Loop:
    """An asyncio loop in a daemon thread; :meth:`run` runs a coroutine there and waits for it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float | None = None):
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        if not self.thread.is_alive():
            self.loop.close()


class SSHCluster:
    """A scheduler on ``hosts[0]`` and ``workers_per_host`` workers on each later host, over SSH.

    ``hosts`` are ``[user@]host[:port]`` strings; with one host, it runs the workers too.
    ``python`` is the interpreter on the hosts where ``scaler_jupyter`` is installed
    (default: this one's path, ``sys.executable``). ``ssh_options`` go to
    ``asyncssh.connect`` (``port``, ``username``, ``client_keys``, ``known_hosts``, ...).
    With ``secure`` (the default) every process gets CurveZMQ keys made for this
    cluster (``keys`` is their local directory, for ``Client(address, keys=...)``);
    ``secure=False`` is an explicit choice, and logs a warning. A host that cannot be
    reached, refuses authentication or lacks ``scaler_jupyter`` raises
    :class:`~scaler_jupyter.errors.SSHError` naming it, within ``connect_timeout`` for
    the connection (``timeout`` for the processes to start), and what was started
    elsewhere is stopped. Workers exit ``death_timeout`` seconds after losing the
    scheduler, and every remote process ends within that time once this process is gone.

    ``control_address`` is for a detached cluster's supervisor (``scaler-jupyter start
    --ssh``), which takes requests there itself; otherwise the cluster takes ``stop`` and
    ``scale`` requests from other processes (``scaler-jupyter stop``, the JupyterLab
    sidebar) on a socket of its own on 127.0.0.1.
    """

    def __init__(self, hosts: Sequence[str], workers_per_host: int = 1, processors_per_worker: int = 1,
                 tags: Sequence[str] = (), python: str | None = None, ssh_options: dict | None = None,
                 secure: bool = True, scheduler_port: int = 0, connect_timeout: float = 15.0, *,
                 death_timeout: float = 10.0, timeout: float = 30.0, log_level: str | int | None = None,
                 scheduler_args: Sequence[str] = (), worker_args: Sequence[str] = (),
                 cluster_id: str | None = None, control_address: str | None = None) -> None:
        try:
            import asyncssh  # noqa: F401  (the `ssh` extra: say so now, not from the loop's thread)
        except ImportError:
            raise ImportError("SSHCluster needs asyncssh: pip install 'scaler_jupyter[ssh]'") from None

        if isinstance(hosts, str):
            hosts = [h for h in hosts.split(",") if h]
        if not hosts:
            raise ValueError("SSHCluster needs at least one host")
        if workers_per_host < 0:
            raise ValueError(f"workers_per_host must be 0 or more, not {workers_per_host}")
        self.hosts = [Host.parse(h) for h in hosts]
        self.worker_hosts = self.hosts[1:] or self.hosts[:1]
        self.id: str = cluster_id or clusters.new_id()
        self.started = time.time()
        self.processors_per_worker = processors_per_worker
        self.tags = tuple(tags)
        self.python = python or sys.executable
        self.ssh_options = {"keepalive_interval": 5, "keepalive_count_max": 3, **(ssh_options or {})}
        self.scheduler_port = scheduler_port
        self.connect_timeout = connect_timeout
        self.death_timeout = death_timeout
        self.timeout = timeout
        self.dashboard_address: str | None = None
        self._level = logging_config.level(log_level, default="WARNING")
        self._scheduler_args = tuple(scheduler_args)
        self._worker_args = tuple(worker_args)
        self._control_address = control_address
        self._detached = control_address is not None
        self._connections: dict[Host, list] = {}
        self._scheduler: RemoteProcess | None = None
        self._workers: list[RemoteProcess] = []
        self._names = itertools.count()
        self._closed = False
        self._close_lock = threading.Lock()
        self.address: str = ""
        self.monitor_address: str = ""
        self.keys: str | None = None
        if secure:
            self.keys = str(ClusterKeys.create(clusters.clusters_dir() / f"{self.id}.keys").directory)
        else:
            logger.warning("SSHCluster %s runs without keys (secure=False): anyone who can reach its scheduler "
                           "can run code on its workers", self.id)
        self._loop = _Loop(f"ssh-cluster-{self.id}")
        _live.add(self)
        try:
            self._loop.run(self._start(workers_per_host))
            self._wait_for(lambda count: count == len(self._workers), f"all {len(self._workers)}")
            if self._control_address is None:
                self._loop.run(self._open_control())
            self._write_record()
        except BaseException:
            self.close()
            raise

    # -- the SSH side (coroutines on the loop's thread) ------------------------

    async def _connection(self, host: Host):
        """An SSH connection to ``host`` with room for one more process: an open one, or a new one."""
        import asyncssh

        pool = self._connections.setdefault(host, [])
        for entry in pool:
            if entry[1] < SESSIONS_PER_CONNECTION:
                entry[1] += 1
                return entry[0]
        options = {**self.ssh_options, **host.options()}
        options.setdefault("connect_timeout", self.connect_timeout)
        try:
            connection = await asyncio.wait_for(asyncssh.connect(host.host, **options), self.connect_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise SSHError(str(host), f"no SSH answer within {self.connect_timeout:g}s (is the host up, and "
                                      "reachable from here?)") from None
        except asyncssh.PermissionDenied as exc:
            raise SSHError(str(host), f"authentication refused ({exc.reason}): check the username and "
                                      "client_keys in ssh_options, and the host's authorized_keys") from None
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SSHError(str(host), f"its host key is not trusted ({exc.reason}): add it to known_hosts, or "
                                      "pass known_hosts in ssh_options") from None
        except asyncssh.Error as exc:
            raise SSHError(str(host), f"SSH failed: {exc.reason}") from None
        except ConnectionRefusedError:
            raise SSHError(str(host), f"connection refused: no SSH server listens on port {options.get('port', 22)}"
                           ) from None
        except OSError as exc:
            raise SSHError(str(host), f"cannot connect: {exc.strerror or exc}") from None
        pool.append([connection, 1])
        return connection

    def _keys_for(self, names: tuple[str, ...]) -> dict[str, str] | None:
        return None if self.keys is None else {name: (Path(self.keys) / name).read_text() for name in names}

    async def _launch(self, host: Host, role: str, name: str, args: Callable[[], list[str]], keys: dict | None,
                      ready: bool = False, slot: int = 0, after: asyncio.Future | None = None) -> RemoteProcess:
        """Start ``scaler-jupyter ARGS()`` on ``host`` under a tether; return once it runs (and, with
        ``ready``, once it listens). With ``after``, the tether (a Python start) starts at once, and is
        told what to run once ``after`` is done: a worker's tether starts while its scheduler does."""
        import asyncssh

        connection = await self._connection(host)
        command = f"{shlex.quote(self.python)} -m scaler_jupyter.ssh_tether"
        try:
            channel = await connection.create_process(command)
        except (asyncssh.Error, OSError) as exc:
            raise SSHError(str(host), f"cannot start {command}: {exc}") from None
        process = RemoteProcess(host, role, name, channel, slot=slot)
        process.tasks.append(asyncio.ensure_future(self._relay_log(process)))
        try:
            if after is not None:
                await after
        except BaseException:  # its scheduler did not start: the tether ends with its channel
            channel.close()
            raise
        channel.stdin.write(json.dumps({"args": args(), "keys": keys, "ready": ready,
                                        "liveness": self.death_timeout}) + "\n")
        started = await self._read(process, "started")
        process.pid, process.tether_pid, process.keys = started["pid"], started["tether_pid"], started["keys"]
        process.tasks.append(asyncio.ensure_future(self._heartbeat(process)))
        if ready:
            process.ready = await self._read(process, "ready")
        return process

    async def _read(self, process: RemoteProcess, what: str) -> dict:
        """The tether's next message, which must be ``what``; a tether that ends first fails with its reason."""
        line = await process.channel.stdout.readline()
        if line:
            return json.loads(line)[what]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.channel.wait_closed(), 5.0)
            await asyncio.wait_for(process.tasks[0], 5.0)  # every line of its stderr is in
        missing = any("No module named" in line for line in process.log)
        hint = (f": is scaler_jupyter installed for {self.python} there? (pass python= to use another)"
                if missing or process.channel.exit_status == 127 else "")
        raise SSHError(str(process.host), f"the {process.name} exited at start ({process.why()}){hint}")

    async def _relay_log(self, process: RemoteProcess) -> None:
        """Pass what the remote process logs (at ``log_level``) to this process's log, and keep its tail."""
        async for line in process.channel.stderr:
            line = line.rstrip()
            if line:
                process.log.append(line)
                logger.warning("[%s %s] %s", process.host, process.name, line)

    @staticmethod
    async def _heartbeat(process: RemoteProcess) -> None:
        while not process.channel.is_closing():
            process.channel.stdin.write("\n")
            await asyncio.sleep(HEARTBEAT)

    async def _start(self, workers_per_host: int) -> None:
        # Every host's connection at once: a host that fails is known within connect_timeout.
        distinct = list(dict.fromkeys(self.hosts))
        opened = await asyncio.gather(*(self._connection(h) for h in distinct), return_exceptions=True)
        for host, result in zip(distinct, opened, strict=True):
            if isinstance(result, BaseException):
                raise result
            self._connections[host][0][1] -= 1  # opened, not yet used
        scheduler_host = self.hosts[0]
        peer = self._connections[scheduler_host][0][0].get_extra_info("peername")[0]
        bind = f"tcp://{f'[{peer}]' if ':' in peer else peer}:{self.scheduler_port}"
        # The workers' tethers start with the scheduler's; they learn its address once it listens.
        listening = asyncio.get_running_loop().create_future()
        workers = asyncio.ensure_future(self._launch_workers(
            self._plan(workers_per_host * len(self.worker_hosts)), listening))
        try:
            self._scheduler = await asyncio.wait_for(self._launch(
                scheduler_host, "scheduler", "scheduler",
                lambda: ["scheduler", bind, "--protected", "--log-level", self._level, *self._scheduler_args],
                self._keys_for(_SCHEDULER_KEYS), ready=True), self.timeout)
        except BaseException:
            workers.cancel()
            await asyncio.gather(workers, return_exceptions=True)
            raise
        self.address = self._scheduler.ready["address"]
        self.monitor_address = self._scheduler.ready["monitor_address"]
        listening.set_result(None)
        await workers

    def _plan(self, n: int) -> list[int]:
        """The worker-host slots of ``n`` more workers: each to the least loaded slot, the first on ties."""
        plan = []
        load = collections.Counter(w.slot for w in self._workers)
        for _ in range(n):
            slot = min(range(len(self.worker_hosts)), key=lambda s: (load[s], s))
            load[slot] += 1
            plan.append(slot)
        return plan

    async def _scale(self, n: int) -> None:
        removed = []
        while len(self._workers) > n:
            removed.append(self._workers.pop())
        await asyncio.gather(*(self._stop_process(p) for p in removed))
        await self._launch_workers(self._plan(n - len(self._workers)))

    async def _launch_workers(self, plan: list[int], after: asyncio.Future | None = None) -> None:
        """Start a worker in each slot of ``plan``, all at once; raise the first failure, once every one
        has started or failed (those started are the cluster's, and are stopped with it)."""
        tasks = [asyncio.ensure_future(self._launch_worker(slot, after)) for slot in plan]
        try:
            _, late = await asyncio.wait(tasks, timeout=self.timeout) if tasks else (set(), set())
        finally:  # also when cancelled: no launch outlives this call, and every outcome is collected
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.extend(p for p in outcomes if isinstance(p, RemoteProcess))
        if late:
            raise TimeoutError(f"{len(late)} workers did not start within {self.timeout:g}s")
        failed = [p for p in outcomes if isinstance(p, BaseException)]
        if failed:
            raise failed[0]

    async def _launch_worker(self, slot: int, after: asyncio.Future | None = None) -> RemoteProcess:
        host = self.worker_hosts[slot]
        name = f"{host.host}-{next(self._names)}"

        def args() -> list[str]:  # the scheduler's address is known by then
            return ["worker", self.address, "--processors", str(self.processors_per_worker), "--name", name,
                    "--death-timeout", str(self.death_timeout), "--log-level", self._level,
                    *(("--tags", ",".join(self.tags)) if self.tags else ()), *self._worker_args]

        return await self._launch(host, "worker", name, args, self._keys_for(_WORKER_KEYS), slot=slot, after=after)

    async def _stop_process(self, process: RemoteProcess) -> None:
        """Close its channel (its tether then stops it) and wait for the tether to end."""
        channel = process.channel
        with contextlib.suppress(Exception):
            channel.stdin.write_eof()
        try:
            await asyncio.wait_for(channel.wait_closed(), STOP_WAIT)
        except asyncio.TimeoutError:
            logger.warning("%s on %s did not end within %gs of its channel closing", process.name, process.host,
                           STOP_WAIT)
            channel.close()
        for task in process.tasks:
            task.cancel()

    async def _stop_all(self) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(self._stop_process(p) for p in workers))
        if self._scheduler is not None:
            await self._stop_process(self._scheduler)
        for pool in self._connections.values():
            for connection, _ in pool:
                connection.close()
        for pool in self._connections.values():
            for connection, _ in pool:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.wait_closed(), 5.0)
        self._connections.clear()

    async def _open_control(self) -> None:
        """Take ``{"stop": true}`` and ``{"scale": N}`` from other processes (see :mod:`scaler_jupyter.clusters`)."""
        self._control_context = zmq.asyncio.Context()
        socket = self._control_context.socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        port = socket.bind_to_random_port("tcp://127.0.0.1")
        self._control_address = f"tcp://127.0.0.1:{port}"
        self._control = socket
        self._control_task = asyncio.ensure_future(self._serve_control(socket))

    async def _serve_control(self, socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            request = await socket.recv_json()
            if request.get("stop"):
                await self._stop_all()
                await socket.send_json(self.record())
                threading.Thread(target=self.close, name=f"close-{self.id}", daemon=True).start()
                return
            try:
                await loop.run_in_executor(None, self.scale, int(request["scale"]))
                await socket.send_json(self.record())
            except (KeyError, TypeError, ValueError, TimeoutError, RuntimeError, SSHError) as exc:
                await socket.send_json({"error": str(exc)})

    # -- the public, synchronous side ------------------------------------------

    @property
    def n_workers(self) -> int:
        return len(self._workers)

    @property
    def processes(self) -> list[dict]:
        """Host, role, name, pid, its tether's pid and its key directory there, of each remote process,
        the scheduler first."""
        return [p.describe() for p in [*filter(None, [self._scheduler]), *self._workers]]

    def running(self) -> bool:
        """True while the scheduler's process runs."""
        return self._scheduler is not None and not self._scheduler.exited

    def scale(self, n: int, wait: bool = True) -> None:
        """Run ``n`` workers across the worker hosts (the fewest-loaded host first; the newest stop first).

        With ``wait``, return once the scheduler counts exactly ``n`` workers."""
        if n < 0:
            raise ValueError(f"a cluster runs 0 or more workers, not {n}")
        self._loop.run(self._scale(n))
        self._write_record()
        if wait:
            self._wait_for(lambda count: count == n, f"exactly {n}")

    def wait_for_workers(self, n: int = 1, timeout: float | None = None) -> None:
        """Block until at least ``n`` workers are connected to the scheduler, as ``Client.wait_for_workers``."""
        self._wait_for(lambda count: count >= n, f"at least {n}", timeout)

    def _wait_for(self, enough, what: str, timeout: float | None = None) -> None:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with monitor.subscribe(self.address, self.keys, timeout, monitor_address=self.monitor_address) as feed:
            while True:
                snapshot = feed.latest(min(0.1, max(0.0, deadline - time.monotonic())))
                if snapshot is not None and enough(len(snapshot["workers"])):
                    return
                dead = [p for p in [self._scheduler, *self._workers] if p.exited]
                if dead:
                    raise SSHError(str(dead[0].host), f"the {dead[0].name} exited ({dead[0].why()})")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{what} workers did not join {self.address} within {timeout:g}s")

    def get_client(self, **kwargs):
        """A :class:`~scaler_jupyter.Client` of this cluster, with its keys."""
        from scaler_jupyter.client import Client

        return Client(self.address, keys=self.keys, **{"timeout": self.timeout, **kwargs})

    def record(self) -> dict:
        """What its cluster file says (see :mod:`scaler_jupyter.clusters`); ``pids`` is empty: none run here."""
        return {"id": self.id, "kind": "ssh", "hosts": [str(h) for h in self.hosts], "address": self.address,
                "monitor_address": self.monitor_address, "dashboard_address": None, "dashboard_pid": None,
                "pids": [], "processes": self.processes, "owner_pid": os.getpid(), "n_workers": self.n_workers,
                "tags": list(self.tags), "started": self.started, "keys": self.keys,
                "control_address": self._control_address, "detached": self._detached}

    def _write_record(self) -> None:
        try:
            clusters.write(self.record())
        except OSError as exc:
            logger.warning("could not write the cluster file of %s: %s", self.id, exc)

    def close(self) -> None:
        """Stop every remote process (workers, then the scheduler) and remove the key files, here and there."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _live.discard(self)
        try:
            self._loop.run(self._close_async(), STOP_WAIT * 2 + 10)
        except Exception as exc:  # the processes still end: their channels close with this process
            logger.warning("closing SSHCluster %s: %s", self.id, exc)
        self._loop.close()
        with contextlib.suppress(OSError):
            clusters.remove(self.id)

    async def _close_async(self) -> None:
        control = getattr(self, "_control_task", None)
        if control is not None and control is not asyncio.current_task():
            control.cancel()
            self._control.close()
            self._control_context.term()
        await self._stop_all()

    def __enter__(self) -> SSHCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        hosts = ",".join(str(h) for h in self.hosts)
        return f"<SSHCluster {self.address or '?'} hosts={hosts} workers={len(self._workers)}>"
