"""The energy-to-target model of batch size: candidates, samples to target, and its argmin.

McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training") model the samples ``E`` to
reach a target at batch size ``B`` as ``E(B) = E_min (1 + B / B_noise)``, with ``B_noise`` the
gradient noise scale (:mod:`lightning_green.policy.noise_scale`). The energy to reach the target
is then ``j_per_sample(B) · E_min · (1 + B / B_noise)``, minimised by :func:`choose_batch_size`
over the sizes :func:`candidate_batch_sizes` lists. Pure functions of plain numbers; the state
that measures joules per sample is :class:`~lightning_green.policy.batch_size.BatchSizePolicy`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum

from lightning_green.checks import (
    check_choice,
    check_fraction_below_1,
    check_int,
    check_non_negative,
    check_positive,
)

__all__ = [
    "DEFAULT_REACH",
    "LRScalingRule",
    "batch_size_range",
    "candidate_batch_sizes",
    "check_b_noise",
    "choose_batch_size",
    "relative_samples_to_target",
    "scale_learning_rate",
]

DEFAULT_REACH = 8
"""Default reach of the search: the initial batch size times or divided by 8."""


def check_b_noise(b_noise: object) -> float | None:
    """``b_noise`` checked: a non-negative number, ``inf`` or None (unknown).

    Raises:
        ValueError: Otherwise, naming ``b_noise``.
    """
    return check_non_negative("b_noise", b_noise, allow_inf=True, allow_none=True)


def candidate_batch_sizes(
    current: int,
    min_batch_size: int,
    max_batch_size: int,
    *,
    max_factor: int = 8,
    oom_batch_size: int | None = None,
) -> list[int]:
    """The batch sizes worth trying: ``current`` times powers of two, within bounds.

    Multiplying the user's size (rather than rounding to powers of two) keeps their
    granularity (a user at 96 gets 48, 96, 192) and always includes their own choice.

    Args:
        current: The user's batch size; always a candidate unless it ran out of memory.
        min_batch_size: Smallest size allowed (>= 1, <= ``current``).
        max_batch_size: Largest size allowed (>= ``current``).
        max_factor: How far from ``current`` to go either way, a power of two >= 1. Default 8
            (three doublings or halvings): each candidate costs a probe, and the model rarely
            recommends going further in one run.
        oom_batch_size: Smallest size known to run out of memory; it and anything larger are
            left out. None: nothing known.

    Returns:
        Candidate sizes, ascending.

    Raises:
        ValueError: For arguments outside the ranges above.

    Example:
        >>> candidate_batch_sizes(64, 16, 1024)
        [16, 32, 64, 128, 256, 512]
        >>> candidate_batch_sizes(96, 1, 4096, max_factor=2, oom_batch_size=192)
        [48, 96]
    """
    cur = check_int("current", current, 1)
    low = check_int("min_batch_size", min_batch_size, 1)
    high = check_int("max_batch_size", max_batch_size, 1)
    if low > cur:
        raise ValueError(f"min_batch_size must be <= current={cur}, got {min_batch_size!r}")
    if high < cur:
        raise ValueError(f"max_batch_size must be >= current={cur}, got {max_batch_size!r}")
    factor = check_int("max_factor", max_factor, 1)
    if factor & (factor - 1):
        raise ValueError(f"max_factor must be a power of two (1, 2, 4, 8, ...), got {max_factor!r}")
    if oom_batch_size is not None:
        check_int("oom_batch_size", oom_batch_size, 1)
    limit = high if oom_batch_size is None else min(high, oom_batch_size - 1)
    sizes = {cur} if cur <= limit else set()
    k = 2
    while k <= factor:
        if cur * k <= limit:
            sizes.add(cur * k)
        if cur % k == 0 and cur // k >= low:
            sizes.add(cur // k)
        k *= 2
    return sorted(sizes)


def relative_samples_to_target(batch_size: float, b_noise: float) -> float:
    """Samples needed to reach a target at ``batch_size``, relative to the minimum ``E_min``.

    ``E(B) / E_min = 1 + B / B_noise`` (McCandlish et al. 2018).

    Args:
        batch_size: The (global) batch size, > 0.
        b_noise: The gradient noise scale in samples, >= 0; ``inf`` gives 1.

    Returns:
        ``1 + batch_size / b_noise`` (``inf`` when ``b_noise`` is 0).

    Raises:
        ValueError: For a non-positive batch size or a negative or NaN ``b_noise``.

    Example:
        >>> relative_samples_to_target(256, 256.0)
        2.0
        >>> relative_samples_to_target(256, float("inf"))
        1.0
    """
    b = check_positive("batch_size", batch_size)
    noise = check_b_noise(b_noise)
    if noise is None:
        raise ValueError("b_noise must be a number >= 0 (inf allowed), got None")
    if noise == 0:
        return math.inf
    return 1.0 + b / noise


def _energy_score(j_per_sample: float, global_batch: float, b_noise: float) -> float:
    # Proportional to j_per_sample * (1 + B / B_noise) with the same factor for every B, and
    # finite at both ends: B_noise = inf -> j_per_sample, B_noise = 0 -> joules per step.
    if math.isinf(b_noise):
        return j_per_sample
    return j_per_sample * (b_noise + global_batch)


def choose_batch_size(
    j_per_sample: Mapping[int, float],
    b_noise: float,
    current_batch_size: int | None = None,
    *,
    switch_margin: float = 0.0,
    global_batch_factor: int = 1,
) -> tuple[int, dict[int, float]]:
    """The batch size with the least predicted energy to reach the target.

    Minimises ``j_per_sample(B) · (1 + G·B / b_noise)`` over the measured sizes, with
    ``G = global_batch_factor``. Hysteresis: a size other than ``current_batch_size`` is only
    chosen when its predicted energy is lower by more than ``switch_margin`` (a fraction).

    Args:
        j_per_sample: Measured joules per training sample, by (per-device) batch size.
        b_noise: Gradient noise scale in samples (global), >= 0, ``inf`` allowed. At ``inf``
            this is the size with the least joules per sample; at 0, the least joules per step.
        current_batch_size: The size in use; None (or a size not in ``j_per_sample``) means
            no hysteresis.
        switch_margin: Fraction of predicted energy a new size must save, in ``[0, 1)``.
        global_batch_factor: Samples per optimizer step per unit of batch size:
            ``world_size × accumulate_grad_batches``. ``B_noise`` counts samples per optimizer
            step over all ranks.

    Returns:
        ``(batch_size, energy_vs_current)``: the choice, and each size's predicted energy to
        target relative to ``current_batch_size`` (relative to the choice when there is no
        current).

    Raises:
        ValueError: For an empty or invalid ``j_per_sample`` or arguments out of range.

    Example:
        >>> j = {64: 1.0, 128: 0.7, 256: 0.6}
        >>> choose_batch_size(j, b_noise=50.0, current_batch_size=64)[0]  # 2.28, 2.49, 3.67
        64
        >>> choose_batch_size(j, b_noise=1000.0, current_batch_size=64)[0]  # 1.064, 0.790, 0.754
        256
        >>> # 0.754 is not 10 % below 0.790: stay at 128
        >>> choose_batch_size(j, b_noise=1000.0, current_batch_size=128, switch_margin=0.1)[0]
        128
    """
    if not j_per_sample:
        raise ValueError("j_per_sample must map at least one batch size to joules per sample, got {}")
    noise = check_b_noise(b_noise)
    if noise is None:
        raise ValueError("b_noise must be a number >= 0 (inf allowed), got None")
    margin = check_fraction_below_1("switch_margin", switch_margin)
    factor = check_int("global_batch_factor", global_batch_factor, 1)
    scores: dict[int, float] = {}
    for size, j in sorted(j_per_sample.items()):
        check_int("batch size in j_per_sample", size, 1)
        jv = check_positive(f"j_per_sample[{size}]", j, unit="joules")
        scores[size] = _energy_score(jv, size * factor, noise)
    anchor = current_batch_size if current_batch_size in scores else None
    # Deterministic tie-break: lower score, then closer to the current size, then smaller.
    ref = anchor if anchor is not None else min(scores)
    best = min(scores, key=lambda b: (scores[b], abs(math.log2(b / ref)), b))
    if anchor is not None and best != anchor and not scores[best] < scores[anchor] * (1.0 - margin):
        best = anchor
    base = scores[anchor if anchor is not None else best]
    return best, {b: s / base for b, s in scores.items()}


def batch_size_range(
    initial: int, min_batch_size: int | None, max_batch_size: int | None
) -> tuple[int, int, int]:
    """The sizes to search around ``initial``: ``(low, high, max_factor)``.

    A bound left None is ``initial`` divided or multiplied by :data:`DEFAULT_REACH`;
    ``max_factor`` is the smallest power of two that reaches both bounds from ``initial``.

    Example:
        >>> batch_size_range(32, None, None), batch_size_range(32, 16, 100)
        ((4, 256, 8), (16, 100, 4))
    """
    low = min_batch_size if min_batch_size is not None else max(1, initial // DEFAULT_REACH)
    high = max_batch_size if max_batch_size is not None else initial * DEFAULT_REACH
    return low, high, max(_power_of_two_at_least(high / initial), _power_of_two_at_least(initial / low), 1)


def _power_of_two_at_least(x: float) -> int:
    k = 1
    while k < x:
        k *= 2
    return k


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
