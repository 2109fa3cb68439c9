"""EnergyAwareEarlyStopping in real fits: why and when it stops, what it logs, resume, DDP."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import pytorch_lightning as pl
from conftest import PL, AnyCallback, KillAt, KilledError, make_trainer
from digits import DigitsClassifier
from doubles import CurveModule, curve_module, install_scripted_meter, saturating_curve
from pytorch_lightning.loggers import MLFlowLogger

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor
from lightning_green.energy.units import J_PER_KWH
from lightning_green.policy import StopReason

FAST = dict(limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0)
EPOCH_KWH = 1000.0 / J_PER_KWH  # the scripted meter: 1000 J per epoch boundary
# Its read when the first epoch starts (1000 J): before the first epoch, in no epoch. The budget is
# the whole run's and counts it; the next epoch is projected from the epochs (1000 J each).
BEFORE_KWH = 1000.0 / J_PER_KWH


def _fit(tmp_path, callbacks, module, max_epochs, ckpt_path=None, lightning=PL, **kwargs):
    pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path, callbacks, max_epochs=max_epochs, lightning=lightning, **{**FAST, **kwargs}
    )
    trainer.fit(module, datamodule=lightning.DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return trainer


def test_stops_when_more_epochs_stop_paying_and_records_why(tmp_path, sqlite_uri, monkeypatch, ns):
    from mlflow.tracking import MlflowClient

    built = install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    logger = ns.loggers.MLFlowLogger(experiment_name="stop", tracking_uri=sqlite_uri)
    module = ns.module(curve_module)(saturating_curve(40))
    trainer = _fit(tmp_path, [stopper], module, max_epochs=40, logger=logger, lightning=ns)

    assert stopper.stop_reason is StopReason.MARGINAL_GAIN
    assert stopper.config.min_epochs <= stopper.stopped_epoch < 39
    assert trainer.current_epoch == stopper.stopped_epoch + 1  # stopped right there
    assert trainer.early_stopping_callback is stopper
    # One measurement, created implicitly right after the stopper.
    monitors = [cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor)]
    assert len(monitors) == 1 and monitors[0].implicit and len(built) == 1
    assert trainer.callbacks.index(monitors[0]) == trainer.callbacks.index(stopper) + 1

    client = MlflowClient(sqlite_uri)
    run = client.get_run(logger.run_id)
    assert run.data.tags["lightning_green.stop_reason"] == "marginal_gain"
    assert run.data.tags["lightning_green.stopped_epoch"] == str(stopper.stopped_epoch)
    projected = client.get_metric_history(logger.run_id, "energy/projected_gain_per_kwh")
    assert len(projected) >= 1
    summary = monitors[0].last_summary
    assert summary["stop_reason"] == "marginal_gain" and summary["stopped_epoch"] == stopper.stopped_epoch
    assert summary["stopping_policy"]["reason"] == "marginal_gain"


def test_energy_budget_stops_before_it_would_be_exceeded(tmp_path, monkeypatch):
    install_scripted_meter(monkeypatch)
    budget_kwh = BEFORE_KWH + 5.4 * EPOCH_KWH
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=budget_kwh)
    trainer = _fit(tmp_path, [stopper], DigitsClassifier(), max_epochs=20)
    history = stopper.energy_monitor.history
    assert stopper.stop_reason is StopReason.ENERGY_BUDGET
    assert stopper.stopped_epoch == 4  # after 5 epochs: a 6th would make 1000 + 6 x 1000 J > 6.4 x 1000 J
    assert BEFORE_KWH + history[-1].total_kwh <= budget_kwh
    assert trainer.current_epoch == 5


def test_a_budget_the_run_ends_within_is_no_stop(tmp_path, monkeypatch):
    """A run whose last planned epoch ends within the budget ran to its end: the next epoch, which
    would exceed the budget, was never planned, so no budget stop is reported."""
    install_scripted_meter(monkeypatch)
    budget_kwh = BEFORE_KWH + 4.5 * EPOCH_KWH
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=budget_kwh)
    trainer = _fit(tmp_path, [stopper], DigitsClassifier(), max_epochs=4)
    assert stopper.stop_reason is None and stopper.stopped_epoch == 0
    assert trainer.current_epoch == 4 and len(stopper.energy_monitor.history) == 4


class StopsTheRunAt(AnyCallback):
    """Ends the run at epoch ``epoch`` before validation, as ``Trainer(max_time)``'s Timer does."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            trainer.should_stop = True


# val_loss improves for three epochs, then never again: a plateau stop (patience 3) at epoch 5.
PLATEAU_AT_5 = [3.0, 2.0, 1.0, *[1.5] * 20]


def _plateau_stopper() -> EnergyAwareEarlyStopping:
    return EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1, min_relative_gain=None)


@pytest.mark.parametrize("order", ["ours_first", "lightnings_first"])
def test_its_stop_is_recorded_whatever_callback_asked_to_stop_first(tmp_path, monkeypatch, ns, order):
    """Lightning's EarlyStopping beside it (README) decides to stop at the same check: whichever comes
    first in the callback list, the stop this stopper decided is its own - reason, stopped epoch,
    summary and what it saved are those of the run it stops alone (and what replay of its log says)."""
    install_scripted_meter(monkeypatch)
    module = ns.module(curve_module)
    alone = _plateau_stopper()
    _fit(tmp_path / "alone", [alone], module(PLATEAU_AT_5), max_epochs=20, lightning=ns)
    assert (alone.stop_reason, alone.stopped_epoch) == (StopReason.PLATEAU, 5)
    expected = alone.energy_monitor.last_summary

    ours = _plateau_stopper()
    theirs = ns.callbacks.EarlyStopping(monitor="val_loss", patience=3)
    callbacks = [ours, theirs] if order == "ours_first" else [theirs, ours]
    trainer = _fit(tmp_path / order, callbacks, module(PLATEAU_AT_5), max_epochs=20, lightning=ns)
    assert trainer.current_epoch == 6 and theirs.stopped_epoch == 5  # both stop at the same check
    assert (ours.stop_reason, ours.stopped_epoch) == (StopReason.PLATEAU, 5)
    summary = ours.energy_monitor.last_summary
    assert (summary["stop_reason"], summary["stopped_epoch"]) == ("plateau", 5)
    assert summary["stop_savings"] == expected["stop_savings"]


def test_its_stop_is_recorded_when_another_stop_is_held_by_the_trainers_floor(tmp_path, monkeypatch, ns):
    """Lightning's EarlyStopping asks to stop at epoch 1, held by ``Trainer(min_epochs=8)``: the
    stopper's own plateau stop at epoch 5, renewed until the floor ends the run, is recorded."""
    install_scripted_meter(monkeypatch)
    ours = _plateau_stopper()
    theirs = ns.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=100.0)
    module = ns.module(curve_module)(PLATEAU_AT_5)
    trainer = _fit(tmp_path, [theirs, ours], module, max_epochs=12, min_epochs=8, lightning=ns)
    assert trainer.current_epoch == 8
    assert ours.stop_reason is StopReason.PLATEAU and ours.stopped_epoch == 7  # renewed at every check
    summary = ours.energy_monitor.last_summary
    assert summary["stop_reason"] == "plateau" and summary["stop_savings"]["epochs_not_run"] == 4


