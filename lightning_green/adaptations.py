"""The record of what the adaptive callbacks changed: switches, their text and ``adaptations.json``.

Plain data, no Lightning: a switch decided at an epoch and step (:class:`Pending` until it is
applied), an adaptation history of such entries, its compact text for MLflow tags and the JSON
file both adaptive callbacks of a fit write their histories into (:class:`FitAdaptations`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_green.json_safe import json_safe

ADAPTATIONS_FILENAME = "adaptations.json"
"""File written next to the energy summary with every adaptation and its reason."""

MAX_TAG_CHARS = 4900
"""MLflow tag values are limited to 5000 characters; the switch texts stay below."""

MAX_HISTORY = 500
"""Entries kept in an adaptation history (the most recent); a run switches a handful of times."""

PROBE_REASON = "probe"
"""The reason both policies give a switch that only measures."""


@dataclass
class Pending:
    """A switch decided at ``epoch``/``step`` and not applied yet."""

    epoch: int
    step: int
    to: int | str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def switch_text(history: Sequence[Mapping[str, Any]], limit: int = MAX_TAG_CHARS) -> str:
    """A compact one-line text of switches (the most recent kept within ``limit`` characters).

    Example:
        >>> switch_text([{"epoch": 0, "step": 45, "from": 32, "to": 64, "reason": "probe"}])
        'e0 s45 32->64 probe'
    """
    parts = [f"e{h['epoch']} s{h['step']} {h['from']}->{h['to']} {h['reason']}" for h in history]
    text = "; ".join(parts)
    while len(text) > limit and parts:
        parts.pop(0)
        text = "...; " + "; ".join(parts)
    return text


def switches(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The entries of an adaptation history that changed the setting.

    Example:
        >>> switches([{"from": 32, "to": 32}, {"from": 32, "to": 64}])
        [{'from': 32, 'to': 64}]
    """
    return [h for h in history if h["from"] != h["to"]]


@dataclass
class FitAdaptations:
    """What one fit's adaptive callbacks recorded in ``adaptations.json``: the file's whole content.

    Each callback adds its fields under its key when the fit ends (or fails), and the file is
    written whole from this record each time: it holds this fit's callbacks only, never what a
    file left in the folder by another run (or an earlier fit) held, and ``"failed": true`` only
    when this fit failed. A resumed fit's callbacks restore the run's adaptation history from the
    checkpoint, so their fields cover the whole run, as the fit's ``energy_summary.json`` does.

    Attributes:
        fit: What names the fit (the measurement session's ``fit_id``), None where unknown.
        fields: The callbacks' fields by key (``"batch_size"``, ``"precision"``), JSON-able.
        failed: Whether the fit failed (a callback wrote from ``on_exception``).

    Example:
        >>> record = FitAdaptations("fit-1")
        >>> record.add("precision", {"precision": "32-true"})
        >>> record.to_json()
        {'precision': {'precision': '32-true'}}
        >>> record.add("batch_size", {"batch_size": 32}, failed=True)
        >>> sorted(record.to_json())
        ['batch_size', 'failed', 'precision']
    """

    fit: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    failed: bool = False

    def add(self, key: str, payload: Mapping[str, Any], failed: bool = False) -> None:
        """Record one callback's fields under ``key`` (replacing what it recorded before in this fit).

        Args:
            key: ``"batch_size"`` or ``"precision"``.
            payload: The callback's fields (made JSON-able).
            failed: The fit failed (the file is marked ``"failed": true``).
        """
        self.fields[key] = json_safe(payload)
        self.failed = self.failed or bool(failed)

    def to_json(self) -> dict[str, Any]:
        """The content of ``adaptations.json``: the fields by key, and ``"failed": true`` for a failed fit."""
        data = dict(self.fields)
        if self.failed:
            data["failed"] = True
        return data

    def write(self, path: Path) -> Path:
        """Write the record as ``path`` (its folder created when missing), replacing any file there.

        Raises:
            OSError: When the file cannot be written.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def chosen_setting(history: Sequence[Mapping[str, Any]], initial: Any) -> Any:
    """The setting a policy chose, probes aside: the target of the last switch that was not a probe.

    Example:
        >>> chosen_setting([{"to": 64, "reason": "cheaper"}, {"to": 16, "reason": "probe"}], 32)
        64
    """
    chosen = initial
    for entry in history:
        if entry.get("reason") != PROBE_REASON:
            chosen = entry["to"]
    return chosen
