"""Per-epoch energy accounting: cumulative totals in, epoch records out (no Lightning).

The Lightning adapter feeds the ledger one *cumulative* figure per boundary - the energy of
every rank and device since the meters were started, already summed across ranks - and the
ledger turns it into epoch records: energy of the epoch (times PUE), the running total
continued across resume, average power, samples per joule, CO2 and the marginal gain of the
monitored metric per kWh. Its state is plain data, so a resumed run continues the series.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from lightning_green.energy.carbon import co2_kg
from lightning_green.energy.units import J_PER_KWH, j_to_kwh

Mode = Literal["min", "max"]


def marginal_gain_per_kwh(previous: float, current: float, energy_kwh: float, mode: Mode) -> float | None:
    """Change of a metric over an interval per kWh, positive when it improved.

    Args:
        previous: Metric value at the start of the interval.
        current: Metric value at the end of the interval.
        energy_kwh: Energy of the interval in kWh.
        mode: ``"min"`` when lower is better, ``"max"`` when higher is better.

    Returns:
        The signed gain per kWh, or None when the energy is zero or a value is not finite.

    Example:
        >>> round(marginal_gain_per_kwh(0.50, 0.40, 0.01, "min"), 9)
        10.0
        >>> marginal_gain_per_kwh(90.0, 89.0, 0.5, "max")
        -2.0
    """
    if not (math.isfinite(previous) and math.isfinite(current)) or energy_kwh <= 0:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return sign * (current - previous) / energy_kwh


@dataclass(frozen=True)
class EpochEnergy:
    """What one epoch cost and bought.

    Attributes:
        epoch: Zero-based epoch index.
        energy_j: Energy of the epoch (training and validation, all ranks and devices, times
            PUE), in joules.
        total_j: Cumulative energy since the start of the run (across resumes), in joules.
        duration_s: Wall time of the epoch in seconds.
        samples: Training samples processed in the epoch, all ranks.
        source: Energy source label.
        partial: True when a measurement fault happened during the epoch.
        metric: The monitored metric at the end of the epoch, if any.
        marginal_per_kwh: Change of the monitored metric per kWh, positive when it improved:
            since the last epoch that had the metric (or the baseline before the first epoch),
            per the energy of every epoch since, this one included; None when not defined (no
            metric, e.g. an epoch that did not validate, or no earlier value).
        co2_kg: Cumulative CO2-eq in kg, when a carbon intensity is known.
    """

    epoch: int
    energy_j: float
    total_j: float
    duration_s: float
    samples: int
    source: str
    partial: bool
    metric: float | None = None
    marginal_per_kwh: float | None = None
    co2_kg: float | None = None

    @property
    def energy_kwh(self) -> float:
        """Energy of the epoch in kWh."""
        return j_to_kwh(self.energy_j)

    @property
    def total_kwh(self) -> float:
        """Cumulative energy at the end of the epoch in kWh."""
        return j_to_kwh(self.total_j)

    @property
    def avg_power_w(self) -> float:
        """Mean power over the epoch in watts (0 for a zero-length epoch)."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def samples_per_j(self) -> float:
        """Training samples per joule (0 when no energy was recorded)."""
        return self.samples / self.energy_j if self.energy_j > 0 else 0.0


@dataclass(frozen=True)
class CheckValue:
    """The monitored metric at one validation, with the run's energy up to it.

    With several validations an epoch (``val_check_interval < 1``) the best of them need not be
    an epoch's last, which is all an :class:`EpochEnergy` holds.

    Attributes:
        epoch: Zero-based epoch the validation ran in.
        metric: The monitored metric it produced.
        total_j: Cumulative energy of the run at that validation (resumes included), in joules.
    """

    epoch: int
    metric: float
    total_j: float

    @property
    def total_kwh(self) -> float:
        """Cumulative energy at the validation in kWh."""
        return j_to_kwh(self.total_j)


