"""A fit that raises still leaves its energy report; a resume with other callbacks says what restarted."""

from __future__ import annotations

import json
import logging
import re
import signal
import warnings

import pytest
import pytorch_lightning as pl
from conftest import AnyCallback, make_trainer
from digits import DigitsClassifier, DigitsDataModule
from doubles import install_scripted_meter
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyAwareEarlyStopping, EnergyMonitor

FAST = dict(limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0)


class TrainingStepError(RuntimeError):
    pass


class FailsAtEpoch(DigitsClassifier):
    """Trains for real, then its training_step raises at the start of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.fail_epoch = epoch

    def training_step(self, batch, batch_idx):
        if self.current_epoch == self.fail_epoch:
            raise TrainingStepError("the data went bad")
        return super().training_step(batch, batch_idx)


def test_a_fit_that_raises_still_writes_and_logs_its_report_marked_failed(tmp_path, sqlite_uri, caplog):
    from mlflow.tracking import MlflowClient

    logger = MLFlowLogger(experiment_name="fails", tracking_uri=sqlite_uri)
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    batch = AdaptiveBatchSize(min_batch_size=16, max_batch_size=64, window_s=0.001, probe_windows=1)
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max")
    trainer = make_trainer(tmp_path, [monitor, batch, stopper], logger=logger, max_epochs=5, **FAST)
    with caplog.at_level(logging.INFO), pytest.raises(TrainingStepError):
        trainer.fit(FailsAtEpoch(2), datamodule=DigitsDataModule())

    # Locally: the summary (two epochs measured), the plot and the adaptations, marked failed.
    summary = json.loads(monitor.summary_path.read_text())
    assert summary["failed"] is True and "TrainingStepError: the data went bad" in summary["error"]
    assert summary["epochs"] == 2 and summary["total_kwh"] > 0
    assert monitor.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The plot says so too (its title), not only the printed summary and the JSON.
    matplotlib = pytest.importorskip("matplotlib")
    from lightning_green.report import plot_summary

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        svg = plot_summary(summary, tmp_path / "failed.svg").read_text()
    assert "FAILED: TrainingStepError: the data went bad (measured until then)" in svg
    adaptations = json.loads((monitor.summary_path.parent / "adaptations.json").read_text())
    assert adaptations["failed"] is True and adaptations["batch_size"]["batch_size_initial"] == 32
    assert "FAILED (TrainingStepError: the data went bad)" in caplog.text  # the printed summary
    # And logged to the run, which still answers.
    artifacts = {a.path for a in MlflowClient(sqlite_uri).list_artifacts(logger.run_id, "lightning_green")}
    assert {
        "lightning_green/energy_summary.json",
        "lightning_green/energy_report.png",
        "lightning_green/adaptations.json",
    } <= artifacts
    # The energy of the failed run, the unfinished epoch included, is in the run's metrics.
    client = MlflowClient(sqlite_uri)
    run_kwh = [m.value for m in client.get_metric_history(logger.run_id, "energy/run_kwh")]
    last_epoch_total = max(client.get_metric_history(logger.run_id, "energy/total_kwh"), key=lambda m: m.step)
    assert run_kwh == pytest.approx([summary["total_kwh"]], rel=1e-6)
    assert run_kwh[0] > last_epoch_total.value
    assert "energy/run_co2_kg" not in client.get_run(logger.run_id).data.metrics  # no carbon intensity given
    assert not monitor.session.running  # the meters were stopped


def _lightning_green_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "lightning_green:" in str(w.message)]


def _fit(root, callbacks, epochs, ckpt_path=None):
    pl.seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
    trainer = make_trainer(
        root, [*callbacks, checkpoint], max_epochs=epochs, enable_checkpointing=True, **FAST
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
    return _lightning_green_warnings(record)


def test_a_monitor_added_at_resume_warns_once_that_energy_restarts(tmp_path, monkeypatch):
    install_scripted_meter(monkeypatch)
    assert _fit(tmp_path, [], epochs=2) == []
    monitor = EnergyMonitor()
    said = _fit(tmp_path, [monitor], epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert len(said) == 1 and "no EnergyMonitor state" in said[0] and "restart from 0" in said[0]
    assert [r.epoch for r in monitor.history] == [2]  # what was measured: the resumed epoch only


def test_a_stopper_watching_another_metric_at_resume_warns_once_that_its_history_restarts(
    tmp_path, monkeypatch
):
    install_scripted_meter(monkeypatch)
    first = EnergyAwareEarlyStopping(monitor="val_loss")
    assert _fit(tmp_path, [first], epochs=2) == []
    resumed = EnergyAwareEarlyStopping(monitor="val_acc", mode="max")
    said = _fit(tmp_path, [resumed], epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert len(said) == 1, said  # the stopper's history; the energy (monitor state) continues
    assert "EnergyAwareEarlyStopping{'monitor': 'val_acc', 'mode': 'max'}" in said[0]
    assert "EnergyAwareEarlyStopping{'monitor': 'val_loss', 'mode': 'min'}" in said[0]
    assert "history restarts" in said[0]
    assert resumed.policy.n_checks == 1  # its history began at the resumed epoch
    assert [r.epoch for r in resumed.energy_monitor.history] == [0, 1, 2]  # energy continued


def test_the_same_callbacks_at_resume_warn_nothing(tmp_path, monkeypatch):
    install_scripted_meter(monkeypatch)
    assert _fit(tmp_path, [EnergyAwareEarlyStopping(monitor="val_loss")], epochs=2) == []
    again = [EnergyAwareEarlyStopping(monitor="val_loss")]
    assert _fit(tmp_path, again, epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")) == []


class KillServerAt(AnyCallback):
    """Stops the MLflow tracking server when epoch ``epoch`` starts: the run's logger loses it."""

    def __init__(self, server, epoch: int) -> None:
        self.server, self.epoch = server, epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            self.server.stop(kill=True)


