"""The client side: the Executor, its futures, and the connection to the scheduler.

Whatever waits on a task is a :class:`TaskSink` (``deliver(outcome)``, ``lose(task_id,
error)``), fed one :class:`Outcome` per result from the client's delivery thread:
the client's futures, its ``map`` results and graph runs are sinks, and so can be
a progress display. ``Client.add_result_listener`` hears of every result received.
"""

from scaler_jupyter.client.client import Client
from scaler_jupyter.client.future import Future
from scaler_jupyter.client.outcome import Outcome, TaskSink, TaskState

__all__ = ["Client", "Future", "Outcome", "TaskSink", "TaskState"]
