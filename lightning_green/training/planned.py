"""The run's planned length in optimizer steps, as the Trainer estimates it (either namespace)."""

from __future__ import annotations

import math
from typing import Any


def planned_steps(trainer: Any) -> float | None:
    """The run's planned optimizer steps (from max_steps/max_epochs); None when unbounded or unknown.

    Args:
        trainer: A Lightning Trainer of either namespace (``estimated_stepping_batches``).
    """
    try:
        steps = float(trainer.estimated_stepping_batches)
    except Exception:  # no length known (an iterable dataset): no plan
        return None
    return steps if math.isfinite(steps) and steps > 0 else None
