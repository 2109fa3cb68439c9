"""Learning rates in torch optimizers and schedulers: the next scheduled drop, and scaling them.

:func:`epochs_until_lr_decay` reads how far away the next scheduled learning-rate drop is. Step
schedules (``StepLR``, ``MultiStepLR``) and ``ReduceLROnPlateau`` make a learning curve
jump after a flat stretch; the stopping policy must not stop on a flat stretch that a drop is
about to end. Schedules that decay continuously (cosine, exponential, one-cycle, lambdas) have
no step ahead and report none.

Lightning steps epoch-interval schedulers (other than ``ReduceLROnPlateau``) at the last batch of
the epoch, before validation and ``on_train_epoch_end``: at the end of an epoch their
``last_epoch`` already positions them for the next epoch. ``ReduceLROnPlateau`` is stepped after
``on_train_epoch_end``, with the epoch's metric.

:func:`scale_learning_rates` makes every learning rate follow a batch-size switch (the rule from
:func:`resolve_lr_rule`). Torch only: no Lightning here.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch.optim import lr_scheduler as sched

LR_KEYS: tuple[str, ...] = ("lr", "initial_lr", "max_lr", "min_lr")
"""The param-group entries a learning-rate scaling multiplies."""


def _next_milestone(scheduler: Any, position: int) -> int | None:
    """The first scheduler position >= ``position`` at which the learning rate drops."""
    if isinstance(scheduler, sched.StepLR):
        if scheduler.gamma >= 1:
            return None
        return max(1, math.ceil(position / scheduler.step_size)) * scheduler.step_size
    if isinstance(scheduler, sched.MultiStepLR):
        if scheduler.gamma >= 1:
            return None
        ahead = [m for m in scheduler.milestones if m >= position]
        return min(ahead) if ahead else None
    return None


def _steps_until_drop(scheduler: Any, stepped: bool) -> int | None:
    """Scheduler steps from the next step period until the rate drops (0: it drops for the next one).

    Args:
        scheduler: A torch LR scheduler.
        stepped: Whether the scheduler has already been stepped for the period just finished.
    """
    if isinstance(scheduler, sched.ReduceLROnPlateau):
        lrs = [group["lr"] for group in scheduler.optimizer.param_groups]
        at_floor = all(lr - floor <= scheduler.eps for lr, floor in zip(lrs, scheduler.min_lrs, strict=False))
        if at_floor or scheduler.num_bad_epochs == 0:
            return None  # no plateau forming (or nothing left to drop): no drop is coming
        # It drops once num_bad_epochs exceeds patience, counting the step about to come.
        return max(0, scheduler.patience - scheduler.num_bad_epochs)
    if isinstance(scheduler, sched.SequentialLR):
        # Only the child in charge now matters (SequentialLR hands over at its milestones).
        active = bisect.bisect_right(scheduler._milestones, scheduler.last_epoch)
        return _steps_until_drop(scheduler._schedulers[active], stepped)
    if isinstance(scheduler, sched.ChainedScheduler):
        found = [s for s in (_steps_until_drop(c, stepped) for c in scheduler._schedulers) if s is not None]
        return min(found) if found else None
    position = scheduler.last_epoch + (0 if stepped else 1)
    milestone = _next_milestone(scheduler, position)
    return None if milestone is None else milestone - position


def epochs_until_lr_decay(
    configs: Iterable[Any], optimizer_steps_per_epoch: int | float | None, epoch_done: bool = True
) -> int | None:
    """Epochs after the current one before the next learning-rate drop takes effect.

    ``0`` means the next epoch is the first one at the lower rate (the policy's convention:
    epoch ``current + n + 1`` is the first at the lower rate).

    Args:
        configs: ``trainer.lr_scheduler_configs`` (objects with ``scheduler``, ``interval``,
            ``frequency``).
        optimizer_steps_per_epoch: Optimizer steps per epoch (training batches divided by
            ``accumulate_grad_batches``), to convert step-interval schedules.
        epoch_done: Whether the training epoch is complete (checks at the end of the epoch, where
            Lightning has stepped the epoch-interval schedulers); False for a check after a
            validation in the middle of an epoch.

    Returns:
        The smallest distance over all schedulers, or None when none has a drop ahead.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> s = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 45])
        >>> for _ in range(10):  # ten epochs done, stepped by Lightning at each epoch's last batch
        ...     opt.step()
        ...     s.step()
        >>> epochs_until_lr_decay([SimpleNamespace(scheduler=s, interval="epoch", frequency=1)], 100)
        20
    """
    best: int | None = None
    for config in configs:
        frequency = max(1, int(getattr(config, "frequency", 1) or 1))
        if getattr(config, "interval", "epoch") == "step":
            if not optimizer_steps_per_epoch or not math.isfinite(optimizer_steps_per_epoch):
                continue
            steps = _steps_until_drop(config.scheduler, stepped=True)
            if steps is None:
                continue
            # The drop happens during the epoch that contains optimizer step number steps + 1.
            epochs = max(0, math.ceil((steps + 1) * frequency / optimizer_steps_per_epoch) - 1)
        else:
            is_plateau = isinstance(config.scheduler, sched.ReduceLROnPlateau)
            steps = _steps_until_drop(config.scheduler, stepped=epoch_done and not is_plateau)
            if steps is None:
                continue
            epochs = steps * frequency
        best = epochs if best is None else min(best, epochs)
    return best


def resolve_lr_rule(rule: str, optimizer: torch.optim.Optimizer | None) -> str:
    """The learning-rate rule to use: ``auto`` is ``linear`` for SGD, ``sqrt`` for the others.

    Linear scaling (Goyal et al. 2017) holds for SGD with momentum; for adaptive optimisers
    (Adam, AdamW, RMSprop ...) the square-root rule keeps the training dynamics (Malladi et al.
    2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms").

    Example:
        >>> resolve_lr_rule("auto", torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
        'linear'
    """
    if rule != "auto":
        return rule
    return "linear" if isinstance(optimizer, torch.optim.SGD) else "sqrt"


def scale_learning_rates(
    optimizers: Iterable[torch.optim.Optimizer], configs: Iterable[Any], factor: float
) -> None:
    """Multiply every learning rate by ``factor``: param groups (:data:`LR_KEYS`) and schedulers' bases.

    The schedulers' ``base_lrs``/``max_lrs`` follow, so a scheduler does not undo the scaling.

    Args:
        optimizers: The optimizers.
        configs: Scheduler configs (objects with ``scheduler``), e.g. ``trainer.lr_scheduler_configs``.
        factor: The multiplier.
    """
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for key in LR_KEYS:
                value = group.get(key)
                if isinstance(value, torch.Tensor):
                    value.mul_(factor)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    group[key] = value * factor
    for config in configs:
        _scale_scheduler(config.scheduler, factor)


def _scale_scheduler(scheduler: Any, factor: float) -> None:
    """Scale the bases of a scheduler and of those inside it (``SequentialLR``, ``ChainedScheduler``).

    ``SequentialLR`` restarts its next scheduler from that one's own ``base_lrs`` at a milestone:
    left unscaled, the run would fall back to the unscaled rate there.
    """
    for attr in ("base_lrs", "max_lrs"):
        values = getattr(scheduler, attr, None)
        if isinstance(values, list):
            setattr(scheduler, attr, [v * factor for v in values])
    for inner in getattr(scheduler, "_schedulers", ()):
        _scale_scheduler(inner, factor)


def first_lr(optimizers: Sequence[torch.optim.Optimizer]) -> float | None:
    """The learning rate of the first param group of the first optimizer (None when there is none)."""
    try:
        return float(optimizers[0].param_groups[0]["lr"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def raises_past_its_end(scheduler: Any) -> bool:
    """Whether a scheduler raises when stepped past the length it was built for (OneCycleLR)."""
    if isinstance(scheduler, sched.OneCycleLR):
        return True
    return any(raises_past_its_end(s) for s in getattr(scheduler, "_schedulers", ()))
