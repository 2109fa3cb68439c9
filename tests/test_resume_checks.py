"""A run killed and resumed from a checkpoint records the same metrics and makes the same decisions.

The kill is simulated: a fit that raises at the start of an epoch leaves the checkpoint a process
killed there would leave (saved at the previous validation's end), and a new Trainer resumes from
it. Energy comes from a counter the training and validation batches drive (:class:`BatchMeter`),
so the resumed run's figures equal the uninterrupted run's exactly; ``val_loss`` is scripted.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from conftest import KillAt, KilledError, make_trainer

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor, keys
from lightning_green.energy.meter import EnergyMeter

COUNTER_J = [0.0]  # what the batches used so far, in this process
TRAIN_J, VAL_J = 1000.0, 100.0
FAST = dict(limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0, enable_checkpointing=True)
VEE = [1.4, 1.2, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0]  # best at epoch 2


class BatchMeter(EnergyMeter):
    """A host counter that the batches drive: each fit's meter counts from its start."""

    source = "rapl"

    def _start(self) -> None:
        self.base = COUNTER_J[0]

    def _read_j(self) -> dict[str, float]:
        return {"package-0": COUNTER_J[0] - self.base}


@pytest.fixture(autouse=True)
def _batch_meter(monkeypatch):
    from lightning_green.callbacks import energy_monitor

    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **kwargs: BatchMeter())


def batch_module(base: type) -> type:
    """Trains the digits CNN for real, logs ``val_loss`` = ``curve[epoch]``, drives the counter."""

    class BatchModule(base):
        def __init__(self, curve: list[float]) -> None:
            super().__init__()
            self.curve = list(curve)

        def training_step(self, batch, batch_idx):
            COUNTER_J[0] += TRAIN_J
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            COUNTER_J[0] += VAL_J
            self.log("val_loss", torch.tensor(self.curve[min(self.current_epoch, len(self.curve) - 1)]))

    return BatchModule


def late_module(base: type) -> type:
    """:func:`batch_module` with its own ``on_train_epoch_end`` (the monitor reads the metric later)."""

    class LateModule(batch_module(base)):
        def on_train_epoch_end(self):
            self.log("epoch_end_seen", float(self.current_epoch))

    return LateModule


def _fit(ns, root: Path, callbacks, max_epochs, module, ckpt_path=None, logger=False, **kwargs):
    ns.pl.seed_everything(0)
    trainer = make_trainer(
        root, callbacks, logger=logger, max_epochs=max_epochs, lightning=ns, **{**FAST, **kwargs}
    )
    trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return trainer


def _killed_and_resumed(ns, root: Path, make_callbacks, kill_at: int, max_epochs: int, module, **kwargs):
    """The callbacks of the uninterrupted fit and of the one killed at ``kill_at`` and resumed."""
    reference = make_callbacks(root / "a")
    _fit(ns, root / "a", reference, max_epochs, module(), **kwargs)
    with pytest.raises(KilledError):
        _fit(ns, root / "b", [*make_callbacks(root / "b"), KillAt(kill_at)], max_epochs, module(), **kwargs)
    resumed = make_callbacks(root / "b")
    last = root / "b" / "ckpt" / "last.ckpt"
    _fit(ns, root / "b", resumed, max_epochs, module(), ckpt_path=str(last), **kwargs)
    return reference, resumed


