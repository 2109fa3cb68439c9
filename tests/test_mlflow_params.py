"""The run parameters the callbacks log to MLflow: each key sent to a run once, async logging included."""

from __future__ import annotations

import csv

import pytest
from conftest import make_trainer

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor, cli, keys
from lightning_green.callbacks import _loggers
from lightning_green.policy import StopReason

FAST = dict(limit_train_batches=4, limit_val_batches=2, num_sanity_val_steps=0)


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    """One MLflow sqlite store for the tests that log no fit (each its own experiment)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def _green_params(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k.startswith(keys.PARAM_PREFIX)}


def test_an_async_mlflow_run_holds_both_callbacks_parameters_and_replays_the_stop(
    tmp_path, sqlite_uri, monkeypatch, capsys, ns
):
    """EnergyMonitor and EnergyAwareEarlyStopping both record the metric and its direction. MLflow's
    async logging merges the batches logged within its buffering time into one (and else writes
    them from several threads at once): a key in both batches made the store refuse the merged
    batch, in MLflow's background thread, and replay ran with the defaults (no stop)."""
    from mlflow.tracking import MlflowClient

    # The batches of a run logged within 2 s go to the store together: both callbacks' parameters
    # (logged at the first epoch's end and check) in one batch.
    monkeypatch.setenv("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "2")
    logger = ns.loggers.MLFlowLogger(experiment_name="async", tracking_uri=sqlite_uri, synchronous=False)
    monitor = EnergyMonitor(monitor="val_acc", mode="max", carbon_intensity_g_per_kwh=50.0)
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=1e-12, min_epochs=1)
    trainer = make_trainer(tmp_path, [monitor, stopper], logger=logger, max_epochs=3, lightning=ns, **FAST)
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    assert stopper.stop_reason is StopReason.ENERGY_BUDGET and stopper.stopped_epoch == 0

    run = MlflowClient(sqlite_uri).get_run(logger.run_id)
    logged = {
        keys.PARAM_ENERGY_SOURCE: monitor.history[0].source,
        keys.PARAM_PUE: monitor.pue,
        keys.PARAM_CARBON_INTENSITY: 50.0,
        keys.PARAM_MAX_EPOCHS: 3,
        **stopper.policy_params(),
    }
    assert _green_params(run.data.params) == {k: str(v) for k, v in logged.items()}
    assert not [k for k in run.data.tags if k.endswith(keys.RESUMED_SUFFIX)]

    out = tmp_path / "decisions.csv"
    assert cli.main(["replay", "--mlflow-uri", sqlite_uri, "--experiment", "async", "-o", str(out)]) == 0
    assert "policy arguments as recorded by 1 run(s)" in capsys.readouterr().out
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert row["stop_reason"] == "energy_budget"
    assert int(row["stop_epoch"]) == stopper.stopped_epoch + 1


def _recording(ns, **kwargs):
    """An ``MLFlowLogger`` of ``ns`` that keeps the keys of each batch of parameters it is given."""

    class Recording(ns.loggers.MLFlowLogger):
        def log_hyperparams(self, params):
            self.sent.append(sorted(params))
            super().log_hyperparams(params)

    logger = Recording(**kwargs)
    logger.sent = []
    return logger


def test_log_params_sends_each_key_to_a_run_once_across_callbacks(tmp_path, store_uri, ns):
    """What the monitor and the stopper log (both: the metric and its direction), and the stopper
    again at a restored stop: each key reaches the MLflow run once; a CSV log merges them all."""
    from mlflow.tracking import MlflowClient

    mlflow_logger = _recording(
        ns, experiment_name=f"once {ns.name}", tracking_uri=store_uri, synchronous=False
    )
    csv_logger = ns.loggers.CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(tmp_path, [], logger=[csv_logger, mlflow_logger], lightning=ns)
    monitors = {keys.PARAM_ENERGY_SOURCE: "estimate", keys.PARAM_PUE: 1.0}
    monitors.update({keys.PARAM_MONITOR: "val_acc", keys.PARAM_MODE: "max"})
    stoppers = {
        keys.PARAM_MAX_EPOCHS: 3,
        **EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=1e-5).policy_params(),
    }
    assert set(monitors) & set(stoppers) == {keys.PARAM_MONITOR, keys.PARAM_MODE}
    for params in (monitors, stoppers, stoppers):
        _loggers.log_params(trainer, params)

    sent = [key for batch in mlflow_logger.sent for key in batch]
    assert sorted(sent) == sorted({**monitors, **stoppers}), mlflow_logger.sent
    assert set(csv_logger.experiment.hparams) == {*monitors, *stoppers}
    mlflow_logger.finalize("success")  # the async queue written out
    run = MlflowClient(store_uri).get_run(mlflow_logger.run_id)
    assert _green_params(run.data.params) == {k: str(v) for k, v in {**monitors, **stoppers}.items()}


def test_a_changed_parameter_of_a_run_resumed_with_async_logging_is_a_resumed_tag(tmp_path, store_uri, ns):
    """A run resumed into its MLflow run with another plan, logging asynchronously: the store refuses
    a parameter's new value in MLflow's background thread (the whole batch with it), so the changed
    one is the tag ``.resumed``, never sent as a parameter, and the new ones still reach the run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    run_id = client.create_run(client.create_experiment(f"resumed {ns.name}")).info.run_id
    client.log_param(run_id, keys.PARAM_MAX_EPOCHS, "5")  # as the first part of the run did
    client.log_param(run_id, keys.PARAM_PUE, "1.2")

    logger = _recording(ns, tracking_uri=store_uri, run_id=run_id, synchronous=False)
    trainer = make_trainer(tmp_path, [], logger=logger, lightning=ns)
    _loggers.log_params(
        trainer, {keys.PARAM_MAX_EPOCHS: 40, keys.PARAM_PUE: 1.2, keys.PARAM_MONITOR: "val_loss"}
    )
    logger.finalize("success")  # the async queue written out

    assert logger.sent == [[keys.PARAM_MONITOR]]
    run = client.get_run(run_id)
    assert _green_params(run.data.params) == {
        keys.PARAM_MAX_EPOCHS: "5",
        keys.PARAM_PUE: "1.2",
        keys.PARAM_MONITOR: "val_loss",
    }
    assert {k: v for k, v in run.data.tags.items() if k.endswith(keys.RESUMED_SUFFIX)} == {
        keys.PARAM_MAX_EPOCHS + keys.RESUMED_SUFFIX: "40"
    }
