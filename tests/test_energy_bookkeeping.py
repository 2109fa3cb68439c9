"""Where measured energy is booked: a failed read's energy in the next epoch, a fit that trains no
epoch, and the environment the implicit EnergyMonitor reads, refused at construction."""

from __future__ import annotations

import json
import warnings

import pytest
from conftest import AnyCallback, make_trainer
from doubles import ScriptedMeter
from nvml_double import FakeNvml, NVMLError_Unknown, gpus

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyAwareEarlyStopping, EnergyMonitor
from lightning_green.callbacks import energy_monitor
from lightning_green.energy.meter import EnergyMeasurementWarning, EnergyMeter
from lightning_green.energy.nvml import NvmlMeter
from lightning_green.energy.session import EnergySession
from lightning_green.energy.units import J_PER_KWH


class _FailingReads(EnergyMeter):
    """1 J more at every read; the reads numbered in ``failing`` (1-based) raise."""

    source = "rapl"

    def __init__(self, failing: set[int]) -> None:
        super().__init__()
        self.failing, self.reads = failing, 0

    def _start(self) -> None:
        self.reads = 0

    def _read_j(self) -> dict[str, float]:
        self.reads += 1
        if self.reads in self.failing:
            raise OSError("unreadable")
        return {"package-0": float(self.reads)}


@pytest.mark.parametrize("failing", [{2}, {1}], ids=["epoch-close", "epochs-begin"])
def test_the_epoch_after_a_failed_read_holds_energy_of_the_one_before_and_is_partial(failing):
    """A read that fails keeps the last good figure, so the energy it missed lands in the next
    interval when the meter answers again: that interval is partial too, the one after is not."""
    session = EnergySession()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session.start(_FailingReads(failing))
        session.begin_epochs()  # read 1
        records = [session.close_epoch(epoch)[0] for epoch in range(3)]  # reads 2, 3, 4
        open_epoch = session.open_epoch()  # read 5
    assert len([w for w in caught if issubclass(w.category, EnergyMeasurementWarning)]) == 1
    ledger = session.ledger
    assert ledger.before_epochs_j + records[-1].total_j == pytest.approx(4.0)  # nothing lost: 4 reads
    if failing == {2}:  # the read closing epoch 0 failed: epoch 1 holds what it missed
        assert [r.energy_j for r in records] == pytest.approx([0.0, 2.0, 1.0])
        assert [r.partial for r in records] == [True, True, False]
    else:  # the read beginning the epochs failed: epoch 0 holds the setup's energy
        assert [r.energy_j for r in records] == pytest.approx([2.0, 1.0, 1.0])
        assert [r.partial for r in records] == [True, False, False]
        assert ledger.before_epochs_j == 0.0 and ledger.outside_partial
    assert not open_epoch.partial


