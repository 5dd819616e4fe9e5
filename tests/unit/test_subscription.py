"""``scaler_jupyter.monitor.Subscription`` against an in-process monitor feed: loopback sockets, no processes."""

from __future__ import annotations

import selectors
from collections.abc import Iterator

import pytest
import zmq

from scaler_jupyter.monitor import Subscription
from scaler_jupyter.scheduler.server import MonitorFeed
from scaler_jupyter.scheduler.state import SchedulerState

WAIT = 10.0


@pytest.fixture
def feed() -> Iterator[MonitorFeed]:
    context = zmq.Context()
    published = MonitorFeed(context, "tcp://127.0.0.1:0", interval=0.0)  # one due at each publish() below
    yield published
    published.close()
    context.term()


def subscribed(feed: MonitorFeed, first: dict | None = None) -> Subscription:
    """A subscription to ``feed``, once the feed has heard it."""
    subscription = Subscription("tcp://scheduler:1", feed.address, None, WAIT, first)
    assert feed.socket.poll(WAIT * 1000), "the feed did not hear the subscription"
    feed.read_subscriptions()
    return subscription


def publish(feed: MonitorFeed, uptime: float) -> None:
    """One snapshot, told apart by its uptime (so give increasing ones)."""
    feed.publish_if_due(SchedulerState(now=0.0), now=uptime)


def test_latest_returns_the_newest_and_drops_older_ones(feed):
    with subscribed(feed) as subscription:
        assert subscription.latest() is None  # nothing waits, and timeout 0 does not wait
        for uptime in (1.0, 2.0, 3.0):
            publish(feed, uptime)
        newest = subscription.latest(WAIT)
        while newest["scheduler"]["uptime"] != 3.0:  # the three may arrive over more than one read
            newest = subscription.latest(WAIT)
        assert subscription.latest() is None  # each snapshot is returned once


def test_the_first_snapshot_is_at_hand_at_once(feed):
    first = {"version": 1, "scheduler": {"uptime": 0.5}}
    with subscribed(feed, first) as subscription:
        assert subscription.latest() == first
        assert subscription.latest() is None
        publish(feed, 7.0)
        assert subscription.latest(WAIT)["scheduler"]["uptime"] == 7.0


def test_iteration_yields_each_snapshot_as_it_arrives(feed):
    with subscribed(feed) as subscription:
        publish(feed, 4.0)
        assert next(iter(subscription))["scheduler"]["uptime"] == 4.0


def test_iteration_ends_in_a_timeout_when_the_feed_falls_silent(feed):
    subscription = Subscription("tcp://scheduler:1", feed.address, None, 0.05)
    with subscription, pytest.raises(TimeoutError, match="still running"):
        next(iter(subscription))


def test_an_event_loop_wakes_on_the_descriptor(feed):
    with subscribed(feed) as subscription, selectors.DefaultSelector() as selector:
        assert subscription.latest() is None  # drained: the descriptor's edge is re-armed
        selector.register(subscription.fileno(), selectors.EVENT_READ)
        publish(feed, 5.0)
        snapshot = None
        while snapshot is None:  # the descriptor may also wake for the socket's own events
            assert selector.select(WAIT), "the descriptor did not wake for a snapshot"
            snapshot = subscription.latest()
        assert snapshot["scheduler"]["uptime"] == 5.0


def test_a_closed_subscription_says_so(feed):
    subscription = subscribed(feed)
    subscription.close()
    subscription.close()
    with pytest.raises(ValueError, match="closed"):
        subscription.latest()


def test_a_malformed_address_is_a_value_error():
    with pytest.raises(ValueError, match="tcp://host:port"):
        Subscription("x", "not an address", None, WAIT)
