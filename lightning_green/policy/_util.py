"""Small helpers shared by the policies: argument checks and a median of plain floats."""

from __future__ import annotations

from collections.abc import Sequence


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) ``>= minimum``, else a ``ValueError`` naming it.

    Example:
        >>> check_int("window_steps", 3, 1)
        3
        >>> check_int("window_steps", 0, 1)
        Traceback (most recent call last):
        ...
        ValueError: window_steps must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_bools(**flags: object) -> None:
    """Raise a ``ValueError`` naming the first of ``flags`` that is not ``True`` or ``False``.

    Example:
        >>> check_bools(strict=True, verbose="no")
        Traceback (most recent call last):
        ...
        ValueError: verbose must be True or False, got 'no'
    """
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")


def check_fraction(name: str, value: object) -> float:
    """``value`` as a float in ``[0, 1)``, else a ``ValueError`` naming it.

    Example:
        >>> check_fraction("ema_decay", 0.99)
        0.99
    """
    if isinstance(value, (bool, str)):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not (0.0 <= number < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return number


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
