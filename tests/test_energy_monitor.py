"""EnergyMonitor on real fits: what a user sees in MLflow, TensorBoard, CSV and the progress bar."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import PL, AnyCallback, KillAt, KilledError, make_trainer
from digits import DigitsClassifier, DigitsDataModule
from doubles import ScriptedMeter
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger

from lightning_green import EnergyMonitor
from lightning_green.callbacks import MonitorNotLoggedError, energy_monitor
from lightning_green.energy.units import J_PER_KWH
from lightning_green.report import format_summary

EPOCH_KEYS = ["energy/epoch_kwh", "energy/total_kwh", "energy/avg_power_w", "energy/samples_per_j"]


def _fit(tmp_path, monitor_cb, max_epochs=3, logger=False, lightning=PL, **kwargs):
    pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path, [monitor_cb], logger=logger, max_epochs=max_epochs, lightning=lightning, **kwargs
    )
    trainer.fit(lightning.DigitsClassifier(), datamodule=lightning.DigitsDataModule(batch_size=64))
    return trainer


def _history(client, run_id, key):
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


def test_mlflow_sqlite_per_epoch_metrics_param_and_summary(tmp_path, sqlite_uri, ns):
    from mlflow.tracking import MlflowClient

    logger = ns.loggers.MLFlowLogger(experiment_name="monitor", tracking_uri=sqlite_uri)
    monitor = EnergyMonitor(monitor="val_acc", mode="max", carbon_intensity_g_per_kwh=400.0, pue=1.25)
    _fit(tmp_path, monitor, max_epochs=4, logger=logger, lightning=ns)

    client = MlflowClient(sqlite_uri)
    run = client.get_run(logger.run_id)
    assert run.data.params["lightning_green.energy_source"] == "estimate"
    assert run.data.params["lightning_green.pue"] == "1.25"
    assert run.data.tags["lightning_green.partial"] == "false"

    series = {key: _history(client, logger.run_id, key) for key in [*EPOCH_KEYS, "energy/co2_kg"]}
    for key, values in series.items():
        assert len(values) == 4, f"{key}: expected one value per epoch, got {len(values)}"
    totals = [m.value for m in series["energy/total_kwh"]]
    epochs = [m.value for m in series["energy/epoch_kwh"]]
    assert all(e > 0 for e in epochs)
    assert totals == sorted(totals) and totals[0] > 0
    assert totals == pytest.approx([sum(epochs[: i + 1]) for i in range(4)], rel=1e-6)
    assert [m.value for m in series["energy/co2_kg"]] == pytest.approx([t * 0.4 for t in totals], rel=1e-6)

    # The marginal metric is the change of the logged val_acc over the epoch per epoch kWh.
    acc = {m.step: m.value for m in _history(client, logger.run_id, "val_acc")}
    marginal = _history(client, logger.run_id, "energy/marginal_val_acc_per_kwh")
    assert len(marginal) >= 3
    steps = sorted(acc)
    epoch_kwh = {m.step: m.value for m in series["energy/epoch_kwh"]}
    for m in marginal:
        i = steps.index(m.step)
        if i == 0:
            continue  # relative to the sanity-check baseline
        expected = (acc[steps[i]] - acc[steps[i - 1]]) / epoch_kwh[m.step]
        assert m.value == pytest.approx(expected, rel=1e-4, abs=1e-6)

    # Summary: printed figures as JSON artifact and in the logger's folder.
    artifacts = [a.path for a in client.list_artifacts(logger.run_id, "lightning_green")]
    assert {"lightning_green/energy_summary.json", "lightning_green/energy_report.png"} <= set(artifacts)
    # Locally: in a folder of its own run, under the trainer's root.
    assert monitor.summary_path == tmp_path / "energy_reports" / logger.run_id / "energy_summary.json"
    assert monitor.plot_path == monitor.summary_path.with_name("energy_report.png")
    summary = json.loads(Path(monitor.summary_path).read_text())
    assert summary["energy_source"] == "estimate" and summary["is_estimate"] is True
    assert summary["epochs"] == 4
    assert summary["total_kwh"] >= totals[-1]
    # The logged series holds the epochs; the summary says what preceded the first and followed the last.
    assert summary["kwh_after_last_epoch"] >= 0 and summary["kwh_before_first_epoch"] >= 0
    outside_kwh = summary["kwh_before_first_epoch"] + summary["kwh_after_last_epoch"]
    assert totals[-1] + outside_kwh == pytest.approx(summary["total_kwh"], rel=1e-6)
    assert summary["best_metric"] == pytest.approx(max(acc.values()), rel=1e-6)
    assert summary["co2_kg"] == pytest.approx(summary["total_kwh"] * 0.4, rel=1e-9)
    # The whole run, what followed the last epoch included, is one metric each in the run.
    run_kwh = _history(client, logger.run_id, "energy/run_kwh")
    run_co2 = _history(client, logger.run_id, "energy/run_co2_kg")
    assert [m.value for m in run_kwh] == pytest.approx([summary["total_kwh"]], rel=1e-6)
    assert [m.value for m in run_co2] == pytest.approx([summary["co2_kg"]], rel=1e-6)
    assert run_kwh[0].step >= series["energy/total_kwh"][-1].step  # at the end of the fit


def test_every_logger_and_progress_bar(tmp_path):
    tb = TensorBoardLogger(str(tmp_path), name="tb")
    csv = CSVLogger(str(tmp_path), name="csv")
    trainer = _fit(tmp_path, EnergyMonitor(monitor="val_loss"), max_epochs=2, logger=[tb, csv])
    assert "energy/total_kwh" in trainer.progress_bar_metrics
    assert trainer.callback_metrics["energy/total_kwh"] > 0

    import csv as csvlib

    rows = list(csvlib.DictReader((Path(csv.log_dir) / "metrics.csv").read_text().splitlines()))
    for key in [*EPOCH_KEYS, "energy/marginal_val_loss_per_kwh"]:
        values = [r[key] for r in rows if r.get(key)]
        assert len(values) == 2, key
    assert len([r for r in rows if r.get("energy/run_kwh")]) == 1  # the whole run, once, at the end
    hparams = (Path(csv.log_dir) / "hparams.yaml").read_text()
    assert "lightning_green.energy_source: estimate" in hparams

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tb.log_dir)
    acc.Reload()
    assert len(acc.Scalars("energy/total_kwh")) == 2
    assert (Path(tb.log_dir) / "energy_summary.json").exists()


def test_monitor_never_logged_lists_logged_metrics(tmp_path):
    with pytest.raises(MonitorNotLoggedError, match=r"val_accuracy.*\['train_loss', 'val_acc', 'val_loss'\]"):
        _fit(tmp_path, EnergyMonitor(monitor="val_accuracy"), max_epochs=1)


def test_monitor_not_strict_warns_and_keeps_measuring(tmp_path):
    monitor = EnergyMonitor(monitor="val_accuracy", strict=False)
    with pytest.warns(UserWarning, match="val_accuracy"):
        _fit(tmp_path, monitor, max_epochs=2)
    assert len(monitor.history) == 2 and monitor.total_kwh > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"meter": "gpu"}, r"meter.*'gpu'.*auto"),
        ({"pue": -1.0}, r"pue.*-1\.0"),
        ({"pue": 0.5}, r"pue.*>= 1\.0"),
        ({"mode": "maximize"}, r"mode.*'maximize'"),
        ({"carbon_intensity_g_per_kwh": -3}, r"carbon_intensity_g_per_kwh.*-3"),
        ({"region": "Atlantis"}, r"region='Atlantis'.*allowed"),
        # An invalid region is refused even where an explicit intensity takes precedence over it.
        (
            {"region": "XX", "carbon_intensity_g_per_kwh": 300.0},
            r"region='XX' is not a known region code.*FR",
        ),
        (
            {"region": 42, "carbon_intensity_g_per_kwh": 300.0},
            r"region must be a region code \(a string\), got 42",
        ),
        ({"region": "", "carbon_intensity_g_per_kwh": 0}, r"region='' is not a known region code"),
        ({"cpu_power_per_core_w": 0}, r"cpu_power_per_core_w.*0"),
        ({"step_interval": -1}, r"step_interval.*-1"),
        ({"sampling_interval_s": 0}, r"sampling_interval_s.*0"),
        ({"sampling_interval_s": True}, r"sampling_interval_s.*True"),
        ({"pue": "1.5"}, r"pue.*'1\.5'"),
        ({"pue": True}, r"pue.*True"),
        ({"carbon_intensity_g_per_kwh": "300"}, r"carbon_intensity_g_per_kwh.*'300'"),
        ({"carbon_intensity_g_per_kwh": True}, r"carbon_intensity_g_per_kwh.*True"),
        ({"cpu_power_per_core_w": "10"}, r"cpu_power_per_core_w.*'10'"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyMonitor(**kwargs)


def test_an_explicit_intensity_takes_precedence_over_a_valid_region():
    monitor = EnergyMonitor(region="no", carbon_intensity_g_per_kwh=300.0)
    assert (monitor.carbon_intensity_g_per_kwh, monitor.carbon_intensity_origin) == (300.0, "argument")
    assert monitor.region == "no"
    assert EnergyMonitor(region=" no ").carbon_intensity_origin == "region NO"


def test_carbon_intensity_from_environment(monkeypatch):
    monkeypatch.setenv("LIGHTNING_GREEN_CARBON_INTENSITY", "FR")
    assert EnergyMonitor().carbon_intensity_g_per_kwh == 55.0
    monkeypatch.setenv("LIGHTNING_GREEN_CARBON_INTENSITY", "123.5")
    assert EnergyMonitor().carbon_intensity_g_per_kwh == 123.5
    monkeypatch.setenv("LIGHTNING_GREEN_CARBON_INTENSITY", "1e400")  # the error quotes what was set
    with pytest.raises(ValueError, match=r"LIGHTNING_GREEN_CARBON_INTENSITY.*got '1e400'"):
        EnergyMonitor()
    monkeypatch.delenv("LIGHTNING_GREEN_CARBON_INTENSITY")
    assert EnergyMonitor().carbon_intensity_g_per_kwh is None


def test_resume_continues_total_series(tmp_path, sqlite_uri):
    """A run stopped after epoch 3 and resumed reports totals continuing from the checkpoint."""
    from mlflow.tracking import MlflowClient

    ckpt_dir = tmp_path / "ckpt"
    logger = MLFlowLogger(experiment_name="resume", tracking_uri=sqlite_uri)
    first = EnergyMonitor(monitor="val_loss")
    pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path,
        [first, ModelCheckpoint(dirpath=ckpt_dir, save_last=True)],
        logger=logger,
        max_epochs=3,
        enable_checkpointing=True,
    )
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(batch_size=64))
    saved = first.history
    assert len(saved) == 3

    # A new process would construct everything anew: so do we.
    resumed_logger = MLFlowLogger(experiment_name="resume", tracking_uri=sqlite_uri, run_id=logger.run_id)
    second = EnergyMonitor(monitor="val_loss")
    pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path,
        [second, ModelCheckpoint(dirpath=ckpt_dir, save_last=True)],
        logger=resumed_logger,
        max_epochs=5,
        enable_checkpointing=True,
    )
    trainer.fit(
        DigitsClassifier(), datamodule=DigitsDataModule(batch_size=64), ckpt_path=str(ckpt_dir / "last.ckpt")
    )

    history = second.history
    assert [r.epoch for r in history] == [0, 1, 2, 3, 4]
    assert history[:3] == saved  # restored as recorded
    assert history[3].total_j == pytest.approx(saved[-1].total_j + history[3].energy_j)
    assert history[3].energy_j > 0 and history[4].total_j > history[3].total_j
    # The marginal gain of the first resumed epoch is relative to the restored epoch's metric.
    assert history[3].marginal_per_kwh == pytest.approx(
        -(history[3].metric - saved[-1].metric) / (history[3].energy_j / J_PER_KWH), rel=1e-6
    )

    totals = [m.value for m in _history(MlflowClient(sqlite_uri), logger.run_id, "energy/total_kwh")]
    assert len(totals) == 5 and totals == sorted(totals)
    assert totals[3] > totals[2]


def test_checkpoint_state_round_trip_without_fit():
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    monitor.ledger.begin()
    monitor.ledger.close_epoch(
        0, measured_j=7.2e6, faults=0, samples=10, duration_s=1.0, source="rapl", metric=1.0
    )
    other = EnergyMonitor(monitor="val_acc", mode="max")
    other.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert other.total_kwh == pytest.approx(2.0)
    assert other.history == monitor.history


def _step_logged(classifier: type) -> type:
    class StepLogged(classifier):
        """Logs its training loss on every step, as a user's module does."""

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("loss_per_step", loss, on_step=True, on_epoch=False)
            return loss

    return StepLogged


