r"""The stopping policy replayed offline over logged learning curves: what it would have saved.

The policy is the one the callback runs (:class:`lightning_green.policy.StoppingPolicy`), fed one
check at a time, so a decision replayed here is the decision the callback would have made on the
same numbers. Curves come from a CSV in the long format of ``shared/data/curves`` or from MLflow
runs that logged the monitored metric and ``energy/total_kwh``.

CSV columns used (others are ignored): ``curve_id, epoch, metric, higher_is_better, time_s,
energy_J`` and, optionally, ``lr`` and ``metric_name``. ``epoch`` counts epochs completed at the
check, a whole number (the first check after one epoch is 1), increasing within a curve; the
policy's epoch index is ``epoch - 1`` (a check at ``epoch`` 0, before any epoch completed, counts
as one in the first epoch). The cost of a curve is cumulative ``energy_J`` (converted
to kWh) when every row has it, else cumulative ``time_s`` (seconds); neither may decrease. When
every row of a curve has ``lr`` (the learning rate the epoch was trained at), the policy is told
``epochs_until_lr_decay`` from it, as the callback is from the trainer's schedulers. The planned
horizon of a CSV curve is its last epoch unless ``max_epochs`` says otherwise. The file is UTF-8
(a byte-order mark is allowed). Malformed input raises :class:`CurveFormatError` naming the
file, line and column.

MLflow runs carry what the callback told the policy beyond the curves: the run parameter
``lightning_green.max_epochs`` (the planned horizon, or ``none``) and the metric
``energy/epochs_until_lr_decay`` at each check where a decay was announced; replay passes both on.
They also carry the callback's own settings: the monitored metric and its direction
(``lightning_green.monitor``/``lightning_green.mode``) and every policy argument
(``lightning_green.<name>``, a :class:`StoppingConfig` field); :func:`read_mlflow_curves` takes
the metric and direction from them where not told otherwise, and :func:`config_for` builds each
run's policy from the recorded arguments, so a replay reproduces the callback's decision.

Example:
    >>> import io
    >>> text = "curve_id,epoch,metric,higher_is_better,time_s,energy_J\n" + "".join(
    ...     f"a,{e},{1 / e},0,{10 * e},\n" for e in range(1, 21))
    >>> curves = read_curves_csv(io.StringIO(text), name="demo.csv")
    >>> result = replay_curve(curves[0], StoppingConfig())
    >>> result.stop_reason.value, result.stop_epoch, round(result.cost_saved, 2)
    ('marginal_gain', 16, 0.2)
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from lightning_green import keys
from lightning_green.energy.units import J_PER_KWH
from lightning_green.policy import StopDecision, StoppingConfig, StoppingPolicy, StopReason

REQUIRED_COLUMNS = ("curve_id", "epoch", "metric", "higher_is_better", "time_s", "energy_J")
"""Columns a curves CSV must have."""
DECISION_COLUMNS = (
    "curve_id",
    "stop_epoch",
    "stop_reason",
    "best_metric_at_stop",
    "cost_at_stop",
    "cost_total",
)
"""Columns of the decisions CSV."""
ENERGY_KEY = keys.TOTAL_KWH
"""MLflow metric holding cumulative energy in kWh (logged by the callbacks)."""
LR_HINT_KEY = keys.EPOCHS_UNTIL_LR_DECAY
"""MLflow metric: the ``epochs_until_lr_decay`` the callback passed to the policy at a check."""
MAX_EPOCHS_PARAM = keys.PARAM_MAX_EPOCHS
"""MLflow run parameter: the planned horizon the callback passed to the policy (``none``: no plan)."""

NO_STOP = keys.NO_STOP
"""``stop_reason`` of a curve the policy never stopped (also the MLflow tag of such a run)."""

_TRUE = {"true", "yes"}
_FALSE = {"false", "no"}
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


class RecordedParamError(ValueError):
    """What an MLflow run recorded contradicts what replay was told, or replay lacks what it needs.

    A usage problem rather than bad data: a ``mode`` that contradicts the direction the run
    recorded for the same metric, or no monitored metric given for a run that recorded none.
    """


class CurveFormatError(ValueError):
    """Malformed curve input, located as ``file:line:column``.

    Attributes:
        path: The file.
        line: 1-based line number (1 is the header).
        column: 1-based column number (0 when the problem is not one cell).
        column_name: The column's name, if known.
        problem: What is wrong.
    """

    def __init__(self, path: str, line: int, column: int, column_name: str | None, problem: str) -> None:
        self.path, self.line, self.column, self.column_name, self.problem = (
            path,
            line,
            column,
            column_name,
            problem,
        )
        where = f"{path}:{line}:{column}"
        what = f" (column '{column_name}')" if column_name else ""
        super().__init__(f"{where}: {problem}{what}")


@dataclass(frozen=True, eq=False)
class Curve:
    """One learning curve: the checks of one run.

    Attributes:
        curve_id: Identifier (a CSV ``curve_id`` or an MLflow run id).
        epochs: Epochs completed at each check (1 for the first check after one epoch).
        metrics: The monitored metric at each check.
        costs: Cumulative cost at each check (kWh, or seconds when no energy was logged).
        higher_is_better: Direction of the metric.
        cost_unit: ``"kWh"`` or ``"s"``.
        lrs: Learning rate of each epoch when known (optional ``lr`` CSV column), else ``None``.
        metric_name: Name of the metric when known (optional ``metric_name`` CSV column).
        planned_max_epochs: The planned horizon the run's policy was given (``None``: no plan),
            when it was recorded (``plan_recorded``; the MLflow parameter
            ``lightning_green.max_epochs``).
        plan_recorded: Whether ``planned_max_epochs`` was recorded. If not, the planned horizon
            defaults to the curve's last epoch.
        lr_hints: The ``epochs_until_lr_decay`` the run's policy was given at each check (``None``
            where none was), when recorded (the MLflow metric ``energy/epochs_until_lr_decay``);
            else ``None``, and replay derives them from ``lrs`` where it can.
        recorded_monitor: The metric the run recorded as monitored (MLflow parameter
            ``lightning_green.stopping_monitor``, else ``lightning_green.monitor``), if any.
        recorded_config: The policy arguments the run recorded for this metric (MLflow parameters
            ``lightning_green.<name>``, parsed; ``mode`` excluded, it is :attr:`higher_is_better`),
            when the curve is of the recorded metric; else ``None``. :func:`config_for` uses them.
    """

    curve_id: str
    epochs: np.ndarray
    metrics: np.ndarray
    costs: np.ndarray
    higher_is_better: bool
    cost_unit: str = "kWh"
    lrs: np.ndarray | None = field(default=None, repr=False)
    metric_name: str | None = None
    planned_max_epochs: int | None = None
    plan_recorded: bool = False
    lr_hints: tuple[int | None, ...] | None = field(default=None, repr=False)
    recorded_monitor: str | None = None
    recorded_config: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``."""
        return "max" if self.higher_is_better else "min"

    @property
    def default_max_epochs(self) -> int | None:
        """The planned horizon replay uses unless told otherwise: the recorded one, else the last epoch."""
        return self.planned_max_epochs if self.plan_recorded else int(self.epochs[-1])

    def lr_hint(self, i: int) -> int | None:
        """The ``epochs_until_lr_decay`` to pass to the policy at check ``i``, if known.

        The recorded hint when the curve has them (MLflow), else derived from the per-epoch
        learning rates (CSV ``lr``), else ``None``.
        """
        if self.lr_hints is not None:
            return self.lr_hints[i]
        if self.lrs is not None:
            return epochs_until_lr_decay(self.lrs, max(int(self.epochs[i]) - 1, 0))
        return None


