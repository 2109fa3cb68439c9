"""How far away the next scheduled learning-rate decay is, read off the trainer's schedulers.

Step schedules (``StepLR``, ``MultiStepLR``) and ``ReduceLROnPlateau`` make a learning curve
jump after a flat stretch; the stopping policy must not stop on a flat stretch that a decay is
about to end. Schedules that decay continuously (cosine, exponential, one-cycle, lambdas) have
no step ahead and report none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from torch.optim import lr_scheduler as sched


def _steps_until_decay(scheduler: Any) -> int | None:
    """Scheduler steps until the learning rate next drops, or None when no drop is scheduled.

    ``last_epoch`` counts the ``step()`` calls so far; the drop happens at the step that makes
    ``last_epoch`` reach the milestone.
    """
    if isinstance(scheduler, sched.StepLR):
        if scheduler.gamma >= 1:
            return None
        done = scheduler.last_epoch
        return (done // scheduler.step_size + 1) * scheduler.step_size - done
    if isinstance(scheduler, sched.MultiStepLR):
        if scheduler.gamma >= 1:
            return None
        ahead = [m for m in scheduler.milestones if m > scheduler.last_epoch]
        return min(ahead) - scheduler.last_epoch if ahead else None
    if isinstance(scheduler, sched.ReduceLROnPlateau):
        lrs = [group["lr"] for group in scheduler.optimizer.param_groups]
        if all(lr - min_lr <= scheduler.eps for lr, min_lr in zip(lrs, scheduler.min_lrs, strict=False)):
            return None  # already at the floor: no further drop
        return max(1, scheduler.cooldown_counter + scheduler.patience + 1 - scheduler.num_bad_epochs)
    if isinstance(scheduler, (sched.SequentialLR, sched.ChainedScheduler)):
        parts = getattr(scheduler, "_schedulers", [])
        found = [s for s in (_steps_until_decay(p) for p in parts) if s is not None]
        return min(found) if found else None
    return None


def epochs_until_lr_decay(configs: Iterable[Any], steps_per_epoch: int | float | None) -> int | None:
    """Epochs after the current one before the next learning-rate drop takes effect.

    ``0`` means the drop happens at the end of the current epoch (the next epoch trains at the
    lower rate). Called at the end of an epoch, before Lightning steps epoch-interval schedulers.

    Args:
        configs: ``trainer.lr_scheduler_configs`` (objects with ``scheduler``, ``interval``,
            ``frequency``).
        steps_per_epoch: Optimizer steps per epoch, to convert step-interval schedules.

    Returns:
        The smallest distance over all schedulers, or None when none has a drop ahead.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> s = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 45])
        >>> for _ in range(10):
        ...     opt.step()
        ...     s.step()
        >>> epochs_until_lr_decay([SimpleNamespace(scheduler=s, interval="epoch", frequency=1)], 100)
        19
    """
    best: int | None = None
    for config in configs:
        steps = _steps_until_decay(config.scheduler)
        if steps is None:
            continue
        frequency = max(1, int(getattr(config, "frequency", 1) or 1))
        if getattr(config, "interval", "epoch") == "step":
            if not steps_per_epoch or not math.isfinite(steps_per_epoch):
                continue
            epochs = max(0, math.ceil(steps * frequency / steps_per_epoch) - 1)
        else:
            epochs = steps * frequency - 1
        best = epochs if best is None else min(best, epochs)
    return best
