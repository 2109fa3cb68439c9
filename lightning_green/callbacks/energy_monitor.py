"""EnergyMonitor: measure every epoch's energy and log it, with CO2 and gain per kWh, everywhere.

The callback is a thin adapter: it reads the meters at epoch boundaries, sums the figures of
every DDP rank, hands them to :class:`~lightning_green.energy.accounting.EnergyLedger` and logs
what comes back through ``LightningModule.log`` (so every attached logger, the progress bar and
``trainer.callback_metrics`` see it). The other lightning_green callbacks share its measurement:
:meth:`EnergyMonitor.for_trainer` finds the Trainer's monitor or adds one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_green import keys
from lightning_green.callbacks import _compat, _loggers
from lightning_green.callbacks._compat import LightningModule, Trainer
from lightning_green.callbacks._distributed import local_rank_pids, sum_across_ranks
from lightning_green.energy.accounting import EnergyLedger, EpochEnergy
from lightning_green.energy.carbon import resolve_carbon_intensity_g_per_kwh, validate_pue
from lightning_green.energy.estimate import resolve_cpu_power_per_core_w
from lightning_green.energy.meter import EnergyMeter
from lightning_green.energy.selection import build_meter, validate_meter_spec
from lightning_green.energy.units import j_to_kwh
from lightning_green.keys import PARAM_ENERGY_SOURCE, marginal_key
from lightning_green.policy._util import check_bools
from lightning_green.report import (
    PLOT_FILENAME,
    SUMMARY_FILENAME,
    build_summary,
    format_summary,
    plot_summary,
    write_summary_json,
)

SOURCES: tuple[str, ...] = ("nvml", "nvml-sampled", "rapl", "estimate")
"""Energy source labels, in the order they are joined."""


class MonitorNotLoggedError(RuntimeError):
    """The monitored metric was not logged; the message lists the metrics that were."""


def count_samples(batch: Any) -> int:
    """Samples in a training batch: the first dimension of its first tensor (0 when unknown).

    The common shapes (a tensor, or a list/tuple whose first item is one) take a fast path;
    anything else goes through Lightning's ``extract_batch_size``.

    Example:
        >>> import torch
        >>> count_samples((torch.zeros(32, 3), torch.zeros(32))), count_samples({"x": torch.zeros(8, 2)})
        (32, 8)
    """
    first = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
    if isinstance(first, torch.Tensor) and first.ndim:
        return int(first.shape[0])
    try:
        return _compat.extract_batch_size(batch)
    except Exception:  # a batch of unknown structure counts nothing
        return 0


def _cuda_uuid(index: int) -> str | None:
    """Torch's UUID of a CUDA device (``GPU-...`` without the prefix), None when unavailable."""
    try:
        return str(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # older torch, or no CUDA: fall back to index mapping
        return None


def _source_label(flags: list[float]) -> str:
    parts = [name for name, flag in zip(SOURCES, flags, strict=True) if flag > 0]
    return "+".join(parts) if parts else "estimate"


def _source_flags(label: str | None) -> list[float]:
    parts = set(label.split("+")) if label else set()
    return [1.0 if name in parts else 0.0 for name in SOURCES]


class EnergyMonitor(*_compat.CALLBACK_BASES):
    r"""Measure the energy of every epoch and log it, with CO2 and the gain per kWh, to every logger.

    Logged each epoch (on ``on_train_epoch_end``, through ``LightningModule.log``):
    ``energy/epoch_kwh`` (train + validation, all ranks and devices, times ``pue``),
    ``energy/total_kwh`` (cumulative, continued across resume; also on the progress bar),
    ``energy/avg_power_w``, ``energy/samples_per_j``, ``energy/co2_kg`` (when a carbon
    intensity is known) and, with ``monitor`` set, ``energy/marginal_<monitor>_per_kwh``: the
    change of the metric over the epoch divided by the epoch's kWh, positive when it improved.
    The run parameter ``lightning_green.energy_source`` says where the figures came from
    (``nvml``, ``nvml-sampled``, ``rapl``, ``estimate`` or a ``+``-joined combination). At the
    end of fit a summary is printed on rank 0 and written as ``energy_summary.json`` in the
    logger's directory (and logged as an MLflow artifact).

    Args:
        meter: ``"auto"``, ``"nvml"``, ``"rapl"``, ``"estimate"`` or a ``+``-joined combination.
            ``auto`` measures GPUs through NVML and the host through RAPL, and estimates from
            CPU time where nothing can be measured. A named source that is unavailable falls
            back to the estimate with one warning.
        monitor: A logged metric whose gain per kWh to log, e.g. ``"val_acc"``. None adopts the
            monitor of an ``EarlyStopping`` callback of the Trainer, if any.
        mode: ``"min"`` if lower values of ``monitor`` are better, ``"max"`` if higher.
        strict: Raise when ``monitor`` is not among the logged metrics at the end of an epoch
            in which it should have been (like ``EarlyStopping(strict=True)``); else warn once.
        pue: Power usage effectiveness of the facility, >= 1.0; multiplies every measured joule.
        carbon_intensity_g_per_kwh: Grid carbon intensity in gCO2e/kWh. None uses ``region``,
            then the ``LIGHTNING_GREEN_CARBON_INTENSITY`` environment variable; with none of
            these, CO2 is not reported.
        region: A region code of :data:`lightning_green.energy.carbon.CARBON_INTENSITY_G_PER_KWH`
            (``"FR"``, ``"US"``, ``"EU"`` ...) to look the carbon intensity up.
        cpu_power_per_core_w: Watts per fully busy core for the CPU-time estimate. None reads
            ``LIGHTNING_GREEN_CPU_POWER_PER_CORE_W`` or uses 10 W.
        sampling_interval_s: Period of the NVML power sampler on GPUs without an energy counter.
        step_interval: Every this many training steps, also log ``energy/step_j`` (mean energy
            per step over the interval) and ``energy/step_power_w``; 0 logs per epoch only.
        prog_bar: Show ``energy/total_kwh`` on the progress bar.
        summary: Print and save the end-of-run summary.

    Example:
        >>> monitor = EnergyMonitor(monitor="val_acc", mode="max", pue=1.2, region="FR")
        >>> monitor.pue, monitor.carbon_intensity_g_per_kwh
        (1.2, 55.0)
    """

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
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"monitor must be a non-empty metric name or None, got {monitor!r}")
        if isinstance(sampling_interval_s, bool) or not (
            isinstance(sampling_interval_s, (int, float)) and 0 < sampling_interval_s <= 60
        ):
            raise ValueError(f"sampling_interval_s must be in (0, 60] seconds, got {sampling_interval_s!r}")
        if isinstance(step_interval, bool) or not isinstance(step_interval, int) or step_interval < 0:
            raise ValueError(
                f"step_interval must be an integer >= 0 (0 = per epoch only), got {step_interval!r}"
            )
        check_bools(strict=strict, prog_bar=prog_bar, summary=summary)
        self.monitor = monitor
        self.mode: Literal["min", "max"] = mode
        self.strict = strict
        self.pue = validate_pue(pue)
        self.carbon_intensity_g_per_kwh, self.carbon_intensity_origin = resolve_carbon_intensity_g_per_kwh(
            carbon_intensity_g_per_kwh, region
        )
        self.region = region
        self.cpu_power_per_core_w = (
            None if cpu_power_per_core_w is None else resolve_cpu_power_per_core_w(cpu_power_per_core_w)
        )
        self.sampling_interval_s = float(sampling_interval_s)
        self.step_interval = step_interval
        self.prog_bar = prog_bar
        self.summary = summary

        self.ledger = EnergyLedger(self.pue, self.carbon_intensity_g_per_kwh, mode)
        self.energy_source: str | None = None
        self.last_summary: dict[str, Any] | None = None
        self.summary_path: Path | None = None
        self.plot_path: Path | None = None
        self.implicit = False  # created by another lightning_green callback
        self._meter: EnergyMeter | None = None
        self._ready = False
        self._source_logged = False
        self._warned_missing = False
        self._boundary_s = 0.0
        self._samples_local = 0
        self._val_ran = False
        self._closed: EpochEnergy | None = None
        self._deferred: tuple[int, bool] | None = None  # (step, validated) of an epoch awaiting its metric
        self._closed_key: tuple[int, int] | None = None
        self._restored_marginal: tuple[int, float] | None = None  # (step, value) to log after a resume
        self._step_mark: tuple[float, int, float] | None = None  # (energy_j, global_step, monotonic_s)
        self._summary_extras: dict[str, Any] = {}

    # -- identity and sharing -----------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """One EnergyMonitor per Trainer: the key does not depend on the arguments."""
        return "lightning_green.EnergyMonitor"

    @classmethod
    def for_trainer(
        cls,
        trainer: Trainer,
        requester: Any | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
    ) -> EnergyMonitor:
        """The Trainer's EnergyMonitor, added right after ``requester`` if it has none.

        lightning_green callbacks call this from their ``setup`` so that one measurement serves
        them all: adding several callbacks never measures twice, and adding one without an
        EnergyMonitor still measures.

        Args:
            trainer: The trainer.
            requester: The callback asking; a new monitor is inserted right after it, so it
                runs before checkpointing callbacks and its state is saved with them.
            monitor: Metric for the new monitor's gain per kWh (when one is created).
            mode: Direction of ``monitor``.

        Returns:
            The shared monitor, set up for fitting.
        """
        found = [cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor)]
        if found:
            return found[0]
        # The requester validates its own metric (strict or not): the implicit monitor only
        # logs the gain per kWh of it when it is there.
        created = cls(monitor=monitor, mode=mode, strict=False, summary=True)
        created.implicit = True
        index = len(trainer.callbacks)
        if requester is not None and requester in trainer.callbacks:
            index = trainer.callbacks.index(requester) + 1
        trainer.callbacks.insert(index, created)
        if trainer.lightning_module is not None:
            created.setup(trainer, trainer.lightning_module, "fit")
        return created

    def add_summary_fields(self, **fields: Any) -> None:
        """Let other callbacks add fields (stop reason, adapted settings) to the summary."""
        self._summary_extras.update(fields)

    # -- measurement --------------------------------------------------------------------------------
    @property
    def total_kwh(self) -> float:
        """Cumulative energy at the last closed epoch (or restored), in kWh."""
        return j_to_kwh(self.ledger.total_j)

    @property
    def history(self) -> list[EpochEnergy]:
        """Epoch records of the run, resumes included."""
        return list(self.ledger.history)

    def _local_vector(self, trainer: Trainer) -> list[float]:
        reading = self._meter.read() if self._meter is not None else None
        energy_j = reading.energy_j if reading is not None else 0.0
        faults = reading.faults if reading is not None else 0
        return [
            energy_j,
            float(faults),
            float(self._samples_local),
            *_source_flags(reading and reading.source),
        ]

    def measure(self, trainer: Trainer) -> tuple[float, int, int, str]:
        """Read every rank's meters now and sum them (a collective under DDP).

        Args:
            trainer: The trainer.

        Returns:
            ``(measured_j, faults, samples_this_epoch, source)`` summed over ranks; the energy is
            cumulative since the meters started, before PUE.
        """
        values = sum_across_ranks(trainer, self._local_vector(trainer))
        return values[0], int(values[1]), int(values[2]), _source_label(values[3:])

    def cumulative_kwh(self, trainer: Trainer) -> float:
        """Energy of the run up to now (PUE applied, resumes included); a collective under DDP."""
        measured_j, _, _, _ = self.measure(trainer)
        return j_to_kwh(self.ledger.total_j_at(measured_j))

    # -- hooks ------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Build and start the meters for fitting (idempotent)."""
        if stage != "fit" or self._ready:
            return
        monitors = [cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor)]
        if len(monitors) > 1:
            raise ValueError(
                f"The Trainer has {len(monitors)} EnergyMonitor callbacks; add one (it is shared by "
                "every lightning_green callback and logs for all of them)."
            )
        if self.monitor is None:
            stopper = next(iter(_compat.early_stopping_callbacks(trainer)), None)
            if stopper is not None:
                self.monitor, self.mode = stopper.monitor, stopper.mode  # type: ignore[assignment]
                self.ledger.mode = self.mode
        device = trainer.strategy.root_device
        cuda_indices = [device.index or 0] if device.type == "cuda" else []
        cuda_uuids = [_cuda_uuid(i) for i in cuda_indices]
        host_reader = trainer.local_rank == 0
        root_pids = local_rank_pids(trainer)
        self._meter = build_meter(
            self.meter,
            cuda_indices=cuda_indices,
            host_reader=host_reader,
            cpu_power_per_core_w=self.cpu_power_per_core_w,
            root_pids=root_pids if host_reader else None,
            sampling_interval_s=self.sampling_interval_s,
            cuda_uuids=cuda_uuids,
        )
        if self._meter is not None:
            self._meter.start()
        self.ledger.begin()
        self._boundary_s = time.monotonic()
        self._samples_local = 0
        self._ready = True

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep the untrained model's metric as the baseline of the first epoch's gain."""
        if self.monitor is None or self.ledger.history or self.ledger.baseline_metric is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            value = float(value)
            self.ledger.baseline_metric = value if math.isfinite(value) else None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count samples; every ``step_interval`` steps log the energy per step."""
        self._samples_local += count_samples(batch)
        if self.step_interval and self._ready:
            step = trainer.global_step
            due = step % self.step_interval == 0
            if due and (self._step_mark is None or step != self._step_mark[1]):  # once per optimizer step
                self._log_step_energy(trainer, pl_module)

    def _log_step_energy(self, trainer: Trainer, pl_module: LightningModule) -> None:
        measured_j, _, _, _ = self.measure(trainer)
        now = (self.pue * measured_j, trainer.global_step, time.monotonic())
        if self._step_mark is not None and now[1] > self._step_mark[1]:
            energy_j = now[0] - self._step_mark[0]
            metrics = {keys.STEP_J: energy_j / (now[1] - self._step_mark[1])}
            if now[2] > self._step_mark[2]:
                metrics[keys.STEP_POWER_W] = energy_j / (now[2] - self._step_mark[2])
            # Straight to the loggers: self.log would follow Trainer(log_every_n_steps), not step_interval.
            if trainer.global_rank == 0 and trainer.loggers:
                _loggers.log_metrics(trainer, metrics, step=now[1])
        self._step_mark = now

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Note that this epoch validated (a missing val metric is then an error)."""
        if not trainer.sanity_checking:
            self._val_ran = True

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the epoch's accounting and log it."""
        self.close_epoch(trainer, pl_module)

    def close_epoch(self, trainer: Trainer, pl_module: LightningModule) -> EpochEnergy:
        """Close the current epoch's accounting and log it; later calls in the epoch return it.

        Every rank must call this at the same point (it sums across ranks). Other
        lightning_green callbacks call it when they need the epoch's energy before this
        callback's own ``on_train_epoch_end`` ran.

        Args:
            trainer: The trainer.
            pl_module: The module (used for logging).

        Returns:
            The epoch's record.
        """
        key = (trainer.current_epoch, trainer.global_step)
        if self._closed is not None and self._closed_key == key:
            return self._closed
        # A metric the module logs in its own on_train_epoch_end is written after this hook (Lightning
        # calls plain callbacks first): read later, when it is fresh (see _resolve_deferred_metric).
        defer = self.monitor is not None and _compat.is_overridden("on_train_epoch_end", pl_module)
        metric_local = None if defer else self._read_metric(trainer)
        is_rank0 = trainer.global_rank == 0
        vector = self._local_vector(trainer)
        # Rank 0's metric and clock reach every rank through the same sum: identical ledgers.
        now = time.monotonic()
        baseline = self.ledger.baseline_metric
        rank0_only = [
            metric_local if metric_local is not None else 0.0,
            1.0 if metric_local is not None else 0.0,
            1.0 if self._val_ran else 0.0,
            now - self._boundary_s,
            baseline if baseline is not None else 0.0,
            1.0 if baseline is not None else 0.0,
        ]
        vector += [v if is_rank0 else 0.0 for v in rank0_only]
        values = sum_across_ranks(trainer, vector)
        measured_j, faults, samples = values[0], int(values[1]), int(values[2])
        source = _source_label(values[3 : 3 + len(SOURCES)])
        metric_sum, has_metric, val_ran, duration_s, baseline_sum, has_baseline = values[3 + len(SOURCES) :]
        if not self.ledger.history:  # the first epoch's gain is measured from rank 0's baseline
            self.ledger.baseline_metric = baseline_sum if has_baseline > 0 else None
        metric = metric_sum if has_metric > 0 else None
        if metric is not None and not math.isfinite(metric):
            metric = None
        if self.monitor is not None and has_metric == 0 and not defer:
            self._missing_monitor(trainer, val_ran > 0)

        record = self.ledger.close_epoch(
            trainer.current_epoch,
            measured_j=measured_j,
            faults=faults,
            samples=samples,
            duration_s=duration_s,
            source=source,
            metric=metric,
        )
        self._boundary_s = now
        self._samples_local = 0
        self._val_ran = False
        self.energy_source = source
        self._log_epoch(trainer, pl_module, record)
        self._closed, self._closed_key = record, key
        self._deferred = (trainer.global_step, val_ran > 0) if defer else None
        return record

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Pick up a deferred metric of the previous epoch (now fresh in ``callback_metrics``)."""
        self._resolve_deferred_metric(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Pick up a deferred metric of the last epoch before the summary."""
        self._resolve_deferred_metric(trainer)

    def _resolve_deferred_metric(self, trainer: Trainer) -> None:
        if self._restored_marginal is not None:
            step, marginal = self._restored_marginal
            self._restored_marginal = None
            if trainer.global_rank == 0 and trainer.loggers:
                _loggers.log_metrics(trainer, {marginal_key(self.monitor): marginal}, step=step)
        if self._deferred is None:
            return
        step, val_ran = self._deferred
        self._deferred = None
        metric_local = self._read_metric(trainer)
        is_rank0 = trainer.global_rank == 0
        has_local = is_rank0 and metric_local is not None
        metric_sum, has_metric = sum_across_ranks(
            trainer, [metric_local if has_local else 0.0, float(has_local)]
        )
        if has_metric == 0:
            self._missing_monitor(trainer, val_ran)
            return
        record = self.ledger.attach_metric(metric_sum)
        if record.marginal_per_kwh is not None and is_rank0 and trainer.loggers:
            _loggers.log_metrics(trainer, {marginal_key(self.monitor): record.marginal_per_kwh}, step=step)

    def _read_metric(self, trainer: Trainer) -> float | None:
        if self.monitor is None:
            return None
        value = trainer.callback_metrics.get(self.monitor)
        return None if value is None else float(value)

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

    def attach_metric(self, trainer: Trainer, pl_module: LightningModule, value: float) -> None:
        """Give the epoch just closed its monitored metric when it was logged after the close.

        Called by :class:`EnergyAwareEarlyStopping` (which runs after the LightningModule's
        ``on_train_epoch_end``) with the value it decided on, identical on every rank. Does
        nothing when the epoch already has its metric.

        Args:
            trainer: The trainer.
            pl_module: The module (for logging the gain per kWh).
            value: The metric at the end of the epoch.
        """
        if self._deferred is None or self._closed_key != (trainer.current_epoch, trainer.global_step):
            return
        self._deferred = None
        if not math.isfinite(value):
            return
        record = self.ledger.attach_metric(value)
        self._closed = record
        if record.marginal_per_kwh is not None:
            pl_module.log(
                marginal_key(self.monitor),
                record.marginal_per_kwh,
                on_step=False,
                on_epoch=True,
                logger=bool(trainer.loggers),
            )

    def _log_epoch(self, trainer: Trainer, pl_module: LightningModule, record: EpochEnergy) -> None:
        metrics: dict[str, float] = {
            keys.EPOCH_KWH: record.energy_kwh,
            keys.AVG_POWER_W: record.avg_power_w,
            keys.SAMPLES_PER_J: record.samples_per_j,
        }
        if record.co2_kg is not None:
            metrics[keys.CO2_KG] = record.co2_kg
        if self.monitor is not None and record.marginal_per_kwh is not None:
            metrics[marginal_key(self.monitor)] = record.marginal_per_kwh
        to_loggers = bool(trainer.loggers)
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, logger=to_loggers, prog_bar=False)
        pl_module.log(
            keys.TOTAL_KWH,
            record.total_kwh,
            on_step=False,
            on_epoch=True,
            logger=to_loggers,
            prog_bar=self.prog_bar,
        )
        if trainer.global_rank == 0 and not self._source_logged:
            self._source_logged = True
            params: dict[str, Any] = {PARAM_ENERGY_SOURCE: record.source, keys.PARAM_PUE: self.pue}
            if self.monitor is not None:
                params[keys.PARAM_MONITOR] = self.monitor
                params[keys.PARAM_MODE] = self.mode
            if self.carbon_intensity_g_per_kwh is not None:
                params[keys.PARAM_CARBON_INTENSITY] = self.carbon_intensity_g_per_kwh
            _loggers.log_params(trainer, params)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take the final reading and write the summary."""
        if not self._ready:
            return
        measured_j, faults, _, source = self.measure(trainer)
        total_j = max(self.ledger.total_j, self.ledger.total_j_at(measured_j))
        partial = self.ledger.partial or faults > 0
        self.last_summary = build_summary(
            self.ledger.history,
            total_j=total_j,
            source=source,
            partial=partial,
            pue=self.pue,
            carbon_intensity_g_per_kwh=self.carbon_intensity_g_per_kwh,
            monitor=self.monitor,
            mode=self.mode,
            extra={"carbon_intensity_origin": self.carbon_intensity_origin, **self._summary_extras},
        )
        if trainer.global_rank != 0:
            return
        tags = {keys.TAG_PARTIAL: str(partial).lower(), PARAM_ENERGY_SOURCE: source}
        _loggers.set_tags(trainer, tags)
        if not self.summary:
            return
        _compat.info(trainer, format_summary(self.last_summary))
        try:
            out_dir = _loggers.output_dir(trainer)
            self.summary_path = write_summary_json(self.last_summary, out_dir / SUMMARY_FILENAME)
            _loggers.log_artifact(trainer, self.summary_path)
            try:
                self.plot_path = plot_summary(self.last_summary, out_dir / PLOT_FILENAME)
            except ImportError:
                _compat.info(
                    trainer,
                    "lightning_green: matplotlib is not installed, so no energy plot was drawn "
                    "(pip install 'lightning_green[plot]').",
                )
            else:
                _loggers.log_artifact(trainer, self.plot_path)
        except Exception as err:  # the report must never fail a finished run
            _compat.warn(trainer, f"lightning_green: could not write the energy report: {err!r}")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Stop the meters (their threads and library handles)."""
        if stage == "fit" and self._meter is not None:
            self._meter.close()
            self._meter = None
            self._ready = False

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Stop the meters when the fit fails."""
        if self._meter is not None:
            self._meter.close()
            self._meter = None
            self._ready = False

    # -- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Energy totals and history, so a resumed run continues the series."""
        return {"ledger": self.ledger.state_dict(), "energy_source": self.energy_source}

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add the energy of the epoch in progress, so a resume from a mid-epoch checkpoint keeps it.

        Lightning saves checkpoints on every rank (``dump_checkpoint``), so the sum is safe.
        """
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None or not self._ready:
            return
        if self._deferred is not None and self._closed_key == (trainer.current_epoch, trainer.global_step):
            # Saved after the module's on_train_epoch_end (checkpoint callbacks run last): the metric
            # the closed epoch waits for is fresh now; keep it, or a resume would lose it.
            metric = self._read_metric(trainer)
            if metric is not None and math.isfinite(metric):
                state["deferred_metric"] = {"value": metric, "step": self._deferred[0]}
        measured_j, _, samples, _ = self.measure(trainer)
        state["open_epoch"] = {
            "energy_j": max(0.0, self.ledger.total_j_at(measured_j) - self.ledger.total_j),
            "samples": samples,
            "duration_s": time.monotonic() - self._boundary_s,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a checkpoint: later epochs add to the restored total."""
        self.ledger.load_state_dict(state_dict["ledger"])
        self.energy_source = state_dict.get("energy_source")
        deferred = state_dict.get("deferred_metric")
        if deferred and self.ledger.history:
            record = self.ledger.attach_metric(deferred["value"])
            if record.marginal_per_kwh is not None and self.monitor is not None:
                self._restored_marginal = (int(deferred["step"]), record.marginal_per_kwh)
        open_epoch = state_dict.get("open_epoch")
        if open_epoch:
            self.ledger.carry_open_epoch(
                open_epoch["energy_j"], open_epoch["samples"], open_epoch["duration_s"]
            )
