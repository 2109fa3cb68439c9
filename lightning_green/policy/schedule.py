"""Learning-rate step schedules: a flat stretch is not the end when a decay is ahead.

With ``MultiStepLR``/``StepLR`` the monitored metric wanders on a long flat stretch at the high
learning rate and then jumps at the decay. Two ways to know:

- the callback knows the schedule: ``epochs_until_lr_decay`` (from the trainer's schedulers)
  says a decay is ahead. :class:`DecayTracker` records the decays as they happen and holds
  plateau and marginal stops while one is ahead within the planned horizon and for
  ``DECAY_WINDOW`` checks after it, *as long as decays keep paying*: once a decay has bought no
  new best within its window, further decays are not waited for (a periodic ``StepLR`` always has
  one ahead, and a run without a planned end would otherwise be held forever);
- offline (replay without learning rates) nobody knows it, but a curve that has already made one
  step-jump has shown that its flat stretches are not final: :func:`detect_steps` finds
  step-jumps in the history and :func:`step_hold_until` holds plateau and marginal stops for as
  long again as the stretch that preceded the last jump (schedules decay at regular fractions of
  the run: 30/60/90 %, 50/75 %, every N epochs), within the horizon.

After a decay, known or detected, the plateau rule counts its patience from the later of the last
improvement and the decay, and the learning-curve fit starts at the decay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
DECAY_WINDOW = STEP_WINDOW
"""Checks after a known learning-rate decay during which stops are held, and within which the
decay must buy a new best for later decays to be waited for (the checks :func:`detect_steps`
compares after a jump)."""


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


class StepDetector:
    """:func:`detect_steps`, one check at a time: O(1) work per check, the same jumps.

    A candidate jump at index ``j`` depends only on the checks up to ``j + STEP_CONFIRM - 1`` and
    on the jumps accepted before it, so it is judged once, when its last confirming check
    arrives; the range the curve covered before it is kept as a running maximum and minimum.

    Example:
        >>> flat = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.1, 0.9, 1.05, 0.95]
        >>> d = StepDetector()
        >>> for v in flat + [3.0, 3.1, 3.05, 3.1]:
        ...     d.push(v)
        >>> d.steps
        [10]
    """

    def __init__(self) -> None:
        self._v: list[float] = []
        self._run_max: list[float] = []
        self._run_min: list[float] = []
        self.steps: list[int] = []

    def push(self, value: float) -> None:
        """Add the next (finite, oriented) value; a jump it confirms is appended to :attr:`steps`."""
        v = float(value)
        self._v.append(v)
        self._run_max.append(v if not self._run_max else max(self._run_max[-1], v))
        self._run_min.append(v if not self._run_min else min(self._run_min[-1], v))
        w, k = STEP_WINDOW, STEP_CONFIRM
        j = len(self._v) - k
        if j < 2 * w:
            return
        before = np.array(self._v[j - w : j])
        before_max = float(before.max())
        before_med = float(np.median(before))
        previous_gain = max(before_med - float(np.median(np.array(self._v[j - 2 * w : j - w]))), 0.0)
        after_min = min(self._v[j : j + k])
        jump = after_min - before_med
        history_range = self._run_max[j - 1] - self._run_min[j - 1]
        if not (
            after_min > before_max and jump > 2.0 * previous_gain and jump > STEP_MIN_FRACTION * history_range
        ):
            return
        if self.steps and j - self.steps[-1] < w:
            return
        if jump > STEP_SIGNIFICANCE * noise_sd(np.array(self._v[max(0, j - 3 * w) : j])):
            self.steps.append(j)


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

    Without a planned end (``max_epochs=None``) every announced decay is ahead; what bounds the
    wait is :class:`DecayTracker` (decays are waited for only while they keep paying).

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


@dataclass(frozen=True)
class DecayTracker:
    """Known learning-rate decays: which happened, which are waited for, whether they still pay.

    A decay announced through ``epochs_until_lr_decay`` at epoch ``e`` (``n`` epochs still at the
    current rate) happens at epoch ``e + n + 1``, the first epoch at the lower rate; it is taken to
    have happened at the first check at or after that epoch. A check without an announcement
    forgets a pending one (a ``ReduceLROnPlateau`` whose metric improved again will not decay).

    A decay is *credited* when decays still pay and the previously credited one has bought a new
    best (a decay inside the window of an unproven one belongs to that window). The checks from the
    credited decay's first check on are its window: for ``DECAY_WINDOW`` checks stops are held, and
    the plateau rule counts patience from the decay. If no check of the window improves on the
    best, decays have stopped paying: later ones are neither waited for nor credited.

    Attributes:
        next_decay_epoch: First epoch at the lower rate of the decay announced last, not yet reached.
        last_decay_epoch: First epoch at the lower rate of the latest decay that happened (the
            learning-curve fit starts there).
        decay_check: Index of the first check after the latest credited decay, or ``None``.
        decay_paid: Whether a check since ``decay_check`` improved on the best.
        decays_pay: False once a credited decay bought no new best within its window.

    Example:
        >>> t, announced = DecayTracker(), {0: 1, 1: 0}  # at epoch 1: the next epoch decays
        >>> for i in range(3):  # one check per epoch
        ...     t = t.advance(check=i, epoch=i, epochs_until_lr_decay=announced.get(i)).record(improved=False)
        >>> t.last_decay_epoch, t.decay_check, t.holds(check=2, epoch=2, epochs_until_lr_decay=None)
        (2, 2, True)
        >>> for i in range(3, 7):  # the metric stays flat
        ...     t = t.advance(check=i, epoch=i, epochs_until_lr_decay=None).record(improved=False)
        >>> t = t.advance(check=7, epoch=7, epochs_until_lr_decay=20)  # the window closed, no new best
        >>> t.decays_pay, t.holds(check=7, epoch=7, epochs_until_lr_decay=20)  # later ones: not waited for
        (False, False)
    """

    next_decay_epoch: int | None = None
    last_decay_epoch: int | None = None
    decay_check: int | None = None
    decay_paid: bool = False
    decays_pay: bool = True

    def advance(self, *, check: int, epoch: int, epochs_until_lr_decay: int | None) -> DecayTracker:
        """The tracker at check number ``check`` (0-based) of epoch ``epoch``, before its metric counts.

        Judges the credited decay whose window has just closed, records a decay that happened by
        this epoch, and notes the one announced now.
        """
        t = self
        if t.decay_check is not None and not t.decay_paid and check >= t.decay_check + DECAY_WINDOW:
            t = replace(t, decays_pay=False)
        if t.next_decay_epoch is not None and t.next_decay_epoch <= epoch:
            t = replace(t, last_decay_epoch=t.next_decay_epoch, next_decay_epoch=None)
            if t.decays_pay and (t.decay_check is None or t.decay_paid):
                t = replace(t, decay_check=check, decay_paid=False)
        announced = None
        if epochs_until_lr_decay is not None and epochs_until_lr_decay >= 0:
            announced = int(epoch) + int(epochs_until_lr_decay) + 1
        return replace(t, next_decay_epoch=announced)

    def record(self, *, improved: bool) -> DecayTracker:
        """The tracker after the current check's metric: ``improved`` on the best or not."""
        if improved and self.decay_check is not None and not self.decay_paid:
            return replace(self, decay_paid=True)
        return self

    def holds(
        self, *, check: int, epoch: int, epochs_until_lr_decay: int | None, max_epochs: int | None = None
    ) -> bool:
        """Whether plateau and marginal stops are held at this check for a known decay."""
        if not self.decays_pay:
            return False
        if self.decay_check is not None and check < self.decay_check + DECAY_WINDOW:
            return True
        return lr_decay_ahead(epoch, epochs_until_lr_decay, max_epochs)

    def to_dict(self) -> dict[str, int | bool | None]:
        """Plain JSON-able values."""
        return {
            "next_decay_epoch": self.next_decay_epoch,
            "last_decay_epoch": self.last_decay_epoch,
            "decay_check": self.decay_check,
            "decay_paid": self.decay_paid,
            "decays_pay": self.decays_pay,
        }

    @classmethod
    def from_dict(cls, values: dict[str, int | bool | None]) -> DecayTracker:
        """Inverse of :meth:`to_dict`."""

        def opt_int(key: str) -> int | None:
            value = values.get(key)
            return None if value is None else int(value)

        return cls(
            next_decay_epoch=opt_int("next_decay_epoch"),
            last_decay_epoch=opt_int("last_decay_epoch"),
            decay_check=opt_int("decay_check"),
            decay_paid=bool(values.get("decay_paid", False)),
            decays_pay=bool(values.get("decays_pay", True)),
        )
