"""EnergyAwareEarlyStopping on checks that are not whole epochs, and what its stops save.

Real fits on the digits data: several checks an epoch (``val_check_interval=0.25``), a check every
second epoch (``check_val_every_n_epoch=2``) and runs planned in optimizer steps (``max_steps``),
under both Lightning namespaces; the progress and horizon the policy saw, where the run stopped,
the resume of a run killed between checks inside an epoch; and the projected saving of a stop in
the summary, the MLflow run, the plot and replay.
"""

from __future__ import annotations

import csv
import json
import re

import pytest
import pytorch_lightning as pl
import torch
from conftest import AnyCallback, make_trainer
from doubles import curve_module, install_scripted_meter, saturating_curve, streamed_digits

from lightning_green import EnergyAwareEarlyStopping
from lightning_green.energy.units import J_PER_KWH
from lightning_green.policy import StoppingPolicy

BATCHES = 8  # training batches an epoch
EPOCH_KWH = 1000.0 / J_PER_KWH  # the scripted meter: 1000 J per read


def check_curve_module(base: type) -> type:
    """Trains the digits CNN for real, logs ``val_loss`` = ``curve[k]`` at the k-th check (0-based).

    The check's index comes from the trainer's counters (``global_step // steps_per_check - 1``), so
    a resumed run logs what the uninterrupted one did.
    """

    class CheckCurveModule(base):
        def __init__(self, curve: list[float], steps_per_check: int) -> None:
            super().__init__()
            self.curve, self.steps_per_check = list(curve), steps_per_check

        def validation_step(self, batch, batch_idx):
            k = max(self.trainer.global_step // self.steps_per_check - 1, 0)
            self.log("val_loss", torch.tensor(self.curve[min(k, len(self.curve) - 1)]), sync_dist=True)

    return CheckCurveModule


def flat_after(n_improving: int, n: int) -> list[float]:
    """A loss that improves for ``n_improving`` checks, then creeps up (a plateau)."""
    return [2.0 / (k + 1) if k < n_improving else 2.0 / n_improving + 1e-3 * k for k in range(n)]


def fit(tmp_path, ns, callbacks, module, ckpt_path=None, **kwargs):
    pl.seed_everything(0)
    options = {**dict(limit_train_batches=BATCHES, limit_val_batches=1, num_sanity_val_steps=0), **kwargs}
    trainer = make_trainer(tmp_path, callbacks, lightning=ns, **options)
    trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=16), ckpt_path=ckpt_path)
    return trainer


def replayed_with_epochs(stopper: EnergyAwareEarlyStopping, horizon: int | None) -> list[bool]:
    """The decisions the epoch-index API (before progress) makes on the checks the stopper saw."""
    reference = StoppingPolicy(stopper.config)
    history = stopper.policy.history
    return [
        reference.update(m, c, epoch=int(p) - 1, max_epochs=horizon).should_stop
        for m, c, p in zip(
            history.metrics.tolist(), history.costs_kwh.tolist(), history.progress.tolist(), strict=True
        )
    ]


def test_several_checks_an_epoch_are_fractional_epochs(tmp_path, monkeypatch, ns):
    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1)
    module = ns.module(check_curve_module)(flat_after(6, 80), steps_per_check=BATCHES // 4)
    trainer = fit(tmp_path, ns, [stopper], module, max_epochs=20, val_check_interval=0.25)

    progress = stopper.policy.history.progress.tolist()
    assert progress == [0.25 * (k + 1) for k in range(len(progress))]  # epochs completed at each check
    decision = stopper.last_decision
    assert decision.horizon == 20.0 and decision.should_stop and stopper.stop_reason is not None
    assert decision.progress == progress[-1] < 20
    assert progress[-1] % 1 != 0  # it stopped inside an epoch, at the check the policy said
    assert trainer.global_step == round(progress[-1] * BATCHES)  # no batch after the stop
    assert stopper.stopped_epoch == int(progress[-1])  # the epoch the stopping check fell in
    from lightning_green.report import format_summary

    text = re.sub(" +", " ", format_summary(stopper.energy_monitor.last_summary))
    assert f"stopped epoch {stopper.stopped_epoch} (0-based; stopped at {progress[-1]:.4g} epochs)" in text
    # patience counts checks, as Lightning's EarlyStopping: 3 checks after the last improvement
    assert len(progress) <= 6 + 3


@pytest.mark.parametrize("every", [1, 2], ids=["every-epoch", "every-2nd-epoch"])
def test_whole_epoch_checks_decide_as_with_epoch_indices(tmp_path, monkeypatch, ns, every):
    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1)
    module = ns.module(check_curve_module)(flat_after(5, 40), steps_per_check=BATCHES * every)
    trainer = fit(tmp_path, ns, [stopper], module, max_epochs=40, check_val_every_n_epoch=every)

    progress = stopper.policy.history.progress.tolist()
    assert progress == [float(every * (k + 1)) for k in range(len(progress))]
    assert stopper.last_decision.horizon == 40.0 and stopper.stop_reason is not None
    assert trainer.current_epoch == progress[-1]  # stopped after the epoch of the stopping check
    decisions = replayed_with_epochs(stopper, 40)
    assert decisions == [False] * (len(progress) - 1) + [True]  # the same decisions as before


