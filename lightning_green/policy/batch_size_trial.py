"""One batch-size trial: a candidate against the size in use, on interleaved epochs; its verdict.

A trial alternates whole epochs: the reference (the size in use) for an epoch, the candidate for
the next, back to the reference, ... (``R C R C R``). Every measurement window of those epochs
(the first of each visit discarded) is one joules-per-sample value with its role, and
:func:`~lightning_green.policy.paired_windows.compare_interleaved` pairs each candidate window
with its neighbouring reference windows, so that drift and other processes' load hit both alike.

The candidate is adopted only when the paired comparison is ``cheaper`` (its whole confidence
interval below ``1 - switch_margin``) *and* the energy-to-target model agrees: the upper end of
the interval times the extra samples a bigger batch needs, ``(B_noise + G·B_cand) /
(B_noise + G·B_ref)`` (McCandlish et al. 2018), is still below ``1 - switch_margin``.

Why whole epochs rather than step windows inside an epoch: Lightning plans an epoch from the
train dataloader when it loads it (``num_training_batches``, the batch that validates,
``val_check_batch``) and reloads it only at an epoch start. A loader that yields bigger batches
mid-epoch runs out before the planned validation batch (the epoch ends unvalidated); smaller
batches are cut at the planned count (samples silently dropped); concatenating loader batches
into one step needs Lightning's private data fetcher. So each visit is an epoch, the budget
check counts whole epochs, and a run too short to afford two candidate epochs does not probe.

Pure Python; nothing here knows Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from lightning_green.policy._util import DetailsMixin
from lightning_green.policy.batch_size_model import relative_samples_to_target
from lightning_green.policy.paired_windows import CANDIDATE, REFERENCE, PairedComparison, compare_interleaved

__all__ = [
    "VERDICT_REASONS",
    "BatchSizeDecision",
    "BatchSizeReason",
    "Trial",
    "fraction_done",
    "judge",
    "no_probe_message",
    "probing_off_message",
]


class BatchSizeReason(str, Enum):
    """Why :meth:`BatchSizePolicy.decide` returned what it did."""

    PROBE = "probe"
    """To the candidate for one epoch of measurement windows."""
    INTERLEAVE = "interleave"
    """Back to the size in use for one epoch between candidate epochs (the paired reference)."""
    CHEAPER = "cheaper"
    """Adopting the candidate: resolved cheaper per sample, and to the target by the model."""
    COSTLIER = "costlier"
    """The candidate resolved costlier per sample: staying."""
    UNRESOLVED = "unresolved"
    """No difference beyond the measured noise within the probing budget: staying."""
    MORE_SAMPLES = "more_samples"
    """Cheaper per sample, but not to the target once the extra samples it needs count: staying."""
    UNKNOWN_NOISE_SCALE = "unknown_noise_scale"
    """No gradient noise scale to rank the sizes to the target: staying."""
    NO_PROBE_BUDGET = "no_probe_budget"
    """Probing (more) would take more than its share of the run's projected energy: staying."""
    PROBING_OFF = "probing_off"
    """``probe_fraction=0``: probing is off by argument, whatever the run's length: staying."""
    OUT_OF_MEMORY = "out_of_memory"
    """The size in use ran out of memory: backing off to a smaller one."""
    LOADER_IGNORED_SIZE = "loader_ignored_size"
    """The train dataloader kept yielding the previous size after a switch: back to it, adapting no more."""


VERDICT_REASONS = {
    "costlier": BatchSizeReason.COSTLIER,
    "unresolved": BatchSizeReason.UNRESOLVED,
    "insufficient": BatchSizeReason.UNRESOLVED,
    "more_samples": BatchSizeReason.MORE_SAMPLES,
    "unknown_noise_scale": BatchSizeReason.UNKNOWN_NOISE_SCALE,
}