@dataclass(frozen=True)
class ReplayResult:
    """What the policy did on one curve.

    Attributes:
        curve_id: The curve.
        stop_epoch: Epochs completed when it stopped (the last epoch when it never stopped).
        stop_reason: Why, or ``None`` when it ran to the end.
        best_metric_at_stop: Best metric up to and including the stop.
        cost_at_stop: Cumulative cost at the stop.
        cost_total: Cumulative cost of the whole logged curve.
        best_metric_total: Best metric of the whole curve.
        higher_is_better: Direction of the metric.
        cost_unit: ``"kWh"`` or ``"s"``.
        decision: The policy's last decision (the stop, or the final check).
    """

    curve_id: str
    stop_epoch: int
    stop_reason: StopReason | None
    best_metric_at_stop: float
    cost_at_stop: float
    cost_total: float
    best_metric_total: float
    higher_is_better: bool
    cost_unit: str
    decision: StopDecision | None = field(default=None, repr=False, compare=False)

    @property
    def cost_saved(self) -> float:
        """Fraction of the curve's total cost not spent because of the stop."""
        return (self.cost_total - self.cost_at_stop) / self.cost_total if self.cost_total > 0 else 0.0

    @property
    def regret(self) -> float:
        """Best metric of the whole curve minus best up to the stop, improving direction (>= 0)."""
        sign = 1.0 if self.higher_is_better else -1.0
        lost = sign * (self.best_metric_total - self.best_metric_at_stop)
        return lost if lost > 0 else 0.0


