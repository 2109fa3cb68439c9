"""The record of what the adaptive callbacks changed: switches, their text and ``adaptations.json``.

Plain data, no Lightning: a switch decided at an epoch and step (:class:`Pending` until it is
applied), an adaptation history of such entries, its compact text for MLflow tags and the JSON
file both adaptive callbacks write their histories into.
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


def merge_adaptations(path: Path, key: str, payload: Mapping[str, Any], failed: bool = False) -> Path:
    """Write ``payload`` under ``key`` into the JSON file ``path``, keeping the other keys.

    Args:
        path: The ``adaptations.json`` file (created with its folder when missing).
        key: ``"batch_size"`` or ``"precision"``.
        payload: The callback's fields (made JSON-able).
        failed: Mark the file ``"failed": true`` (written by a fit that raised).

    Raises:
        OSError: When the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    data[key] = json_safe(payload)
    if failed:
        data["failed"] = True
    path.write_text(json.dumps(data, indent=2) + "\n")
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
