"""Where a training run is at a check, in the stopping policy's terms: progress, horizon, next decay.

Lightning validates (and the stopper checks) at the end of every epoch by default, but also
several times an epoch (``val_check_interval < 1``, or every N batches), every few epochs
(``check_val_every_n_epoch > 1``), or in a run planned in optimizer steps (``max_steps`` without
``max_epochs``). :func:`check_place` turns the fit loop's counters (:class:`FitPosition`, read by
the callback's compatibility layer) into what
:meth:`~lightning_green.policy.StoppingPolicy.update` takes:

- a run planned in epochs counts progress in epochs: ``current_epoch + 1`` at a check at the end of
  an epoch (exactly the ``epoch=current_epoch`` of a one-check-an-epoch run), the fraction of the
  epoch's batches done inside an epoch; the horizon is ``max_epochs`` (or what ``max_steps``
  allows, when it is shorter; the 1000 epochs Lightning puts in place of an unset ``max_epochs``
  is no plan, a ``max_epochs=1000`` of the user's is: :attr:`FitPosition.planned_epochs`);
- a check inside an epoch of unknown length (a train loader without a length) in a run planned in
  epochs is placed in epochs as well, at the fraction of an estimated length: the mean of the
  epochs completed, and at least the batches done and the one the loader has ready (in the first
  epoch, which no earlier epoch measures, ``b / (b + 1)`` after ``b`` batches: always before the
  epoch's end, so ``min_epochs`` counts the epochs completed);
- a run planned in steps (or checked inside epochs of unknown length without an epoch plan) counts
  optimizer steps (``global_step``), the horizon is ``max_steps`` and an epoch is the optimizer
  steps of one (``None`` when the train loader has no length).

The distance to the next scheduled learning-rate drop comes in epochs after the current one
(:func:`~lightning_green.training.learning_rates.epochs_until_lr_decay`): the drop starts at epoch
``current_epoch + 1 + hint``, which is converted to the unit of progress. No Lightning here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LIGHTNING_DEFAULT_MAX_EPOCHS = 1000
"""What Lightning substitutes for an unset ``max_epochs`` (without ``max_steps``): no plan of the user's.