@pytest.mark.parametrize(
    "saved_at",
    ["validation_end", "every_2_epochs_late_metric"],
)
def test_an_epoch_checkpointed_at_its_validation_end_keeps_its_metric(tmp_path, ns, saved_at):
    """A checkpoint saved at validation end (``save_on_train_epoch_end=False``; the default
    ``ModelCheckpoint`` with validation every 2 epochs), killed before the epoch ended: the resumed
    epoch's end has the metric of the validation Lightning does not run again, as the uninterrupted
    run had - the gain per kWh, best epoch and kWh to it are the same (a module with its own
    ``on_train_epoch_end`` too, whose metric the monitor reads after it)."""
    every = 2 if saved_at.startswith("every_2") else 1
    module = ns.module(late_module if saved_at.endswith("late_metric") else batch_module)

    def callbacks(root):
        checkpoint = dict(dirpath=root / "ckpt", save_last=True)
        if every == 1:
            checkpoint.update(monitor="val_loss", save_on_train_epoch_end=False)
        return [EnergyMonitor(monitor="val_loss"), ns.callbacks.ModelCheckpoint(**checkpoint)]

    caught = 3 if every == 2 else 2  # the epoch the checkpoint caught at its validation's end
    reference, resumed = _killed_and_resumed(
        ns, tmp_path, callbacks, caught + 1, 6, lambda: module(VEE), check_val_every_n_epoch=every
    )
    before, after = reference[0], resumed[0]
    assert before.history[caught].metric is not None
    for field in ("epoch", "metric", "marginal_per_kwh", "total_j"):
        assert [getattr(r, field) for r in after.history] == [getattr(r, field) for r in before.history], (
            field
        )
    for field in ("best_epoch", "best_metric", "kwh_to_best", "kwh_after_best", "total_kwh"):
        assert after.last_summary[field] == before.last_summary[field], field


def test_a_stopper_checking_at_epoch_end_resumed_from_its_validation_end_decides_the_same(tmp_path, ns):
    """The stopper checks at the training epoch's end, after the validation the checkpoint was saved
    at: the resumed fit's check reads that validation's value (kept in the checkpoint) - no missing
    metric, no check lost or counted twice - and stops where the uninterrupted run stopped."""

    def callbacks(root):
        stopper = EnergyAwareEarlyStopping(
            monitor="val_loss", patience=3, min_relative_gain=None, patience_rest_fraction=None
        )
        checkpoint = ns.callbacks.ModelCheckpoint(
            dirpath=root / "ckpt", monitor="val_loss", save_on_train_epoch_end=False, save_last=True
        )
        return [stopper, checkpoint]

    module = ns.module(batch_module)
    reference, resumed = _killed_and_resumed(ns, tmp_path, callbacks, 3, 8, lambda: module(VEE))
    before, after = reference[0], resumed[0]
    assert before.stop_reason is not None and before.stopped_epoch == 5
    assert (after.stop_reason, after.stopped_epoch) == (before.stop_reason, before.stopped_epoch)
    assert after.policy.state_dict() == before.policy.state_dict()
    assert after.policy.history.progress.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert (
        after.energy_monitor.last_summary["stop_savings"]
        == before.energy_monitor.last_summary["stop_savings"]
    )


@pytest.mark.parametrize("max_epochs", [-1, 30], ids=["planned-in-steps", "steps-and-epochs"])
def test_a_run_planned_in_steps_resumed_from_an_epoch_end_checkpoint_decides_the_same(
    tmp_path, ns, max_epochs
):
    """``Trainer(max_steps=...)`` resumed from the ``last.ckpt`` of an epoch's end: Lightning runs that
    epoch's end again, with none of its metrics, before training on. The stopper (``strict=True``)
    knows the check from the checkpoint and does not check again - no missing-metric error - and the
    resumed run stops where the uninterrupted one did, on the same checks."""

    def callbacks(root):
        stopper = EnergyAwareEarlyStopping(
            monitor="val_loss", patience=3, min_relative_gain=None, patience_rest_fraction=None
        )
        return [stopper, ns.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_last=True)]

    module = ns.module(batch_module)
    steps = 30 * FAST["limit_train_batches"]
    reference, resumed = _killed_and_resumed(
        ns, tmp_path, callbacks, 4, max_epochs, lambda: module(VEE), max_steps=steps
    )
    before, after = reference[0], resumed[0]
    assert before.stop_reason is not None and before.stopped_epoch == 5
    assert (after.stop_reason, after.stopped_epoch) == (before.stop_reason, before.stopped_epoch)
    assert after.policy.state_dict() == before.policy.state_dict()
    assert len(after.policy.history) == 6


