"""Learning-rate step schedules: a flat stretch is not the end when a decay is ahead.

With ``MultiStepLR``/``StepLR`` the monitored metric wanders on a long flat stretch at the high
learning rate and then jumps at the decay. Two ways to know:

- the callback knows the schedule: ``lr_decay_in`` (``epochs_until_lr_decay`` with one check per
  epoch; from the trainer's schedulers) says a decay is ahead. :class:`DecayTracker` records the
  decays as they happen and holds plateau and marginal stops while one is ahead within the planned horizon and
  for ``DECAY_WINDOW`` checks after it, *as long as decays keep paying*: once a decay has bought no new best
  within its window, further decays are not waited for (a periodic ``StepLR`` always has one ahead, and a run
  without a planned end would otherwise be held forever);
- offline (replay without learning rates) nobody knows it, but a curve that has already made one
  step-jump has shown that its flat stretches are not final: :func:`detect_steps` finds
  step-jumps in the history and :func:`step_hold_until` holds plateau and marginal stops for as
  long again as the stretch that preceded the last jump (schedules decay at regular fractions of
  the run: 30/60/90 %, 50/75 %, every N epochs), within the horizon.

Holds after a decay (``DECAY_WINDOW``) and the step detector's windows count *checks*, like
``patience``; the positions of decays, jumps and the horizon are *progress* (epochs, possibly
fractional, or steps: whatever unit the caller measures progress in).

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


def step_hold_until(
    progress: np.ndarray, steps: list[int], horizon: float | None, first_epoch: float = 1.0
) -> float | None:
    """Progress until which plateau and marginal stops are held after the last step-jump.

    The hold lasts as long as the stretch of training before the last jump: from the previous
    jump, or from the end of the first epoch (the warm-up epoch is not counted), to the jump;
    capped at the planned horizon.

    Args:
        progress: Training completed at every check (epochs, possibly fractional, or steps).
        steps: Jump indices from :func:`detect_steps`.
        horizon: Planned end of the run in the same unit, or ``None``.
        first_epoch: Progress of one epoch (0 for a run without epochs: counted from the start).

    Returns:
        Hold while ``progress < returned value``; ``None`` when no jump was seen.

    Example:
        >>> step_hold_until(np.arange(1.0, 41.0), [30], horizon=100)
        61.0
        >>> step_hold_until(np.arange(1.0, 41.0), [30], horizon=100, first_epoch=0.0)
        62.0
        >>> step_hold_until(np.arange(1.0, 41.0), [30], horizon=50)
        50.0
    """
    if not steps:
        return None
    j = steps[-1]
    start = float(progress[steps[-2]]) if len(steps) > 1 else min(first_epoch, float(progress[j]))
    hold = float(progress[j]) + (float(progress[j]) - start)
    if horizon is not None:
        hold = min(hold, float(horizon))
    return hold


def lr_decay_ahead(progress: float, lr_decay_in: float | None, horizon: float | None) -> bool:
    """Whether a scheduled learning-rate decay happens before the planned end of the run.

    Without a planned end (``horizon=None``) every announced decay is ahead; what bounds the
    wait is :class:`DecayTracker` (decays are waited for only while they keep paying).

    Args:
        progress: Training completed at this check (epochs, possibly fractional, or steps).
        lr_decay_in: Training still to run at the current learning rate before the next decay, in
            the unit of ``progress`` (0: what follows runs at the decayed rate), or ``None`` when
            no decay is known.
        horizon: Planned end of the run in the same unit, or ``None`` (unbounded).

    Returns:
        True when a decay is known to come within the horizon.

    Example:
        >>> lr_decay_ahead(11, 5, 100), lr_decay_ahead(95, 5, 100), lr_decay_ahead(11, None, 100)
        (True, False, False)
    """
    if lr_decay_in is None or lr_decay_in < 0:
        return False
    if horizon is None:
        return True
    return progress + lr_decay_in < horizon


@dataclass(frozen=True)
class DecayTracker:
    """Known learning-rate decays: which happened, which are waited for, whether they still pay.

    A decay announced at progress ``p`` through ``lr_decay_in = d`` (training still to run at the
    current rate) takes effect at progress ``p + d``; it is taken to have happened at the first
    check after that (with one check per epoch: the check that ends the first epoch at the lower
    rate). A check without an announcement forgets a pending one (a ``ReduceLROnPlateau`` whose
    metric improved again will not decay).

    A decay is *credited* when decays still pay and the previously credited one has bought a new
    best (a decay inside the window of an unproven one belongs to that window). The checks from the
    credited decay's first check on are its window: for ``DECAY_WINDOW`` checks stops are held, and
    the plateau rule counts patience from the decay. If no check of the window improves on the
    best, decays have stopped paying: later ones are neither waited for nor credited.

    Attributes:
        next_decay_at: Progress at which the decay announced last takes effect, not yet reached.
        last_decay_at: Progress at which the latest decay that happened took effect (the
            learning-curve fit starts after it).
        decay_check: Index of the first check after the latest credited decay, or ``None``.
        decay_paid: Whether a check since ``decay_check`` improved on the best.
        decays_pay: False once a credited decay bought no new best within its window.

    Example:
        >>> t, announced = DecayTracker(), {1: 1, 2: 0}  # after epoch 2: the next epoch decays
        >>> for p in (1, 2, 3):  # one check per epoch
        ...     t = t.advance(check=p - 1, progress=p, lr_decay_in=announced.get(p)).record(improved=False)
        >>> t.last_decay_at, t.decay_check, t.holds(check=2, progress=3, lr_decay_in=None)
        (2.0, 2, True)
        >>> for p in range(4, 8):  # the metric stays flat
        ...     t = t.advance(check=p - 1, progress=p, lr_decay_in=None).record(improved=False)
        >>> t = t.advance(check=7, progress=8, lr_decay_in=20)  # the window closed, no new best
        >>> t.decays_pay, t.holds(check=7, progress=8, lr_decay_in=20)  # later ones: not waited for
        (False, False)
    """

    next_decay_at: float | None = None
    last_decay_at: float | None = None
    decay_check: int | None = None
    decay_paid: bool = False
    decays_pay: bool = True

    def advance(self, *, check: int, progress: float, lr_decay_in: float | None) -> DecayTracker:
        """The tracker at check number ``check`` (0-based), at ``progress``, before its metric counts.

        Judges the credited decay whose window has just closed, records a decay that took effect
        before this check, and notes the one announced now.
        """
        t = self
        if t.decay_check is not None and not t.decay_paid and check >= t.decay_check + DECAY_WINDOW:
            t = replace(t, decays_pay=False)
        if t.next_decay_at is not None and t.next_decay_at < progress:
            t = replace(t, last_decay_at=t.next_decay_at, next_decay_at=None)
            if t.decays_pay and (t.decay_check is None or t.decay_paid):
                t = replace(t, decay_check=check, decay_paid=False)
        announced = None
        if lr_decay_in is not None and lr_decay_in >= 0:
            announced = float(progress) + float(lr_decay_in)
        return replace(t, next_decay_at=announced)

    def record(self, *, improved: bool) -> DecayTracker:
        """The tracker after the current check's metric: ``improved`` on the best or not."""
        if improved and self.decay_check is not None and not self.decay_paid:
            return replace(self, decay_paid=True)
        return self

    def holds(
        self, *, check: int, progress: float, lr_decay_in: float | None, horizon: float | None = None
    ) -> bool:
        """Whether plateau and marginal stops are held at this check for a known decay."""
        if not self.decays_pay:
            return False
        if self.decay_check is not None and check < self.decay_check + DECAY_WINDOW:
            return True
        return lr_decay_ahead(progress, lr_decay_in, horizon)

    def to_dict(self) -> dict[str, float | int | bool | None]:
        """Plain JSON-able values."""
        return {
            "next_decay_at": self.next_decay_at,
            "last_decay_at": self.last_decay_at,
            "decay_check": self.decay_check,
            "decay_paid": self.decay_paid,
            "decays_pay": self.decays_pay,
        }

    @classmethod
    def from_dict(cls, values: dict[str, float | int | bool | None]) -> DecayTracker:
        """Inverse of :meth:`to_dict`; also reads the epoch-index form of state version 2.

        In version 2, ``next_decay_epoch``/``last_decay_epoch`` were the 0-based index of the first
        epoch at the lower rate, which is the progress (epochs completed) at which it starts.
        """

        def opt(key: str, old: str, kind: type) -> float | int | None:
            value = values.get(key, values.get(old))
            return None if value is None else kind(value)

        return cls(
            next_decay_at=opt("next_decay_at", "next_decay_epoch", float),  # type: ignore[arg-type]
            last_decay_at=opt("last_decay_at", "last_decay_epoch", float),  # type: ignore[arg-type]
            decay_check=opt("decay_check", "decay_check", int),  # type: ignore[arg-type]
            decay_paid=bool(values.get("decay_paid", False)),
            decays_pay=bool(values.get("decays_pay", True)),
        )
