"""The vocabulary of the precision policy: the precisions and its decisions.

:class:`~lightning_green.policy.precision.PrecisionPolicy` imports and re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from lightning_green.policy._util import DetailsMixin

__all__ = [
    "PRECISIONS",
    "REFERENCE_PRECISION",
    "PrecisionDecision",
    "PrecisionReason",
    "check_precision",
]

PRECISIONS: tuple[str, ...] = ("32-true", "bf16-mixed", "16-mixed")
"""Precisions the policy knows, in Lightning's spelling, in probing order."""

REFERENCE_PRECISION: str = "32-true"
"""Full precision: always supported, the trajectory the others are held to."""


class PrecisionReason(str, Enum):
    """Why :meth:`PrecisionPolicy.decide` returned what it did."""

    PROBE = "probe"
    """Probing: measuring a candidate or the reference windows between its windows."""
    CHEAPER = "cheaper"
    """Switching: resolved cheaper by more than the margin, and the loss tracks the reference."""
    KEEP = "keep"
    """Staying: nothing to probe, or nothing was resolved cheaper (the figures say why)."""
    TOO_EXPENSIVE = "too_expensive"
    """A candidate was resolved costlier than the base (the whole interval above 1): not adopted."""
    UNRESOLVED = "unresolved"
    """A candidate's saving was not resolved within its pairs or the budget: not adopted."""
    TO_CONFIRM = "to_confirm"
    """On the CPU-time estimate, resolved cheaper in one probe: probed again in a later epoch first."""
    NO_BUDGET = "no_budget"
    """The probing budget cannot pay for two candidate windows (yet): not probing."""
    TOO_SHORT = "too_short"
    """The planned run ends before two candidate windows (with their references): not probing, for now.

    The candidates are kept: a run continued to a longer plan (``fit`` again with a larger
    ``max_epochs``, a resume with a longer plan) probes them.
    """
    PROBING_OFF = "probing_off"
    """``probe_budget=0``: probing is off by argument, whatever the run's length: not probing."""
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
    NOT_ALLOWED = "not_allowed"
    """A resumed run trained in (or was probing from) a precision its new arguments do not allow.

    Recorded by the callback at the resume, to the precision the policy falls back to (the one it
    chose where still allowed, else the Trainer's): see :meth:`PrecisionPolicy.load_state_dict`.
    """


@dataclass(frozen=True)
class PrecisionDecision(DetailsMixin):
    """What :meth:`PrecisionPolicy.decide` decided.

    Attributes:
        precision: The precision to train with from now on (Lightning's spelling).
        reason: Why.
        details: Figures behind it (JSON-able values): ``previous_precision``, ``step``,
            ``epoch`` and, where relevant, ``j_per_sample`` by precision, the paired comparison
            (per-window joules per sample, ratio, its interval, verdict), the loss check, the
            probing budget, the banned precision and until which epoch.
    """

    precision: str
    reason: PrecisionReason
    details: Mapping[str, Any] = field(default_factory=dict)
    setting_field: ClassVar[str] = "precision"


def check_precision(name: str, value: object) -> str:
    """``value`` checked against :data:`PRECISIONS`.

    Raises:
        ValueError: Naming ``name`` and the precisions allowed.
    """
    if value not in PRECISIONS:
        raise ValueError(f"{name} must name a precision in {list(PRECISIONS)}, got {value!r}")
    return value  # type: ignore[return-value]
