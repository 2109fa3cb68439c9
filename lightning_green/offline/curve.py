"""A logged learning curve, as replay reads it from a CSV file or an MLflow run, and input errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class OfflineInputError(ValueError):
    """Input the offline tools cannot use: a malformed file or artifact, or a record that contradicts it.

    The ``lightning-green`` command reports it as one ``error:`` line and exits with status 2.
    """


class RecordedParamError(OfflineInputError):
    """What an MLflow run recorded contradicts what replay was told, or replay lacks what it needs.

    A usage problem rather than bad data: a ``mode`` that contradicts the direction the run
    recorded for the same metric, or no monitored metric given for a run that recorded none.
    """


class CurveFormatError(OfflineInputError):
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
            when the curve is of the recorded metric; else ``None``. ``config_for`` uses them.
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
