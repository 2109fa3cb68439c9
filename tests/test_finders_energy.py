"""Energy used before the first epoch: Lightning's ``BatchSizeFinder`` and ``LearningRateFinder``.

Both search inside ``fit`` (in ``on_fit_start``), running training steps before epoch 0 with every
other callback removed. What they use counts in the run's total, but in no epoch: epoch 0 costs
what the later epochs cost, and ``EnergyAwareEarlyStopping`` projects the next epoch from the
training epochs while its budget counts the whole run. The step-cost meter makes every figure
exact: a step at batch size ``b`` costs ``0.05 + 0.001 b`` J; validation costs nothing.
"""

from __future__ import annotations

import csv

import mlflow
import pytest
from conftest import AnyCallback, make_trainer
from test_adaptive_doubles import costed_digits, install_step_cost
from test_stopper_progress import logged_run

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor, keys
from lightning_green.energy.units import J_PER_KWH
from lightning_green.policy import StopReason

BATCHES = 4  # training steps an epoch


def step_j(batch: int) -> float:
    """What one training step at ``batch`` costs (the step-cost meter's script)."""
    return 0.05 + 0.001 * batch


# BatchSizeFinder(init_val=16, max_trials=3): three steps (steps_per_trial) at each of 16, 32, 64;
# it adopts 64.
SEARCH_J = 3 * (step_j(16) + step_j(32) + step_j(64))  # 0.786 J
EPOCH_J = BATCHES * step_j(64)  # 0.456 J
SETUP_J = 0.1  # what a callback's setup uses, before the finder saves its checkpoint


class ChargeAtSetup(AnyCallback):
    """Uses ``SETUP_J`` in ``setup``: measured before the finder saves (and later restores) its checkpoint."""

    def __init__(self, cost) -> None:
        self.cost = cost

    def setup(self, trainer, pl_module, stage) -> None:
        self.cost.charged_j += SETUP_J


def finder_fit(
    tmp_path,
    ns,
    monkeypatch,
    callbacks,
    *,
    finder: bool = True,
    batch_size: int = 16,
    ckpt=None,
    prepare=None,
    **kwargs,
):
    """Fit the costed digits CNN for 4 epochs with ``callbacks`` (and a BatchSizeFinder); returns the trainer.

    ``ckpt``: a checkpoint to resume from; ``prepare``: called with the model before the fit.
    """
    cost = install_step_cost(monkeypatch)
    ns.pl.seed_everything(0)
    model = ns.module(costed_digits)()
    model.batch_size = batch_size
    if prepare is not None:
        prepare(model)
    if finder:
        search = ns.callbacks.BatchSizeFinder(init_val=16, max_trials=3, batch_arg_name="batch_size")
        callbacks = [*callbacks, ChargeAtSetup(cost), search]
    trainer = make_trainer(
        tmp_path,
        callbacks,
        max_epochs=4,
        lightning=ns,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
        **kwargs,
    )
    trainer.fit(model, datamodule=ns.DigitsDataModule(batch_size=batch_size), ckpt_path=ckpt)
    return trainer


