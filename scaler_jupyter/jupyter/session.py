"""The kernel's cluster: what ``%scaler start`` / ``connect`` set up, ``current_client()`` returns and ``stop`` ends.

A kernel holds at most one session at a time. Its cluster is one of three kinds:

- *own*: ``%scaler start`` ran a :class:`~scaler_jupyter.LocalCluster` (or, with ``--ssh``, an
  :class:`~scaler_jupyter.SSHCluster`) in this kernel; its processes die with the kernel (and its
  cluster file goes with them);
- *kept*: ``%scaler start --keep`` asked for a detached cluster (see :mod:`scaler_jupyter.clusters`),
  which outlives the kernel until ``%scaler stop`` or ``scaler-jupyter stop ID``;
- *connected*: ``%scaler connect`` joined a cluster started elsewhere; ``%scaler stop`` only
  disconnects from it.

While a session is open, ``Client()`` with no address in this kernel connects to its
cluster instead of starting a private one (:func:`default_cluster`, read by the client).
"""

from __future__ import annotations

import atexit
import dataclasses
import enum

from scaler_jupyter import clusters
from scaler_jupyter.client import Client
from scaler_jupyter.cluster import LocalCluster
from scaler_jupyter.errors import ClusterError
from scaler_jupyter.ssh_cluster import SSHCluster, SSHSpec

NO_CLUSTER = "no cluster: run %scaler start or %scaler connect ADDRESS"


class Kind(enum.Enum):
    OWN = "own"
    KEPT = "kept"
    CONNECTED = "connected"


@dataclasses.dataclass(slots=True)
class Session:
    """The kernel's client and what it knows of the cluster behind it."""

    client: Client
    kind: Kind
    cluster: LocalCluster | SSHCluster | None = None  # for OWN
    cluster_id: str | None = None  # for OWN and KEPT, and CONNECTED to a recorded cluster
    keys: str | None = None

    @property
    def address(self) -> str:
        return self.client.address

    def can_scale(self) -> bool:
        """True if this kernel can change the number of workers (its own cluster, or a detached one)."""
        if self.kind is Kind.OWN:
            return True
        record = self.record()
        return record is not None and record.get("control_address") is not None

    def record(self) -> dict | None:
        """The cluster file's record of the cluster, if it has a live one."""
        if self.cluster is not None:
            return self.cluster.record()
        try:
            return clusters.find(self.cluster_id) if self.cluster_id else clusters.find_by_address(self.address)
        except ClusterError:
            return None


_session: Session | None = None


def current() -> Session | None:
    """The open session, or None."""
    return _session


def current_client() -> Client:
    """The kernel's client, set by ``%scaler start`` or ``%scaler connect``."""
    if _session is None:
        raise RuntimeError(NO_CLUSTER)
    return _session.client


def default_cluster() -> tuple[str, str | None] | None:
    """The address and keys directory ``Client()`` uses when given no address: the session's, if one is open."""
    return None if _session is None else (_session.address, _session.keys)


def _check_free() -> None:
    if _session is not None:
        raise ClusterError(f"this kernel is already connected to {_session.address}: run %scaler stop first")


def start(n_workers: int, tags: tuple[str, ...] = (), keep: bool = False, keys: str | None = None,
          timeout: float = 60.0, ssh: SSHSpec | None = None) -> Session:
    """Start a local cluster for this kernel (detached with ``keep``) and connect to it; with ``ssh``, an
    :class:`~scaler_jupyter.SSHCluster` with ``n_workers`` workers per worker host (and its own keys)."""
    global _session
    _check_free()
    if keep:
        record = clusters.start_detached(n_workers, tags, keys=keys, timeout=timeout, ssh=ssh)
        keys = record["keys"]
        _session = Session(Client(record["address"], timeout=timeout, keys=keys), Kind.KEPT,
                           cluster_id=record["id"], keys=keys)
        return _session
    quiet = ("--log-level", "WARNING")  # the processes' INFO lines would land in whatever cell runs
    if ssh is not None:
        cluster = ssh.cluster(n_workers, tags=tags, timeout=timeout)
        keys = cluster.keys
    else:
        cluster = LocalCluster(n_workers, tags=tags, keys=keys, timeout=timeout, scheduler_args=quiet,
                               worker_args=quiet, dashboard=True)  # watched from Lab tabs and browsers
    try:
        client = Client(cluster.address, timeout=timeout, keys=keys)
    except BaseException:
        cluster.close()
        raise
    _session = Session(client, Kind.OWN, cluster=cluster, cluster_id=cluster.id, keys=keys)
    return _session


def connect(target: str, keys: str | None = None, timeout: float = 5.0) -> Session:
    """Connect to a scheduler by address (``tcp://host:port``) or to a recorded cluster by id."""
    global _session
    _check_free()
    cluster_id = None
    if "://" not in target:
        record = clusters.find(target)
        cluster_id, target, keys = record["id"], record["address"], keys or record["keys"]
    _session = Session(Client(target, timeout=timeout, keys=keys), Kind.CONNECTED, cluster_id=cluster_id, keys=keys)
    return _session


def scale(n_workers: int) -> None:
    """Run ``n_workers`` workers in the session's cluster (its own, or a detached one)."""
    session = _require()
    if session.cluster is not None:
        session.cluster.scale(n_workers)
        return
    record = session.record()
    if record is None or not record.get("control_address"):
        raise ClusterError(f"{session.address} was not started by this kernel nor detached: scale it where it runs")
    clusters.scale(record["id"], n_workers)


def stop() -> str:
    """End the session: stop the cluster this kernel started (own or kept), or disconnect; what was done."""
    global _session
    session = _require()
    _session = None
    session.client.shutdown(wait=False, cancel_futures=True)
    if session.kind is Kind.OWN:
        session.cluster.close()
        return f"stopped cluster {session.cluster_id} ({session.address})"
    if session.kind is Kind.KEPT:
        try:
            clusters.stop(session.cluster_id)
        except ClusterError as exc:  # e.g. stopped meanwhile from a terminal: the session ends all the same
            return f"disconnected from {session.address}: {exc}"
        return f"stopped cluster {session.cluster_id} ({session.address})"
    return (f"disconnected from {session.address}; it keeps running"
            + (f" (`scaler-jupyter stop {session.cluster_id}` stops it)" if session.cluster_id else ""))


def _require() -> Session:
    if _session is None:
        raise RuntimeError(NO_CLUSTER)
    return _session


@atexit.register
def _close() -> None:
    """The kernel exits: its client goes, and its own cluster with it (a kept one stays)."""
    global _session
    session, _session = _session, None
    if session is not None:
        session.client.shutdown(wait=False, cancel_futures=True)
        if session.cluster is not None:
            session.cluster.close()
