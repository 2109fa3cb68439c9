"""Runs logged by ``mlflow.pytorch.autolog()`` (no MLFlowLogger): the callbacks' records reach the run.

Autolog logs a Trainer's ``callback_metrics`` every epoch into the MLflow run active in the
process; the callbacks' params, tags, artifacts and per-check metrics go there too, so the run
reads back as one logged through ``MLFlowLogger`` does: replay makes the callback's decision.
"""

from __future__ import annotations

import csv
import json

import pytest
from conftest import make_trainer
from doubles import curve_module, install_scripted_meter, saturating_curve

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor, cli
from lightning_green.offline import latest_per_step

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("mlflow.pytorch")


@pytest.fixture
def autolog(sqlite_uri):
    """Autologging into a fresh store, switched off again afterwards (it patches Trainer.fit)."""
    import mlflow.pytorch

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri)
    mlflow.set_experiment("autolog")
    mlflow.pytorch.autolog(log_models=False, checkpoint=False, silent=True)
    yield sqlite_uri
    mlflow.pytorch.autolog(disable=True)
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("csv_too", [False, True], ids=["no-logger", "with-csvlogger"])
def test_an_autologged_run_holds_what_the_callbacks_record(
    tmp_path, monkeypatch, ns, autolog, capsys, csv_too
):
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1)
    monitor = EnergyMonitor(monitor="val_loss", carbon_intensity_g_per_kwh=300.0)
    module = ns.module(curve_module)(saturating_curve(40))
    logger = ns.loggers.CSVLogger(str(tmp_path), name="csv") if csv_too else False
    trainer = make_trainer(
        tmp_path,
        [monitor, stopper],
        logger=logger,
        max_epochs=40,
        lightning=ns,
        limit_train_batches=4,
        limit_val_batches=1,
    )
    with mlflow.start_run() as active:
        trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=16))
    assert stopper.stop_reason is not None

    client = MlflowClient(autolog)
    run = client.get_run(active.info.run_id)
    assert run.data.params["lightning_green.monitor"] == "val_loss"
    assert run.data.params["lightning_green.patience"] == "3"
    assert run.data.params["lightning_green.max_epochs"] == "40"
    assert run.data.tags["lightning_green.stop_reason"] == stopper.stop_reason.value
    assert run.data.metrics["energy/run_kwh"] == pytest.approx(monitor.last_summary["total_kwh"])
    assert run.data.metrics["energy/run_co2_kg"] == pytest.approx(monitor.last_summary["co2_kg"])
    artifacts = {a.path for a in client.list_artifacts(active.info.run_id, "lightning_green")}
    assert "lightning_green/energy_summary.json" in artifacts
    # Locally: the CSV log's folder, else energy_reports/<run_id>.
    assert monitor.summary_path.parent.name == ("version_0" if csv_too else active.info.run_id)
    summary = json.loads(monitor.summary_path.read_text())
    assert summary["stop_reason"] == stopper.stop_reason.value
    # The per-check records share autolog's steps (the epoch), so the metric joins with its costs.
    # One value a step, with another logger too (no stale copy from callback_metrics).
    history = client.get_metric_history(active.info.run_id, "energy/check_kwh")
    assert len({m.step for m in history}) == len(history)
    checks = latest_per_step(history)
    assert sorted(checks) == list(range(len(stopper.policy.history)))
    assert [checks[s] for s in sorted(checks)] == stopper.policy.history.costs_kwh.tolist()
    if csv_too:  # the CSV log holds the records at the step of the checks' val_loss
        rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()))
        val_steps = [r["step"] for r in rows if r.get("val_loss")]
        assert [r["step"] for r in rows if r.get("energy/check_kwh")] == val_steps

    # Replay over the experiment, told nothing: the callback's metric, arguments and decision.
    decisions = tmp_path / "decisions.csv"
    argv = ["replay", "--mlflow-uri", autolog, "--experiment", "autolog", "-o", str(decisions)]
    assert cli.main(argv) == 0
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert row["stop_reason"] == stopper.stop_reason.value
    assert int(row["stop_epoch"]) == stopper.stopped_epoch + 1
    assert "policy arguments as recorded by 1 run(s)" in capsys.readouterr().out


def test_without_an_active_run_nothing_is_sent_to_mlflow(tmp_path, monkeypatch, sqlite_uri):
    """mlflow imported but no run active (and no MLFlowLogger): the callbacks log nowhere else."""
    from conftest import PL
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        assert mlflow.active_run() is None
        monitor = EnergyMonitor(monitor="val_loss")
        trainer = make_trainer(tmp_path, [monitor], max_epochs=2, limit_train_batches=4, limit_val_batches=1)
        trainer.fit(PL.DigitsClassifier(), datamodule=PL.DigitsDataModule(batch_size=16))
        assert monitor.summary_path.parent.name == "energy_reports"
        assert MlflowClient(sqlite_uri).search_experiments()[0].name == "Default"
        assert MlflowClient(sqlite_uri).search_runs(["0"]) == []
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_run_started_by_hand_without_autolog_gets_the_energy(tmp_path, monkeypatch, sqlite_uri, ns):
    """``with mlflow.start_run(): trainer.fit(...)`` without a logger: the energy series and records."""
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri)
    mlflow.set_experiment("by-hand")
    try:
        monitor = EnergyMonitor(monitor="val_loss")
        trainer = make_trainer(
            tmp_path, [monitor], max_epochs=3, lightning=ns, limit_train_batches=4, limit_val_batches=1
        )
        with mlflow.start_run() as active:
            trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=16))
    finally:
        mlflow.set_tracking_uri(previous)
    client = MlflowClient(sqlite_uri)
    # At the step Lightning logs each epoch's end at (4 optimizer steps an epoch), as MLFlowLogger gets it.
    totals = latest_per_step(client.get_metric_history(active.info.run_id, "energy/total_kwh"))
    history = monitor.session.ledger.history
    assert totals == {4 * r.epoch + 3: pytest.approx(r.total_kwh) for r in history}
    assert len(totals) == 3
    epochs = latest_per_step(client.get_metric_history(active.info.run_id, "epoch"))
    assert epochs == {4 * r.epoch + 3: r.epoch for r in history}
    run = client.get_run(active.info.run_id)
    assert run.data.params["lightning_green.energy_source"] == "nvml"  # the scripted meter's label
    assert run.data.metrics["energy/run_kwh"] == pytest.approx(monitor.last_summary["total_kwh"])


