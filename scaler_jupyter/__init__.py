"""scaler_jupyter: from one core to many machines, from a notebook."""

from scaler_jupyter.client import Client, Future
from scaler_jupyter.cluster import LocalCluster
from scaler_jupyter.protocol.serialization import ObjectRef

__all__ = ["Client", "Future", "LocalCluster", "ObjectRef"]
__version__ = "0.1.0"