@pytest.mark.slow
def test_a_fit_whose_mlflow_server_goes_away_still_writes_its_report_locally(tmp_path, monkeypatch):
    from test_mlflow_end_to_end import MlflowServer

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast once the server is gone
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    server = MlflowServer(tmp_path / "server")
    try:
        logger = MLFlowLogger(experiment_name="gone", tracking_uri=server.uri)
        monitor = EnergyMonitor(monitor="val_acc", mode="max")
        trainer = make_trainer(
            tmp_path,
            [monitor, KillServerAt(server, 2)],
            logger=logger,
            max_epochs=5,
            log_every_n_steps=1,
            **FAST,
        )
        with warnings.catch_warnings(record=True) as record, pytest.raises(Exception):  # noqa: B017 - MLflow's
            warnings.simplefilter("always")
            trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule())
    finally:
        server.stop()
    summary = json.loads(monitor.summary_path.read_text())
    assert summary["failed"] is True and summary["epochs"] == 2
    assert monitor.summary_path.parent.name == logger.run_id  # where a live run would have had it
    assert monitor.plot_path.is_file()
    # The fit failed because the server stopped answering: one warning, and nothing more is sent
    # to it (with MLflow's default retries each call would wait minutes).
    ours = _lightning_green_warnings(record)
    assert len([m for m in ours if "does not answer" in m]) == 1, ours
    assert not [m for m in ours if "could not" in m or "refused" in m], ours


