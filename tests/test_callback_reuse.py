"""Callbacks reused across fits: a new Trainer starts a new run; a continued or resumed one does not.

A sweep that builds its callbacks once and fits one Trainer per setting is common. Each fit of a
new Trainer is a run of its own (its own MLflow run): its energy, history, stop and adaptations
must not carry the previous run's. Fitting the same Trainer again continues its run, and a
checkpoint resume takes the checkpoint's state whatever the callbacks did before.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import make_trainer

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyAwareEarlyStopping, EnergyMonitor
from lightning_green.keys import PARAM_ENERGY_SOURCE


def _callbacks() -> list:
    return [
        EnergyMonitor(monitor="val_acc", mode="max"),
        AdaptivePrecision(),
        AdaptiveBatchSize(min_batch_size=8, max_batch_size=64),
        EnergyAwareEarlyStopping(monitor="val_acc", mode="max", patience=50),
    ]


def _series(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_callbacks_reused_in_a_new_trainer_start_a_new_run(tmp_path, sqlite_uri, ns):
    from mlflow.tracking import MlflowClient

    callbacks = _callbacks()
    monitor, precision, batch, stopper = callbacks
    runs = []
    # The second run differs in batch size, precision and length: the callbacks must start from it.
    for i, (epochs, batch_size, trainer_precision) in enumerate(((3, 32, "32-true"), (2, 16, "bf16-mixed"))):
        logger = ns.loggers.MLFlowLogger(experiment_name="sweep", tracking_uri=sqlite_uri)
        pl.seed_everything(0)
        trainer = make_trainer(
            tmp_path / f"fit{i}",
            callbacks,
            logger=logger,
            max_epochs=epochs,
            lightning=ns,
            precision=trainer_precision,
        )
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=batch_size))
        runs.append((logger.run_id, monitor.total_kwh))

    (first_id, _), (second_id, second_kwh) = runs
    # The second run's energy is its own: its total starts at its first epoch, not at the first run's.
    client = MlflowClient(sqlite_uri)
    totals = _series(client, second_id, "energy/total_kwh")
    epochs = _series(client, second_id, "energy/epoch_kwh")
    assert len(totals) == 2 and totals[0] == pytest.approx(epochs[0], rel=1e-9)
    assert second_kwh == pytest.approx(totals[-1], rel=1e-9)
    assert totals[-1] == pytest.approx(sum(epochs), rel=1e-9)
    assert len(monitor.history) == 2
    summary = json.loads(Path(monitor.summary_path).read_text())
    assert summary["epochs"] == 2
    # Its epochs, and its own energy outside them: before its first epoch and after its last.
    outside_kwh = summary["kwh_before_first_epoch"] + summary["kwh_after_last_epoch"]
    assert summary["total_kwh"] == pytest.approx(second_kwh + outside_kwh, rel=1e-9)
    assert second_id in str(monitor.summary_path)
    # Its parameters are logged to it too, not only to the first run.
    params = client.get_run(second_id).data.params
    assert params[PARAM_ENERGY_SOURCE] == "estimate"
    assert params["lightning_green.patience"] == "50"
    assert client.get_run(first_id).data.params["lightning_green.patience"] == "50"
    # The stopper decided on the second run's checks alone ...
    assert len(stopper.policy.history.metrics) == 2
    assert stopper.stop_reason is None and stopper.wait_count == stopper.policy.wait_count
    # ... and the adaptive callbacks started from the second run's own settings.
    assert batch.initial_batch_size == 16
    assert precision.baseline == "bf16-mixed"
    assert trainer.strategy.precision_plugin.precision == precision.current


def test_a_stopper_reused_in_a_trainer_validating_every_second_epoch_checks_after_its_validations(
    tmp_path, ns
):
    """The first Trainer validates every epoch, so ``check_on_train_epoch_end=None`` means the epoch's
    end; the second validates every second epoch: the reused stopper checks after those validations
    (no missing-metric error at the end of epoch 0), as a new stopper does."""

    def fit(stopper, name, **kwargs):
        pl.seed_everything(0)
        trainer = make_trainer(
            tmp_path / name, [stopper], max_epochs=4, lightning=ns, limit_train_batches=2, **kwargs
        )
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))

    def stopper():
        return EnergyAwareEarlyStopping(monitor="val_loss", patience=50)

    reused, fresh = stopper(), stopper()
    fit(reused, "first")
    assert reused.policy.history.progress.tolist() == [1.0, 2.0, 3.0, 4.0]
    fit(reused, "second", check_val_every_n_epoch=2)
    fit(fresh, "fresh", check_val_every_n_epoch=2)
    assert reused.policy.history.progress.tolist() == fresh.policy.history.progress.tolist() == [2.0, 4.0]


def test_fitting_the_same_trainer_again_continues_its_run(tmp_path, sqlite_uri, ns):
    from mlflow.tracking import MlflowClient

    callbacks = _callbacks()
    monitor, _, _, stopper = callbacks
    logger = ns.loggers.MLFlowLogger(experiment_name="continue", tracking_uri=sqlite_uri)
    pl.seed_everything(0)
    trainer = make_trainer(tmp_path, callbacks, logger=logger, max_epochs=2, lightning=ns)
    model, data = ns.DigitsClassifier(), ns.DigitsDataModule(batch_size=32)
    trainer.fit(model, datamodule=data)
    first_kwh = monitor.total_kwh
    trainer.fit_loop.max_epochs = 4
    trainer.fit(model, datamodule=data)

    assert len(monitor.history) == 4 and [r.epoch for r in monitor.history] == [0, 1, 2, 3]
    assert len(stopper.policy.history.metrics) == 4
    totals = _series(MlflowClient(sqlite_uri), logger.run_id, "energy/total_kwh")
    assert len(totals) == 4 and totals == sorted(totals) and totals[2] > first_kwh


def test_a_reused_callback_resumed_from_a_checkpoint_takes_the_checkpoints_state(tmp_path, ns):
    callbacks = _callbacks()
    monitor, _, _, stopper = callbacks
    checkpoints = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path, [*callbacks, checkpoints], max_epochs=4, lightning=ns, enable_checkpointing=True
    )
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))
    metrics = stopper.policy.history.metrics.tolist()
    kwh_after_two = monitor.history[1].total_j
    assert len(metrics) == 4

    # A new Trainer with the same callbacks, resumed after epoch 1: the run continues from there.
    pl.seed_everything(0)
    resumed = make_trainer(tmp_path, callbacks, max_epochs=3, lightning=ns)
    resumed.fit(
        ns.DigitsClassifier(),
        datamodule=ns.DigitsDataModule(batch_size=32),
        ckpt_path=str(next((tmp_path / "ckpt").glob("epoch=1-*.ckpt"))),
    )
    assert stopper.policy.history.metrics.tolist()[:2] == metrics[:2]
    assert len(stopper.policy.history.metrics) == 3
    assert [r.epoch for r in monitor.history] == [0, 1, 2]
    assert monitor.history[1].total_j == pytest.approx(kwh_after_two, rel=1e-12)
    assert monitor.history[2].total_j > kwh_after_two


def test_callbacks_pickle_after_a_fit_and_the_copies_run_a_new_fit(tmp_path, ns):
    """Sweep tools (Ray, multiprocessing) pickle callbacks between trials: after a fit, all four
    pickle (the adaptive ones let go of the trainer), and the copies fit a new Trainer afresh."""
    import pickle

    callbacks = _callbacks()
    pl.seed_everything(0)
    trainer = make_trainer(tmp_path, callbacks, max_epochs=1, lightning=ns)
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))
    copies = pickle.loads(pickle.dumps(callbacks))
    assert [type(c) for c in copies] == [type(c) for c in callbacks]

    again = make_trainer(tmp_path / "again", copies, max_epochs=2, lightning=ns)
    again.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))
    assert [r.epoch for r in copies[0].history] == [0, 1]
    assert len(copies[3].policy.history.metrics) == 2
