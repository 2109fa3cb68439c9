"""One measurement session: the meter, the ledger, named windows and epochs, summed over ranks.

A training run has one :class:`EnergySession`. It owns the meter (started and closed with the
fit), the :class:`~lightning_green.energy.accounting.EnergyLedger` (per-epoch records and the
run's total, continued across resume) and any number of named *windows* - ``begin(key)`` /
``end(key)`` return what the energy, time and caller's counts between them were, as Zeus's
``ZeusMonitor`` does. Every reading is a *collective* across the processes of a distributed run:
the session sums named fields (``{"energy_j": ..., "samples": ...}``) through an injected
``reduce`` function, so every rank holds identical figures. It knows nothing of Lightning: the
callbacks inject a reduce built on ``trainer.strategy.reduce``; one process needs none.

Conventions: energies are joules measured before PUE (the ledger applies it), durations are
rank 0's clock, fields marked *rank 0* count rank 0's value only.

Example:
    >>> from lightning_green.energy.meter import EnergyMeter
    >>> class Counter(EnergyMeter):  # 5 J more at every read
    ...     source = "rapl"
    ...     def _start(self): self.reads = 0
    ...     def _read_j(self):
    ...         self.reads += 1
    ...         return {"package-0": 5.0 * self.reads}
    >>> session = EnergySession(pue=2.0)
    >>> session.start(Counter())
    >>> session.begin("probe")
    >>> window = session.end("probe", {"samples": 64.0})
    >>> window.energy_j, window.fields
    (5.0, {'samples': 64.0})
    >>> session.add_samples(32)
    >>> record, _ = session.close_epoch(0)
    >>> record.energy_j, record.samples, record.source   # 3 reads x 5 J, times PUE 2
    (30.0, 32, 'rapl')
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning_green.energy.accounting import EnergyLedger, EpochEnergy, plus_priced
from lightning_green.energy.meter import EnergyMeter
from lightning_green.energy.units import j_to_kwh

Value = float | list[float]
Fields = dict[str, Value]
"""Named values summed across ranks: a float, or a list of floats of the same length on every rank."""

Reduce = Callable[[Fields], Fields]
"""Sums every field over all ranks (a collective: every rank calls it at the same point)."""

SOURCES: tuple[str, ...] = ("nvml", "nvml-sampled", "rapl", "estimate")
"""Energy source labels, in the order a combined label joins them."""


def local_reduce(fields: Fields) -> Fields:
    """The reduce of a single process: the fields themselves.

    Example:
        >>> local_reduce({"energy_j": 2.0, "losses": [1.0, 0.5]})
        {'energy_j': 2.0, 'losses': [1.0, 0.5]}
    """
    return {k: [float(x) for x in v] if isinstance(v, list) else float(v) for k, v in fields.items()}


def merge_sources(*labels: str | None) -> str | None:
    """One label for energy from several sources: every source named in ``labels``, ``+``-joined.

    A run that measured some epochs with NVML's counter and others with its power sampling, or
    resumed on a machine with other hardware, is labelled with all of them; an estimate anywhere
    keeps ``estimate`` in the label.

    Example:
        >>> merge_sources("nvml", None, "estimate+nvml-sampled")
        'nvml+nvml-sampled+estimate'
        >>> merge_sources(None) is None
        True
    """
    parts = {part for label in labels if label for part in label.split("+")}
    ordered = [name for name in SOURCES if name in parts] + sorted(parts - set(SOURCES))
    return "+".join(ordered) if ordered else None


def _source_label(summed: Mapping[str, Value]) -> str:
    parts = [name for name in SOURCES if float(summed.get(f"source.{name}", 0.0)) > 0]  # type: ignore[arg-type]
    return "+".join(parts) if parts else "estimate"


@dataclass(frozen=True)
class Reading:
    """The session's meters read on every rank and summed.

    Attributes:
        energy_j: Measured since the session started, all ranks and devices, before PUE.
        faults: Measurement faults since the session started, all ranks.
        samples: Training samples counted since the current epoch began, all ranks.
        source: The energy source label (``nvml``, ``rapl``, ``estimate``, ``+``-joined ...).
        stale: Whether a rank's meter kept a domain's last good figure in this reading: the
            energy it missed comes with a later reading (:attr:`EnergyReading.stale
            <lightning_green.energy.readings.EnergyReading.stale>`).
    """

    energy_j: float
    faults: int
    samples: int
    source: str
    stale: bool = False


@dataclass(frozen=True)
class WindowRecord:
    """What a named window measured, identical on every rank.

    Attributes:
        key: The window's name.
        energy_j: Energy between ``begin`` and ``end``, all ranks and devices, before PUE.
        duration_s: Rank 0's wall time between ``begin`` and ``end``.
        fields: The caller's named values given to ``end``, summed over ranks.
        source: The energy source label.
        partial: Whether a measurement fault happened inside the window.
    """

    key: str
    energy_j: float
    duration_s: float
    fields: Fields = field(default_factory=dict)
    source: str = "estimate"
    partial: bool = False


@dataclass
class OpenEpoch:
    """What the epoch in progress has used so far.

    Energy (PUE applied), samples, seconds, whether a measurement fault happened in it, and the
    energy source it was measured with.
    """

    energy_j: float
    samples: int
    duration_s: float
    partial: bool = False
    co2_kg: float | None = None  # of energy_j, at the carbon intensity when it was used
    source: str | None = None  # None in older checkpoints
    epoch: int | None = None  # the epoch's index (None in older checkpoints)


@dataclass(frozen=True)
class BeforeEpochs:
    """What this fit measured before its first epoch began, not booked yet (its setup so far).

    Attributes:
        energy_j: The energy, PUE applied, in joules.
        co2_kg: Its CO2-eq at the intensity now, or None when none is known.
        source: The energy source label.
        partial: Whether a measurement fault happened while it was measured.
    """

    energy_j: float
    co2_kg: float | None
    source: str
    partial: bool = False


def _joined(first: BeforeEpochs | None, second: BeforeEpochs | None) -> BeforeEpochs | None:
    """Both energies as one (CO2 None when either has none; partial when either is)."""
    if first is None or second is None:
        return first or second
    energy_j, kg = plus_priced((first.energy_j, first.co2_kg), second.energy_j, second.co2_kg)
    source = merge_sources(first.source, second.source) or second.source
    return BeforeEpochs(energy_j, kg, source, first.partial or second.partial)


@dataclass
class _Mark:
    energy_j: float
    time_s: float
    faults: int
    stale: bool  # opened on a stale reading: the window holds energy from before it


class EnergySession:
    """The measurement of one training run, shared by every callback of the Trainer.

    Args:
        pue: Power usage effectiveness applied to every measured joule (>= 1.0).
        carbon_intensity_g_per_kwh: Grid intensity for CO2, or None.
        monitor: The metric whose gain per kWh the epochs record, or None.
        mode: ``"min"`` or ``"max"``: the direction of ``monitor``.
        clock: Monotonic seconds (default ``time.monotonic``; rank 0's is the one that counts).
    """

    def __init__(
        self,
        pue: float = 1.0,
        carbon_intensity_g_per_kwh: float | None = None,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.ledger = EnergyLedger(pue, carbon_intensity_g_per_kwh, mode)
        self.monitor = monitor
        self.energy_source: str | None = None  # every source the run's closed epochs used
        self._carry_source: str | None = None  # of an epoch a checkpoint caught open
        self._clock = clock or time.monotonic
        self._meter: EnergyMeter | None = None
        self._running = False
        self._reduce: Reduce = local_reduce
        self._rank0 = True
        self._samples_local = 0
        self._epoch_start_s = 0.0
        self._fit_start_s = 0.0  # when this fit's measurement started (start)
        self._windows: dict[str, _Mark] = {}
        self.last_reading: Reading | None = None  # the last collective reading of this fit
        self._probing: set[str] = set()
        self._step_mark: tuple[float, int, float] | None = None  # (energy_j with PUE, step, seconds)
        self._now: tuple[Hashable, float] | None = None  # (moment, total_j) of the last total_j_now(at)
        self._epochs_begun = False  # whether this fit's first epoch began (begin_epochs)
        self.fit_id: str | None = None  # names this fit's measurement (a new one at every start)
        # What a fit that ended without an end measured (set_aside), for the next fit of the run
        self._set_aside: BeforeEpochs | None = None
        self._booked_set_aside: BeforeEpochs | None = None  # the one this fit booked at its start

    # -- identity ---------------------------------------------------------------------------------
    @property
    def mode(self) -> Literal["min", "max"]:
        """Direction of :attr:`monitor` (``"min"``: lower is better)."""
        return self.ledger.mode

    def watch(self, monitor: str | None, mode: Literal["min", "max"]) -> None:
        """Record the gain per kWh of ``monitor`` (in direction ``mode``) from now on."""
        self.monitor, self.ledger.mode = monitor, mode

    @property
    def pue(self) -> float:
        """The PUE applied to measured joules."""
        return self.ledger.pue

    @property
    def running(self) -> bool:
        """Whether the session is measuring (between :meth:`start` and :meth:`stop`)."""
        return self._running

    @property
    def history(self) -> list[EpochEnergy]:
        """Closed epochs of the run, resumes included."""
        return list(self.ledger.history)

    @property
    def last_epoch(self) -> EpochEnergy | None:
        """The last closed epoch, or None."""
        return self.ledger.history[-1] if self.ledger.history else None

    @property
    def total_kwh(self) -> float:
        """The run's energy at the last closed epoch (or restored), in kWh."""
        return j_to_kwh(self.ledger.total_j)

    @property
    def epochs_begun(self) -> bool:
        """Whether this fit's first epoch began (:meth:`begin_epochs`)."""
        return self._epochs_begun

    @property
    def fit_elapsed_s(self) -> float:
        """Wall time since this fit's measurement started (:meth:`start`), in seconds."""
        return max(0.0, self._clock() - self._fit_start_s)

    # -- lifecycle --------------------------------------------------------------------------------
    def new_run(self, monitor: str | None, mode: Literal["min", "max"], keep_set_aside: bool = False) -> None:
        """Forget the previous run (totals, history, energy source) before a new one starts.

        Args:
            monitor: The metric to watch in the new run (the one the owner was built with).
            mode: Its direction.
            keep_set_aside: Keep what :meth:`set_aside` kept (a search of the new run's Trainer
                before this fit): the new run's first fit books it before its epochs.

        Raises:
            RuntimeError: While measuring (:meth:`stop` first).
        """
        if self._running:
            raise RuntimeError("EnergySession.new_run: the session is measuring; stop it first")
        ledger = self.ledger
        self.ledger = EnergyLedger(ledger.pue, ledger.carbon_intensity_g_per_kwh, mode)
        self.monitor = monitor
        self.energy_source = None
        self._carry_source = None
        self._windows.clear()
        self._probing.clear()
        self._step_mark = None
        self._now = None
        self._epochs_begun = False
        # What this fit booked of an earlier set-aside goes with the ledger it was booked in.
        kept = _joined(self._booked_set_aside, self._set_aside) if keep_set_aside else None
        self._set_aside, self._booked_set_aside = kept, None

    def start(self, meter: EnergyMeter | None, reduce: Reduce = local_reduce, rank0: bool = True) -> None:
        """Start measuring with ``meter`` (this process's share of the run).

        Args:
            meter: This rank's meter, not started yet (None: this rank measures nothing itself).
            reduce: Sums named fields over every rank (:func:`local_reduce` for one process).
            rank0: Whether this process is global rank 0 (whose clock and metric count).
        """
        self._meter, self._reduce, self._rank0 = meter, reduce, rank0
        if meter is not None:
            meter.start()
        self._running = True
        self.ledger.begin()
        self._samples_local = 0
        self._epoch_start_s = self._fit_start_s = self._clock()
        self._windows.clear()
        self.last_reading = None
        self._now = None  # the meters restarted from zero: an earlier fit's reading means nothing
        self._epochs_begun = False
        self.fit_id = uuid.uuid4().hex
        self._booked_set_aside, self._set_aside = self._set_aside, None
        self._book_set_aside()

    def _book_set_aside(self) -> None:
        """Book what an earlier fit of the run set aside before this fit's epochs (:meth:`set_aside`)."""
        kept = self._booked_set_aside
        if kept is not None:
            self.ledger.add_before_epochs(kept.energy_j, kept.co2_kg, partial=kept.partial)
            self.energy_source = merge_sources(self.energy_source, kept.source)

    def set_aside(self) -> BeforeEpochs | None:
        """Keep what this fit measured for the run's next fit, and stop (collective).

        For a fit that ended without reaching its end or failing - Lightning's ``Tuner`` searching
        for a batch size or learning rate in a ``fit`` of its own, which it leaves as soon as the
        search is done: what it measured is the run's energy before its first epoch. The next
        fit of the run books it (:meth:`start`; :meth:`new_run` with ``keep_set_aside``).

        Returns:
            What was kept (PUE applied), or ``None`` when the session is not measuring or this
            fit's epochs had begun (they hold what it measured since).
        """
        if not self._running or self._epochs_begun:
            self.stop()
            return None
        reading, _ = self.read()
        energy_j = self.ledger.unbooked_j(reading.energy_j)
        priced = self.ledger.priced_now(energy_j)
        self._set_aside = BeforeEpochs(energy_j, priced, reading.source, partial=reading.faults > 0)
        self.stop()
        return self._set_aside

    def stop(self) -> None:
        """Stop the meter (threads, library handles). Safe to repeat."""
        meter, self._meter, self._running = self._meter, None, False
        if meter is not None:
            meter.close()

    def add_samples(self, samples: int) -> None:
        """Count training samples of this rank in the current epoch."""
        self._samples_local += int(samples)

    # -- reading (collectives) --------------------------------------------------------------------
    def sum(self, fields: Mapping[str, Value], rank0: Mapping[str, Value] | None = None) -> Fields:
        """Sum named fields over ranks; ``rank0`` fields count global rank 0's value only (collective)."""
        local: Fields = {k: list(v) if isinstance(v, list) else float(v) for k, v in fields.items()}
        for key, value in (rank0 or {}).items():
            if self._rank0:
                local[key] = list(value) if isinstance(value, list) else float(value)
            else:
                local[key] = [0.0] * len(value) if isinstance(value, list) else 0.0
        return self._reduce(local)

    def read(
        self, fields: Mapping[str, Value] | None = None, rank0: Mapping[str, Value] | None = None
    ) -> tuple[Reading, Fields]:
        """Read every rank's meter and sum, with the caller's fields in the same collective.

        Returns:
            The reading and the caller's summed fields.
        """
        reading = self._meter.read() if self._meter is not None else None
        parts = set(reading.source.split("+")) if reading is not None else set()
        own: Fields = {
            "meter.energy_j": reading.energy_j if reading is not None else 0.0,
            "meter.faults": float(reading.faults) if reading is not None else 0.0,
            "meter.stale": float(reading is not None and reading.stale),
            "meter.samples": float(self._samples_local),
            **{f"source.{name}": float(name in parts) for name in SOURCES},
        }
        summed = self.sum({**own, **(fields or {})}, rank0)
        measured = Reading(
            energy_j=float(summed.pop("meter.energy_j")),  # type: ignore[arg-type]
            faults=round(summed.pop("meter.faults")),  # type: ignore[arg-type]
            samples=round(summed.pop("meter.samples")),  # type: ignore[arg-type]
            source=_source_label(summed),
            stale=float(summed.pop("meter.stale")) > 0,  # type: ignore[arg-type]
        )
        for name in SOURCES:
            summed.pop(f"source.{name}")
        self.last_reading = measured
        return measured, summed

    @property
    def step_mark(self) -> int | None:
        """The optimizer step of the last :meth:`step_energy` call (None before the first)."""
        return None if self._step_mark is None else self._step_mark[1]

    def step_energy(self, step: int) -> tuple[float | None, float | None]:
        """Joules per optimizer step and watts since the previous call at an earlier step (collective).

        Args:
            step: The optimizer step reached now (``trainer.global_step``).

        Returns:
            ``(j_per_step, power_w)`` with the PUE applied; ``None`` for what cannot be known yet
            (the first call, or no step or no time elapsed since the previous one).
        """
        reading, _ = self.read()
        now = (self.pue * reading.energy_j, int(step), self._clock())
        before, self._step_mark = self._step_mark, now
        if before is None or now[1] <= before[1]:
            return None, None
        energy_j = now[0] - before[0]
        power_w = energy_j / (now[2] - before[2]) if now[2] > before[2] else None
        return energy_j / (now[1] - before[1]), power_w

    def total_j_now(self, at: Hashable | None = None) -> float:
        """The run's energy up to now (PUE applied, resumes included), in joules (collective).

        Args:
            at: The moment asked about (e.g. a validation's place in the fit), or ``None``:
                callbacks that ask about the same moment share one reading instead of each
                taking their own (on every rank alike, so the collectives stay matched).
        """
        cached = self._now
        if at is not None and cached is not None and cached[0] == at:
            return cached[1]
        reading, _ = self.read()
        total_j = max(self.ledger.total_j, self.ledger.total_j_at(reading.energy_j))
        self._now = None if at is None else (at, total_j)
        return total_j

    def total_kwh_now(self, at: Hashable | None = None) -> float:
        """:meth:`total_j_now` in kWh (collective)."""
        return j_to_kwh(self.total_j_now(at))

    def begin(self, key: str) -> None:
        """Open the window ``key`` here (collective).

        A window opened on a stale reading (a read that failed keeps the last good figure) is
        partial: it would count the energy of the outage as its own when the meter answers again.
        """
        reading, _ = self.read()
        self._windows[key] = _Mark(reading.energy_j, self._clock(), reading.faults, reading.stale)

    def end(
        self,
        key: str,
        fields: Mapping[str, Value] | None = None,
        restart: bool = False,
        rank0: Mapping[str, Value] | None = None,
    ) -> WindowRecord:
        """Close the window ``key`` here, summing the caller's ``fields`` with it (collective).

        Args:
            key: A window opened by :meth:`begin`.
            fields: This rank's named values to sum over ranks (e.g. samples, losses).
            restart: Open the window again from this very reading (nothing falls between).
            rank0: Values that count global rank 0's only, returned with the summed ``fields``.

        Raises:
            KeyError: When the window is not open.
        """
        mark = self._windows.pop(key)
        now = self._clock()
        reading, summed = self.read(fields, rank0={**(rank0 or {}), "window.duration_s": now - mark.time_s})
        duration_s = float(summed.pop("window.duration_s"))  # type: ignore[arg-type]
        if restart:
            self._windows[key] = _Mark(reading.energy_j, now, reading.faults, reading.stale)
        return WindowRecord(
            key=key,
            energy_j=max(0.0, reading.energy_j - mark.energy_j),
            duration_s=max(0.0, duration_s),
            fields=summed,
            source=reading.source,
            partial=reading.faults > mark.faults or mark.stale,
        )

    def is_open(self, key: str) -> bool:
        """Whether the window ``key`` is open."""
        return key in self._windows

    # -- epochs (collectives) -----------------------------------------------------------------------
    def begin_epochs(self) -> float | None:
        """Mark the start of this fit's first epoch (collective, once a fit; later calls do nothing).

        What the meters measured since :meth:`start` - the fit's setup, the sanity check, a batch-size
        or learning-rate search before training - counts in the run's total but in no epoch
        (:meth:`EnergyLedger.begin_epochs`): the first epoch's energy, time and samples start here.

        Returns:
            The energy booked outside the epochs (PUE applied, J), or ``None`` when the first
            epoch had already begun or the session is not measuring.
        """
        if self._epochs_begun or not self._running:
            return None
        self._epochs_begun = True
        reading, _ = self.read()
        booked_j = self.ledger.begin_epochs(reading.energy_j, reading.faults, stale=reading.stale)
        self.energy_source = merge_sources(self.energy_source, reading.source)  # in the run's total
        self._epoch_start_s = self._clock()
        self._samples_local = 0
        self._now = None  # a total read before this moment counted the setup in the epochs
        return booked_j

    def close_epoch(
        self, epoch: int, metric: float | None = None, rank0: Mapping[str, float] | None = None
    ) -> tuple[EpochEnergy, Fields]:
        """Close the epoch in progress: one record for the ledger, identical on every rank.

        Args:
            epoch: The epoch's index.
            metric: Rank 0's value of :attr:`monitor` at the epoch's end (None: not logged).
            rank0: More of rank 0's values to hand to every rank with the record.

        Returns:
            The record (also in :attr:`history`) and the summed fields: ``rank0``'s, plus
            ``metric_logged`` (1.0 when rank 0 had a metric, finite or not).
        """
        now = self._clock()
        baseline = self.ledger.baseline_metric if not self.ledger.history else None
        values = {
            "epoch.duration_s": now - self._epoch_start_s,
            "metric": metric if metric is not None else 0.0,
            "metric_logged": float(metric is not None),
            "baseline": baseline if baseline is not None else 0.0,
            "baseline_known": float(baseline is not None),
            **(rank0 or {}),
        }
        reading, summed = self.read(rank0=values)
        if not self.ledger.history:  # the first epoch's gain is measured from rank 0's baseline
            self.ledger.baseline_metric = float(summed["baseline"]) if summed["baseline_known"] else None  # type: ignore[arg-type]
        value = float(summed["metric"]) if summed["metric_logged"] else None  # type: ignore[arg-type]
        record = self.ledger.close_epoch(
            epoch,
            measured_j=reading.energy_j,
            faults=reading.faults,
            samples=reading.samples,
            duration_s=float(summed["epoch.duration_s"]),  # type: ignore[arg-type]
            source=merge_sources(self._carry_source, reading.source) or reading.source,
            metric=value if value is not None and math.isfinite(value) else None,
            stale=reading.stale,  # the next epoch would hold energy of this one: partial too
        )
        self._carry_source = None
        self._epoch_start_s = now
        self._samples_local = 0
        self.energy_source = merge_sources(self.energy_source, reading.source)
        extra = {k: v for k, v in summed.items() if k not in ("metric", "baseline", "baseline_known")}
        extra.pop("epoch.duration_s")
        return record, extra

    def attach_metric(self, metric: float | None) -> EpochEnergy | None:
        """Give the last closed epoch rank 0's ``metric`` when it was logged after the close (collective).

        Returns:
            The updated record, or None when rank 0 had no metric (nothing changes).
        """
        summed = self.sum({}, rank0={"metric": metric or 0.0, "logged": float(metric is not None)})
        if not summed["logged"] or not self.ledger.history:
            return None
        return self.ledger.attach_metric(float(summed["metric"]))  # type: ignore[arg-type]

    def open_epoch(self) -> OpenEpoch:
        """What the epoch in progress has used so far (collective), e.g. to keep it in a checkpoint."""
        return self.open_parts()[0]

    def open_parts(self) -> tuple[OpenEpoch, BeforeEpochs | None]:
        """What the epoch in progress has used so far, and what the fit used before its epochs (collective).

        Before this fit's first epoch began (:meth:`begin_epochs`) the epoch in progress holds only
        what a restored checkpoint caught open of it (nothing, mostly): what the meters measured
        is the fit's setup, returned apart, for a checkpoint to keep outside the epochs.

        Returns:
            The open epoch, and the setup measured so far (``None`` once the epochs began).
        """
        reading, _ = self.read()
        ledger = self.ledger
        if self._epochs_begun:
            energy_j = max(0.0, ledger.total_j_at(reading.energy_j) - ledger.total_j)
            samples, duration_s = reading.samples, self._clock() - self._epoch_start_s
            partial = ledger.faults_in_open_epoch(reading.faults)
            before = None
        else:
            energy_j, partial = ledger.carried_open_epoch()
            samples, duration_s = 0, 0.0  # none of the setup's are the epoch's
            setup_j = ledger.unbooked_j(reading.energy_j)
            # this fit's meters have counted nothing but the setup's faults so far
            before = BeforeEpochs(setup_j, ledger.priced_now(setup_j), reading.source, reading.faults > 0)
        before_kg, after_kg = ledger.co2_kg(ledger.total_j), ledger.co2_kg(ledger.total_j + energy_j)
        co2 = None if before_kg is None or after_kg is None else after_kg - before_kg
        return OpenEpoch(energy_j, samples, duration_s, partial, co2, reading.source), before

    def carry(self, epoch: OpenEpoch) -> None:
        """Continue an epoch a checkpoint caught open: its energy, samples and time count in it."""
        self.ledger.carry_open_epoch(
            epoch.energy_j, epoch.samples, epoch.duration_s, partial=epoch.partial, co2_kg=epoch.co2_kg
        )
        # measured before the checkpoint, maybe on other hardware: the epoch and the run name it too
        self._carry_source = merge_sources(self._carry_source, epoch.source)
        self.energy_source = merge_sources(self.energy_source, epoch.source)

    # -- coordination of probes -------------------------------------------------------------------
    def set_probing(self, key: str, probing: bool) -> None:
        """Declare that the setting ``key`` (``"precision"`` ...) is being probed, or no longer.

        Other adaptive callbacks hold their setting still meanwhile, so a window never mixes two
        settings; the state must be the same on every rank (it is decided from summed figures).
        """
        (self._probing.add if probing else self._probing.discard)(key)

    def probing_other_than(self, key: str) -> bool:
        """Whether a setting other than ``key`` is being probed."""
        return bool(self._probing - {key})

    # -- persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The ledger (totals, history) and the energy source, as plain data."""
        return {"ledger": self.ledger.state_dict(), "energy_source": self.energy_source}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`: later epochs add to the restored total."""
        self.ledger.load_state_dict(dict(state["ledger"]))
        self.energy_source = state.get("energy_source")
        if self._running:  # a search before this fit set energy aside for it: the restored run's too
            self._book_set_aside()