class EnergyLedger:
    """Turns cumulative energy figures into per-epoch records, continued across resume.

    Args:
        pue: Power usage effectiveness applied to every measured joule.
        carbon_intensity_g_per_kwh: Grid intensity for CO2, or None to report no CO2.
        mode: Direction of the monitored metric.

    Example:
        >>> ledger = EnergyLedger(pue=1.5, carbon_intensity_g_per_kwh=400.0, mode="max")
        >>> ledger.begin()
        >>> rec = ledger.close_epoch(0, measured_j=2.4e6, faults=0, samples=1000, duration_s=60.0,
        ...                          source="estimate", metric=50.0)
        >>> round(rec.energy_kwh, 6), round(rec.co2_kg, 6)
        (1.0, 0.4)
        >>> rec = ledger.close_epoch(1, measured_j=4.8e6, faults=0, samples=1000, duration_s=60.0,
        ...                          source="estimate", metric=60.0)
        >>> rec.total_kwh, rec.marginal_per_kwh
        (2.0, 10.0)
    """

    def __init__(
        self, pue: float = 1.0, carbon_intensity_g_per_kwh: float | None = None, mode: Mode = "min"
    ) -> None:
        self.pue = float(pue)
        self.carbon_intensity_g_per_kwh = carbon_intensity_g_per_kwh
        self.mode: Mode = mode
        self.history: list[EpochEnergy] = []
        self.offset_j = 0.0  # energy of earlier processes of this run (restored on resume)
        self.baseline_metric: float | None = None  # metric before the first epoch, when known
        self.best_check: CheckValue | None = None  # the best validation of the run, any in an epoch
        # Every validation inside an epoch (val_check_interval < 1), in order: the epochs' records
        # hold only each epoch's last.
        self.checks: list[CheckValue] = []
        self.partial_before = False  # a restored run that was already partial
        # A measurement fault in energy booked outside the epochs (a fit's setup, its end-of-fit
        # work, a Tuner search): in the run's total, so the run is partial, though no epoch is.
        self.outside_partial = False
        # What the run measured outside its epochs - before each fit's first epoch (setup), and
        # after earlier fits' last epoch (end-of-fit work): in the run's total, in no epoch, and
        # kept out of the epochs' cumulative totals (and so of the costs a stopper projects from:
        # one-offs, not the cost of training; its energy budget counts them).
        self.outside_epochs_j = 0.0
        # Its CO2, priced when it was used (None: some of it had no intensity then)
        self.outside_co2_kg: float | None = 0.0
        # The part of outside_epochs_j measured before the first epoch of each fit (setup, the
        # sanity check, Lightning's batch-size and learning-rate finders, what other callbacks do
        # in on_fit_start/on_train_start): in the run's total, in no epoch (:meth:`begin_epochs`).
        self.before_epochs_j = 0.0
        # What this process's meters had measured before its first epoch began and no epoch
        # holds (J before PUE): booked outside the epochs, so their cumulative totals leave it out.
        self._excluded_measured_j = 0.0
        self._last_total_j = 0.0
        self._last_faults = 0
        # The reading that began the epoch in progress was stale (kept a domain's last good
        # figure): the energy it missed comes in this epoch, which is partial.
        self._open_stale = False
        # An epoch a checkpoint caught open (saved before the epoch was closed): its energy is
        # in offset_j, its samples and time are added when the epoch closes after the resume.
        self._carry_samples = 0
        self._carry_duration_s = 0.0
        self._carry_partial = False
        # CO2 of the energy before a resume, as recorded then (another region or intensity may
        # apply now): (energy in J, its CO2 in kg, None when it had no intensity).
        self._co2_before: tuple[float, float | None] = (0.0, None)

    # -- feeding -------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start this process's accounting on meters that were just started (reading zero).

        The run's total so far (a restored checkpoint's, or an earlier ``fit`` with the same
        ledger) is kept: later epochs add to it.
        """
        self.offset_j = self._last_total_j
        self._last_faults = 0
        self._open_stale = False
        self._excluded_measured_j = 0.0

    def begin_epochs(self, measured_j: float, faults: int, stale: bool = False) -> float:
        """Book what was measured before this process's first epoch began outside the epochs.

        The setup of the fit (the sanity check, Lightning's ``BatchSizeFinder`` and
        ``LearningRateFinder`` searching in ``on_fit_start``, other callbacks' start hooks) is in
        the run's total and its CO2 (:meth:`run_total_j`, :meth:`run_co2_kg`, priced at the
        intensity now) but in no epoch: the epochs' cumulative totals (:meth:`total_j_at`) start
        from here, and a fault before it does not make the first epoch partial.

        Args:
            measured_j: Cumulative measured energy of all ranks since the meters started, in J
                (before PUE), when the first epoch begins.
            faults: Cumulative measurement faults of all ranks at that reading (any makes the
                run partial, :attr:`partial`).
            stale: Whether that reading kept a domain's last good figure: the energy it missed
                comes in the first epoch, which is partial too (:meth:`close_epoch`).

        Returns:
            The energy booked, PUE applied, in joules.

        Example:
            >>> ledger = EnergyLedger(pue=2.0)
            >>> ledger.begin()
            >>> ledger.begin_epochs(measured_j=5.0, faults=0)
            10.0
            >>> record = ledger.close_epoch(0, measured_j=8.0, faults=0, samples=1, duration_s=1.0,
            ...                             source="rapl")
            >>> record.energy_j
            6.0
            >>> ledger.run_total_j(measured_j=8.0), ledger.before_epochs_j
            (16.0, 10.0)
        """
        energy_j = self.unbooked_j(measured_j)
        self.add_before_epochs(energy_j, partial=faults > self._last_faults)
        self._excluded_measured_j += energy_j / self.pue
        self._last_faults = faults
        self._open_stale = bool(stale)
        return energy_j

    def unbooked_j(self, measured_j: float) -> float:
        """What no epoch holds at a measured figure (no closed epoch, no epoch a checkpoint caught open).

        Before this process's first epoch began (:meth:`begin_epochs`) that is its setup, which
        :meth:`begin_epochs` books outside the epochs; after, the energy of the epoch in progress.

        Args:
            measured_j: Cumulative measured energy of all ranks since the meters started, in J
                (before PUE).

        Returns:
            The energy, PUE applied, in joules.
        """
        return max(0.0, self.total_j_at(measured_j) - max(self.offset_j, self._last_total_j))

    def carried_open_epoch(self) -> tuple[float, bool]:
        """The energy of the epoch a restored checkpoint caught open (:meth:`carry_open_epoch`).

        Returns:
            Its energy (PUE applied, J; 0 when none is carried) and whether it was partial.
        """
        return max(0.0, self.offset_j - self._last_total_j), self._carry_partial

    def priced_now(self, energy_j: float) -> float | None:
        """CO2-eq in kg of ``energy_j`` joules at the intensity now, or None when none is known."""
        intensity = self.carbon_intensity_g_per_kwh
        return None if intensity is None else co2_kg(energy_j / J_PER_KWH, intensity)

    def total_j_at(self, measured_j: float) -> float:
        """Cumulative energy of the run's epochs (PUE applied, resumes included) for a measured figure.

        What was measured before this process's first epoch (:meth:`begin_epochs`) is left out:
        it is outside the epochs.
        """
        return self.offset_j + self.pue * max(0.0, measured_j - self._excluded_measured_j)

    def run_total_j(self, measured_j: float) -> float:
        """The whole run's energy at a final reading: its epochs, and everything outside them.

        What the meters measured after the last closed epoch, what earlier fits of the run
        measured after theirs (:meth:`close_fit`), and what every fit measured before its first
        epoch (:meth:`begin_epochs`).
        """
        return max(self._last_total_j, self.total_j_at(measured_j)) + self.outside_epochs_j

    def close_fit(self, measured_j: float, faults: int = 0) -> None:
        """Keep what a fit that ended measured after its last epoch, for the run's total.

        Another ``fit`` of the same run (the same Trainer, a larger ``max_epochs``) starts its
        meters from zero, and its epochs continue from the last closed epoch's total: without this
        the first fit's end-of-fit work would be left out of the run's total, and a fault in it
        (or in a fit that closed no epoch) would no longer make the run partial.

        Args:
            measured_j: The fit's final reading (J before PUE, since its meters started).
            faults: The measurement faults in that reading (cumulative since the meters started).

        Example:
            >>> ledger = EnergyLedger()
            >>> ledger.begin()
            >>> _ = ledger.close_epoch(0, measured_j=4.0, faults=0, samples=1, duration_s=1.0, source="rapl")
            >>> ledger.close_fit(measured_j=5.0, faults=1)  # the final reading failed
            >>> ledger.begin()  # a later fit of the run
            >>> ledger.outside_epochs_j, ledger.partial
            (1.0, True)
        """
        tail_j = max(0.0, self.total_j_at(measured_j) - self._last_total_j)
        self.add_outside_epochs(tail_j, partial=faults > self._last_faults or self._open_stale)

    def add_outside_epochs(self, energy_j: float, kg: float | None = None, partial: bool = False) -> None:
        """Book energy used outside every epoch (setup, end-of-fit work).

        Args:
            energy_j: The energy, PUE applied, in joules.
            kg: Its CO2-eq as priced when it was used; None prices it at the intensity now.
            partial: Whether a measurement fault happened while it was measured: the run is
                partial from then on (:attr:`partial`).
        """
        self.outside_partial = self.outside_partial or bool(partial)
        kg = self.priced_now(energy_j) if kg is None else kg
        self.outside_epochs_j, self.outside_co2_kg = plus_priced(
            (self.outside_epochs_j, self.outside_co2_kg), energy_j, kg
        )

    def add_before_epochs(self, energy_j: float, kg: float | None = None, partial: bool = False) -> None:
        """Book energy used before a fit's first epoch (its setup): outside the epochs, and before them.

        Args:
            energy_j: The energy, PUE applied, in joules.
            kg: Its CO2-eq as priced when it was used; None prices it at the intensity now.
            partial: Whether a measurement fault happened while it was measured.
        """
        self.add_outside_epochs(energy_j, kg, partial)
        self.before_epochs_j += energy_j

    def run_co2_kg(self, measured_j: float) -> float | None:
        """CO2 of :meth:`run_total_j`: the epochs' and the tail's, and what the run used outside epochs.

        The epochs and the tail are priced by :meth:`co2_kg`; the energy outside epochs as it was
        when used (at the intensity now where it had none).
        """
        epochs_kg = self.co2_kg(max(self._last_total_j, self.total_j_at(measured_j)))
        if epochs_kg is None:
            return None
        outside_kg = self.outside_co2_kg
        if outside_kg is None:
            outside_kg = co2_kg(self.outside_epochs_j / J_PER_KWH, self.carbon_intensity_g_per_kwh or 0.0)
        return epochs_kg + outside_kg

    def close_epoch(
        self,
        epoch: int,
        *,
        measured_j: float,
        faults: int,
        samples: int,
        duration_s: float,
        source: str,
        metric: float | None = None,
        stale: bool = False,
    ) -> EpochEnergy:
        """Record the end of an epoch.

        The epoch is partial when a measurement fault was counted in it, or when the reading that
        began it was stale: a read that fails keeps the last good figure, so the energy it missed
        lands in the next epoch once the meter answers again - that epoch holds energy of the one
        before.

        Args:
            epoch: Zero-based epoch index.
            measured_j: Cumulative measured energy of all ranks since the meters started, in J.
            faults: Cumulative measurement faults of all ranks.
            samples: Training samples of this epoch, all ranks.
            duration_s: Wall time of the epoch.
            source: Energy source label.
            metric: Monitored metric at the end of the epoch, if logged.
            stale: Whether this reading kept a domain's last good figure
                (:attr:`~lightning_green.energy.readings.EnergyReading.stale`): the next epoch (or
                the end-of-fit work, :meth:`close_fit`) is partial too.

        Returns:
            The epoch's record (also appended to :attr:`history`).

        Example:
            >>> ledger = EnergyLedger()
            >>> ledger.begin()
            >>> def close(epoch, measured_j, faults, stale=False):
            ...     return ledger.close_epoch(epoch, measured_j=measured_j, faults=faults, samples=1,
            ...                               duration_s=1.0, source="nvml", stale=stale)
            >>> close(0, 1.0, faults=1, stale=True).partial  # its closing read failed
            True
            >>> record = close(1, 9.0, faults=1)  # holds what epoch 0's close missed
            >>> record.energy_j, record.partial
            (8.0, True)
            >>> close(2, 10.0, faults=1).partial
            False
        """
        total_j = max(self._last_total_j, self.total_j_at(measured_j))
        energy_j = total_j - self._last_total_j
        partial = self.faults_in_open_epoch(faults)
        record = EpochEnergy(
            epoch=int(epoch),
            energy_j=energy_j,
            total_j=total_j,
            duration_s=float(duration_s) + self._carry_duration_s,
            samples=int(samples) + self._carry_samples,
            source=source,
            partial=partial,
            metric=metric,
            marginal_per_kwh=self._marginal(metric, energy_j, self.history),
            co2_kg=self.co2_kg(total_j),
        )
        self.history.append(record)
        self._last_total_j = total_j
        self._last_faults = faults
        self._open_stale = bool(stale)
        self._carry_samples, self._carry_duration_s, self._carry_partial = 0, 0.0, False
        return record

    def faults_in_open_epoch(self, faults: int) -> bool:
        """Whether the epoch in progress is partial, given the cumulative ``faults``.

        A fault counted in it, a stale reading that began it (:meth:`close_epoch`), or a fault in
        the part of it a checkpoint caught open.
        """
        return faults > self._last_faults or self._open_stale or self._carry_partial

    def attach_metric(self, metric: float) -> EpochEnergy:
        """Give the last closed epoch its metric when it was logged after the epoch was closed.

        Args:
            metric: The monitored metric at the end of that epoch.

        Returns:
            The updated record (also replaced in :attr:`history`).

        Raises:
            IndexError: When no epoch was closed yet.
        """
        last = self.history[-1]
        value = float(metric) if math.isfinite(metric) else None
        marginal = self._marginal(value, last.energy_j, self.history[:-1])
        self.history[-1] = replace(last, metric=value, marginal_per_kwh=marginal)
        return self.history[-1]

    def note_check(self, epoch: int, metric: float, total_j: float) -> CheckValue | None:
        """Record a validation inside an epoch (:attr:`checks`); remember it when the best so far.

        Args:
            epoch: Zero-based epoch the validation ran in.
            metric: The monitored metric it produced (a non-finite value is ignored).
            total_j: Cumulative energy of the run at the validation, in joules.

        Returns:
            The best validation of the run so far, or ``None`` when none had a finite metric.

        Example:
            >>> ledger = EnergyLedger(mode="min")
            >>> ledger.note_check(0, 0.5, 10.0).metric, ledger.note_check(0, 0.4, 20.0).total_j
            (0.5, 20.0)
            >>> ledger.note_check(1, 0.45, 30.0).metric  # not better: the best stays
            0.4
            >>> [c.metric for c in ledger.checks]  # every one, in order
            [0.5, 0.4, 0.45]
        """
        value = float(metric)
        if not math.isfinite(value):
            return self.best_check
        check = CheckValue(int(epoch), value, float(total_j))
        self.checks.append(check)
        best = self.best_check
        if best is None or (value > best.metric if self.mode == "max" else value < best.metric):
            self.best_check = check
        return self.best_check

    def _marginal(self, metric: float | None, energy_j: float, before: list[EpochEnergy]) -> float | None:
        # Measured from the last epoch that had the metric (epochs without validation have none),
        # over all the energy spent since: with validation every 2nd epoch, the gain of two epochs
        # per the energy of both.
        if metric is None:
            return None
        previous = self.baseline_metric
        for record in reversed(before):
            if record.metric is not None:
                previous = record.metric
                break
            energy_j += record.energy_j
        if previous is None:
            return None
        return marginal_gain_per_kwh(previous, metric, j_to_kwh(energy_j), self.mode)

    def carry_open_epoch(
        self,
        energy_j: float,
        samples: int,
        duration_s: float,
        partial: bool = False,
        co2_kg: float | None = None,
    ) -> None:
        """Continue an epoch that a checkpoint caught open, after restoring that checkpoint.

        Args:
            energy_j: Energy the epoch had used when the checkpoint was saved (PUE applied).
            samples: Training samples it had processed.
            duration_s: Time it had run.
            partial: Whether a measurement fault had happened in it (the epoch stays partial).
            co2_kg: CO2 of that energy at the intensity then (kept as recorded), or ``None``.
        """
        before_j, before_kg = self._co2_before
        if before_kg is not None and co2_kg is not None and before_j == self.offset_j:
            self._co2_before = (before_j + max(0.0, energy_j), before_kg + co2_kg)
        self.offset_j += max(0.0, energy_j)
        self._carry_samples += int(samples)
        self._carry_duration_s += max(0.0, duration_s)
        self._carry_partial = self._carry_partial or bool(partial)

    # -- derived ---------------------------------------------------------------------------------
    @property
    def total_j(self) -> float:
        """Cumulative energy at the last closed epoch (or the restored offset), in joules."""
        return self._last_total_j

    def co2_kg(self, total_j: float) -> float | None:
        """CO2-eq in kg for a cumulative energy, or None when no intensity is known.

        The energy of the run before a resume keeps the CO2 recorded for it then (a run resumed
        in another region is not re-priced); what follows is priced at the intensity now. When the
        earlier part had no intensity, the whole energy is priced at the one now.
        """
        intensity = self.carbon_intensity_g_per_kwh
        if intensity is None:
            return None
        before_j, before_kg = self._co2_before
        if before_kg is None:
            return co2_kg(total_j / J_PER_KWH, intensity)
        return before_kg + co2_kg(max(0.0, total_j - before_j) / J_PER_KWH, intensity)

    def forget_metric(self) -> None:
        """Drop the monitored metric from the records (energy stays): it was another metric's.

        A run resumed with another monitored metric (or direction) must not mix the two: the
        gain per kWh and the best value start again from the next epoch's value.
        """
        self.history = [replace(r, metric=None, marginal_per_kwh=None) for r in self.history]
        self.baseline_metric = None
        self.best_check = None
        self.checks = []

    @property
    def partial(self) -> bool:
        """Whether any reading in the run's total so far was partial (before a resume included).

        A partial epoch, an epoch a checkpoint caught open partial, or a fault in energy booked
        outside the epochs (:attr:`outside_partial`): the run stays partial across later fits and
        resumes (:meth:`state_dict` keeps it as ``partial``).
        """
        return (
            self.partial_before
            or self.outside_partial
            or self._carry_partial
            or any(r.partial for r in self.history)
        )

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: totals and history."""
        return {
            "total_j": self._last_total_j,
            "history": [asdict(r) for r in self.history],
            "baseline_metric": self.baseline_metric,
            "best_check": None if self.best_check is None else asdict(self.best_check),
            "checks": [asdict(c) for c in self.checks],
            "partial": self.partial,
            "co2_kg": self.co2_kg(self._last_total_j),
            "outside_epochs_j": self.outside_epochs_j,
            "outside_co2_kg": self.outside_co2_kg,
            "before_epochs_j": self.before_epochs_j,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state: later epochs add to the restored total.

        Args:
            state: What :meth:`state_dict` returned.
        """
        self.history = [EpochEnergy(**r) for r in state.get("history", [])]
        self.offset_j = float(state.get("total_j", 0.0))
        self.baseline_metric = state.get("baseline_metric")
        best = state.get("best_check")
        self.best_check = None if best is None else CheckValue(**best)
        self.checks = [CheckValue(**c) for c in state.get("checks", [])]  # older checkpoints: none
        self.partial_before = bool(state.get("partial", False))
        self.outside_epochs_j = float(state.get("outside_epochs_j", 0.0))
        outside_kg = state.get("outside_co2_kg", 0.0 if self.outside_epochs_j == 0 else None)
        self.outside_co2_kg = None if outside_kg is None else float(outside_kg)
        self.before_epochs_j = float(state.get("before_epochs_j", 0.0))
        self._last_total_j = self.offset_j
        # The CO2 recorded for the energy so far (older checkpoints: the last epoch's figure).
        saved_kg = state.get("co2_kg", self.history[-1].co2_kg if self.history else None)
        self._co2_before = (self.offset_j, None if saved_kg is None else float(saved_kg))


def plus_priced(
    priced: tuple[float, float | None], energy_j: float, kg: float | None
) -> tuple[float, float | None]:
    """Energy and its CO2, plus ``energy_j`` of ``kg``: the CO2 is ``None`` when some had no price.

    Example:
        >>> plus_priced((1.0, 0.5), 2.0, 0.25), plus_priced((1.0, 0.5), 2.0, None)
        ((3.0, 0.75), (3.0, None))
    """
    before_j, before_kg = priced
    return before_j + energy_j, None if before_kg is None or kg is None else before_kg + kg


def with_outside_epochs(
    state: dict[str, Any],
    energy_j: float,
    kg: float | None,
    *,
    before_epochs: bool = False,
    partial: bool = False,
) -> dict[str, Any]:
    """A copy of a ledger's saved ``state`` with ``energy_j`` (its CO2 ``kg``) outside the epochs.

    For a checkpoint saved after a fit's last epoch: what was measured since that epoch closed
    is end-of-fit work, which a resumed run must not count in its next epoch. For one saved before
    the fit's first epoch began (``before_epochs``: a finder's checkpoint before its search, one
    saved in ``on_train_start``): what was measured so far is that fit's setup, also in
    ``before_epochs_j``. The live ledger is left as it is (its fit books the same energy when it
    ends, :meth:`EnergyLedger.close_fit`, or when its first epoch begins, :meth:`EnergyLedger.begin_epochs`).
    ``partial``: a measurement fault happened in that energy, so the saved run is partial.

    Example:
        >>> with_outside_epochs({"total_j": 5.0, "outside_epochs_j": 1.0, "outside_co2_kg": 0.5}, 2.0, 0.25)
        {'total_j': 5.0, 'outside_epochs_j': 3.0, 'outside_co2_kg': 0.75}
        >>> with_outside_epochs({"total_j": 0.0}, 2.0, None, before_epochs=True)
        {'total_j': 0.0, 'outside_epochs_j': 2.0, 'outside_co2_kg': None, 'before_epochs_j': 2.0}
        >>> with_outside_epochs({"total_j": 0.0, "partial": False}, 2.0, None, partial=True)["partial"]
        True
    """
    before = (float(state.get("outside_epochs_j", 0.0)), state.get("outside_co2_kg", 0.0))
    outside_j, outside_kg = plus_priced(before, energy_j, kg)
    updated = {**state, "outside_epochs_j": outside_j, "outside_co2_kg": outside_kg}
    if before_epochs:
        updated["before_epochs_j"] = float(state.get("before_epochs_j", 0.0)) + energy_j
    if partial:
        updated["partial"] = True
    return updated