def test_step_interval_logs_step_energy_every_interval_once(tmp_path, ns):
    """Every step_interval optimizer steps, whatever Trainer(log_every_n_steps) says, at the step
    Lightning logs those batches' own step metrics at (so the two join on ``step``)."""
    csv = ns.loggers.CSVLogger(str(tmp_path), name="csv")
    pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path,
        [EnergyMonitor(step_interval=10)],
        logger=csv,
        max_epochs=2,
        lightning=ns,
        log_every_n_steps=10,
    )
    trainer.fit(ns.module(_step_logged)(), datamodule=ns.DigitsDataModule(batch_size=64))
    import csv as csvlib

    rows = list(csvlib.DictReader((Path(csv.log_dir) / "metrics.csv").read_text().splitlines()))
    logged = [(int(r["step"]), float(r["energy/step_j"])) for r in rows if r.get("energy/step_j")]
    # From the first due step (the 10th, measured from the start of training): one value per
    # interval, none twice, each on the step of the loss of the interval's last batch.
    assert [step for step, _ in logged] == list(range(9, trainer.global_step, 10))
    assert all(value > 0 and math.isfinite(value) for _, value in logged)
    loss_steps = [int(r["step"]) for r in rows if r.get("loss_per_step")]
    assert loss_steps == [step for step, _ in logged]


