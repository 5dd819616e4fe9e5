"""The rule the scheduler (per worker) and an agent (per processor) share: how many tasks to hold ready."""

from __future__ import annotations

import pytest

from scaler_jupyter import queue_depth


def test_the_first_measure_is_taken_as_it_is():
    assert queue_depth.learn(None, 0.01, 0.05, 2, 256) == (0.01, 5)


def test_later_measures_move_the_mean_by_a_share():
    mean, depth = queue_depth.learn(0.01, 0.02, 0.05, 2, 256)
    assert mean == pytest.approx(0.7 * 0.01 + 0.3 * 0.02)
    assert depth == 4  # 50 ms of 13 ms tasks, rounded up


def test_the_depth_stays_within_its_bounds():
    assert queue_depth.learn(None, 10.0, 0.05, 2, 256)[1] == 2  # long tasks: one running, one behind it
    assert queue_depth.learn(None, 0.0, 0.05, 2, 256)[1] == 256  # no-op tasks: the cap
    assert queue_depth.learn(None, 10.0, 0.005, 1, 128)[1] == 1


def test_one_odd_task_does_not_swing_the_depth():
    mean, depth = None, 0
    for _ in range(20):
        mean, depth = queue_depth.learn(mean, 0.001, 0.05, 2, 256)
    assert depth == 50
    after_odd = queue_depth.learn(mean, 0.01, 0.05, 2, 256)[1]  # one task ten times longer
    assert after_odd < depth  # it moves...
    assert after_odd > queue_depth.learn(None, 0.01, 0.05, 2, 256)[1]  # ...not all the way