@dataclass(frozen=True)
class BatchSizeDecision(DetailsMixin):
    """What :meth:`BatchSizePolicy.decide` decided.

    Attributes:
        batch_size: The per-device batch size to train the next epoch at.
        reason: Why.
        details: Figures behind it (JSON-able values): ``previous_batch_size``, ``b_noise``,
            ``probe_j``, ``probe_allowance_j``, and for a concluded trial ``comparison`` (per-window
            joules per sample, the ratio and its interval, the verdict).
    """

    batch_size: int
    reason: BatchSizeReason
    details: Mapping[str, Any] = field(default_factory=dict)
    setting_field: ClassVar[str] = "batch_size"


@dataclass
class Trial:
    """The windows of one candidate against the reference, in the order measured.

    Attributes:
        reference: The batch size in use (adopted so far).
        candidate: The batch size on trial.
        roles: ``"reference"`` or ``"candidate"`` per kept window.
        j_per_sample: Joules per sample per kept window.
        visits: Candidate epochs trained so far.
        visit_j: Energy of each candidate epoch's windows (warm-up included).
    """

    reference: int
    candidate: int
    roles: list[str] = field(default_factory=list)
    j_per_sample: list[float] = field(default_factory=list)
    visits: int = 0
    visit_j: list[float] = field(default_factory=list)

    def add(self, batch_size: int, j_per_sample: float) -> None:
        """Add a kept window measured at ``batch_size`` (ignored unless it is one of the two)."""
        ok = j_per_sample > 0 and math.isfinite(j_per_sample)
        if ok and batch_size in (self.reference, self.candidate):
            self.roles.append(CANDIDATE if batch_size == self.candidate else REFERENCE)
            self.j_per_sample.append(float(j_per_sample))

    def blocks(self) -> tuple[list[str], list[float]]:
        """One value per visit (a run of windows with the same role): their geometric mean.

        The windows of one visit share its neighbouring visits, so they are not independent
        pairs; the visits are the alternation ``R C R C R`` the paired interval assumes.
        """
        roles: list[str] = []
        logs: list[list[float]] = []
        for role, value in zip(self.roles, self.j_per_sample, strict=True):
            if not roles or roles[-1] != role:
                roles.append(role)
                logs.append([])
            logs[-1].append(math.log(value))
        return roles, [math.exp(sum(v) / len(v)) for v in logs]

    def compare(self, switch_margin: float, confidence: float) -> PairedComparison:
        """The paired comparison of the visits so far (a pair per candidate visit)."""
        roles, values = self.blocks()
        return compare_interleaved(roles, values, min_saving=switch_margin, confidence=confidence)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "roles": list(self.roles),
            "j_per_sample": list(self.j_per_sample),
            "visits": self.visits,
            "visit_j": list(self.visit_j),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Trial:
        """The trial :meth:`to_dict` saved."""
        return cls(
            int(state["reference"]),
            int(state["candidate"]),
            [str(r) for r in state["roles"]],
            [float(v) for v in state["j_per_sample"]],
            int(state["visits"]),
            [float(v) for v in state["visit_j"]],
        )


