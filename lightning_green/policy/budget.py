"""Cost per unit of progress, cost per check, the cost of the rest of the run, and the energy budget.

Progress is what the policy is given at each check: epochs completed (possibly fractional, with
several checks an epoch), or optimizer steps; the horizon is the planned end in the same unit.

Cumulative energy readings are not smooth: a meter that updates late reports the same total
twice and then catches up (the MLPerf power logs do this). Rates are therefore the total cost
over a recent window divided by the epochs (or checks) in it, never a single difference, nor a
median of differences (which a meter that is stale half the time would put at zero).
"""

from __future__ import annotations

import numpy as np

COST_WINDOW = 5
"""Check intervals averaged to estimate the cost per epoch and per check."""


def cost_per_progress(costs_kwh: np.ndarray, progress: np.ndarray, window: int = COST_WINDOW) -> float | None:
    """Recent cost per unit of progress: cost over the last ``window`` check intervals / progress in them.

    With no progress over the window (a single check, or checks that report the same progress),
    the cost so far divided by the progress so far; ``None`` when no progress was made at all.

    Args:
        costs_kwh: Cumulative cost at every check.
        progress: Training completed at every check (epochs, possibly fractional, or steps).
        window: Number of recent intervals.

    Returns:
        Cost per unit of progress (``>= 0``), or ``None``.

    Example:
        >>> cost_per_progress(np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0]))
        1.0
        >>> cost_per_progress(np.array([0.5, 1.0, 1.5]), np.array([0.25, 0.5, 0.75]))  # 4 checks an epoch
        2.0
    """
    n = len(costs_kwh)
    if n >= 2:
        i = max(0, n - 1 - window)
        d_progress = float(progress[-1] - progress[i])
        if d_progress > 0:
            return max(float(costs_kwh[-1] - costs_kwh[i]) / d_progress, 0.0)
    if float(progress[-1]) > 0:
        return max(float(costs_kwh[-1]), 0.0) / float(progress[-1])
    return None


def cost_per_epoch(costs_kwh: np.ndarray, epochs: np.ndarray, window: int = COST_WINDOW) -> float:
    """Recent cost per epoch, from 0-based epoch indices (:func:`cost_per_progress` of ``epochs + 1``).

    Example:
        >>> cost_per_epoch(np.array([1.0, 2.0, 2.0, 4.0]), np.array([0, 1, 2, 3]))
        1.0
    """
    rate = cost_per_progress(costs_kwh, np.asarray(epochs, dtype=float) + 1.0, window)
    return 0.0 if rate is None else rate


def next_check_cost(costs_kwh: np.ndarray, window: int = COST_WINDOW) -> float:
    """Projected cost of the next check interval: the mean cost of the recent ones.

    The cost over the last ``window`` check intervals divided by their number (with a single
    check, the cost up to it: one interval from the start). This is what the energy budget needs
    whatever the checks are: one per epoch, one every few epochs, or several per epoch
    (``val_check_interval``).

    Args:
        costs_kwh: Cumulative cost at every check.
        window: Number of recent intervals.

    Returns:
        Projected cost (``>= 0``).

    Example:
        >>> next_check_cost(np.array([1.0, 2.0, 3.1]))
        1.05
        >>> next_check_cost(np.array([0.25, 0.5, 0.75, 1.0, 1.25]))  # four checks per epoch of cost 1
        0.25
    """
    n = len(costs_kwh)
    if n >= 2:
        i = max(0, n - 1 - window)
        return max(float(costs_kwh[-1] - costs_kwh[i]) / (n - 1 - i), 0.0)
    return max(float(costs_kwh[-1]), 0.0)


def average_rate_costs(costs_kwh: np.ndarray, progress: np.ndarray) -> np.ndarray | None:
    """The cumulative costs the checks would show if every unit of progress cost the run's average.

    ``progress * (cost so far / progress so far)``: the same run with the measurement noise of each
    check interval taken out (and any real change of the rate too). ``None`` before any progress.

    Example:
        >>> average_rate_costs(np.array([1.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0])).tolist()
        [1.3333333333333333, 2.6666666666666665, 4.0]
    """
    done = float(progress[-1]) if len(progress) else 0.0
    if done <= 0:
        return None
    return np.asarray(progress, dtype=float) * (max(float(costs_kwh[-1]), 0.0) / done)