def test_a_failed_read_closing_one_epoch_marks_the_next_partial_too(tmp_path, sqlite_uri, monkeypatch, ns):
    """One GPU through the NVML double (1000 J a counter read, failed or not); the counter read
    closing epoch 1 fails once. One warning; epoch 1 is partial and so is epoch 2, which holds the
    energy epoch 1's close missed - in the history, the summary, energy_summary.json; epochs 0 and 3
    are not."""
    from mlflow.tracking import MlflowClient

    nvml = FakeNvml(gpus(1))
    gpu = nvml.gpus[0]
    gpu.energy_mj_fn = lambda _t: gpu.counter_calls * 1_000_000.0  # a failed read misses its 1000 J

    class FailAtEpochOne(AnyCallback):
        def on_train_epoch_start(self, trainer, pl_module):  # after the monitor's: no read until the close
            if trainer.current_epoch == 1:
                gpu.counter_errors.append(NVMLError_Unknown())

    monkeypatch.setattr(
        energy_monitor, "build_meter", lambda spec, **_: NvmlMeter([0], nvml=nvml, environ={})
    )
    logger = ns.loggers.MLFlowLogger(experiment_name="faults", tracking_uri=sqlite_uri)
    monitor = EnergyMonitor()
    trainer = make_trainer(
        tmp_path,
        [monitor, FailAtEpochOne()],
        logger=logger,
        max_epochs=4,
        lightning=ns,
        limit_train_batches=2,
        limit_val_batches=1,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    faults = [w for w in caught if issubclass(w.category, EnergyMeasurementWarning)]
    assert len(faults) == 1 and "partial" in str(faults[0].message)
    assert [r.partial for r in monitor.history] == [False, True, True, False]
    assert [r.energy_j for r in monitor.history] == pytest.approx([1000.0, 0.0, 2000.0, 1000.0])
    saved = json.loads(monitor.summary_path.read_text())
    assert [e["partial"] for e in saved["per_epoch"]] == [False, True, True, False]
    assert saved["partial"] is True
    assert MlflowClient(sqlite_uri).get_run(logger.run_id).data.tags["lightning_green.partial"] == "true"


def test_a_fit_that_trains_no_epoch_books_its_setup_before_the_first_epoch(tmp_path, monkeypatch, ns):
    """A second fit on the same Trainer with max_epochs already reached: Lightning runs its setup
    and sanity check but skips the training loop (no on_train_start/on_train_end). What it measured
    until its end counts before the first epoch, as README says; only its final reading after."""
    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: ScriptedMeter())  # 1000 J a read
    monitor = EnergyMonitor(summary=False)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=2, lightning=ns, limit_train_batches=2)
    module, data = ns.DigitsClassifier(), ns.DigitsDataModule()
    trainer.fit(module, datamodule=data)  # reads: the first epoch's start, two epoch ends, the final one
    first = monitor.last_summary
    assert first["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(1000.0)
    assert first["kwh_after_last_epoch"] * J_PER_KWH == pytest.approx(1000.0)
    trainer.fit(module, datamodule=data)  # trains nothing: its end (1000 J), the final reading (1000 J)
    second = monitor.last_summary
    assert len(monitor.history) == 2 and second["epochs"] == 2
    assert second["total_kwh"] * J_PER_KWH == pytest.approx(6000.0)
    assert second["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(2000.0)  # both fits' setups
    assert second["kwh_after_last_epoch"] * J_PER_KWH == pytest.approx(2000.0)  # both fits' ends


@pytest.mark.parametrize(
    "plan", [dict(max_epochs=3, limit_train_batches=0), dict(max_epochs=0)], ids=["no-batches", "no-epochs"]
)
def test_a_new_run_that_trains_no_epoch_has_its_energy_in_the_summarys_parts(tmp_path, monkeypatch, ns, plan):
    """A fit of a new run that trains no epoch: what it measured up to the end of its training loop
    (setup, sanity check) is before the first epoch, the rest after; the parts add up to the
    total, ``energy/run_before_epochs_kwh`` is logged with ``energy/run_kwh``, and the duration is
    the fit's (there are no epochs to sum)."""
    import csv

    from lightning_green.report import format_summary

    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: ScriptedMeter())  # 1000 J a read
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    logger = ns.loggers.CSVLogger(str(tmp_path), name="none")
    trainer = make_trainer(tmp_path, [monitor], logger=logger, lightning=ns, **plan)
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    summary = monitor.last_summary
    assert summary["epochs"] == 0 and summary["total_kwh"] * J_PER_KWH == pytest.approx(2000.0)
    # The training loop's end (or the fit's, where Lightning skipped the loop), then the final reading.
    assert summary["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(1000.0)
    assert summary["kwh_after_last_epoch"] * J_PER_KWH == pytest.approx(1000.0)
    assert summary["duration_s"] > 0
    assert "before the first epoch" in format_summary(summary)
    with (tmp_path / "none" / "version_0" / "metrics.csv").open() as f:
        logged = {k: float(v) for row in csv.DictReader(f) for k, v in row.items() if v and k != "step"}
    assert logged["energy/run_kwh"] == pytest.approx(summary["total_kwh"])
    assert logged["energy/run_before_epochs_kwh"] == pytest.approx(summary["kwh_before_first_epoch"])


def _build(name: str):
    return {
        "EnergyMonitor": lambda: EnergyMonitor(),
        "EnergyAwareEarlyStopping": lambda: EnergyAwareEarlyStopping(monitor="val_acc", mode="max"),
        "AdaptiveBatchSize": lambda: AdaptiveBatchSize(),
        "AdaptivePrecision": lambda: AdaptivePrecision(),
    }[name]


CALLBACKS = ["EnergyMonitor", "EnergyAwareEarlyStopping", "AdaptiveBatchSize", "AdaptivePrecision"]


@pytest.mark.parametrize("name", CALLBACKS)
@pytest.mark.parametrize(
    ("variable", "value", "match"),
    [
        ("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "-5", "must be a positive number of watts per core"),
        ("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "abc", "must be a positive number of watts per core"),
        ("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "0", "must be a positive number of watts per core"),
        ("LIGHTNING_GREEN_CARBON_INTENSITY", "-5", "must be a finite number of grams CO2-eq per kWh >= 0"),
    ],
)
def test_a_bad_environment_value_is_refused_at_construction(monkeypatch, name, variable, value, match):
    """Every callback that reads the variable, itself or through the EnergyMonitor it adds at fit
    setup, refuses a bad value when it is built - before a logger starts a run - naming it."""
    monkeypatch.delenv("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", raising=False)
    monkeypatch.delenv("LIGHTNING_GREEN_CARBON_INTENSITY", raising=False)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=rf"^{variable} {match}, got '{value}'$"):
        _build(name)()


@pytest.mark.parametrize("name", CALLBACKS)
def test_good_or_empty_environment_values_are_taken(monkeypatch, name):
    monkeypatch.setenv("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "7.5")
    monkeypatch.setenv("LIGHTNING_GREEN_CARBON_INTENSITY", "FR")
    _build(name)()
    monkeypatch.setenv("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "")
    monkeypatch.setenv("LIGHTNING_GREEN_CARBON_INTENSITY", " ")
    _build(name)()


def test_an_explicit_cpu_power_takes_precedence_over_a_bad_environment(monkeypatch):
    monkeypatch.setenv("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "-5")
    assert EnergyMonitor(cpu_power_per_core_w=12.0).cpu_power_per_core_w == 12.0