Taken for Lightning's only where nothing says who set it (:attr:`FitPosition.max_epochs_implicit`).
"""


@dataclass(frozen=True)
class FitPosition:
    """The fit loop's counters and plan at a check, as plain numbers.

    Attributes:
        current_epoch: 0-based index of the epoch in progress (``trainer.current_epoch``).
        global_step: Optimizer steps taken so far.
        batches_done: Training batches completed in the epoch in progress.
        batches_per_epoch: Training batches in an epoch (``num_training_batches``; ``None`` or
            infinite when the loader has no length).
        accumulate_grad_batches: Batches per optimizer step.
        max_epochs: ``trainer.max_epochs`` (``None``/-1: none).
        max_steps: ``trainer.max_steps`` (``None``/-1: none).
        epoch_done: Whether the epoch in progress has reached its last batch.
        checks_inside_epochs: Whether validation runs inside epochs (``val_check_interval`` below
            1 or a number of batches).
        batches_before_epoch: Training batches completed in the epochs before the one in progress
            (``None``: not known), which estimate the length of an epoch the loader does not give.
        max_epochs_implicit: Whether ``max_epochs`` is what Lightning put in place of an unset one
            (the user planned no epochs), ``False`` when the user set it; ``None`` when not known:
            then ``max_epochs`` of :data:`LIGHTNING_DEFAULT_MAX_EPOCHS` without ``max_steps`` is
            taken for Lightning's.
    """

    current_epoch: int
    global_step: int
    batches_done: int
    batches_per_epoch: float | None
    accumulate_grad_batches: int
    max_epochs: int | None
    max_steps: int | None
    epoch_done: bool
    checks_inside_epochs: bool = False
    batches_before_epoch: int | None = None
    max_epochs_implicit: bool | None = None

    @property
    def known_batches(self) -> float | None:
        """``batches_per_epoch`` when it is a positive finite number, else ``None``."""
        n = self.batches_per_epoch
        return float(n) if n and math.isfinite(n) and n > 0 else None

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps in an epoch (batches over gradient accumulation), ``None`` if unknown."""
        n = self.known_batches
        return None if n is None else math.ceil(n / max(1, self.accumulate_grad_batches))

    @property
    def epoch_steps_estimate(self) -> int | None:
        """:attr:`steps_per_epoch`, or where the loader has no length the mean of the epochs completed.

        Example:
            >>> FitPosition(2, 95, 5, float("inf"), 1, 12, -1, False, True, 90).epoch_steps_estimate
            45
        """
        known = self.steps_per_epoch
        earlier = self.batches_before_epoch
        if known is not None or not earlier or self.current_epoch <= 0:
            return known
        return math.ceil(earlier / self.current_epoch / max(1, self.accumulate_grad_batches))

    @property
    def planned_epochs(self) -> int | None:
        """``max_epochs`` when the user planned one (positive, not what Lightning put in place of none).

        Example:
            >>> FitPosition(0, 0, 0, 10, 1, max_epochs=1000, max_steps=-1, epoch_done=True,
            ...             max_epochs_implicit=False).planned_epochs  # Trainer(max_epochs=1000)
            1000
            >>> print(FitPosition(0, 0, 0, 10, 1, 1000, -1, True, max_epochs_implicit=True).planned_epochs)
            None
            >>> print(FitPosition(0, 0, 0, 10, 1, 1000, -1, True).planned_epochs)  # not known: Lightning's
            None
        """
        epochs = self.max_epochs if self.max_epochs is not None and self.max_epochs > 0 else None
        implicit = self.max_epochs_implicit
        if implicit is None:  # not known: Lightning's stand-in, unless max_steps was set (then it puts -1)
            implicit = epochs == LIGHTNING_DEFAULT_MAX_EPOCHS and self.planned_steps is None
        return None if implicit else epochs

    @property
    def planned_steps(self) -> int | None:
        """``max_steps`` when set (positive)."""
        return self.max_steps if self.max_steps is not None and self.max_steps > 0 else None

    @property
    def in_steps(self) -> bool:
        """Whether progress counts optimizer steps.

        In a run planned in steps only, and in one without a plan checked inside epochs of no known
        length; a run planned in epochs counts epochs, whatever its loader.
        """
        by_plan = self.planned_steps is not None and self.planned_epochs is None
        unplaced = self.checks_inside_epochs and self.known_batches is None and self.planned_epochs is None
        return by_plan or unplaced

    @property
    def epoch_fraction(self) -> float:
        """The fraction of the epoch in progress done (before its end), from its batches.

        Of the epoch's batches when the loader has a length; otherwise of an estimated length: the
        mean batches of the epochs completed, and at least the batches done plus the one the loader
        has ready, so that a check inside the epoch is always placed before its end.

        Example:
            >>> FitPosition(1, 60, 15, float("inf"), 1, 12, -1, False, True, 45).epoch_fraction
            0.3333333333333333
            >>> FitPosition(0, 15, 15, float("inf"), 1, 12, -1, False, True, 0).epoch_fraction  # first epoch
            0.9375
        """
        batches = self.known_batches
        if batches is not None:
            return min(self.batches_done / batches, 1.0)
        earlier = self.batches_before_epoch
        mean = earlier / self.current_epoch if earlier and self.current_epoch > 0 else 0.0
        return self.batches_done / max(mean, self.batches_done + 1.0)


