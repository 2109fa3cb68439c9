"""Resolving a measured difference: interleaved reference/candidate windows and a paired bound.

The adaptive callbacks compare a candidate setting (a precision, a batch size) with the current
one on windows measured in alternation, ``A B A B A ...``, so that drift and the load of other
processes hit both alike. :func:`compare_interleaved` pairs every candidate window with the mean
of its neighbouring reference windows (in logarithms: the ratio of joules per sample), and puts a
Student-t confidence interval on the mean paired log-ratio:

- ``cheaper``: the whole interval is below ``1 - min_saving`` (the saving is larger than the
  measured noise of these windows plus the margin asked for): adopt the candidate;
- ``costlier``: the whole interval is above 1: the candidate costs more, stop probing it;
- ``unresolved``: anything else; the caller stays on its current setting (or measures another
  pair while its probing budget lasts);
- ``insufficient``: fewer than two pairs: no bound can be put on the noise yet.

Neighbouring pairs share a reference window, so the pairs are not independent: one slow
reference window between two candidate windows shifts both pairs alike, and with two pairs
their spread can be zero however noisy the windows are (measured under load: references 0.0025,
0.0398, 0.0025 J/sample around candidates 0.0039, 0.0039 gave two identical ratios). So the
interval's standard error is the larger of two: the spread of the paired log-ratios, and the
error those pairs would have if the windows varied as they are seen to vary, each role's
variance taken from how far each of its windows lies from the line through its two neighbours
(blind to a linear drift) and the covariance of pairs that share a reference counted. It is a
rule for deciding, documented, not a p-value to report.

:class:`ProbeBudget` bounds what probing may cost: at most ``fraction`` (5 %) of the run's
projected energy, projected from what has been measured so far and the planned length.

Pure numpy/scipy; nothing here knows Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from lightning_green.checks import check_fraction_below_1, check_range

__all__ = [
    "CANDIDATE",
    "REFERENCE",
    "PairedComparison",
    "ProbeBudget",
    "compare_interleaved",
    "projected_run_energy_j",
]

REFERENCE = "reference"
"""Role of a window measured on the current setting."""
CANDIDATE = "candidate"
"""Role of a window measured on the setting being probed."""

VERDICTS: tuple[str, ...] = ("cheaper", "costlier", "unresolved", "insufficient")
"""Values of :attr:`PairedComparison.verdict`."""


@dataclass(frozen=True)
class PairedComparison:
    """The outcome of :func:`compare_interleaved`, with every figure behind it.

    Attributes:
        verdict: ``cheaper``, ``costlier``, ``unresolved`` or ``insufficient``.
        pairs: Number of candidate windows paired with a reference.
        ratio: Geometric mean of candidate / reference joules per sample (``None`` without pairs).
        ratio_low: Lower end of the confidence interval of the ratio (``None`` below two pairs).
        ratio_high: Upper end of the interval (``None`` below two pairs).
        confidence: Two-sided confidence level of the interval.
        min_saving: The saving the candidate had to show beyond the noise.
        reference_j_per_sample: Joules per sample of each reference window, in order.
        candidate_j_per_sample: Joules per sample of each candidate window, in order.
    """

    verdict: str
    pairs: int
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    confidence: float
    min_saving: float
    reference_j_per_sample: tuple[float, ...]
    candidate_j_per_sample: tuple[float, ...]

    @property
    def saving(self) -> float | None:
        """Estimated saving of the candidate, ``1 - ratio`` (negative: it costs more)."""
        return None if self.ratio is None else 1.0 - self.ratio

    @property
    def resolved(self) -> bool:
        """Whether the interval settles the question either way."""
        return self.verdict in ("cheaper", "costlier")

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-able values (for the adaptations record)."""
        return {
            "verdict": self.verdict,
            "pairs": self.pairs,
            "ratio": self.ratio,
            "ratio_low": self.ratio_low,
            "ratio_high": self.ratio_high,
            "confidence": self.confidence,
            "min_saving": self.min_saving,
            "reference_j_per_sample": list(self.reference_j_per_sample),
            "candidate_j_per_sample": list(self.candidate_j_per_sample),
        }