def test_a_batch_size_search_is_in_the_runs_total_and_in_no_epoch(tmp_path, monkeypatch, ns):
    monitor = EnergyMonitor(monitor="val_acc", mode="max", carbon_intensity_g_per_kwh=400.0)
    trainer = finder_fit(tmp_path, ns, monkeypatch, [monitor])
    assert trainer.datamodule.batch_size == 64 and trainer.state.finished
    # Epoch 0 costs what the later epochs cost: the search is not training.
    assert [r.energy_j for r in monitor.history] == pytest.approx([EPOCH_J] * 4, rel=1e-9)
    summary = monitor.last_summary
    before_j = SETUP_J + SEARCH_J  # the setup counted once: the finder's restore adds it no second time
    assert summary["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(before_j, rel=1e-9)
    assert summary["total_kwh"] * J_PER_KWH == pytest.approx(before_j + 4 * EPOCH_J, rel=1e-9)
    assert summary["co2_kg"] == pytest.approx(summary["total_kwh"] * 0.4, rel=1e-9, abs=0)
    assert summary["kwh_after_last_epoch"] == pytest.approx(0.0, abs=1e-15)
    assert summary["kwh_per_epoch"] * J_PER_KWH == pytest.approx(EPOCH_J, rel=1e-9)
    # Spent after the best: of the epochs after it, not the search before them.
    best = summary["best_epoch"]
    assert summary["kwh_after_best"] * J_PER_KWH == pytest.approx((3 - best) * EPOCH_J, abs=1e-12)


@pytest.mark.parametrize("kind", ["mlflow", "csv"])
def test_the_budget_counts_the_search_and_projects_from_training_epochs(
    tmp_path, sqlite_uri, monkeypatch, ns, kind
):
    """Budget 2.3 J: with the setup and the search (0.886 J) in, three epochs fit (0.886 + 3 x 0.456
    = 2.254 J), a fourth would not. Booked into epoch 0 (1.342 J), they made the first check
    project 1.342 J more and stop at once. Replay decides as the callback did."""
    from lightning_green import cli
    from lightning_green.offline import config_for, replay_curve

    logger, read, source = logged_run(tmp_path, sqlite_uri, ns, kind, "finder")
    budget_kwh = 2.3 / J_PER_KWH
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=budget_kwh)
    finder_fit(tmp_path, ns, monkeypatch, [EnergyMonitor(), stopper], logger=logger)
    assert (stopper.stop_reason, stopper.stopped_epoch) == (StopReason.ENERGY_BUDGET, 2)
    before_j = SETUP_J + SEARCH_J
    # The checks' costs are the training epochs'; the budget message counts the whole run.
    costs_j = [c * J_PER_KWH for c in stopper.policy.history.costs_kwh.tolist()]
    assert costs_j == pytest.approx([EPOCH_J, 2 * EPOCH_J, 3 * EPOCH_J], rel=1e-9)
    assert stopper.last_decision.next_epoch_kwh * J_PER_KWH == pytest.approx(EPOCH_J, rel=1e-9)
    assert f"{(before_j + 3 * EPOCH_J) / J_PER_KWH:.6g} kWh spent" in stopper.stopping_reason_message

    curve = read()  # as logged through LightningModule.log: 32-bit floats, to 7 digits
    assert curve.costs.tolist() == pytest.approx(stopper.policy.history.costs_kwh.tolist(), rel=1e-6, abs=0)
    assert (curve.outside_costs * J_PER_KWH).tolist() == pytest.approx([before_j] * 3, rel=1e-6, abs=0)
    result = replay_curve(curve, config_for(curve))
    assert (result.stop_reason, result.stop_epoch) == (StopReason.ENERGY_BUDGET, 3)
    decisions = tmp_path / "decisions.csv"
    assert cli.main(["replay", *source, "-o", str(decisions)]) == 0
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert (row["stop_reason"], row["stop_epoch"]) == ("energy_budget", "3")
    if kind == "mlflow":
        (run,) = mlflow.MlflowClient(sqlite_uri).search_runs([logger.experiment_id])
        assert run.data.metrics[keys.RUN_BEFORE_EPOCHS_KWH] * J_PER_KWH == pytest.approx(before_j, rel=1e-9)


