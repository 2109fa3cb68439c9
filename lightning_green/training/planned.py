"""The run's planned length in optimizer steps, as the Trainer estimates it (either namespace)."""

from __future__ import annotations

import math
from typing import Any

from lightning_green.training.check_progress import FitPosition


def planned_steps(trainer: Any, position: FitPosition) -> float | None:
    """The run's planned optimizer steps (from max_steps/max_epochs); None when unbounded, unknown or none.

    A run whose user planned neither ``max_epochs`` nor ``max_steps`` has none: the 1000 epochs
    Lightning puts in place of an unset ``max_epochs`` is no plan (:attr:`FitPosition.planned_epochs`,
    as the stopper and the batch-size policy see it).

    Args:
        trainer: A Lightning Trainer of either namespace (``estimated_stepping_batches``).
        position: The fit loop's counters and plan now (whose plan it is).
    """
    if position.planned_epochs is None and position.planned_steps is None:
        return None
    try:
        steps = float(trainer.estimated_stepping_batches)
    except Exception:  # no length known (an iterable dataset): no plan
        return None
    return steps if math.isfinite(steps) and steps > 0 else None
