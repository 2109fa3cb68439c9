"""The checks of a run so far: append-only arrays whose every update costs O(1) amortised.

:class:`History` keeps, for every check, the monitored metric, the cumulative cost and the
progress (epochs completed, possibly fractional, or steps), in arrays that grow by doubling (an
append copies nothing but the new values, except at the rare doubling), and the finite checks separately (the
policy's fits and holds ignore a NaN the user allowed with ``check_finite=False``). Reading them costs nothing
(views), and a stretch of the curve is handed to the learning-curve fit as at most ``max_points`` evenly
spaced checks (:meth:`History.segment`), so that a decision costs the same at check 300 and at check 300,000.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


class _Growing:
    """A 1-D float array that grows by doubling: ``append`` is O(1) amortised, ``view`` is free."""

    __slots__ = ("_data", "_n")

    def __init__(self, capacity: int = 64) -> None:
        self._data = np.empty(max(int(capacity), 1), dtype=float)
        self._n = 0

    def append(self, value: float) -> None:
        if self._n == len(self._data):
            grown = np.empty(2 * len(self._data), dtype=float)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n] = value
        self._n += 1

    def view(self) -> np.ndarray:
        """The values so far (a read-only view: later appends never change it)."""
        out = self._data[: self._n]
        out.flags.writeable = False
        return out

    def __len__(self) -> int:
        return self._n

    def last(self) -> float:
        return float(self._data[self._n - 1])


@dataclass(frozen=True)
class Segment:
    """A stretch of the finite checks, as at most ``max_points`` of them.

    Attributes:
        costs_kwh: Cumulative cost at each point (a check).
        values: The metric at each point, oriented so that higher is better.
        indices: Index of each point among the finite checks, increasing; the segment's first and
            latest checks are always points.
        cost_ref_kwh: Cost at which the segment starts: the cost of the check before it, 0 at the
            start of a run that reports its first cost after some work, or one check interval
            before the first check when that reports no cost yet.
        cost_now_kwh: Cost at the latest check.
        cost_start_kwh: Cost at the run's first finite check.
        value_start: Oriented metric at the run's first finite check.
        best_value: Best oriented metric of the run so far (all finite checks, not only the
            segment's).
        n_total: Finite checks in the whole run.
        n_checks: Checks in the segment (``len(costs_kwh)`` unless it was thinned).
    """

    costs_kwh: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    cost_ref_kwh: float
    cost_now_kwh: float
    cost_start_kwh: float
    value_start: float
    best_value: float
    n_total: int
    n_checks: int


def segment_indices(start: int, stop: int, max_points: int | None) -> np.ndarray:
    """Indices of the checks that represent checks ``start`` to ``stop - 1``.

    All of them, or ``max_points`` evenly spaced ones, the first and the last included.

    Example:
        >>> segment_indices(2, 7, None).tolist(), segment_indices(0, 1000, 5).tolist()
        ([2, 3, 4, 5, 6], [0, 250, 500, 749, 999])
    """
    n = stop - start
    if max_points is None or n <= max_points:
        return np.arange(start, stop)
    return start + np.round(np.linspace(0.0, float(n - 1), max(int(max_points), 2))).astype(int)


def segment_of(
    costs_kwh: np.ndarray,
    values: np.ndarray,
    start: int,
    max_points: int | None = None,
    best_value: float | None = None,
) -> Segment:
    """The :class:`Segment` of the finite checks from the ``start``-th on.

    Args:
        costs_kwh: Cumulative cost of every finite check, non-decreasing.
        values: Oriented metric of every finite check.
        start: Index of the segment's first check.
        max_points: At most this many points (``None``: every check). A longer segment is
            thinned to evenly spaced checks (:func:`segment_indices`): each point is a check as
            measured (a mean of consecutive checks would sit off a curve that bends within it,
            which the fit's quality check would rightly refuse), in O(``max_points``).
        best_value: The best of ``values``, when known (:class:`History` keeps it); ``None``:
            found here, in O(n).

    Example:
        >>> s = segment_of(np.arange(1.0, 11.0), np.arange(10.0), 2, max_points=3)
        >>> s.costs_kwh.tolist(), s.indices.tolist(), s.cost_ref_kwh, s.n_checks
        ([3.0, 7.0, 10.0], [2, 6, 9], 2.0, 8)
    """
    costs = np.asarray(costs_kwh, dtype=float)
    vals = np.asarray(values, dtype=float)
    n = len(costs)
    idx = segment_indices(start, n, max_points)
    if len(idx) == n - start:  # every check: slices, bit for bit
        seg_c, seg_v = costs[start:], vals[start:]
    else:
        seg_c, seg_v = costs[idx], vals[idx]
    c_now = float(costs[-1])
    if start > 0:
        c_ref = float(costs[start - 1])
    elif float(costs[0]) > 0:
        c_ref = 0.0
    else:  # a run whose first check reports no cost yet: one check interval before it
        c_ref = float(costs[0]) - (c_now - float(costs[0])) / max(n - 1, 1)
    return Segment(
        costs_kwh=seg_c,
        values=seg_v,
        indices=idx,
        cost_ref_kwh=c_ref,
        cost_now_kwh=c_now,
        cost_start_kwh=float(costs[0]),
        value_start=float(vals[0]),
        best_value=float(vals.max()) if best_value is None else float(best_value),
        n_total=n,
        n_checks=n - start,
    )


class History:
    """The checks so far, append-only: metric, cumulative cost and progress of each.

    Args:
        metrics: Checks to start from (the monitored metric of each), oldest first.
        costs_kwh: Their cumulative costs.
        progress: Training completed at each (epochs, possibly fractional, or steps).
        sign: +1 when higher values of the metric are better, -1 when lower are
            (:attr:`StoppingConfig.sign`): the orientation of :meth:`segment`.

    Example:
        >>> h = History([3.0, float("nan"), 2.0], [0.1, 0.2, 0.3], [1, 2, 3], sign=-1.0)
        >>> len(h), h.n_finite, h.finite_values.tolist(), h.finite_index.tolist()
        (3, 2, [-3.0, -2.0], [0, 2])
        >>> h.append(1.0, 0.4, 4)
        >>> h.metrics.tolist(), h.finite_costs_kwh.tolist()
        ([3.0, nan, 2.0, 1.0], [0.1, 0.3, 0.4])
    """

    def __init__(
        self,
        metrics: Iterable[float] = (),
        costs_kwh: Iterable[float] = (),
        progress: Iterable[float] = (),
        *,
        sign: float = -1.0,
    ) -> None:
        self.sign = float(sign)
        self._best = -math.inf
        self._metrics, self._costs, self._progress = _Growing(), _Growing(), _Growing()
        self._f_values, self._f_costs, self._f_progress, self._f_index = (
            _Growing(),
            _Growing(),
            _Growing(),
            _Growing(),
        )
        m, c, e = list(metrics), list(costs_kwh), list(progress)
        if not len(m) == len(c) == len(e):
            raise ValueError(
                "History: metrics, costs_kwh and progress must have the same length,"
                f" got {len(m)}, {len(c)}, {len(e)}"
            )
        for values in zip(m, c, e, strict=True):
            self.append(*values)

    def append(self, metric: float, cost_kwh: float, progress: float) -> None:
        """Record one check (O(1) amortised)."""
        metric, cost, progress = float(metric), float(cost_kwh), float(progress)
        self._metrics.append(metric)
        self._costs.append(cost)
        self._progress.append(progress)
        if math.isfinite(metric):
            value = self.sign * metric
            self._f_values.append(value)
            self._f_costs.append(cost)
            self._f_progress.append(progress)
            self._f_index.append(len(self._metrics) - 1)
            self._best = max(self._best, value)

    def __len__(self) -> int:
        return len(self._metrics)

    @property
    def metrics(self) -> np.ndarray:
        """The monitored metric at every check (non-finite values included)."""
        return self._metrics.view()

    @property
    def costs_kwh(self) -> np.ndarray:
        """Cumulative cost at every check."""
        return self._costs.view()

    @property
    def progress(self) -> np.ndarray:
        """Training completed at every check (epochs, possibly fractional, or steps)."""
        return self._progress.view()

    @property
    def best_value(self) -> float:
        """Best finite metric so far, oriented (``sign * metric``); ``-inf`` before any."""
        return self._best

    @property
    def n_finite(self) -> int:
        """Number of checks with a finite metric."""
        return len(self._f_values)

    @property
    def finite_values(self) -> np.ndarray:
        """The finite metrics, oriented so that higher is better (``sign * metric``)."""
        return self._f_values.view()

    @property
    def finite_costs_kwh(self) -> np.ndarray:
        """Cumulative cost at the finite checks."""
        return self._f_costs.view()

    @property
    def finite_progress(self) -> np.ndarray:
        """Training completed at the finite checks."""
        return self._f_progress.view()

    @property
    def finite_index(self) -> np.ndarray:
        """Index (among all checks) of every finite check, as integers."""
        return self._f_index.view().astype(int)

    def finite_index_of(self, i: int) -> int:
        """Index among all checks of the ``i``-th finite check (O(1))."""
        return int(self._f_index.view()[i])

    def segment(self, start: int, max_points: int | None) -> Segment:
        """The finite checks from the ``start``-th on, as at most ``max_points`` of them (:func:`segment_of`).

        O(``max_points``): the arrays are views, and a long segment is thinned by indexing.
        """
        return segment_of(self.finite_costs_kwh, self.finite_values, start, max_points, self.best_value)
