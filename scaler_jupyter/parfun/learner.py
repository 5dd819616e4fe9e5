"""The partition-size learner: from each partition's measured cost to the size of the next partition.

Model. A partition of ``n`` items costs ``t(n) = a*n + b`` seconds: ``a`` per item (the
function's work, moving the items) and ``b`` per partition (submitting, scheduling,
returning and combining a result), everything summed, in the caller and in the worker.
It is fitted with scikit-learn as a regression of the time per item, ``t/n = a + b/n``,
weighted by relative error so that small and large partitions count alike, on the
measurements near the size chosen (from ``1/LOCAL_WINDOW`` of it up): costs are linear
only there. In small partitions the "fixed" cost is not yet fixed: a word count's result
holds fewer words, and costs less to return and to combine, than a large partition's; a
fit over every size would take that lower cost for ``b`` and choose partitions too small.
Measurements that miss the fit far more than the others (a partition slowed by other work
on the machine) are left out of it.

Choice. The fixed cost must stay within ``target_share`` of the work: ``b <= share*a*n``,
so ``n* = b / (share*a)``; at least ``MIN_PARTITION_SECONDS`` of work (no task is free,
whatever a fit says); at most ``total / (partitions_per_worker*workers)`` items, so that
every worker gets a few partitions and none idles while another finishes.

States:

- ``exploring``: sizes grow from a start (``1/START_FRACTION`` of a worker's share of
  the input when its length is known, else 1), doubling with each measurement received
  but never beyond ``EXPLORE_AHEAD`` times the largest size measured or the start (a heavy
  function must not get a huge partition before its first result is in), until sizes of twice
  the model's choice have been measured (or the cap); starting from a fraction of the
  input rather than from 1 keeps the measurements where costs are linear: in tiny
  partitions the "fixed" cost is not yet fixed (a result grows with its partition);
- ``learned``: the chosen size, with one partition in ``PROBE_EVERY`` at half or twice
  it, so that the model keeps measurements on both sides of its choice and never freezes
  an early guess;
- drift: when ``drift_window`` successive measurements all miss the model by more than
  ``drift_threshold`` in the same direction (the function or its data changed), what was
  measured before them is forgotten and exploration restarts below the current size.

Everything is a function of the measurements fed in, in order: no clock, no randomness,
so the learner is tested on synthetic traces.
"""

from __future__ import annotations

import collections
import enum
import importlib
import math
import statistics
import sys
import threading
from dataclasses import dataclass

DEFAULT_TARGET_SHARE = 0.05
DEFAULT_PARTITIONS_PER_WORKER = 3
START_FRACTION = 1024  # exploration starts at this fraction of a worker's share of the input
EXPLORE_AHEAD = 8
MIN_POINTS = 4  # measurements at MIN_DISTINCT_SIZES sizes at least, before exploration may end
MIN_DISTINCT_SIZES = 3
MIN_SPAN = 2  # the local fit needs sizes from n to MIN_SPAN*n at least (probes at half and twice the choice give it)
MIN_PARTITION_SECONDS = 0.005  # a partition carries at least this much work: no task costs nothing to run
RECENT_MEASUREMENTS = 64  # measurements kept besides those of the last exploration
PROBE_EVERY = 4
REFIT_EVERY = 4  # once learned, the model is refitted after this many new measurements
LOCAL_WINDOW = 16  # the model is fitted on the measurements of sizes from 1/LOCAL_WINDOW of its choice up
OUTLIER_SPREAD = 4  # a measurement that misses the model by more than this many times the median miss is left out
OUTLIER_FLOOR = 0.25  # ... if it misses by more than this share, too
RESTART_BELOW = 128  # after a drift, exploration restarts this many times below the current size


