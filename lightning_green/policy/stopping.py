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
2. Energy budget: stop if the next check interval, projected from the recent ones, would take
   the cumulative cost over ``energy_budget_kwh`` (at once, whatever the epoch).
3. Holds of both the plateau and the marginal rule: before ``min_epochs`` epochs; while a known
   learning-rate decay is ahead within the horizon (``epochs_until_lr_decay``) and for
   ``DECAY_WINDOW`` checks after it, as long as decays keep paying (once one bought no new best
   within those checks, later ones are not waited for); after the curve made a step-jump, for as
   long again as the stretch before it (:mod:`.schedule`).
4. Plateau: ``patience`` checks without improvement (Lightning's rule), counted from the later of
   the last improvement and the latest learning-rate decay (known, or seen as a step-jump). With
   no schedule information and no step-jump this is exactly Lightning ``EarlyStopping``.
5. Marginal gain, only once more than ``min_horizon_fraction`` of the planned epochs has run: the
   gain the learning curve still projects up to the planned horizon, per unit of projected cost,
   is below ``min_relative_gain`` times the average rate so far (or below ``min_gain_per_kwh``),
   unless the recent slope shows, beyond its noise, that the run still improves at least at the
   threshold rate (a steadily improving run is never stopped by this rule alone).

Deterministic: the same history gives the same decision, bit for bit, on every DDP rank; the
learning-curve fit is skipped while the marginal rule is held, which changes no decision.

Bounded work: :class:`StoppingPolicy` keeps the history in append-only arrays
(:class:`~lightning_green.policy.history.History`) and finds step-jumps incrementally
(:class:`~lightning_green.policy.schedule.StepDetector`); the fit sees at most
:data:`~lightning_green.policy.marginal.MAX_FIT_POINTS` checks and every other rule a few recent
ones. An update costs the same at check 300 and at check 300,000, so replaying a curve takes time
linear in its length (``python benchmarks/stopping.py --scaling``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightning_green.policy import budget as _budget
from lightning_green.policy import schedule as _schedule
from lightning_green.policy.config import StoppingConfig
from lightning_green.policy.decision import StopDecision, StopReason
from lightning_green.policy.history import History
from lightning_green.policy.marginal import MAX_FIT_POINTS, MarginalAssessment, assess_segment
from lightning_green.policy.plateau import PlateauState, evaluate_plateau
from lightning_green.policy.schedule import DecayTracker, StepDetector

STATE_VERSION = 2
"""Version of :meth:`StoppingPolicy.state_dict` (2: the learning-rate decay tracker)."""


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def decide(
    history: History,
    plateau_state: PlateauState,
    config: StoppingConfig,
    *,
    max_epochs: int | None = None,
    epochs_until_lr_decay: int | None = None,
    decays: DecayTracker | None = None,
    monitor: str = "metric",
    steps: list[int] | None = None,
) -> tuple[StopDecision, PlateauState, DecayTracker]:
    """Decide at the latest check of ``history``; a pure function.

    Args:
        history: All checks so far, the latest last.
        plateau_state: Plateau state after the previous check.
        config: Policy arguments.
        max_epochs: Planned number of epochs of the run (``None``: unknown).
        epochs_until_lr_decay: Epochs until a scheduled learning-rate decay, if known.
        decays: The learning-rate decays known after the previous check (``DecayTracker()`` at the
            start; ``None`` is the same).
        monitor: The metric's name, for messages.
        steps: The step-jumps of the finite checks (:func:`.schedule.detect_steps` of
            ``history.finite_values``), when kept incrementally (:class:`.schedule.StepDetector`);
            ``None``: found here, in time linear in the history.

    Returns:
        The decision, the plateau state and the decay tracker after this check.

    The work is bounded whatever the length of the history (the fit sees at most
    ``MAX_FIT_POINTS`` points, the other rules a few recent checks), except finding ``steps``
    when they are not given.
    """
    if history.sign != config.sign:
        raise ValueError(
            f"decide: the history is oriented with sign {history.sign:+g}, the config's mode {config.mode!r}"
            f" needs {config.sign:+g}"
        )
    metrics, costs, epochs = history.metrics, history.costs_kwh, history.epochs
    current = float(metrics[-1])
    epoch = int(epochs[-1])
    check = len(metrics) - 1
    tracker = (DecayTracker() if decays is None else decays).advance(
        check=check, epoch=epoch, epochs_until_lr_decay=epochs_until_lr_decay
    )
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
    tracker = tracker.record(improved=plateau.improved)
    base: dict[str, Any] = {"epoch": epoch, "best_metric": state.best_score, "wait_count": state.wait_count}
    if plateau.reason in (StopReason.NON_FINITE, StopReason.THRESHOLD_REACHED, StopReason.DIVERGENCE):
        return StopDecision(True, plateau.reason, plateau.message or "", **base), state, tracker

    over, next_kwh = _budget.exceeds_budget(costs, config.energy_budget_kwh)
    base["next_epoch_kwh"] = next_kwh
    if over:
        message = (
            f"Energy budget: {costs[-1]:.6g} kWh spent, the next check interval would need about"
            f" {next_kwh:.3g} kWh more,"
            f" over energy_budget_kwh = {config.energy_budget_kwh}. Signaling Trainer to stop."
        )
        return StopDecision(True, StopReason.ENERGY_BUDGET, message, **base), state, tracker

    # Holds, from the finite part of the history.
    n_finite = history.n_finite
    f_costs, f_epochs = history.finite_costs_kwh, history.finite_epochs
    if steps is None:
        steps = _schedule.detect_steps(history.finite_values)
    hold = None
    if epoch + 1 < config.min_epochs:
        hold = "min_epochs"
    elif tracker.holds(
        check=check, epoch=epoch, epochs_until_lr_decay=epochs_until_lr_decay, max_epochs=max_epochs
    ):
        hold = "lr_decay_ahead"
    else:
        until = _schedule.step_hold_until(f_epochs, steps, max_epochs)
        if until is not None and epoch < until:
            hold = "lr_step_seen"
    marginal_hold = hold
    if hold is None and max_epochs is not None and epoch + 1 <= config.min_horizon_fraction * max_epochs:
        marginal_hold = "horizon_fraction"  # the marginal rule only; the plateau rule keeps its own meaning
    base["hold"] = marginal_hold
    at_horizon = max_epochs is not None and epoch + 1 >= max_epochs
    evaluate_marginal = (
        marginal_hold is None
        and not at_horizon
        and n_finite >= 2
        and (config.min_relative_gain is not None or config.min_gain_per_kwh is not None)
    )

    # Marginal assessment: the learning-curve fit only when the marginal rule can act on it.
    segment_start = steps[-1] if steps else 0
    if tracker.last_decay_epoch is not None:
        first_after = int(np.searchsorted(f_epochs, tracker.last_decay_epoch, side="left"))
        if first_after < n_finite and first_after > segment_start:
            segment_start = first_after
    assessment = MarginalAssessment()
    if n_finite >= 2:
        horizon = _budget.remaining_cost(f_costs, f_epochs, max_epochs)
        assessment = assess_segment(
            history.segment(segment_start, MAX_FIT_POINTS),
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

    if hold is None and plateau.reason is StopReason.PLATEAU:
        # Patience counts from the later of the last improvement and the latest decay: the check
        # before the decay's first one is taken as the reference, as if it had improved.
        since, restart = state.wait_count, ""
        if tracker.decay_check is not None and check - tracker.decay_check + 1 < since:
            since = check - tracker.decay_check + 1
            restart = f"the learning-rate decay at epoch {int(epochs[tracker.decay_check])}"
        if steps and check - history.finite_index_of(steps[-1]) + 1 < since:
            since = check - history.finite_index_of(steps[-1]) + 1
            restart = f"the step-jump at epoch {int(f_epochs[steps[-1]])}"
        if since >= config.patience:
            message = plateau.message or ""
            if restart:
                message = (
                    f"Monitored metric {monitor} did not improve in the {since} records since {restart}."
                    f" Best score: {state.best_score:.3f}. Signaling Trainer to stop."
                )
            return StopDecision(True, StopReason.PLATEAU, message, **base), state, tracker
    if evaluate_marginal:
        marginal = _marginal_stop(assessment, config)
        if marginal is not None:
            return StopDecision(True, StopReason.MARGINAL_GAIN, marginal, **base), state, tracker

    message = plateau.message or (
        f"Metric {monitor} did not improve in the last {state.wait_count} records;"
        f" projected gain per kWh {_fmt(assessment.projected_gain_per_kwh)},"
        f" relative {_fmt(assessment.relative_gain)}" + (f" (held: {marginal_hold})" if marginal_hold else "")
    )
    return StopDecision(False, None, message, **base), state, tracker


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
        self._history = History(sign=self.config.sign)
        self._steps = StepDetector()
        self._plateau = PlateauState.initial(self.config.mode)
        self._decays = DecayTracker()
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
        return len(self._history)

    @property
    def history(self) -> History:
        """The checks so far (read-only arrays: ``history.costs_kwh`` and so on)."""
        return self._history

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
            epochs_until_lr_decay: Epochs that still run at the current learning rate before the next
                scheduled decay (0: the next epoch is the first at the lower rate), or ``None``
                when no decay is known to be coming.

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
        history = self._history
        if len(history) and epoch < history.epochs[-1]:
            raise ValueError(
                f"StoppingPolicy.update: `epoch` went backwards: {epoch} after {int(history.epochs[-1])}"
            )
        if max_epochs is not None and (isinstance(max_epochs, bool) or max_epochs <= 0):
            raise ValueError(
                f"StoppingPolicy.update: `max_epochs` must be a positive integer or None, got {max_epochs!r}"
            )
        if len(history):
            cost = max(cost, float(history.costs_kwh[-1]))
        history.append(metric, cost, int(epoch))
        if math.isfinite(metric):
            self._steps.push(self.config.sign * metric)
        decision, self._plateau, self._decays = decide(
            history,
            self._plateau,
            self.config,
            max_epochs=max_epochs,
            epochs_until_lr_decay=epochs_until_lr_decay,
            decays=self._decays,
            monitor=self.monitor,
            steps=self._steps.steps,
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
            "metrics": [_json_float(m) for m in self._history.metrics.tolist()],
            "costs_kwh": self._history.costs_kwh.tolist(),
            "epochs": [int(e) for e in self._history.epochs.tolist()],
            "best_score": _json_float(self._plateau.best_score),
            "wait_count": self._plateau.wait_count,
            "decays": self._decays.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; later decisions equal the uninterrupted policy's.

        The config stored in ``state`` is informational: the policy keeps its own (so a resumed run
        may change, for instance, ``patience``, as with Lightning's ``EarlyStopping``).

        Raises:
            ValueError: If ``state`` was written by another version of the policy (its ``version``
                is not :data:`STATE_VERSION`).
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"StoppingPolicy state version must be {STATE_VERSION}, got {state.get('version')!r}"
                " (a checkpoint from another version of lightning_green)"
            )
        metrics = [_from_json_float(m) for m in state["metrics"]]
        self._history = History(
            metrics,
            [float(c) for c in state["costs_kwh"]],
            [int(e) for e in state["epochs"]],
            sign=self.config.sign,
        )
        self._steps = StepDetector()
        for value in self._history.finite_values.tolist():
            self._steps.push(value)
        self._plateau = PlateauState(_from_json_float(state["best_score"]), int(state["wait_count"]))
        self._decays = DecayTracker.from_dict(state["decays"])


def _json_float(x: float) -> float | str:
    """Floats as JSON allows: non-finite ones as strings."""
    return x if math.isfinite(x) else repr(x)


def _from_json_float(x: float | str) -> float:
    return float(x)
