"""The client side: the Executor, its futures, and the connection to the scheduler."""

from scaler_jupyter.client.client import Client
from scaler_jupyter.client.future import Future

__all__ = ["Client", "Future"]