def test_a_run_killed_after_the_stop_and_resumed_into_a_new_mlflow_run_records_what_the_stop_saved(
    tmp_path, sqlite_uri, ns
):
    """Killed between the stop and the process's exit (the checkpoint holds the stop), resumed into a
    new MLflow run: the fit ends at once, and its summary (``stop_savings``, ``stopping_policy``, the
    printed "not run (projected)" line) and its run's ``energy/not_run_*_projected`` metrics are
    the stopped run's."""
    from mlflow.tracking import MlflowClient

    from lightning_green.report import format_summary

    def fit(name, ckpt_path=None):
        stopper = EnergyAwareEarlyStopping(
            monitor="val_loss", patience=3, min_relative_gain=None, patience_rest_fraction=None
        )
        checkpoint = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        logger = ns.loggers.MLFlowLogger(
            experiment_name=name, tracking_uri=sqlite_uri, artifact_location=str(tmp_path / "artifacts")
        )
        module = ns.module(batch_module)(VEE)
        trainer = _fit(ns, tmp_path / name, [stopper, checkpoint], 12, module, ckpt_path, logger=logger)
        return stopper, logger, trainer

    first, logger, _ = fit("first")
    assert first.stop_reason is not None and first.stopped_epoch == 5
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]  # plain data
    assert saved[first.state_key]["stop_record"]["metrics"][keys.NOT_RUN_KWH] > 0
    resumed, new_logger, trainer = fit("resumed", tmp_path / "ckpt" / "last.ckpt")
    assert trainer.current_epoch == first.stopped_epoch + 1  # not one epoch more

    summaries = [cb.energy_monitor.last_summary for cb in (first, resumed)]
    assert summaries[0]["stop_savings"]["kwh_not_spent"] > 0
    for field in ("stop_reason", "stopped_epoch", "stop_message", "stop_savings", "stopping_policy"):
        assert summaries[1].get(field) == summaries[0][field], field
    assert "not run (projected)" in format_summary(summaries[1])
    written = json.loads(Path(resumed.energy_monitor.summary_path).read_text())
    assert written["stop_savings"] == json.loads(json.dumps(summaries[0]["stop_savings"]))

    client = MlflowClient(sqlite_uri)

    def not_run(run_id):
        return {
            key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            for key in keys.NOT_RUN_KEYS
            if client.get_metric_history(run_id, key)
        }

    assert new_logger.run_id != logger.run_id
    assert not_run(new_logger.run_id) == not_run(logger.run_id) != {}
    tags = [client.get_run(run_id).data.tags for run_id in (logger.run_id, new_logger.run_id)]
    for tag in (keys.TAG_STOP_REASON, keys.TAG_STOPPED_EPOCH):  # the stop, recorded in the new run too
        assert tags[1][tag] == tags[0][tag], tag


