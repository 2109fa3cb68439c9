"""Batch size: the one that reaches the user's quality for the fewest joules.

Joules per sample usually fall as the batch grows (better device utilisation), but a bigger
batch also needs more samples to reach the same loss. McCandlish et al. 2018 ("An Empirical
Model of Large-Batch Training") model the samples ``E`` to reach a target at batch size ``B``
as

    E(B) = E_min (1 + B / B_noise)

with ``B_noise`` the gradient noise scale (:mod:`lightning_green.policy.noise_scale`); the
steps follow ``S(B) = S_min (1 + B_noise / B)``, and ``(S / S_min - 1)(E / E_min - 1) = 1``.
So the energy to reach the target is

    energy_to_target(B) = j_per_sample(B) · E_min · (1 + B / B_noise)

and the best batch size minimises ``j_per_sample(B) · (1 + B / B_noise)``: a batch well below
``B_noise`` costs almost no extra samples, one well above it wastes most of them. ``E_min``
is the same for every ``B`` and drops out of the comparison.

The pieces:

- :func:`candidate_batch_sizes`: the user's batch size times powers of two within
  ``[min_batch_size, max_batch_size]``, minus what ran out of memory.
- :func:`relative_samples_to_target` and :func:`choose_batch_size`: the model and its argmin,
  with hysteresis (these three live in :mod:`lightning_green.policy.batch_size_model` and are
  importable from here).
- :func:`scale_learning_rate`: the learning rate to go with a new batch size.
- :class:`BatchSizePolicy`: the state that probes each candidate for joules per sample on
  real training steps, rules out sizes that ran out of memory, and decides.

Nothing Lightning here: the callback measures, calls :meth:`BatchSizePolicy.record_probe` and
:meth:`BatchSizePolicy.decide`, and applies the decision. Decisions depend only on what was
recorded, in plain Python floats, so every DDP rank decides the same when fed the same
(all-reduced) numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lightning_green.checks import (
    check_choice,
    check_fraction_below_1,
    check_int,
    check_non_negative,
    check_positive,
)
from lightning_green.policy._util import DetailsMixin, check_state_version, median
from lightning_green.policy.batch_size_model import (
    candidate_batch_sizes,
    check_b_noise,
    choose_batch_size,
    relative_samples_to_target,
)
from lightning_green.policy.noise_scale import GradientNoiseScale

__all__ = [
    "USE_ESTIMATE",
    "BatchSizeDecision",
    "BatchSizePolicy",
    "BatchSizeReason",
    "LRScalingRule",
    "candidate_batch_sizes",
    "choose_batch_size",
    "relative_samples_to_target",
    "scale_learning_rate",
]

_STATE_VERSION = 1

USE_ESTIMATE = "estimate"
"""Default of :meth:`BatchSizePolicy.decide`: use the policy's own noise-scale estimate."""


# --------------------------------------------------------------------------- learning rate


class LRScalingRule(str, Enum):
    """How the learning rate follows the batch size.

    ``linear`` (Goyal et al. 2017) suits SGD with momentum; ``sqrt`` keeps the gradient noise
    per step comparable and suits Adam-type optimisers (Hoffer et al. 2017; the Zeus traces
    use it for their Adam/AdamW workloads); ``none`` leaves the learning rate alone (an
    adaptive optimiser or a schedule that already accounts for it).
    """

    LINEAR = "linear"
    SQRT = "sqrt"
    NONE = "none"


def scale_learning_rate(lr: float, old_batch_size: int, new_batch_size: int, rule: str = "linear") -> float:
    """The learning rate to use after the batch size changes from ``old`` to ``new``.

    Args:
        lr: The learning rate in use at ``old_batch_size`` (> 0).
        old_batch_size: The batch size ``lr`` was tuned for (>= 1).
        new_batch_size: The batch size about to be used (>= 1).
        rule: ``"linear"`` (lr × new/old), ``"sqrt"`` (lr × sqrt(new/old)) or ``"none"``.

    Returns:
        The scaled learning rate.

    Raises:
        ValueError: For a non-positive ``lr``, a batch size < 1 or an unknown ``rule``.

    Example:
        >>> scale_learning_rate(0.1, 32, 128, "linear")
        0.4
        >>> scale_learning_rate(0.1, 32, 128, "sqrt")
        0.2
        >>> scale_learning_rate(0.1, 32, 128, "none")
        0.1
    """
    value = check_positive("lr", lr)
    old = check_int("old_batch_size", old_batch_size, 1)
    new = check_int("new_batch_size", new_batch_size, 1)
    if isinstance(rule, LRScalingRule):
        rule = rule.value
    rule = check_choice("rule", rule, [r.value for r in LRScalingRule])
    if rule == "linear":
        return value * new / old
    if rule == "sqrt":
        return value * math.sqrt(new / old)
    return value