def remaining_cost_to(costs_kwh: np.ndarray, progress: np.ndarray, horizon: float | None) -> float:
    """Projected cost of the rest of the planned run.

    ``(horizon - progress now) * cost per unit of progress`` (:func:`cost_per_progress`); without a
    planned horizon, or before any progress, as much again as the run has cost so far (the question
    becomes "would doubling this run pay?").

    Args:
        costs_kwh: Cumulative cost at every check.
        progress: Training completed at every check.
        horizon: Planned end of the run in the unit of ``progress``, or ``None``.

    Returns:
        Projected remaining cost (``>= 0``).

    Example:
        >>> remaining_cost_to(np.array([1.0, 2.0]), np.array([1.0, 2.0]), horizon=10)
        8.0
        >>> remaining_cost_to(np.array([1.0, 2.0]), np.array([500.0, 1000.0]), horizon=2000)  # steps
        2.0
    """
    rate = cost_per_progress(costs_kwh, progress)
    if horizon is None or rate is None:
        return max(float(costs_kwh[-1]), 0.0)
    return max(float(horizon) - float(progress[-1]), 0.0) * rate


def remaining_cost(costs_kwh: np.ndarray, epochs: np.ndarray, max_epochs: int | None) -> float:
    """:func:`remaining_cost_to` from 0-based epoch indices and a planned number of epochs.

    Example:
        >>> remaining_cost(np.array([1.0, 2.0]), np.array([0, 1]), max_epochs=10)
        8.0
    """
    return remaining_cost_to(costs_kwh, np.asarray(epochs, dtype=float) + 1.0, max_epochs)


def checks_remaining(progress: np.ndarray, horizon: float | None, window: int = COST_WINDOW) -> float:
    """Checks still to come up to the planned horizon, at the recent pace of progress per check.

    Without a planned horizon, as many again as so far (the horizon :func:`remaining_cost_to`
    assumes then).

    Args:
        progress: Training completed at every check.
        horizon: Planned end of the run in the unit of ``progress``, or ``None``.
        window: Number of recent check intervals that set the pace.

    Returns:
        The number of checks (``>= 0``, not rounded).

    Example:
        >>> checks_remaining(np.array([0.25, 0.5, 0.75, 1.0]), horizon=10)  # four checks an epoch
        36.0
        >>> checks_remaining(np.array([2.0, 4.0]), horizon=None)
        2.0
    """
    n = len(progress)
    if horizon is None:
        return float(n)
    left = max(float(horizon) - float(progress[-1]), 0.0)
    if n >= 2:
        i = max(0, n - 1 - window)
        pace = float(progress[-1] - progress[i]) / (n - 1 - i)
        if pace > 0:
            return left / pace
    if float(progress[-1]) > 0:
        return left / (float(progress[-1]) / n)
    return float(n)


def exceeds_budget(
    costs_kwh: np.ndarray, budget_kwh: float | None, outside_kwh: float = 0.0
) -> tuple[bool, float]:
    """Whether the next check interval would take the run's cost over the budget.

    The budget is the whole run's: the checks' cumulative cost plus ``outside_kwh``, what the
    run spent outside the intervals (before its first epoch, after an earlier fit's last). The
    next interval is projected from the intervals alone (:func:`next_check_cost`): a one-off
    such as a batch-size search before training says nothing of what the next epoch costs.

    Args:
        costs_kwh: Cumulative cost at every check (of the check intervals).
        budget_kwh: The budget, or ``None``.
        outside_kwh: The run's cost outside the check intervals so far (``>= 0``).

    Returns:
        ``(would_exceed, projected_cost_of_next_interval)``.

    Example:
        >>> exceeds_budget(np.array([1.0, 2.0, 3.0]), 3.5)
        (True, 1.0)
        >>> exceeds_budget(np.array([1.0, 2.0, 3.0]), 4.0)
        (False, 1.0)
        >>> exceeds_budget(np.array([1.0, 2.0, 3.0]), 4.5, outside_kwh=1.0)  # 3 + 1 + 1 > 4.5
        (True, 1.0)
    """
    step = next_check_cost(costs_kwh)
    if budget_kwh is None:
        return False, step
    return float(costs_kwh[-1]) + outside_kwh + step > budget_kwh, step
