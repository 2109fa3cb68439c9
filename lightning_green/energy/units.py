"""Unit conversions. Joules internally, kWh at the edges."""

from __future__ import annotations

J_PER_KWH: float = 3.6e6
"""Joules in one kilowatt-hour."""


def j_to_kwh(energy_j: float) -> float:
    """Convert joules to kilowatt-hours.

    Args:
        energy_j: Energy in joules.

    Returns:
        The same energy in kWh.

    Example:
        >>> j_to_kwh(3.6e6)
        1.0
    """
    return energy_j / J_PER_KWH