def _paired_log_ratios(roles: Sequence[str], values: np.ndarray) -> np.ndarray:
    """Log of each candidate window over the mean log of its nearest reference neighbours."""
    ref_at = [i for i, r in enumerate(roles) if r == REFERENCE]
    out = []
    for i, role in enumerate(roles):
        if role != CANDIDATE:
            continue
        before = [j for j in ref_at if j < i]
        after = [j for j in ref_at if j > i]
        neighbours = ([before[-1]] if before else []) + ([after[0]] if after else [])
        if not neighbours:
            continue
        out.append(math.log(values[i]) - float(np.mean([math.log(values[j]) for j in neighbours])))
    return np.asarray(out, dtype=float)


def _local_variance(values: np.ndarray) -> float:
    """Noise variance of a series around a locally linear trend.

    Each inner value's distance from the mean of its two neighbours has variance ``1.5 var`` for
    white noise and is zero for a linear drift; with two values, their difference (``2 var``);
    below two, 0.
    """
    if values.size >= 3:
        inner = values[1:-1] - (values[:-2] + values[2:]) / 2.0
        return float(np.mean(inner**2) / 1.5)
    if values.size == 2:
        return float((values[1] - values[0]) ** 2 / 2.0)
    return 0.0


def _window_noise_se(roles: Sequence[str], values: np.ndarray, pairs: int) -> float:
    """Standard error of the mean paired log-ratio implied by each role's own window noise.

    A pair's log-ratio has variance ``var_c + var_r / 2`` (a candidate window against the mean of
    two reference windows) and neighbouring pairs, sharing a reference, covariance ``var_r / 4``.
    """
    logs = np.log(values)
    var_r = _local_variance(np.asarray([v for v, r in zip(logs, roles, strict=True) if r == REFERENCE]))
    var_c = _local_variance(np.asarray([v for v, r in zip(logs, roles, strict=True) if r == CANDIDATE]))
    total = pairs * (var_c + var_r / 2.0) + 2.0 * (pairs - 1) * var_r / 4.0
    return math.sqrt(max(total, 0.0)) / pairs