class LearnerState(enum.Enum):
    EXPLORING = "exploring"
    LEARNED = "learned"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One partition: its size in items and its total cost in seconds."""

    size: int
    seconds: float
    exploring: bool = False


@dataclass(frozen=True, slots=True)
class CostModel:
    """``t(n) = per_item*n + per_partition`` seconds for a partition of ``n`` items."""

    per_item: float
    per_partition: float

    def seconds(self, size: float) -> float:
        return self.per_item * size + self.per_partition

    def size_for_share(self, share: float) -> float:
        """The size at which the fixed cost is ``share`` of the per-item cost."""
        if self.per_partition <= 0:
            return 1.0
        if self.per_item <= 0:
            return math.inf
        return self.per_partition / (share * self.per_item)


class PartitionSizeLearner:
    """Chooses partition sizes for one parallel function, from its measured partitions.

    ``next_size(n_workers, total)`` is the size to request for the next partition (``total``:
    the items of the current call, if known); ``observe(size, seconds)`` feeds one measured
    partition; ``snapshot()`` is the learner's state as plain data.
    """

    def __init__(self, target_share: float = DEFAULT_TARGET_SHARE,
                 partitions_per_worker: int = DEFAULT_PARTITIONS_PER_WORKER,
                 start_size: int | None = None, drift_window: int = 8, drift_threshold: float = 0.5) -> None:
        if not 0 < target_share < 1:
            raise ValueError(f"target_share must be between 0 and 1, not {target_share}")
        self.target_share = target_share
        self.partitions_per_worker = partitions_per_worker
        self.drift_window = drift_window
        self.drift_threshold = drift_threshold
        self.state = LearnerState.EXPLORING
        self.model: CostModel | None = None
        self.drifts = 0
        self._explored: list[Measurement] = []  # the current exploration's measurements, kept until a drift
        self._recent: collections.deque[Measurement] = collections.deque(maxlen=RECENT_MEASUREMENTS)
        self._residuals: collections.deque[float] = collections.deque(maxlen=drift_window)
        self._explore_size: int | None = None if start_size is None else max(1, int(start_size))
        self._largest_measured = 0  # by this exploration: what its end is judged on
        self._explore_floor = self._explore_size or 1  # where exploration started: it may run EXPLORE_AHEAD ahead
        self._requests = 0
        self._since_fit = 0
        self._last_total: int | None = None
        self._last_workers = 1

    # -- the two operations ----------------------------------------------------

    def next_size(self, n_workers: int = 1, total: int | None = None) -> int:
        """The size to request for the next partition."""
        self._requests += 1
        self._last_workers = max(1, n_workers)
        if total is not None:
            self._last_total = total
        cap = self._cap()
        if self.state is LearnerState.EXPLORING:
            if self._since_fit:
                self._refit()
            if self.model is not None and self._measured_enough(cap):
                self.state = LearnerState.LEARNED
            else:
                return max(1, int(min(self._exploring_size(), cap)))
        if self._since_fit >= REFIT_EVERY:
            self._refit()
        chosen = self.chosen_size()
        if self._requests % PROBE_EVERY:
            return chosen
        if (self._requests // PROBE_EVERY) % 2:  # probes on both sides keep the model honest near its choice
            return max(1, chosen // 2)
        return max(1, int(min(2 * chosen, cap)))

    def observe(self, size: int, seconds: float) -> None:
        """Feed one measured partition: ``size`` items that cost ``seconds`` in all."""
        if size <= 0 or not seconds > 0 or not math.isfinite(seconds):
            return
        exploring = self.state is LearnerState.EXPLORING
        measurement = Measurement(int(size), float(seconds), exploring)
        if exploring:
            self._explored.append(measurement)
            current = self._exploring_size()
            if measurement.size <= current:  # not one requested before a drift restarted exploration
                self._largest_measured = max(self._largest_measured, measurement.size)
            self._explore_size = min(2 * current, EXPLORE_AHEAD * max(self._largest_measured, self._explore_floor))
        else:
            self._recent.append(measurement)
            self._check_drift(measurement)
        self._since_fit += 1

    def suggest_start(self, size: int) -> None:
        """Start exploring at ``size`` (``initial_partition_size``), if nothing was measured yet."""
        if self.state is LearnerState.EXPLORING and not self.measurements():
            self._explore_size = self._explore_floor = max(1, int(size))

    # -- what it knows -------------------------------------------------------

    def chosen_size(self, n_workers: int | None = None, total: int | None = None) -> int:
        """The size the model chooses (without exploration or probes), for the last seen call if not told."""
        if n_workers is not None:
            self._last_workers = max(1, n_workers)
        if total is not None:
            self._last_total = total
        cap = self._cap()
        if self.model is None:
            return max(1, int(min(self._exploring_size(), cap)))
        best = self.model.size_for_share(self.target_share)
        if self.model.per_item > 0:
            best = max(best, MIN_PARTITION_SECONDS / self.model.per_item)
        if not math.isfinite(best):
            best = cap if math.isfinite(cap) else 2 * max(self._largest_measured, 1)
        return max(1, int(min(best, cap)))

    def fitted_size(self) -> int:
        """The model's choice, fitted to every measurement fed so far: for callers that choose the sizes measured."""
        if self._since_fit:
            self._refit()
        return self.chosen_size()

    def measurements(self) -> list[Measurement]:
        return [*self._explored, *self._recent]

    def snapshot(self) -> dict:
        """The learner's state as plain data (for a notebook panel, a test, a log)."""
        model = self.model
        chosen = self.chosen_size() if self.measurements() else None
        return {
            "state": self.state.value,
            "target_share": self.target_share,
            "per_item_seconds": None if model is None else model.per_item,
            "per_partition_seconds": None if model is None else model.per_partition,
            "chosen_size": chosen,
            "fixed_cost_share": (None if model is None or chosen is None or model.per_item <= 0
                                 else model.per_partition / (model.per_item * chosen)),
            "n_workers": self._last_workers,
            "total_items": self._last_total,
            "drifts": self.drifts,
            "measurements": [{"size": m.size, "seconds": m.seconds, "exploring": m.exploring}
                             for m in self.measurements()],
        }

    # -- internals -----------------------------------------------------------

    def _cap(self) -> float:
        """At most this many items a partition, so that each worker gets a few partitions of the call."""
        if self._last_total is None:
            return math.inf
        return max(1, math.ceil(self._last_total / (self.partitions_per_worker * self._last_workers)))

    def _exploring_size(self) -> int:
        if self._explore_size is None:  # the first request: start from a fraction of the input, if known
            if self._last_total is None:
                self._explore_size = 1
            else:
                self._explore_size = max(1, self._last_total // (START_FRACTION * self._last_workers))
            self._explore_floor = self._explore_size
        return self._explore_size

    def _measured_enough(self, cap: float) -> bool:
        """Exploration ends once sizes of twice the model's choice were measured (or of the cap).

        Measuring beyond the choice keeps it an interpolation, never an extrapolation.
        """
        points = self.measurements()
        if len(points) < MIN_POINTS or len({m.size for m in points}) < MIN_DISTINCT_SIZES:
            return False
        return 2 * self.chosen_size() <= self._largest_measured or self._largest_measured >= cap

    def _refit(self) -> None:
        self._since_fit = 0
        points = self.measurements()
        if self.model is not None:  # near the current choice, if enough was measured there
            low = self.chosen_size() / LOCAL_WINDOW
            near = [m for m in points if m.size >= low]
            sizes = {m.size for m in near}
            # sizes within a few percent of each other cannot tell a fixed cost from a per-item one
            if len(near) >= MIN_POINTS and len(sizes) >= MIN_DISTINCT_SIZES and max(sizes) >= MIN_SPAN * min(sizes):
                points = near
        model = _fit(points)
        if model is not None:
            self.model = model

    def _check_drift(self, measurement: Measurement) -> None:
        if self.model is None:
            return
        expected = self.model.seconds(measurement.size)
        if expected <= 0:
            return
        self._residuals.append(measurement.seconds / expected - 1)
        if len(self._residuals) < self.drift_window:
            return
        above = all(r > self.drift_threshold for r in self._residuals)
        below = all(r < -self.drift_threshold for r in self._residuals)
        if not (above or below):
            return
        # The cost per item changed: keep only what was measured since, and explore again from below here.
        kept = list(self._recent)[-self.drift_window:]
        current = self.chosen_size()
        self.drifts += 1
        self._explored = [Measurement(m.size, m.seconds, True) for m in kept]
        self._recent.clear()
        self._residuals.clear()
        self.model = None
        self.state = LearnerState.EXPLORING
        self._largest_measured = 0
        self._explore_size = self._explore_floor = max(1, current // RESTART_BELOW)


def _fit(points: list[Measurement]) -> CostModel | None:
    """Fit the model, then again without the outliers: the partitions that missed it far more than the others did.

    A partition slowed by a burst of other work on the machine (seen here: 2.5 times its usual
    cost) is noise, not cost; in a small partition it would read as a large fixed cost.
    """
    model = _fit_once(points)
    if model is None or len(points) < 2 * MIN_POINTS:
        return model
    misses = [abs(m.seconds / model.seconds(m.size) - 1) for m in points]
    limit = max(OUTLIER_FLOOR, OUTLIER_SPREAD * statistics.median(misses))
    kept = [m for m, miss in zip(points, misses, strict=True) if miss <= limit]
    if len(kept) == len(points) or len(kept) < MIN_POINTS or len({m.size for m in kept}) < MIN_DISTINCT_SIZES:
        return model
    return _fit_once(kept) or model


def _fit_once(points: list[Measurement]) -> CostModel | None:
    """Fit ``t/n = a + b/n`` (scikit-learn, ``b >= 0``, relative-error weights); None if the points cannot tell."""
    if len(points) < 3 or len({m.size for m in points}) < 2:
        return None
    import numpy as np
    import sklearn
    from sklearn.linear_model import LinearRegression

    sizes = np.array([m.size for m in points], dtype=float)
    per_item = np.array([m.seconds for m in points], dtype=float) / sizes
    inverse_sizes = (1.0 / sizes).reshape(-1, 1)
    regression = LinearRegression(positive=True)
    # The inputs are checked where they are fed (finite, positive): scikit-learn's own checks would double a
    # fit's time, and it runs in the caller, between partitions.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        # Relative-error weights, from the observed values first, then from the fitted ones (weights from noisy
        # observations alone favour the points that happened to come out low, and bias the fit down).
        regression.fit(inverse_sizes, per_item, sample_weight=1.0 / per_item**2)
        fitted = regression.intercept_ + regression.coef_[0] * inverse_sizes[:, 0]
        if (fitted > 0).all():
            regression.fit(inverse_sizes, per_item, sample_weight=1.0 / fitted**2)
    per_partition = float(regression.coef_[0])
    per_item_cost = float(regression.intercept_)
    if per_item_cost <= 0:  # no per-item cost to see beside the fixed one: a small fraction of the smallest seen
        per_item_cost = float(per_item.min()) * 1e-3
    return CostModel(per_item=per_item_cost, per_partition=per_partition)


_prewarming = threading.Lock()
_prewarmed = False


def prewarm() -> None:
    """Import scikit-learn in the background (a second or two), so that the first fit does not wait for it all."""
    global _prewarmed
    with _prewarming:
        if _prewarmed or "sklearn.linear_model" in sys.modules:
            return
        _prewarmed = True
    threading.Thread(target=importlib.import_module, args=("sklearn.linear_model",), name="parfun-prewarm",
                     daemon=True).start()