def _best(values: np.ndarray, higher_is_better: bool) -> float:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return math.nan
    return float(finite.max() if higher_is_better else finite.min())


def epochs_until_lr_decay(lrs: np.ndarray, epoch_index: int) -> int | None:
    """Epochs still at the current learning rate before the next decay, from per-epoch rates.

    Args:
        lrs: Learning rate of every epoch, indexed by 0-based epoch.
        epoch_index: The epoch just completed.

    Returns:
        ``k`` such that epoch ``epoch_index + k + 1`` is the first at a lower rate, or ``None``.

    Example:
        >>> epochs_until_lr_decay(np.array([0.1, 0.1, 0.1, 0.01, 0.01]), 0)
        2
        >>> epochs_until_lr_decay(np.array([0.1, 0.1, 0.1, 0.01, 0.01]), 3) is None
        True
    """
    if epoch_index + 1 >= len(lrs):
        return None
    later = np.nonzero(lrs[epoch_index + 1 :] < lrs[epoch_index])[0]
    return int(later[0]) if len(later) else None


def result_at(
    curve: Curve, index: int, reason: StopReason | None = None, decision: StopDecision | None = None
) -> ReplayResult:
    """The outcome of stopping ``curve`` at check ``index`` (0-based) for ``reason``.

    Example:
        >>> c = Curve("a", np.array([1, 2, 3]), np.array([3.0, 2.0, 2.5]), np.array([1.0, 2.0, 3.0]), False)
        >>> r = result_at(c, 1)
        >>> r.stop_epoch, r.best_metric_at_stop, round(r.cost_saved, 3), r.regret
        (2, 2.0, 0.333, 0.0)
    """
    return ReplayResult(
        curve_id=curve.curve_id,
        stop_epoch=int(curve.epochs[index]),
        stop_reason=reason,
        best_metric_at_stop=_best(curve.metrics[: index + 1], curve.higher_is_better),
        cost_at_stop=float(curve.costs[index]),
        cost_total=float(curve.costs[-1]),
        best_metric_total=_best(curve.metrics, curve.higher_is_better),
        higher_is_better=curve.higher_is_better,
        cost_unit=curve.cost_unit,
        decision=decision,
    )


def replay_curve(
    curve: Curve,
    config: StoppingConfig,
    *,
    max_epochs: int | None = None,
    monitor: str = "metric",
    use_lr_schedule: bool = True,
) -> ReplayResult:
    """Run the policy over one curve, one check at a time, until it stops.

    The policy is fed what the callback fed it: the metric, the cumulative cost, the epoch index,
    the planned horizon and, where known, ``epochs_until_lr_decay`` (:meth:`Curve.lr_hint`).

    Args:
        curve: The curve.
        config: Policy arguments; its ``mode`` is replaced by the curve's direction. For the
            arguments an MLflow run recorded, pass :func:`config_for` ``(curve)``.
        max_epochs: Planned length of the run in epochs (default: :attr:`Curve.default_max_epochs`,
            the recorded plan, else the curve's last epoch).
        monitor: Metric name for the messages.
        use_lr_schedule: Pass ``epochs_until_lr_decay`` where the curve knows it (recorded hints, or
            learning rates); ``False`` gives the policy no schedule information.

    Returns:
        The result.
    """
    config = replace(config, mode=curve.mode)
    policy = StoppingPolicy(config, monitor=monitor)
    horizon = curve.default_max_epochs if max_epochs is None else int(max_epochs)
    n = len(curve.metrics)
    decision: StopDecision | None = None
    for i in range(n):
        decision = policy.update(
            float(curve.metrics[i]),
            float(curve.costs[i]),
            epoch=max(int(curve.epochs[i]) - 1, 0),
            max_epochs=horizon,
            epochs_until_lr_decay=curve.lr_hint(i) if use_lr_schedule else None,
        )
        if decision.should_stop:
            return result_at(curve, i, decision.reason, decision)
    return result_at(curve, n - 1, None, decision)


