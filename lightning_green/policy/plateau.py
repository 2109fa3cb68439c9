"""Plateau detection with Lightning ``EarlyStopping``'s semantics, exactly.

:func:`evaluate_plateau` reproduces ``EarlyStopping._evaluate_stopping_criteria`` of
``pytorch_lightning/callbacks/early_stopping.py``: the same order of checks (non-finite,
stopping threshold, divergence threshold, improvement, patience), the same sign handling of
``min_delta`` (it is negated in ``"min"`` mode and the improvement test is
``monitor_op(current - min_delta, best_score)``), the same strict comparisons, the same
state updates (``best_score`` and ``wait_count`` change only on the improvement/patience
branches) and messages with the same content. It works on Python floats (float64) and knows
nothing of Lightning or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lightning_green.policy.decision import StopReason

ORDER = {"min": "<", "max": ">"}


@dataclass(frozen=True)
class PlateauState:
    """What the plateau rule remembers between checks (Lightning's ``best_score``, ``wait_count``).

    Attributes:
        best_score: Best value seen so far; ``inf`` (``"min"``) or ``-inf`` (``"max"``) before any.
        wait_count: Checks since the last improvement by more than ``min_delta``.
    """

    best_score: float
    wait_count: int = 0

    @classmethod
    def initial(cls, mode: str) -> PlateauState:
        """The state before the first check.

        Example:
            >>> PlateauState.initial("min")
            PlateauState(best_score=inf, wait_count=0)
        """
        return cls(best_score=math.inf if mode == "min" else -math.inf)


@dataclass(frozen=True)
class PlateauResult:
    """Outcome of one plateau check.

    Attributes:
        state: The state after this check.
        should_stop: Whether Lightning's ``EarlyStopping`` would stop here.
        reason: ``NON_FINITE``, ``THRESHOLD_REACHED``, ``DIVERGENCE`` or ``PLATEAU`` when stopping,
            else ``None``.
        message: Lightning's message for this check (``None`` where Lightning has none: a check
            without improvement that does not exhaust patience).
        improved: Whether this check improved on the best score by more than ``min_delta``.
    """

    state: PlateauState
    should_stop: bool
    reason: StopReason | None
    message: str | None
    improved: bool


def _better(mode: str, a: float, b: float) -> bool:
    """Lightning's ``monitor_op``: ``torch.lt`` in ``"min"`` mode, ``torch.gt`` in ``"max"`` mode."""
    return a < b if mode == "min" else a > b


def evaluate_plateau(
    current: float,
    state: PlateauState,
    *,
    mode: str = "min",
    min_delta: float = 0.0,
    patience: int = 3,
    check_finite: bool = True,
    stopping_threshold: float | None = None,
    divergence_threshold: float | None = None,
    monitor: str = "metric",
) -> PlateauResult:
    """One check of Lightning ``EarlyStopping``'s stopping criteria, as a pure function.

    Args:
        current: The monitored metric at this check.
        state: The state after the previous check (:meth:`PlateauState.initial` at the start).
        mode: ``"min"`` or ``"max"``.
        min_delta: Minimum change that counts as improvement, as passed to ``EarlyStopping``.
        patience: Checks without improvement after which to stop.
        check_finite: Stop when ``current`` is NaN or infinite.
        stopping_threshold: Stop when ``current`` is better than this.
        divergence_threshold: Stop when ``current`` is worse than this.
        monitor: The metric's name, for the messages.

    Returns:
        The decision and the new state.

    Example:
        >>> s = PlateauState.initial("min")
        >>> r = evaluate_plateau(1.0, s, patience=1)
        >>> r.improved, r.should_stop
        (True, False)
        >>> r = evaluate_plateau(1.5, r.state, patience=1)
        >>> r.should_stop, r.reason.value
        (True, 'plateau')
    """
    signed_delta = min_delta * (1 if mode == "max" else -1)
    order = ORDER[mode]
    best = state.best_score
    if check_finite and not math.isfinite(current):
        message = (
            f"Monitored metric {monitor} = {current} is not finite."
            f" Previous best value was {best:.3f}. Signaling Trainer to stop."
        )
        return PlateauResult(state, True, StopReason.NON_FINITE, message, False)
    if stopping_threshold is not None and _better(mode, current, stopping_threshold):
        message = (
            f"Stopping threshold reached: {monitor} = {current} {order} {stopping_threshold}."
            " Signaling Trainer to stop."
        )
        return PlateauResult(state, True, StopReason.THRESHOLD_REACHED, message, False)
    if divergence_threshold is not None and _better(mode, -current, -divergence_threshold):
        message = (
            f"Divergence threshold reached: {monitor} = {current} {order} {divergence_threshold}."
            " Signaling Trainer to stop."
        )
        return PlateauResult(state, True, StopReason.DIVERGENCE, message, False)
    if _better(mode, current - signed_delta, best):
        if math.isfinite(best):
            message = (
                f"Metric {monitor} improved by {abs(best - current):.3f} >="
                f" min_delta = {abs(signed_delta)}. New best score: {current:.3f}"
            )
        else:
            message = f"Metric {monitor} improved. New best score: {current:.3f}"
        return PlateauResult(PlateauState(current, 0), False, None, message, True)
    wait_count = state.wait_count + 1
    new_state = PlateauState(best, wait_count)
    if wait_count >= patience:
        message = (
            f"Monitored metric {monitor} did not improve in the last {wait_count} records."
            f" Best score: {best:.3f}. Signaling Trainer to stop."
        )
        return PlateauResult(new_state, True, StopReason.PLATEAU, message, False)
    return PlateauResult(new_state, False, None, None, False)


REST_PATIENCE_MIN = 10
"""Fewest checks without improvement after which the rest-of-run wait (:func:`rest_patience`)
stops: near the planned end a stop still needs as many checks without a new best as the patience
commonly given to Lightning ``EarlyStopping``, so a few unlucky checks of a noisy metric do not."""


def rest_patience(patience: int, fraction: float | None, checks_left: float | None) -> tuple[int, bool]:
    """The wait after which the plateau backstop stops: ``patience``, or less near the planned end.

    Waiting for a new best is worth it while a stop can still save much more than the wait has
    cost. With ``fraction`` (``patience_rest_fraction``) the wait is also limited to that fraction
    of the checks still planned, at least :data:`REST_PATIENCE_MIN`: at ``0.5``, a run that has
    gone half of its remaining checks without improving stops, and the stop still saves twice
    the checks the wait cost. Early in the run (many checks left) ``patience`` decides; without a
    planned end (``checks_left`` is ``None``) or with ``fraction=None`` it always does.

    Args:
        patience: Lightning's ``patience`` (checks).
        fraction: ``StoppingConfig.patience_rest_fraction``, or ``None`` (off).
        checks_left: Checks still planned up to the horizon, or ``None`` when unknown.

    Returns:
        ``(wait, shortened)``: the checks without improvement that stop the run, and whether that
        is fewer than ``patience``.

    Example:
        >>> rest_patience(30, 0.5, 100.0), rest_patience(30, 0.5, 30.0), rest_patience(30, 0.5, 4.0)
        ((30, False), (15, True), (10, True))
        >>> rest_patience(5, 0.5, 4.0), rest_patience(30, None, 4.0), rest_patience(30, 0.5, None)
        ((5, False), (30, False), (30, False))
    """
    if fraction is None or checks_left is None:
        return patience, False
    wait = max(REST_PATIENCE_MIN, math.ceil(fraction * checks_left - 1e-9))
    return (wait, True) if wait < patience else (patience, False)
