"""The engine's log level and log format, decided in one place.

A process's level comes from, first to last: an explicit setting (``--log-level`` on
every command, ``Client(log_level=)``, ``LocalCluster(log_level=)``), the
``SCALER_JUPYTER_LOG_LEVEL`` environment variable, then the default of the kind of
process: INFO for a command run by hand (it says where it listens and who joins),
WARNING for the processes of a cluster started from Python, so that a script or a
notebook shows only what its user printed and what went wrong.

A configured process exports its level in that variable, so the processes it starts
(a worker's processors, the workers of ``scaler-jupyter cluster``) log alike.
Library code never configures logging in a user's process: a ``Client`` logs through
``logging`` and the application decides where that goes.
"""

from __future__ import annotations

import logging
import os
import sys

LOG_LEVEL_ENV = "SCALER_JUPYTER_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def level(explicit: str | int | None, default: str) -> str:
    """The level name to use: ``explicit`` if given, else the environment's, else ``default``."""
    chosen = explicit if explicit is not None else os.environ.get(LOG_LEVEL_ENV) or default
    if isinstance(chosen, int):
        chosen = logging.getLevelName(chosen)
    name = str(chosen).strip().upper()
    if name not in LEVELS:
        source = "log_level" if explicit is not None else LOG_LEVEL_ENV
        raise ValueError(f"{source}={chosen!r} is not a log level: use one of {', '.join(LEVELS)}")
    return name


def configure(process: str, level_name: str) -> None:
    """Log this engine process's records at ``level_name`` and above to stderr, and pass the level on to its
    children."""
    logging.basicConfig(level=level_name, stream=sys.stderr,
                        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s")
    os.environ[LOG_LEVEL_ENV] = level_name