def config_for(curve: Curve, options: Mapping[str, Any] | None = None) -> StoppingConfig:
    """The policy arguments to replay ``curve`` with, as the run's callback had them.

    Each argument is taken from ``options`` where given there (explicit choices win), else from
    what the run recorded (:attr:`Curve.recorded_config`, MLflow runs), else the default;
    ``mode`` is always the curve's direction.

    Args:
        curve: The curve.
        options: :class:`StoppingConfig` fields given explicitly (e.g. on the command line).

    Returns:
        The validated config.

    Raises:
        ValueError: On an unknown field or an invalid value.

    Example:
        >>> c = Curve("a", np.array([1]), np.array([1.0]), np.array([1.0]), True,
        ...           recorded_config={"patience": 5, "energy_budget_kwh": 2.0})
        >>> cfg = config_for(c, {"patience": 7})
        >>> cfg.mode, cfg.patience, cfg.energy_budget_kwh, cfg.min_epochs
        ('max', 7, 2.0, 5)
    """
    values = {**(curve.recorded_config or {}), **(options or {})}
    values["mode"] = curve.mode
    return StoppingConfig.from_dict(values)


def replay(
    curves: Iterable[Curve],
    config: StoppingConfig,
    *,
    max_epochs: int | None = None,
    monitor: str = "metric",
    use_lr_schedule: bool = True,
) -> list[ReplayResult]:
    """:func:`replay_curve` over several curves."""
    return [
        replay_curve(c, config, max_epochs=max_epochs, monitor=monitor, use_lr_schedule=use_lr_schedule)
        for c in curves
    ]


@dataclass(frozen=True)
class Summary:
    """Aggregate of replay results.

    Attributes:
        n_curves: Number of curves.
        mean_cost_saved: Mean fraction of cost saved.
        mean_regret: Mean regret (metric units).
        stops: Number of curves per stop reason (``"none"`` for curves run to the end).
    """

    n_curves: int
    mean_cost_saved: float
    mean_regret: float
    stops: dict[str, int]


def summarize(results: Sequence[ReplayResult]) -> Summary:
    """Mean cost saved, mean regret and the count of each stop reason.

    Example:
        >>> r = ReplayResult("a", 5, StopReason.PLATEAU, 1.0, 5.0, 10.0, 0.9, False, "s")
        >>> s = summarize([r])
        >>> s.mean_cost_saved, round(s.mean_regret, 3), s.stops
        (0.5, 0.1, {'plateau': 1})
    """
    stops: dict[str, int] = {}
    for r in results:
        key = r.stop_reason.value if r.stop_reason is not None else NO_STOP
        stops[key] = stops.get(key, 0) + 1
    n = len(results)
    return Summary(
        n_curves=n,
        mean_cost_saved=float(np.mean([r.cost_saved for r in results])) if n else 0.0,
        mean_regret=float(np.mean([r.regret for r in results])) if n else 0.0,
        stops=stops,
    )


# --------------------------------------------------------------------------- CSV input