def test_samples_per_joule_counts_training_samples(tmp_path):
    monitor = EnergyMonitor()
    _fit(tmp_path, monitor, max_epochs=2)
    n_train = 1797 - round(1797 * 0.2)
    for record in monitor.history:
        assert record.samples == n_train
        assert record.samples_per_j == pytest.approx(n_train / record.energy_j)


class _KilledError(Exception):
    pass


class _KillAt(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise _KilledError


def test_checkpoint_saved_before_the_epoch_closed_keeps_its_energy(tmp_path, monkeypatch):
    """Validation every 2 epochs: ModelCheckpoint saves at validation end, before the epoch closes."""
    from doubles import install_scripted_meter

    install_scripted_meter(monkeypatch)  # +1000 J per meter read: exact bookkeeping
    kwargs = dict(
        limit_train_batches=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=2,
        enable_checkpointing=True,
    )

    def run(root, extra, ckpt_path=None, max_epochs=5):
        monitor = EnergyMonitor(monitor="val_loss")
        pl.seed_everything(0)
        trainer = make_trainer(
            root,
            [monitor, ModelCheckpoint(dirpath=root / "ckpt", save_last=True), *extra],
            max_epochs=max_epochs,
            **kwargs,
        )
        trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(batch_size=64), ckpt_path=ckpt_path)
        return monitor

    reference = run(tmp_path / "a", [])
    with pytest.raises(_KilledError):
        run(tmp_path / "b", [_KillAt(2)])
    saved = torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    assert saved["lightning_green.EnergyMonitor"]["open_epoch"]["energy_j"] > 0  # epoch 1 was still open
    resumed = run(tmp_path / "b", [], ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    assert [r.epoch for r in resumed.history] == [r.epoch for r in reference.history]
    assert [r.total_j for r in resumed.history] == [r.total_j for r in reference.history]
    assert [r.energy_j for r in resumed.history] == [r.energy_j for r in reference.history]

    # A measurement fault in the open epoch stays on record across the resume (partial).
    with pytest.raises(_KilledError), pytest.warns(UserWarning, match="scripted read fault"):
        run(tmp_path / "c", [_FaultAt(1), _KillAt(2)])
    saved = torch.load(tmp_path / "c" / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    assert saved["lightning_green.EnergyMonitor"]["open_epoch"]["partial"] is True
    resumed = run(tmp_path / "c", [], ckpt_path=str(tmp_path / "c" / "ckpt" / "last.ckpt"))
    assert [r.partial for r in resumed.history] == [False, True, False, False, False]
    assert resumed.last_summary["partial"] is True


class _FaultAt(pl.Callback):
    """The meter's next read fails (a driver error) once, in epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.done = epoch, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch != self.epoch or self.done:
            return
        self.done = True
        meter = next(cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor)).session._meter
        original = meter._read_j

        def fail():
            meter._read_j = original
            raise RuntimeError("scripted read fault")

        meter._read_j = fail


class _MetricAtEpochEnd(DigitsClassifier):
    """Logs its monitored metric in its own on_train_epoch_end (after plain callbacks ran)."""

    def on_train_epoch_end(self):
        self.log("epoch_score", float(self.current_epoch + 1))


def test_metric_logged_in_the_modules_epoch_end(tmp_path, sqlite_uri):
    """Lightning runs plain callbacks before the module's on_train_epoch_end: no stale values."""
    from mlflow.tracking import MlflowClient

    from lightning_green import EnergyAwareEarlyStopping

    fast = dict(limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    logger = MLFlowLogger(experiment_name="late", tracking_uri=sqlite_uri)
    alone = EnergyMonitor(monitor="epoch_score", mode="max")
    make_trainer(tmp_path / "a", [alone], logger=logger, max_epochs=3, **fast).fit(
        _MetricAtEpochEnd(), DigitsDataModule()
    )
    assert [r.metric for r in alone.history] == [1.0, 2.0, 3.0]  # each epoch its own value
    marginal = MlflowClient(sqlite_uri).get_metric_history(
        logger.run_id, "energy/marginal_epoch_score_per_kwh"
    )
    assert sorted(m.value for m in marginal) == sorted(r.marginal_per_kwh for r in alone.history[1:])

    stopper = EnergyAwareEarlyStopping(monitor="epoch_score", mode="max")
    make_trainer(tmp_path / "b", [stopper], max_epochs=3, **fast).fit(_MetricAtEpochEnd(), DigitsDataModule())
    history = stopper.energy_monitor.history
    assert [r.metric for r in history] == [1.0, 2.0, 3.0]
    assert history[1].marginal_per_kwh == pytest.approx(1.0 / history[1].energy_kwh)


def test_resume_keeps_a_metric_the_module_logged_after_the_epoch_closed(tmp_path, sqlite_uri, monkeypatch):
    """Checkpoint saved at train epoch end, killed before the next epoch: the late metric survives."""
    from doubles import install_scripted_meter
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    fast = dict(limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0, enable_checkpointing=True)

    def run(root, extra, logger, ckpt_path=None):
        monitor = EnergyMonitor(monitor="epoch_score", mode="max")
        checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_on_train_epoch_end=True)
        pl.seed_everything(0)
        trainer = make_trainer(root, [*extra, monitor, checkpoint], logger=logger, max_epochs=4, **fast)
        trainer.fit(_MetricAtEpochEnd(), DigitsDataModule(), ckpt_path=ckpt_path)
        return monitor

    reference = run(tmp_path / "a", [], False)
    logger = MLFlowLogger(experiment_name="late-resume", tracking_uri=sqlite_uri)
    with pytest.raises(_KilledError):  # the kill comes before the monitor's epoch-start hook
        run(tmp_path / "b", [_KillAt(2)], logger)
    again = MLFlowLogger(experiment_name="late-resume", tracking_uri=sqlite_uri, run_id=logger.run_id)
    resumed = run(tmp_path / "b", [], again, ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))

    assert [r.metric for r in resumed.history] == [1.0, 2.0, 3.0, 4.0]
    assert [r.marginal_per_kwh for r in resumed.history] == [r.marginal_per_kwh for r in reference.history]
    key = "energy/marginal_epoch_score_per_kwh"
    marginal = MlflowClient(sqlite_uri).get_metric_history(logger.run_id, key)
    assert sorted(m.value for m in marginal) == sorted(r.marginal_per_kwh for r in resumed.history[1:])


def test_a_second_fit_continues_the_total(tmp_path):
    monitor = EnergyMonitor()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=2, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule())
    first = monitor.history[-1].total_j
    trainer.fit_loop.max_epochs = 4
    trainer.fit(trainer.lightning_module, datamodule=DigitsDataModule())
    totals = [r.total_j for r in monitor.history]
    assert len(totals) == 4 and totals == sorted(totals) and totals[2] > first


