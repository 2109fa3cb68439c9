"""Where the adaptive callbacks probed and switched, as marks on the report plot's energy axis.

Read from the summary alone (``<setting>_adaptations``, ``per_epoch``), so a summary read back
from MLflow draws the same marks. A probe is a span over the epochs that trained at the probed
setting; a switch that was adopted (not a probe, nor the way back from one, whatever its reason:
``interleave``, ``too_expensive``, a rollback) is a line where it took effect. Batch-size
switches take effect when the next epoch starts (``applied_epoch``), precision switches at the
next batch, within the epoch that decided them. Plain data; the drawing takes a matplotlib
``Axes`` and imports nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SETTINGS: tuple[str, ...] = ("batch_size", "precision")
"""The adapted settings whose records are marked."""

_PROBE = "probe"
_COLOURS = {"batch_size": "#31a354", "precision": "#756bb1"}
_NAMES = {"batch_size": "batch-size", "precision": "precision"}


@dataclass(frozen=True)
class Mark:
    """One mark on the energy axis.

    Attributes:
        kind: ``"probe"`` (a span) or ``"switch"`` (a line at ``start_kwh``).
        setting: ``"batch_size"`` or ``"precision"``.
        first_epoch: First epoch the mark covers.
        last_epoch: Last epoch it covers (the first for a switch).
        start_kwh: Cumulative energy where it starts (the start of ``first_epoch``).
        end_kwh: Cumulative energy where it ends (the end of ``last_epoch``; ``start_kwh`` for a switch).
        label: What happened (``"32->64 probe"``).
    """

    kind: str
    setting: str
    first_epoch: int
    last_epoch: int
    start_kwh: float
    end_kwh: float
    label: str


def _back(before: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> bool:
    """Whether ``entry`` ends the probe ``before`` (back to where it started, whatever the reason)."""
    return before is not None and before["reason"] == _PROBE and entry["to"] == before["from"]


def _applied_epoch(setting: str, entry: Mapping[str, Any]) -> int:
    if "applied_epoch" in entry:
        return int(entry["applied_epoch"])
    return int(entry["epoch"]) + (1 if setting == "batch_size" else 0)


def adaptation_marks(summary: Mapping[str, Any]) -> list[Mark]:
    """The probe spans and adopted switches of every adapted setting in ``summary``.

    Example:
        >>> per_epoch = [{"epoch": e, "total_kwh": 1.0 + e} for e in range(6)]
        >>> history = [
        ...     {"epoch": 1, "from": 32, "to": 64, "reason": "probe", "applied_epoch": 2},
        ...     {"epoch": 2, "from": 64, "to": 32, "reason": "interleave", "applied_epoch": 3},
        ...     {"epoch": 3, "from": 32, "to": 64, "reason": "cheaper", "applied_epoch": 4},
        ... ]
        >>> [(m.kind, m.first_epoch, m.last_epoch, m.start_kwh, m.end_kwh) for m in
        ...  adaptation_marks({"per_epoch": per_epoch, "batch_size_adaptations": history})]
        [('probe', 2, 2, 2.0, 3.0), ('switch', 4, 4, 4.0, 4.0)]
    """
    epochs: Sequence[Mapping[str, Any]] = summary.get("per_epoch") or []
    if not epochs:
        return []
    end_of = {int(e["epoch"]): float(e["total_kwh"]) for e in epochs}
    used = {int(e["epoch"]): float(e.get("energy_kwh") or 0.0) for e in epochs}
    first, last = min(end_of), max(end_of)

    def start_of(epoch: int) -> float:
        earlier = [end_of[e] for e in end_of if e < epoch]
        return max(earlier) if earlier else end_of[epoch] - used[epoch]

    marks: list[Mark] = []
    for setting in SETTINGS:
        changes = [h for h in summary.get(f"{setting}_adaptations") or [] if h.get("from") != h.get("to")]
        consumed = -1  # changes up to this index belong to a probe span already marked
        for i, entry in enumerate(changes):
            begin = min(max(_applied_epoch(setting, entry), first), last)
            label = f"{entry['from']}->{entry['to']} {entry['reason']}"
            if i <= consumed:
                continue  # inside a probe span, or the way back that ends it (its reason may say probe)
            if entry["reason"] == _PROBE:
                # Precision's interleaved step windows go back and forth between the same two
                # settings inside epochs: one span (batch-size visits are whole epochs, one each).
                j, pair = i + 1, {entry["from"], entry["to"]}
                while (
                    setting == "precision"
                    and j + 1 < len(changes)
                    and {changes[j]["from"], changes[j]["to"]} == pair
                    and {changes[j + 1]["from"], changes[j + 1]["to"]} == pair
                    and _PROBE in (changes[j]["reason"], changes[j + 1]["reason"])
                    # the same round: its windows interleave within an epoch or the next one; a
                    # later round (after a verdict, a cooldown) is a span of its own
                    and int(changes[j + 1]["epoch"]) - int(changes[j]["epoch"]) <= 1
                ):
                    j += 1
                after = changes[j] if j < len(changes) else None
                consumed = j if after is not None and _back(changes[j - 1], after) else j - 1
                end = last if after is None else _applied_epoch(setting, after) - (setting == "batch_size")
                end = min(max(end, begin), last)
                marks.append(Mark("probe", setting, begin, end, start_of(begin), end_of[end], label))
            elif _applied_epoch(setting, entry) <= last:
                at = start_of(begin)
                marks.append(Mark("switch", setting, begin, begin, at, at, label))
    return marks


def draw_adaptation_marks(ax: Any, marks: Sequence[Mark]) -> None:
    """Shade probe spans and draw switch lines on a matplotlib ``Axes`` (one legend entry each kind)."""
    labelled: set[tuple[str, str]] = set()
    for mark in marks:
        colour, name = _COLOURS[mark.setting], _NAMES[mark.setting]
        key = (mark.kind, mark.setting)
        legend = None if key in labelled else f"{name} {'probe' if mark.kind == 'probe' else 'switch'}"
        labelled.add(key)
        if mark.kind == "probe":
            ax.axvspan(mark.start_kwh, mark.end_kwh, color=colour, alpha=0.15, linewidth=0, label=legend)
            continue
        ax.axvline(mark.start_kwh, color=colour, linestyle="--", linewidth=1.2, label=legend)
        ax.annotate(
            mark.label,
            xy=(mark.start_kwh, 0.98),
            xycoords=("data", "axes fraction"),
            rotation=90,
            ha="right",
            va="top",
            fontsize=7,
            color=colour,
        )
