"""The steps of an MLflow run's series: an active run reads back as an ``MLFlowLogger`` run does.

A run active in the process (``mlflow.start_run()`` around ``fit``, no ``MLFlowLogger``) gets every
series at Lightning's logging step, so ``--cost-key step`` reads optimizer steps; under autolog
(which logs each epoch at its number) a resumed run's copied checks go to the epochs' numbers
too. A run logged at epoch numbers has no ``step`` cost. A new run's fit into an MLflow run that
holds an earlier fit's series is warned of.
"""

from __future__ import annotations

import json
import warnings

import pytest
from conftest import make_trainer, one_error_line, replay_decision
from doubles import install_scripted_meter

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor, cli
from lightning_green.offline import latest_per_step

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("mlflow.pytorch")

BATCHES = 4  # optimizer steps an epoch


@pytest.fixture
def tracking(sqlite_uri):
    """A fresh store as the process's tracking URI; autolog and any active run ended afterwards."""
    import mlflow.pytorch

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri)
    yield sqlite_uri
    mlflow.pytorch.autolog(disable=True)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def _callbacks():
    return [
        EnergyMonitor(monitor="val_loss"),
        EnergyAwareEarlyStopping(monitor="val_loss", patience=5, min_epochs=1),
    ]


def _checkpointing_trainer(tmp_path, ns, ckpt_dir, max_epochs, **kwargs):
    """The callbacks and a ``last.ckpt`` in ``ckpt_dir``, a short digits run."""
    saver = ns.callbacks.ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True)
    return make_trainer(
        tmp_path,
        [*_callbacks(), saver],
        max_epochs=max_epochs,
        lightning=ns,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
        enable_checkpointing=True,
        **kwargs,
    )


def _fit_digits(trainer, ns, ckpt=None) -> None:
    trainer.fit(
        ns.DigitsClassifier(),
        datamodule=ns.DigitsDataModule(batch_size=16),
        ckpt_path=None if ckpt is None else str(ckpt),
    )


def _energy_steps(uri: str, run_id: str) -> dict[str, list[int]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    held = client.get_run(run_id).data.metrics
    return {
        key: sorted(latest_per_step(client.get_metric_history(run_id, key)))
        for key in held
        if key.startswith("energy/") or key == "epoch"
    }


def _replay_by_step(uri: str, experiment: str, out) -> dict[str, str]:
    argv = ["replay", "--mlflow-uri", uri, "--experiment", experiment, "--cost-key", "step", "-o", str(out)]
    assert cli.main(argv) == 0
    return replay_decision(out)


def test_a_run_started_by_hand_has_the_steps_of_an_mlflowlogger_run(tmp_path, monkeypatch, ns, tracking):
    """``with mlflow.start_run(): fit`` and ``MLFlowLogger``: every series at the same steps, and
    ``--cost-key step`` reads the same optimizer steps from both (not the epochs' numbers)."""
    install_scripted_meter(monkeypatch)
    fit = dict(max_epochs=3, lightning=ns, limit_train_batches=BATCHES, limit_val_batches=1)
    mlflow.set_experiment("active")
    with mlflow.start_run() as active:
        trainer = make_trainer(tmp_path / "a", _callbacks(), **fit)
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=16))
    logger = ns.loggers.MLFlowLogger(experiment_name="logger", tracking_uri=tracking)
    make_trainer(tmp_path / "l", _callbacks(), logger=logger, **fit).fit(
        ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=16)
    )

    by_hand = _energy_steps(tracking, active.info.run_id)
    assert by_hand == _energy_steps(tracking, logger.run_id)
    assert by_hand["energy/check_kwh"] == by_hand["energy/total_kwh"] == [3, 7, 11]
    assert by_hand["energy/run_kwh"] == [3 * BATCHES]

    active_row = _replay_by_step(tracking, "active", tmp_path / "active.csv")
    logger_row = _replay_by_step(tracking, "logger", tmp_path / "logger.csv")
    # The optimizer steps done (the logged step plus one; the run's end records at the steps done
    # already are not counted again)
    assert float(active_row["cost_total"]) == float(logger_row["cost_total"]) == 3 * BATCHES
    assert float(active_row["cost_at_stop"]) == float(logger_row["cost_at_stop"]) == 3 * BATCHES

    summary = tmp_path / "report.json"
    argv = ["report", "--mlflow-uri", tracking, "--run-id", active.info.run_id, "--cost-key", "step"]
    assert cli.main([*argv, "--json", str(summary), "-o", str(tmp_path / "report.png")]) == 0
    cost = json.loads(summary.read_text())["cost"]
    assert cost["total"] == 3 * BATCHES
    assert cost["to_best"] in (BATCHES, 2 * BATCHES, 3 * BATCHES)