def test_validate_between_two_fits_is_not_taken_for_the_next_epochs_validation(tmp_path, ns):
    """fit (validating every 2nd epoch), trainer.validate(), fit on: the continued epoch did not
    validate, so it has no metric and nothing is missing (it raised MonitorNotLoggedError)."""
    monitor = EnergyMonitor(monitor="val_acc", mode="max", summary=False)
    trainer = make_trainer(
        tmp_path, [monitor], max_epochs=2, lightning=ns, limit_train_batches=3, check_val_every_n_epoch=2
    )
    module, data = ns.DigitsClassifier(), ns.DigitsDataModule()
    trainer.fit(module, datamodule=data)
    trainer.validate(module, datamodule=data, verbose=False)
    trainer.fit_loop.max_epochs = 4
    trainer.fit(module, datamodule=data)
    assert [r.metric is not None for r in monitor.history] == [False, True, False, True]
    assert len(monitor.history) == 4 and monitor.last_summary["best_epoch"] in (1, 3)


def test_step_energy_once_per_optimizer_step_with_accumulation(tmp_path):
    csv = CSVLogger(str(tmp_path), name="csv")
    _fit(
        tmp_path,
        EnergyMonitor(step_interval=4),
        max_epochs=1,
        logger=csv,
        log_every_n_steps=1,
        accumulate_grad_batches=3,
    )
    rows = list(csvlib_rows(Path(csv.log_dir) / "metrics.csv"))
    steps = [int(r["step"]) for r in rows if r.get("energy/step_j")]
    assert steps and len(steps) == len(set(steps))  # not once per micro-batch
    assert all(r.get("energy/step_power_w") for r in rows if r.get("energy/step_j"))


def csvlib_rows(path):
    import csv as csvlib

    return csvlib.DictReader(path.read_text().splitlines())


@pytest.mark.parametrize("name", ["strict", "prog_bar", "summary"])
def test_flags_must_be_booleans(name):
    with pytest.raises(ValueError, match=f"{name} must be True or False, got 'false'"):
        EnergyMonitor(**{name: "false"})


def test_a_report_that_cannot_be_written_does_not_fail_the_run(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the report folder would go")
    monitor = EnergyMonitor()
    with pytest.warns(UserWarning, match="could not write the energy report"):
        make_trainer(blocker, [monitor], max_epochs=1, limit_train_batches=2, limit_val_batches=1).fit(
            DigitsClassifier(), datamodule=DigitsDataModule()
        )
    assert monitor.last_summary["epochs"] == 1 and monitor.summary_path is None


def _two_val_loaders(lightning):
    class TwoLoaders(lightning.DigitsDataModule):
        def val_dataloader(self):
            return [super().val_dataloader(), super().val_dataloader()]

    return TwoLoaders(batch_size=64)


def _per_loader_module(base):
    class PerLoader(base):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))  # "/dataloader_idx_N" added

    return PerLoader


def test_a_metric_of_one_of_several_validation_loaders(tmp_path, ns):
    """Monitoring "val_loss/dataloader_idx_1", as Lightning names it with two loaders, just works."""
    from lightning_green import EnergyAwareEarlyStopping

    csv = ns.loggers.CSVLogger(str(tmp_path), name="csv")
    monitor = EnergyMonitor(monitor="val_loss/dataloader_idx_1")
    stopper = EnergyAwareEarlyStopping(monitor="val_loss/dataloader_idx_0", patience=2, min_epochs=1)
    trainer = make_trainer(tmp_path, [monitor, stopper], logger=csv, max_epochs=3, lightning=ns)
    trainer.fit(ns.module(_per_loader_module)(), datamodule=_two_val_loaders(ns))

    import csv as csvlib

    rows = list(csvlib.DictReader((Path(csv.log_dir) / "metrics.csv").read_text().splitlines()))
    marginal = [
        float(r[k])
        for r in rows
        for k in r
        if k == "energy/marginal_val_loss/dataloader_idx_1_per_kwh" and r[k]
    ]
    assert len(marginal) >= 2  # every epoch after the first (the sanity check may give no baseline)
    assert monitor.last_summary["best_metric"] == pytest.approx(
        min(float(r["val_loss/dataloader_idx_1"]) for r in rows if r.get("val_loss/dataloader_idx_1"))
    )
    assert len(stopper.policy.history) == 3  # the stopper read its loader's metric at every check