def _parse_float(text: str, path: str, line: int, col: int, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CurveFormatError(path, line, col, name, f"not a number: {text!r}") from None


def _parse_bool(text: str) -> bool | None:
    """``1``/``0`` (also ``1.0``/``0.0``), ``true``/``false``, ``yes``/``no`` (any case), else None."""
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    try:
        number = float(text)
    except ValueError:
        return None
    return True if number == 1 else False if number == 0 else None


def read_curves_csv(source: str | os.PathLike[str] | IO[str], *, name: str | None = None) -> list[Curve]:
    """Read and validate curves in the long format of ``shared/data/curves``.

    Args:
        source: A path (read as UTF-8, a byte-order mark allowed) or an open text stream.
        name: File name to report in errors (default: the path, or ``"<stream>"``).

    Returns:
        The curves, in order of first appearance.

    Raises:
        CurveFormatError: Bytes that are not UTF-8, malformed CSV, a missing column, a
            non-numeric value, an epoch that is not a whole number >= 0, an epoch repeated or going
            backwards within a curve, a cumulative cost that is negative or decreases, an unknown
            or inconsistent ``higher_is_better``, a curve without a complete cost column, or no
            rows at all.
    """
    if isinstance(source, (str, os.PathLike)):
        path = str(source) if name is None else name
        with open(source, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            return _read_curves(f, path)
    return _read_curves(source, name or "<stream>")


_Row = tuple[int, int, float, float | None, float | None, float | None]
"""(line, epoch, metric, time_s, energy_J, lr) of one CSV row."""


def _records(f: IO[str], path: str) -> Iterator[tuple[int, list[str]]]:
    """``(first line, cells)`` of every CSV record; undecodable bytes are reported where they are."""
    reader = csv.reader(f)
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


def _read_curves(f: IO[str], path: str) -> list[Curve]:
    records = _records(f, path)
    header_line, header = next(records, (0, []))
    while header_line and not any(cell.strip() for cell in header):  # blank lines before the header
        header_line, header = next(records, (0, []))
    if not header_line:
        raise CurveFormatError(path, 1, 0, None, "empty file: no header")
    if header and header[0].startswith("\ufeff"):  # a byte-order mark on a stream
        header = [header[0][1:], *header[1:]]
    index = {h.strip(): i for i, h in enumerate(header)}
    for col in REQUIRED_COLUMNS:
        if col not in index:
            raise CurveFormatError(
                path, header_line, len(header) + 1, col, f"missing required column; header has {header}"
            )
    lr_col = index.get("lr")
    name_col = index.get("metric_name")
    metric_names: dict[str, str] = {}

    rows: dict[str, list[_Row]] = {}
    direction: dict[str, tuple[bool, int]] = {}
    last_cost: dict[tuple[str, str], tuple[float, str]] = {}
    for line_no, row in records:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))

        def cell(col: str, row: list[str] = row) -> str:
            return row[index[col]].strip()

        def at(col: str) -> int:
            return index[col] + 1

        curve_id = cell("curve_id")
        if not curve_id:
            raise CurveFormatError(path, line_no, at("curve_id"), "curve_id", "empty curve_id")
        epoch_f = _parse_float(cell("epoch"), path, line_no, at("epoch"), "epoch")
        if not math.isfinite(epoch_f) or epoch_f < 0 or epoch_f != math.floor(epoch_f):
            raise CurveFormatError(
                path,
                line_no,
                at("epoch"),
                "epoch",
                f"epoch must be a whole number >= 0 (epochs completed), got {cell('epoch')!r}",
            )
        epoch = int(epoch_f)
        metric = _parse_float(cell("metric"), path, line_no, at("metric"), "metric")
        hib = _parse_bool(cell("higher_is_better"))
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
        if name_col is not None and curve_id not in metric_names:
            metric_names[curve_id] = row[name_col].strip()
        series = rows.setdefault(curve_id, [])
        if series and epoch <= series[-1][1]:
            problem = (
                f"duplicate row: curve {curve_id!r} already has epoch {epoch} (line {series[-1][0]})"
                if epoch == series[-1][1]
                else f"epochs of curve {curve_id!r} go backwards: {cell('epoch')} after {series[-1][1]}"
            )
            raise CurveFormatError(path, line_no, at("epoch"), "epoch", problem)
        series.append((line_no, epoch, metric, costs[0], costs[1], lr))

    if not rows:
        raise CurveFormatError(path, header_line + 1, 0, None, "no data rows")
    curves = []
    for curve_id, series in rows.items():
        energy = [r[4] for r in series]
        time_s = [r[3] for r in series]
        if all(e is not None for e in energy):
            costs_arr, unit = np.array(energy, dtype=float) / J_PER_KWH, "kWh"
        elif all(t is not None for t in time_s):
            costs_arr, unit = np.array(time_s, dtype=float), "s"
        else:
            line = next(r[0] for r in series if r[3] is None)
            raise CurveFormatError(
                path,
                line,
                index["time_s"] + 1,
                "time_s",
                f"curve {curve_id!r} has neither energy_J nor time_s on every row",
            )
        lrs = None
        if all(r[5] is not None for r in series):
            lrs = _per_epoch(np.array([r[1] for r in series]), np.array([r[5] for r in series], dtype=float))
        curves.append(
            Curve(
                curve_id=curve_id,
                epochs=np.array([r[1] for r in series], dtype=int),
                metrics=np.array([r[2] for r in series], dtype=float),
                costs=costs_arr,
                higher_is_better=direction[curve_id][0],
                cost_unit=unit,
                lrs=lrs,
                metric_name=metric_names.get(curve_id) or None,
            )
        )
    return curves


