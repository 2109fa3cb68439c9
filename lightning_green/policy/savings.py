"""What a stop avoided: the rest of the planned run, projected from the checks measured so far.

When the policy stops a run before its planned end (the horizon: ``max_epochs``, or ``max_steps``),
the part it did not run is a *projection*, never a measurement: the progress left to the horizon is
exact, the checks it would have run follow from the spacing of recent checks (a whole number,
:func:`checks_left`), the energy it would have taken from the measured kWh per unit of progress over
the last ``COST_WINDOW`` check intervals (:mod:`.budget`), and the metric gain from the
learning-curve fit (the improvement of the best value the fit's central trend projects up to the
horizon, with the metric's noise; ``None`` without a fit). :func:`project_savings` is the pure
function; the policy attaches its result to a stopping :class:`~lightning_green.policy.StopDecision`
as ``savings``, and offline replay can apply it to a logged history.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lightning_green.policy import budget as _budget


@dataclass(frozen=True)
class StopSavings:
    """What a stop avoided up to the planned end of the run (projected, not measured).

    Attributes:
        progress_not_run: Training left to the horizon, in the unit of progress (epochs, possibly
            fractional, or steps).
        epochs_not_run: The same in epochs, or ``None`` when the run has no epochs.
        checks_not_run: Checks (validation runs) that would have come, at the recent spacing of
            checks (a whole number, :func:`checks_left`).
        kwh_not_spent: Energy (cost, in replay whatever unit the cost is in) the rest of the run
            would have taken, from the measured cost per unit of progress of recent checks.
        metric_gain_forgone: Improvement of the best value of the metric projected for the rest
            of the run around the central trend of the learning-curve family that fits best
            (metric units, improvement positive: a loss that would have fallen by 0.01 gives
            0.01), or ``None`` when no fit was accepted.
    """

    progress_not_run: float
    epochs_not_run: float | None
    checks_not_run: float
    kwh_not_spent: float
    metric_gain_forgone: float | None

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able values, keyed by their names (units in the names).

        Example:
            >>> StopSavings(5.0, 5.0, 5.0, 0.5, None).to_dict()["kwh_not_spent"]
            0.5
        """
        return asdict(self)


_SAME = 1e-6
"""Relative tolerance when progress values are compared (fractions of an epoch are not exact)."""


def checks_left(progress: np.ndarray, horizon: float, window: int = _budget.COST_WINDOW) -> float:
    """The checks still to come up to ``horizon``, on the schedule of the recent checks: a whole number.

    The schedule's spacing is the median progress between the recent checks before the last one
    (the last ``window`` intervals; from the run's start to the first check when there is no earlier
    one): the last check may sit inside an interval, where a run ended mid-epoch (a stop held back
    by ``Trainer(min_steps=...)``), and a check there moves no later check. The checks to come are
    the schedule's points after the last check up to the horizon, counted from the last check on
    the schedule.

    Args:
        progress: Training completed at every check (epochs, possibly fractional, or steps).
        horizon: Planned end of the run in the unit of ``progress``.
        window: Number of recent check intervals that set the spacing.

    Returns:
        The number of checks (``>= 0``, whole).

    Example:
        >>> checks_left(np.array([0.25, 0.5, 0.75, 1.0]), horizon=10)  # four checks an epoch
        36.0
        >>> checks_left(np.array([20.0, 21.0, 22.0, 22.5]), horizon=30)  # ended mid-epoch: 23 ... 30
        8.0
        >>> checks_left(np.array([2.0, 4.0, 6.0]), horizon=11)  # every second epoch: 8, 10
        2.0
    """
    points = np.asarray(progress, dtype=float)
    n, last = len(points), float(points[-1])
    if float(horizon) <= last:
        return 0.0
    earlier = np.diff(points)[:-1][-window:] if n >= 3 else points[:1]
    earlier = earlier[earlier > 0]
    if not len(earlier):  # no progress between checks: the recent pace, rounded up
        return float(math.ceil(_budget.checks_remaining(points, horizon, window) - _SAME))
    spacing = float(np.median(earlier))
    previous = float(points[-2]) if n >= 2 else 0.0
    on_schedule = last - previous >= spacing * (1.0 - _SAME)
    anchor = last if on_schedule else previous
    return float(math.floor((float(horizon) - anchor) / spacing + _SAME))


def project_savings(
    costs_kwh: np.ndarray,
    progress: np.ndarray,
    horizon: float | None,
    *,
    progress_per_epoch: float | None = 1.0,
    metric_gain: float | None = None,
) -> StopSavings | None:
    """What stopping at the latest check avoids, up to ``horizon``: a projection from the checks.

    Args:
        costs_kwh: Cumulative cost at every check so far (the latest last).
        progress: Training completed at every check (epochs, possibly fractional, or steps).
        horizon: Planned end of the run in the unit of ``progress``, or ``None``.
        progress_per_epoch: Units of progress in one epoch (1 for epochs; steps per epoch; ``None``
            when the run has no epochs).
        metric_gain: The improvement of the best value the fit projects for the rest of the run
            (metric units, improvement positive), or ``None``.

    Returns:
        The projection, or ``None`` without a planned end or when the run reached it.

    Example:
        >>> s = project_savings(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0]), 10)
        >>> s.progress_not_run, s.checks_not_run, s.kwh_not_spent
        (6.0, 6.0, 6.0)
        >>> s = project_savings(np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.5, 0.75]), 2.0,
        ...                     metric_gain=0.004)  # four checks an epoch, 0.4 kWh an epoch
        >>> s.epochs_not_run, s.checks_not_run, round(s.kwh_not_spent, 3), s.metric_gain_forgone
        (1.25, 5.0, 0.5, 0.004)
        >>> project_savings(np.array([1.0, 2.0]), np.array([1.0, 2.0]), None) is None
        True
    """
    if horizon is None or len(progress) == 0:
        return None
    left = float(horizon) - float(progress[-1])
    if left <= 0:
        return None
    return StopSavings(
        progress_not_run=left,
        epochs_not_run=None if progress_per_epoch is None else left / float(progress_per_epoch),
        checks_not_run=checks_left(progress, horizon),
        kwh_not_spent=_budget.remaining_cost_to(costs_kwh, progress, horizon),
        metric_gain_forgone=None if metric_gain is None else max(float(metric_gain), 0.0),
    )