@pytest.mark.parametrize("plan", ["every_2nd_epoch", "max_steps"])
def test_an_epoch_without_validation_has_no_gain_and_the_next_counts_both(tmp_path, ns, plan):
    """An epoch that did not validate has no value of a validation metric (not the last one's,
    gain 0): the next validated epoch's gain is the change since the last validation per kWh of
    every epoch since. A training metric keeps its value every epoch."""
    kwargs = (
        dict(max_epochs=5, check_val_every_n_epoch=2) if plan == "every_2nd_epoch" else dict(max_steps=60)
    )
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    csv = ns.loggers.CSVLogger(str(tmp_path), name="csv")
    _fit(tmp_path, monitor, max_epochs=kwargs.pop("max_epochs", -1), logger=csv, lightning=ns, **kwargs)

    history = monitor.history
    # 23 steps an epoch: max_steps=60 cuts the 3rd epoch short, before its validation.
    validated = [0, 1, 0, 1, 0] if plan == "every_2nd_epoch" else [1, 1, 0]
    assert [h.epoch for h in history] == list(range(len(validated)))
    assert [h.metric is not None for h in history] == [bool(v) for v in validated]
    assert all(h.marginal_per_kwh is None for h, v in zip(history, validated, strict=True) if not v)
    with_metric = [i for i, v in enumerate(validated) if v]
    for before, at in itertools.pairwise(with_metric):
        energy_kwh = sum(h.energy_j for h in history[before + 1 : at + 1]) / J_PER_KWH
        expected = (history[at].metric - history[before].metric) / energy_kwh
        assert history[at].marginal_per_kwh == pytest.approx(expected, rel=1e-9)
    import csv as csvlib

    rows = list(csvlib.DictReader((Path(csv.log_dir) / "metrics.csv").read_text().splitlines()))
    logged = [
        float(r["energy/marginal_val_acc_per_kwh"]) for r in rows if r.get("energy/marginal_val_acc_per_kwh")
    ]
    assert logged == pytest.approx([h.marginal_per_kwh for h in history if h.marginal_per_kwh is not None])

    trained = EnergyMonitor(monitor="train_loss", mode="min")
    _fit(tmp_path / "train", trained, max_epochs=3, lightning=ns, check_val_every_n_epoch=2)
    assert all(h.metric is not None for h in trained.history)
    assert all(h.marginal_per_kwh is not None for h in trained.history[1:])


def _fit_and_save(root, monitor_cb, lightning, max_epochs, ckpt_path=None):
    pl.seed_everything(0)
    trainer = make_trainer(
        root, [monitor_cb], max_epochs=max_epochs, lightning=lightning, limit_train_batches=4
    )
    data = lightning.DigitsDataModule(batch_size=64)
    trainer.fit(lightning.DigitsClassifier(), datamodule=data, ckpt_path=ckpt_path)
    trainer.save_checkpoint(root / "saved.ckpt")
    return monitor_cb


def test_a_run_resumed_in_another_region_keeps_the_co2_of_its_earlier_part(tmp_path, ns):
    """France (55 g/kWh) for two epochs, resumed in Germany (380 g/kWh): what was emitted in
    France stays as recorded, only the energy after the resume is priced at Germany's rate."""
    before = _fit_and_save(tmp_path, EnergyMonitor(region="FR", summary=False), ns, max_epochs=2)
    france_kg = before.history[-1].co2_kg
    assert france_kg == pytest.approx(before.total_kwh * 55 / 1000)
    after = EnergyMonitor(region="DE", summary=False)
    _fit_and_save(tmp_path / "resumed", after, ns, max_epochs=4, ckpt_path=tmp_path / "saved.ckpt")
    history = after.history
    assert [r.co2_kg for r in history[:2]] == [r.co2_kg for r in before.history]  # restored as recorded
    for record in history[2:]:
        germany_kwh = record.total_kwh - before.history[-1].total_kwh
        assert record.co2_kg == pytest.approx(france_kg + germany_kwh * 380 / 1000)
    # The checkpoint was saved after the fit: what was measured after its last epoch is in no
    # epoch, and keeps France's price too; everything after the checkpoint is Germany's.
    saved = torch.load(tmp_path / "saved.ckpt", weights_only=True)["callbacks"]
    ledger = next(v for k, v in saved.items() if "EnergyMonitor" in k)["ledger"]
    assert ledger["outside_co2_kg"] == pytest.approx(ledger["outside_epochs_j"] / J_PER_KWH * 55 / 1000)
    france_kwh = (ledger["total_j"] + ledger["outside_epochs_j"]) / J_PER_KWH
    summary = after.last_summary
    expected_kg = france_kwh * 55 / 1000 + (summary["total_kwh"] - france_kwh) * 380 / 1000
    assert summary["co2_kg"] == pytest.approx(expected_kg)