@dataclass(frozen=True)
class CheckPlace:
    """What :meth:`~lightning_green.policy.StoppingPolicy.update` is told about where a check is.

    Attributes:
        progress: Training completed (epochs, possibly fractional, or optimizer steps).
        horizon: The planned end in the same unit, or ``None``.
        lr_decay_in: Training left at the current learning rate before the next scheduled drop,
            same unit, or ``None``.
        progress_per_epoch: Units of progress in an epoch (1 for epochs; ``None``: no epochs).
        unit: ``"epochs"`` or ``"steps"``.
    """

    progress: float
    horizon: float | None
    lr_decay_in: float | None
    progress_per_epoch: float | None
    unit: str

    def _in_epochs(self, value: float | None) -> float | None:
        if value is None or self.progress_per_epoch is None:
            return None
        return value if self.unit == "epochs" else value / self.progress_per_epoch

    @property
    def epochs(self) -> float | None:
        """Epochs completed at the check (a fraction inside an epoch); ``None`` in a run without epochs.

        What the stopper logs as ``energy/check_epochs``, for replay.

        Example:
            >>> CheckPlace(30.0, 100.0, None, 20.0, "steps").epochs
            1.5
        """
        return self._in_epochs(self.progress)

    @property
    def horizon_epochs(self) -> int | float | None:
        """The planned end in epochs (an ``int`` when whole), ``None`` without a plan or without epochs.

        What the stopper records as ``lightning_green.max_epochs``, for replay: in a run planned in
        steps, ``max_steps`` over the steps of an epoch, which may be a fraction.

        Example:
            >>> CheckPlace(30.0, 100.0, None, 20.0, "steps").horizon_epochs
            5
            >>> CheckPlace(30.0, 90.0, None, 20.0, "steps").horizon_epochs
            4.5
        """
        horizon = self._in_epochs(self.horizon)
        if horizon is None:
            return None
        return int(horizon) if float(horizon).is_integer() else horizon


def horizon_epochs(position: FitPosition) -> int | None:
    """The planned length in epochs (``max_epochs``, or what ``max_steps`` allows), ``None`` without a plan.

    The horizon of a run planned in epochs (:attr:`CheckPlace.horizon_epochs` is what the stopper
    records for replay, in runs planned in steps too).

    Example:
        >>> horizon_epochs(FitPosition(0, 0, 0, 10, 1, max_epochs=-1, max_steps=95, epoch_done=True))
        10
        >>> print(horizon_epochs(FitPosition(0, 0, 0, 10, 1, 1000, -1, True, max_epochs_implicit=True)))
        None
        >>> horizon_epochs(FitPosition(0, 0, 0, 10, 1, 1000, -1, True, max_epochs_implicit=False))
        1000
    """
    horizon = position.planned_epochs
    steps, batches = position.planned_steps, position.known_batches
    if steps is not None and batches is not None:
        by_steps = math.ceil(steps * max(1, position.accumulate_grad_batches) / batches)
        horizon = by_steps if horizon is None else min(horizon, by_steps)
    return horizon


def check_place(position: FitPosition, lr_hint_epochs: int | None) -> CheckPlace:
    """Progress, horizon and distance to the next learning-rate drop at a check.

    Args:
        position: The fit loop's counters at the check.
        lr_hint_epochs: Epochs after the current one before the next drop takes effect
            (:func:`~lightning_green.training.learning_rates.epochs_until_lr_decay`), or ``None``.

    Returns:
        The place, in epochs or steps (:attr:`FitPosition.in_steps`).

    Example:
        >>> at = FitPosition(2, 30, 5, 10, 1, max_epochs=8, max_steps=-1, epoch_done=False)
        >>> check_place(at, lr_hint_epochs=1)  # half way through the third epoch; drop from epoch 4
        CheckPlace(progress=2.5, horizon=8.0, lr_decay_in=1.5, progress_per_epoch=1.0, unit='epochs')
        >>> check_place(FitPosition(2, 30, 10, 10, 1, -1, 100, True), lr_hint_epochs=None)
        CheckPlace(progress=30.0, horizon=100.0, lr_decay_in=None, progress_per_epoch=10.0, unit='steps')
        >>> no_length = float("inf")  # an IterableDataset: a third of the second epoch, 45 batches each
        >>> place = check_place(FitPosition(1, 60, 15, no_length, 1, 12, -1, False, True, 45), None)
        >>> place.unit, round(place.progress, 4), place.horizon
        ('epochs', 1.3333, 12.0)
    """
    epoch_end = float(position.current_epoch + 1)
    if position.in_steps:
        per_epoch = position.steps_per_epoch
        progress = float(position.global_step)
        steps = position.planned_steps
        decay_in = None
        if lr_hint_epochs is not None and per_epoch is not None:
            decay_in = max(0.0, (epoch_end + lr_hint_epochs) * per_epoch - progress)
        return CheckPlace(
            progress,
            None if steps is None else float(steps),
            decay_in,
            None if per_epoch is None else float(per_epoch),
            "steps",
        )
    progress = epoch_end
    if not position.epoch_done:
        progress = position.current_epoch + position.epoch_fraction
    horizon = horizon_epochs(position)
    decay_in = None if lr_hint_epochs is None else epoch_end + lr_hint_epochs - progress
    return CheckPlace(progress, None if horizon is None else float(horizon), decay_in, 1.0, "epochs")