def test_the_same_trainer_fit_again_after_the_stop_ends_at_once(tmp_path, monkeypatch, caplog, ns):
    """``trainer.fit()`` again after the stop, nothing changed: the stop stands, as in a fit resumed
    from a checkpoint saved after it - no epoch trained, the stop's epoch kept, a line saying so and
    how to train on. With a longer ``max_epochs`` the fit trains on and the next check decides anew."""
    install_scripted_meter(monkeypatch)
    caplog.set_level("INFO")
    stopper = _plateau_stopper()
    module = ns.module(curve_module)(PLATEAU_AT_5)
    trainer = _fit(tmp_path, [stopper], module, max_epochs=20, lightning=ns)
    assert (stopper.stop_reason, stopper.stopped_epoch, trainer.global_step) == (StopReason.PLATEAU, 5, 24)
    summary = stopper.energy_monitor.last_summary

    trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=32))
    assert (trainer.current_epoch, trainer.global_step) == (6, 24)  # not one batch more
    assert (stopper.stop_reason, stopper.stopped_epoch, len(stopper.policy.history)) == (
        StopReason.PLATEAU,
        5,
        6,
    )
    assert "stopped this run at epoch 5 (plateau) in an earlier fit of this Trainer" in caplog.text
    assert "Change the stopper's arguments or max_epochs to train on" in caplog.text
    again = stopper.energy_monitor.last_summary
    assert (again["stop_reason"], again["stop_savings"]) == ("plateau", summary["stop_savings"])

    trainer.fit_loop.max_epochs = 21
    trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=32))
    assert trainer.current_epoch == 7 and len(stopper.policy.history) == 7
    assert (stopper.stop_reason, stopper.stopped_epoch) == (StopReason.PLATEAU, 6)  # decided anew
    assert "so this fit trains on and decides anew" in caplog.text


def test_a_run_ended_by_something_else_alone_is_not_this_stoppers_stop(tmp_path, monkeypatch, ns):
    """``Trainer(max_time)`` (or another callback) ends the run at epoch 1 and the stopper's check
    there says go on: the check is recorded, no stop is claimed."""
    install_scripted_meter(monkeypatch)
    stopper = _plateau_stopper()
    module = ns.module(curve_module)(PLATEAU_AT_5)
    trainer = _fit(tmp_path, [stopper, StopsTheRunAt(1)], module, max_epochs=20, lightning=ns)
    assert trainer.current_epoch == 2 and len(stopper.policy.history) == 2
    assert not stopper.last_decision.should_stop
    assert stopper.stop_reason is None and stopper.stopped_epoch == 0
    fields = stopper.energy_summary_fields()
    assert fields["stop_reason"] == "none" and "for another reason" in fields["stop_message"]


def test_shares_an_explicit_monitor_and_never_measures_twice(tmp_path, monkeypatch):
    built = install_scripted_meter(monkeypatch)
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", energy_budget_kwh=BEFORE_KWH + 2.5 * EPOCH_KWH)
    trainer = _fit(tmp_path, [stopper, monitor], DigitsClassifier(), max_epochs=10)
    assert [cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor)] == [monitor]
    assert len(built) == 1 and stopper.energy_monitor is monitor
    assert stopper.stopped_epoch == 1 and len(monitor.history) == 2
    assert [r.energy_j for r in monitor.history] == [1000.0, 1000.0]


def test_two_stoppers_are_refused_at_fit_start_lightnings_beside_one_works(tmp_path, ns):
    """Two stoppers would each record the run's stop (summary, tags, parameters): one is refused
    before training, naming both; Lightning's own EarlyStopping beside ours stops and is honest."""
    acc = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=1e-12)
    loss = EnergyAwareEarlyStopping(monitor="val_loss")
    named = r"2 EnergyAwareEarlyStopping callbacks \(monitors 'val_acc', 'val_loss'\)"
    with pytest.raises(ValueError, match=named):
        _fit(tmp_path, [acc, loss], ns.DigitsClassifier(), max_epochs=3, lightning=ns)
    assert len(acc.policy.history) == 0  # nothing trained

    theirs = ns.callbacks.EarlyStopping(monitor="val_loss", patience=1, stopping_threshold=1e9)
    ours = EnergyAwareEarlyStopping(monitor="val_acc", mode="max")
    trainer = _fit(tmp_path, [ours, theirs], ns.DigitsClassifier(), max_epochs=5, lightning=ns)
    assert trainer.current_epoch == 1 and theirs.stopped_epoch == 0  # Lightning's threshold, at once
    monitor = next(cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor))
    assert ours.stop_reason is None and monitor.last_summary["stop_reason"] == "none"


def test_barebones_trainers_are_refused_at_fit_start_where_a_metric_is_monitored(tmp_path, ns):
    """``Trainer(barebones=True)`` disables ``self.log``: a monitored metric is never logged.

    Every callback that needs one refuses before any training, naming barebones (not an error after
    a whole epoch that tells the user to log a metric the model logs); one that may go without it
    (``strict=False``) warns once; ``EnergyMonitor()`` without a metric measures as usual.
    """
    from lightning_green.callbacks import MonitorNotLoggedError

    def barebones(callbacks):
        fast = dict(limit_train_batches=2, limit_val_batches=1)
        return ns.Trainer(
            barebones=True, max_epochs=1, callbacks=callbacks, default_root_dir=str(tmp_path), **fast
        )

    def fit(trainer):
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))
        return trainer

    lightnings = ns.callbacks.EarlyStopping(monitor="val_acc", mode="max")
    adopted = r"EnergyMonitor\(\) \(watching the EarlyStopping callback's monitor 'val_acc'\)"
    refused = [
        ([EnergyMonitor(monitor="val_acc", mode="max")], r"EnergyMonitor\(monitor='val_acc'\)"),
        (
            [EnergyAwareEarlyStopping(monitor="val_acc", mode="max")],
            r"EnergyAwareEarlyStopping\(monitor='val_acc'\)",
        ),
        ([EnergyMonitor(), lightnings], adopted),
    ]
    for callbacks, who in refused:
        trainer = barebones(callbacks)
        with pytest.raises(
            MonitorNotLoggedError, match=who + r" cannot work with Trainer\(barebones=True\)"
        ) as err:
            fit(trainer)
        assert "disables self.log" in str(err.value) and trainer.global_step == 0  # before any training
    assert not (tmp_path / "energy_reports").exists()  # nothing measured, no summary of a fit that never ran

    lenient = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", strict=False)
    with pytest.warns(UserWarning, match=r"barebones=True.*strict=False: it goes on without the metric"):
        trainer = fit(barebones([lenient]))
    assert trainer.current_epoch == 1 and lenient.stop_reason is None

    monitor = EnergyMonitor()  # no metric: the energy alone, measured and summarised
    trainer = fit(barebones([monitor]))
    assert trainer.current_epoch == 1 and monitor.last_summary["epochs"] == 1
    assert (tmp_path / "energy_reports" / "energy_summary.json").exists()


