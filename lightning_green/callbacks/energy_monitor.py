"""EnergyMonitor: measure every epoch's energy and log it, with CO2 and gain per kWh, everywhere.

It only adapts Lightning's hooks to one :class:`~lightning_green.energy.session.EnergySession`:
starts it at setup, closes an epoch at each ``on_train_epoch_end`` and logs the record through
``LightningModule.log``. The other callbacks use the same session (:func:`session_for`); when the
fit ends (or fails) the monitor asks each for its summary fields (:class:`SummaryContributor`).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from lightning_green import keys
from lightning_green.callbacks import _compat, _loggers
from lightning_green.callbacks._compat import LightningModule, Trainer
from lightning_green.checks import as_plain, check_bool, check_choice, check_int, check_range
from lightning_green.energy.accounting import EnergyLedger, EpochEnergy, with_outside_epochs
from lightning_green.energy.carbon import resolve_carbon_intensity_g_per_kwh, validate_pue
from lightning_green.energy.estimate import resolve_cpu_power_per_core_w
from lightning_green.energy.selection import build_meter, validate_meter_spec
from lightning_green.energy.session import EnergySession, OpenEpoch, merge_sources
from lightning_green.report import error_text, format_summary, session_summary, write_report
from lightning_green.state import from_state, to_state
from lightning_green.training.check_progress import logged_steps
from lightning_green.training.windows import batch_samples, uncounted_batch_message


class MonitorNotLoggedError(RuntimeError):
    """The monitored metric was not logged; the message lists the metrics that were."""


def check_metric_loggable(trainer: Trainer, who: str, monitor: str | None, strict: bool, remedy: str) -> None:
    """Refuse, at fit setup, a monitored metric that the Trainer cannot log: ``Trainer(barebones=True)``.

    Barebones disables ``LightningModule.log``: a metric the model logs never reaches the
    Trainer's metrics, so a callback that reads it would fail only after a whole epoch, blaming
    the model. Strict: :class:`MonitorNotLoggedError` before any training; otherwise one warning
    (the callback works on without the metric).

    Args:
        trainer: The Trainer being set up.
        who: The callback as it was built, for the message (``EnergyMonitor(monitor='val_acc')``).
        monitor: The metric it reads (``None``: none, nothing to refuse).
        strict: Whether the callback requires the metric (its ``strict`` argument).
        remedy: What else the user can do, the last sentence of the message.

    Raises:
        MonitorNotLoggedError: Under ``barebones=True``, for a strict callback with a monitor.
    """
    if monitor is None or not getattr(trainer, "barebones", False):
        return
    message = (
        f"{who} cannot work with Trainer(barebones=True): barebones disables self.log "
        f"(LightningModule.log), so the monitored metric {monitor!r} is never logged, whatever the "
        f"model logs. Use a Trainer without barebones=True, or {remedy}"
    )
    if strict:
        raise MonitorNotLoggedError(message)
    _compat.warn(trainer, f"lightning_green: {message} (strict=False: it goes on without the metric).")


@runtime_checkable
class SummaryContributor(Protocol):
    """A callback that adds fields to the end-of-run summary (the stopper, the adaptive callbacks)."""

    def energy_summary_fields(self) -> dict[str, Any]:
        """The fields, as plain data (asked on every rank when the fit ends or fails)."""


@runtime_checkable
class FitEndContributor(Protocol):
    """A callback that records how the fit ended before the summary is pulled (the stopper).

    Lightning skips the training loop of a fit resumed from a checkpoint of a finished run (no
    ``on_train_start``/``on_train_end``): what those record is recorded at the fit's end, which the
    EnergyMonitor's ``on_fit_end`` may reach first (the callbacks' order).
    """

    def finish_fit(self, trainer: Trainer) -> None:
        """Record the fit's ending where its training hooks did not (every rank; idempotent)."""


EarlierRecord = tuple[int, int | None, dict[str, float]]
"""A record of a run's earlier part to copy into a new log of the run: ``(step, epoch, metrics)``
(``epoch``: the epoch they belong to, the step an autologged active MLflow run gets instead,
or ``None``; see
:func:`~lightning_green.callbacks._loggers.log_history`)."""


@runtime_checkable
class HistoryContributor(Protocol):
    """A callback whose records of the run (the stopper's checks) a new log of a resumed run gets too."""

    def earlier_records(self, trainer: Trainer, before_step: int) -> list[EarlierRecord]:
        """What it logged in the run's earlier part (from its checkpoint), at steps below ``before_step``."""


