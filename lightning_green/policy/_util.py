"""Small helpers shared by the policies: a median of plain floats.

``check_int`` and ``check_bools`` are :mod:`lightning_green.checks`'s, re-exported here only for
the callbacks that still import them from this private module; new code imports
:mod:`lightning_green.checks`.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning_green.checks import check_bools, check_int

__all__ = ["check_bools", "check_int", "median"]


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