# --------------------------------------------------------------------------- the policy


class BatchSizeReason(str, Enum):
    """Why :meth:`BatchSizePolicy.decide` returned what it did."""

    PROBE = "probe"
    """Measuring joules per sample at this size."""
    CHEAPER = "cheaper"
    """Switching: predicted energy to target lower by more than the margin."""
    KEEP = "keep"
    """Staying (or going back) at the settled size: nothing predicted cheaper enough."""
    OUT_OF_MEMORY = "out_of_memory"
    """The size in use ran out of memory: backing off to a smaller one."""
    UNKNOWN_NOISE_SCALE = "unknown_noise_scale"
    """No gradient noise scale yet: sizes cannot be ranked, staying at the settled size."""


@dataclass(frozen=True)
class BatchSizeDecision(DetailsMixin):
    """What :meth:`BatchSizePolicy.decide` decided.

    Attributes:
        batch_size: The per-device batch size to use from now on.
        reason: Why.
        details: Figures behind it (JSON-able values): ``previous_batch_size``, ``b_noise``,
            ``j_per_sample`` and ``energy_vs_current`` by size, where known.
    """

    batch_size: int
    reason: BatchSizeReason
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the batch size differs from the one in use before the decision."""
        return self._differs_from("previous_batch_size", self.batch_size)


class BatchSizePolicy:
    """Probe candidate batch sizes for joules per sample, then keep the cheapest to target.

    Usage by the callback: after every training window (one or a few steps) at batch size
    ``b``, call :meth:`record_probe`, and feed squared gradient norms to :attr:`noise_scale`
    (a :class:`~lightning_green.policy.noise_scale.GradientNoiseScale`, saved with the
    policy's state); at a boundary where the batch size can change (while probing, after each
    window; later, at epoch ends, as the noise scale grows), call :meth:`decide` and apply the
    returned batch size (scaling the learning rate with :func:`scale_learning_rate`). Report
    an out-of-memory error with ``oom=True``.

    Probing order: the user's size, then the others by distance from it (larger first at
    equal distance, so an out-of-memory failure rules out the even larger ones untried).
    Each visit to a size discards its first ``warmup_windows`` records (allocator, kernel
    autotuning, dataloader restart) and the joules per sample of a size is the median over
    its last ``history_windows`` kept records.

    Args:
        initial_batch_size: The user's per-device batch size.
        min_batch_size: Smallest size the policy may choose.
        max_batch_size: Largest size the policy may choose.
        switch_margin: Fraction of predicted energy to target a new size must save before
            the policy leaves the settled size. Default 0.1: the model is approximate (fitted
            to the Zeus traces it misses epochs-to-target by 6 % at the median, 10 % at the
            75th percentile), the online noise-scale estimate is noisier still, and a change of
            batch size costs a dataloader restart and a learning-rate jump. On the Zeus traces
            (``benchmarks/zeus_batch_size_model.py``) 0.05 and 0.1 choose identically, 0.2
            loses about 1 % of energy, 0 chose one size that never reached the target.
        warmup_windows: Records discarded at the start of each visit to a size. Default 1.
        min_windows: Kept records a size needs before it counts as measured. Default 3: the
            median of three is robust to one outlier.
        max_factor: How far from ``initial_batch_size`` candidates go (power of two).
            Default 8.
        history_windows: Kept records per size (the most recent). Default 16.
        global_batch_factor: ``world_size × accumulate_grad_batches``: the noise scale counts
            samples per optimizer step over all ranks. Default 1.
        noise_ema_decay: ``ema_decay`` of :attr:`noise_scale`. Default 0.99.
        noise_min_updates: ``min_updates`` of :attr:`noise_scale`. Default 10.

    Raises:
        ValueError: For arguments out of range, naming the argument.

    Example:
        >>> policy = BatchSizePolicy(64, 32, 128, min_windows=1, warmup_windows=0)
        >>> policy.decide(b_noise=None).reason.value
        'probe'
        >>> for b, j in [(64, 1.0), (128, 0.6), (32, 1.8)]:
        ...     policy.record_probe(b, energy_j=j * b, samples=b, duration_s=0.1)
        >>> d = policy.decide(b_noise=2000.0)
        >>> d.batch_size, d.reason.value
        (128, 'cheaper')
    """

    def __init__(
        self,
        initial_batch_size: int,
        min_batch_size: int,
        max_batch_size: int,
        *,
        switch_margin: float = 0.1,
        warmup_windows: int = 1,
        min_windows: int = 3,
        max_factor: int = 8,
        history_windows: int = 16,
        global_batch_factor: int = 1,
        noise_ema_decay: float = 0.99,
        noise_min_updates: int = 10,
    ) -> None:
        self.noise_scale = GradientNoiseScale(noise_ema_decay, noise_min_updates)
        self.initial_batch_size = check_int("initial_batch_size", initial_batch_size, 1)
        self.min_batch_size = check_int("min_batch_size", min_batch_size, 1)
        self.max_batch_size = check_int("max_batch_size", max_batch_size, 1)
        self.grid = candidate_batch_sizes(
            initial_batch_size, min_batch_size, max_batch_size, max_factor=max_factor
        )
        self.max_factor = check_int("max_factor", max_factor, 1)  # checked above: a power of two
        self.switch_margin = check_fraction_below_1("switch_margin", switch_margin)
        self.warmup_windows = check_int("warmup_windows", warmup_windows, 0)
        self.min_windows = check_int("min_windows", min_windows, 1)
        self.history_windows = check_int("history_windows", history_windows, 1)
        if self.history_windows < self.min_windows:
            raise ValueError(
                f"history_windows must be >= min_windows={self.min_windows}, got {history_windows!r}"
            )
        self.global_batch_factor = check_int("global_batch_factor", global_batch_factor, 1)
        self._windows: dict[int, list[tuple[float, float, float]]] = {}
        self._oom_batch_size: int | None = None
        self._current = self.initial_batch_size
        self._settled = self.initial_batch_size
        self._last_recorded: int | None = None
        self._visit_records = 0

    # ------------------------------------------------------------------ recording

    def record_probe(
        self, batch_size: int, energy_j: float, samples: int, duration_s: float, oom: bool = False
    ) -> None:
        """Record one window of training at ``batch_size`` (or that it ran out of memory).

        Args:
            batch_size: Per-device batch size the window ran at.
            energy_j: Energy of the window in joules (all ranks summed under DDP).
            samples: Training samples processed in the window (all ranks).
            duration_s: Wall time of the window in seconds (reported in details only).
            oom: The size ran out of memory: it and every larger size are ruled out for good,
                and the other arguments are ignored.

        Raises:
            ValueError: For a batch size < 1, negative or non-finite energy or duration, or
                ``samples < 1`` when ``oom`` is False.
        """
        size = check_int("batch_size", batch_size, 1)
        if oom:
            if self._oom_batch_size is None or size < self._oom_batch_size:
                self._oom_batch_size = size
            self._last_recorded = None
            self._visit_records = 0
            return
        energy = check_non_negative("energy_j", energy_j, unit="joules")
        duration = check_non_negative("duration_s", duration_s, unit="seconds")
        count = check_int("samples", samples, 1)
        if size != self._last_recorded:
            self._last_recorded = size
            self._visit_records = 0
        self._visit_records += 1
        if self._visit_records <= self.warmup_windows:
            return
        kept = self._windows.setdefault(size, [])
        kept.append((energy, float(count), duration))
        del kept[: -self.history_windows]

    # ------------------------------------------------------------------ queries

    @property
    def current_batch_size(self) -> int:
        """The batch size of the last decision (the user's before any)."""
        return self._current

    @property
    def oom_batch_size(self) -> int | None:
        """Smallest size that ran out of memory, or None."""
        return self._oom_batch_size

    @property
    def candidates(self) -> list[int]:
        """Candidate sizes still allowed, ascending."""
        if self._oom_batch_size is None:
            return list(self.grid)
        return [b for b in self.grid if b < self._oom_batch_size]

    def j_per_sample(self, batch_size: int) -> float | None:
        """Median joules per sample measured at ``batch_size``; None until ``min_windows``."""
        kept = self._windows.get(batch_size, [])
        if len(kept) < self.min_windows:
            return None
        return median([e / s for e, s, _ in kept])

    def measured(self) -> dict[int, float]:
        """Joules per sample of every allowed candidate measured so far."""
        out = {}
        for b in self.candidates:
            j = self.j_per_sample(b)
            if j is not None and j > 0:
                out[b] = j
        return out

    def probe_order(self) -> list[int]:
        """Allowed candidates in the order they are probed."""
        ref = self.initial_batch_size
        return sorted(self.candidates, key=lambda b: (abs(math.log2(b / ref)), -b))

    def next_probe(self) -> int | None:
        """The next candidate lacking measurements (the one in use first), or None."""
        order = self.probe_order()
        if self._current in order and self.j_per_sample(self._current) is None:
            return self._current
        for b in order:
            if self.j_per_sample(b) is None:
                return b
        return None

    # ------------------------------------------------------------------ deciding

    def decide(self, b_noise: float | str | None = USE_ESTIMATE) -> BatchSizeDecision:
        """Decide the batch size for what follows.

        Args:
            b_noise: The gradient noise scale in samples per optimizer step, ``inf`` allowed;
                None when unknown. Default :data:`USE_ESTIMATE`: the current estimate of
                :attr:`noise_scale`.

        Returns:
            The decision; the policy then assumes it is applied.

        Raises:
            ValueError: For a negative or NaN ``b_noise``.
        """
        noise = self.noise_scale.b_noise if b_noise == USE_ESTIMATE else check_b_noise(b_noise)
        previous = self._current
        details: dict[str, Any] = {"previous_batch_size": previous, "b_noise": noise}
        allowed = self.candidates
        if not allowed:
            details["error"] = f"every candidate ran out of memory (smallest failing: {self._oom_batch_size})"
            return BatchSizeDecision(previous, BatchSizeReason.OUT_OF_MEMORY, details)
        measured = self.measured()
        details["j_per_sample"] = measured
        oom_now = self._oom_batch_size is not None and previous >= self._oom_batch_size

        probe = self.next_probe()
        if probe is not None:
            reason = BatchSizeReason.OUT_OF_MEMORY if oom_now else BatchSizeReason.PROBE
            return self._apply(probe, reason, details)

        # None: the settled size itself ran out of memory, choose without hysteresis.
        anchor = self._settled if self._settled in allowed else None
        if noise is None or not measured:
            fallback = anchor if anchor is not None else max(allowed)
            reason = BatchSizeReason.OUT_OF_MEMORY if oom_now else BatchSizeReason.UNKNOWN_NOISE_SCALE
            self._settled = fallback
            return self._apply(fallback, reason, details)

        best, energy_vs = choose_batch_size(
            measured,
            noise,
            anchor,
            switch_margin=self.switch_margin,
            global_batch_factor=self.global_batch_factor,
        )
        details["energy_vs_current"] = energy_vs
        if oom_now:
            reason = BatchSizeReason.OUT_OF_MEMORY
        elif best != self._settled:
            reason = BatchSizeReason.CHEAPER
        else:
            reason = BatchSizeReason.KEEP
        self._settled = best
        return self._apply(best, reason, details)

    def _apply(self, batch_size: int, reason: BatchSizeReason, details: dict[str, Any]) -> BatchSizeDecision:
        self._current = batch_size
        return BatchSizeDecision(batch_size, reason, details)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: kept windows per size, ruled-out sizes, current and settled size, noise scale."""
        return {
            "version": _STATE_VERSION,
            "windows": {str(b): [list(w) for w in ws] for b, ws in sorted(self._windows.items())},
            "oom_batch_size": self._oom_batch_size,
            "current": self._current,
            "settled": self._settled,
            "last_recorded": self._last_recorded,
            "visit_records": self._visit_records,
            "noise_scale": self.noise_scale.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (possibly through JSON); later decisions are identical.

        Args:
            state: What :meth:`state_dict` returned: kept windows per size, ruled-out sizes, the noise scale.

        Raises:
            ValueError: For a state of another version.
        """
        check_state_version(state, _STATE_VERSION)
        self._windows = {
            int(b): [(float(e), float(s), float(d)) for e, s, d in ws] for b, ws in state["windows"].items()
        }
        oom = state["oom_batch_size"]
        self._oom_batch_size = None if oom is None else int(oom)
        self._current = int(state["current"])
        self._settled = int(state["settled"])
        last = state["last_recorded"]
        self._last_recorded = None if last is None else int(last)
        self._visit_records = int(state["visit_records"])
        self.noise_scale.load_state_dict(state["noise_scale"])
