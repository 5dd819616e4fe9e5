"""How many tasks to hold ready per processor: the one rule the scheduler and a worker's agent share.

A processor that finishes a task should find the next one beside it, so the round trip to
the hop above (the agent for a processor, the scheduler for a worker) never idles it; but
every task held ahead is one that can no longer go to an idle processor elsewhere, and at
the end of a batch that is time lost. So a hop holds about ``queue_seconds`` of work per
processor, counted in tasks by the measured task time, clamped to ``[minimum, maximum]``.

Task times are smoothed by an exponential moving average (weight ``WEIGHT`` on the newest
batch), so one slow or fast task does not swing the depth and a drifting workload is followed.
The scheduler holds ``queue_seconds`` of 50 ms and at least two tasks per processor (one
running, one behind it); an agent hands each processor 5 ms of work and at least one task.
"""

from __future__ import annotations

import math

WEIGHT = 0.3  # of the newest batch's mean task time in the moving average
_SHORTEST = 1e-6  # seconds: a no-op task still costs this much, so the depth stays finite


def learn(mean: float | None, seconds: float, queue_seconds: float, minimum: int, maximum: int) -> tuple[float, int]:
    """Fold a batch's mean task time ``seconds`` into ``mean`` (None: nothing measured yet).

    Return the new mean and the depth it gives: tasks per processor to hold.
    """
    mean = seconds if mean is None else (1 - WEIGHT) * mean + WEIGHT * seconds
    return mean, min(maximum, max(minimum, math.ceil(queue_seconds / max(mean, _SHORTEST))))