def test_a_run_resumed_watching_another_metric_does_not_mix_the_two(tmp_path, ns):
    """val_acc (max) before the checkpoint, val_loss (min) after: the energy continues, the
    metric history, its best and the gain per kWh restart (no gain "from 90 % to 0.3 nats"), with
    one warning that says so."""
    before = _fit_and_save(tmp_path, EnergyMonitor(monitor="val_acc", mode="max", summary=False), ns, 2)
    assert all(r.metric is not None for r in before.history)
    after = EnergyMonitor(monitor="val_loss", summary=False)
    with pytest.warns(UserWarning, match=r"watched 'val_acc' \(mode 'max'\).*restart here") as caught:
        _fit_and_save(tmp_path / "resumed", after, ns, max_epochs=4, ckpt_path=tmp_path / "saved.ckpt")
    assert len([w for w in caught if "watched 'val_acc'" in str(w.message)]) == 1
    history = after.history
    assert [r.total_j for r in history[:2]] == [r.total_j for r in before.history]  # energy continues
    assert [(r.metric, r.marginal_per_kwh) for r in history[:2]] == [(None, None), (None, None)]
    assert history[2].metric is not None and history[2].marginal_per_kwh is None  # nothing to compare
    assert history[3].marginal_per_kwh is not None
    summary = after.last_summary
    assert summary["best_metric"] == pytest.approx(min(history[2].metric, history[3].metric))
    assert summary["best_epoch"] in (2, 3)

    # The same metric resumed: nothing dropped, no warning.
    same = EnergyMonitor(monitor="val_acc", mode="max", summary=False)
    _fit_and_save(tmp_path / "same", same, ns, max_epochs=3, ckpt_path=tmp_path / "saved.ckpt")
    assert same.history[1].metric is not None


class _KilledError(Exception):
    pass


def test_a_resume_in_another_region_from_inside_an_epoch_keeps_the_co2_before_it(tmp_path, ns):
    """A checkpoint saved inside the only epoch (France), the process killed, resumed in Germany:
    the energy up to the checkpoint keeps France's CO2, only the rest is priced at Germany's."""
    import torch

    class KillAtStep(ns.pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                raise _KilledError

    def run(monitor, extra, ckpt_path=None):
        pl.seed_everything(0)
        saver = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
        trainer = make_trainer(tmp_path, [monitor, saver, *extra], max_epochs=1, lightning=ns,
                               limit_train_batches=4, enable_checkpointing=True)  # fmt: skip
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=64), ckpt_path=ckpt_path)

    with pytest.raises(_KilledError):
        run(EnergyMonitor(region="FR", summary=False), [KillAtStep()])
    path = tmp_path / "ckpt" / "epoch=0-step=2.ckpt"
    state = torch.load(path, weights_only=False)["callbacks"]["lightning_green.EnergyMonitor"]
    # Used in France: the open epoch's energy, and what preceded the epoch (outside it, as booked then).
    france_kwh = (state["open_epoch"]["energy_j"] + state["ledger"]["outside_epochs_j"]) / J_PER_KWH
    assert state["open_epoch"]["energy_j"] > 0 and state["ledger"]["history"] == []  # caught inside the epoch
    germany = EnergyMonitor(region="DE", summary=False)
    run(germany, [], ckpt_path=str(path))
    summary = germany.last_summary
    expected = france_kwh * 55 / 1000 + (summary["total_kwh"] - france_kwh) * 380 / 1000
    assert summary["co2_kg"] == pytest.approx(expected)


class _DegradingMeter(ScriptedMeter):
    """An NVML counter that stops answering after ``counter_reads`` reads: sampled from then on."""

    def __init__(self, counter_reads: int) -> None:
        super().__init__(source="nvml")
        self.counter_reads = counter_reads

    def _read_j(self) -> dict[str, float]:
        if self.reads >= self.counter_reads:
            self.source = "nvml-sampled"
        return super()._read_j()


def test_the_source_label_names_every_source_the_run_used(tmp_path, sqlite_uri, monkeypatch, ns):
    """A GPU counter that fails mid-run (sampled instead), and a run on the estimate resumed on
    measured hardware: the summary and the tag name every source, an estimate stays marked."""
    from mlflow.tracking import MlflowClient

    meters = iter(
        # The counter answers the read at the first epoch's start and the first two epochs' ends.
        [_DegradingMeter(counter_reads=3), ScriptedMeter(source="estimate"), ScriptedMeter(source="rapl")]
    )
    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: next(meters))
    logger = ns.loggers.MLFlowLogger(experiment_name="sources", tracking_uri=sqlite_uri)
    degraded = EnergyMonitor()
    _fit(tmp_path, degraded, max_epochs=3, logger=logger, lightning=ns)
    assert [r.source for r in degraded.history] == ["nvml", "nvml", "nvml-sampled"]
    assert degraded.energy_source == degraded.last_summary["energy_source"] == "nvml+nvml-sampled"
    run = MlflowClient(sqlite_uri).get_run(logger.run_id)
    assert run.data.params["lightning_green.energy_source"] == "nvml"  # where the first epoch's came from
    assert run.data.tags["lightning_green.energy_source"] == "nvml+nvml-sampled"

    _fit_and_save(tmp_path / "estimated", EnergyMonitor(summary=False), ns, max_epochs=2)
    resumed = EnergyMonitor(summary=False)
    ckpt = tmp_path / "estimated" / "saved.ckpt"
    _fit_and_save(tmp_path / "measured", resumed, ns, max_epochs=4, ckpt_path=ckpt)
    assert [r.source for r in resumed.history] == ["estimate", "estimate", "rapl", "rapl"]
    summary = resumed.last_summary
    assert summary["energy_source"] == "rapl+estimate" and summary["is_estimate"] is True
    assert "rapl+estimate (ESTIMATE, not measured)" in format_summary(summary)


def test_a_second_fit_keeps_the_first_fits_end_of_fit_energy_in_the_run_total(tmp_path, monkeypatch, ns):
    """fit, then fit on to a larger max_epochs: what the first fit measured after its last epoch
    (its final reading) stays in the run's total; the epochs' totals continue without it."""
    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: ScriptedMeter())  # 1000 J a read
    monitor = EnergyMonitor(summary=False)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=2, lightning=ns, limit_train_batches=3)
    module, data = ns.DigitsClassifier(), ns.DigitsDataModule()
    trainer.fit(module, datamodule=data)  # reads: the first epoch's start, two epoch ends, the final one
    assert monitor.last_summary["total_kwh"] * J_PER_KWH == pytest.approx(4000.0)
    trainer.fit_loop.max_epochs = 4
    trainer.fit(module, datamodule=data)
    assert [r.total_j for r in monitor.history] == pytest.approx([1000.0, 2000.0, 3000.0, 4000.0])
    summary = monitor.last_summary
    assert summary["total_kwh"] * J_PER_KWH == pytest.approx(8000.0)  # every read of both fits
    assert summary["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(2000.0)  # both fits' starts
    assert summary["kwh_after_last_epoch"] * J_PER_KWH == pytest.approx(2000.0)  # both fits' ends


class _SaveAtTrainEnd(AnyCallback):
    """Saves a checkpoint in on_train_end (after the fit's last epoch), as some users' scripts do."""

    def __init__(self, path) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path)