@pytest.mark.parametrize("scheduled", [False, True], ids=["constant-lr", "multistep-lr"])
def test_replaying_the_logged_run_reproduces_the_callbacks_decision(
    tmp_path, sqlite_uri, monkeypatch, scheduled
):
    """DESIGN: a decision replayed on a logged curve is the decision the callback would have made.

    The run logs its planned horizon and each check's distance to a scheduled learning-rate drop;
    MLflow replay reads them back, so nothing but the run itself is needed.
    """
    import csv

    from lightning_green import cli

    install_scripted_meter(monkeypatch)
    epochs = 60 if scheduled else 40
    module = CurveModule(saturating_curve(epochs, tau=5.0))
    if scheduled:  # flat from ~epoch 10, the drop at 26 buys a step, then flat again
        curve = [v if e < 26 else v - 0.6 for e, v in enumerate(saturating_curve(epochs))]
        module = CurveModule(curve, lr_milestones=[26])
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    logger = MLFlowLogger(experiment_name="replay-me", tracking_uri=sqlite_uri)
    _fit(tmp_path, [stopper], module, max_epochs=epochs, logger=logger)
    assert stopper.stop_reason is not None

    out = tmp_path / "decisions.csv"
    argv = [
        "replay",
        "--mlflow-uri",
        sqlite_uri,
        "--experiment",
        "replay-me",
        "--monitor",
        "val_loss",
        "--mode",
        "min",
        "-o",
        str(out),
    ]
    assert cli.main(argv) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert row["stop_reason"] == stopper.stop_reason.value
    assert int(row["stop_epoch"]) == stopper.stopped_epoch + 1  # replay counts epochs completed
    assert float(row["cost_at_stop"]) == pytest.approx(stopper.energy_monitor.history[-1].total_kwh)


@pytest.mark.parametrize("how", ["continued", "resumed"])
def test_a_run_trained_on_with_a_longer_plan_replays_to_the_callbacks_decision(
    tmp_path, sqlite_uri, monkeypatch, ns, how
):
    """A run fit to 5 epochs, then trained on to 40 (the same Trainer fit again, or resumed from its
    checkpoint into its MLflow run): replay with no options uses the latest plan, as the callback
    did, and makes its decision (with the first plan it saw no stop)."""
    import csv

    from lightning_green import cli

    install_scripted_meter(monkeypatch)
    module = ns.module(curve_module)(saturating_curve(40, tau=5.0))
    first = EnergyAwareEarlyStopping(monitor="val_loss", min_relative_gain=0.5)
    logger = ns.loggers.MLFlowLogger(experiment_name="longer", tracking_uri=sqlite_uri)
    ckpt = tmp_path / "ckpt"
    # (Checkpoints read the scripted meter too: both fits of the resumed run save them, alike.)
    callbacks = [first] + (
        [ns.callbacks.ModelCheckpoint(dirpath=ckpt, save_last=True)] if how == "resumed" else []
    )
    trainer = _fit(
        tmp_path, callbacks, module, 5, logger=logger, lightning=ns, enable_checkpointing=how == "resumed"
    )
    assert first.stop_reason is None
    if how == "continued":
        stopper = first
        trainer.fit_loop.max_epochs = 40
        trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=32))
    else:
        stopper = EnergyAwareEarlyStopping(monitor="val_loss", min_relative_gain=0.5)
        again = ns.loggers.MLFlowLogger(
            experiment_name="longer", tracking_uri=sqlite_uri, run_id=logger.run_id
        )
        callbacks = [stopper, ns.callbacks.ModelCheckpoint(dirpath=ckpt, save_last=True)]
        _fit(
            tmp_path,
            callbacks,
            module,
            40,
            ckpt_path=str(ckpt / "last.ckpt"),
            logger=again,
            lightning=ns,
            enable_checkpointing=True,
        )
    assert stopper.stop_reason is StopReason.MARGINAL_GAIN and stopper.stopped_epoch > 5
    # The new plan is the tag `.resumed` (MLflow keeps a parameter's first value); the parameters
    # logged again with the value the run holds get no such tag.
    from mlflow import MlflowClient

    tags = MlflowClient(sqlite_uri).get_run(logger.run_id).data.tags
    resumed = {k for k in tags if k.endswith(".resumed")}
    assert resumed == {"lightning_green.max_epochs.resumed"}, resumed
    assert tags["lightning_green.max_epochs.resumed"] == "40"

    out = tmp_path / "decisions.csv"
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "longer", "-o", str(out)]
    assert cli.main(argv) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert row["stop_reason"] == stopper.stop_reason.value
    assert int(row["stop_epoch"]) == stopper.stopped_epoch + 1