@pytest.mark.parametrize("autolog", [False, True], ids=["by-hand", "autolog"])
def test_a_fit_resumed_into_a_new_active_run_copies_its_checks_in_order(
    tmp_path, monkeypatch, ns, tracking, autolog
):
    """Resumed from a checkpoint into a new active run: the earlier checks are copied to the axis
    of the run's own (Lightning's steps; the epochs' numbers under autolog), before its own."""
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    if autolog:
        mlflow.pytorch.autolog(log_models=False, checkpoint=False, silent=True)
    mlflow.set_experiment("resumed")
    ckpt_dir = tmp_path / "ckpt"
    runs = []
    for max_epochs, ckpt in ((3, None), (5, ckpt_dir / "last.ckpt")):
        trainer = _checkpointing_trainer(tmp_path, ns, ckpt_dir, max_epochs)
        with mlflow.start_run() as active:
            _fit_digits(trainer, ns, ckpt)
        runs.append(active.info.run_id)

    client = MlflowClient(tracking)
    numbers = latest_per_step(client.get_metric_history(runs[1], "energy/check_number"))
    steps = [0, 1, 2, 3, 4] if autolog else [3, 7, 11, 15, 19]
    assert sorted(numbers) == steps
    assert [numbers[s] for s in steps] == [1.0, 2.0, 3.0, 4.0, 5.0]
    totals = latest_per_step(client.get_metric_history(runs[1], "energy/total_kwh"))
    assert sorted(totals) == steps
    costs = latest_per_step(client.get_metric_history(runs[1], "energy/check_kwh"))
    assert [costs[s] for s in steps] == pytest.approx([totals[s] for s in steps])


def _log_run(client, experiment_id: str, with_epoch: bool) -> str:
    """A run as lightning_green logged an active run before: its epochs at their numbers."""
    run = client.create_run(experiment_id).info.run_id
    client.log_param(run, "lightning_green.monitor", "val_loss")
    client.log_param(run, "lightning_green.mode", "min")
    for epoch, (kwh, loss) in enumerate(((1.0, 0.9), (2.0, 0.5), (3.0, 0.45))):
        step = 10 * epoch + 9 if with_epoch else epoch
        metrics = {
            "energy/total_kwh": kwh,
            "energy/check_kwh": kwh,
            "energy/check_metric": loss,
            "energy/check_epochs": epoch + 1.0,
            "energy/check_number": epoch + 1.0,
        }
        if with_epoch:  # as an MLFlowLogger run: Lightning's epoch with each of its steps
            metrics["epoch"] = float(epoch)
        for key, value in metrics.items():
            client.log_metric(run, key, value, step=step)
    client.log_metric(run, "energy/run_kwh", 3.1, step=30)
    client.set_terminated(run)
    return run


def test_a_run_logged_at_epoch_numbers_has_no_step_cost(tmp_path, sqlite_uri, capsys):
    """An older active run's log (or autolog's): epochs at their numbers, the run's totals at the
    last step: ``--cost-key step`` is refused (it would mix the two), the kWh cost still replays."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    old = _log_run(client, client.create_experiment("old"), with_epoch=False)
    _log_run(client, client.create_experiment("steps"), with_epoch=True)

    out = tmp_path / "d.csv"
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "old", "-o", str(out)]
    assert cli.main([*argv, "--cost-key", "step"]) == 2
    line = one_error_line(capsys)
    assert old in line and "epoch numbers" in line and "energy/total_kwh" in line
    report = ["report", "--mlflow-uri", sqlite_uri, "--run-id", old, "--cost-key", "step"]
    assert cli.main([*report, "-o", str(tmp_path / "r.png")]) == 2
    assert "epoch numbers" in one_error_line(capsys)
    assert cli.main(argv) == 0  # against kWh: every series on one axis
    assert float(replay_decision(out)["cost_total"]) == 3.0

    row = _replay_by_step(sqlite_uri, "steps", tmp_path / "s.csv")  # an MLFlowLogger run's steps
    assert float(row["cost_total"]) == 30.0  # logged at step 29: 30 optimizer steps done


def test_a_new_runs_fit_into_an_mlflow_run_with_energy_is_warned_of(tmp_path, monkeypatch, ns, sqlite_uri):
    """A new Trainer's fit into an MLflow run an earlier fit logged energy to, without a checkpoint:
    one warning naming the run; resumed from the earlier fit's checkpoint, none."""
    install_scripted_meter(monkeypatch)
    ckpt_dir = tmp_path / "ckpt"

    def fit(max_epochs, run_id=None, ckpt=None):
        logger = ns.loggers.MLFlowLogger(experiment_name="same", tracking_uri=sqlite_uri, run_id=run_id)
        trainer = _checkpointing_trainer(tmp_path, ns, ckpt_dir, max_epochs, logger=logger)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit_digits(trainer, ns, ckpt)
        said = [str(w.message) for w in caught if "already holds lightning_green" in str(w.message)]
        return logger.run_id, said

    run_id, said = fit(2)
    assert said == []  # a new run
    (ckpt_dir / "last.ckpt").rename(tmp_path / "first.ckpt")
    _, said = fit(3, run_id=run_id, ckpt=tmp_path / "first.ckpt")
    assert said == []  # the earlier fit resumed into its run
    _, said = fit(2, run_id=run_id)
    (message,) = said
    assert run_id in message and "interleave" in message and "ckpt_path" in message
