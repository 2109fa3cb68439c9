"""EnergyAwareEarlyStopping: stop when more epochs stop paying for themselves.

A drop-in for Lightning's ``EarlyStopping`` (same arguments; it *is* an ``EarlyStopping`` of
every installed namespace, so ``trainer.early_stopping_callback`` finds it) whose decision is the
pure :class:`~lightning_green.policy.StoppingPolicy`: the plateau rule, the marginal gain per kWh
(measured and projected by a learning-curve fit) and an energy budget. The energy comes from the
Trainer's measurement session (:func:`~lightning_green.callbacks.energy_monitor.session_for`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from lightning_green import keys
from lightning_green.callbacks import _compat, _loggers
from lightning_green.callbacks._compat import LightningModule, Trainer
from lightning_green.callbacks.energy_monitor import EarlierRecord, EnergyMonitor, check_metric_loggable
from lightning_green.checks import check_bool, check_choice
from lightning_green.energy.session import EnergySession
from lightning_green.energy.units import j_to_kwh
from lightning_green.json_safe import json_safe
from lightning_green.keys import PARAM_MAX_EPOCHS, TAG_STOP_REASON
from lightning_green.policy import StopDecision, StoppingConfig, StoppingPolicy, StopReason, project_savings
from lightning_green.report import decision_summary
from lightning_green.state import from_state, to_state
from lightning_green.stop_record import check_metrics, decision_metrics, stop_savings_fields
from lightning_green.training.check_progress import CheckPlace, check_place, check_points, training_end
from lightning_green.training.learning_rates import epochs_until_lr_decay

_DEFAULTS = StoppingConfig()

LIGHTNING_REASONS: dict[StopReason, str] = {
    StopReason.PLATEAU: "PATIENCE_EXHAUSTED",
    StopReason.MARGINAL_GAIN: "PATIENCE_EXHAUSTED",  # waiting longer is not worth its energy
    StopReason.ENERGY_BUDGET: "STOPPING_THRESHOLD",  # a threshold on what the run may spend
    StopReason.NON_FINITE: "NON_FINITE_METRIC",
    StopReason.DIVERGENCE: "DIVERGENCE_THRESHOLD",
    StopReason.THRESHOLD_REACHED: "STOPPING_THRESHOLD",
}
"""The member of Lightning's ``EarlyStoppingReason`` each stop reason sets ``stopping_reason`` to."""


@dataclass
class PendingCheck:
    """A validation's value of the monitor that a check at the training epoch's end has yet to read.

    A checkpoint saved at that validation's end keeps it: the resumed fit neither runs the
    validation again nor has what it logged, and its epoch-end check reads the value from here.
    """

    epoch: int
    value: float


@dataclass
class StopRecord:
    """What a stop leaves to the summary and to a new log of the run, as plain data.

    Kept in checkpoints saved after the stop: a fit resumed from one ends at once, with no decision
    of its own to draw these from.
    """

    summary: dict[str, Any] = field(default_factory=dict)  # the summary's stop_savings, stopping_policy
    metrics: dict[str, float] = field(default_factory=dict)  # the energy/not_run_*_projected it logged


@dataclass
class StopperState:
    """What EnergyAwareEarlyStopping saves beyond Lightning's ``EarlyStopping`` fields."""

    policy: dict[str, Any] | None = None
    stop_reason: str | None = None
    stop_plan: list[int | None] | None = None  # the trainer's [max_epochs, max_steps] at the stop
    # Per check of the policy's history, what it was told beyond it: the run's kWh outside the
    # epochs and the epochs until the next learning-rate drop (None in older checkpoints).
    check_inputs: list[tuple[float, int | None]] | None = None
    pending_check: PendingCheck | None = None  # a validation's value the epoch-end check has yet to read
    stop_record: StopRecord | None = None  # what the stop leaves to the summary (None in older checkpoints)


def trainer_floor_params(trainer: Trainer) -> dict[str, int]:
    """The run parameters recording the Trainer's floor on a stop, where it has one.

    Lightning holds a stop back until ``min_epochs`` epochs are completed and ``min_steps``
    optimizer steps taken (its fit loop's values: ``min_steps`` alone makes ``min_epochs`` 1);
    each that holds anything back becomes :data:`keys.PARAM_TRAINER_MIN_EPOCHS` /
    :data:`keys.PARAM_TRAINER_MIN_STEPS`.
    """
    loop = trainer.fit_loop
    floors = {
        keys.PARAM_TRAINER_MIN_EPOCHS: getattr(loop, "min_epochs", None),
        keys.PARAM_TRAINER_MIN_STEPS: getattr(loop, "min_steps", None),
    }
    return {name: int(value) for name, value in floors.items() if value}


