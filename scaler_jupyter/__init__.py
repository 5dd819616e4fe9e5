"""scaler_jupyter: from one core to many machines, from a notebook."""

from scaler_jupyter.client import Client, Future
from scaler_jupyter.cluster import LocalCluster
from scaler_jupyter.protocol.serialization import ObjectRef

__all__ = ["Client", "Future", "LocalCluster", "ObjectRef"]
__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """``%load_ext scaler_jupyter``: the magics and the rich displays."""
    from scaler_jupyter.jupyter import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext scaler_jupyter``."""
    from scaler_jupyter.jupyter import unload_ipython_extension as unload

    unload(ipython)