def test_replay_and_report_of_runs_that_did_not_finish(tmp_path, sqlite_uri, capsys):
    """A CSVLogger run that raised is skipped by replay and named (its summary says FAILED), or
    replayed as far as it ran with --include-unfinished (and said so); an MLflow run that was
    killed after its summary was logged says KILLED in its report though the summary artifact is
    a normal one."""
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import CSVLogger

    from lightning_green.cli import main

    logger = CSVLogger(str(tmp_path), name="broke")
    trainer = make_trainer(
        tmp_path, [EnergyMonitor(monitor="val_acc", mode="max")], logger=logger, max_epochs=5, **FAST
    )
    with pytest.raises(TrainingStepError):
        trainer.fit(FailsAtEpoch(3), datamodule=DigitsDataModule())
    log = str(tmp_path / "broke" / "version_0" / "metrics.csv")
    capsys.readouterr()
    assert main(["replay", log, "-o", str(tmp_path / "d.csv")]) == 1  # nothing else to replay
    assert f"did not finish (--include-unfinished to replay them as far as they ran): {log} (FAILED)" in (
        capsys.readouterr().out
    )
    assert main(["replay", log, "--include-unfinished", "-o", str(tmp_path / "d.csv")]) == 0
    assert (
        f"included 1 run(s) that did not finish, as far as they ran: {log} (FAILED)"
        in capsys.readouterr().out
    )

    mlflow_logger = MLFlowLogger(experiment_name="killed", tracking_uri=sqlite_uri)
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    trainer = make_trainer(tmp_path / "m", [monitor], logger=mlflow_logger, max_epochs=2, **FAST)
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule())
    MlflowClient(sqlite_uri).set_terminated(mlflow_logger.run_id, status="KILLED")
    capsys.readouterr()
    argv = [
        "report",
        "--mlflow-uri",
        sqlite_uri,
        "--run-id",
        mlflow_logger.run_id,
        "-o",
        str(tmp_path / "r.png"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"energy summary\n  status +KILLED \(the run did not finish", out)
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "killed", "--include-unfinished"]
    assert main([*argv, "-o", str(tmp_path / "e.csv")]) == 0
    assert f"included 1 run(s) that did not finish, as far as they ran: {mlflow_logger.run_id} (KILLED)" in (
        capsys.readouterr().out
    )


class _CtrlC(AnyCallback):
    """Ctrl-C at the start of epoch 1 (Lightning ends the fit with ``SystemExit``)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def test_a_later_run_into_the_same_folder_writes_its_own_adaptations_only(tmp_path, ns, caplog):
    """Two runs into one report folder (no logger: ``energy_reports`` under the root). The first,
    with both adaptive callbacks, is interrupted with Ctrl-C: its files say so (the error is
    ``KeyboardInterrupt``, with no empty text after it). The second, with AdaptivePrecision alone,
    ends: its ``adaptations.json`` is its own callback's, without the first run's batch size or
    ``"failed"``, as its ``energy_summary.json`` is its own."""
    folder = tmp_path / "energy_reports"

    def fit(callbacks, max_epochs):
        callbacks = [EnergyMonitor(monitor="val_acc", mode="max"), *callbacks]
        trainer = make_trainer(tmp_path, callbacks, max_epochs=max_epochs, lightning=ns, **FAST)
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))

    def written():
        return [
            json.loads((folder / name).read_text()) for name in ("adaptations.json", "energy_summary.json")
        ]

    batch = AdaptiveBatchSize(min_batch_size=16, max_batch_size=64, window_s=0.001, probe_windows=1)
    sigint = signal.getsignal(signal.SIGINT)
    try:  # Lightning ignores SIGINT after a Ctrl-C
        with caplog.at_level(logging.INFO), pytest.raises((KeyboardInterrupt, SystemExit)):
            fit([batch, AdaptivePrecision(), _CtrlC()], 3)
    finally:
        signal.signal(signal.SIGINT, sigint)
    adaptations, summary = written()
    assert sorted(adaptations) == ["batch_size", "failed", "precision"] and adaptations["failed"] is True
    assert summary["failed"] is True and summary["error"] == "KeyboardInterrupt"
    assert re.search(r"status +FAILED \(KeyboardInterrupt\)$", caplog.text, re.MULTILINE), caplog.text

    fit([AdaptivePrecision()], 2)
    adaptations, summary = written()
    assert list(adaptations) == ["precision"] and adaptations["precision"]["precision_initial"] == "32-true"
    assert "failed" not in summary and summary["epochs"] == 2
