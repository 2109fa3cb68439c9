"""A logged learning curve, as replay reads it from a CSV file or an MLflow run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Curve:
    """One learning curve: the checks of one run.

    Attributes:
        curve_id: Identifier (a CSV ``curve_id`` or an MLflow run id).
        epochs: Training progress at each check, in epochs: whole numbers count epochs completed
            (1 for the first check after one epoch; an integer array), fractions are progress
            within an epoch (``0.05``: a twentieth of the first epoch; a float array).
        metrics: The monitored metric at each check.
        costs: Cumulative cost at each check (kWh, or seconds when no energy was logged).
        higher_is_better: Direction of the metric.
        cost_unit: ``"kWh"`` or ``"s"``.
        lrs: Learning rate at each check when known (optional ``lr`` CSV column: the rate the
            check's epoch was trained at), else ``None``.
        metric_name: Name of the metric when known (optional ``metric_name`` CSV column).
        planned_max_epochs: The planned horizon the run's policy was given, in epochs (``None``:
            no plan; a fraction for a run planned in steps), when it was recorded
            (``plan_recorded``; the MLflow parameter ``lightning_green.max_epochs``).
        plan_recorded: Whether ``planned_max_epochs`` was recorded. If not, the planned horizon
            defaults to the curve's last epoch.
        lr_hints: The ``epochs_until_lr_decay`` the run's policy was given at each check (``None``
            where none was), when recorded (the MLflow metric ``energy/epochs_until_lr_decay``);
            else ``None``, and replay derives them from ``lrs`` where it can
            (:func:`~lightning_green.offline.engine.policy_inputs`).
        recorded_monitor: The metric the run recorded as monitored (MLflow parameter
            ``lightning_green.stopping_monitor``, else ``lightning_green.monitor``), if any.
        recorded_config: The policy arguments the run recorded for this metric (MLflow parameters
            ``lightning_green.<name>``, parsed; ``mode`` excluded, it is :attr:`higher_is_better`),
            when the curve is of the recorded metric; else ``None``. ``config_for`` uses them.
        epoch_texts: Each check's ``epoch`` as the input wrote it (a CSV cell), or ``None`` where
            the input was numbers (MLflow): then :meth:`epoch_text` writes them.
        cost_not_run: For a run its own stopper stopped before the planned end (MLflow): the
            cost the rest of the planned run would have taken, a projection from its measured
            epochs (recorded at the stop, else projected from the recorded plan); else ``None``.
        outside_costs: The run's cost outside its training epochs at each check (before the first
            epoch: setup, a batch-size or learning-rate search; earlier fits' end-of-fit work), as
            the stopper recorded it (``energy/check_outside_kwh``): the energy budget counts it,
            ``costs`` does not. ``None``: not recorded (none is counted).
        mode_assumed: Whether :attr:`higher_is_better` is the default (lower is better), neither
            recorded by the run for this metric nor given (``--mode``): replay says so.
        arguments_missing: Whether EnergyAwareEarlyStopping checked the run (its records of the
            checks, ``energy/check_kwh``, or a stop tag ``lightning_green.stop_reason`` of its own)
            but the run holds none of the parameters it logs at its first check (the plan, the
            policy arguments): a log that lost them, replayed with the options and defaults;
            replay says so.
        budget_not_applied: The energy budget (kWh) the run recorded
            (``lightning_green.energy_budget_kwh``) and replay does not apply, because the curve's
            cost is not in kWh (``--cost-key step``): a budget in kWh is not judged against steps.
            ``None``: none recorded, or applied. Replay says so.
        trainer_min_epochs: The Trainer's ``min_epochs`` the run recorded
            (``lightning_green.trainer_min_epochs``): Lightning holds a stop back until that many
            epochs are completed, and replay holds it back alike
            (:func:`~lightning_green.offline.engine.floor_reached`). ``None``: none recorded.
        trainer_min_steps: The Trainer's ``min_steps`` the run recorded
            (``lightning_green.trainer_min_steps``), held to alike. ``None``: none recorded.
        check_steps: The Trainer's ``global_step`` at each check where known (a logged run: the
            step the check was logged at, plus one; a Hugging Face Trainer log's step as logged),
            for :attr:`trainer_min_steps`; else ``None``.
        hf_trainer: Whether the curve is of a Hugging Face Trainer log
            (:mod:`~lightning_green.offline.hf_trainer`): its ``epoch`` read as the epochs
            completed, its steps as the Trainer's ``global_step``. Replay says so.
    """

    curve_id: str
    epochs: np.ndarray
    metrics: np.ndarray
    costs: np.ndarray
    higher_is_better: bool
    cost_unit: str = "kWh"
    lrs: np.ndarray | None = field(default=None, repr=False)
    metric_name: str | None = None
    planned_max_epochs: int | float | None = None
    plan_recorded: bool = False
    lr_hints: tuple[int | None, ...] | None = field(default=None, repr=False)
    recorded_monitor: str | None = None
    recorded_config: Mapping[str, Any] | None = field(default=None, repr=False)
    epoch_texts: tuple[str, ...] | None = field(default=None, repr=False)
    cost_not_run: float | None = field(default=None, repr=False)
    outside_costs: np.ndarray | None = field(default=None, repr=False)
    mode_assumed: bool = field(default=False, repr=False)
    arguments_missing: bool = field(default=False, repr=False)
    budget_not_applied: float | None = field(default=None, repr=False)
    trainer_min_epochs: int | None = field(default=None, repr=False)
    trainer_min_steps: int | None = field(default=None, repr=False)
    check_steps: np.ndarray | None = field(default=None, repr=False)
    hf_trainer: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.epochs)
        if n == 0 or len(self.metrics) != n or len(self.costs) != n:
            raise ValueError(
                f"Curve {self.curve_id!r}: epochs, metrics and costs must have one value per check and at "
                f"least one check, got {n}, {len(self.metrics)} and {len(self.costs)}"
            )
        if self.outside_costs is not None and len(self.outside_costs) != n:
            raise ValueError(
                f"Curve {self.curve_id!r}: outside_costs must have one value per check ({n}), got "
                f"{len(self.outside_costs)}"
            )

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``."""
        return "max" if self.higher_is_better else "min"

    @property
    def fractional(self) -> bool:
        """Whether some check is at a fraction of an epoch (``0.0499809``, ``1.00096``)."""
        return self.epochs.dtype.kind == "f" and not bool(np.all(self.epochs == np.floor(self.epochs)))

    @property
    def default_max_epochs(self) -> int | float | None:
        """The planned horizon replay uses unless told otherwise: the recorded one, else the last epoch.

        None when the last epoch is 0: a curve of checks before any training has no plan.
        """
        if self.plan_recorded:
            return self.planned_max_epochs
        last = float(self.epochs[-1])
        if last <= 0:
            return None
        return int(last) if last.is_integer() else last

    def epoch_text(self, index: int) -> str:
        """The ``epoch`` of check ``index`` as the input wrote it (numbers: ``2``, ``0.05``).

        Example:
            >>> Curve("a", np.array([1, 2]), np.zeros(2), np.ones(2), False).epoch_text(-1)
            '2'
        """
        if self.epoch_texts is not None:
            return self.epoch_texts[index]
        value = float(self.epochs[index])
        return str(int(value)) if value.is_integer() else repr(value)
