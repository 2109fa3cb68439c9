"""Reading an ``energy_summary.json`` back (an MLflow artifact): bounded, and checked field by field.

The report draws and prints what a summary holds, so a summary read back from a file must hold
what :func:`lightning_green.report.build_summary` writes, with the types it writes: anything else
is a :class:`~lightning_green.offline.errors.SummaryFormatError` naming the field and where,
never a traceback from deep inside the table or the plot. Limits, checked before the work:
:data:`MAX_SUMMARY_BYTES` bytes a file, :data:`MAX_PER_EPOCH` ``per_epoch`` entries (the plot
draws one bar each), :data:`MAX_CHECKS` ``checks`` (validations inside epochs) and
:data:`MAX_FIT_POINTS` points of a learning-curve fit. Fields the report
does not use are kept as they are, unchecked.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from lightning_green.offline.errors import SummaryFormatError

MAX_SUMMARY_BYTES = 16 * 1024 * 1024
"""Largest summary file read back (a summary of 10,000 epochs is about 3 MB)."""
MAX_PER_EPOCH = 10_000
"""Most ``per_epoch`` entries of a summary the report draws (one bar each)."""
MAX_FIT_POINTS = 10_000
"""Most points of the learning-curve fit of a summary."""
MAX_CHECKS = 100_000
"""Most ``checks`` entries (validations inside epochs) of a summary the report draws."""

_REQUIRED = ("total_kwh", "co2_kg", "energy_source", "is_estimate", "partial", "epochs", "per_epoch")
_OPTIONAL_NUMBERS = (
    "carbon_intensity_g_per_kwh",
    "pue",
    "kwh_per_epoch",
    "kwh_before_first_epoch",
    "kwh_after_last_epoch",
    "duration_s",
    "best_metric",
    "kwh_to_best",
    "kwh_after_best",
    "best_marginal_per_kwh",
    "last_marginal_per_kwh",
)
_OPTIONAL_TEXT = ("monitor", "stop_reason", "training_end")
_OPTIONAL_INTEGERS = ("best_epoch", "stopped_epoch")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, problem: str) -> SummaryFormatError:
        return SummaryFormatError(f"{self.where}: field {field!r} {problem}")

    def number(self, obj: Mapping[str, Any], key: str, field: str, *, optional: bool = False) -> None:
        value = obj.get(key)
        if (value is None and optional) or _is_number(value):
            return
        allowed = "a finite number" + (" or null" if optional else "")
        raise self.fail(field, f"must be {allowed}, got {_shown(value)}")

    def integer(self, obj: Mapping[str, Any], key: str, field: str, *, optional: bool = False) -> None:
        value = obj.get(key)
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if (value is None and optional) or whole:
            return
        allowed = "a whole number >= 0" + (" or null" if optional else "")
        raise self.fail(field, f"must be {allowed}, got {_shown(value)}")

    def text(self, obj: Mapping[str, Any], key: str, field: str, *, optional: bool = False) -> None:
        value = obj.get(key)
        if (value is None and optional) or isinstance(value, str):
            return
        raise self.fail(field, f"must be text{' or null' if optional else ''}, got {_shown(value)}")

    def boolean(self, obj: Mapping[str, Any], key: str, field: str) -> None:
        if not isinstance(obj.get(key), bool):
            raise self.fail(field, f"must be true or false, got {_shown(obj.get(key))}")

    def numbers(self, obj: Mapping[str, Any], key: str, field: str, limit: int) -> int:
        values = obj.get(key)
        if not isinstance(values, list):
            raise self.fail(field, f"must be a list of numbers, got {_shown(values)}")
        if len(values) > limit:
            raise self.fail(field, f"has {len(values):,} entries; at most {limit:,} are read")
        for i, value in enumerate(values):
            if not _is_number(value):
                raise self.fail(f"{field}[{i}]", f"must be a finite number, got {_shown(value)}")
        return len(values)


def _check_records(
    c: _Checker, key: str, records: Any, limit: int, kind: str, *, optional_metric: bool
) -> None:
    """Check the summary's ``key``: a list of at most ``limit`` ``kind`` records.

    Each has an integer ``epoch``, the numbers ``total_kwh`` and ``metric`` (optional where
    ``optional_metric``) and, for ``per_epoch``, ``energy_kwh``.
    """
    if not isinstance(records, list):
        raise c.fail(key, f"must be a list of {kind} records, got {_shown(records)}")
    if len(records) > limit:
        raise c.fail(key, f"has {len(records):,} entries; the report draws at most {limit:,}")
    article = "an" if kind[0] in "aeiou" else "a"
    for i, entry in enumerate(records):
        field = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise c.fail(field, f"must be {article} {kind} record (a JSON object), got {_shown(entry)}")
        c.integer(entry, "epoch", f"{field}.epoch")
        c.number(entry, "total_kwh", f"{field}.total_kwh")
        if key == "per_epoch":
            c.number(entry, "energy_kwh", f"{field}.energy_kwh")
        c.number(entry, "metric", f"{field}.metric", optional=optional_metric)


def check_summary(data: Any, where: str) -> dict[str, Any]:
    """``data`` if it is a summary the report can print and draw, else a clear error.

    Args:
        data: A parsed ``energy_summary.json``.
        where: What to name in errors (the file, or the artifact and its run).

    Returns:
        ``data``, unchanged.

    Raises:
        SummaryFormatError: Naming the first field that is missing or of the wrong type.

    Example:
        >>> check_summary([1, 2, 3], "s.json")
        Traceback (most recent call last):
        ...
        lightning_green.offline.errors.SummaryFormatError: s.json: a summary is a JSON object, got a list
    """
    if not isinstance(data, dict):
        raise SummaryFormatError(f"{where}: a summary is a JSON object, got a {_json_type(data)}")
    c = _Checker(where)
    for key in _REQUIRED:
        if key not in data:
            raise c.fail(key, "is missing (every energy_summary.json written by lightning_green has it)")
    c.number(data, "total_kwh", "total_kwh")
    c.number(data, "co2_kg", "co2_kg", optional=True)
    c.text(data, "energy_source", "energy_source")
    c.boolean(data, "is_estimate", "is_estimate")
    c.boolean(data, "partial", "partial")
    c.integer(data, "epochs", "epochs")
    for key in _OPTIONAL_NUMBERS:
        c.number(data, key, key, optional=True)
    for key in _OPTIONAL_TEXT:
        c.text(data, key, key, optional=True)
    for key in _OPTIONAL_INTEGERS:
        c.integer(data, key, key, optional=True)
    if data.get("mode") not in (None, "min", "max"):
        raise c.fail("mode", f"must be 'min' or 'max', got {_shown(data['mode'])}")
    if data["co2_kg"] is not None and data.get("carbon_intensity_g_per_kwh") is None:
        raise c.fail("carbon_intensity_g_per_kwh", "must be a number where co2_kg is one")
    if data.get("monitor") and data.get("best_metric") is not None:
        for key in ("best_epoch", "kwh_to_best", "kwh_after_best"):
            if data.get(key) is None:
                raise c.fail(key, "must be given where best_metric is")
    _check_records(c, "per_epoch", data["per_epoch"], MAX_PER_EPOCH, "epoch", optional_metric=True)
    if data.get("checks") is not None:
        _check_records(c, "checks", data["checks"], MAX_CHECKS, "check", optional_metric=False)
    policy = data.get("stopping_policy")
    if policy is not None and not isinstance(policy, dict):
        raise c.fail("stopping_policy", f"must be a JSON object or null, got {_shown(policy)}")
    fit = (policy or {}).get("fit")
    if fit is not None:
        if not isinstance(fit, dict):
            raise c.fail("stopping_policy.fit", f"must be a JSON object or null, got {_shown(fit)}")
        c.text(fit, "family", "stopping_policy.fit.family")
        c.number(fit, "fitted_until_kwh", "stopping_policy.fit.fitted_until_kwh")
        n = c.numbers(fit, "curve_kwh", "stopping_policy.fit.curve_kwh", MAX_FIT_POINTS)
        if c.numbers(fit, "curve_metric", "stopping_policy.fit.curve_metric", MAX_FIT_POINTS) != n:
            raise c.fail("stopping_policy.fit.curve_metric", "must have as many points as curve_kwh")
    return data


def _json_type(value: Any) -> str:
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def load_summary(path: str | os.PathLike[str], where: str) -> dict[str, Any]:
    """Read and check an ``energy_summary.json``, refusing a file over :data:`MAX_SUMMARY_BYTES` first.

    Args:
        path: The local file.
        where: What to name in errors (for example the artifact and its run).

    Returns:
        The summary.

    Raises:
        SummaryFormatError: If the file is too large, not UTF-8 JSON, or not a summary.
    """
    size = os.stat(path).st_size
    if size > MAX_SUMMARY_BYTES:
        raise SummaryFormatError(f"{where}: {size:,} bytes; a summary is read up to {MAX_SUMMARY_BYTES:,}")
    with open(path, "rb") as f:
        raw = f.read(MAX_SUMMARY_BYTES + 1)
    if len(raw) > MAX_SUMMARY_BYTES:
        raise SummaryFormatError(f"{where}: more than {MAX_SUMMARY_BYTES:,} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SummaryFormatError(f"{where}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SummaryFormatError(f"{where}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise SummaryFormatError(f"{where}: JSON nested too deeply") from None
    return check_summary(data, where)