def _per_epoch(epochs_completed: np.ndarray, lrs: np.ndarray) -> np.ndarray | None:
    """Learning rate indexed by 0-based epoch, from the rate logged at each check.

    Epochs without a check take the rate of the next check (a decay shows at the check after it).
    """
    if len(epochs_completed) == 0 or epochs_completed.min() < 1:
        return None
    out = np.empty(int(epochs_completed.max()))
    start = 0
    for epoch, lr in zip(epochs_completed.tolist(), lrs.tolist(), strict=True):
        out[start:epoch] = lr
        start = max(start, epoch)
    return out


# --------------------------------------------------------------------------- MLflow input


def read_mlflow_curves(
    tracking_uri: str,
    experiment: str,
    monitor: str | None = None,
    *,
    mode: str | None = None,
    cost_key: str = ENERGY_KEY,
) -> tuple[list[Curve], list[str]]:
    """Curves from the runs of an MLflow experiment that logged the monitored metric and ``cost_key``.

    The metric histories are joined on their step (the callbacks log the monitored metric,
    ``energy/total_kwh`` and ``energy/epochs_until_lr_decay`` at the same step, once per check).
    The epoch of each check comes from the ``epoch`` metric Lightning logs at the same step
    (0-based, so epochs completed is one more) when present, else from the check's position.
    What the callback told the policy beyond the curves is passed on as it was: the run parameter
    ``lightning_green.max_epochs`` becomes the curve's planned horizon (``none``: no plan, so
    ``max_epochs=None``; absent, as in runs logged without the stopping callback: the last
    epoch), and ``energy/epochs_until_lr_decay`` at a step is that check's
    ``epochs_until_lr_decay`` (``None`` at a step without it).

    Each run's recorded settings are used where the caller gives none: the metric is ``monitor``,
    else the one the run recorded (``lightning_green.stopping_monitor``, written by
    EnergyAwareEarlyStopping when it watched another metric than the EnergyMonitor, else
    ``lightning_green.monitor``); the direction is the one the run recorded for that metric
    (``lightning_green.stopping_mode``/``lightning_green.mode``), else ``mode``, else ``"min"``.
    A ``mode`` contradicting the recorded direction of the same metric is an error. The policy
    arguments the run recorded (``lightning_green.<name>``) go into :attr:`Curve.recorded_config`
    when the curve is of the recorded metric; a run replayed on another metric than it recorded
    is replayed like a run that recorded nothing (``mode`` or ``"min"``, no recorded arguments).

    Where a step of a metric was logged more than once, the value kept is MLflow's "latest": the
    largest timestamp, ties broken by the largest value (so the result does not depend on the
    order the tracking server returns the history in).

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///mlflow.db``, ``http://...``, a directory).
        experiment: Experiment name.
        monitor: The monitored metric's key (default: each run's recorded one).
        mode: ``"min"`` or ``"max"``: direction of the metric (default: each run's recorded one,
            else ``"min"``).
        cost_key: Key of cumulative cost in kWh.

    Returns:
        ``(curves, skipped)``: one curve per run (``curve_id`` is the run id, in start-time order)
        and the ids of runs skipped because they lack one of the metrics.

    Raises:
        RuntimeError: If mlflow is not installed.
        RecordedParamError: If ``mode`` contradicts the direction a run recorded for the metric,
            or ``monitor`` is not given and a run that logged ``cost_key`` recorded no metric.
        ValueError: If the experiment does not exist, or a run's recorded parameters are invalid
            (``lightning_green.max_epochs`` neither a positive integer nor ``none``, a policy
            argument of the wrong type or out of range).
    """
    if mode not in (None, "min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or None, got {mode!r}")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "replaying MLflow runs needs mlflow: pip install 'lightning_green[mlflow]'"
        ) from None
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"MLflow experiment {experiment!r} not found at {tracking_uri}")
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id], max_results=1000, page_token=token, order_by=["attributes.start_time ASC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    curves, skipped = [], []
    for run in runs:
        run_id = run.info.run_id
        params = run.data.params
        cost = _history(client, run_id, cost_key)
        if not cost:
            skipped.append(run_id)
            continue
        target = _recorded_target(run_id, params)
        key = monitor or target.monitor
        if key is None:
            raise RecordedParamError(
                f"MLflow run {run_id} recorded no {keys.PARAM_MONITOR}: name the monitored metric (--monitor)"
            )
        own = key == target.monitor
        if own and mode is not None and target.mode is not None and mode != target.mode:
            raise RecordedParamError(
                f"MLflow run {run_id} recorded {target.mode_param}={target.mode} for {key!r}; "
                f"mode {mode!r} (--mode) contradicts it"
            )
        run_mode = (target.mode if own else None) or mode or "min"
        metric = _history(client, run_id, key)
        steps = sorted(set(metric) & set(cost))
        if not steps:
            skipped.append(run_id)
            continue
        epoch_hist = _history(client, run_id, "epoch")
        if all(s in epoch_hist for s in steps):
            epochs = np.array([int(epoch_hist[s]) + 1 for s in steps])
        else:
            epochs = np.arange(1, len(steps) + 1)
        hint_hist = _history(client, run_id, LR_HINT_KEY)
        plan_recorded, planned = _planned_max_epochs(run_id, params.get(MAX_EPOCHS_PARAM))
        curves.append(
            Curve(
                curve_id=run_id,
                epochs=epochs,
                metrics=np.array([metric[s] for s in steps], dtype=float),
                costs=np.maximum.accumulate(np.array([cost[s] for s in steps], dtype=float)),
                higher_is_better=run_mode == "max",
                cost_unit="kWh",
                metric_name=key,
                planned_max_epochs=planned,
                plan_recorded=plan_recorded,
                lr_hints=tuple(_hint(run_id, hint_hist[s]) if s in hint_hist else None for s in steps),
                recorded_monitor=target.monitor,
                recorded_config=_recorded_config(run_id, params) if own else None,
            )
        )
    return curves, skipped


@dataclass(frozen=True)
class _Target:
    """The metric and direction a run recorded, and the parameters that hold them."""

    monitor: str | None
    mode: str | None
    mode_param: str


def _recorded_target(run_id: str, params: Mapping[str, str]) -> _Target:
    """The stopper's metric and direction: its own parameters, else the shared ones."""
    if keys.PARAM_STOPPING_MONITOR in params:
        monitor_param, mode_param = keys.PARAM_STOPPING_MONITOR, keys.PARAM_STOPPING_MODE
    else:
        monitor_param, mode_param = keys.PARAM_MONITOR, keys.PARAM_MODE
    monitor = params.get(monitor_param) or None
    mode = params.get(mode_param)
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"MLflow run {run_id}: parameter {mode_param} must be 'min' or 'max', got {mode!r}")
    return _Target(monitor, mode if monitor is not None else None, mode_param)


