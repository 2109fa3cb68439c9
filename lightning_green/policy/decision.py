"""What a stopping decision says: stop or not, why, and the numbers behind it.

:class:`StopReason` names why training was stopped (its value is what the callback logs as the
MLflow tag ``lightning_green.stop_reason``); :class:`StopDecision` is what
:meth:`lightning_green.policy.StoppingPolicy.update` returns for every check.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from lightning_green.policy.learning_curve import CurveFit
from lightning_green.policy.savings import StopSavings


class StopReason(str, Enum):
    """Why training was stopped.

    Example:
        >>> StopReason("marginal_gain") is StopReason.MARGINAL_GAIN
        True
        >>> StopReason.PLATEAU.value
        'plateau'
    """

    PLATEAU = "plateau"
    """The monitored metric did not improve by more than ``min_delta`` for ``patience`` checks."""
    MARGINAL_GAIN = "marginal_gain"
    """What the rest of the planned run would still buy per kWh is below the threshold."""
    ENERGY_BUDGET = "energy_budget"
    """Cumulative energy would exceed ``energy_budget_kwh`` by the next check (projected from the
    recent check intervals); with one check per epoch, by the end of the next epoch."""
    NON_FINITE = "non_finite"
    """The monitored metric is NaN or infinite (``check_finite``)."""
    DIVERGENCE = "divergence"
    """The monitored metric is worse than ``divergence_threshold``."""
    THRESHOLD_REACHED = "threshold_reached"
    """The monitored metric reached ``stopping_threshold``: the goal is met."""


@dataclass(frozen=True)
class StopDecision:
    """The outcome of one check of the stopping policy.

    Attributes:
        should_stop: Whether training should stop now.
        reason: Why, when ``should_stop``; else ``None``.
        message: A human-readable account of the decision (Lightning ``EarlyStopping``'s
            messages for the plateau, threshold and non-finite cases).
        epoch: The 0-based index of the epoch this decision was made in: as passed to ``update``
            (``epoch=``), or the epoch the check's ``progress`` fell in (``ceil(progress) - 1``
            in epochs; the check index when the run has no epochs).
        best_metric: Best value of the monitored metric so far (in its own units and direction).
        wait_count: Checks since the last improvement by more than ``min_delta`` (Lightning's
            ``wait_count``; after a learning-rate decay the plateau rule counts from the decay
            when that is later, see :mod:`.stopping`).
        gain_per_kwh: Recent improvement of the metric per unit cost, a least-squares slope over
            a window of recent checks (improvement positive), or ``None`` with too few checks.
        average_gain_per_kwh: Improvement of the best value on the first check, per unit cost spent
            since (the reference of the scale-free threshold), or ``None``.
        projected_gain: Improvement of the best value that the rest of the planned run is expected
            to bring, around the learning-curve fit with the metric's noise (metric units,
            improvement positive; the trend optimistic by one standard error), or ``None`` while
            the marginal rule is held (the fit is skipped then).
        projected_cost_kwh: Cost of the rest of the planned run, extrapolated from the measured
            cost per epoch, or ``None``.
        projected_gain_per_kwh: ``projected_gain / projected_cost_kwh``, or ``None``.
        relative_gain: ``projected_gain_per_kwh / average_gain_per_kwh``: what a further kWh buys
            as a fraction of what the average kWh bought so far, or ``None``.
        next_epoch_kwh: Projected cost of the next check interval (used by the budget; with one
            check per epoch, of the next epoch), or ``None``.
        hold: Why stopping is held off right now, or ``None``: ``"min_epochs"``,
            ``"lr_decay_ahead"`` (a known learning-rate decay is ahead, or happened within the last
            ``DECAY_WINDOW`` checks, and decays still pay) and
            ``"lr_step_seen"`` (the curve made a step-jump) hold the plateau and the marginal rule;
            ``"horizon_fraction"`` (not yet past ``min_horizon_fraction`` of the planned epochs)
            holds the marginal rule only; ``"cost_noise"``: the marginal rule would stop on the
            costs as measured but not with every check charged the run's average rate (the stop
            would rest on how the measured cost varied between checks).
        fit: The learning-curve fit behind ``projected_gain`` (``None`` when no fit passed the
            quality checks and the recent slope was extrapolated instead). ``fit.predict(cost)``
            draws it in metric units.
        progress: Training completed at this check, in the caller's unit (epochs, possibly
            fractional, or steps; ``epoch + 1`` when called with ``epoch=``), or ``None``.
        horizon: The planned end the decision was made against, in the unit of ``progress``, or
            ``None`` without a plan.
        savings: When the decision stops a run before its planned end: what the stop avoids up to
            it, projected from the checks so far (:class:`~lightning_green.policy.savings.StopSavings`:
            progress, epochs and checks not run, kWh not spent, and the gain of the best metric the
            fitted learning curve projects for them); ``None`` otherwise.
    """

    should_stop: bool
    reason: StopReason | None
    message: str
    epoch: int
    best_metric: float
    wait_count: int
    gain_per_kwh: float | None = None
    average_gain_per_kwh: float | None = None
    projected_gain: float | None = None
    projected_cost_kwh: float | None = None
    projected_gain_per_kwh: float | None = None
    relative_gain: float | None = None
    next_epoch_kwh: float | None = None
    hold: str | None = None
    fit: CurveFit | None = None
    progress: float | None = None
    horizon: float | None = None
    savings: StopSavings | None = None

    def __iter__(self) -> Iterator[bool | StopReason | None]:
        """Unpack as ``should_stop, reason = decision``.

        Example:
            >>> should_stop, reason = StopDecision(True, StopReason.PLATEAU, "", epoch=3, best_metric=0.5,
            ...                                    wait_count=3)
            >>> should_stop, reason.value
            (True, 'plateau')
        """
        return iter((self.should_stop, self.reason))

    @property
    def fit_family(self) -> str | None:
        """Name of the fitted learning-curve family (``"pow3"``, ``"exp3"``, ...), if any."""
        return None if self.fit is None else self.fit.family
