"""Receiving a message, the same everywhere: decode it, drop it if malformed, hand it to its handler."""

from __future__ import annotations

import logging

from scaler_jupyter.protocol import Cancel, deliver, encode


def test_a_message_reaches_its_handler():
    received = []
    deliver(encode(Cancel([1, 2])), received.append, "a peer")
    assert received == [Cancel([1, 2])]


def test_a_malformed_message_is_logged_with_its_source_and_dropped(caplog):
    received = []
    with caplog.at_level(logging.WARNING):
        deliver([b"\xc1 not msgpack"], received.append, "the scheduler")
        deliver([], received.append, "the scheduler")
    assert received == []
    assert caplog.text.count("dropping a malformed message from the scheduler") == 2


def test_a_handler_that_raises_costs_one_message_not_the_caller(caplog):
    def handle(message):
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR):
        deliver(encode(Cancel([1])), handle, b"client-a")
    assert "error handling Cancel from b'client-a'" in caplog.text and "a bug" in caplog.text