def test_a_checkpoint_after_the_last_epoch_keeps_the_end_of_fit_energy_outside_the_epochs(
    tmp_path, monkeypatch, ns
):
    """Saved in on_train_end, resumed at another intensity: the energy after the last epoch stays
    outside the epochs (the next epoch is not charged with it) and keeps the CO2 it was priced at."""
    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: ScriptedMeter())  # 1000 J a read
    first = EnergyMonitor(carbon_intensity_g_per_kwh=400.0, summary=False)
    ckpt = tmp_path / "end.ckpt"
    trainer = make_trainer(tmp_path / "a", [first, _SaveAtTrainEnd(ckpt)], max_epochs=2, lightning=ns)
    # reads: the first epoch's start, 2 epoch ends, the save
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    resumed = EnergyMonitor(carbon_intensity_g_per_kwh=1.0, summary=False)
    trainer = make_trainer(tmp_path / "b", [resumed], max_epochs=4, lightning=ns)
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(), ckpt_path=ckpt)
    assert [r.energy_j for r in resumed.history] == pytest.approx([1000.0] * 4)  # epoch 2 not charged 2000
    summary = resumed.last_summary
    # 4000 J before the save; 4 reads after (the resumed fit's first epoch's start, 2 epoch ends, the final)
    assert summary["total_kwh"] * J_PER_KWH == pytest.approx(8000.0)
    assert summary["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(2000.0)  # each fit's start
    assert summary["co2_kg"] == pytest.approx((4000.0 * 400.0 + 4000.0 * 1.0) / J_PER_KWH / 1000.0)


class _KillAtStep(AnyCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise _KilledError


def test_a_resume_from_inside_an_epoch_names_the_source_measured_before_it(tmp_path, monkeypatch, ns):
    """Estimated up to a checkpoint inside the only epoch, resumed on measured hardware: that epoch
    and the run are labelled with both sources, and the estimate mark stays."""
    meters = iter([ScriptedMeter(source="estimate"), ScriptedMeter(source="rapl")])
    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: next(meters))
    every = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    trainer = make_trainer(
        tmp_path / "a",
        [EnergyMonitor(summary=False), every, _KillAtStep(3)],
        max_epochs=1,
        lightning=ns,
        limit_train_batches=6,
        enable_checkpointing=True,
    )
    with pytest.raises(_KilledError):
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    resumed = EnergyMonitor(summary=False)
    trainer = make_trainer(tmp_path / "b", [resumed], max_epochs=1, lightning=ns, limit_train_batches=6)
    trainer.fit(
        ns.DigitsClassifier(),
        datamodule=ns.DigitsDataModule(),
        ckpt_path=every.best_model_path or sorted((tmp_path / "ckpt").iterdir())[-1],
    )
    assert resumed.history[0].source == "rapl+estimate"
    summary = resumed.last_summary
    assert summary["energy_source"] == "rapl+estimate" and summary["is_estimate"] is True


def _epoch_end_override(base):
    class EpochEndOverride(base):
        """Overrides on_train_epoch_end with nothing: the monitor reads the metric after it (deferred)."""

        def on_train_epoch_end(self):
            pass

    return EpochEndOverride


def test_a_gain_read_after_the_modules_epoch_end_is_logged_with_the_epochs_series(
    tmp_path, sqlite_uri, monkeypatch, ns
):
    """A module overriding on_train_epoch_end: its epoch's gain per kWh is logged at the step (and,
    in metrics.csv, the epoch) of the epoch's other series, and a report rebuilt from the CSV has it."""
    from mlflow.tracking import MlflowClient

    from lightning_green.report import summary_from_log

    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: ScriptedMeter())  # 1000 J a read
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name="deferred", tracking_uri=sqlite_uri)
    csv = ns.loggers.CSVLogger(str(tmp_path), name="csv")
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    trainer = make_trainer(
        tmp_path,
        [monitor],
        logger=[mlflow_logger, csv],
        lightning=ns,
        limit_train_batches=4,
        limit_val_batches=2,
    )
    trainer.fit(ns.module(_epoch_end_override)(), datamodule=ns.DigitsDataModule())
    gains = [r.marginal_per_kwh for r in monitor.history]
    assert len(gains) == 3 and None not in gains  # the first measured from the sanity check's value

    client = MlflowClient(sqlite_uri)
    epoch_steps = [m.step for m in _history(client, mlflow_logger.run_id, "energy/epoch_kwh")]
    marginal = _history(client, mlflow_logger.run_id, "energy/marginal_val_acc_per_kwh")
    assert [m.step for m in marginal] == epoch_steps == [3, 7, 11]
    assert [m.value for m in marginal] == pytest.approx(gains, rel=1e-9)

    folder = Path(csv.log_dir)
    rows = list(csvlib_rows(folder / "metrics.csv"))

    def at(key):
        return [(int(r["step"]), r["epoch"]) for r in rows if r.get(key)]

    assert at("energy/marginal_val_acc_per_kwh") == at("energy/epoch_kwh") == [(3, "0"), (7, "1"), (11, "2")]
    (folder / "energy_summary.json").unlink()  # the report rebuilds it from metrics.csv
    rebuilt = summary_from_log(str(folder / "metrics.csv"))
    assert [e["marginal_per_kwh"] for e in rebuilt["per_epoch"]] == pytest.approx(gains, rel=1e-6)
    assert rebuilt["best_marginal_per_kwh"] == pytest.approx(max(gains), rel=1e-6)