def test_a_run_planned_in_steps_counts_optimizer_steps(tmp_path, monkeypatch, ns):
    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1)
    module = ns.module(check_curve_module)(flat_after(5, 60), steps_per_check=BATCHES // 2)
    trainer = fit(tmp_path, ns, [stopper], module, max_epochs=None, max_steps=200, val_check_interval=0.5)
    progress = stopper.policy.history.progress.tolist()
    assert progress == [float(BATCHES // 2 * (k + 1)) for k in range(len(progress))]  # steps
    assert stopper.last_place.unit == "steps" and stopper.last_place.progress_per_epoch == BATCHES
    assert stopper.last_decision.horizon == 200.0 and stopper.stop_reason is not None
    assert trainer.global_step == progress[-1] < 200
    savings = stopper.last_decision.savings
    assert savings.progress_not_run == 200 - progress[-1]
    assert savings.epochs_not_run == pytest.approx((200 - progress[-1]) / BATCHES)


class KilledError(Exception):
    pass


class KillAtStep(AnyCallback):
    """Simulates the process dying before a training batch (after the last checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KilledError


def test_resume_between_checks_inside_an_epoch_makes_the_same_decisions(tmp_path, monkeypatch, ns):
    install_scripted_meter(monkeypatch)
    curve = flat_after(9, 80)

    def run(root, extra, ckpt_path=None):
        stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=4, min_epochs=1)
        saver = ns.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_last=True)  # at every check
        module = ns.module(check_curve_module)(curve, steps_per_check=BATCHES // 4)
        fit(root, ns, [stopper, saver, *extra], module, ckpt_path=ckpt_path, max_epochs=20,
            val_check_interval=0.25, enable_checkpointing=True)  # fmt: skip
        return stopper

    reference = run(tmp_path / "a", [])
    with pytest.raises(KilledError):
        run(tmp_path / "b", [KillAtStep(13)])  # inside the second epoch, between two checks
    resumed = run(tmp_path / "b", [], ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    assert resumed.policy.history.progress.tolist() == reference.policy.history.progress.tolist()
    assert resumed.policy.history.metrics.tolist() == reference.policy.history.metrics.tolist()
    assert (resumed.stop_reason, resumed.last_decision.progress) == (
        reference.stop_reason,
        reference.last_decision.progress,
    )


def test_summary_best_is_the_best_of_every_check_not_of_epoch_ends(tmp_path, monkeypatch, ns):
    """Four validations an epoch, the best the 2nd of epoch 1: the summary names it (and the energy
    up to it), not the best epoch-end value; a run resumed after it keeps it."""
    from lightning_green import EnergyMonitor

    install_scripted_meter(monkeypatch)
    curve = [0.9, 0.8, 0.7, 0.6, 0.55, 0.1, 0.5, 0.45, 0.44, 0.43, 0.42, 0.41]  # 12 checks, 3 epochs
    module_cls = ns.module(check_curve_module)

    def run(root, epochs, ckpt_path=None, stopper=None):
        monitor = EnergyMonitor(monitor="val_loss", summary=False)
        saver = ns.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
        callbacks = [monitor, saver] + ([stopper] if stopper else [])
        fit(root, ns, callbacks, module_cls(curve, steps_per_check=BATCHES // 4), ckpt_path=ckpt_path,
            max_epochs=epochs, val_check_interval=0.25, enable_checkpointing=True)  # fmt: skip
        return monitor.last_summary

    summary = run(tmp_path / "a", 3)
    per_epoch = summary["per_epoch"]
    assert [r["metric"] for r in per_epoch] == pytest.approx([0.6, 0.45, 0.41])  # the epochs' last checks
    assert summary["best_metric"] == pytest.approx(0.1) and summary["best_epoch"] == 1
    # measured at that validation: inside epoch 1, before its end
    assert per_epoch[0]["total_kwh"] < summary["kwh_to_best"] < per_epoch[1]["total_kwh"]
    # What preceded the first epoch (its start's read) is neither before nor after the best: in no epoch.
    from_epochs_kwh = summary["total_kwh"] - summary["kwh_before_first_epoch"]
    assert summary["kwh_after_best"] == pytest.approx(from_epochs_kwh - summary["kwh_to_best"])
    matplotlib = pytest.importorskip("matplotlib")
    from lightning_green.report import plot_summary

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # the best is drawn, though no epoch ends there
        assert "best: 0.1<" in plot_summary(summary, tmp_path / "best.svg").read_text()

    # The same run stopped after epoch 2 and resumed: the best survives the checkpoint.
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 3, ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    assert (resumed["best_metric"], resumed["best_epoch"]) == (summary["best_metric"], 1)
    assert resumed["kwh_to_best"] == pytest.approx(summary["kwh_to_best"])

    # Validations every 3 batches across epochs (8 an epoch): none at an epoch's end, so an
    # epoch's record carries its last validation's value; the best (0.1, epoch 1's last, at step
    # 15) is reported with the energy up to that validation, not up to the epoch's end.
    across = [0.9, 0.8, 0.7, 0.6, 0.1, 0.5, 0.45, 0.44]  # checks at steps 3, 6, ..., 24
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    fit(tmp_path / "d", ns, [monitor], module_cls(across, steps_per_check=3), max_epochs=3,
        val_check_interval=3, check_val_every_n_epoch=None)  # fmt: skip
    summary = monitor.last_summary
    assert summary["per_epoch"][1]["metric"] == pytest.approx(0.1)  # carried to the epoch's end
    assert summary["best_metric"] == pytest.approx(0.1) and summary["best_epoch"] == 1
    assert (
        summary["per_epoch"][0]["total_kwh"] < summary["kwh_to_best"] < summary["per_epoch"][1]["total_kwh"]
    )

    # A stopper reading the energy at the same validations shares the reading: its cost at the
    # best check is the summary's energy up to it (the scripted meter adds 1000 J a reading).
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=50)
    with_stopper = run(tmp_path / "c", 3, stopper=stopper)
    assert with_stopper["best_metric"] == pytest.approx(0.1)
    assert stopper.policy.history.costs_kwh[5] == pytest.approx(with_stopper["kwh_to_best"], abs=1e-12)


@pytest.mark.parametrize("artifact", [True, False], ids=["summary-artifact", "rebuilt-from-metrics"])
def test_a_stop_says_what_it_saved_everywhere(tmp_path, sqlite_uri, monkeypatch, capsys, ns, artifact):
    """Summary (printed, JSON), MLflow metrics, plot, report and replay: the projected rest of the run."""
    from mlflow.tracking import MlflowClient

    from lightning_green import EnergyMonitor, cli
    from lightning_green.report import format_summary, plot_summary

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    monitor = EnergyMonitor(monitor="val_loss", summary=artifact)
    logger = ns.loggers.MLFlowLogger(experiment_name="saved", tracking_uri=sqlite_uri)
    module = ns.module(curve_module)(saturating_curve(40))
    fit(tmp_path, ns, [stopper, monitor], module, max_epochs=40, logger=logger, limit_train_batches=4)
    assert stopper.stop_reason is not None
    done = stopper.stopped_epoch + 1
    kwh_not_spent = (40 - done) * EPOCH_KWH  # the scripted meter: the same energy every epoch

    saved = monitor.last_summary["stop_savings"]
    assert saved["projected"] and saved["unit"] == "epochs"
    assert (saved["stopped_at"], saved["planned_end"], saved["epochs_not_run"]) == (done, 40, 40 - done)
    assert saved["kwh_not_spent"] == pytest.approx(kwh_not_spent)
    assert saved["metric"] == "val_loss" and saved["metric_gain_forgone"] >= 0
    line = re.search(r"\n  not run \(projected\) +(.*)", format_summary(monitor.last_summary)).group(1)
    assert f"{40 - done:g} epochs" in line and "kWh not spent" in line and "projected, not run" in line
    if artifact:
        on_disk = json.loads(monitor.summary_path.read_text())["stop_savings"]
        assert on_disk["kwh_not_spent"] == pytest.approx(kwh_not_spent)

    client = MlflowClient(sqlite_uri)
    logged = {k: client.get_metric_history(logger.run_id, f"energy/not_run_{k}_projected") for k in
              ("kwh", "epochs", "checks", "gain")}  # fmt: skip
    assert [m.value for m in logged["kwh"]] == [pytest.approx(kwh_not_spent)]
    assert [m.value for m in logged["epochs"]] == [40 - done]

    # lightning-green report: from the artifact, or rebuilt from the logged metrics.
    out_json = tmp_path / "report.json"
    argv = ["report", "--mlflow-uri", sqlite_uri, "--run-id", logger.run_id, "--json", str(out_json)]
    assert cli.main([*argv, "-o", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "not run (projected)" in out
    # 0-based as Lightning's stopped_epoch, with the count of epochs trained (replay's stop_epoch).
    assert f"stopped epoch {stopper.stopped_epoch} (0-based: {done} epochs trained)" in re.sub(" +", " ", out)
    reported = json.loads(out_json.read_text())
    assert reported.get("rebuilt_from_metrics", False) is not artifact
    assert reported["stop_savings"]["kwh_not_spent"] == pytest.approx(kwh_not_spent)
    matplotlib = pytest.importorskip("matplotlib")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        svg = plot_summary(reported, tmp_path / "r.svg").read_text()
    assert "projected, not run" in svg

    # Replay of the stopped run: the saving is the projected rest, said to be projected.
    decisions = tmp_path / "decisions.csv"
    capsys.readouterr()
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "saved", "-o", str(decisions)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert int(row["stop_epoch"]) == done and row["stop_reason"] == stopper.stop_reason.value
    assert float(row["cost_not_run_projected"]) == pytest.approx(kwh_not_spent)
    total = float(row["cost_total"]) + kwh_not_spent
    fraction = (total - float(row["cost_at_stop"])) / total
    assert fraction > 0.1
    assert f"mean cost saved: {fraction:.3f}" in out and "projected for 1 run(s)" in out


@pytest.mark.parametrize("summary", [True, False], ids=["with-summary", "metrics-only"])
def test_replay_of_a_stopped_csvlogger_run_reports_the_projected_saving(
    tmp_path, monkeypatch, capsys, ns, summary
):
    from lightning_green import EnergyMonitor, cli

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    logger = ns.loggers.CSVLogger(str(tmp_path), name="saved")
    module = ns.module(curve_module)(saturating_curve(40))
    monitor = EnergyMonitor(monitor="val_loss", summary=summary)
    fit(tmp_path, ns, [stopper, monitor], module, max_epochs=40, logger=logger, limit_train_batches=4)
    assert stopper.stop_reason is not None
    done = stopper.stopped_epoch + 1
    kwh_not_spent = (40 - done) * EPOCH_KWH
    metrics_csv = tmp_path / "saved" / "version_0" / "metrics.csv"
    assert (metrics_csv.parent / "energy_summary.json").exists() is summary

    decisions = tmp_path / "decisions.csv"
    capsys.readouterr()
    assert cli.main(["replay", str(metrics_csv), "-o", str(decisions)]) == 0
    out = capsys.readouterr().out
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert row["curve_id"] == str(metrics_csv.parent)
    assert int(row["stop_epoch"]) == done and row["stop_reason"] == stopper.stop_reason.value
    assert float(row["cost_not_run_projected"]) == pytest.approx(kwh_not_spent)
    assert "policy arguments as recorded by 1 run(s)" in out and "projected for 1 run(s)" in out
    # Another plan on the command line: the rest of the run is counted up to that plan.
    for plan in (done + 1, 40, 100):
        assert cli.main(["replay", str(metrics_csv), "-o", str(decisions), "--max-epochs", str(plan)]) == 0
        (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
        assert float(row["cost_not_run_projected"]) == pytest.approx((plan - done) * EPOCH_KWH)

    # The report of another metric than the run's is drawn from the metrics, with the run's stop
    # (reason and epoch: the plot's stop marker) from its summary, and says why it was rebuilt.
    if summary:
        report = tmp_path / "other.json"
        argv = ["report", str(metrics_csv), "--monitor", "epoch", "--mode", "max", "--json", str(report)]
        assert cli.main([*argv, "-o", str(tmp_path / "other.png")]) == 0
        drawn = json.loads(report.read_text())
        assert (drawn["stop_reason"], drawn["stopped_epoch"]) == (
            stopper.stop_reason.value,
            stopper.stopped_epoch,
        )
        assert (
            "to draw 'epoch': the run's energy_summary.json is of its own metric" in capsys.readouterr().out
        )


def test_the_policy_sees_what_the_run_plans(tmp_path, monkeypatch, ns):
    """A run without a plan of its own (Lightning's implicit 1000 epochs) has no horizon."""
    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=2, min_epochs=1)
    module = ns.module(check_curve_module)(flat_after(3, 20), steps_per_check=BATCHES)
    fit(tmp_path, ns, [stopper], module, max_epochs=None, limit_train_batches=BATCHES)
    assert stopper.last_decision.horizon is None and stopper.last_decision.savings is None


def logged_run(tmp_path, sqlite_uri, ns, kind: str, experiment: str):
    """A logger of ``kind`` ("mlflow", "csv", "tensorboard") and how to read its run back.

    Returns ``(logger, read, source)``.

    ``read()`` is the run's curve as replay reads it; ``source`` is replay's command-line input.
    """
    from lightning_green.offline import read_log_curve, read_mlflow_curves

    if kind == "mlflow":
        logger = ns.loggers.MLFlowLogger(experiment_name=experiment, tracking_uri=sqlite_uri)

        def read():
            (curve,), skipped = read_mlflow_curves(sqlite_uri, experiment)
            assert skipped == []
            return curve

        return logger, read, ["--mlflow-uri", sqlite_uri, "--experiment", experiment]
    if kind == "tensorboard":
        logger = ns.loggers.TensorBoardLogger(str(tmp_path), name=experiment)

        def read_events():
            (events,) = (tmp_path / experiment / "version_0").glob("events.out.tfevents.*")
            return read_log_curve(events)

        return logger, read_events, [str(tmp_path / experiment / "version_0" / "events.out.tfevents.*")]
    logger = ns.loggers.CSVLogger(str(tmp_path), name=experiment)
    metrics_csv = tmp_path / experiment / "version_0" / "metrics.csv"
    return logger, lambda: read_log_curve(metrics_csv), [str(metrics_csv)]


@pytest.mark.parametrize("kind", ["mlflow", "csv", "tensorboard"])
@pytest.mark.parametrize(
    "plan",
    [
        dict(max_epochs=20, val_check_interval=0.25),
        dict(max_epochs=None, max_steps=90, val_check_interval=BATCHES // 2, check_val_every_n_epoch=None),
        dict(max_epochs=40, check_val_every_n_epoch=2),
    ],
    ids=["four-checks-an-epoch", "planned-in-steps", "every-2nd-epoch"],
)
def test_replay_of_the_logged_run_decides_at_the_callbacks_checks(
    tmp_path, sqlite_uri, monkeypatch, ns, plan, kind
):
    """Replay over the MLflow run, or the CSVLogger or TensorBoard log, decides as the callback did.

    It sees every check the stopper saw and stops where it did, with the arguments the run
    recorded (``patience=3``, not the default).
    """
    from lightning_green import cli
    from lightning_green.offline import config_for, replay_curve

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1)
    logger, read, source = logged_run(tmp_path, sqlite_uri, ns, kind, "checks")
    every = plan.get("check_val_every_n_epoch") or 1
    per_check = plan["val_check_interval"] if isinstance(plan.get("val_check_interval"), int) else None
    steps_per_check = per_check or round(BATCHES * plan.get("val_check_interval", 1.0)) * every
    module = ns.module(check_curve_module)(flat_after(6, 80), steps_per_check=steps_per_check)
    fit(tmp_path, ns, [stopper], module, logger=logger, **plan)
    assert stopper.stop_reason is not None
    history = stopper.policy.history
    in_epochs = 1.0 if stopper.last_place.unit == "epochs" else float(BATCHES)

    curve = read()
    # Every check, with the cost and the progress (in epochs) the policy decided on.
    assert curve.epochs.tolist() == pytest.approx((history.progress / in_epochs).tolist(), rel=1e-12)
    # (TensorBoard keeps scalars in float32: the costs to 7 digits there, exactly elsewhere.)
    assert curve.costs.tolist() == pytest.approx(
        history.costs_kwh.tolist(), rel=1e-6 if kind == "tensorboard" else 0
    )
    assert curve.metrics.tolist() == history.metrics.tolist()
    assert curve.recorded_config["patience"] == 3
    result = replay_curve(curve, config_for(curve))
    assert result.stop_reason is stopper.stop_reason
    assert result.stop_epoch == pytest.approx(stopper.last_decision.progress / in_epochs, rel=1e-12)

    decisions = tmp_path / "decisions.csv"
    assert cli.main(["replay", *source, "-o", str(decisions)]) == 0
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert row["stop_reason"] == stopper.stop_reason.value
    assert float(row["stop_epoch"]) == pytest.approx(stopper.last_decision.progress / in_epochs, rel=1e-12)


@pytest.mark.parametrize("kind", ["mlflow", "csv", "tensorboard"])
def test_the_learning_rate_hints_reach_replay_with_their_checks(tmp_path, sqlite_uri, ns, kind):
    """The hints the stopper was given are logged at the step of the check's metrics, so replay has them.

    A check every second epoch runs at the end of validation (Lightning's own EarlyStopping hook),
    where Lightning logs the validation metrics one step before ``global_step``.
    """
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=50)
    logger, read, _ = logged_run(tmp_path, sqlite_uri, ns, kind, "hints")
    module = ns.DigitsClassifier(lr_milestones=[6])
    fit(tmp_path, ns, [stopper], module, max_epochs=8, check_val_every_n_epoch=2, logger=logger)
    curve = read()
    assert curve.epochs.tolist() == [2, 4, 6, 8]
    # After epoch e (0-based) the drop at epoch 6 is 5 - e epochs after the current one; none after it.
    assert list(curve.lr_hints) == [4, 2, 0, None]


def test_checks_inside_epochs_of_unknown_length_count_the_planned_epochs(tmp_path, monkeypatch, capsys, ns):
    """An IterableDataset without a length, ``max_epochs`` planned, checks every few batches.

    The checks are placed in epochs against the ``max_epochs`` plan, as with a sized loader:
    ``min_epochs`` holds a plateau stop until that many epochs are done (not that many checks),
    the horizon is ``max_epochs``, and the stop says what it saved. Inside the first epoch, whose
    length nothing has measured yet, a check after ``b`` batches is placed at ``b / (b + 1)``
    (before the epoch's end); later ones at the fraction of the epochs before. Replay of the
    run's log decides as the callback did.
    """
    from lightning_green import EnergyMonitor, cli
    from lightning_green.report import format_summary

    install_scripted_meter(monkeypatch)
    # Nothing improves by 50: the plateau rule (patience 1) would stop at the second check.
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=1, min_delta=50.0, min_epochs=3)
    monitor = EnergyMonitor(monitor="val_loss")
    logger = ns.loggers.CSVLogger(str(tmp_path), name="stream")
    module = ns.module(check_curve_module)(flat_after(1, 40), steps_per_check=BATCHES // 2)
    pl.seed_everything(0)
    options = dict(max_epochs=6, val_check_interval=BATCHES // 2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer = make_trainer(tmp_path, [stopper, monitor], logger=logger, lightning=ns, **options)
    trainer.fit(module, datamodule=streamed_digits(ns.DigitsDataModule, BATCHES * 16)(batch_size=16))

    progress = stopper.policy.history.progress.tolist()
    assert progress == [0.8, 1.0, 1.5, 2.0, 2.5, 3.0]  # 4 / (4 + 1) inside the first epoch
    assert stopper.stop_reason is not None and stopper.stop_reason.value == "plateau"
    assert trainer.global_step == 3 * BATCHES  # after min_epochs epochs, not after 3 checks
    place = stopper.last_place
    assert (place.unit, place.horizon, place.progress_per_epoch) == ("epochs", 6.0, 1.0)
    saved = monitor.last_summary["stop_savings"]
    assert (saved["unit"], saved["stopped_at"], saved["planned_end"], saved["epochs_not_run"]) == (
        "epochs", 3, 6, 3,
    )  # fmt: skip
    assert "not run (projected)" in format_summary(monitor.last_summary)
    hparams = (tmp_path / "stream" / "version_0" / "hparams.yaml").read_text()
    assert re.search(r"^lightning_green\.max_epochs: 6$", hparams, re.MULTILINE)

    decisions = tmp_path / "decisions.csv"
    metrics_csv = tmp_path / "stream" / "version_0" / "metrics.csv"
    assert cli.main(["replay", str(metrics_csv), "-o", str(decisions)]) == 0
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert (row["stop_reason"], float(row["stop_epoch"])) == ("plateau", 3.0)
