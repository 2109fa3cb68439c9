"""The one JSON-safe rule: plain JSON data, non-finite floats as ``null`` (None), everywhere.

Strict JSON has no NaN or infinity (Python's ``json`` writes ``NaN``/``Infinity``, which other
readers refuse), so every summary, adaptations record, decision detail and saved state that goes
to JSON passes through :func:`json_safe` (or :func:`finite_or_none` for a single number): a
non-finite float becomes None, and the reader treats None as "not a finite value". A state that
must tell ``inf`` from ``nan`` on restore keeps what it needs next to it (the mode, say) and
restores the infinity from that.

Nothing here imports Lightning, torch or NumPy (their scalars and arrays are recognised by duck
typing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from lightning_green.checks import as_number

__all__ = ["finite_or_none", "json_safe"]

_ARRAY_MODULES = ("numpy", "torch")


def finite_or_none(value: object) -> float | None:
    """A number as a float, None when it is None, NaN or infinite.

    Args:
        value: A Python, NumPy or 0-dim torch number, or None.

    Returns:
        The float, or None.

    Raises:
        TypeError: For anything else (a string, a bool): a caller's bug, not data.

    Example:
        >>> finite_or_none(2), finite_or_none(float("inf")), finite_or_none(None)
        (2.0, None, None)
    """
    if value is None:
        return None
    number = as_number(value)
    if number is None:
        raise TypeError(f"finite_or_none needs a number or None, got {value!r}")
    return float(number) if math.isfinite(number) else None


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, Enum):
        return str(key.value)
    return str(key)


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data with every non-finite float replaced by None.

    Mappings become dicts with string keys (an Enum key becomes its value), lists and tuples
    lists, Enums their value, NumPy and torch scalars Python numbers, NumPy arrays and torch
    tensors nested lists; ``None``, ``bool``, ``int``, finite ``float`` and ``str`` stay;
    anything else becomes its ``str()``.

    Args:
        value: The data.

    Returns:
        Data that ``json.dumps(..., allow_nan=False)`` accepts.

    Example:
        >>> json_safe({"j": [1.5, float("nan")], 64: (float("-inf"), True), "p": None})
        {'j': [1.5, None], '64': [None, True], 'p': None}
    """
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, Mapping):
        return {_key(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if type(value).__module__.split(".")[0] in _ARRAY_MODULES and hasattr(value, "tolist"):
        plain = value.tolist()
        if plain is not value:
            return json_safe(plain)
    number = as_number(value)
    if number is not None:
        return number if math.isfinite(number) else None
    return str(value)
