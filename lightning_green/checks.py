"""Argument checks: one place for every "is this a valid number / flag / choice" question.

Every check returns the value as a plain Python ``int``, ``float``, ``bool`` or ``str`` (or None
where None is allowed) and raises a :class:`ValueError` whose message names the argument, quotes
the value given and says what is allowed, e.g. ``patience must be an integer >= 0, got -1``.

What counts as a number: Python ``int`` and ``float`` (and other :class:`numbers.Real`), NumPy
scalars (``np.int64(5)``, ``np.float32(0.1)``) and 0-dim NumPy arrays and torch tensors
(``torch.tensor(3)``), all accepted exactly as the Python number they hold. Never a number:
``bool`` and ``np.bool_`` (and boolean tensors), text (``"0.1"``: a number's text is parsed by
whoever reads it, e.g. from an environment variable, and then checked), complex numbers,
tensors or arrays of more than one element. An integer argument takes an integral type only:
``5.0`` is refused where an integer is wanted.

Nothing here imports Lightning, torch or NumPy (their scalars are recognised by duck typing).

Example:
    >>> check_int("patience", 3, 0)
    3
    >>> check_positive("lr", 0.1)
    0.1
    >>> check_fraction_below_1("switch_margin", 1.0)
    Traceback (most recent call last):
    ...
    ValueError: switch_margin must be a number in [0, 1), got 1.0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = [
    "as_number",
    "as_plain",
    "check_at_least",
    "check_bool",
    "check_bools",
    "check_choice",
    "check_fraction_0_to_1",
    "check_fraction_below_1",
    "check_int",
    "check_non_negative",
    "check_number",
    "check_positive",
    "check_range",
    "is_number",
]

_UNSET: Any = object()
_SCALAR_MODULES = ("numpy", "torch")


def _unwrap(value: object) -> object:
    """The Python value inside a NumPy scalar or a 0-dim NumPy array / torch tensor; else ``value``."""
    if type(value).__module__.split(".")[0] not in _SCALAR_MODULES or not hasattr(value, "item"):
        return value
    if getattr(value, "ndim", None) != 0 and getattr(value, "shape", None) != ():
        return value
    try:
        return value.item()  # type: ignore[attr-defined]
    except (TypeError, ValueError, RuntimeError):
        return value


def as_number(value: object) -> int | float | None:
    """The Python ``int`` or ``float`` a number argument stands for, or None when it is no number.

    Example:
        >>> as_number(5), as_number(2.5), as_number(True), as_number("1")
        (5, 2.5, None, None)
    """
    plain = _unwrap(value)
    if isinstance(plain, bool):
        return None
    if isinstance(plain, numbers.Integral):
        return int(plain)
    if isinstance(plain, numbers.Real):
        return float(plain)
    return None


def as_plain(value: object) -> Any:
    """``value`` as the plain Python ``bool``, ``int``, ``float`` or ``str`` it stands for.

    A NumPy scalar or 0-dim NumPy array / torch tensor becomes the Python value it holds (also
    ``np.float64``, which is a ``float`` subclass, and ``np.bool_``); any other ``numbers.Real``
    becomes an ``int`` or ``float``. Anything else is returned unchanged. Callbacks keep their
    arguments this way, so a checkpoint holds plain values that ``torch.load(weights_only=True)``
    can read back.

    Example:
        >>> as_plain(True), as_plain(3), as_plain("min"), as_plain(None)
        (True, 3, 'min', None)
    """
    plain = _unwrap(value)
    if isinstance(plain, bool):
        return bool(plain)
    if isinstance(plain, str):
        return str(plain)
    number = as_number(plain)
    return plain if number is None else number


def is_number(value: object) -> bool:
    """Whether ``value`` is a real number argument (see the module's rules; NaN and inf included).

    Example:
        >>> is_number(3), is_number(float("nan")), is_number(False), is_number("3")
        (True, True, False, False)
    """
    return as_number(value) is not None


def _fail(name: str, allowed: str, value: object, given: object, allow_none: bool) -> ValueError:
    shown = value if given is _UNSET else given
    message = f"{name} must be {'None or ' if allow_none else ''}{allowed}, got {shown!r}"
    return ValueError(message + _text_number_hint(value, allowed))


def _text_number_hint(value: object, allowed: str) -> str:
    """Why a number may have arrived as text: PyYAML (YAML 1.1) reads ``1e-3`` as a string."""
    if not isinstance(value, str) or ("number" not in allowed and "integer" not in allowed):
        return ""
    try:
        float(value.strip())
    except ValueError:
        return ""
    if "e" not in value.lower() or "inf" in value.lower():
        return f" (the text {value!r}, not a number: write it unquoted, or pass a number)"
    return (
        f" (the text {value!r}, not a number: a YAML 1.1 loader such as PyYAML's reads an exponent "
        "without a dot, like 1e-3, as text; write 1.0e-3, or pass a float)"
    )


def _of(unit: str) -> str:
    return f" of {unit}" if unit else ""


def _real(name: str, value: object, ok: Any, allowed: str, given: object, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    number = as_number(value)
    if number is None or not ok(float(number)):
        raise _fail(name, allowed, value, given, allow_none)
    return float(number)


def check_number(
    name: str, value: object, *, finite: bool = True, allow_none: bool = False, given: object = _UNSET
) -> Any:
    """Any real number (finite unless ``finite=False``), as a float.

    Args:
        name: The argument's name, for the message.
        value: What was given.
        finite: Refuse NaN and infinities.
        allow_none: Accept None (returned as None).
        given: What the message quotes instead of ``value`` (the text a number was parsed from).

    Raises:
        ValueError: ``{name} must be a finite number, got ...``.

    Example:
        >>> check_number("stopping_threshold", -2)
        -2.0
    """
    allowed = "a finite number" if finite else "a number"
    return _real(name, value, math.isfinite if finite else (lambda x: True), allowed, given, allow_none)


def check_positive(
    name: str, value: object, *, unit: str = "", allow_none: bool = False, given: object = _UNSET
) -> Any:
    """A finite number > 0, as a float.

    Args:
        name: The argument's name.
        value: What was given.
        unit: What the number counts, for the message (``"seconds"``, ``"watts per core"``).
        allow_none: Accept None.
        given: What the message quotes instead of ``value``.

    Raises:
        ValueError: ``{name} must be a positive number{ of unit}, got ...``.

    Example:
        >>> check_positive("sampling_interval_s", 0, unit="seconds")
        Traceback (most recent call last):
        ...
        ValueError: sampling_interval_s must be a positive number of seconds, got 0
    """
    allowed = f"a positive number{_of(unit)}"
    return _real(name, value, lambda x: math.isfinite(x) and x > 0, allowed, given, allow_none)


def check_non_negative(
    name: str,
    value: object,
    *,
    unit: str = "",
    allow_inf: bool = False,
    allow_none: bool = False,
    given: object = _UNSET,
) -> Any:
    """A number >= 0, finite unless ``allow_inf`` (NaN never), as a float.

    Args:
        name: The argument's name.
        value: What was given.
        unit: What the number counts, for the message.
        allow_inf: Accept ``inf`` (an unbounded quantity, e.g. a noise scale).
        allow_none: Accept None.
        given: What the message quotes instead of ``value``.

    Raises:
        ValueError: ``{name} must be a finite number{ of unit} >= 0, got ...`` (``a number >= 0
            (inf allowed)`` with ``allow_inf``).

    Example:
        >>> check_non_negative("energy_j", 2, unit="joules")
        2.0
    """
    if allow_inf:
        allowed, ok = f"a number{_of(unit)} >= 0 (inf allowed)", (lambda x: x >= 0)
    else:
        allowed, ok = f"a finite number{_of(unit)} >= 0", (lambda x: math.isfinite(x) and x >= 0)
    return _real(name, value, ok, allowed, given, allow_none)


def check_at_least(
    name: str,
    value: object,
    minimum: float,
    *,
    what: str = "",
    allow_none: bool = False,
    given: object = _UNSET,
) -> Any:
    """A finite number >= ``minimum``, as a float (infinity refused too).

    Args:
        name: The argument's name, for the message.
        value: What was given.
        minimum: The smallest value allowed (itself allowed).
        what: What the number means, shown in parentheses after the bound.
        allow_none: Accept None (returned as None).
        given: What the message quotes instead of ``value`` (the text a number was parsed from).

    Raises:
        ValueError: ``{name} must be a number >= {minimum} ({what}), got ...``.

    Example:
        >>> check_at_least("pue", 0.9, 1.0, what="facility energy / IT energy")
        Traceback (most recent call last):
        ...
        ValueError: pue must be a number >= 1.0 (facility energy / IT energy), got 0.9
    """
    allowed = f"a number >= {minimum!r}" + (f" ({what})" if what else "")
    return _real(name, value, lambda x: math.isfinite(x) and x >= minimum, allowed, given, allow_none)


def check_range(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = True,
    what: str = "",
    allow_none: bool = False,
    given: object = _UNSET,
) -> Any:
    """A number in an interval (``[low, high)`` by default), as a float; NaN never.

    Args:
        name: The argument's name.
        value: What was given.
        low: Lower bound (``-math.inf`` for none).
        high: Upper bound (``math.inf`` for none).
        low_open: Exclude ``low``.
        high_open: Exclude ``high`` (the default: ``[low, high)``).
        what: What the number means, shown in parentheses.
        allow_none: Accept None.
        given: What the message quotes instead of ``value``.

    Raises:
        ValueError: ``{name} must be a number in [low, high) (what), got ...``.

    Example:
        >>> check_range("loss_tolerance", -0.1, 0.0, math.inf)
        Traceback (most recent call last):
        ...
        ValueError: loss_tolerance must be a number in [0.0, inf), got -0.1
    """

    def ok(x: float) -> bool:
        above = x > low if low_open else x >= low
        below = x < high if high_open else x <= high
        return above and below

    interval = f"{'(' if low_open else '['}{low!r}, {high!r}{')' if high_open else ']'}"
    allowed = f"a number in {interval}" + (f" ({what})" if what else "")
    return _real(name, value, ok, allowed, given, allow_none)


def check_fraction_0_to_1(name: str, value: object, *, allow_none: bool = False) -> Any:
    """A share of a whole: a number in ``[0, 1]``, both ends included, as a float.

    Example:
        >>> check_fraction_0_to_1("min_relative_gain", 1)
        1.0
    """
    return _real(name, value, lambda x: 0.0 <= x <= 1.0, "a number in [0, 1]", _UNSET, allow_none)


def check_fraction_below_1(name: str, value: object, *, allow_none: bool = False) -> Any:
    """A margin or decay that must leave something: a number in ``[0, 1)``, as a float.

    A saving margin of 1 would ask for a 100 % saving, a decay of 1 would never update.

    Example:
        >>> check_fraction_below_1("ema_decay", 0.99)
        0.99
    """
    return _real(name, value, lambda x: 0.0 <= x < 1.0, "a number in [0, 1)", _UNSET, allow_none)


def check_int(
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    allow_none: bool = False,
) -> Any:
    """An integer (an integral type: ``5.0`` is refused) within optional bounds, as an ``int``.

    Args:
        name: The argument's name.
        value: What was given.
        minimum: Smallest value allowed (None: no bound).
        maximum: Largest value allowed (None: no bound).
        allow_none: Accept None.

    Raises:
        ValueError: ``{name} must be an integer >= {minimum}, got ...`` (``in [min, max]`` with
            both bounds, ``<= max`` with the upper only).

    Example:
        >>> check_int("window_steps", 0, 1)
        Traceback (most recent call last):
        ...
        ValueError: window_steps must be an integer >= 1, got 0
    """
    if value is None and allow_none:
        return None
    if minimum is not None and maximum is not None:
        allowed = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        allowed = f"an integer >= {minimum}"
    elif maximum is not None:
        allowed = f"an integer <= {maximum}"
    else:
        allowed = "an integer"
    number = as_number(value)
    if (
        not isinstance(number, int)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise _fail(name, allowed, value, _UNSET, allow_none)
    return number


def check_bool(name: str, value: object, *, allow_none: bool = False) -> Any:
    """``True`` or ``False`` (also ``np.bool_`` and a 0-dim boolean tensor), as a ``bool``; 0/1 refused.

    Example:
        >>> check_bool("verbose", "no")
        Traceback (most recent call last):
        ...
        ValueError: verbose must be True or False, got 'no'
    """
    if value is None and allow_none:
        return None
    plain = _unwrap(value)
    if not isinstance(plain, bool):
        raise _fail(name, "True or False", value, _UNSET, allow_none)
    return plain


def check_bools(**flags: object) -> None:
    """:func:`check_bool` on each keyword argument, in order (the first bad one raises).

    Example:
        >>> check_bools(strict=True, verbose="no")
        Traceback (most recent call last):
        ...
        ValueError: verbose must be True or False, got 'no'
    """
    for name, flag in flags.items():
        check_bool(name, flag)


def check_choice(name: str, value: object, choices: Iterable[Any], *, allow_none: bool = False) -> Any:
    """One of ``choices`` (compared with ``==``; ``True`` never matches ``1``): the matching choice.

    Example:
        >>> check_choice("mode", "max", ("min", "max"))
        'max'
        >>> check_choice("rule", "cubic", ["linear", "sqrt", "none"])
        Traceback (most recent call last):
        ...
        ValueError: rule must be one of ['linear', 'sqrt', 'none'], got 'cubic'
    """
    options = list(choices)
    if value is None and allow_none:
        return None
    for option in options:
        if isinstance(value, bool) != isinstance(option, bool):
            continue
        try:
            equal = bool(value == option)
        except Exception:  # an object whose == gives no truth value (an array) matches nothing
            continue
        if equal:
            return option
    raise _fail(name, f"one of {options!r}", value, _UNSET, allow_none)
