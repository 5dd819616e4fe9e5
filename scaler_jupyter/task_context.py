"""What the current process is running, when it is a worker's processor.

The agent and processor set these; a ``Client()`` created inside a task reads them
to find its scheduler (and the keys it requires) and to tell it whose children its
tasks are.
"""

from __future__ import annotations

import os
from collections.abc import Callable

SCHEDULER_ENV = "SCALER_JUPYTER_SCHEDULER"
KEYS_ENV = "SCALER_JUPYTER_KEYS"

current_task_id: int | None = None

# Set by the processor: send ``text`` on a named stream to the running task's client, after what the task
# printed so far. Streams are ``stdout``, ``stderr``, or one the client knows (``%%scaler``: ``display``).
emit: Callable[[str, str], None] | None = None


def scheduler_address() -> str | None:
    """The address of the scheduler this process works for, or None outside a worker."""
    return os.environ.get(SCHEDULER_ENV)


def keys_directory() -> str | None:
    """The keys directory of the scheduler this process works for, or None (outside a worker, or no keys)."""
    return os.environ.get(KEYS_ENV)
