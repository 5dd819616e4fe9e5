"""Receiving a message: decode it, drop it if malformed, hand it to its handler.

Every process that reads the wire (scheduler, agent, processor, client) does the same
three steps, and they must fail the same way: a malformed message, or a handler that
raises on one, costs that one message, logged with its source, never the process. A
hostile or buggy peer can then at worst lose its own messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from scaler_jupyter.errors import ProtocolError
from scaler_jupyter.protocol.messages import decode

logger = logging.getLogger(__name__)


def deliver(frames: list, handle: Callable[[object], None], source: object) -> None:
    """Decode ``frames`` and call ``handle(message)``; log and drop what cannot be decoded or handled.

    ``source`` names the sender in the log (a peer's identity, "the scheduler", ...).
    """
    try:
        message = decode(frames)
    except ProtocolError as exc:
        logger.warning("dropping a malformed message from %s: %s", source, exc)
        return
    try:
        handle(message)
    except Exception:  # a bug must cost one message, never the process
        logger.exception("error handling %s from %s", type(message).__name__, source)
