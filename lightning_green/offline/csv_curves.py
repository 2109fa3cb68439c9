"""Curves CSV reader: the long format of ``benchmarks/data/curves``, validated cell by cell.

Columns used (others are ignored): ``curve_id, epoch, metric, higher_is_better, time_s,
energy_J`` and, optionally, ``lr`` and ``metric_name``. ``epoch`` is the training progress at the
check in epochs, increasing within a curve: a whole number counts epochs completed (the first
check after one epoch is 1), a fraction is progress within an epoch, as MLPerf (``0.0499809``)
and DAWNBench (``1.00096``) logs write it; each check's ``epoch`` is kept as written
(:attr:`Curve.epoch_texts`). How the policy is told the epoch of a check is decided in one
place, :func:`~lightning_green.offline.engine.policy_inputs`. The cost of a curve is cumulative
``energy_J`` (converted to kWh) when every row has it, else cumulative ``time_s`` (seconds);
neither may decrease. When every row of a curve has ``lr`` (the learning rate the check's epoch
was trained at), the policy is told ``epochs_until_lr_decay`` from its step drops, as the callback
is from the trainer's step schedulers (:func:`~lightning_green.offline.engine.step_drops`). The
planned horizon of a CSV curve is its last epoch unless ``max_epochs`` says otherwise.

The file is UTF-8 (a byte-order mark is allowed). Numbers are plain decimal or scientific
notation (``12``, ``0.5``, ``1e-3``, ``nan``, ``inf``): no digit separators (``1_000``), no
non-ASCII digits. A column name may appear once in the header, and no row may have more cells
than the header. Limits, checked while reading (so a wrong file fails fast, with bounded
memory): :data:`MAX_LINE_CHARS` characters a line, :data:`MAX_ROWS` data rows a file, epochs
below :data:`MAX_EPOCH`. Malformed input raises :class:`CurveFormatError` naming the file, line
and column.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterator
from typing import IO

import numpy as np

from lightning_green.energy.units import J_PER_KWH
from lightning_green.offline.curve import Curve
from lightning_green.offline.errors import CurveFormatError

REQUIRED_COLUMNS = ("curve_id", "epoch", "metric", "higher_is_better", "time_s", "energy_J")
"""Columns a curves CSV must have."""
MAX_LINE_CHARS = 1_048_576
"""Longest line of a curves CSV, in characters (a CSV line of a curve is well under 1 kB)."""
MAX_ROWS = 1_000_000
"""Most data rows in one curves CSV."""
MAX_EPOCH = 1e15
"""Epoch values must be below this (beyond it a float no longer holds every whole number)."""

_TRUE = {"true", "yes"}
_FALSE = {"false", "no"}
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)
_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE
)


def parse_number(text: str) -> float | None:
    """The number ``text`` spells in plain decimal or scientific notation, else ``None``.

    Stricter than :func:`float`: no ``_`` digit separators, no non-ASCII digits, no inner spaces.

    Example:
        >>> parse_number("1e-3"), parse_number("-2.5"), parse_number("1_000"), parse_number("")
        (0.001, -2.5, None, None)
    """
    return float(text) if _NUMBER.fullmatch(text) else None


def _parse_float(text: str, path: str, line: int, col: int, name: str) -> float:
    value = parse_number(text)
    if value is None:
        raise CurveFormatError(path, line, col, name, f"not a number: {text!r}")
    return value


def parse_bool(text: str) -> bool | None:
    """``1``/``0`` (also ``1.0``/``0.0``), ``true``/``false``, ``yes``/``no`` (any case), else None."""
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    number = parse_number(text)
    return True if number == 1 else False if number == 0 else None


def read_curves_csv(source: str | os.PathLike[str] | IO[str], *, name: str | None = None) -> list[Curve]:
    """Read and validate curves in the long format of ``benchmarks/data/curves``.

    Args:
        source: A path (read as UTF-8, a byte-order mark allowed) or an open text stream.
        name: File name to report in errors (default: the path, or ``"<stream>"``).

    Returns:
        The curves, in order of first appearance.

    Raises:
        CurveFormatError: Bytes that are not UTF-8, a NUL byte, a line over
            :data:`MAX_LINE_CHARS`, more than :data:`MAX_ROWS` rows, malformed CSV, a missing or
            repeated column, cells beyond the header, a value that is not a plain number, an epoch
            outside ``[0, MAX_EPOCH)``, an epoch repeated or going backwards
            within a curve, a cumulative cost that is negative or decreases, an unknown or
            inconsistent ``higher_is_better``, a ``metric_name`` that changes within a curve (a
            blank cell names none), a curve without a complete cost column, or no rows.
        OSError: If the file cannot be opened or read.
    """
    if isinstance(source, (str, os.PathLike)):
        path = str(source) if name is None else name
        with open(source, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            return _read_curves(f, path)
    return _read_curves(source, name or "<stream>")


_Row = tuple[int, float, str, float, float | None, float | None, float | None]
"""(line, epoch, epoch as written, metric, time_s, energy_J, lr) of one CSV row."""


def _lines(f: IO[str], path: str) -> Iterator[str]:
    """The lines of ``f``, none longer than :data:`MAX_LINE_CHARS`, read without unbounded buffers."""
    line_no = 0
    while True:
        line = f.readline(MAX_LINE_CHARS + 2)  # room for the line's own "\r\n"
        if not line:
            return
        line_no += 1
        if "\x00" in line:
            raise CurveFormatError(
                path, line_no, 0, None, "NUL byte: not a text file (a curves CSV is UTF-8 text)"
            )
        if len(line.rstrip("\r\n")) > MAX_LINE_CHARS:
            raise CurveFormatError(
                path,
                line_no,
                0,
                None,
                f"line longer than {MAX_LINE_CHARS:,} characters (the limit of a curves CSV line): "
                "not a curves CSV",
            )
        yield line


def csv_records(f: IO[str], path: str) -> Iterator[tuple[int, list[str]]]:
    """``(first line, cells)`` of every CSV record; undecodable bytes are reported where they are."""
    reader = csv.reader(_lines(f, path))
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise CurveFormatError(path, start, 0, None, f"malformed CSV: {e}") from None
        if _UNDECODABLE.search("".join(row)):
            col = next(i for i, cell in enumerate(row) if _UNDECODABLE.search(cell))
            bad = _UNDECODABLE.search(row[col]).group()  # type: ignore[union-attr]
            raise CurveFormatError(
                path, start, col + 1, None, f"not UTF-8 text (byte 0x{ord(bad) - 0xDC00:02x})"
            )
        yield start, row


def _header_index(header: list[str], path: str, line: int) -> dict[str, int]:
    """Column name -> 0-based index; a repeated name or a missing required column is refused."""
    index: dict[str, int] = {}
    for i, cell in enumerate(header):
        name = cell.strip()
        if name and name in index:
            raise CurveFormatError(
                path,
                line,
                i + 1,
                name,
                f"column {name!r} appears twice in the header (columns {index[name] + 1} and {i + 1})",
            )
        index[name] = i
    for col in REQUIRED_COLUMNS:
        if col not in index:
            raise CurveFormatError(
                path, line, len(header) + 1, col, f"missing required column; header has {header}"
            )
    return index


def _read_curves(f: IO[str], path: str) -> list[Curve]:
    records = csv_records(f, path)
    header_line, header = next(records, (0, []))
    while header_line and not any(cell.strip() for cell in header):  # blank lines before the header
        header_line, header = next(records, (0, []))
    if not header_line:
        raise CurveFormatError(path, 1, 0, None, "empty file: no header")
    if header and header[0].startswith("\ufeff"):  # a byte-order mark on a stream
        header = [header[0][1:], *header[1:]]
    index = _header_index(header, path, header_line)
    lr_col = index.get("lr")
    name_col = index.get("metric_name")
    metric_names: dict[str, tuple[str, int]] = {}  # curve_id -> (its metric_name, the line that named it)

    rows: dict[str, list[_Row]] = {}
    direction: dict[str, tuple[bool, int]] = {}
    last_cost: dict[tuple[str, str], tuple[float, str]] = {}
    n_rows = 0
    for line_no, row in records:
        if not row or all(not cell.strip() for cell in row):
            continue
        n_rows += 1
        if n_rows > MAX_ROWS:
            raise CurveFormatError(
                path, line_no, 0, None, f"more than {MAX_ROWS:,} data rows (the limit of a curves CSV)"
            )
        if len(row) > len(header):
            raise CurveFormatError(
                path,
                line_no,
                len(header) + 1,
                None,
                f"{len(row)} cells where the header has {len(header)} columns",
            )
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))

        def cell(col: str, row: list[str] = row) -> str:
            return row[index[col]].strip()

        def at(col: str) -> int:
            return index[col] + 1

        curve_id = cell("curve_id")
        if not curve_id:
            raise CurveFormatError(path, line_no, at("curve_id"), "curve_id", "empty curve_id")
        epoch_text = cell("epoch")
        epoch = _parse_float(epoch_text, path, line_no, at("epoch"), "epoch")
        if not 0 <= epoch < MAX_EPOCH:
            raise CurveFormatError(
                path,
                line_no,
                at("epoch"),
                "epoch",
                f"epoch must be a number >= 0 and below {MAX_EPOCH:.0e} (training progress in epochs), "
                f"got {epoch_text!r}",
            )
        series = rows.setdefault(curve_id, [])
        if series and epoch <= series[-1][1]:
            problem = (
                f"duplicate row: curve {curve_id!r} already has epoch {epoch_text} (line {series[-1][0]})"
                if epoch == series[-1][1]
                else f"epochs of curve {curve_id!r} are not in increasing order: {epoch_text} after "
                f"{series[-1][2]} (line {series[-1][0]}); sort each curve's rows by epoch"
            )
            raise CurveFormatError(path, line_no, at("epoch"), "epoch", problem)
        metric = _parse_float(cell("metric"), path, line_no, at("metric"), "metric")
        hib = parse_bool(cell("higher_is_better"))
        if hib is None:
            raise CurveFormatError(
                path,
                line_no,
                at("higher_is_better"),
                "higher_is_better",
                f"unknown value {cell('higher_is_better')!r}: expected 1 or 0 (or true/false)",
            )
        costs: list[float | None] = []
        for col in ("time_s", "energy_J"):
            text = cell(col)
            if not text:
                costs.append(None)
                continue
            value = _parse_float(text, path, line_no, at(col), col)
            if not math.isfinite(value) or value < 0:
                raise CurveFormatError(
                    path, line_no, at(col), col, f"cumulative cost must be finite and >= 0, got {text!r}"
                )
            previous = last_cost.get((curve_id, col))
            if previous is not None and value < previous[0]:
                raise CurveFormatError(
                    path,
                    line_no,
                    at(col),
                    col,
                    f"cumulative {col} of curve {curve_id!r} decreases: {text} after {previous[1]}",
                )
            last_cost[(curve_id, col)] = (value, text)
            costs.append(value)
        lr = None
        if lr_col is not None and row[lr_col].strip():
            lr = _parse_float(row[lr_col].strip(), path, line_no, lr_col + 1, "lr")
            if not math.isfinite(lr) or lr < 0:
                raise CurveFormatError(
                    path,
                    line_no,
                    lr_col + 1,
                    "lr",
                    f"learning rate must be finite and >= 0, got {row[lr_col].strip()!r}",
                )

        if curve_id in direction and direction[curve_id][0] != hib:
            raise CurveFormatError(
                path,
                line_no,
                at("higher_is_better"),
                "higher_is_better",
                f"curve {curve_id!r} changes direction (line {direction[curve_id][1]} says "
                f"{int(direction[curve_id][0])})",
            )
        direction.setdefault(curve_id, (hib, line_no))
        name = row[name_col].strip() if name_col is not None else ""
        if name and curve_id in metric_names and metric_names[curve_id][0] != name:
            first, first_line = metric_names[curve_id]
            raise CurveFormatError(
                path,
                line_no,
                index["metric_name"] + 1,
                "metric_name",
                f"curve {curve_id!r} changes metric_name: {name!r} after {first!r} (line {first_line}); "
                "a curve is of one metric (give each metric its own curve_id)",
            )
        if name:
            metric_names.setdefault(curve_id, (name, line_no))
        series.append((line_no, epoch, epoch_text, metric, costs[0], costs[1], lr))

    if not rows:
        raise CurveFormatError(path, header_line + 1, 0, None, "no data rows")
    curves = []
    for curve_id, series in rows.items():
        energy = [r[5] for r in series]
        time_s = [r[4] for r in series]
        if all(e is not None for e in energy):
            costs_arr, unit = np.array(energy, dtype=float) / J_PER_KWH, "kWh"
        elif all(t is not None for t in time_s):
            costs_arr, unit = np.array(time_s, dtype=float), "s"
        else:
            line = next(r[0] for r in series if r[4] is None)
            raise CurveFormatError(
                path,
                line,
                index["time_s"] + 1,
                "time_s",
                f"curve {curve_id!r} has neither energy_J nor time_s on every row",
            )
        lrs = None
        if all(r[6] is not None for r in series):
            lrs = np.array([r[6] for r in series], dtype=float)
        epochs = np.array([r[1] for r in series])
        if np.all(epochs == np.floor(epochs)):
            epochs = epochs.astype(np.int64)
        curves.append(
            Curve(
                curve_id=curve_id,
                epochs=epochs,
                metrics=np.array([r[3] for r in series], dtype=float),
                costs=costs_arr,
                higher_is_better=direction[curve_id][0],
                cost_unit=unit,
                lrs=lrs,
                metric_name=metric_names[curve_id][0] if curve_id in metric_names else None,
                epoch_texts=tuple(r[2] for r in series),
            )
        )
    return curves
