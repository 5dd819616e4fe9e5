"""scaler_jupyter: from one core to many machines, from a notebook."""

from scaler_jupyter.client import Client, Future
from scaler_jupyter.cluster import LocalCluster
from scaler_jupyter.protocol.serialization import ObjectRef
from scaler_jupyter.ssh_cluster import SSHCluster

__all__ = ["Client", "Future", "LocalCluster", "ObjectRef", "SSHCluster", "current_client", "progress"]
__version__ = "0.1.0"


def current_client() -> Client:
    """The notebook kernel's client, set by ``%scaler start`` or ``%scaler connect``."""
    from scaler_jupyter.jupyter.session import current_client as current

    return current()


def progress(futures_or_iterator, total: int | None = None):
    """A progress bar over futures or an iterator: an ipywidgets bar in a notebook, a text bar elsewhere.

    See :func:`scaler_jupyter.jupyter.progress.progress`.
    """
    from scaler_jupyter.jupyter.progress import progress as bar

    return bar(futures_or_iterator, total)


def load_ipython_extension(ipython) -> None:
    """``%load_ext scaler_jupyter``: the magics and the rich displays."""
    from scaler_jupyter.jupyter import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext scaler_jupyter``."""
    from scaler_jupyter.jupyter import unload_ipython_extension as unload

    unload(ipython)
