"""Errors raised by scaler_jupyter, each saying what went wrong and what to do."""

from __future__ import annotations


class ScalerJupyterError(Exception):
    """Base class of every error this package raises itself."""


class WorkerDiedError(ScalerJupyterError):
    """The worker running a task died and the client asked not to re-run tasks (``store_tasks=False``)."""


class TaskCrashedError(ScalerJupyterError):
    """A task killed the processor running it (segfault, ``os._exit``, out of memory) on each of its runs;
    the scheduler's ``--max-retries`` sets how many runs it gets."""


class NoWorkerError(ScalerJupyterError):
    """The scheduler cannot take the task: too many tasks wait, or no worker can ever run it."""


class SerializationError(ScalerJupyterError, TypeError):
    """A function, argument or result could not be serialized or deserialized."""


class ProtocolError(ScalerJupyterError):
    """A peer sent a message this version cannot understand, or speaks another protocol version."""


class ConnectionLostError(ScalerJupyterError):
    """The client lost its scheduler; pending futures and later calls fail with this error, which says why.
    ``Client.reconnect()`` joins the scheduler again."""


class KeysError(ScalerJupyterError, OSError):
    """A keys directory is missing, incomplete or unreadable, or writing keys would replace existing ones."""


class AuthenticationError(ScalerJupyterError, ConnectionError):
    """The scheduler refused this peer's security handshake: its keys are not the cluster's, or it has none."""


class ShutdownRefusedError(ScalerJupyterError, PermissionError):
    """The scheduler refused to shut down: it was started with ``--protected``."""


class RemoteError(ScalerJupyterError):
    """A task raised an exception that could not be sent back as itself; its type and text are kept."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class GraphError(ScalerJupyterError, ValueError):
    """A task graph cannot run: it has a cycle, or asks for a key it does not define. Nothing of it ran."""


class DeletedObjectError(ScalerJupyterError, ValueError):
    """A task was given a reference to an object its client deleted with ``delete_object``; nothing was sent."""


class SegmentLostError(ScalerJupyterError, OSError):
    """A payload part in shared memory is gone: the process that held it died (or it is on another host)."""


class NoWorkerWarning(UserWarning):
    """Tasks wait for tags no connected worker offers, or for any worker when none is connected."""


class ClusterError(ScalerJupyterError):
    """No live cluster has the given id, or a recorded cluster cannot do what was asked (e.g. scale one that
    another process owns)."""


class SSHError(ClusterError):
    """An :class:`~scaler_jupyter.SSHCluster` host could not be reached, refused authentication, or could not
    start its process; ``host`` names it, and the message says why."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason
