"""The pure stopping decision: :func:`decide` over the history of checks (no state, no Lightning).

:class:`~lightning_green.policy.stopping.StoppingPolicy` keeps the state around it; the order of
the checks and what each rule means are described in :mod:`lightning_green.policy.stopping`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightning_green.policy import budget as _budget
from lightning_green.policy import schedule as _schedule
from lightning_green.policy.config import StoppingConfig
from lightning_green.policy.decision import StopDecision, StopReason
from lightning_green.policy.history import History, segment_of
from lightning_green.policy.marginal import MAX_FIT_POINTS, MarginalAssessment, assess_segment
from lightning_green.policy.plateau import PlateauState, evaluate_plateau, rest_patience
from lightning_green.policy.savings import project_savings
from lightning_green.policy.schedule import DecayTracker


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def _epoch_index(progress: float, check: int, progress_per_epoch: float | None) -> int:
    """0-based index of the epoch a check at ``progress`` fell in (the check index without epochs)."""
    if progress_per_epoch is None:
        return check
    return max(math.ceil(progress / progress_per_epoch - 1e-9) - 1, 0)


def _where(progress: float, check: int, progress_per_epoch: float | None) -> str:
    """A check's position for messages: ``epoch 3`` (0-based), ``3.25 epochs`` or ``progress 1500``."""
    if progress_per_epoch is None:
        return f"progress {progress:g}"
    epochs = progress / progress_per_epoch
    if epochs == math.floor(epochs):
        return f"epoch {_epoch_index(progress, check, progress_per_epoch)}"
    return f"{epochs:.4g} epochs"


def decide(
    history: History,
    plateau_state: PlateauState,
    config: StoppingConfig,
    *,
    horizon: float | None = None,
    lr_decay_in: float | None = None,
    progress_per_epoch: float | None = 1.0,
    decays: DecayTracker | None = None,
    monitor: str = "metric",
    steps: list[int] | None = None,
    outside_kwh: float = 0.0,
) -> tuple[StopDecision, PlateauState, DecayTracker]:
    """Decide at the latest check of ``history``; a pure function.

    Progress, horizon and ``lr_decay_in`` share one unit: epochs completed (possibly fractional)
    or steps (see :meth:`StoppingPolicy.update`).

    Args:
        history: All checks so far, the latest last, oriented with the config's ``sign``.
        plateau_state: Plateau state after the previous check.
        config: Policy arguments.
        horizon: Planned end of the run in the unit of progress (``None``: unknown).
        lr_decay_in: Progress still to run at the current learning rate before a scheduled
            decay, if known.
        progress_per_epoch: Units of progress in one epoch (1 when progress counts epochs; steps
            per epoch when it counts steps; ``None`` when the run has no epochs: ``min_epochs``
            then counts checks).
        decays: The learning-rate decays known after the previous check (``DecayTracker()`` at the
            start; ``None`` is the same).
        monitor: The metric's name, for messages.
        steps: The step-jumps of the finite checks (:func:`.schedule.detect_steps` of
            ``history.finite_values``), when kept incrementally (:class:`.schedule.StepDetector`);
            ``None``: found here, in time linear in the history.
        outside_kwh: The run's cost outside the check intervals so far (before its first epoch,
            after an earlier fit's last): the energy budget counts it, no projection does.

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
    metrics, costs, progress_all = history.metrics, history.costs_kwh, history.progress
    current = float(metrics[-1])
    progress = float(progress_all[-1])
    check = len(metrics) - 1
    tracker = (DecayTracker() if decays is None else decays).advance(
        check=check, progress=progress, lr_decay_in=lr_decay_in
    )
    plateau = evaluate_plateau(current, plateau_state, monitor=monitor, **config.plateau_arguments())
    state = plateau.state
    tracker = tracker.record(improved=plateau.improved)
    base: dict[str, Any] = {
        "epoch": _epoch_index(progress, check, progress_per_epoch),
        "best_metric": state.best_score,
        "wait_count": state.wait_count,
        "progress": progress,
        "horizon": None if horizon is None else float(horizon),
    }
    n_finite = history.n_finite
    f_costs, f_progress = history.finite_costs_kwh, history.finite_progress
    if steps is None:
        steps = _schedule.detect_steps(history.finite_values)
    # The current segment of the curve: after its last step-jump, or the latest decay if later.
    segment_start = steps[-1] if steps else 0
    if tracker.last_decay_at is not None:
        first_after = int(np.searchsorted(f_progress, tracker.last_decay_at, side="right"))
        if first_after < n_finite and first_after > segment_start:
            segment_start = first_after
    rest_kwh = _budget.remaining_cost_to(f_costs, f_progress, horizon) if n_finite >= 2 else None
    future_checks = _budget.checks_remaining(progress_all, horizon)

    def assess(project: bool, central: bool = False, costs: np.ndarray | None = None) -> MarginalAssessment:
        """The marginal assessment of the current segment, on the measured costs or on ``costs``."""
        if rest_kwh is None:
            return MarginalAssessment()
        if costs is None:
            segment, rest = history.segment(segment_start, MAX_FIT_POINTS), rest_kwh
        else:
            segment = segment_of(
                costs, history.finite_values, segment_start, MAX_FIT_POINTS, history.best_value
            )
            rest = _budget.remaining_cost_to(costs, f_progress, horizon)
        return assess_segment(
            segment,
            horizon_cost_kwh=rest,
            sign=config.sign,
            project=project,
            n_future_checks=future_checks,
            central=central,
        )

    def stop(reason: StopReason, message: str) -> StopDecision:
        """The stopping decision, with what the stop avoids up to the horizon (projected)."""
        gain = None
        if (
            reason in (StopReason.PLATEAU, StopReason.MARGINAL_GAIN, StopReason.ENERGY_BUDGET)
            and horizon is not None
            and progress < horizon
        ):
            gain = assess(True, central=True).projected_gain_central  # once, at the stop
        savings = project_savings(
            costs, progress_all, horizon, progress_per_epoch=progress_per_epoch, metric_gain=gain
        )
        return StopDecision(True, reason, message, **base, savings=savings)

    if plateau.reason in (StopReason.NON_FINITE, StopReason.THRESHOLD_REACHED, StopReason.DIVERGENCE):
        return stop(plateau.reason, plateau.message or ""), state, tracker

    over, next_kwh = _budget.exceeds_budget(costs, config.energy_budget_kwh, outside_kwh)
    base["next_epoch_kwh"] = next_kwh
    # At the planned end no further check interval is run: the budget has nothing to stop.
    if over and (horizon is None or progress < horizon):
        spent = float(costs[-1]) + outside_kwh
        outside = f" ({outside_kwh:.3g} of it outside the training epochs)" if outside_kwh > 0 else ""
        message = (
            f"Energy budget: {spent:.6g} kWh spent{outside}, the next check interval would need about"
            f" {next_kwh:.3g} kWh more,"
            f" over energy_budget_kwh = {config.energy_budget_kwh}. Signaling Trainer to stop."
        )
        return stop(StopReason.ENERGY_BUDGET, message), state, tracker

    # Holds, from the finite part of the history.
    if progress_per_epoch is None:
        before_min_epochs = check + 1 < config.min_epochs
    else:
        before_min_epochs = progress < config.min_epochs * progress_per_epoch
    hold = None
    if before_min_epochs:
        hold = "min_epochs"
    elif tracker.holds(check=check, progress=progress, lr_decay_in=lr_decay_in, horizon=horizon):
        hold = "lr_decay_ahead"
    else:
        until = _schedule.step_hold_until(f_progress, steps, horizon, first_epoch=progress_per_epoch or 0.0)
        if until is not None and progress < until:
            hold = "lr_step_seen"
    marginal_hold = hold
    if hold is None and horizon is not None and progress <= config.min_horizon_fraction * horizon:
        marginal_hold = "horizon_fraction"  # the marginal rule only; the plateau rule keeps its own meaning
    base["hold"] = marginal_hold
    at_horizon = horizon is not None and progress >= horizon
    evaluate_marginal = (
        marginal_hold is None
        and not at_horizon
        and n_finite >= 2
        and (config.min_relative_gain is not None or config.min_gain_per_kwh is not None)
    )

    # Marginal assessment: the learning-curve fit only when the marginal rule can act on it.
    assessment = assess(evaluate_marginal)
    base.update(assessment.decision_fields())

    wait, shortened = rest_patience(
        config.patience, config.patience_rest_fraction, None if horizon is None else future_checks
    )
    if hold is None and not plateau.improved and state.wait_count >= wait:
        # Patience counts from the later of the last improvement and the latest decay: the check
        # before the decay's first one is taken as the reference, as if it had improved.
        since, restart = state.wait_count, ""
        if tracker.decay_check is not None and check - tracker.decay_check + 1 < since:
            since = check - tracker.decay_check + 1
            where = _where(float(progress_all[tracker.decay_check]), tracker.decay_check, progress_per_epoch)
            restart = f"the learning-rate decay at {where}"
        if steps and check - history.finite_index_of(steps[-1]) + 1 < since:
            jump_check = history.finite_index_of(steps[-1])
            since = check - jump_check + 1
            restart = (
                f"the step-jump at {_where(float(f_progress[steps[-1]]), jump_check, progress_per_epoch)}"
            )
        if since >= wait:
            message = plateau.message or ""
            if shortened:
                message = (
                    f"Monitored metric {monitor} did not improve in the last {since} records"
                    + (f" (since {restart})" if restart else "")
                    + f", at least patience_rest_fraction = {config.patience_rest_fraction} of the"
                    f" {future_checks:.3g} checks still planned (patience {config.patience})."
                    f" Best score: {state.best_score:.3f}. Signaling Trainer to stop."
                )
            elif restart:
                message = (
                    f"Monitored metric {monitor} did not improve in the {since} records since {restart}."
                    f" Best score: {state.best_score:.3f}. Signaling Trainer to stop."
                )
            return stop(StopReason.PLATEAU, message), state, tracker
    if evaluate_marginal:
        marginal = _marginal_stop(assessment, config)
        # The measured cost of each check interval carries the meter's noise (the CPU-time
        # estimate of the same epoch varies by a third under load): the fit against it and the
        # rate of the last intervals move with it, and on a run whose relative gain sits near the
        # threshold that noise alone decided stops (the same val_acc curve, four runs under load:
        # one stopped at epoch 16 with 1.1 points of regret, three ran on). A marginal stop must
        # also hold with every check charged the run's average rate; a real change of the rate (a
        # cheaper batch size or precision) still counts where it argues for going on.
        flat = _budget.average_rate_costs(f_costs, f_progress) if marginal is not None else None
        if flat is not None and _marginal_stop(assess(True, costs=flat), config) is None:
            marginal, base["hold"] = None, "cost_noise"
        if marginal is not None:
            return stop(StopReason.MARGINAL_GAIN, marginal), state, tracker

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