def _recorded_config(run_id: str, params: Mapping[str, str]) -> dict[str, Any]:
    """The :class:`StoppingConfig` fields a run recorded as ``lightning_green.<name>``, parsed.

    ``mode`` is left out (the curve's direction carries it). Values are validated as the callback
    validated them.
    """
    out: dict[str, Any] = {}
    for f in fields(StoppingConfig):
        name = keys.policy_param(f.name)
        if f.name == "mode" or name not in params:
            continue
        text = params[name].strip()
        kind = str(f.type)
        try:
            if "None" in kind and text.lower() == "none":
                value: Any = None
            elif kind == "bool":
                value = _parse_bool(text)
                if value is None:
                    raise ValueError
            elif kind.startswith("int"):
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise ValueError(
                f"MLflow run {run_id}: parameter {name} must be {kind.replace(' | None', ' or none')}, "
                f"got {params[name]!r}"
            ) from None
        out[f.name] = value
    try:
        StoppingConfig.from_dict(out)
    except ValueError as e:
        raise ValueError(f"MLflow run {run_id}: recorded policy arguments: {e}") from None
    return out


def _planned_max_epochs(run_id: str, text: str | None) -> tuple[bool, int | None]:
    """``(recorded, horizon)`` from the run parameter ``lightning_green.max_epochs``."""
    if text is None:
        return False, None
    if text.strip().lower() == "none":
        return True, None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"MLflow run {run_id}: parameter {MAX_EPOCHS_PARAM} must be a positive integer or 'none',"
            f" got {text!r}"
        )
    return True, value