def _cuda_uuid(index: int) -> str | None:
    try:
        return str(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # older torch, or no CUDA: fall back to index mapping
        return None


@dataclass
class DeferredMetric:
    """A closed epoch's metric that the module logged after the close, read at checkpoint time."""

    value: float
    step: int  # where the epoch's end logged its series (its gain per kWh goes there after a resume)


@dataclass
class OpenCheck:
    """The validation an open epoch already ran when a checkpoint caught it.

    Lightning does not run it again after the resume, nor does it keep the metrics it logged: the
    resumed epoch's end takes its value from here.
    """

    epoch: int
    metric: float | None = None  # rank 0's value of the monitor it logged (None: it logged none)


@dataclass
class MonitorState:
    """What EnergyMonitor saves in checkpoints."""

    ledger: dict[str, Any]
    energy_source: str | None = None
    deferred_metric: DeferredMetric | None = None
    open_epoch: OpenEpoch | None = None
    monitor: str | None = None  # the metric the history's values are of (None in older checkpoints)
    mode: str | None = None
    fit_id: str | None = None  # the fit that saved it (EnergySession.fit_id)
    open_check: OpenCheck | None = (
        None  # the open epoch's validation before the save (None in older checkpoints)
    )


class EnergyMonitor(_compat.PicklesWithoutTheModule, _compat.WarnsWithoutState, *_compat.CALLBACK_BASES):
    r"""Measure the energy of every epoch and log it, with CO2 and the gain per kWh, to every logger.

    Logs each epoch, through ``LightningModule.log``, ``energy/epoch_kwh``, ``energy/total_kwh``
    (continued across resume), ``energy/avg_power_w``, ``energy/samples_per_j``,
    ``energy/co2_kg`` and ``energy/marginal_<monitor>_per_kwh`` (see :mod:`lightning_green.keys`),
    and the run parameter ``lightning_green.energy_source``. When the fit ends (or fails, marked
    ``failed``) a summary is printed on rank 0 and written as ``energy_summary.json`` and a plot
    in the logger's directory (and logged as MLflow artifacts).

    Args:
        meter: ``"auto"``, ``"nvml"``, ``"rapl"``, ``"estimate"`` or a ``+``-joined combination (an
            unavailable named source falls back to the estimate with one warning).
        monitor: A logged metric whose gain per kWh to log; None adopts an ``EarlyStopping``'s.
        mode: ``"min"`` if lower values of ``monitor`` are better, ``"max"`` if higher.
        strict: Raise when ``monitor`` is missing after an epoch that should have logged it.
        pue: Power usage effectiveness of the facility, >= 1.0; multiplies every measured joule.
        carbon_intensity_g_per_kwh: Grid carbon intensity in gCO2e/kWh; None uses ``region``, then
            ``LIGHTNING_GREEN_CARBON_INTENSITY``; with none, CO2 is not reported.
        region: A region code of :data:`lightning_green.energy.carbon.CARBON_INTENSITY_G_PER_KWH`.
        cpu_power_per_core_w: Watts per busy core for the estimate (None: the environment or 10 W).
        sampling_interval_s: Period of the NVML power sampler on GPUs without an energy counter.
        step_interval: Also log ``energy/step_j`` and ``energy/step_power_w`` every this many steps.
        prog_bar: Show ``energy/total_kwh`` on the progress bar.
        summary: Print and save the end-of-run summary.

    Example:
        >>> monitor = EnergyMonitor(monitor="val_acc", mode="max", pue=1.2, region="FR")
        >>> monitor.pue, monitor.carbon_intensity_g_per_kwh
        (1.2, 55.0)
    """

    display_name = "EnergyMonitor"

    def __init__(
        self,
        meter: str = "auto",
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        strict: bool = True,
        pue: float = 1.0,
        carbon_intensity_g_per_kwh: float | None = None,
        region: str | None = None,
        cpu_power_per_core_w: float | None = None,
        sampling_interval_s: float = 0.1,
        step_interval: int = 0,
        prog_bar: bool = True,
        summary: bool = True,
    ) -> None:
        super().__init__()
        self.meter = validate_meter_spec(meter)
        check_choice("mode", mode, ("min", "max"))
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"monitor must be a non-empty metric name or None, got {monitor!r}")
        sampling_interval_s = check_range(
            "sampling_interval_s",
            sampling_interval_s,
            0.0,
            60.0,
            low_open=True,
            high_open=False,
            what="seconds",
        )
        step_interval = check_int("step_interval", step_interval, 0)
        # Flags as plain bools (np.bool_ and bool tensors are accepted).
        self.strict = check_bool("strict", strict)
        self.pue = validate_pue(pue)
        self.carbon_intensity_g_per_kwh, self.carbon_intensity_origin = resolve_carbon_intensity_g_per_kwh(
            carbon_intensity_g_per_kwh, region
        )
        self.region = as_plain(region)  # checked above, even beside an explicit intensity
        self.cpu_power_per_core_w = (
            None if cpu_power_per_core_w is None else resolve_cpu_power_per_core_w(cpu_power_per_core_w)
        )
        if cpu_power_per_core_w is None:  # the environment's, read at fit start: a bad value is refused now
            resolve_cpu_power_per_core_w(None)
        self.sampling_interval_s = float(sampling_interval_s)
        self.step_interval = step_interval
        self.prog_bar = check_bool("prog_bar", prog_bar)
        self.summary = check_bool("summary", summary)
        monitor, mode = as_plain(monitor), as_plain(mode)
        self.session = EnergySession(self.pue, self.carbon_intensity_g_per_kwh, monitor, mode)
        self.implicit = False  # created by another lightning_green callback
        self._watch = (monitor, mode)  # as built: what a new run watches until told otherwise
        self._reported = False  # whether this fit's end (or failure) was reported
        # The Trainer whose Tuner search the session set aside energy of (its next fit books it)
        self._set_aside_for: weakref.ref[Trainer] | None = None
        self._starts_run = False  # this fit starts a run (a new Trainer; a checkpoint may resume one)
        self._new_run()

    def __getstate__(self) -> dict[str, Any]:
        """As :class:`~._compat.PicklesWithoutTheModule`, without the reference to a Trainer."""
        state = super().__getstate__()
        state["_set_aside_for"] = None
        return state

    def _new_run(self) -> None:
        """The state of a run that has not started: nothing measured, logged or reported yet."""
        self.last_summary: dict[str, Any] | None = None
        self.summary_path: Path | None = None
        self.plot_path: Path | None = None
        self._source_logged = False
        self._warned_missing = False
        self._warned_uncounted = False
        self._val_ran = False
        # Whether validation produces the monitored metric: then an epoch that did not validate has
        # no value of its own (``callback_metrics`` still holds the last validation's).
        self._monitor_from_validation = False
        self._monitor_before_validation: Any = None
        # (step its epoch's end logged at, validated, restored value) of an epoch awaiting its metric
        self._deferred: tuple[int, bool, float | None] | None = None
        self._epoch_open = False  # between on_train_epoch_start and the epoch's close
        # (step, value, epoch) of a marginal to log after a resume
        self._restored_marginal: tuple[int, float, int] | None = None
        self._metric_changed: tuple[str, str | None] | None = None  # a restored run's other metric
        self._carried_epoch: int | None = None  # the epoch a restored checkpoint caught open
        self._restored = False  # this fit continues a run from a checkpoint (until its epochs begin)
        self._open_check: OpenCheck | None = None  # the open epoch's validation (this fit's or restored)

    @property
    def state_key(self) -> str:
        """One EnergyMonitor per Trainer: the key does not depend on the arguments."""
        return "lightning_green.EnergyMonitor"

    @property
    def monitor(self) -> str | None:
        """The metric whose gain per kWh is logged."""
        return self.session.monitor

    @property
    def mode(self) -> Literal["min", "max"]:
        """The direction of :attr:`monitor`."""
        return self.session.mode

    @property
    def ledger(self) -> EnergyLedger:
        """The session's ledger: per-epoch records and totals."""
        return self.session.ledger

    @property
    def history(self) -> list[EpochEnergy]:
        """Epoch records of the run, resumes included."""
        return self.session.history

    @property
    def total_kwh(self) -> float:
        """Cumulative energy at the last closed epoch (or restored), in kWh."""
        return self.session.total_kwh

    @property
    def energy_source(self) -> str | None:
        """Every energy source the run's closed epochs used, ``+``-joined (``nvml+nvml-sampled``)."""
        return self.session.energy_source

    @classmethod
    def for_trainer(
        cls,
        trainer: Trainer,
        requester: Any | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
    ) -> EnergyMonitor:
        """The Trainer's EnergyMonitor, set up; one is added right after ``requester`` when there is none."""
        found = [cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor)]
        if found:
            return found[0]
        # The requester validates its own metric: the implicit monitor only logs its gain per kWh.
        created = cls(monitor=monitor, mode=mode, strict=False, summary=True)
        created.implicit = True
        index = len(trainer.callbacks)
        if requester is not None and requester in trainer.callbacks:
            index = trainer.callbacks.index(requester) + 1
        trainer.callbacks.insert(index, created)
        if trainer.lightning_module is not None:
            created.setup(trainer, trainer.lightning_module, "fit")
        return created

    @staticmethod
    def check_environment() -> None:
        """Refuse bad values of the environment variables an ``EnergyMonitor()`` of default arguments reads.

        ``LIGHTNING_GREEN_CARBON_INTENSITY`` and ``LIGHTNING_GREEN_CPU_POWER_PER_CORE_W``, with the
        messages ``EnergyMonitor()`` gives: for the constructors of the callbacks that add one at fit
        setup when the Trainer has none (:meth:`for_trainer`), so that a bad value is refused at
        construction - before a logger has started a run - as every bad argument is.

        Raises:
            ValueError: Naming the variable and the value set.
        """
        resolve_carbon_intensity_g_per_kwh(None, None)
        resolve_cpu_power_per_core_w(None)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Build the meters and start the session for fitting (idempotent).

        A fit that starts a new run (:func:`~._compat.starts_new_run`: a Trainer that has trained
        nothing, this callback reused from an earlier fit) starts from zero: the earlier run's
        energy is not added to the new run's total. A resumed run then continues the checkpoint's.
        """
        if stage != "fit" or self.session.running:
            return
        _loggers.begin_fit(trainer)
        self._starts_run = _compat.starts_new_run(trainer)
        if self._starts_run:
            # A Tuner's search on this Trainer before this fit (its own fit, which it leaves without
            # an end) belongs to this run: its energy counts before the first epoch.
            searched = self._set_aside_for is not None and self._set_aside_for() is trainer
            self.session.new_run(*self._watch, keep_set_aside=searched)
            self._new_run()
        self._set_aside_for = None
        self._reported = False
        self._restored = False  # until a checkpoint of an earlier fit is loaded
        monitors = [cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor)]
        if len(monitors) > 1:
            raise ValueError(
                f"The Trainer has {len(monitors)} EnergyMonitor callbacks; add one (it is shared by "
                "every lightning_green callback and logs for all of them)."
            )
        stoppers = _compat.early_stopping_callbacks(trainer)
        if self.monitor is None and stoppers:
            self.session.watch(stoppers[0].monitor, stoppers[0].mode)
        self._check_metric_loggable(trainer)
        device = trainer.strategy.root_device
        cuda_indices = [device.index or 0] if device.type == "cuda" else []
        # Local rank 0 reads the host for every local rank (without /proc, build_meter gives every
        # rank an estimate of its own process instead); the session sums the ranks' meters.
        host_reader = trainer.local_rank == 0
        root_pids = _compat.local_rank_pids(trainer)
        meter = build_meter(
            self.meter,
            cuda_indices=cuda_indices,
            host_reader=host_reader,
            cpu_power_per_core_w=self.cpu_power_per_core_w,
            root_pids=root_pids if host_reader else None,
            sampling_interval_s=self.sampling_interval_s,
            cuda_uuids=[_cuda_uuid(i) for i in cuda_indices],
        )
        self.session.start(meter, _compat.summing(trainer), rank0=trainer.global_rank == 0)
        _compat.handle_failures_in_worker(trainer, self)  # ddp_spawn: Lightning calls on_exception elsewhere

    def _check_metric_loggable(self, trainer: Trainer) -> None:
        """Refuse a monitor the Trainer cannot log (:func:`check_metric_loggable`), naming where it came from.

        Not for a monitor another lightning_green callback created: that callback says so itself.
        """
        if self.implicit or self.monitor is None:
            return
        who = f"EnergyMonitor(monitor={self.monitor!r})"
        remedy = "EnergyMonitor() without a monitor, to measure the energy alone."
        if self._watch[0] is None:  # adopted from an EarlyStopping callback
            who = f"EnergyMonitor() (watching the EarlyStopping callback's monitor {self.monitor!r})"
            remedy = "no EarlyStopping callback beside EnergyMonitor(), to measure the energy alone."
        check_metric_loggable(trainer, who, self.monitor, self.strict, remedy)

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep the untrained model's metric as the baseline of the first epoch's gain."""
        ledger = self.session.ledger
        if self.monitor is None or ledger.history or ledger.baseline_metric is not None:
            return
        value = self._read_metric(trainer)
        ledger.baseline_metric = value if value is not None and math.isfinite(value) else None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the fit's epochs here when its first epoch was restored mid-way (collective, once a fit).

        Lightning does not call ``on_train_epoch_start`` for an epoch a checkpoint caught open: the
        resumed fit's own setup stays outside the epochs, as an uninterrupted run's does.
        """
        self._begin_epochs(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count samples; every ``step_interval`` steps log the energy per step."""
        samples = batch_samples(batch)
        if samples is None and not self._warned_uncounted:
            self._warned_uncounted = True
            _compat.warn(trainer, uncounted_batch_message(batch))
        self.session.add_samples(samples or 0)
        if self.step_interval and self.session.running:
            step = trainer.global_step
            if step % self.step_interval == 0 and step != self.session.step_mark:  # once per optimizer step
                self._log_step_energy(trainer)

    def _log_step_energy(self, trainer: Trainer) -> None:
        step_j, power_w = self.session.step_energy(trainer.global_step)
        metrics = {keys.STEP_J: step_j, keys.STEP_POWER_W: power_w}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        # Straight to the loggers: self.log would follow Trainer(log_every_n_steps), not step_interval.
        # At the step Lightning logs these batches' own step metrics at (one below global_step here).
        if metrics and trainer.global_rank == 0 and _loggers.any_logger(trainer):
            _loggers.log_metrics(trainer, metrics, step=_compat.logging_step(trainer))

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Remember the monitored metric's value object, to tell whether validation makes it."""
        if not trainer.sanity_checking:  # a validation a resume left pending at its epoch's end
            self._begin_epochs(trainer)
        if self.monitor is not None:
            self._monitor_before_validation = trainer.callback_metrics.get(self.monitor)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Note that this epoch validated, and whether validation logged the monitored metric.

        A missing validation metric is then an error. Lightning puts a new value object in
        ``callback_metrics`` for every metric a validation logs, and leaves the others.
        """
        if self.monitor is not None:
            value = trainer.callback_metrics.get(self.monitor)
            fresh = value is not None and value is not self._monitor_before_validation
            if fresh:
                self._monitor_from_validation = True
            self._monitor_before_validation = None
            if not trainer.sanity_checking and self.session.running:
                metric = float(value) if fresh else None  # type: ignore[arg-type]
                self._open_check = OpenCheck(int(trainer.current_epoch), metric)
            position = _compat.fit_position(trainer) if self.session.running else None
            if not trainer.sanity_checking and position is not None and not position.epoch_done:
                # A validation inside the epoch (val_check_interval < 1): its value and the energy
                # up to it, since the best of several an epoch need not be the epoch's last (which
                # the epoch's record holds). A collective read, on every rank alike.
                total_j = self.session.total_j_now(at=_compat.check_moment(position))
                if fresh:
                    self.session.ledger.note_check(position.current_epoch, float(value), total_j)
        if not trainer.sanity_checking and self.session.running:  # a fit's, not trainer.validate()'s
            self._val_ran = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Mark where the first ``step_interval`` is measured from; warn of a changed metric or a used run.

        The warning of a changed metric comes once when the restored run watched another metric
        (its values were dropped); not for a monitor a stopper created, whose own warning says its
        history restarts. A fit that starts a new run (no checkpoint resumed) into an MLflow run
        that holds an earlier fit's energy series gets a warning naming it
        (:meth:`_warn_used_runs`).
        """
        if self.step_interval and self.session.running:  # collective: every rank is here
            self.session.step_energy(trainer.global_step)  # so the first due step logs a value
        starts, self._starts_run = self._starts_run, False
        if starts and not self._restored and trainer.global_rank == 0 and self.session.running:
            self._warn_used_runs(trainer)
        if self._metric_changed is not None:
            (before, before_mode), self._metric_changed = self._metric_changed, None
            if self.implicit:
                return
            _compat.warn(
                trainer,
                f"lightning_green: the checkpoint's energy history watched {before!r} (mode "
                f"{before_mode!r}), this run watches {self.monitor!r} (mode {self.mode!r}): the energy "
                f"continues, but the metric history, its best and its gain per kWh restart here.",
            )

    def _warn_used_runs(self, trainer: Trainer) -> None:
        """Warn (rank 0) for each MLflow run of a new run's fit that an earlier fit logged energy to.

        The two fits' series interleave at the same steps and replay and report read the later
        values of each step: the earlier fit is lost from view, without a word otherwise.
        """
        for run_id in _loggers.mlflow_runs_with_energy(trainer):
            _compat.warn(
                trainer,
                f"lightning_green: MLflow run {run_id} already holds lightning_green energy series "
                f"({keys.TOTAL_KWH}, {keys.CHECK_KWH}) from an earlier fit, and this fit starts a new "
                "run (no checkpoint resumed): its series will interleave with the earlier fit's at the "
                "same steps, its energy_summary.json and energy/run_kwh will be this fit's, and "
                "`lightning-green replay` and `report` will read only the latest fit. Log to a new "
                "MLflow run (MLFlowLogger without run_id), or resume the earlier fit with "
                "trainer.fit(..., ckpt_path=...) to continue it.",
            )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the fit's epochs at its first (collective); pick up the previous epoch's deferred metric.

        What the fit used before its first epoch - setup, the sanity check, a ``BatchSizeFinder``
        or ``LearningRateFinder`` searching in ``on_fit_start`` - is counted in the run's total but
        in no epoch (:meth:`EnergySession.begin_epochs`). The deferred metric is fresh in
        ``callback_metrics`` now.
        """
        self._begin_epochs(trainer)
        self._epoch_open = True
        self._resolve_deferred_metric(trainer)

    def _begin_epochs(self, trainer: Trainer) -> None:
        """Start this fit's epochs at the first point of training every rank reaches (collective, once a fit).

        That is ``on_train_epoch_start`` of the fit's first epoch; a fit resumed inside an epoch
        (or at its end) gets no such call for it, so the first training batch, validation or epoch
        end of the fit starts them instead (later calls do nothing).

        A fit resumed from a checkpoint first gives a new log of the run what the run's earlier
        part logged (:meth:`_log_earlier_part`, rank 0), before the energy of its first epoch is
        counted from.

        A checkpoint saved at an epoch's last batch, before the epoch closed, resumes at the next
        epoch: Lightning ends the caught epoch with no hook. Its energy is closed as its own record
        here (no metric: its validation did not run), not added to the next epoch; when that epoch
        would have validated at its end, a warning names it (:meth:`_warn_skipped_validation`).
        """
        if not self.session.running:
            self._carried_epoch = None
            return
        carried, self._carried_epoch = self._carried_epoch, None
        closes_carried = carried is not None and int(trainer.current_epoch) > carried
        if self._restored and not self.session.epochs_begun:
            self._restored = False
            if trainer.global_rank == 0 and _loggers.any_logger(trainer):
                self._log_earlier_part(trainer, closes_carried)
        self.session.begin_epochs()
        if closes_carried:
            record, _ = self.session.close_epoch(carried, None)
            self._log_closed_elsewhere(trainer, record)
            self._warn_skipped_validation(trainer, carried)

    def _warn_skipped_validation(self, trainer: Trainer, epoch: int) -> None:
        """Warn (rank 0) that Lightning's restart skipped the end-of-epoch validation of ``epoch``."""
        every = getattr(trainer, "check_val_every_n_epoch", 1)
        if not getattr(trainer, "enable_validation", False) or every is None or (epoch + 1) % every:
            return
        _compat.warn(
            trainer,
            f"lightning_green: the checkpoint was saved at the last batch of epoch {epoch}, before its "
            f"validation, and Lightning's restart does not run that validation: epoch {epoch} has no "
            "metric and no check of its own (EnergyAwareEarlyStopping, EarlyStopping, a monitoring "
            "ModelCheckpoint), so decisions can differ from the uninterrupted run's by that check (a "
            "stop one epoch later). Checkpoints saved at validation or epoch end resume without this gap.",
        )

    def _log_earlier_part(self, trainer: Trainer, closes_carried: bool) -> None:
        """Give a new log of a resumed run what the run logged before its checkpoint (rank 0).

        Logs that hold none of the run's series (:func:`~._loggers.runs_without_energy`: a new
        MLflow run, a new ``CSVLogger`` or ``TensorBoardLogger`` folder) get every epoch's series
        (:meth:`_earlier_epoch_rows`) and the records of every :class:`HistoryContributor` (the
        stopper's checks), below the first step this fit logs at (one lower when it closes an epoch
        the checkpoint caught open), so the log holds the whole run. A log that holds them (the
        run's own MLflow run, ``run_id``) gets nothing twice.
        """
        first_step = min(_compat.logging_step(trainer), int(trainer.global_step))
        before = first_step - 1 if closes_carried else first_step
        rows = self._earlier_epoch_rows(_compat.fit_position(trainer).steps_per_epoch, before)
        for callback in trainer.callbacks:
            if callback is not self and isinstance(callback, HistoryContributor):
                rows.extend(callback.earlier_records(trainer, before))
        if not rows:
            return
        new_logs = _loggers.runs_without_energy(trainer)
        if new_logs:
            _loggers.log_history(new_logs, rows)

    def _earlier_epoch_rows(self, steps_per_epoch: int | None, before: int) -> list[EarlierRecord]:
        """The series every restored epoch logged: energy, ``energy/total_kwh``, the metric and its gain.

        At the step the epoch's end logged at when every epoch has ``steps_per_epoch`` optimizer
        steps (below ``before``; at the epoch's number in an autologged active MLflow run, where
        autolog logs the epochs of this fit). A gain per kWh the restore logs itself (the checkpoint's
        deferred metric) is left to it.
        """
        history, per_epoch = self.session.history, steps_per_epoch
        done = [None if per_epoch is None else float((r.epoch + 1) * per_epoch) for r in history]
        restored_gain = None if self._restored_marginal is None else self._restored_marginal[2]
        rows: list[EarlierRecord] = []
        for record, step in zip(history, logged_steps(done, before), strict=True):
            metrics = {
                **self._epoch_metrics(record),
                keys.TOTAL_KWH: record.total_kwh,
                "epoch": float(record.epoch),
            }
            if self.monitor is not None:
                if record.metric is not None:
                    metrics[self.monitor] = record.metric
                if record.epoch == restored_gain:
                    metrics.pop(keys.marginal_key(self.monitor), None)
            rows.append((step, record.epoch, metrics))
        return rows

    def _epoch_metrics(self, record: EpochEnergy) -> dict[str, float]:
        """What an epoch's record logs, but ``energy/total_kwh``."""
        metrics: dict[str, float] = {
            keys.EPOCH_KWH: record.energy_kwh,
            keys.AVG_POWER_W: record.avg_power_w,
            keys.SAMPLES_PER_J: record.samples_per_j,
        }
        if record.co2_kg is not None:
            metrics[keys.CO2_KG] = record.co2_kg
        if self.monitor is not None and record.marginal_per_kwh is not None:
            metrics[keys.marginal_key(self.monitor)] = record.marginal_per_kwh
        return metrics

    def _log_closed_elsewhere(self, trainer: Trainer, record: EpochEnergy) -> None:
        """Log an epoch closed outside its ``on_train_epoch_end`` straight to the loggers (rank 0)."""
        metrics = {**self._epoch_metrics(record), keys.TOTAL_KWH: record.total_kwh}
        if trainer.global_rank == 0 and _loggers.any_logger(trainer):
            # At the step Lightning logged the caught epoch's last batches at.
            step = max(0, int(trainer.global_step) - 1)
            _loggers.log_metrics(trainer, metrics, step=step, epoch=record.epoch)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Pick up a deferred metric of the last epoch before the summary; end a fit that trained no epoch.

        A fit whose training loop ended before its first epoch (resumed from a checkpoint saved
        after the stopper stopped the run, which ends it at the start) used what it measured until
        now on its setup and sanity check: that counts before the first epoch, as every fit's setup
        does (collective), and only what follows (the end of the fit) after the last. Its loggers
        get the run parameters the first epoch logged (energy source, PUE, monitor), and a new log
        of the run the run's epochs (:meth:`_log_earlier_part`).
        """
        self._resolve_deferred_metric(trainer)
        self._end_without_epochs(trainer)

    def _end_without_epochs(self, trainer: Trainer) -> None:
        """Book what a fit that began no epoch measured so far before the first epoch (collective).

        From :meth:`on_train_end`, and from :meth:`on_fit_end` for a fit whose training loop
        Lightning skipped (``max_epochs`` already reached: no ``on_train_start``/``on_train_end``).
        """
        if self.session.running and not self.session.epochs_begun:
            history = self.session.history
            if (
                trainer.global_rank == 0
                and history
                and not self._source_logged
                and _loggers.any_logger(trainer)
            ):
                self._log_params(trainer, history[0])
            self._begin_epochs(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the epoch (every rank: a collective) and log it.

        Plain callbacks run before the module's and EarlyStopping's epoch-end hooks: a metric the module
        logs in its own ``on_train_epoch_end`` is read later (deferred); the stopper finds the epoch closed.
        """
        if not self.session.running:
            return
        self._begin_epochs(trainer)  # an epoch restored at its end: no batch or validation began the epochs
        defer = self.monitor is not None and _compat.is_overridden("on_train_epoch_end", pl_module)
        # A validation this epoch ran before the checkpoint it was restored from: Lightning does not
        # run it again, nor keep what it logged; its value comes with the checkpoint.
        check, self._open_check = self._open_check, None
        if check is not None and check.epoch != int(trainer.current_epoch):
            check = None
        restored = None if check is None else check.metric
        val_ran = self._val_ran or check is not None
        metric = None if defer else self._epoch_metric(trainer, val_ran, restored)
        record, fields = self.session.close_epoch(
            trainer.current_epoch, metric, rank0={"validated": float(val_ran)}
        )
        self._epoch_open = False
        validated = bool(fields["validated"])
        self._val_ran = False
        if self.monitor is not None and not fields["metric_logged"] and not defer:
            self._missing_monitor(trainer, validated)
        self._log_epoch(trainer, pl_module, record)
        # Its gain per kWh then goes where Lightning logs the epoch's end (one step below the
        # counter now), beside the epoch's other series, whether the module overrides the hook or not.
        step = max(0, _compat.logging_step(trainer) - 1)
        self._deferred = (step, validated, restored) if defer else None

    def _resolve_deferred_metric(self, trainer: Trainer) -> None:
        if self._restored_marginal is not None:
            step, marginal, epoch = self._restored_marginal
            self._restored_marginal = None
            if trainer.global_rank == 0 and _loggers.any_logger(trainer):
                _loggers.log_metrics(
                    trainer, {keys.marginal_key(self.monitor): marginal}, step=step, epoch=epoch
                )
        if self._deferred is None or not self.session.running:
            return
        step, validated, restored = self._deferred
        self._deferred = None
        record = self.session.attach_metric(self._epoch_metric(trainer, validated, restored))
        if record is None:
            self._missing_monitor(trainer, validated)
        elif (
            record.marginal_per_kwh is not None and trainer.global_rank == 0 and _loggers.any_logger(trainer)
        ):
            _loggers.log_metrics(
                trainer,
                {keys.marginal_key(self.monitor): record.marginal_per_kwh},
                step=step,
                epoch=record.epoch,
            )

    def _read_metric(self, trainer: Trainer, *, validated: bool = True) -> float | None:
        """The monitored metric now; None when there is none, or when it is stale.

        Stale: it comes from validation and the epoch did not validate (the value would be the
        last validation's, not this epoch's).
        """
        if self.monitor is None or (self._monitor_from_validation and not validated):
            return None
        value = trainer.callback_metrics.get(self.monitor)
        return None if value is None else float(value)

    def _epoch_metric(self, trainer: Trainer, validated: bool, restored: float | None) -> float | None:
        """The epoch's metric (:meth:`_read_metric`), or ``restored`` when the fit has none of its own.

        ``restored``: the value the epoch's validation logged before the checkpoint the fit resumed from.
        """
        value = self._read_metric(trainer, validated=validated)
        return restored if value is None and validated else value

    def _missing_monitor(self, trainer: Trainer, val_ran: bool) -> None:
        # A metric may legitimately be absent after an epoch that did not validate (validation
        # every n epochs); after one that did, or when there is no validation at all, it is missing.
        if not val_ran and getattr(trainer, "enable_validation", False):
            return
        logged = sorted(k for k in trainer.callback_metrics if not k.startswith("energy/"))
        message = (
            f"EnergyMonitor(monitor={self.monitor!r}) could not find the metric {self.monitor!r} "
            f"in the logged metrics: {logged or 'none'}. Log it with self.log({self.monitor!r}, ...) "
            "or set monitor to one of these"
        )
        if self.strict:
            raise MonitorNotLoggedError(message + ".")
        if not self._warned_missing and not self.implicit:
            self._warned_missing = True
            _compat.warn(trainer, message + "; its gain per kWh is not logged (strict=False).")

    def _log_epoch(self, trainer: Trainer, pl_module: LightningModule, record: EpochEnergy) -> None:
        metrics = self._epoch_metrics(record)
        to_loggers = bool(trainer.loggers)
        # add_dataloader_idx=False: a monitor such as "val_loss/dataloader_idx_1" names the marginal key.
        # The record is the same on every rank (summed across them): sync_dist spares DDP runs
        # Lightning's warning for each key, and reduces with max, which keeps equal values exact (a
        # mean of three equal float64 values can differ from them in the last digit).
        options = dict(
            on_step=False,
            on_epoch=True,
            logger=to_loggers,
            add_dataloader_idx=False,
            sync_dist=True,
            reduce_fx="max",
        )
        # As float64 tensors: Lightning logs plain floats as float32 (7 digits of a kWh).
        exact = _compat.exact_values(trainer, {**metrics, keys.TOTAL_KWH: record.total_kwh})
        total = exact.pop(keys.TOTAL_KWH)
        pl_module.log_dict(exact, prog_bar=False, **options)
        pl_module.log(keys.TOTAL_KWH, total, prog_bar=self.prog_bar, **options)
        if trainer.global_rank == 0 and not _loggers.autologged(trainer):
            # An MLflow run active without MLFlowLogger or autolog: the epoch's energy goes there too.
            _loggers.log_to_active_run(trainer, {**metrics, keys.TOTAL_KWH: record.total_kwh})
        if trainer.global_rank == 0 and not self._source_logged:
            self._log_params(trainer, record)

    def _log_params(self, trainer: Trainer, record: EpochEnergy) -> None:
        """Log the run parameters: the energy source of ``record`` (the first epoch), PUE, monitor."""
        self._source_logged = True
        params: dict[str, Any] = {keys.PARAM_ENERGY_SOURCE: record.source, keys.PARAM_PUE: self.pue}
        if self.monitor is not None:
            params[keys.PARAM_MONITOR] = self.monitor
            params[keys.PARAM_MODE] = self.mode
        if self.carbon_intensity_g_per_kwh is not None:
            params[keys.PARAM_CARBON_INTENSITY] = self.carbon_intensity_g_per_kwh
        _loggers.log_params(trainer, params)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take the final reading (every rank: a collective) and write the summary.

        A fit that trained no epoch and whose training loop Lightning skipped (``max_epochs``
        already reached) gets no ``on_train_end``: its setup and sanity check are booked before the
        first epoch here, as :meth:`on_train_end` would, and each :class:`FitEndContributor` records
        how the fit ended before the summary asks for its fields.
        """
        for callback in trainer.callbacks:  # how the fit ended, before the summary asks (their order aside)
            if callback is not self and isinstance(callback, FitEndContributor):
                callback.finish_fit(trainer)
        self._end_without_epochs(trainer)
        if self.session.running:
            reading, _ = self.session.read()
            self._report(trainer, reading.energy_j, reading.faults, reading.source, failure=None)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Write the summary of what was measured, marked failed, and stop the meters.

        No collective: under DDP the other ranks may not be here, so it counts up to the last
        reading the ranks took together (an epoch's end, a window, a step or a check inside the
        epoch), with the faults it saw.
        When the fit failed because the MLflow tracking server stopped answering, nothing more is
        sent to it (each call would wait out MLflow's retries); the reports are written locally.
        A monitor whose session does not run (never set up for a fit in this process: the launching
        process of ``ddp_spawn`` workers, whose worker reported the failure already) touches no
        logger: asked for its run or folder there, a logger would start a new one.
        """
        if self.session.running:
            if trainer.global_rank == 0 and _loggers.mlflow_unreachable(exception):
                for logger in _loggers.mlflow_loggers(trainer):
                    _loggers.give_up_on(logger, exception)
            if int(trainer.world_size) <= 1:
                reading, _ = self.session.read()
                self._report(trainer, reading.energy_j, reading.faults, reading.source, failure=exception)
            else:  # the last reading all ranks took together (a window, a step, a check), if any
                last = self.session.last_reading
                if last is not None:
                    self._report(trainer, last.energy_j, last.faults, last.source, failure=exception)
                else:
                    self._report(trainer, 0.0, 0, self.session.energy_source or "estimate", failure=exception)
        self.session.stop()

    def _report(
        self, trainer: Trainer, measured_j: float, faults: int, source: str, failure: BaseException | None
    ) -> None:
        extra: dict[str, Any] = {"carbon_intensity_origin": self.carbon_intensity_origin}
        for callback in trainer.callbacks:
            if callback is not self and isinstance(callback, SummaryContributor):
                extra.update(callback.energy_summary_fields())
        if failure is not None:
            extra.update(failed=True, error=error_text(failure))
        self._reported = True
        source = merge_sources(self.session.energy_source, source) or source  # the whole run's
        self.last_summary = session_summary(self.session, measured_j, faults, source, extra)
        self.session.ledger.close_fit(measured_j, faults)  # a later fit of this run continues after it
        if trainer.global_rank != 0:
            return
        summary = self.last_summary
        what = "the energy report"

        def write(folder: Path) -> tuple[Path, Path | None]:
            return write_report(summary, folder)

        written: tuple[Path, Path | None] | None = None
        if self.summary:  # locally first: a logger whose server is gone may keep a call waiting
            _compat.info(trainer, format_summary(summary))
            # Into every logger's folder: one that cannot be written warns and loses its copy only.
            written = _loggers.write_in_output_dirs(trainer, write, what)
            self.summary_path, self.plot_path = (None, None) if written is None else written
        partial = str(summary["partial"]).lower()
        _loggers.set_tags(trainer, {keys.TAG_PARTIAL: partial, keys.PARAM_ENERGY_SOURCE: source})
        run_metrics = {
            keys.RUN_KWH: summary["total_kwh"],
            keys.RUN_CO2_KG: summary["co2_kg"],
            keys.RUN_BEFORE_EPOCHS_KWH: summary.get("kwh_before_first_epoch"),
        }
        run_metrics = {k: float(v) for k, v in run_metrics.items() if v is not None}
        _loggers.log_metrics(trainer, run_metrics, step=_compat.logging_step(trainer))
        if not self.summary:
            return
        # From the folder that took them, else a temporary one: MLflow gets them either way.
        _loggers.log_written(trainer, written, write, what)
        if written is not None and self.plot_path is None:
            _compat.info(
                trainer,
                "lightning_green: matplotlib is not installed, so no energy plot was drawn "
                "(pip install 'lightning_green[plot]').",
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Stop the meters (their threads and library handles).

        A fit that ends with neither ``on_fit_end`` nor ``on_exception`` is a ``Tuner`` search
        (``Tuner.scale_batch_size``, ``Tuner.lr_find``: Lightning leaves their fit as soon as the
        search is done): what it measured is kept for the Trainer's next fit, which counts it
        before its first epoch (a collective, as the search ran on every rank).
        """
        if stage != "fit":
            return
        if self.session.running and not self._reported and self.session.set_aside() is not None:
            self._set_aside_for = weakref.ref(trainer)
        self.session.stop()

    def state_dict(self) -> dict[str, Any]:
        """Energy totals and history, so a resumed run continues the series."""
        session = self.session
        return to_state(
            MonitorState(
                **session.state_dict(), monitor=session.monitor, mode=session.mode, fit_id=session.fit_id
            )
        )

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the epoch in progress (and a metric logged after its close) in the checkpoint (collective)."""
        saved = checkpoint.get("callbacks", {}).get(self.state_key)
        if saved is None or not self.session.running:
            return
        state = from_state(MonitorState, saved)
        if self._deferred is not None and self.session.last_epoch is not None:
            # Saved after the module's on_train_epoch_end (checkpoint callbacks run last): the
            # metric the closed epoch waits for is fresh now; keep it, or a resume would lose it.
            metric = self._epoch_metric(trainer, self._deferred[1], self._deferred[2])
            if metric is not None and math.isfinite(metric):
                state.deferred_metric = DeferredMetric(metric, self._deferred[0])
        open_epoch, setup = self.session.open_parts()
        if setup is not None:
            # Saved before this fit's first epoch began (a finder's checkpoint before its search, a
            # save in on_train_start): what was measured so far is the fit's setup, in no epoch;
            # a resume must not add it to its first epoch.
            state.ledger = with_outside_epochs(
                state.ledger, setup.energy_j, setup.co2_kg, before_epochs=True, partial=setup.partial
            )
            state.energy_source = merge_sources(state.energy_source, setup.source)
        last = self.session.last_epoch
        if not self._epoch_open and last is not None and int(trainer.current_epoch) > last.epoch:
            # Saved after the fit's last epoch (on_train_end): end-of-fit work, in no epoch, as the
            # summary books it; a resume must not add it to its next epoch.
            state.ledger = with_outside_epochs(
                state.ledger, open_epoch.energy_j, open_epoch.co2_kg, partial=open_epoch.partial
            )
            state.energy_source = merge_sources(state.energy_source, open_epoch.source)
        else:
            # The epoch in progress is the current one until it closes; after its close (a save in
            # the epoch-end hooks) what follows is the next epoch's, whichever that will be.
            current = int(trainer.current_epoch)
            caught = current if last is None or last.epoch < current else None
            state.open_epoch = replace(open_epoch, epoch=caught)
            check = self._open_check
            if caught is not None and check is not None and check.epoch == caught:
                state.open_check = check  # its validation ran: a resume does not run it again
        saved.update(to_state(state))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a checkpoint: later epochs add to the restored total.

        A checkpoint this very fit saved and restores while it measures (Lightning's
        ``BatchSizeFinder`` and ``LearningRateFinder`` save one before their search and restore it
        after) changes nothing: the live measurement already holds what it holds, and the search's
        energy besides; restored, the energy measured before the save would count twice.
        """
        state = from_state(MonitorState, state_dict)
        if state.fit_id is not None and self.session.running and state.fit_id == self.session.fit_id:
            return
        self._restored = True
        self.session.load_state_dict({"ledger": state.ledger, "energy_source": state.energy_source})
        deferred, ledger = state.deferred_metric, self.session.ledger
        watched = (self.session.monitor, self.session.mode)
        if state.monitor is not None and (state.monitor, state.mode) != watched:
            # The run was watching another metric (or direction): its values must not be taken
            # for this one's (a gain per kWh from val_acc to val_loss). The energy continues.
            ledger.forget_metric()
            deferred = None
            self._metric_changed = (state.monitor, state.mode)
        if deferred is not None and ledger.history:
            record = ledger.attach_metric(deferred.value)
            if record.marginal_per_kwh is not None and self.monitor is not None:
                self._restored_marginal = (deferred.step, record.marginal_per_kwh, record.epoch)
        if state.open_epoch is not None:
            self.session.carry(state.open_epoch)
            self._carried_epoch = state.open_epoch.epoch
            check = state.open_check
            if check is not None and self._metric_changed is not None:
                check = OpenCheck(check.epoch, None)  # validated, but of the other metric
            self._open_check = check

    def missing_state_note(self) -> str:
        """What restarts when a resumed checkpoint holds no EnergyMonitor state: the energy, from 0."""
        return (
            "energy/total_kwh and the energy history restart from 0 here; the energy of the run "
            "before the checkpoint is not counted."
        )


def session_for(
    trainer: Trainer,
    requester: Any | None = None,
    monitor: str | None = None,
    mode: Literal["min", "max"] = "min",
) -> EnergySession:
    """The Trainer's measurement session (its EnergyMonitor's; one is added after ``requester`` if none)."""
    return EnergyMonitor.for_trainer(trainer, requester, monitor, mode).session
