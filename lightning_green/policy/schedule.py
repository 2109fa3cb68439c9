"""Learning-rate step schedules: a flat stretch is not the end when a decay is ahead.

With ``MultiStepLR``/``StepLR`` the monitored metric wanders on a long flat stretch at the high
learning rate and then jumps at the decay. Two ways to know:

- the callback knows the schedule: ``epochs_until_lr_decay`` (from the trainer's schedulers)
  says a decay is ahead, and :func:`lr_decay_ahead` holds plateau and marginal stops until it
  has happened, if it happens within the planned horizon;
- offline (replay) nobody knows it, but a curve that has already made one step-jump has shown
  that its flat stretches are not final: :func:`detect_steps` finds step-jumps in the history
  and :func:`step_hold_until` holds plateau and marginal stops for as long again as the stretch
  that preceded the last jump (schedules decay at regular fractions of the run: 30/60/90 %,
  50/75 %, every N epochs), within the horizon. The learning-curve fit then starts at the jump.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lightning_green.policy.learning_curve import noise_sd

STEP_WINDOW = 5
"""Checks compared before and after a candidate jump."""
STEP_CONFIRM = 3
"""Checks after the jump that must all stay above the level before it."""
STEP_SIGNIFICANCE = 2.0
"""A jump must exceed the median of the stretch before it by this many noise standard deviations."""
STEP_MIN_FRACTION = 0.1
"""A jump must also be at least this fraction of the range the curve has covered before it."""


def detect_steps(values: np.ndarray) -> list[int]:
    """Indices where the curve makes a step-jump after a flat stretch.

    ``values`` is oriented so that higher is better. A jump at index ``j`` needs, with
    ``W = STEP_WINDOW`` checks before it and ``STEP_CONFIRM`` checks from ``j`` on:

    - every confirming check above the highest of the ``W`` checks before (a new level, not a
      noise spike);
    - the lowest confirming check above the median of the ``W`` checks before by more than
      ``STEP_SIGNIFICANCE`` noise standard deviations of the stretch before;
    - the stretch before to be flat: the jump is more than twice what the curve gained over the
      ``W`` checks before that (early training, which improves fast everywhere, is no step);
    - the jump to matter: at least ``STEP_MIN_FRACTION`` of the range the curve covered before.

    Jumps closer than ``W`` checks to the previous one are merged into it.

    Args:
        values: The monitored metric, higher is better, finite.

    Returns:
        Indices of the first check after each jump, increasing.

    Example:
        >>> flat = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.1, 0.9, 1.05, 0.95]
        >>> detect_steps(np.array(flat + [3.0, 3.1, 3.05, 3.1]))
        [10]
        >>> detect_steps(np.linspace(0, 1, 20))
        []
    """
    v = np.asarray(values, dtype=float)
    w, k = STEP_WINDOW, STEP_CONFIRM
    n = len(v)
    if n < 2 * w + k:
        return []
    windows = sliding_window_view(v, w)  # windows[i] = v[i : i + w]
    js = np.arange(2 * w, n - k + 1)
    before_max = windows.max(axis=1)[js - w]
    before_med = np.median(windows, axis=1)
    previous_gain = np.maximum(before_med[js - w] - before_med[js - 2 * w], 0.0)
    before_med = before_med[js - w]
    after_min = sliding_window_view(v, k).min(axis=1)[js]
    jump = after_min - before_med
    history_range = np.maximum.accumulate(v)[js - 1] - np.minimum.accumulate(v)[js - 1]
    candidates = (
        (after_min > before_max) & (jump > 2.0 * previous_gain) & (jump > STEP_MIN_FRACTION * history_range)
    )
    steps: list[int] = []
    for j, size in zip(js[candidates].tolist(), jump[candidates].tolist(), strict=True):
        if steps and j - steps[-1] < w:
            continue
        if size > STEP_SIGNIFICANCE * noise_sd(v[max(0, j - 3 * w) : j]):
            steps.append(j)
    return steps


def step_hold_until(epochs: np.ndarray, steps: list[int], max_epochs: int | None) -> int | None:
    """Epoch index until which plateau and marginal stops are held after the last step-jump.

    The hold lasts as long as the stretch before the last jump (from the previous jump, or the
    start of the run at epoch 0), capped at the planned horizon.

    Args:
        epochs: Epoch index of every check (0-based, as ``trainer.current_epoch``).
        steps: Jump indices from :func:`detect_steps`.
        max_epochs: Planned number of epochs, or ``None``.

    Returns:
        Hold while ``epoch < returned value``; ``None`` when no jump was seen.

    Example:
        >>> step_hold_until(np.arange(40), [30], max_epochs=100)
        60
        >>> step_hold_until(np.arange(40), [30], max_epochs=50)
        49
    """
    if not steps:
        return None
    j = steps[-1]
    start = int(epochs[steps[-2]]) if len(steps) > 1 else 0
    hold = int(epochs[j]) + (int(epochs[j]) - start)
    if max_epochs is not None:
        hold = min(hold, max_epochs - 1)
    return hold


def lr_decay_ahead(epoch: int, epochs_until_lr_decay: int | None, max_epochs: int | None) -> bool:
    """Whether a scheduled learning-rate decay happens before the planned end of the run.

    Args:
        epoch: The epoch index just completed (0-based).
        epochs_until_lr_decay: Epochs that still run at the current learning rate before the next
            decay (0: the next epoch runs at the decayed rate), or ``None`` when none is known.
        max_epochs: Planned number of epochs, or ``None`` (unbounded).

    Returns:
        True when a decay is known to come within the horizon.

    Example:
        >>> lr_decay_ahead(10, 5, 100), lr_decay_ahead(94, 5, 100), lr_decay_ahead(10, None, 100)
        (True, False, False)
    """
    if epochs_until_lr_decay is None or epochs_until_lr_decay < 0:
        return False
    if max_epochs is None:
        return True
    return epoch + epochs_until_lr_decay + 1 < max_epochs