def compare_interleaved(
    roles: Sequence[str],
    j_per_sample: Sequence[float],
    *,
    min_saving: float = 0.05,
    confidence: float = 0.9,
) -> PairedComparison:
    """Compare a candidate with the reference on windows measured in alternation.

    Args:
        roles: ``"reference"`` or ``"candidate"`` for each window, in the order measured.
        j_per_sample: Joules per sample of each window (finite, > 0), same order.
        min_saving: The fraction the candidate must save beyond the noise to be ``cheaper``.
        confidence: Two-sided confidence level of the interval on the paired ratio.

    Returns:
        The comparison and its figures.

    Raises:
        ValueError: If the lengths differ, a role is unknown or a value is not finite and > 0,
            or ``min_saving``/``confidence`` is outside ``[0, 1)``/``(0, 1)``.

    Example:
        >>> roles = ["reference", "candidate"] * 3 + ["reference"]
        >>> c = compare_interleaved(roles, [1.0, 3.1, 1.1, 2.9, 0.9, 3.0, 1.0])
        >>> c.verdict, c.pairs, round(c.ratio, 2)
        ('costlier', 3, 3.01)
        >>> compare_interleaved(roles, [1.0, 0.7, 1.6, 1.5, 0.8, 0.9, 1.2]).verdict
        'unresolved'
        >>> compare_interleaved(roles[:3], [1.0, 0.5, 1.0]).verdict
        'insufficient'
        >>> # One slow reference between two candidates: identical pairs, but not a resolved saving.
        >>> compare_interleaved(roles[:5], [0.0025, 0.0039, 0.0398, 0.0039, 0.0025]).verdict
        'unresolved'
    """
    check_fraction_below_1("min_saving", min_saving)
    check_range("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    if len(roles) != len(j_per_sample):
        raise ValueError(
            f"compare_interleaved: {len(roles)} roles for {len(j_per_sample)} windows; one role per window"
        )
    bad_roles = sorted({r for r in roles if r not in (REFERENCE, CANDIDATE)})
    if bad_roles:
        raise ValueError(f"compare_interleaved: roles must be 'reference' or 'candidate', got {bad_roles!r}")
    values = np.asarray(j_per_sample, dtype=float)
    if values.size and not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise ValueError(
            f"compare_interleaved: joules per sample must be finite and > 0, got {list(j_per_sample)!r}"
        )
    refs = tuple(float(v) for v, r in zip(values, roles, strict=True) if r == REFERENCE)
    cands = tuple(float(v) for v, r in zip(values, roles, strict=True) if r == CANDIDATE)
    d = _paired_log_ratios(roles, values)
    n = int(d.size)
    common = {
        "confidence": float(confidence),
        "min_saving": float(min_saving),
        "reference_j_per_sample": refs,
        "candidate_j_per_sample": cands,
    }
    if n == 0:
        return PairedComparison("insufficient", 0, None, None, None, **common)
    mean = float(d.mean())
    if n < 2:
        return PairedComparison("insufficient", n, math.exp(mean), None, None, **common)
    se = max(float(d.std(ddof=1)) / math.sqrt(n), _window_noise_se(roles, values, n))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se
    low, high = math.exp(mean - half), math.exp(mean + half)
    if high < 1.0 - min_saving:
        verdict = "cheaper"
    elif low > 1.0:
        verdict = "costlier"
    else:
        verdict = "unresolved"
    return PairedComparison(verdict, n, math.exp(mean), low, high, **common)


def projected_run_energy_j(spent_j: float, progress: float, horizon: float | None) -> float | None:
    """Energy the whole run will take at the rate measured so far: ``spent_j / progress * horizon``.

    Args:
        spent_j: Energy measured so far (J).
        progress: Training done so far (epochs or steps; > 0 to project).
        horizon: Planned end in the same unit, or ``None`` (no plan: nothing to project).

    Returns:
        The projection in joules (never below ``spent_j``), or ``None`` without a plan or progress.

    Example:
        >>> projected_run_energy_j(300.0, 3, 20)
        2000.0
        >>> projected_run_energy_j(300.0, 3, None) is None
        True
    """
    if horizon is None or progress <= 0 or not math.isfinite(spent_j):
        return None
    return max(float(spent_j), float(spent_j) / float(progress) * float(horizon))


@dataclass(frozen=True)
class ProbeBudget:
    """At most ``fraction`` of the run's projected energy may go to probing.

    Attributes:
        fraction: The share of the projected run energy probing may take (default 5 %).

    Example:
        >>> b = ProbeBudget()
        >>> b.allowance_j(2000.0)
        100.0
        >>> b.affords(next_probe_j=30.0, spent_probe_j=60.0, projected_run_j=2000.0)
        True
        >>> b.affords(next_probe_j=50.0, spent_probe_j=60.0, projected_run_j=2000.0)
        False
    """

    fraction: float = 0.05

    def __post_init__(self) -> None:
        check_range("fraction", self.fraction, low=0.0, high=1.0, low_open=False, high_open=True)

    def allowance_j(self, projected_run_j: float | None) -> float:
        """The probing energy allowed for a run projected at ``projected_run_j`` (0 when unknown)."""
        return 0.0 if projected_run_j is None else self.fraction * float(projected_run_j)

    def affords(self, *, next_probe_j: float, spent_probe_j: float, projected_run_j: float | None) -> bool:
        """Whether a probe expected to cost ``next_probe_j`` still fits beside ``spent_probe_j``."""
        return spent_probe_j + next_probe_j <= self.allowance_j(projected_run_j)

    def paced(self, *, next_probe_j: float, spent_probe_j: float, spent_run_j: float) -> bool:
        """Whether probing, ``next_probe_j`` more included, stays within ``fraction`` of the run so far.

        Paid as it goes: a run can end at any moment (a stopper, a target reached), and what
        probing cost by then is what it cost the user.

        Example:
            >>> ProbeBudget().paced(next_probe_j=10.0, spent_probe_j=0.0, spent_run_j=190.0)
            True
            >>> ProbeBudget().paced(next_probe_j=10.0, spent_probe_j=0.0, spent_run_j=100.0)
            False
        """
        return self.affords(
            next_probe_j=next_probe_j, spent_probe_j=spent_probe_j, projected_run_j=spent_run_j + next_probe_j
        )

    def pay_before_j(self, probe_j: float) -> float:
        """Energy the run must spend besides ``probe_j`` of probing for that to be its share (``inf`` at 0 %).

        Example:
            >>> ProbeBudget().pay_before_j(10.0)
            190.0
        """
        if self.fraction <= 0:
            return math.inf
        return float(probe_j) * (1.0 - self.fraction) / self.fraction

    def share(self, spent_probe_j: float, run_j: float) -> float | None:
        """Probing energy as a share of the run's (``None`` for a run without energy)."""
        return None if run_j <= 0 else float(spent_probe_j) / float(run_j)
