"""Which peer is behind which connection, when the monitor's events arrive late or early."""

from __future__ import annotations

from scaler_jupyter.scheduler.connections import ConnectionTracker

A, B = b"peer-a", b"peer-b"


def test_a_dropped_connection_names_its_peer_once():
    tracker = ConnectionTracker()
    assert tracker.on_message(A, 7) is None
    assert tracker.on_message(A, 7) is None
    assert tracker.on_disconnected(7) == A
    assert tracker.on_disconnected(7) is None


def test_a_new_peer_on_a_reused_fd_before_the_old_connection_s_event():
    """The new peer's first messages arrive before the old connection's DISCONNECTED: the old peer is gone,
    and the late event must not end the new one."""
    tracker = ConnectionTracker()
    tracker.on_message(A, 7)
    assert tracker.on_message(B, 7) == A
    assert tracker.on_disconnected(7) is None  # A's event, late
    assert tracker.on_disconnected(7) == B  # B's own


def test_late_messages_of_a_closed_connection_map_nothing():
    tracker = ConnectionTracker()
    tracker.on_message(A, 7)
    assert tracker.on_disconnected(7) == A
    assert tracker.on_message(A, 7) is None  # its last message, read after the event
    assert tracker.on_message(B, 7) is None  # then a new peer on the same fd: nothing stale to report
    assert tracker.on_disconnected(7) == B


def test_a_peer_that_reconnects_on_another_fd_is_not_ended_by_its_old_connection_s_event():
    tracker = ConnectionTracker()
    tracker.on_message(A, 7)
    assert tracker.on_message(A, 9) is None
    assert tracker.on_disconnected(7) is None
    assert tracker.on_disconnected(9) == A


def test_late_messages_of_a_replaced_connection_do_not_end_its_successor():
    """The router may still hold the old connection's last messages, reported with the reused fd."""
    tracker = ConnectionTracker()
    tracker.on_message(A, 7)
    assert tracker.on_message(B, 7) == A
    assert tracker.on_message(A, 7) is None  # A's Bye, read late
    assert tracker.on_message(B, 7) is None
    assert tracker.on_disconnected(7) is None  # A's event
    assert tracker.on_disconnected(7) == B