def _hint(run_id: str, value: float) -> int:
    if not math.isfinite(value) or value < 0 or value != math.floor(value):
        raise ValueError(
            f"MLflow run {run_id}: metric {LR_HINT_KEY} must be a whole number >= 0, got {value!r}"
        )
    return int(value)


def _history(client: Any, run_id: str, key: str) -> dict[int, float]:
    """``step -> value`` of a metric; a step logged twice keeps MLflow's latest value.

    MLflow's own rule for a run's latest metric: the largest timestamp, ties broken by the
    largest value (NaN lowest). The history's order as returned by the server plays no part.
    """
    out: dict[int, tuple[int, float, float]] = {}
    for m in client.get_metric_history(run_id, key):
        value = float(m.value)
        key_ = (int(m.timestamp), -math.inf if math.isnan(value) else value, value)
        if m.step not in out or key_[:2] > out[m.step][:2]:
            out[m.step] = key_
    return {step: value for step, (_, _, value) in out.items()}


# --------------------------------------------------------------------------- output


def decisions_rows(results: Sequence[ReplayResult]) -> list[list[str]]:
    """The decisions CSV as rows of strings (header first)."""
    rows = [list(DECISION_COLUMNS)]
    for r in results:
        rows.append(
            [
                r.curve_id,
                str(r.stop_epoch),
                r.stop_reason.value if r.stop_reason is not None else NO_STOP,
                repr(r.best_metric_at_stop),
                repr(r.cost_at_stop),
                repr(r.cost_total),
            ]
        )
    return rows


def write_decisions_csv(results: Sequence[ReplayResult], path: str | os.PathLike[str]) -> None:
    """Write the decisions CSV atomically (a temporary file renamed into place).

    Columns: ``curve_id, stop_epoch, stop_reason, best_metric_at_stop, cost_at_stop, cost_total``
    (``stop_reason`` is ``none`` for a curve the policy never stopped).
    """
    target = Path(path)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(decisions_rows(results))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(buffer.getvalue())
        make_readable(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_readable(path: str | os.PathLike[str]) -> None:
    """Give a temporary file the permissions a new file gets (``mkstemp`` makes it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def plot_tradeoff(
    results: Sequence[ReplayResult],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    image_format: str | None = None,
) -> bool:
    """Scatter of cost saved against regret, one point per curve; ``False`` if matplotlib is missing.

    ``image_format`` (``"png"``, ``"svg"``, ...) defaults to the extension of ``path``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5))
    try:
        saved = [100 * r.cost_saved for r in results]
        regret = [r.regret for r in results]
        ax.scatter(saved, regret, s=14, alpha=0.6, label="curves")
        s = summarize(results)
        ax.scatter(
            [100 * s.mean_cost_saved], [s.mean_regret], s=80, marker="*", color="crimson", label="mean"
        )
        ax.set_xlabel("cost saved (%)")
        ax.set_ylabel("regret (metric units, improving direction)")
        ax.set_title(
            title or f"{s.n_curves} curves: {100 * s.mean_cost_saved:.1f}% saved, regret {s.mean_regret:.4g}"
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120, format=image_format)
    finally:
        plt.close(fig)
    return True
