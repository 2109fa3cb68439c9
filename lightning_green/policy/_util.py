"""Small helpers shared by the policies: a median of plain floats, decisions' details, state versions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

__all__ = ["DetailsMixin", "check_state_version", "median"]


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence of floats (the mean of the two middle ones for an even count).

    Example:
        >>> median([3.0, 1.0, 2.0]), median([4.0, 1.0, 2.0, 3.0])
        (2.0, 2.5)
    """
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


class DetailsMixin:
    """For frozen decision dataclasses: ``details`` made read-only, and whether a value changed."""

    details: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def _differs_from(self, key: str, value: object) -> bool:
        """Whether ``details[key]`` (``value`` when absent) differs from ``value``."""
        return self.details.get(key, value) != value


def check_state_version(state: Mapping[str, Any], version: int) -> None:
    """Raise ValueError unless ``state["version"]`` is ``version``."""
    if state.get("version") != version:
        raise ValueError(f"state version must be {version}, got {state.get('version')!r}")
