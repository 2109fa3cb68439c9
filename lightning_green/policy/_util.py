"""Small helpers shared by the policies: a median of plain floats, decisions' details, state versions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

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
    """For frozen decision dataclasses: ``details`` made read-only, and whether the setting changed.

    A decision class names the attribute holding its setting in ``setting_field``; its details
    hold the setting in use before it as ``previous_<setting_field>``.
    """

    details: Mapping[str, Any]
    setting_field: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @property
    def changed(self) -> bool:
        """Whether the setting differs from the one in use before the decision."""
        value = getattr(self, self.setting_field)
        return self.details.get(f"previous_{self.setting_field}", value) != value


def check_state_version(state: Mapping[str, Any], version: int) -> None:
    """Raise ValueError unless ``state["version"]`` is ``version``."""
    if state.get("version") != version:
        raise ValueError(f"state version must be {version}, got {state.get('version')!r}")