def judge(
    comparison: PairedComparison,
    reference: int,
    candidate: int,
    b_noise: float | None,
    *,
    switch_margin: float,
    global_batch_factor: int = 1,
    windows: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The verdict of a trial on what the comparison and the energy-to-target model say.

    Args:
        comparison: The paired comparison of the trial's windows.
        reference: The batch size in use.
        candidate: The batch size on trial.
        b_noise: The gradient noise scale (global samples per step), ``inf`` allowed; None: unknown.
        switch_margin: The saving asked for, beyond the noise.
        global_batch_factor: ``world_size × accumulate_grad_batches``.
        windows: More figures to record with the verdict (the per-window values).

    Returns:
        ``(verdict, figures)``: ``"cheaper"`` (adopt), ``"costlier"``, ``"unresolved"``,
        ``"insufficient"``, ``"more_samples"`` (cheaper per sample, not to the target) or
        ``"unknown_noise_scale"``; the figures are the comparison's plus ``samples_factor`` and
        ``energy_to_target_high`` (the bound times that factor) where known.

    Example:
        >>> c = compare_interleaved(["reference", "candidate"] * 3 + ["reference"],
        ...                         [1.0, 0.6, 1.0, 0.62, 1.0, 0.61, 1.0], min_saving=0.1)
        >>> judge(c, 32, 64, 1e9, switch_margin=0.1)[0], judge(c, 32, 64, 20.0, switch_margin=0.1)[0]
        ('cheaper', 'more_samples')
    """
    figures = {**comparison.to_dict(), **(windows or {})}
    if comparison.verdict != "cheaper":
        return comparison.verdict, figures
    if b_noise is None:
        return "unknown_noise_scale", figures
    g = global_batch_factor
    cand, ref = (relative_samples_to_target(b * g, b_noise) for b in (candidate, reference))
    factor = cand / ref
    assert comparison.ratio_high is not None  # a cheaper verdict has a bound
    figures["samples_factor"] = factor
    figures["energy_to_target_high"] = comparison.ratio_high * factor
    if comparison.ratio_high * factor < 1.0 - switch_margin:
        return "cheaper", figures
    return "more_samples", figures


def fraction_done(
    epochs_done: float, steps_done: int, max_epochs: int | None, max_steps: int | None
) -> float:
    """Share of the planned run done: the larger of the epoch and step shares (0 without a plan).

    Example:
        >>> fraction_done(3, 300, 30, -1), fraction_done(3, 300, 30, 1000), fraction_done(3, 300, -1, -1)
        (0.1, 0.3, 0.0)
    """
    shares = [epochs_done / max_epochs if max_epochs is not None and max_epochs > 0 else 0.0]
    shares.append(steps_done / max_steps if max_steps is not None and max_steps > 0 else 0.0)
    return min(1.0, max(shares))


def probing_off_message(batch_size: int | None) -> str:
    """The line for a run whose ``probe_fraction=0`` turned probing off.

    Example:
        >>> probing_off_message(32)
        'AdaptiveBatchSize does not probe: probe_fraction=0 turns probing off; it keeps batch size 32'
    """
    off = "AdaptiveBatchSize does not probe: probe_fraction=0 turns probing off"
    return f"{off}; it keeps batch size {batch_size}"


def no_probe_message(details: Mapping[str, Any], batch_size: int | None) -> str:
    """The warning for a run whose probing budget cannot pay for (more) candidate epochs.

    A run without a planned length (``planned_epochs`` recorded as ``None``) is told so: nothing
    projects its energy.

    Example:
        >>> message = no_probe_message({"candidate": 64, "planned_epochs": None, "probe_j": 0.0}, 32)
        >>> message.split(": ")[1].split(" (")[0], message.endswith("it keeps batch size 32")
        ('the run has no planned length to project its probing budget from', True)
    """
    allowance, visit = details.get("probe_allowance_j") or 0.0, details.get("visit_j") or 0.0
    spent = details.get("probe_j") or 0.0
    what = "does not probe" if not spent else "stops probing"
    if "planned_epochs" in details and details["planned_epochs"] is None:
        return (
            f"AdaptiveBatchSize {what}: the run has no planned length to project its probing budget "
            "from (set max_epochs or max_steps; the 1000 epochs Lightning puts in place of an unset "
            f"max_epochs is no plan); it keeps batch size {batch_size}"
        )
    paid, planned = details.get("paid_after_epochs"), details.get("planned_epochs")
    pace = ""
    if paid is not None and planned is not None and math.isfinite(paid):
        pace = (
            f"; probing is paid as it goes, so they could start only after about {paid:.0f} epochs "
            f"and the plan has {planned:.0f}"
        )
    return (
        f"AdaptiveBatchSize {what}: {details.get('min_visits', 1)} epochs at batch size "
        f"{details.get('candidate')} (about {visit:.4g} J each) cannot be paid for within the probing "
        f"budget: {allowance:.4g} J (probe_fraction of the run's projected energy; "
        f"{spent:.4g} J spent){pace}; "
        f"it keeps batch size {batch_size}. Longer runs (max_epochs/max_steps) can afford probing."
    )