def test_a_learning_rate_search_is_in_the_runs_total_and_in_no_epoch(tmp_path, monkeypatch, ns):
    """Five search steps at batch 16 (0.33 J), then epochs of 0.264 J. Budget 1.0 J: epoch 0 fits
    (0.33 + 0.264 + 0.264 J), epoch 1 does not; with the search in epoch 0 the first check stopped."""
    install_step_cost(monkeypatch)
    ns.pl.seed_everything(0)
    monitor = EnergyMonitor()
    stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=1.0 / J_PER_KWH)
    search = ns.callbacks.LearningRateFinder(
        min_lr=1e-4, max_lr=1e-2, num_training_steps=5, early_stop_threshold=None
    )
    trainer = make_trainer(
        tmp_path,
        [monitor, stopper, search],
        max_epochs=4,
        lightning=ns,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
    )
    trainer.fit(ns.module(costed_digits)(), datamodule=ns.DigitsDataModule(batch_size=16))
    search_j, epoch_j = 5 * step_j(16), BATCHES * step_j(16)
    assert [r.energy_j for r in monitor.history] == pytest.approx([epoch_j] * 2, rel=1e-9)
    assert monitor.last_summary["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(search_j, rel=1e-9)
    assert monitor.last_summary["total_kwh"] * J_PER_KWH == pytest.approx(search_j + 2 * epoch_j, rel=1e-9)
    assert (stopper.stop_reason, stopper.stopped_epoch) == (StopReason.ENERGY_BUDGET, 1)


def test_a_run_resumed_after_the_search_keeps_its_energy_once(tmp_path, monkeypatch, ns):
    """Resumed from the checkpoint of epoch 1 (without the finder, at the size it chose), the run's
    total, its epochs and what it used before them are the uninterrupted run's."""
    saver = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    whole = EnergyMonitor(monitor="val_acc", mode="max")
    finder_fit(tmp_path / "whole", ns, monkeypatch, [whole, saver], enable_checkpointing=True)
    (checkpoint,) = (tmp_path / "ckpt").glob("epoch=1-*.ckpt")

    resumed = EnergyMonitor(monitor="val_acc", mode="max")
    finder_fit(tmp_path / "resumed", ns, monkeypatch, [resumed], finder=False, batch_size=64, ckpt=checkpoint)
    assert [r.energy_j for r in resumed.history] == pytest.approx([EPOCH_J] * 4, rel=1e-9)
    for key in ("total_kwh", "kwh_before_first_epoch", "kwh_after_last_epoch"):
        assert resumed.last_summary[key] == pytest.approx(whole.last_summary[key], rel=1e-9, abs=1e-15), key
    assert whole.last_summary["total_kwh"] * J_PER_KWH == pytest.approx(SETUP_J + SEARCH_J + 4 * EPOCH_J)


def costed_fit(tmp_path, ns, monkeypatch, callbacks, *, ckpt=None, **kwargs):
    """Fit the costed digits CNN at batch 64 for 4 epochs, every fit's setup using ``SETUP_J``."""
    cost = install_step_cost(monkeypatch)
    ns.pl.seed_everything(0)
    model = ns.module(costed_digits)()
    model.batch_size = 64
    trainer = make_trainer(
        tmp_path,
        [*callbacks, ChargeAtSetup(cost)],
        max_epochs=4,
        lightning=ns,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
        **kwargs,
    )
    trainer.fit(model, datamodule=ns.DigitsDataModule(batch_size=64), ckpt_path=ckpt)
    return trainer


def test_a_run_resumed_inside_an_epoch_keeps_its_setup_out_of_that_epoch(tmp_path, monkeypatch, ns):
    """Resumed from a checkpoint saved inside epoch 1 (step 6): Lightning calls no
    on_train_epoch_start for the restored epoch. The resumed fit's setup (0.1 J) is outside the
    epochs, as the uninterrupted run's: the epochs, the checks' costs and the budget's stop (1.6 J:
    0.1 + 3 x 0.456 J fit, a fourth epoch would not) are the uninterrupted run's. With the setup in
    the resumed epoch (0.556 J) the run stopped an epoch early."""

    def fit(name, extra=(), ckpt=None, **kwargs):
        monitor = EnergyMonitor(monitor="val_acc", mode="max", carbon_intensity_g_per_kwh=400.0)
        budget_kwh = 1.6 / J_PER_KWH
        stopper = EnergyAwareEarlyStopping(monitor="val_acc", mode="max", energy_budget_kwh=budget_kwh)
        costed_fit(tmp_path / name, ns, monkeypatch, [monitor, stopper, *extra], ckpt=ckpt, **kwargs)
        return monitor, stopper

    saver = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=6)
    whole, whole_stopper = fit("whole", [saver], enable_checkpointing=True)
    assert (whole_stopper.stop_reason, whole_stopper.stopped_epoch) == (StopReason.ENERGY_BUDGET, 2)
    (checkpoint,) = (tmp_path / "ckpt").glob("epoch=1-step=6.ckpt")

    resumed, resumed_stopper = fit("resumed", ckpt=checkpoint)
    assert [r.energy_j for r in resumed.history] == pytest.approx([EPOCH_J] * 3, rel=1e-9)
    assert [r.samples for r in resumed.history] == [r.samples for r in whole.history]
    resumed_costs = resumed_stopper.policy.history.costs_kwh.tolist()
    assert resumed_costs == pytest.approx(whole_stopper.policy.history.costs_kwh.tolist(), rel=1e-9)
    assert (resumed_stopper.stop_reason, resumed_stopper.stopped_epoch) == (StopReason.ENERGY_BUDGET, 2)
    summary = resumed.last_summary
    assert summary["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(2 * SETUP_J, rel=1e-9)  # each fit's
    assert summary["total_kwh"] * J_PER_KWH == pytest.approx(2 * SETUP_J + 3 * EPOCH_J, rel=1e-9)
    assert summary["co2_kg"] == pytest.approx(summary["total_kwh"] * 0.4, rel=1e-9, abs=0)


class SaveAtTrainStart(AnyCallback):
    """Saves the initial weights in ``on_train_start``: after the setup, before epoch 0 begins."""

    def __init__(self, path) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(str(self.path))


def killed_in_search(root, keep):
    """Makes a model's fit die at the finder's second search step (the finder runs it without other
    callbacks), keeping the checkpoint the finder left behind as ``keep``."""

    def prepare(model) -> None:
        step = model.training_step

        def training_step(*args, **kwargs):
            if len(model.steps) == 1:
                (left,) = root.glob(".scale_batch_size_*.ckpt")
                keep.write_bytes(left.read_bytes())
                raise KeyboardInterrupt
            return step(*args, **kwargs)

        model.training_step = training_step

    return prepare


@pytest.mark.parametrize("saved_in", ["on_train_start", "batch_size_search"])
def test_a_checkpoint_saved_before_the_first_epoch_keeps_the_setup_out_of_epoch_0(
    tmp_path, monkeypatch, ns, saved_in
):
    """A checkpoint saved before epoch 0 began - initial weights saved in on_train_start, or the one
    BatchSizeFinder writes before its search and leaves behind when the process dies in it - holds the
    setup measured so far (0.1 J) outside the epochs: the resumed run's epoch 0 costs what the later
    ones cost (it held 0.556 J), and the setup counts before the first epoch, with the resumed fit's own."""
    kept = tmp_path / "before_epoch_0.ckpt"
    first = EnergyMonitor(monitor="val_acc", mode="max", carbon_intensity_g_per_kwh=400.0)
    if saved_in == "on_train_start":
        costed_fit(tmp_path / "first", ns, monkeypatch, [first, SaveAtTrainStart(kept)])
    else:
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            # Lightning ends a KeyboardInterrupt with SystemExit in some versions, re-raises it in others.
            finder_fit(
                tmp_path / "first",
                ns,
                monkeypatch,
                [first],
                prepare=killed_in_search(tmp_path / "first", kept),
            )
    assert kept.exists()

    resumed = EnergyMonitor(monitor="val_acc", mode="max", carbon_intensity_g_per_kwh=400.0)
    costed_fit(tmp_path / "resumed", ns, monkeypatch, [resumed], ckpt=kept)
    assert [r.energy_j for r in resumed.history] == pytest.approx([EPOCH_J] * 4, rel=1e-9)
    summary = resumed.last_summary
    assert summary["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(2 * SETUP_J, rel=1e-9)
    assert summary["total_kwh"] * J_PER_KWH == pytest.approx(2 * SETUP_J + 4 * EPOCH_J, rel=1e-9)
    assert summary["co2_kg"] == pytest.approx(summary["total_kwh"] * 0.4, rel=1e-9, abs=0)


@pytest.mark.parametrize("search", ["scale_batch_size", "lr_find"])
def test_a_tuner_search_before_fit_counts_before_the_first_epoch(tmp_path, monkeypatch, ns, search):
    """Tuner(trainer).scale_batch_size / .lr_find before fit run a fit of their own, which Lightning
    leaves without an end once the search is done; the fit that follows on the same Trainer is the
    same run: the search (and the tuner fit's setup) counts before its first epoch, as the callback
    form's does. It was measured, then thrown away (the run's total left it out)."""
    import importlib

    cost = install_step_cost(monkeypatch)
    ns.pl.seed_everything(0)
    model = ns.module(costed_digits)()
    model.batch_size = 16
    datamodule = ns.DigitsDataModule(batch_size=16)
    monitor = EnergyMonitor(monitor="val_acc", mode="max", carbon_intensity_g_per_kwh=400.0)
    trainer = make_trainer(
        tmp_path,
        [monitor, ChargeAtSetup(cost)],
        max_epochs=4,
        lightning=ns,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
    )
    tuner = importlib.import_module(f"{ns.name}.tuner").Tuner(trainer)
    if search == "scale_batch_size":
        tuner.scale_batch_size(
            model, datamodule=datamodule, init_val=16, max_trials=3, batch_arg_name="batch_size"
        )
        search_j, epoch_j = SEARCH_J, EPOCH_J
    else:
        tuner.lr_find(
            model, datamodule=datamodule, min_lr=1e-4, max_lr=1e-2, num_training=5, early_stop_threshold=None
        )
        search_j, epoch_j = 5 * step_j(16), BATCHES * step_j(16)
    searched_j = cost.charged_j
    assert searched_j == pytest.approx(SETUP_J + search_j, rel=1e-9)
    trainer.fit(model, datamodule=datamodule)

    assert [r.energy_j for r in monitor.history] == pytest.approx([epoch_j] * 4, rel=1e-9)
    summary = monitor.last_summary
    before_j = 2 * SETUP_J + search_j  # the tuner fit's setup and search, then the fit's setup
    assert summary["kwh_before_first_epoch"] * J_PER_KWH == pytest.approx(before_j, rel=1e-9)
    assert summary["total_kwh"] * J_PER_KWH == pytest.approx(cost.charged_j, rel=1e-9)  # nothing left out
    assert summary["total_kwh"] * J_PER_KWH == pytest.approx(before_j + 4 * epoch_j, rel=1e-9)
    assert summary["co2_kg"] == pytest.approx(summary["total_kwh"] * 0.4, rel=1e-9, abs=0)


def test_a_checkpoint_saved_at_an_epochs_last_batch_keeps_that_epoch_its_own(tmp_path, monkeypatch, ns):
    """A checkpoint saved at epoch 0's last batch (step 4 of 4), before the epoch closed: Lightning
    resumes at epoch 1 and ends epoch 0 with no hook. Its energy stays its own epoch's (it was added
    to epoch 1: one record of 0.912 J for two epochs of 0.456 J, and epoch 0's record lost)."""
    ckpt_dir = tmp_path / "ckpt"
    saver = ns.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, every_n_train_steps=BATCHES)
    whole = EnergyMonitor(carbon_intensity_g_per_kwh=400.0)
    costed_fit(tmp_path / "whole", ns, monkeypatch, [whole, saver], enable_checkpointing=True)
    (checkpoint,) = ckpt_dir.glob("epoch=0-step=4.ckpt")

    resumed = EnergyMonitor(carbon_intensity_g_per_kwh=400.0)
    costed_fit(tmp_path / "resumed", ns, monkeypatch, [resumed], ckpt=checkpoint)
    assert [r.epoch for r in resumed.history] == [0, 1, 2, 3]
    assert [r.energy_j for r in resumed.history] == pytest.approx([EPOCH_J] * 4, rel=1e-9)
    assert [r.samples for r in resumed.history] == [r.samples for r in whole.history]
    assert resumed.history[0].metric is None  # its validation did not run
    summary = resumed.last_summary
    assert summary["total_kwh"] * J_PER_KWH == pytest.approx(2 * SETUP_J + 4 * EPOCH_J, rel=1e-9)
    assert summary["co2_kg"] == pytest.approx(summary["total_kwh"] * 0.4, rel=1e-9, abs=0)
