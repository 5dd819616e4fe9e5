"""The polling budget of a loop: it grows while messages come quickly and vanishes when they do not."""

from __future__ import annotations

import time

from scaler_jupyter.protocol import busy_poll
from scaler_jupyter.protocol.busy_poll import BusyPoll


class Poll:
    """A loop's ``poll``: answers ``[event]`` once ``ready`` says so; a blocking call waits ``block_s`` first."""

    def __init__(self, ready=lambda calls: False, block_s: float = 0.0, answer_blocking: bool = True) -> None:
        self.calls: list[int | None] = []
        self._ready, self._block_s, self._answer_blocking = ready, block_s, answer_blocking

    def __call__(self, timeout_ms: int | None) -> list:
        self.calls.append(timeout_ms)
        if timeout_ms != 0:
            time.sleep(self._block_s)
            return [(3, 1)] if self._answer_blocking else []
        return [(3, 1)] if self._ready(len(self.calls)) else []


def test_a_new_loop_blocks_at_once():
    poll = Poll()
    assert BusyPoll().wait(poll, 100) == [(3, 1)]
    assert poll.calls == [0, 100]  # one look, then the blocking poll


def test_waiting_input_is_returned_without_blocking():
    poll = Poll(ready=lambda calls: True)
    assert BusyPoll().wait(poll, 100) == [(3, 1)] and poll.calls == [0]


def test_a_zero_timeout_never_blocks_nor_polls_twice():
    poll = Poll()
    assert BusyPoll().wait(poll, 0) == [] and poll.calls == [0]


def test_quick_answers_grow_the_budget_to_its_limit():
    waiter = BusyPoll()
    budgets = []
    for _ in range(6):
        waiter.wait(Poll(), None)  # answered at once by the blocking poll
        budgets.append(waiter.budget)
    assert budgets[0] == busy_poll._GROW_START
    assert budgets == sorted(budgets) and budgets[-1] == busy_poll._MAX


def test_an_answer_within_the_budget_comes_from_polling_and_keeps_the_budget():
    waiter = BusyPoll()
    waiter.budget = busy_poll._MAX
    poll = Poll(ready=lambda calls: calls >= 3)
    assert waiter.wait(poll, 1000) == [(3, 1)]
    assert poll.calls == [0, 0, 0]  # never blocked
    assert waiter.budget == busy_poll._MAX


def test_long_waits_and_timeouts_shrink_the_budget_to_nothing():
    waiter = BusyPoll()
    waiter.budget = busy_poll._MAX
    budgets = []
    for _ in range(5):
        waiter.wait(Poll(answer_blocking=False), 1)  # a tick: nothing came
        budgets.append(waiter.budget)
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] == 0.0
    waiter.budget = busy_poll._MAX
    waiter.wait(Poll(block_s=2 * busy_poll._SOON), None)  # a message, but long after
    assert waiter.budget == busy_poll._MAX / 2


def test_the_time_spent_polling_counts_against_the_timeout():
    waiter = BusyPoll()
    waiter.budget = busy_poll._MAX
    poll = Poll(answer_blocking=False)
    waiter.wait(poll, 10)
    assert poll.calls[-1] is not None and poll.calls[-1] <= 10
    assert all(call == 0 for call in poll.calls[:-1]) and len(poll.calls) >= 2