def test_a_resumed_gain_read_after_the_modules_epoch_end_keeps_its_epochs_step(
    tmp_path, sqlite_uri, monkeypatch, ns
):
    """Saved at the end of epoch 1 before the module's hook logged, killed, resumed in the same MLflow
    run: the checkpoint keeps epoch 1's step, and every gain sits at its epoch's step."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: ScriptedMeter())

    def run(logger, extra, ckpt_path=None):
        monitor = EnergyMonitor(monitor="val_acc", mode="max", summary=False)
        last = ns.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True
        )
        trainer = make_trainer(
            tmp_path,
            [*extra, monitor, last],
            logger=logger,
            max_epochs=3,
            lightning=ns,
            limit_train_batches=4,
            limit_val_batches=2,
            enable_checkpointing=True,
        )
        trainer.fit(ns.module(_epoch_end_override)(), datamodule=ns.DigitsDataModule(), ckpt_path=ckpt_path)
        return monitor

    logger = ns.loggers.MLFlowLogger(experiment_name="deferred-resume", tracking_uri=sqlite_uri)
    with pytest.raises(KilledError):
        run(logger, [KillAt(2)])
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["callbacks"]["lightning_green.EnergyMonitor"]
    assert saved["deferred_metric"]["step"] == 7  # where epoch 1's end logged its series
    again = ns.loggers.MLFlowLogger(
        experiment_name="deferred-resume", tracking_uri=sqlite_uri, run_id=logger.run_id
    )
    resumed = run(again, [], ckpt_path=str(ckpt))
    client = MlflowClient(sqlite_uri)
    marginal = _history(client, logger.run_id, "energy/marginal_val_acc_per_kwh")
    assert [m.step for m in _history(client, logger.run_id, "energy/epoch_kwh")] == [3, 7, 11]
    assert [m.step for m in marginal] == [3, 7, 11]
    assert [m.value for m in marginal] == pytest.approx(
        [r.marginal_per_kwh for r in resumed.history], rel=1e-9
    )


def _nvml_failing_once_at_start(monkeypatch) -> None:
    """EnergyMonitor measures one GPU through the NVML double (1000 J a counter read); the counter
    read that takes the first fit's baseline fails once (a fault before any epoch)."""
    from nvml_double import FakeNvml, NVMLError_Unknown, gpus

    from lightning_green.energy.nvml import NvmlMeter

    reads = itertools.count(1)
    nvml = FakeNvml(gpus(1, energy_mj_fn=lambda _t: next(reads) * 1_000_000.0))
    built = itertools.count()

    def build(spec, **_kwargs):
        meter = NvmlMeter([0], nvml=nvml, environ={})  # probes the counter: it answers
        if next(built) == 0:
            nvml.gpus[0].counter_errors.append(NVMLError_Unknown())
        return meter

    monkeypatch.setattr(energy_monitor, "build_meter", build)


def test_a_fault_outside_the_epochs_keeps_the_run_partial_in_a_later_fit(
    tmp_path, sqlite_uri, monkeypatch, ns
):
    """The first fit's baseline read fails (no epoch is partial, the run is); fit on with the same
    Trainer: the run, whose total holds the first fit's energy, stays partial, in MLflow too."""
    from mlflow.tracking import MlflowClient

    from lightning_green.energy.meter import EnergyMeasurementWarning

    _nvml_failing_once_at_start(monkeypatch)
    logger = ns.loggers.MLFlowLogger(experiment_name="partial", tracking_uri=sqlite_uri)
    monitor = EnergyMonitor(summary=False)
    trainer = make_trainer(
        tmp_path, [monitor], logger=logger, max_epochs=2, lightning=ns, limit_train_batches=3
    )
    module, data = ns.DigitsClassifier(), ns.DigitsDataModule()
    with pytest.warns(EnergyMeasurementWarning, match="partial"):
        trainer.fit(module, datamodule=data)
    client = MlflowClient(sqlite_uri)
    assert monitor.last_summary["partial"] is True and not any(r.partial for r in monitor.history)
    assert client.get_run(logger.run_id).data.tags["lightning_green.partial"] == "true"
    trainer.fit_loop.max_epochs = 4
    trainer.fit(module, datamodule=data)  # measured without a fault
    assert len(monitor.history) == 4 and not any(r.partial for r in monitor.history)
    assert monitor.last_summary["partial"] is True
    assert client.get_run(logger.run_id).data.tags["lightning_green.partial"] == "true"


def test_a_fault_outside_the_epochs_keeps_the_run_partial_after_a_resume(tmp_path, monkeypatch, ns):
    """The same fault, the run resumed from a checkpoint of its first fit in a new Trainer: the
    checkpoint says partial, and so does the resumed run's summary."""
    from lightning_green.energy.meter import EnergyMeasurementWarning

    _nvml_failing_once_at_start(monkeypatch)

    def run(max_epochs, ckpt_path=None):
        monitor = EnergyMonitor(summary=False)
        every = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
        trainer = make_trainer(
            tmp_path,
            [monitor, every],
            max_epochs=max_epochs,
            lightning=ns,
            limit_train_batches=3,
            enable_checkpointing=True,
        )
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(), ckpt_path=ckpt_path)
        return monitor

    with pytest.warns(EnergyMeasurementWarning, match="partial"):
        first = run(2)
    assert first.last_summary["partial"] is True
    ckpt = tmp_path / "ckpt" / "epoch=1.ckpt"
    assert torch.load(ckpt, weights_only=True)["callbacks"]["lightning_green.EnergyMonitor"]["ledger"][
        "partial"
    ]
    resumed = run(4, ckpt_path=str(ckpt))
    assert len(resumed.history) == 4 and not any(r.partial for r in resumed.history)
    assert resumed.last_summary["partial"] is True


def test_without_matplotlib_the_summary_is_written_and_the_note_names_the_extra(
    tmp_path, monkeypatch, caplog, ns
):
    """A core install (no ``[plot]`` extra): the summary JSON is written, no plot, and the one note
    says what to install, as the command line's does."""
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    caplog.set_level("INFO")
    monitor = EnergyMonitor()
    _fit(tmp_path, monitor, max_epochs=1, lightning=ns)
    assert monitor.summary_path is not None and Path(monitor.summary_path).exists()
    assert (
        monitor.plot_path is None and not (Path(monitor.summary_path).parent / "energy_report.png").exists()
    )
    notes = [r.getMessage() for r in caplog.records if "matplotlib is not installed" in r.getMessage()]
    assert notes == [
        "lightning_green: matplotlib is not installed, so no energy plot was drawn "
        "(pip install 'lightning_green[plot]')."
    ]
