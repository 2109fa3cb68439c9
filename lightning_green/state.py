"""Typed state: what a component saves is a dataclass; one rule turns it into plain data and back.

Checkpoints (and ``torch.load(weights_only=True)``) hold plain data only: dicts with string
keys, lists, numbers, strings, booleans and None. :func:`to_state` writes a dataclass that way
(nested dataclasses as dicts, tuples as lists, mapping keys as strings); :func:`from_state`
rebuilds it from the field types, ignoring keys it does not know and giving missing fields their
defaults, so a state saved by an older release of the same version still loads.
:func:`save_attributes` and :func:`load_attributes` do the same for an object whose attributes
are named like the fields (or as a field's ``metadata["attr"]`` says).

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Window:
    ...     steps: int = 0
    ...     times_s: dict[int, float] = field(default_factory=dict)
    ...     span: tuple[int, int] | None = None
    >>> saved = to_state(Window(3, {64: 0.5}, (1, 2)))
    >>> saved
    {'steps': 3, 'times_s': {'64': 0.5}, 'span': [1, 2]}
    >>> from_state(Window, saved)
    Window(steps=3, times_s={64: 0.5}, span=(1, 2))
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def to_state(value: Any) -> Any:
    """Plain data of a dataclass (or of any value inside one).

    Raises:
        TypeError: For a value that is not plain data, a dataclass, an enum, a list, tuple or mapping.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_state(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_state(value.value)
    if isinstance(value, Mapping):
        return {str(k): to_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_state(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"cannot save {type(value).__name__} {value!r} in a checkpoint state")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint: Any, value: Any) -> Any:
    if value is None or hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_state(hint, value)
    if origin in (dict, Mapping) or hint is dict:
        key_t, val_t = args or (Any, Any)
        return {(key_t(k) if key_t in (int, float) else k): _convert(val_t, v) for k, v in value.items()}
    if origin is list or hint is list:
        item_t = args[0] if args else Any
        return [_convert(item_t, v) for v in value]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return tuple(_convert(t, v) for t, v in zip(args, value, strict=True))
    if hint in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return hint(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    return value


def from_state(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild the dataclass ``cls`` from :func:`to_state`'s plain data.

    Unknown keys are ignored; missing fields take their defaults.

    Raises:
        ValueError: When ``data`` is not a mapping, or a field without a default is missing.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__} state must be a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: _convert(hints[k], v) for k, v in data.items() if k in known})
    except TypeError as err:
        raise ValueError(f"{cls.__name__} state is incomplete: {err}") from None


def _attribute(f: dataclasses.Field) -> str:
    return f.metadata.get("attr", f.name)


def save_attributes(obj: object, cls: type) -> dict[str, Any]:
    """Plain data of ``obj``'s attributes named by the fields of the dataclass ``cls``."""
    return to_state(cls(**{f.name: getattr(obj, _attribute(f)) for f in dataclasses.fields(cls) if f.init}))


def load_attributes(obj: object, cls: type[T], data: Mapping[str, Any]) -> T:
    """Set ``obj``'s attributes from :func:`save_attributes`'s data; returns the typed state."""
    state = from_state(cls, data)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        setattr(obj, _attribute(f), getattr(state, f.name))
    return state
