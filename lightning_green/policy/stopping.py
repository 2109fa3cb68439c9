"""The composite stopping policy: plateau, marginal gain per kWh and energy budget.

:func:`decide` is the pure function: given the history of checks (metric, cumulative cost,
epoch), Lightning's plateau state and the config, it returns the :class:`StopDecision` and the
new plateau state. :class:`StoppingPolicy` is the small state object around it that the callback
(online) and :mod:`lightning_green.replay` (offline) both drive, one :meth:`StoppingPolicy.update`
per check, so a decision replayed on a logged curve is the decision the callback would have made.

Order of the checks at every update:

1. Lightning ``EarlyStopping``'s chain (:mod:`.plateau`): non-finite, stopping threshold and
   divergence threshold stop at once, whatever the epoch; otherwise the improvement/patience
   bookkeeping is updated exactly as Lightning does.
2. Energy budget: stop if the next check interval, projected from the measured ones, would take
   the cumulative cost over ``energy_budget_kwh`` (at once, whatever the epoch).
3. Holds of both the plateau and the marginal rule: before ``min_epochs`` epochs; while a known
   learning-rate decay is ahead within the horizon (``epochs_until_lr_decay``) and for a few
   epochs after it; after the curve made a step-jump, for as long again as the stretch before it
   (:mod:`.schedule`).
4. Plateau: ``patience`` checks without improvement (Lightning's rule).
5. Marginal gain, only once more than ``min_horizon_fraction`` of the planned epochs has run: the
   gain the learning curve still projects up to the planned horizon, per unit of projected cost,
   is below ``min_relative_gain`` times the average rate so far (or below ``min_gain_per_kwh``),
   unless the recent slope shows, beyond its noise, that the run still improves at least at the
   threshold rate (a steadily improving run is never stopped by this rule alone).

Deterministic: the same history gives the same decision, bit for bit, on every DDP rank; the
learning-curve fit is skipped while the marginal rule is held, which changes no decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_green.policy import budget as _budget
from lightning_green.policy import schedule as _schedule
from lightning_green.policy.config import StoppingConfig
from lightning_green.policy.decision import StopDecision, StopReason
from lightning_green.policy.marginal import MarginalAssessment, assess_marginal
from lightning_green.policy.plateau import PlateauState, evaluate_plateau

STATE_VERSION = 1


@dataclass(frozen=True)
class History:
    """Checks so far, as arrays.

    Attributes:
        metrics: Monitored metric at every check (may hold non-finite values when
            ``check_finite`` is off).
        costs_kwh: Cumulative cost at every check, non-decreasing.
        epochs: Epoch index (0-based) at every check, non-decreasing.
    """

    metrics: np.ndarray
    costs_kwh: np.ndarray
    epochs: np.ndarray


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def decide(
    history: History,
    plateau_state: PlateauState,
    config: StoppingConfig,
    *,
    max_epochs: int | None = None,
    epochs_until_lr_decay: int | None = None,
    known_decay_epoch: int | None = None,
    monitor: str = "metric",
) -> tuple[StopDecision, PlateauState]:
    """Decide at the latest check of ``history``; a pure function.

    Args:
        history: All checks so far, the latest last.
        plateau_state: Plateau state after the previous check.
        config: Policy arguments.
        max_epochs: Planned number of epochs of the run (``None``: unknown).
        epochs_until_lr_decay: Epochs until a scheduled learning-rate decay, if known.
        known_decay_epoch: Epoch index of the latest learning-rate decay announced through
            ``epochs_until_lr_decay`` (the curve segment after it is fitted on its own).
        monitor: The metric's name, for messages.

    Returns:
        The decision and the plateau state after this check.
    """
    metrics, costs, epochs = history.metrics, history.costs_kwh, history.epochs
    current = float(metrics[-1])
    epoch = int(epochs[-1])
    plateau = evaluate_plateau(
        current,
        plateau_state,
        mode=config.mode,
        min_delta=config.min_delta,
        patience=config.patience,
        check_finite=config.check_finite,
        stopping_threshold=config.stopping_threshold,
        divergence_threshold=config.divergence_threshold,
        monitor=monitor,
    )
    state = plateau.state
    base: dict[str, Any] = {"epoch": epoch, "best_metric": state.best_score, "wait_count": state.wait_count}
    if plateau.reason in (StopReason.NON_FINITE, StopReason.THRESHOLD_REACHED, StopReason.DIVERGENCE):
        return StopDecision(True, plateau.reason, plateau.message or "", **base), state

    over, next_kwh = _budget.exceeds_budget(costs, epochs, config.energy_budget_kwh)
    base["next_epoch_kwh"] = next_kwh
    if over:
        message = (
            f"Energy budget: {costs[-1]:.6g} kWh spent, the next epoch would need about"
            f" {next_kwh:.3g} kWh more,"
            f" over energy_budget_kwh = {config.energy_budget_kwh}. Signaling Trainer to stop."
        )
        return StopDecision(True, StopReason.ENERGY_BUDGET, message, **base), state

    # Holds, from the finite part of the history.
    finite = np.isfinite(metrics)
    values = config.sign * metrics[finite]
    f_costs, f_epochs = costs[finite], epochs[finite]
    steps = _schedule.detect_steps(values)
    hold = None
    if epoch + 1 < config.min_epochs:
        hold = "min_epochs"
    elif _schedule.lr_decay_ahead(epoch, epochs_until_lr_decay, max_epochs) or (
        known_decay_epoch is not None and epoch < known_decay_epoch + _schedule.STEP_WINDOW
    ):
        hold = "lr_decay_ahead"
    else:
        until = _schedule.step_hold_until(f_epochs, steps, max_epochs)
        if until is not None and epoch < until:
            hold = "lr_step_seen"
    marginal_hold = hold
    if hold is None and max_epochs is not None and epoch + 1 <= config.min_horizon_fraction * max_epochs:
        marginal_hold = "horizon_fraction"  # the marginal rule only; the plateau rule keeps its meaning
    base["hold"] = marginal_hold
    at_horizon = max_epochs is not None and epoch + 1 >= max_epochs
    evaluate_marginal = (
        marginal_hold is None
        and not at_horizon
        and len(values) >= 2
        and (config.min_relative_gain is not None or config.min_gain_per_kwh is not None)
    )

    # Marginal assessment: the learning-curve fit only when the marginal rule can act on it.
    segment_start = steps[-1] if steps else 0
    if known_decay_epoch is not None:
        after = np.nonzero(f_epochs >= known_decay_epoch)[0]
        if len(after) and after[0] > segment_start:
            segment_start = int(after[0])
    assessment = MarginalAssessment()
    if len(values) >= 2:
        horizon = _budget.remaining_cost(f_costs, f_epochs, max_epochs)
        assessment = assess_marginal(
            f_costs,
            values,
            segment_start=segment_start,
            horizon_cost_kwh=horizon,
            sign=config.sign,
            project=evaluate_marginal,
        )
    base.update(
        gain_per_kwh=assessment.gain_per_kwh,
        average_gain_per_kwh=assessment.average_gain_per_kwh,
        projected_gain=assessment.projected_gain,
        projected_cost_kwh=assessment.projected_cost_kwh,
        projected_gain_per_kwh=assessment.projected_gain_per_kwh,
        relative_gain=assessment.relative_gain,
        fit=assessment.fit,
    )

    if hold is None and plateau.should_stop:
        return StopDecision(True, StopReason.PLATEAU, plateau.message or "", **base), state
    if evaluate_marginal:
        marginal = _marginal_stop(assessment, config)
        if marginal is not None:
            return StopDecision(True, StopReason.MARGINAL_GAIN, marginal, **base), state

    message = plateau.message or (
        f"Metric {monitor} did not improve in the last {state.wait_count} records;"
        f" projected gain per kWh {_fmt(assessment.projected_gain_per_kwh)},"
        f" relative {_fmt(assessment.relative_gain)}" + (f" (held: {marginal_hold})" if marginal_hold else "")
    )
    return StopDecision(False, None, message, **base), state


def _marginal_stop(a: MarginalAssessment, config: StoppingConfig) -> str | None:
    """Message if the marginal-gain rule says stop, else None."""
    if a.projected_gain_per_kwh is None:
        return None
    surely = a.recent_rate_lower_bound()
    if (
        config.min_relative_gain is not None
        and a.relative_gain is not None
        and a.average_gain_per_kwh is not None
    ):
        threshold = config.min_relative_gain * a.average_gain_per_kwh
        steady = surely is not None and surely >= threshold
        if a.relative_gain < config.min_relative_gain and not steady:
            return (
                f"Marginal gain: the rest of the planned run is projected to buy {a.projected_gain:.4g} more"
                f" for {a.projected_cost_kwh:.4g} kWh, {a.projected_gain_per_kwh:.4g} per kWh ="
                f" {a.relative_gain:.1%} of the {a.average_gain_per_kwh:.4g} per kWh bought on average so far"
                f" (min_relative_gain = {config.min_relative_gain}). Signaling Trainer to stop."
            )
    if config.min_gain_per_kwh is not None:
        steady = surely is not None and surely >= config.min_gain_per_kwh
        if a.projected_gain_per_kwh < config.min_gain_per_kwh and not steady:
            return (
                "Marginal gain: the rest of the planned run is projected to buy"
                f" {a.projected_gain_per_kwh:.4g}"
                f" per kWh < min_gain_per_kwh = {config.min_gain_per_kwh}. Signaling Trainer to stop."
            )
    return None


class StoppingPolicy:
    """The stopping policy as a small state object: one :meth:`update` per check.

    Args:
        config: Policy arguments (defaults: :class:`StoppingConfig`).
        monitor: The monitored metric's name, used in messages only.

    Example:
        >>> policy = StoppingPolicy(StoppingConfig(patience=2, min_epochs=0))
        >>> [policy.update(m, 0.1 * (e + 1), epoch=e).should_stop for e, m in enumerate([3.0, 2.0, 2.5, 2.4])]
        [False, False, False, True]
        >>> policy.update(1.0, 0.5, epoch=4).reason is None
        True
    """

    def __init__(self, config: StoppingConfig | None = None, *, monitor: str = "metric") -> None:
        self.config = config if config is not None else StoppingConfig()
        self.monitor = monitor
        self._metrics: list[float] = []
        self._costs: list[float] = []
        self._epochs: list[int] = []
        self._plateau = PlateauState.initial(self.config.mode)
        self._next_decay_epoch: int | None = None
        self._last_decay_epoch: int | None = None
        self.last_decision: StopDecision | None = None

    @property
    def best_score(self) -> float:
        """Best value of the metric so far (Lightning's ``best_score``)."""
        return self._plateau.best_score

    @property
    def wait_count(self) -> int:
        """Checks since the last improvement (Lightning's ``wait_count``)."""
        return self._plateau.wait_count

    @property
    def n_checks(self) -> int:
        """Number of updates so far."""
        return len(self._metrics)

    def update(
        self,
        metric: float,
        cost_kwh: float,
        *,
        epoch: int,
        max_epochs: int | None = None,
        epochs_until_lr_decay: int | None = None,
    ) -> StopDecision:
        """Record one check and decide.

        Args:
            metric: The monitored metric at this check.
            cost_kwh: *Cumulative* cost since the start of the run (kWh; in replay, energy in kWh or
                seconds). A value below the previous one (a meter glitch) is taken as the previous.
            epoch: Index of the epoch just completed, 0-based, as ``trainer.current_epoch``;
                non-decreasing across updates.
            max_epochs: Planned number of epochs (``trainer.max_epochs``), or ``None`` if unbounded.
            epochs_until_lr_decay: Epochs until the next scheduled learning-rate decay, if known.

        Returns:
            The decision.

        Raises:
            ValueError: If ``cost_kwh`` is negative or not finite, ``epoch`` is negative or goes
                backwards, or ``max_epochs`` is not positive.
        """
        metric = float(metric)
        cost = float(cost_kwh)
        if not math.isfinite(cost) or cost < 0:
            raise ValueError(
                f"StoppingPolicy.update: `cost_kwh` must be a finite number >= 0, got {cost_kwh!r}"
            )
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"StoppingPolicy.update: `epoch` must be an integer >= 0, got {epoch!r}")
        if self._epochs and epoch < self._epochs[-1]:
            raise ValueError(
                f"StoppingPolicy.update: `epoch` went backwards: {epoch} after {self._epochs[-1]}"
            )
        if max_epochs is not None and (isinstance(max_epochs, bool) or max_epochs <= 0):
            raise ValueError(
                f"StoppingPolicy.update: `max_epochs` must be a positive integer or None, got {max_epochs!r}"
            )
        if self._costs:
            cost = max(cost, self._costs[-1])
        if self._next_decay_epoch is not None and self._next_decay_epoch <= epoch:
            self._last_decay_epoch, self._next_decay_epoch = self._next_decay_epoch, None
        if epochs_until_lr_decay is not None and epochs_until_lr_decay >= 0:
            self._next_decay_epoch = int(epoch) + int(epochs_until_lr_decay) + 1
        self._metrics.append(metric)
        self._costs.append(cost)
        self._epochs.append(int(epoch))
        history = History(np.array(self._metrics), np.array(self._costs), np.array(self._epochs))
        decision, self._plateau = decide(
            history,
            self._plateau,
            self.config,
            max_epochs=max_epochs,
            epochs_until_lr_decay=epochs_until_lr_decay,
            known_decay_epoch=self._last_decay_epoch,
            monitor=self.monitor,
        )
        self.last_decision = decision
        return decision

    def state_dict(self) -> dict[str, Any]:
        """Everything the policy remembers, as plain JSON-able Python types.

        Example:
            >>> import json
            >>> p = StoppingPolicy()
            >>> _ = p.update(1.0, 0.1, epoch=0)
            >>> sorted(json.loads(json.dumps(p.state_dict())))[:3]
            ['best_score', 'config', 'costs_kwh']
        """
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "metrics": [_json_float(m) for m in self._metrics],
            "costs_kwh": list(self._costs),
            "epochs": list(self._epochs),
            "best_score": _json_float(self._plateau.best_score),
            "wait_count": self._plateau.wait_count,
            "next_decay_epoch": self._next_decay_epoch,
            "last_decay_epoch": self._last_decay_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; later decisions equal the uninterrupted policy's.

        The config stored in ``state`` is informational: the policy keeps its own (so a resumed run
        may change, for instance, ``patience``, as with Lightning's ``EarlyStopping``).
        """
        self._metrics = [_from_json_float(m) for m in state["metrics"]]
        self._costs = [float(c) for c in state["costs_kwh"]]
        self._epochs = [int(e) for e in state["epochs"]]
        self._plateau = PlateauState(_from_json_float(state["best_score"]), int(state["wait_count"]))
        nxt, last = state.get("next_decay_epoch"), state.get("last_decay_epoch")
        self._next_decay_epoch = None if nxt is None else int(nxt)
        self._last_decay_epoch = None if last is None else int(last)


def _json_float(x: float) -> float | str:
    """Floats as JSON allows: non-finite ones as strings."""
    return x if math.isfinite(x) else repr(x)


def _from_json_float(x: float | str) -> float:
    return float(x)