@pytest.mark.parametrize("shared_monitor", ["implicit", "other-metric"])
def test_replay_of_a_budget_stop_needs_no_policy_options(tmp_path, sqlite_uri, monkeypatch, shared_monitor):
    """The run records the stopper's arguments; a plain MLflow replay reproduces its decision.

    Also when the run's EnergyMonitor watches another metric: the stopper's metric and direction
    then go into their own parameters and replay takes those.
    """
    import csv

    from mlflow.tracking import MlflowClient

    from lightning_green import cli

    install_scripted_meter(monkeypatch)
    budget_kwh = BEFORE_KWH + 5.4 * EPOCH_KWH
    stopper = EnergyAwareEarlyStopping(
        monitor="val_acc", mode="max", energy_budget_kwh=budget_kwh, patience=7
    )
    callbacks: list[pl.Callback] = [stopper]
    if shared_monitor == "other-metric":
        callbacks.append(EnergyMonitor(monitor="val_loss", mode="min"))
    logger = MLFlowLogger(experiment_name="budget", tracking_uri=sqlite_uri)
    _fit(tmp_path, callbacks, DigitsClassifier(), max_epochs=20, logger=logger)
    assert (stopper.stop_reason, stopper.stopped_epoch) == (StopReason.ENERGY_BUDGET, 4)

    client = MlflowClient(sqlite_uri)
    params = client.get_run(logger.run_id).data.params
    assert float(params["lightning_green.energy_budget_kwh"]) == budget_kwh
    assert params["lightning_green.patience"] == "7"
    assert params["lightning_green.min_gain_per_kwh"] == "none"
    if shared_monitor == "other-metric":  # the EnergyMonitor's own, untouched
        assert (params["lightning_green.monitor"], params["lightning_green.mode"]) == ("val_loss", "min")

    out = tmp_path / "decisions.csv"
    assert cli.main(["replay", "--mlflow-uri", sqlite_uri, "--experiment", "budget", "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert (row["stop_reason"], int(row["stop_epoch"])) == ("energy_budget", stopper.stopped_epoch + 1)
    accuracies = [m.value for m in client.get_metric_history(logger.run_id, "val_acc")]
    assert float(row["best_metric_at_stop"]) == pytest.approx(max(accuracies))  # replayed as "max"

    # An option given on the command line overrides the recorded one.
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "budget", "-o", str(out)]
    assert cli.main([*argv, "--energy-budget-kwh", "none"]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert row["stop_reason"] != "energy_budget"


@pytest.mark.parametrize("artifact", [True, False], ids=["summary-artifact", "rebuilt-from-metrics"])
def test_run_the_stopper_did_not_stop_says_so(tmp_path, sqlite_uri, monkeypatch, capsys, artifact):
    """Tag, summary (printed and JSON), plot and ``lightning-green report`` all show "none"."""
    from mlflow.tracking import MlflowClient

    from lightning_green import cli
    from lightning_green.report import format_summary, plot_summary

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max")  # min_epochs 5 > 3 epochs
    monitor = EnergyMonitor(monitor="val_acc", mode="max", summary=artifact)
    logger = MLFlowLogger(experiment_name="held", tracking_uri=sqlite_uri)
    trainer = _fit(tmp_path, [stopper, monitor], DigitsClassifier(), max_epochs=3, logger=logger)
    assert stopper.stop_reason is None and trainer.current_epoch == 3

    run = MlflowClient(sqlite_uri).get_run(logger.run_id)
    assert run.data.tags["lightning_green.stop_reason"] == "none"
    assert "lightning_green.stopped_epoch" not in run.data.tags
    summary = monitor.last_summary
    assert (summary["stop_reason"], summary["training_end"]) == ("none", "ran to max_epochs=3")
    assert summary["stopped_epoch"] is None
    if artifact:
        assert json.loads(monitor.summary_path.read_text())["stop_reason"] == "none"
    assert re.search(r"\n  stop reason +none \(ran to max_epochs=3\)", format_summary(summary))

    capsys.readouterr()
    as_json = tmp_path / "report.json"
    argv = ["report", "--mlflow-uri", sqlite_uri, "--run-id", logger.run_id, "--json", str(as_json)]
    assert cli.main([*argv, "-o", str(tmp_path / "report.png")]) == 0
    assert re.search(r"\n  stop reason +none \(ran to max_epochs=3\)", capsys.readouterr().out)
    reported = json.loads(as_json.read_text())
    assert reported.get("rebuilt_from_metrics", False) is not artifact
    assert (reported["stop_reason"], reported["training_end"]) == ("none", "ran to max_epochs=3")

    # The plot marks where training ended, with that label.
    matplotlib = pytest.importorskip("matplotlib")
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, to read it back
        svg = plot_summary(reported, tmp_path / "report.svg").read_text()
    assert "ran to max_epochs=3" in svg and "stop reason: none" in svg


def test_killed_and_resumed_run_makes_the_same_decisions(tmp_path, monkeypatch, ns):
    install_scripted_meter(monkeypatch)
    curve = saturating_curve(40, tau=4.0)
    # The scripted meter adds energy per read and checkpoints read it (to keep an open epoch's
    # energy): the reference checkpoints the same way, it just is never killed.
    reference = EnergyAwareEarlyStopping(monitor="val_loss")
    _fit(
        tmp_path / "a",
        [reference, ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "a" / "ckpt", save_last=True)],
        ns.module(curve_module)(curve),
        max_epochs=40,
        enable_checkpointing=True,
        lightning=ns,
    )
    assert reference.stop_reason is not None

    ckpt = tmp_path / "b" / "ckpt"
    first = EnergyAwareEarlyStopping(monitor="val_loss")
    with pytest.raises(KilledError):
        _fit(
            tmp_path / "b",
            [first, ns.callbacks.ModelCheckpoint(dirpath=ckpt, save_last=True), KillAt(9)],
            ns.module(curve_module)(curve),
            max_epochs=40,
            enable_checkpointing=True,
            lightning=ns,
        )
    resumed = EnergyAwareEarlyStopping(monitor="val_loss")
    _fit(
        tmp_path / "b",
        [resumed, ns.callbacks.ModelCheckpoint(dirpath=ckpt, save_last=True)],
        ns.module(curve_module)(curve),
        max_epochs=40,
        enable_checkpointing=True,
        lightning=ns,
        ckpt_path=str(ckpt / "last.ckpt"),
    )

    assert (resumed.stopped_epoch, resumed.stop_reason) == (reference.stopped_epoch, reference.stop_reason)
    assert resumed.policy.state_dict() == reference.policy.state_dict()
    assert resumed.last_decision.projected_gain == reference.last_decision.projected_gain
    energy = [r.total_j for r in resumed.energy_monitor.history]
    assert energy == [r.total_j for r in reference.energy_monitor.history]

    # Killed after the stop, before the process ended: the checkpoint holds the stop, and the
    # resumed fit ends there too (no extra epoch, the same decision and energy) ...
    after_stop = tmp_path / "a" / "ckpt" / "last.ckpt"
    again = EnergyAwareEarlyStopping(monitor="val_loss")
    trainer = _fit(
        tmp_path / "c",
        [again],
        ns.module(curve_module)(curve),
        max_epochs=40,
        lightning=ns,
        ckpt_path=str(after_stop),
    )
    assert trainer.current_epoch == reference.stopped_epoch + 1
    assert (again.stopped_epoch, again.stop_reason) == (reference.stopped_epoch, reference.stop_reason)
    assert again.policy.state_dict() == reference.policy.state_dict()
    assert [r.epoch for r in again.energy_monitor.history] == [
        r.epoch for r in reference.energy_monitor.history
    ]
    # ... unless the stopper's arguments changed since: then it trains on and decides anew.
    longer = EnergyAwareEarlyStopping(monitor="val_loss", patience=reference.config.patience + 5)
    trainer = _fit(
        tmp_path / "d",
        [longer],
        ns.module(curve_module)(curve),
        max_epochs=40,
        lightning=ns,
        ckpt_path=str(after_stop),
    )
    assert trainer.current_epoch > reference.stopped_epoch + 1
    assert len(longer.policy.history) > len(reference.policy.history)
    # Lightning's field says the rule in force (the new patience), in the next checkpoint too.
    assert longer.patience == longer.config.patience == reference.config.patience + 5
    assert longer.state_dict()["patience"] == longer.config.patience


def _killed_and_resumed_into_a_new_folder(tmp_path, monkeypatch, ns, make_logger) -> EnergyAwareEarlyStopping:
    """A run logged by ``make_logger()`` killed at epoch 9 and resumed from its last checkpoint (the
    logger writes the resumed part into a new ``version_N`` folder); returns the resumed stopper."""
    install_scripted_meter(monkeypatch)
    module = ns.module(curve_module)(saturating_curve(40, tau=5.0))
    ckpt = tmp_path / "ckpt"

    def fit(stopper, extra, ckpt_path=None):
        callbacks = [stopper, ns.callbacks.ModelCheckpoint(dirpath=ckpt, save_last=True), *extra]
        logger = make_logger()
        _fit(
            tmp_path, callbacks, module, 40, ckpt_path, logger=logger, lightning=ns, enable_checkpointing=True
        )

    with pytest.raises(KilledError):
        fit(EnergyAwareEarlyStopping(monitor="val_loss", min_relative_gain=0.5), [KillAt(9)])
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", min_relative_gain=0.5)
    fit(stopper, [], ckpt_path=str(ckpt / "last.ckpt"))
    assert stopper.stop_reason is StopReason.MARGINAL_GAIN and stopper.stopped_epoch > 9
    return stopper


def _replays_as_one_run(tmp_path, capsys, stopper, first, resumed) -> None:
    """Replay of the resumed log, alone or with its earlier part, makes the callback's decision on
    one run (the resumed one's) and says the earlier part is read as part of it."""
    import csv

    from lightning_green import cli

    for given, out in (([resumed], "one.csv"), ([first, resumed], "both.csv")):
        capsys.readouterr()
        assert cli.main(["replay", *map(str, given), "-o", str(tmp_path / out)]) == 0
        (row,) = list(csv.DictReader((tmp_path / out).read_text().splitlines()))
        assert row["curve_id"] == str(resumed.parent)
        assert (row["stop_reason"], int(row["stop_epoch"])) == (
            stopper.stop_reason.value,
            stopper.stopped_epoch + 1,
        )
        assert float(row["best_metric_at_stop"]) == pytest.approx(stopper.policy.best_score, rel=1e-6)
    assert "read as part of the run that continues it" in capsys.readouterr().out


def test_a_csv_logged_run_resumed_into_a_new_folder_replays_as_one_run(tmp_path, monkeypatch, capsys, ns):
    """CSVLogger writes a resumed run into a new ``version_N`` folder: replay of that log joins the
    earlier part (found by the energy total the resumed run continues from) and makes the callback's
    decision; given both logs, it replays one run and says so."""

    from lightning_green import cli

    stopper = _killed_and_resumed_into_a_new_folder(
        tmp_path, monkeypatch, ns, lambda: ns.loggers.CSVLogger(str(tmp_path), name="csv")
    )
    first, resumed = (tmp_path / "csv" / f"version_{v}" / "metrics.csv" for v in (0, 1))
    from lightning_green.offline import read_log_curve

    curve = read_log_curve(resumed)  # every check of the run, the earlier folder's first
    assert len(curve.metrics) == len(stopper.policy.history) and curve.epochs[0] == 1

    _replays_as_one_run(tmp_path, capsys, stopper, first, resumed)

    # What replay and report read beside the log (the earlier part, hparams.yaml, the summary) is
    # an input too: an output onto any of them is refused and the file is left as it was.
    side = [resumed.parent / "hparams.yaml", resumed.parent / "energy_summary.json"]
    kept = {p: p.read_bytes() for p in (first, *side)}
    for argv in (
        ["replay", str(resumed), "-o", str(first)],
        ["replay", str(resumed), "-o", str(side[0])],
        ["report", str(resumed), "--json", str(side[1]), "-o", str(tmp_path / "r.png")],
        ["report", str(first), "--json", str(first.parent / "energy_summary.json")],
    ):
        assert cli.main(argv) == 2
        assert "refusing to overwrite an input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in kept} == kept and not (tmp_path / "r.png").exists()


def test_a_tensorboard_logged_run_resumed_into_a_new_folder_replays_as_one_run(
    tmp_path, monkeypatch, capsys, ns
):
    """TensorBoardLogger writes a resumed run into a new ``version_N`` folder, as CSVLogger does:
    replay and report of its event file join the earlier part (every check from the first epoch,
    the callback's decision); given both folders' event files, replay reads one run and says so;
    and the earlier part's event file, read as an input, cannot be overwritten by an output."""

    from lightning_green import cli
    from lightning_green.offline import read_log_curve

    stopper = _killed_and_resumed_into_a_new_folder(
        tmp_path, monkeypatch, ns, lambda: ns.loggers.TensorBoardLogger(str(tmp_path), name="tb")
    )
    (first,), (resumed,) = (
        list((tmp_path / "tb" / f"version_{v}").glob("events.out.tfevents.*")) for v in (0, 1)
    )

    curve = read_log_curve(resumed)  # every check of the run, the earlier folder's first
    assert len(curve.metrics) == len(stopper.policy.history) and curve.epochs[0] == 1
    assert list(curve.costs) == pytest.approx(list(stopper.policy.history.costs_kwh), rel=1e-6)

    _replays_as_one_run(tmp_path, capsys, stopper, first, resumed)

    # The earlier part's event file and what is read beside it are inputs: refused, left as they were.
    kept = {p: p.read_bytes() for p in (first, first.parent / "hparams.yaml")}
    for argv in (
        ["replay", str(resumed), "-o", str(first)],
        ["replay", str(resumed), "-o", str(first.parent / "hparams.yaml")],
        ["report", str(resumed), "--json", str(first), "-o", str(tmp_path / "r.png")],
    ):
        assert cli.main(argv) == 2
        assert "refusing to overwrite an input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in kept} == kept and not (tmp_path / "r.png").exists()


def test_a_log_whose_model_has_numpy_and_path_hyperparameters_replays_and_reports(
    tmp_path, monkeypatch, capsys, ns
):
    """A model's own hyperparameters that Lightning dumps into ``hparams.yaml`` as Python objects (a
    learning rate from a NumPy sweep, a ``pathlib.Path``) are no part of what replay and report read:
    both read the CSV and the TensorBoard log (the ``lightning_green.*`` entries) and give the
    callback's stop. They used to refuse the whole log (no constructor for the tag)."""
    import csv
    from pathlib import Path

    import numpy as np

    from lightning_green import cli

    install_scripted_meter(monkeypatch)

    swept_lr = np.logspace(-4, -2, 3)[2]  # np.float64(0.01)

    class Swept(ns.module(curve_module)):
        def __init__(self, curve, lr=swept_lr, data_dir=Path("/data/digits")) -> None:
            super().__init__(curve)
            self.save_hyperparameters(ignore=["curve"])

    stopper = EnergyAwareEarlyStopping(monitor="val_loss", min_relative_gain=0.5)
    loggers = [
        ns.loggers.CSVLogger(str(tmp_path), name="csv"),
        ns.loggers.TensorBoardLogger(str(tmp_path), name="tb"),
    ]
    _fit(tmp_path, [stopper], Swept(saturating_curve(20, tau=2.0)), 20, logger=loggers, lightning=ns)
    assert stopper.stop_reason is StopReason.MARGINAL_GAIN
    csv_log = tmp_path / "csv" / "version_0" / "metrics.csv"
    (tb_log,) = (tmp_path / "tb" / "version_0").glob("events.out.tfevents.*")
    for log in (csv_log, tb_log):  # the premise: both files hold the objects under Python tags
        dumped = (log.parent / "hparams.yaml").read_text()
        assert "lr: !!python/object/apply:numpy" in dumped and "!!python/object/apply:pathlib" in dumped

    for log in (csv_log, tb_log):
        capsys.readouterr()
        out, as_json = tmp_path / "d.csv", tmp_path / "r.json"
        assert cli.main(["replay", str(log), "-o", str(out)]) == 0, capsys.readouterr().err
        (row,) = list(csv.DictReader(out.read_text().splitlines()))
        assert (row["curve_id"], row["stop_reason"], int(row["stop_epoch"])) == (
            str(log.parent),
            stopper.stop_reason.value,
            stopper.stopped_epoch + 1,
        )
        assert "policy arguments as recorded by 1 run(s)" in capsys.readouterr().out
        argv = ["report", str(log), "-o", str(tmp_path / "r.png"), "--json", str(as_json)]
        assert cli.main(argv) == 0, capsys.readouterr().err
        summary = json.loads(as_json.read_text())
        assert (summary["monitor"], summary["epochs"]) == ("val_loss", stopper.stopped_epoch + 1)
        if log == csv_log:  # the first logger's folder holds the run's energy_summary.json
            assert (summary["stop_reason"], summary["stopped_epoch"]) == (
                stopper.stop_reason.value,
                stopper.stopped_epoch,
            )


def test_a_metric_logged_every_few_steps_replays_at_every_check(tmp_path, monkeypatch, capsys, ns):
    """The stopper watching ``curve_loss`` (a new value every step, logged every 3 steps, 4 steps an
    epoch) checks at every epoch end on the step's value, which the log's own ``curve_loss`` series
    often lacks: replay of the CSV log makes each of those checks on the value the check read
    (``energy/check_metric``), not a stale one, and the same decision."""
    import csv

    import torch

    from lightning_green import cli

    install_scripted_meter(monkeypatch)
    curve = saturating_curve(40, tau=5.0)

    class TrainLossCurve(ns.module(curve_module)):
        def training_step(self, batch, batch_idx):
            value = self.curve[self.current_epoch] - 1e-4 * batch_idx  # changes every step
            self.log("curve_loss", torch.tensor(value))
            return super().training_step(batch, batch_idx)

    stopper = EnergyAwareEarlyStopping(monitor="curve_loss", min_relative_gain=0.5)
    logger = ns.loggers.CSVLogger(str(tmp_path), name="csv")
    _fit(tmp_path, [stopper], TrainLossCurve(curve), 40, logger=logger, lightning=ns, log_every_n_steps=3)
    assert stopper.stop_reason is StopReason.MARGINAL_GAIN and len(stopper.policy.history) > 3

    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    out = tmp_path / "d.csv"
    assert cli.main(["replay", str(log), "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert (row["stop_reason"], int(row["stop_epoch"])) == (
        stopper.stop_reason.value,
        stopper.stopped_epoch + 1,
    )
    assert float(row["best_metric_at_stop"]) == pytest.approx(stopper.policy.best_score, rel=1e-6)
    from lightning_green.offline import read_log_curve

    replayed = read_log_curve(log).metrics
    assert replayed.tolist() == pytest.approx(stopper.policy.history.metrics.tolist(), rel=1e-6)


def test_scheduled_lr_drop_holds_the_stop_on_the_flat_stretch(tmp_path, monkeypatch):
    install_scripted_meter(monkeypatch)
    # Flat from ~epoch 10, then the learning-rate drop at epoch 26 buys a big step.
    curve = [v if e < 26 else v - 0.6 for e, v in enumerate(saturating_curve(40))]
    without = EnergyAwareEarlyStopping(monitor="val_loss")
    _fit(tmp_path / "a", [without], CurveModule(curve), max_epochs=40)
    assert without.stop_reason is not None and without.stopped_epoch < 25  # blind: stops on the flat

    aware = EnergyAwareEarlyStopping(monitor="val_loss")
    _fit(tmp_path / "b", [aware], CurveModule(curve, lr_milestones=[26]), max_epochs=40)
    assert aware.stop_reason is None or aware.stopped_epoch >= 26
    assert aware.energy_monitor.history[-1].epoch >= 26


def test_check_after_validation_path(tmp_path, monkeypatch):
    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(
        monitor="val_loss", check_on_train_epoch_end=False, energy_budget_kwh=3.5 * EPOCH_KWH
    )
    _fit(tmp_path, [stopper], DigitsClassifier(), max_epochs=10)
    assert stopper.stop_reason is StopReason.ENERGY_BUDGET
    assert stopper.policy.n_checks == stopper.stopped_epoch + 1


def test_missing_metric_lists_the_logged_ones(tmp_path):
    stopper = EnergyAwareEarlyStopping(monitor="val_accuracy")
    with pytest.raises(RuntimeError, match=r"val_accuracy.*`val_loss`, `val_acc`, `train_loss`"):
        _fit(tmp_path, [stopper], DigitsClassifier(), max_epochs=2)


def test_not_strict_missing_metric_never_stops_and_warns_once(tmp_path):
    stopper = EnergyAwareEarlyStopping(monitor="val_accuracy", strict=False, energy_budget_kwh=1e-12)
    with pytest.warns(UserWarning, match=r"'val_accuracy' was not logged.*energy budget") as record:
        trainer = _fit(tmp_path, [stopper], DigitsClassifier(), max_epochs=3)
    assert stopper.stop_reason is None and trainer.current_epoch == 3
    ours = [w for w in record if "was not logged" in str(w.message)]
    assert len(ours) == 1 and "val_acc" in str(ours[0].message)  # once, listing what was logged


def test_a_shared_monitor_watching_the_same_metric_the_other_way_is_refused_at_fit_start(tmp_path):
    monitor = EnergyMonitor(monitor="val_loss", mode="max")
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", mode="min")
    with pytest.raises(ValueError, match=r"mode='min'.*mode='max'.*disagree.*'val_loss'"):
        _fit(tmp_path, [monitor, stopper], DigitsClassifier(), max_epochs=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patience": -1}, r"patience.*-1"),
        ({"mode": "up"}, r"mode.*'up'"),
        ({"min_relative_gain": -0.1}, r"min_relative_gain.*-0\.1"),
        ({"energy_budget_kwh": 0}, r"energy_budget_kwh.*0"),
        ({"min_epochs": -2}, r"min_epochs.*-2"),
        ({"monitor": ""}, r"monitor.*''"),
        ({"min_delta": -1.0}, r"min_delta.*-1\.0"),
        ({"strict": "no"}, r"strict must be True or False, got 'no'"),
        ({"strict": None}, r"strict must be True or False, got None"),
        ({"verbose": 1}, r"verbose must be True or False, got 1"),
        ({"log_rank_zero_only": "yes"}, r"log_rank_zero_only.*'yes'"),
        ({"check_on_train_epoch_end": "auto"}, r"check_on_train_epoch_end.*None.*'auto'"),
        ({"stopping_threshold": 1.0, "divergence_threshold": 0.5}, r"stopping_threshold=1\.0 must be below"),
        (
            {"mode": "max", "stopping_threshold": 90, "divergence_threshold": 95},
            r"stopping_threshold=90 must be above divergence_threshold=95 with mode='max'",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyAwareEarlyStopping(**kwargs)


def test_state_survives_a_safe_checkpoint_round_trip():
    import io

    import torch

    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    for epoch, value in enumerate([3.0, 2.0, 1.5]):
        stopper.policy.update(value, 0.1 * (epoch + 1), epoch=epoch)
    buffer = io.BytesIO()
    torch.save(stopper.state_dict(), buffer)
    buffer.seek(0)
    other = EnergyAwareEarlyStopping(monitor="val_loss")
    other.load_state_dict(torch.load(buffer, weights_only=True))  # what Lightning's safe loading allows
    assert other.policy.state_dict() == stopper.policy.state_dict()
    assert other.policy.update(1.4, 0.4, epoch=3) == stopper.policy.update(1.4, 0.4, epoch=3)


@pytest.mark.slow
def test_ddp_ranks_stop_together(tmp_path):
    from test_ddp_energy import run_ddp

    # Scripted: 3010 J per epoch over both ranks, and 3010 J before the first epoch (the read at its
    # start), which the budget counts: a 5th epoch would exceed it.
    budget_kwh = 0.0035 + 3010.0 / J_PER_KWH
    args = json.dumps({"monitor": "val_acc", "mode": "max", "energy_budget_kwh": budget_kwh})
    ranks = run_ddp(
        tmp_path, "--scripted", "--epochs", "12", "--callbacks", "stopper", "--stopper-args", args
    )
    for rank in ranks:
        assert rank["stopper"] == {"stopped_epoch": 3, "stop_reason": "energy_budget"}
        assert rank["monitors"] == 1 and rank["epochs_run"] == 4
        assert rank["history"][-1]["total_j"] <= budget_kwh * J_PER_KWH
    assert ranks[0]["history"] == ranks[1]["history"]


STOP_KINDS = [
    # (kind, stopper arguments, scripted val_loss per epoch, Lightning's reason, namespace)
    (
        "plateau",
        dict(patience=3, min_epochs=1, min_relative_gain=None),
        [2.0, 1.0] + [1.0] * 8,
        "PATIENCE_EXHAUSTED",
        "lightning.pytorch",
    ),
    ("marginal_gain", {}, saturating_curve(40), "PATIENCE_EXHAUSTED", "pytorch_lightning"),
    (
        "energy_budget",
        dict(energy_budget_kwh=3.5 * EPOCH_KWH),
        [3.0, 2.0, 1.5, 1.2, 1.0, 0.9],
        "STOPPING_THRESHOLD",
        "lightning.pytorch",
    ),
    ("non_finite", {}, [2.0, 1.5, float("nan"), 1.0], "NON_FINITE_METRIC", "pytorch_lightning"),
    (
        "divergence",
        dict(divergence_threshold=5.0),
        [2.0, 1.5, 9.0, 1.0],
        "DIVERGENCE_THRESHOLD",
        "lightning.pytorch",
    ),
    (
        "threshold_reached",
        dict(stopping_threshold=1.2),
        [2.0, 1.5, 1.1, 1.0],
        "STOPPING_THRESHOLD",
        "pytorch_lightning",
    ),
]


@pytest.mark.parametrize(
    ("kind", "kwargs", "curve", "lightning_reason", "namespace"), STOP_KINDS, ids=[k[0] for k in STOP_KINDS]
)
def test_every_kind_of_stop_keeps_lightnings_own_fields_true(
    tmp_path, monkeypatch, kind, kwargs, curve, lightning_reason, namespace
):
    """After any stop, Lightning's stopped_epoch, stopping_reason, wait_count and best_score say it too.

    Where Lightning's own EarlyStopping knows the reason, it runs alongside on the same metric
    and its fields are the reference.
    """
    from conftest import Lightning

    install_scripted_meter(monkeypatch)
    ns = Lightning(namespace)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", **kwargs)
    callbacks = [stopper]
    lightning_args = {
        k: v for k, v in kwargs.items() if k in ("patience", "stopping_threshold", "divergence_threshold")
    }
    reference = None
    if kind in ("plateau", "non_finite", "divergence", "threshold_reached"):
        reference = ns.callbacks.EarlyStopping(monitor="val_loss", **{"patience": 30, **lightning_args})
        callbacks.append(reference)
    module = ns.module(curve_module)(curve)
    trainer = _fit(tmp_path, callbacks, module, max_epochs=len(curve), lightning=ns)

    assert stopper.stop_reason is StopReason(kind)
    assert trainer.current_epoch == stopper.stopped_epoch + 1  # stopped right after that epoch
    reasons = importlib.import_module(f"{namespace}.callbacks.early_stopping").EarlyStoppingReason
    assert stopper.stopping_reason is reasons[lightning_reason]  # the trainer's own enum
    assert stopper.stopping_reason_message == stopper.last_decision.message
    assert stopper.wait_count == stopper.last_decision.wait_count
    if reference is not None:
        assert (stopper.stopped_epoch, stopper.stopping_reason) == (
            reference.stopped_epoch,
            reference.stopping_reason,
        )
        assert (stopper.wait_count, float(stopper.best_score)) == (
            reference.wait_count,
            float(reference.best_score),
        )
    else:  # no Lightning counterpart: the best metric seen
        assert float(stopper.best_score) == pytest.approx(min(curve[: stopper.stopped_epoch + 1]))
    state = stopper.state_dict()  # what Lightning saves: the same fields, in its own form
    assert state["stopping_reason"] == reasons[lightning_reason].value
    assert state["stopped_epoch"] == stopper.stopped_epoch


def test_a_run_logged_with_an_mlflow_prefix_replays_and_reports_as_any_other(
    tmp_path, sqlite_uri, monkeypatch, ns
):
    """MLFlowLogger(prefix="fold1") logs every metric as fold1-<key> (params and tags as they are):
    replay and report read the run through the prefix, with its recorded metric and arguments."""
    import csv

    from lightning_green import cli

    install_scripted_meter(monkeypatch)
    budget_kwh = 5.4 * EPOCH_KWH
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=budget_kwh)
    logger = ns.loggers.MLFlowLogger(experiment_name="cv", tracking_uri=sqlite_uri, prefix="fold1")
    monitor = EnergyMonitor(monitor="val_acc", mode="max", summary=False)  # report rebuilds from metrics
    _fit(tmp_path, [stopper, monitor], ns.DigitsClassifier(), max_epochs=20, logger=logger, lightning=ns)
    assert stopper.stop_reason is StopReason.ENERGY_BUDGET

    out = tmp_path / "decisions.csv"
    assert cli.main(["replay", "--mlflow-uri", sqlite_uri, "--experiment", "cv", "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert (row["stop_reason"], int(row["stop_epoch"])) == ("energy_budget", stopper.stopped_epoch + 1)
    best = max(r.metric for r in monitor.history)  # val_acc, in its recorded direction (max)
    assert float(row["best_metric_at_stop"]) == pytest.approx(best, rel=1e-6)

    # The name the MLflow UI shows (fold1-val_acc) is the same metric, with its recorded direction.
    again = tmp_path / "again.csv"
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "cv", "--monitor", "fold1-val_acc"]
    assert cli.main([*argv, "-o", str(again)]) == 0
    assert list(csv.DictReader(again.read_text().splitlines())) == [row]

    js = tmp_path / "summary.json"
    argv = ["report", "--mlflow-uri", sqlite_uri, "--run-id", logger.run_id, "--json", str(js)]
    assert cli.main([*argv, "-o", str(tmp_path / "r.png")]) == 0
    summary = json.loads(js.read_text())
    assert summary["best_metric"] == pytest.approx(best, rel=1e-6)
    assert summary["total_kwh"] == pytest.approx(monitor.last_summary["total_kwh"], rel=1e-6)


def test_a_run_resumed_from_an_earlier_checkpoint_into_its_mlflow_run_replays_as_it_went_on(
    tmp_path, sqlite_uri, monkeypatch, ns
):
    """Trained 12 epochs, then resumed from epoch 4's checkpoint into the same MLflow run with
    another patience: replay reads the run as it went on (the abandoned epochs 5-11 are not part
    of it), as the CSV log of the resumed fit does."""
    import csv

    from lightning_green import cli

    install_scripted_meter(monkeypatch)
    flat_from_6 = [0.3 + 1 / (1 + e) if e < 6 else 0.3 + 1 / 7 + 1e-4 * (e % 2) for e in range(12)]
    ckpts = tmp_path / "ckpt"
    module = ns.module(curve_module)(flat_from_6)
    every = ns.callbacks.ModelCheckpoint(dirpath=ckpts, save_top_k=-1, filename="{epoch}")
    logger = ns.loggers.MLFlowLogger(experiment_name="again", tracking_uri=sqlite_uri)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=100, min_relative_gain=None)
    _fit(tmp_path / "a", [stopper, every], module, 12, logger=logger, lightning=ns, enable_checkpointing=True)
    resumed = EnergyAwareEarlyStopping(monitor="val_loss", patience=2, min_relative_gain=None)
    again = ns.loggers.MLFlowLogger(experiment_name="again", tracking_uri=sqlite_uri, run_id=logger.run_id)
    module = ns.module(curve_module)(flat_from_6)
    _fit(tmp_path / "b", [resumed], module, 12, ckpt_path=ckpts / "epoch=4.ckpt", logger=again, lightning=ns)
    assert resumed.stop_reason is not None and resumed.stopped_epoch < 11

    out = tmp_path / "d.csv"
    assert cli.main(["replay", "--mlflow-uri", sqlite_uri, "--experiment", "again", "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert (row["stop_reason"], int(row["stop_epoch"])) == (
        resumed.stop_reason.value,
        resumed.stopped_epoch + 1,
    )
    assert float(row["cost_total"]) == pytest.approx(float(resumed.policy.history.costs_kwh[-1]), rel=1e-6)


def test_a_stopped_run_resumed_into_a_new_mlflow_run_records_the_stop(
    tmp_path, sqlite_uri, monkeypatch, capsys, ns
):
    """A checkpoint saved at a budget stop, resumed into a new MLflow run (no ``run_id``): the fit
    ends at once and the new run records what its summary says - the stop tags, the policy's
    parameters, the run's epochs and the checks the stop was decided on, as the stopped run logged
    them - so replay over its experiment makes the stop. So do its new CSVLogger and TensorBoardLogger
    folders (version_1): replayed with the stopped run's folder, version_0 is read in version_1;
    alone, version_1 makes the stop too (it used to hold no epoch: replay skipped it). The fit's
    own setup counts before the first epoch. Resumed into its own run, it logs nothing twice."""
    import csv
    import shutil
    from pathlib import Path

    from mlflow.tracking import MlflowClient
    from test_resumed_logs import _log_file, _replay_every_version

    from lightning_green import cli, keys

    install_scripted_meter(monkeypatch)
    ckpts = tmp_path / "ckpt"

    def fit(name, ckpt_path=None, files=True, **logger_kwargs):
        stopper = EnergyAwareEarlyStopping(
            monitor="val_acc", mode="max", energy_budget_kwh=BEFORE_KWH + 6.4 * EPOCH_KWH
        )
        every = ns.callbacks.ModelCheckpoint(dirpath=ckpts, save_top_k=-1, filename="{epoch}")
        artifacts = str(tmp_path / "artifacts")
        logger = ns.loggers.MLFlowLogger(
            tracking_uri=sqlite_uri, artifact_location=artifacts, **logger_kwargs
        )
        folders = [
            ns.loggers.CSVLogger(str(tmp_path / "csv"), name="logs"),
            ns.loggers.TensorBoardLogger(str(tmp_path / "tensorboard"), name="logs"),
        ]
        loggers = [logger, *folders] if files else logger
        kwargs = dict(logger=loggers, lightning=ns, enable_checkpointing=True)
        trainer = _fit(tmp_path / name, [stopper, every], ns.DigitsClassifier(), 8, ckpt_path, **kwargs)
        return stopper, logger, trainer

    first, logger, _ = fit("a", experiment_name="first")
    assert first.stop_reason is StopReason.ENERGY_BUDGET and first.stopped_epoch >= 1
    at_stop = ckpts / f"epoch={first.stopped_epoch}.ckpt"
    resumed, new_logger, trainer = fit("b", at_stop, experiment_name="resumed")
    assert trainer.current_epoch == first.stopped_epoch + 1  # not one epoch more
    assert (resumed.stop_reason, resumed.stopped_epoch) == (first.stop_reason, first.stopped_epoch)

    client = MlflowClient(sqlite_uri)
    run, original = client.get_run(new_logger.run_id), client.get_run(logger.run_id)
    artifact = client.download_artifacts(
        run.info.run_id, "lightning_green/energy_summary.json", str(tmp_path)
    )
    summary = json.loads(Path(artifact).read_text())
    assert (summary["stop_reason"], summary["stopped_epoch"]) == ("energy_budget", first.stopped_epoch)
    tags = run.data.tags
    assert (tags[keys.TAG_STOP_REASON], tags[keys.TAG_STOPPED_EPOCH]) == (
        "energy_budget",
        str(first.stopped_epoch),
    )

    def ours(params):
        return {k: v for k, v in params.items() if k.startswith(keys.PARAM_PREFIX)}

    assert ours(run.data.params) == ours(original.data.params)
    assert float(run.data.params[keys.policy_param("energy_budget_kwh")]) == first.config.energy_budget_kwh

    def series(run_id, key):
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    logged = [keys.TOTAL_KWH, keys.EPOCH_KWH, "val_acc", keys.CHECK_KWH, keys.CHECK_METRIC]
    logged += [keys.CHECK_NUMBER, keys.CHECK_EPOCHS, keys.CHECK_OUTSIDE_KWH, keys.NOT_RUN_KWH]
    for key in logged:  # as the stopped run logged them, at the same steps
        assert series(run.info.run_id, key) == series(logger.run_id, key) != [], key
    totals = [value for _, value in series(run.info.run_id, keys.TOTAL_KWH)]
    assert totals == [epoch["total_kwh"] for epoch in summary["per_epoch"]]

    out = tmp_path / "decisions.csv"
    capsys.readouterr()
    assert cli.main(["replay", "--mlflow-uri", sqlite_uri, "--experiment", "resumed", "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert (row["curve_id"], row["stop_reason"]) == (run.info.run_id, "energy_budget")
    assert int(row["stop_epoch"]) == first.stopped_epoch + 1
    assert "stops: energy_budget 1" in capsys.readouterr().out
    for kind in ("csv", "tensorboard"):
        version_1 = _log_file(tmp_path / kind / "logs" / "version_1", kind)
        (joined,) = _replay_every_version(tmp_path / kind, kind)  # version_0 read in version_1
        assert joined["curve_id"] == str(version_1.parent), kind
        assert (joined["stop_reason"], joined["stop_epoch"]) == (row["stop_reason"], row["stop_epoch"]), kind
        assert float(joined["cost_at_stop"]) == pytest.approx(float(row["cost_at_stop"]), rel=1e-6), kind
        shutil.move(str(tmp_path / kind / "logs" / "version_0"), str(tmp_path / f"{kind}-version_0"))
        out = tmp_path / f"{kind}-alone.csv"
        assert cli.main(["replay", str(version_1), "-o", str(out)]) == 0
        assert list(csv.DictReader(out.read_text().splitlines())) == [joined], kind

    # The resumed fit's setup is setup: before the first epoch, as the README's accounting says.
    before = first.energy_monitor.last_summary["kwh_before_first_epoch"]
    assert resumed.energy_monitor.last_summary["kwh_before_first_epoch"] > before

    # Resumed into its own run: the same tags and parameters again, no series logged twice.
    counts = {key: len(series(logger.run_id, key)) for key in logged}
    fit("c", at_stop, files=False, experiment_name="first", run_id=logger.run_id)
    assert {key: len(series(logger.run_id, key)) for key in logged} == counts
    again = client.get_run(logger.run_id)
    assert ours(again.data.params) == ours(original.data.params)
    assert again.data.tags[keys.TAG_STOP_REASON] == "energy_budget"