class EnergyAwareEarlyStopping(_compat.PicklesWithoutTheModule, *_compat.EARLY_STOPPING_BASES):
    r"""Stop training on a plateau, when a further kWh buys too little, or before a budget is exceeded.

    Takes Lightning ``EarlyStopping``'s arguments with the same meaning plus the energy ones.
    Each check feeds rank 0's metric and the run's energy to the stopping policy (so every DDP
    rank decides alike), and reads the scheduled learning-rate drops ahead from the trainer. A
    stop sets :attr:`stop_reason` (exact), Lightning's ``stopped_epoch``, ``stopping_reason``
    (the nearest :data:`LIGHTNING_REASONS`), ``wait_count`` and ``best_score``, and the MLflow
    tag ``lightning_green.stop_reason`` (``none`` for a run it did not stop). The policy's
    arguments become run parameters (:meth:`policy_params`) for ``lightning-green replay``; each
    check logs ``energy/gain_per_kwh`` and ``energy/projected_gain[_per_kwh]`` when known.

    Args:
        monitor: Metric to watch, as logged.
        min_delta: Minimum change that counts as an improvement for the plateau rule.
        patience: Checks without improvement before the plateau rule stops.
        verbose: Print each stop decision's reasoning.
        mode: ``"min"`` or ``"max"``.
        strict: Raise, listing the logged metrics, when ``monitor`` is missing.
        check_finite: Stop when the metric becomes NaN or infinite.
        stopping_threshold: Stop once the metric is better than this (the goal is reached).
        divergence_threshold: Stop once the metric is worse than this.
        check_on_train_epoch_end: Check at the training epoch's end (None: decided as Lightning does).
        log_rank_zero_only: Log the stop message on rank 0 only.
        min_epochs: Never stop on plateau or marginal-gain grounds before this many epochs.
        energy_budget_kwh: Stop before the next epoch would take the run's energy over this (kWh):
            the whole run's, what it used before its first epoch included; the next epoch's cost
            is projected from the training epochs alone.
        min_gain_per_kwh: Absolute threshold in metric units per kWh (None: off).
        min_relative_gain: Stop when a further kWh is projected to buy less than this fraction of
            what the average kWh bought so far (None: off).
        min_horizon_fraction: No marginal-gain stop before this fraction of the planned epochs
            (``max_epochs`` or what ``max_steps`` allows; without a plan, no hold: the 1000 epochs
            Lightning puts in place of an unset ``max_epochs`` is none, ``max_epochs=1000`` is one).
        patience_rest_fraction: Near the planned end, the plateau rule also stops once the checks
            without improvement reach this fraction of the checks still planned (at least 10,
            never more than ``patience``); None: ``patience`` alone, as Lightning.

    Example:
        >>> stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=2.0)
        >>> stopper.config.energy_budget_kwh, stopper.stop_reason is None
        (2.0, True)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = _DEFAULTS.min_delta,
        patience: int = _DEFAULTS.patience,
        verbose: bool = False,
        mode: Literal["min", "max"] = "min",
        strict: bool = True,
        check_finite: bool = _DEFAULTS.check_finite,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
        min_epochs: int = _DEFAULTS.min_epochs,
        energy_budget_kwh: float | None = _DEFAULTS.energy_budget_kwh,
        min_gain_per_kwh: float | None = _DEFAULTS.min_gain_per_kwh,
        min_relative_gain: float | None = _DEFAULTS.min_relative_gain,
        min_horizon_fraction: float = _DEFAULTS.min_horizon_fraction,
        patience_rest_fraction: float | None = _DEFAULTS.patience_rest_fraction,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a non-empty metric name, got {monitor!r}")
        check_choice("mode", mode, ("min", "max"))
        # Flags as plain bools (np.bool_ and bool tensors are accepted): Lightning keeps them.
        verbose = check_bool("verbose", verbose)
        strict = check_bool("strict", strict)
        log_rank_zero_only = check_bool("log_rank_zero_only", log_rank_zero_only)
        check_on_train_epoch_end = check_bool(
            "check_on_train_epoch_end", check_on_train_epoch_end, allow_none=True
        )
        shared: dict[str, Any] = {
            "mode": mode,
            "min_delta": min_delta,
            "patience": patience,
            "check_finite": check_finite,
            "stopping_threshold": stopping_threshold,
            "divergence_threshold": divergence_threshold,
        }
        energy: dict[str, Any] = {
            "min_epochs": min_epochs,
            "energy_budget_kwh": energy_budget_kwh,
            "min_gain_per_kwh": min_gain_per_kwh,
            "min_relative_gain": min_relative_gain,
            "min_horizon_fraction": min_horizon_fraction,
            "patience_rest_fraction": patience_rest_fraction,
        }
        # Validates every policy argument (ValueError naming it) before Lightning sees them.
        self.config = StoppingConfig(**shared, **energy)
        EnergyMonitor.check_environment()  # what the EnergyMonitor it may add at fit setup reads
        # Lightning gets the config's plain values (a NumPy or tensor scalar kept in its fields
        # would go into the checkpoint, which torch.load(weights_only=True) then refuses).
        super().__init__(
            monitor=str(monitor),
            verbose=verbose,
            strict=strict,
            check_on_train_epoch_end=check_on_train_epoch_end,
            log_rank_zero_only=log_rank_zero_only,
            **{name: getattr(self.config, name) for name in shared},
        )
        for name in energy:  # the energy arguments as attributes, as Lightning keeps its own
            setattr(self, name, getattr(self.config, name))
        # The argument as given: each setup resolves None for its own Trainer (as Lightning does).
        self._check_on_train_epoch_end_arg = check_on_train_epoch_end
        self._energy: EnergyMonitor | None = None
        self._session: EnergySession | None = None
        self._new_run()

    def _new_run(self) -> None:
        """The state of a run that has not started: an empty history, no stop, nothing logged."""
        self.policy = StoppingPolicy(self.config, monitor=self.monitor)
        self.stop_reason: StopReason | None = None
        self._stop_plan: list[int | None] | None = None
        # Where a stop in force when a fit starts came from: "checkpoint" (restored with it) or
        # "earlier fit" (of the same Trainer, fit again); None: no stop (until the fit starts).
        self._stop_carried: Literal["checkpoint", "earlier fit"] | None = None
        self._stop_config: dict[str, Any] | None = None  # the policy arguments it was decided with
        self.last_decision: StopDecision | None = None
        self.last_place: CheckPlace | None = None  # where the last check was: progress, horizon, unit
        self._training_end_text: str | None = None
        self._inputs_logged = False
        # (outside_kwh, lr_hint) of every check in the policy's history; None: unknown (an older checkpoint)
        self._check_inputs: list[tuple[float, int | None]] | None = []
        self._pending_metrics: dict[str, float] = {}
        self._missing_warned = False
        self._pending_check: PendingCheck | None = None
        self._before_validation: Any = None  # the monitor's value object when validation started
        self._restored_stop: StopRecord | None = None  # the stop's record, as a checkpoint restored it
        self._restored_check = False  # a checkpoint's history was restored; this fit has not checked yet
        self._training_ran = False  # this fit's training loop started (Lightning skips a finished run's)
        self._fit_finished = False  # finish_fit recorded this fit's ending
        # Lightning EarlyStopping's own fields, as its constructor sets them.
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        self.stopping_reason_message = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Decide where to check (as Lightning does) and attach to the shared energy measurement.

        A fit that starts a new run (:func:`~._compat.starts_new_run`: this callback reused from an
        earlier fit in a new Trainer) starts with an empty history, as a new callback would; a
        resumed run then takes the checkpoint's. A time-based ``val_check_interval`` (Lightning >=
        2.6, which Lightning's ``EarlyStopping`` does not read) validates anywhere in an epoch: the
        check follows each validation, as with several validations an epoch. Where to check is
        decided anew from the constructor's argument at every setup: reused in a Trainer that
        validates otherwise, the stopper checks where that Trainer's validations are.
        """
        self._check_on_train_epoch_end = self._check_on_train_epoch_end_arg
        if self._check_on_train_epoch_end is None and _compat.val_check_interval(trainer) is None:
            self._check_on_train_epoch_end = False
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            check_metric_loggable(
                trainer,
                f"{type(self).__name__}(monitor={self.monitor!r})",
                self.monitor,
                self.strict,
                "remove it: it decides on that metric alone.",
            )
            stoppers = [cb for cb in trainer.callbacks if isinstance(cb, EnergyAwareEarlyStopping)]
            if len(stoppers) > 1:
                raise ValueError(
                    f"The Trainer has {len(stoppers)} EnergyAwareEarlyStopping callbacks (monitors "
                    f"{', '.join(repr(cb.monitor) for cb in stoppers)}); a run records one stopper's "
                    "decision (its stop reason, summary and MLflow tags and parameters, what replay "
                    "reads), so keep one and stop on another metric with Lightning's EarlyStopping "
                    "next to it."
                )
            if _compat.starts_new_run(trainer):
                self._new_run()
                self.stopping_reason = _compat.stopping_reason(trainer, "NOT_STOPPED")
            elif self.stop_reason is not None:  # the same Trainer fit again after the stop
                self._stop_carried = "earlier fit"
            self._energy = EnergyMonitor.for_trainer(
                trainer, requester=self, monitor=self.monitor, mode=self.mode
            )
            shared = self._session = self._energy.session
            if shared.monitor == self.monitor and shared.mode != self.mode:
                raise ValueError(
                    f"EnergyAwareEarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}) and "
                    f"EnergyMonitor(monitor={shared.monitor!r}, mode={shared.mode!r}) disagree on whether "
                    f"{self.monitor!r} should go down or up; give both the same mode"
                )

    @property
    def energy_monitor(self) -> EnergyMonitor | None:
        """The EnergyMonitor whose session this callback reads its energy from (set at fit setup)."""
        return self._energy

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Hold ``stopping_reason`` as a member of the trainer's ``EarlyStoppingReason`` (after a restore).

        Every fit records its plan and policy arguments again at its first check: a run resumed or
        continued with another ``max_epochs`` (or argument) is replayed with the latest.
        """
        self.stopping_reason = _compat.stopping_reason(trainer, self.stopping_reason.name)
        self._inputs_logged = False
        self._training_ran = False  # until on_train_start: Lightning may skip the training loop
        self._fit_finished = False

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Remember the monitor's value object, to tell whether this validation logs the monitor."""
        self._before_validation = trainer.callback_metrics.get(self.monitor)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check here (Lightning's rule), or keep the value a check at the epoch's end will read.

        Kept (:class:`PendingCheck`) so that a checkpoint saved at this validation's end holds it.
        """
        super().on_validation_end(trainer, pl_module)
        value, before = trainer.callback_metrics.get(self.monitor), self._before_validation
        self._before_validation = None
        # A value this validation logged (Lightning puts a new value object) for the epoch-end check
        fresh = value is not None and value is not before
        if fresh and self._check_on_train_epoch_end and not self._should_skip_check(trainer):
            self._pending_check = PendingCheck(int(trainer.current_epoch), float(value))

    def _check_logs(self, trainer: Trainer) -> dict[str, Any]:
        """The logged metrics a check reads.

        With the value this epoch's validation logged when the fit, resumed from a checkpoint saved
        at that validation's end, has none of its own.
        """
        logs = trainer.callback_metrics
        pending, self._pending_check = self._pending_check, None
        if self.monitor not in logs and pending is not None and pending.epoch == int(trainer.current_epoch):
            return {**logs, self.monitor: torch.tensor(pending.value, dtype=torch.float64)}
        return logs

    def _repeats_restored_check(self, trainer: Trainer) -> bool:
        """Whether this check repeats the last one of the history a checkpoint restored.

        A fit resumed from a checkpoint saved at an epoch's end (after that epoch's check) may run
        the epoch's end again before training on (Lightning does with ``max_steps``), with none of
        the epoch's metrics: the check is the checkpoint's already, at the same place. Asked at the
        fit's first check only.
        """
        restored, self._restored_check = self._restored_check, False
        history = self.policy.history
        if not restored or not len(history):
            return False
        place = check_place(_compat.fit_position(trainer), None)
        return place.progress == float(history.progress[-1])

    def _run_early_stopping_check(self, trainer: Trainer) -> None:
        if self._repeats_restored_check(trainer):
            return  # the resumed run decides what the uninterrupted one did: nothing new here
        logs = self._check_logs(trainer)
        if trainer.fast_dev_run:
            return
        if not self._validate_condition_metric(logs):  # raises when strict
            if not self._missing_warned:
                self._missing_warned = True
                _compat.warn(
                    trainer,
                    f"EnergyAwareEarlyStopping(strict=False): the monitored metric {self.monitor!r} was not "
                    f"logged, so this check was skipped: nothing, the energy budget included, is checked "
                    f"until it is. Logged metrics: {sorted(logs)}",
                )
            return
        pl_module, session = trainer.lightning_module, self._session
        assert session is not None
        closed = session.last_epoch
        position = _compat.fit_position(trainer)
        if self._check_on_train_epoch_end and closed is not None and closed.epoch == trainer.current_epoch:
            cost_kwh = closed.total_kwh  # the EnergyMonitor (a plain callback) closed the epoch before us
        else:  # the EnergyMonitor may have read at this validation already: one reading for both
            cost_kwh = session.total_kwh_now(at=_compat.check_moment(position))
        # The training epochs' energy is what the next interval is projected from; what the run
        # spent outside them (before the first epoch: setup, a batch-size or learning-rate search;
        # earlier fits' end-of-fit work) counts in the budget only, which is the whole run's.
        outside_kwh = j_to_kwh(session.ledger.outside_epochs_j)
        # Every rank decides on rank 0's metric: identical inputs, identical decisions.
        metric = float(trainer.strategy.broadcast(float(logs[self.monitor]), src=0))
        lr_hint = epochs_until_lr_decay(
            trainer.lr_scheduler_configs, position.steps_per_epoch, epoch_done=position.epoch_done
        )
        place = self.last_place = check_place(position, lr_hint)
        decision = self.policy.update(
            metric,
            cost_kwh,
            progress=place.progress,
            horizon=place.horizon,
            lr_decay_in=place.lr_decay_in,
            progress_per_epoch=place.progress_per_epoch,
            outside_epochs_kwh=outside_kwh,
        )
        self._record_inputs(trainer, place, lr_hint, cost_kwh, outside_kwh)
        if self._check_inputs is not None:
            self._check_inputs.append((float(outside_kwh), lr_hint))
        # Bit-identical on every rank by construction; the broadcast guards against platforms
        # whose floating point differs (multi-node with mixed hardware).
        should_stop, reason = trainer.strategy.broadcast(
            (decision.should_stop, None if decision.reason is None else decision.reason.value), src=0
        )
        if not should_stop and self.stop_reason is not None and trainer.should_stop:
            decision = self._held_stop_decision(decision, place)
        self.last_decision = decision
        self.wait_count = self.policy.wait_count
        self.best_score = torch.tensor(self.policy.best_score)
        self._log_decision(trainer, pl_module, decision)
        # The stop is this stopper's whenever its check decides one, whatever else asked the run to
        # stop before it (Lightning's EarlyStopping earlier in the callback list, Trainer(max_time)):
        # the record follows the decision, not the callbacks' order, and agrees with a replay of the
        # run's log. A stop held back by Trainer(min_epochs) is renewed, as Lightning's EarlyStopping
        # does; a run that something else alone ended records no stop of this stopper's.
        if should_stop:
            self._stop(trainer, StopReason(reason), decision)

    def _held_stop_decision(self, decision: StopDecision, place: CheckPlace) -> StopDecision:
        """``decision`` with what the run's held stop avoids, projected from this check.

        A stop of this stopper that ``Trainer(min_epochs/min_steps)`` holds back stays asked for
        (Lightning keeps ``should_stop``): the run ends once the floor is met, whatever a later
        check decides. What it then leaves unrun (the summary's ``stop_savings``, the logged
        ``energy/not_run_*_projected``) is projected from the last check, as at a stop.
        """
        if decision.savings is not None:
            return decision
        history = self.policy.history
        savings = project_savings(
            history.costs_kwh, history.progress, place.horizon, progress_per_epoch=place.progress_per_epoch
        )
        return dataclasses.replace(decision, savings=savings)

    def _record_inputs(
        self, trainer: Trainer, place: CheckPlace, lr_hint: int | None, cost_kwh: float, outside_kwh: float
    ) -> None:
        """Log what the policy was told at this check, for replay to decide on the same.

        Once a fit: the planned horizon in epochs and the policy arguments (run parameters). At every
        check: the cumulative kWh of the training epochs and the kWh outside them, the epochs
        completed (fractional inside an epoch; not in a run without epochs) the policy decided on,
        and the learning-rate hint when there is one.
        """
        if not self._inputs_logged and trainer.global_rank == 0:
            self._log_params(trainer, place)
        self._pending_metrics[keys.CHECK_KWH] = float(cost_kwh)
        self._pending_metrics[keys.CHECK_OUTSIDE_KWH] = float(outside_kwh)
        if place.epochs is not None:
            self._pending_metrics[keys.CHECK_EPOCHS] = float(place.epochs)
        if lr_hint is not None:
            self._pending_metrics[keys.EPOCHS_UNTIL_LR_DECAY] = float(lr_hint)

    def _log_params(self, trainer: Trainer, place: CheckPlace) -> None:
        """Log the plan, the Trainer's floor on a stop and the policy arguments as run parameters.

        Once a fit. The floor (``Trainer(min_epochs=..., min_steps=...)``, which holds a stop back
        until it is met) only when the Trainer has one, for replay to hold the stop back alike.
        """
        self._inputs_logged = True
        horizon = place.horizon_epochs
        params = {PARAM_MAX_EPOCHS: "none" if horizon is None else horizon, **self.policy_params()}
        params.update(trainer_floor_params(trainer))
        _loggers.log_params(trainer, params)

    def policy_params(self) -> dict[str, Any]:
        """The run parameters that record this stopper's policy, for replay to reproduce it.

        Every :class:`~lightning_green.policy.StoppingConfig` field as ``lightning_green.<name>``
        (``None`` as ``none``); the metric and direction as ``lightning_green.monitor``/``.mode``,
        or as ``lightning_green.stopping_monitor``/``.stopping_mode`` when the session's
        EnergyMonitor watches another metric (or direction), so neither overwrites the other.
        """
        shared = self._session
        shared_target = None if shared is None or shared.monitor is None else (shared.monitor, shared.mode)
        separate = shared_target not in (None, (self.monitor, self.mode))
        return keys.stopping_params(self.config.to_dict(), self.monitor, self.mode, separate=separate)

    def _stop(self, trainer: Trainer, reason: StopReason, decision: StopDecision) -> None:
        """Stop, keeping Lightning's own fields true (``stopping_reason`` as :data:`LIGHTNING_REASONS`)."""
        trainer.should_stop = True
        self.stopped_epoch = trainer.current_epoch
        self.stop_reason = reason
        self._stop_plan = [trainer.max_epochs, trainer.max_steps]
        self._stop_config = self.config.to_dict()
        self.stopping_reason = _compat.stopping_reason(trainer, LIGHTNING_REASONS[reason])
        self.stopping_reason_message = decision.message
        if self.verbose:
            self._log_info(trainer, decision.message, self.log_rank_zero_only)
        if trainer.global_rank == 0:
            _loggers.set_tags(
                trainer, {TAG_STOP_REASON: reason.value, keys.TAG_STOPPED_EPOCH: self.stopped_epoch}
            )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record (summary ``stop_reason: "none"``, tag ``none``) that the run ended without this stopper."""
        self._record_no_stop(trainer)

    def _record_no_stop(self, trainer: Trainer) -> None:
        """Record that the run ended without a stop of this stopper (summary fields, tag ``none``)."""
        if self.stop_reason is not None or trainer.sanity_checking or trainer.fast_dev_run:
            return
        self._training_end_text = training_end(_compat.fit_position(trainer))
        if trainer.global_rank == 0:
            _loggers.set_tags(trainer, {TAG_STOP_REASON: keys.NO_STOP})

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record how the run ended when Lightning skipped the training loop (:meth:`finish_fit`)."""
        self.finish_fit(trainer)

    def finish_fit(self, trainer: Trainer) -> None:
        """Record how the run ended in a fit whose training loop Lightning skipped (every rank; once a fit).

        A fit resumed from a checkpoint of a run that had reached ``max_epochs`` (or ``max_steps``)
        gets neither ``on_train_start`` nor ``on_train_end``: the ending those record is recorded
        here instead, as the run's first fit recorded it - a restored stop in the fit's loggers
        (:meth:`_record_restored_stop`: the stop's tags and the run parameters), or ``none`` with
        how the run ended (``ran to max_epochs=3``; with the run parameters, from a checkpoint). A
        stop restored with other arguments or another plan stays the run's stop here: the fit
        trains nothing to decide anew on.

        Called from :meth:`on_fit_end` and by the ``EnergyMonitor`` before it pulls the summary
        fields (:class:`~lightning_green.callbacks.energy_monitor.FitEndContributor`), whichever
        comes first in the callbacks' order; a fit whose training loop ran has it recorded already.
        """
        if self._fit_finished or self._training_ran:
            return
        self._fit_finished = True
        carried, self._stop_carried = self._stop_carried, None
        to_loggers = trainer.global_rank == 0 and _loggers.any_logger(trainer)
        if self.stop_reason is not None:
            if carried == "checkpoint" and to_loggers:
                self._record_restored_stop(trainer)
            return
        if self._restored_check and len(self.policy.history) and to_loggers:
            # A new log of the run gets its checks from the checkpoint: the plan and arguments too.
            self._log_params(trainer, check_place(_compat.fit_position(trainer), None))
        self._record_no_stop(trainer)

    def _log_decision(self, trainer: Trainer, pl_module: LightningModule, decision: StopDecision) -> None:
        place = self.last_place
        metrics = {
            **decision_metrics(decision, "epochs" if place is None else place.unit),
            **self._pending_metrics,
        }
        if keys.CHECK_KWH in self._pending_metrics and len(self.policy.history):
            # The value this check decided on, for replay to decide on the same: the metric's own
            # series may not hold it (logged every few steps, or once an epoch under autolog).
            metrics[keys.CHECK_METRIC] = float(self.policy.history.metrics[-1])
            # How many checks the history holds: a resumed run's log counts on from its checkpoint's.
            metrics[keys.CHECK_NUMBER] = float(len(self.policy.history))
        self._pending_metrics = {}
        if not metrics or not _loggers.any_logger(trainer):
            return
        if self._check_on_train_epoch_end and trainer.loggers and _loggers.autologged(trainer):
            # Autolog copies callback_metrics before monitoring callbacks run: through self.log, the
            # next epoch's copy would be this check's values, a stale second value at that step.
            # Straight to the loggers instead, at the step Lightning logs the epoch's metrics at.
            if trainer.global_rank == 0:
                step = max(0, _compat.logging_step(trainer) - 1)
                _loggers.log_metrics(trainer, metrics, step=step, epoch=int(trainer.current_epoch))
        elif self._check_on_train_epoch_end:
            if trainer.loggers:
                # Identical on every rank (one decision): sync_dist only says so to Lightning, and
                # max keeps equal values exact (a mean of three can move the last digit).
                exact = _compat.exact_values(trainer, metrics)  # float64: not Lightning's float32
                pl_module.log_dict(
                    exact, on_step=False, on_epoch=True, logger=True, sync_dist=True, reduce_fx="max"
                )
            if trainer.global_rank == 0:
                # An MLflow run active without MLFlowLogger: straight to it, at this epoch.
                _loggers.log_to_active_run(trainer, metrics)
        elif trainer.global_rank == 0:  # Lightning forbids self.log in on_validation_end
            # At the step of the check's validation metrics, so that replay joins them.
            _loggers.log_metrics(trainer, metrics, step=_compat.logging_step(trainer))

    def energy_summary_fields(self) -> dict[str, Any]:
        """The stop (or how the run ended without one) and the policy's last view, for the summary."""
        end, decision = self._training_end_text, self.last_decision
        fields: dict[str, Any] = {}
        if self.stop_reason is not None:
            fields = dict(stop_reason=self.stop_reason.value, stopped_epoch=self.stopped_epoch)
            fields["stop_message"] = self.stopping_reason_message
            record = self._stop_record()
            if record is not None:  # from the stop's decision, or restored with the stop
                fields.update(record.summary)
        elif end is not None:
            message = f"{type(self).__name__} did not stop the run: {end}"
            fields = dict(
                stop_reason=keys.NO_STOP, stopped_epoch=None, stop_message=message, training_end=end
            )
        elif decision is not None:
            fields = dict(stop_reason=None, stopped_epoch=None, stop_message=None)
        if decision is not None and "stopping_policy" not in fields:
            fields["stopping_policy"] = self._policy_summary(decision)
        return fields

    def _policy_summary(self, decision: StopDecision) -> dict[str, Any]:
        """The summary's ``stopping_policy``: the decision's numbers and its fitted curve."""
        fitted_from = None
        if decision.fit is not None:
            costs = self.policy.history.costs_kwh  # a view: no copy of the whole history
            fitted_from = float(costs[max(0, len(costs) - decision.fit.n_points)])
        return decision_summary(decision, fitted_from)

    def _stop_record(self) -> StopRecord | None:
        """The stop's summary fields and ``energy/not_run_*`` metrics (None: no stop).

        Drawn from the last decision; in a fit resumed after the stop (which decides nothing), as
        the checkpoint kept them (None from an older checkpoint).
        """
        decision = self.last_decision
        if self.stop_reason is None or decision is None:
            return None if self.stop_reason is None else self._restored_stop
        unit = "epochs" if self.last_place is None else self.last_place.unit
        kwh = float(self.policy.history.costs_kwh[-1])
        summary = stop_savings_fields(decision, unit=unit, kwh_at_stop=kwh, monitor=self.monitor)
        summary["stopping_policy"] = self._policy_summary(decision)
        metrics = {k: v for k, v in decision_metrics(decision, unit).items() if k in keys.NOT_RUN_KEYS}
        return StopRecord(summary, metrics)

    def state_dict(self) -> dict[str, Any]:
        """Lightning's EarlyStopping fields, the policy's history and plateau state, and the stop reason."""
        reason = None if self.stop_reason is None else self.stop_reason.value
        plan = None if self.stop_reason is None else self._stop_plan
        record = self._stop_record()
        if record is not None:  # plain data (NumPy scalars in a fit's numbers), as a safe checkpoint holds
            record = StopRecord(json_safe(record.summary), json_safe(record.metrics))
        state = StopperState(
            self.policy.state_dict(),
            reason,
            plan,
            self._check_inputs,
            pending_check=self._pending_check,
            stop_record=record,
        )
        return {**super().state_dict(), **to_state(state)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore so that the resumed run makes the decisions the uninterrupted one would."""
        ours = set(StopperState.__dataclass_fields__)
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in ours})
        # Lightning restores the saved ``patience``; the rule in force is this stopper's own.
        self.patience = self.config.patience
        state = from_state(StopperState, state_dict)
        if state.policy is not None:
            self.policy.load_state_dict(state.policy)
        self.stop_reason = None if state.stop_reason is None else StopReason(state.stop_reason)
        self._stop_plan = state.stop_plan
        self._stop_carried = None if self.stop_reason is None else "checkpoint"
        self._stop_config = (state.policy or {}).get("config")
        inputs = state.check_inputs
        known = inputs is not None and len(inputs) == len(self.policy.history)
        self._check_inputs = list(inputs) if known else None
        self._pending_check = state.pending_check
        self._restored_stop = state.stop_record if self.stop_reason is not None else None
        self._restored_check = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A fit that starts after this stopper stopped the run ends at once.

        The uninterrupted run ended there: a process killed after the stop (before it exited) and
        resumed from a checkpoint saved after it, or the same Trainer fit again, must not train
        another epoch; a resumed fit's loggers record the stop as the run's did
        (:meth:`_record_restored_stop`; those of the same Trainer have it already). Unless the
        stopper's arguments or the plan (``max_epochs``, ``max_steps``) changed since the stop: then
        the fit trains on and the next check decides anew.
        """
        self._training_ran = True
        carried, self._stop_carried = self._stop_carried, None
        if carried is None or self.stop_reason is None:
            return
        reason, epoch = self.stop_reason.value, self.stopped_epoch
        same_plan = self._stop_plan == [trainer.max_epochs, trainer.max_steps]
        restored = carried == "checkpoint"
        this_fit = "the resumed fit" if restored else "this fit"
        if self._stop_config == self.config.to_dict() and same_plan:
            trainer.should_stop = True
            when = "before the checkpoint was saved" if restored else "in an earlier fit of this Trainer"
            _compat.info(
                trainer,
                f"lightning_green: EnergyAwareEarlyStopping stopped this run at epoch {epoch} ({reason}) "
                f"{when}; {this_fit} ends there too. Change the stopper's arguments or max_epochs "
                "to train on.",
            )
            if restored and trainer.global_rank == 0 and _loggers.any_logger(trainer):
                self._record_restored_stop(trainer)
            return
        self.stop_reason, self._stop_plan, self.stopped_epoch = None, None, 0
        self._restored_stop = None
        self.stopping_reason = _compat.stopping_reason(trainer, "NOT_STOPPED")
        _compat.info(
            trainer,
            f"lightning_green: EnergyAwareEarlyStopping had stopped this run at epoch {epoch} ({reason}); "
            f"its arguments or the plan changed since, so {this_fit} trains on and decides anew.",
        )

    def _record_restored_stop(self, trainer: Trainer) -> None:
        """Record the stop a resumed fit ends at in its loggers, as the stop recorded it in the run's.

        The stop tags and the run parameters (plan and policy arguments) go to every logger: the
        same values again in a run resumed into its own MLflow run, and what a new log of the run
        (a new MLflow run, a new ``version_N`` folder) needs to agree with its summary. A new log
        also gets the run's epochs and the checks the stop was decided on, as every resumed fit's
        does (:meth:`earlier_records`, through the EnergyMonitor), for replay to make the same
        decision over it.
        """
        place = check_place(_compat.fit_position(trainer), None)
        self._log_params(trainer, place)
        _loggers.set_tags(
            trainer, {TAG_STOP_REASON: self.stop_reason.value, keys.TAG_STOPPED_EPOCH: self.stopped_epoch}
        )

    def earlier_records(self, trainer: Trainer, before_step: int) -> list[EarlierRecord]:
        """The checks of the run's earlier part as they were logged, for a new log of a resumed run.

        What each check of the restored history logged for replay
        (:func:`~lightning_green.stop_record.check_metrics`: its kWh, metric value, number, epochs
        completed, and the kWh outside the epochs and learning-rate hint where the checkpoint keeps
        them; with the last, a restored stop's ``energy/not_run_*_projected``), at the step it
        logged at
        (:func:`~lightning_green.training.check_progress.check_points`, from this fit's optimizer
        steps per epoch), below ``before_step`` (the first step this fit logs at). The EnergyMonitor
        writes them, with the run's epochs, into the logs that hold none of the run's series
        (:class:`~lightning_green.callbacks.energy_monitor.HistoryContributor`). A check at an
        epoch's end (checked at ``on_train_epoch_end``) also names its epoch: an autologged active
        MLflow run gets it at the epoch's number, as this fit's own checks
        (:meth:`~lightning_green.callbacks._loggers.ActiveMlflowRun.step_of`).
        """
        history = self.policy.history
        if not len(history):
            return []
        position = _compat.fit_position(trainer)
        place = check_place(position, None)
        per_epoch = position.epoch_steps_estimate  # of the epochs before, for a loader without a length
        epochs, steps = check_points(history.progress.tolist(), place, per_epoch, before_step)
        metrics = check_metrics(history, self._check_inputs, epochs)
        record = self._stop_record()  # a restored stop's, with the stopping check as the stop logged it
        if record is not None and metrics:
            metrics[-1].update(record.metrics)
        at_end = bool(self._check_on_train_epoch_end)
        return [
            (step, _epoch_ended(done) if at_end else None, row)
            for step, done, row in zip(steps, epochs, metrics, strict=True)
        ]

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Warn once when the checkpoint has no state for this stopper's ``state_key`` (monitor, mode)."""
        saved = checkpoint.get("callbacks", {})
        if self.state_key in saved:
            return
        others = [key for key in saved if key.startswith(f"{type(self).__name__}{{")]
        was = f" (the checkpoint has the state of {', '.join(others)})" if others else ""
        _compat.warn(
            trainer,
            f"lightning_green: no state of {self.state_key} in the checkpoint (epoch "
            f"{checkpoint.get('epoch', '?')}){was}: its history restarts here - patience, the "
            "learning-curve fit and the budget forecast start from the resumed epoch.",
        )


def _epoch_ended(epochs_done: float | None) -> int | None:
    """The epoch a check after ``epochs_done`` epochs ended (0-based), ``None`` for one inside an epoch.

    Example:
        >>> _epoch_ended(3.0), _epoch_ended(2.5), _epoch_ended(None)
        (2, None, None)
    """
    if epochs_done is None or not math.isfinite(epochs_done) or epochs_done < 1:
        return None
    return int(epochs_done) - 1 if float(epochs_done).is_integer() else None