def test_the_step_energy_of_a_run_started_by_hand_is_on_lightnings_steps(
    tmp_path, monkeypatch, sqlite_uri, ns
):
    """``EnergyMonitor(step_interval=10)`` in a run started by hand: one value every 10 steps, at the
    step Lightning logs those batches' metrics at (not all of an epoch's values on its number)."""
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri)
    mlflow.set_experiment("by-hand")
    try:
        trainer = make_trainer(
            tmp_path, [EnergyMonitor(step_interval=10, summary=False)], max_epochs=2, lightning=ns
        )
        with mlflow.start_run() as active:
            trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=64))
    finally:
        mlflow.set_tracking_uri(previous)
    client = MlflowClient(sqlite_uri)
    for key in ("energy/step_j", "energy/step_power_w"):
        steps = [m.step for m in client.get_metric_history(active.info.run_id, key)]
        assert sorted(steps) == list(range(9, trainer.global_step, 10)), key


def test_an_autologged_run_with_checks_inside_epochs_replays_to_the_callbacks_decision(
    tmp_path, monkeypatch, ns, autolog, capsys
):
    """Four checks an epoch: autolog holds the metric once an epoch, the stopper its value at each
    check (``energy/check_metric``), so replay decides on every check as the callback did."""
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    ns.pl.seed_everything(0)
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", patience=2, min_epochs=1)
    trainer = make_trainer(
        tmp_path, [stopper], max_epochs=8, lightning=ns, val_check_interval=0.25, limit_val_batches=2
    )
    with mlflow.start_run() as active:
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))
    assert stopper.stop_reason is not None
    checks = len(stopper.policy.history)
    client = MlflowClient(autolog)
    steps = [m.step for m in client.get_metric_history(active.info.run_id, "energy/check_epochs")]
    assert len(steps) == checks and len(set(steps)) == checks  # one step each
    values = latest_per_step(client.get_metric_history(active.info.run_id, "energy/check_metric"))
    assert [values[s] for s in sorted(values)] == pytest.approx(stopper.policy.history.metrics.tolist())

    decisions = tmp_path / "decisions.csv"
    argv = ["replay", "--mlflow-uri", autolog, "--experiment", "autolog", "-o", str(decisions)]
    assert cli.main(argv) == 0
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert row["stop_reason"] == stopper.stop_reason.value
    assert float(row["stop_epoch"]) == pytest.approx(stopper.policy.history.progress[-1])  # 3.73 epochs
    assert float(row["cost_at_stop"]) == pytest.approx(stopper.policy.history.costs_kwh[-1])


def test_autolog_beside_an_mlflowlogger_replays_the_loggers_run_and_names_autologs_copy(
    tmp_path, monkeypatch, ns, autolog, capsys
):
    """Autolog with an MLFlowLogger in the same experiment: MLflow makes two runs of the fit, the
    logger's with the callbacks' records and autolog's own with a copy of the Trainer's metrics.
    Replay over the experiment, told nothing, replays the logger's run to the callback's decision
    and names autolog's copy as skipped, rather than refusing the experiment for the copy's
    missing ``lightning_green.monitor``."""
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1)
    logger = ns.loggers.MLFlowLogger(experiment_name="autolog", tracking_uri=autolog)
    trainer = make_trainer(
        tmp_path,
        [stopper],
        logger=logger,
        max_epochs=40,
        lightning=ns,
        limit_train_batches=4,
        limit_val_batches=1,
    )
    trainer.fit(ns.module(curve_module)(saturating_curve(40)), datamodule=ns.DigitsDataModule(batch_size=16))
    assert stopper.stop_reason is not None
    client = MlflowClient(autolog)
    runs = client.search_runs([client.get_experiment_by_name("autolog").experiment_id])
    (copy,) = [r for r in runs if r.info.run_id != logger.run_id]  # autolog's own run of the fit
    assert "mlflow.autologging" in copy.data.tags and "energy/total_kwh" in copy.data.metrics
    assert "lightning_green.monitor" not in copy.data.params

    decisions = tmp_path / "decisions.csv"
    capsys.readouterr()
    argv = ["replay", "--mlflow-uri", autolog, "--experiment", "autolog", "-o", str(decisions)]
    assert cli.main(argv) == 0
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert row["curve_id"] == logger.run_id and row["stop_reason"] == stopper.stop_reason.value
    assert int(row["stop_epoch"]) == stopper.stopped_epoch + 1
    assert "skipped 1 MLflow autolog run(s) holding a copy of a fit's metrics" in capsys.readouterr().out
