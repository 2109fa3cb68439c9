"""The vocabulary of the precision policy: the precisions, its decisions and its probe plan.

**Probe plan** (:func:`probe_plan`): reference windows at the base precision (normally
``32-true``), then each candidate sandwiched between reference segments::

    32-true ×R | bf16-mixed ≤P | 32-true ×R | 16-mixed ≤P | 32-true ×R

``R = reference_windows``, ``P = probe_windows`` of
:class:`~lightning_green.policy.precision.PrecisionPolicy`, which imports and re-exports
everything here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lightning_green.policy._util import DetailsMixin

__all__ = [
    "PRECISIONS",
    "REFERENCE_PRECISION",
    "PlanSegment",
    "PrecisionDecision",
    "PrecisionReason",
    "check_precision",
    "probe_plan",
]

PRECISIONS: tuple[str, ...] = ("32-true", "bf16-mixed", "16-mixed")
"""Precisions the policy knows, in Lightning's spelling, in probing order."""

REFERENCE_PRECISION: str = "32-true"
"""Full precision: always supported, the trajectory the others are held to."""


class PrecisionReason(str, Enum):
    """Why :meth:`PrecisionPolicy.decide` returned what it did."""

    PROBE = "probe"
    """Following the probe plan: measuring a candidate or the reference around it."""
    CHEAPER = "cheaper"
    """Switching: measured cheaper by more than the margin and the loss tracks the reference."""
    KEEP = "keep"
    """Staying: nothing to probe, or nothing passed and saved enough."""
    TOO_EXPENSIVE = "too_expensive"
    """A probe stopped early: the candidate clearly costs more than the base."""
    LOSS_DEVIATION = "loss_deviation"
    """A probed candidate's loss left the reference trend: banned for the cooling period."""
    ROLLBACK_NON_FINITE = "rollback_non_finite"
    """A non-finite loss: back to the previous precision, the offender banned."""
    ROLLBACK_LOSS_JUMP = "rollback_loss_jump"
    """The loss jumped beyond tolerance: back to the previous precision, the offender banned."""
    ROLLBACK_OVERFLOW = "rollback_overflow"
    """Repeated GradScaler overflows: back to the previous precision, the offender banned."""
    COOLDOWN_OVER = "cooldown_over"
    """A banned precision's cooling period ended: it will be probed again."""


@dataclass(frozen=True)
class PrecisionDecision(DetailsMixin):
    """What :meth:`PrecisionPolicy.decide` decided.

    Attributes:
        precision: The precision to train with from now on (Lightning's spelling).
        reason: Why.
        details: Figures behind it (JSON-able values): ``previous_precision``, ``step``,
            ``epoch`` and, where relevant, ``j_per_sample`` by precision, the probe's loss
            check, the banned precision and until which epoch.
    """

    precision: str
    reason: PrecisionReason
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the precision differs from the one in use before the decision."""
        return self._differs_from("previous_precision", self.precision)


@dataclass(frozen=True)
class PlanSegment:
    """One segment of a probe plan.

    Attributes:
        precision: The precision trained with in this segment.
        role: ``"reference"`` (the base precision, ``reference_windows`` windows) or
            ``"probe"`` (a candidate, up to ``probe_windows`` windows).
    """

    precision: str
    role: str


def probe_plan(candidates: Sequence[str], base: str = REFERENCE_PRECISION) -> tuple[PlanSegment, ...]:
    """The order in which precisions are measured: each candidate between two references.

    Args:
        candidates: Precisions to probe, in order; ``base`` and duplicates are skipped.
        base: The precision in use, whose loss trajectory the candidates are held to.

    Returns:
        ``reference, probe, reference, probe, ..., reference``; empty when there is no
        candidate.

    Raises:
        ValueError: For a precision not in :data:`PRECISIONS`.

    Example:
        >>> [(s.precision, s.role) for s in probe_plan(["bf16-mixed"])]
        [('32-true', 'reference'), ('bf16-mixed', 'probe'), ('32-true', 'reference')]
    """
    check_precision("base", base)
    todo = []
    for c in candidates:
        check_precision("candidates", c)
        if c != base and c not in todo:
            todo.append(c)
    if not todo:
        return ()
    plan = [PlanSegment(base, "reference")]
    for c in todo:
        plan += [PlanSegment(c, "probe"), PlanSegment(base, "reference")]
    return tuple(plan)


def check_precision(name: str, value: object) -> str:
    """``value`` checked against :data:`PRECISIONS`.

    Raises:
        ValueError: Naming ``name`` and the precisions allowed.
    """
    if value not in PRECISIONS:
        raise ValueError(f"{name} must name a precision in {list(PRECISIONS)}, got {value!r}")
    return value  # type: ignore[return-value]