def training_end(position: FitPosition) -> str:
    """How a run that no stopper stopped ended, in words.

    Example:
        >>> training_end(FitPosition(5, 50, 10, 10, 1, max_epochs=5, max_steps=-1, epoch_done=True))
        'ran to max_epochs=5'
    """
    max_epochs = position.max_epochs
    if max_epochs is not None and max_epochs > 0 and position.current_epoch >= max_epochs:
        return f"ran to max_epochs={max_epochs}"
    if position.planned_steps is not None and position.global_step >= position.planned_steps:
        return f"ran to max_steps={position.max_steps}"
    return f"ended after {position.current_epoch} epochs for another reason"


def logged_steps(steps_done: Sequence[float | None], before: int | None = None) -> list[int]:
    """The logging steps of points of a run (epoch ends, checks) from the optimizer steps done at each.

    Lightning logs what a point recorded at the step of the batch that ended before it: the
    optimizer steps done, minus one (an epoch of 45 steps logs its metrics at step 44). A point
    whose steps are unknown (``None``) follows the one before it, and every point gets a step
    after the one before it: no two points share a step.

    Args:
        steps_done: Optimizer steps done at each point, in the order of the points.
        before: A step every point must be logged before (the first step a resumed fit logs its
            own records at), or ``None`` for no bound. Points the steps done would put at or after
            it (epochs whose length changed during the run) are moved down below it, each still
            after the one before it where there is room.

    Returns:
        One step per point, increasing.

    Example:
        >>> logged_steps([45.0, 90.0, 90.0, None, 200.5])
        [44, 89, 90, 91, 200]
        >>> logged_steps([45.0, 90.0, 135.0], before=100)
        [44, 89, 99]
    """
    steps: list[int] = []
    for done in steps_done:
        step = 0 if done is None or not math.isfinite(done) else max(0, math.ceil(done) - 1)
        steps.append(step if not steps else max(step, steps[-1] + 1))
    if before is not None:
        n = len(steps)
        steps = [max(0, min(step, before - (n - i))) for i, step in enumerate(steps)]
    return steps


def check_points(
    progress: Sequence[float], place: CheckPlace, steps_per_epoch: int | None, before: int | None = None
) -> tuple[list[float | None], list[int]]:
    """The epochs completed and the logging step of each of a run's checks, from their progress.

    Args:
        progress: Progress at each check, in the unit of ``place`` (the run's plan now).
        place: Where the run is now (its unit and epoch length).
        steps_per_epoch: Optimizer steps in an epoch now (``None``: unknown).
        before: A step every check must be logged before (:func:`logged_steps`), or ``None``.

    Returns:
        ``(epochs, steps)``: epochs completed at each check (``None`` in a run without epochs), as
        the stopper logs ``energy/check_epochs``, and the step each check logged at when every epoch
        has ``steps_per_epoch`` steps (:func:`logged_steps`).

    Example:
        >>> place = CheckPlace(2.0, 8.0, None, 1.0, "epochs")
        >>> check_points([0.5, 1.0, 2.0], place, steps_per_epoch=45)
        ([0.5, 1.0, 2.0], [22, 44, 89])
        >>> check_points([30.0, 60.0], CheckPlace(60.0, 100.0, None, 30.0, "steps"), 30)
        ([1.0, 2.0], [29, 59])
    """
    values = [float(p) for p in progress]
    if place.unit == "steps":
        per_epoch = place.progress_per_epoch
        epochs: list[float | None] = [None if per_epoch is None else p / per_epoch for p in values]
        done: list[float | None] = list(values)
    else:
        epochs = list(values)
        done = [None if steps_per_epoch is None else p * steps_per_epoch for p in values]
    return epochs, logged_steps(done, before)