@pytest.mark.parametrize(
    ("ending", "max_epochs"),
    [("ran_to_max_epochs", 2), ("stopped_at_the_last_epoch", 4)],
)
def test_a_run_resumed_from_its_last_checkpoint_records_how_it_ended_again(
    tmp_path, sqlite_uri, ns, ending, max_epochs
):
    """A finished run resumed from its last checkpoint into a new MLflow run (the same command run
    again) trains nothing and records how the run ended, as its first fit did: ``none`` (summary,
    printed line, tag) for a run that ran to ``max_epochs`` - Lightning skips the training loop,
    so no ``on_train_end`` records it -, and the stop for a run stopped at its last epoch (the loop
    skipped too; a stop before it: the test above). The EnergyMonitor comes first, so its summary is
    written before the stopper's own ``on_fit_end``."""
    from mlflow.tracking import MlflowClient

    from lightning_green.report import format_summary

    def fit(name, ckpt_path=None):
        monitor = EnergyMonitor(monitor="val_loss")
        stopper = EnergyAwareEarlyStopping(
            monitor="val_loss",
            patience=1,
            min_epochs=0,
            min_relative_gain=None,
            patience_rest_fraction=None,
        )
        checkpoint = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        logger = ns.loggers.MLFlowLogger(experiment_name=name, tracking_uri=sqlite_uri)
        module = ns.module(batch_module)(VEE)  # best at epoch 2: a plateau stop after epoch 3
        trainer = _fit(
            ns, tmp_path / name, [monitor, stopper, checkpoint], max_epochs, module, ckpt_path, logger=logger
        )
        return stopper, monitor, logger, trainer

    first, _, logger, trainer = fit("first")
    epochs = trainer.current_epoch
    expected = "none" if ending == "ran_to_max_epochs" else "plateau"
    assert (first.stop_reason is None) is (expected == "none")
    assert epochs == (max_epochs if expected == "none" else 4)  # a stop after epoch 3: 4 epochs
    _, monitor, new_logger, trainer = fit("resumed", tmp_path / "ckpt" / "last.ckpt")
    assert trainer.current_epoch == epochs  # no epoch more

    client = MlflowClient(sqlite_uri)
    runs = [client.get_run(lg.run_id).data for lg in (logger, new_logger)]
    summaries = [first.energy_monitor.last_summary, monitor.last_summary]
    assert new_logger.run_id != logger.run_id
    for summary, run in zip(summaries, runs, strict=True):
        assert summary["stop_reason"] == run.tags[keys.TAG_STOP_REASON] == expected
        if expected == "none":
            assert summary["training_end"] == f"ran to max_epochs={max_epochs}"
            assert re.search(
                rf"\n  stop reason +none \(ran to max_epochs={max_epochs}\)", format_summary(summary)
            )
            assert keys.TAG_STOPPED_EPOCH not in run.tags
        else:
            assert summary["stopped_epoch"] == int(run.tags[keys.TAG_STOPPED_EPOCH]) == 3
        # The plan the stopper decided with, for replay of the new run alone.
        assert run.params[keys.PARAM_MAX_EPOCHS] == str(max_epochs)
    assert json.loads(Path(monitor.summary_path).read_text())["stop_reason"] == expected


def test_a_checkpoint_at_an_epochs_last_batch_warns_that_lightning_skips_its_validation(tmp_path, ns):
    """``ModelCheckpoint(every_n_train_steps=...)`` saved at the epoch's last batch: Lightning's
    restart goes on at the next epoch without that epoch's validation, so its check is missing; the
    resumed fit says so once, naming the epoch. A checkpoint saved at an epoch's end does not warn."""
    module = ns.module(batch_module)

    def checkpoint(root, **kwargs):
        return ns.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_last=True, **kwargs)

    steps = FAST["limit_train_batches"]
    _fit(ns, tmp_path, [EnergyMonitor(), checkpoint(tmp_path, every_n_train_steps=steps)], 2, module(VEE))
    with pytest.warns(UserWarning, match="last batch of epoch 1") as caught:
        _fit(
            ns,
            tmp_path,
            [EnergyMonitor(), checkpoint(tmp_path)],
            3,
            module(VEE),
            tmp_path / "ckpt" / "last.ckpt",
        )
    assert len([w for w in caught if "Lightning's restart" in str(w.message)]) == 1

    _fit(ns, tmp_path / "e", [EnergyMonitor(), checkpoint(tmp_path / "e")], 2, module(VEE))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        last = tmp_path / "e" / "ckpt" / "last.ckpt"
        _fit(ns, tmp_path / "e", [EnergyMonitor(), checkpoint(tmp_path / "e")], 3, module(VEE), last)
    assert not [w for w in caught if "Lightning's restart" in str(w.message)]
