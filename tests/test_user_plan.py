"""Whose ``max_epochs`` it is: Lightning's 1000 in place of an unset one is no plan, ``max_epochs=1000`` is.

Lightning turns an unset ``max_epochs`` into 1000 when a fit starts, before any callback hook; the
Trainer reads 1000 afterwards either way. Real fits on the digits data under both namespaces: the
plan every callback reads (the stopper's horizon and ``min_horizon_fraction`` hold, the batch-size
policy's planned epochs, the precision probes' planned steps) on a first and a second fit of one
Trainer, the logged ``lightning_green.max_epochs``, what a stop saved and its replay, in
``ddp_spawn`` workers too; and where Lightning's function cannot be wrapped, the old rule.
"""

from __future__ import annotations

import csv
import importlib
import json
import warnings

import pytest
import pytorch_lightning as pl
from conftest import NAMESPACES, AnyCallback, make_trainer, run_ddp_script
from doubles import curve_module, install_scripted_meter
from test_stopper_progress import EPOCH_KWH, flat_after

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyAwareEarlyStopping, cli
from lightning_green.callbacks import _compat

BATCHES = 4  # training batches an epoch


class PlanSeen(AnyCallback):
    """What the lightning_green callbacks read as the plan in each fit; ends each fit after one epoch.

    The stopper's decision is read at the training's end: it checks once the epoch's energy is
    closed, by the EnergyMonitor after this callback.
    """

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        position = _compat.fit_position(trainer)
        precision = next(c for c in trainer.callbacks if isinstance(c, AdaptivePrecision))
        self.seen.append(
            {
                "max_epochs": trainer.max_epochs,
                "planned_epochs": position.planned_epochs,
                "precision_planned_steps": precision._planned_steps,
            }
        )
        trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        stopper = next(c for c in trainer.callbacks if isinstance(c, EnergyAwareEarlyStopping))
        decision = stopper.last_decision
        self.seen[-1].update(horizon=decision.horizon, hold=decision.hold)


def logged_plan(folder) -> str:
    """The ``lightning_green.max_epochs`` a CSVLogger folder's ``hparams.yaml`` holds."""
    (line,) = [ln for ln in (folder / "hparams.yaml").read_text().splitlines() if "max_epochs" in ln]
    return line.split(":", 1)[1].strip()


@pytest.mark.parametrize("plan", [None, 1000])
def test_every_callback_reads_the_users_plan_on_every_fit(tmp_path, ns, plan):
    """Trainer(max_epochs=1000) is a plan of 1000 epochs to every callback, on its first fit and on
    the next; an unset max_epochs (Lightning's 1000 in its place, on the next fit already in the
    Trainer) is none. A later plan of the user's (the fit loop's max_epochs set to 3) is one."""
    pl.seed_everything(0, verbose=False)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", min_epochs=1, min_relative_gain=None)
    batch, precision, seen = AdaptiveBatchSize(), AdaptivePrecision(), PlanSeen()
    trainer = make_trainer(
        tmp_path,
        [stopper, batch, precision, seen],
        logger=ns.loggers.CSVLogger(str(tmp_path), name="csv"),
        max_epochs=plan,
        lightning=ns,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    model, dm = ns.DigitsClassifier(), ns.DigitsDataModule(batch_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm)
    unplanned = [w for w in caught if "the run has no planned length" in str(w.message)]
    assert len(unplanned) == (1 if plan is None else 0)
    assert logged_plan(tmp_path / "csv" / "version_0") == ("none" if plan is None else "1000")
    trainer.fit(model, datamodule=dm)
    trainer.fit_loop.max_epochs = 3
    trainer.fit(model, datamodule=dm)

    if plan is None:
        planned = dict(planned_epochs=None, precision_planned_steps=None, horizon=None, hold=None)
    else:  # no marginal-gain stop before min_horizon_fraction (0.5) of the 1000 epochs
        planned = dict(
            planned_epochs=1000,
            precision_planned_steps=1000.0 * BATCHES,
            horizon=1000.0,
            hold="horizon_fraction",
        )
    later = dict(planned_epochs=3, precision_planned_steps=3.0 * BATCHES, horizon=3.0, hold=None)
    assert seen.seen == [
        {"max_epochs": 1000, **planned},
        {"max_epochs": 1000, **planned},
        {"max_epochs": 3, **later},
    ]
    # The batch-size policy: a run without a plan cannot project its probing budget (said once);
    # 1000 epochs can afford probing, 3 cannot.
    reasons = [(h["epoch"], h["reason"], h["details"]["planned_epochs"]) for h in batch.history]
    assert reasons == ([(0, "no_probe_budget", None)] if plan is None else [(2, "no_probe_budget", 3.0)])


def test_a_stop_before_an_explicit_1000_epochs_says_what_it_saved(tmp_path, monkeypatch, capsys, ns):
    """The stop of a Trainer(max_epochs=1000) run is before its planned end: the summary and
    replay of its log count the epochs not run up to 1000 (they counted none: "no plan")."""
    install_scripted_meter(monkeypatch)
    pl.seed_everything(0, verbose=False)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=2, min_epochs=1)
    module = ns.module(curve_module)(flat_after(3, 20))
    trainer = make_trainer(
        tmp_path,
        [stopper],
        logger=ns.loggers.CSVLogger(str(tmp_path), name="csv"),
        max_epochs=1000,
        lightning=ns,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=32))
    assert stopper.stop_reason is not None
    done = stopper.stopped_epoch + 1
    assert done < 20
    folder = tmp_path / "csv" / "version_0"
    assert logged_plan(folder) == "1000"
    savings = json.loads((folder / "energy_summary.json").read_text())["stop_savings"]
    assert savings["planned_end"] == 1000 and savings["epochs_not_run"] == 1000 - done
    assert savings["kwh_not_spent"] == pytest.approx((1000 - done) * EPOCH_KWH)

    decisions = tmp_path / "decisions.csv"
    capsys.readouterr()
    assert cli.main(["replay", str(folder / "metrics.csv"), "-o", str(decisions)]) == 0
    assert "projected for 1 run(s)" in capsys.readouterr().out
    (row,) = list(csv.DictReader(decisions.read_text().splitlines()))
    assert int(row["stop_epoch"]) == done
    assert float(row["cost_not_run_projected"]) == pytest.approx((1000 - done) * EPOCH_KWH)


@pytest.mark.slow
@pytest.mark.parametrize("lightning", NAMESPACES)
def test_ddp_spawn_workers_read_an_explicit_1000_as_a_plan(tmp_path, lightning):
    """The fit runs in workers that unpickled the callbacks: Lightning's function is wrapped there
    too. A budget stop after the first epoch of Trainer(max_epochs=1000) logs the plan and saves the
    999 epochs not run."""
    run_ddp_script(
        tmp_path,
        *("--strategy", "ddp_spawn", "--lightning", lightning, "--csv", "--limit-batches", "2"),
        *("--callbacks", "stopper", "--epochs", "1000"),
        *("--stopper-args", '{"monitor": "val_acc", "mode": "max", "energy_budget_kwh": 1e-12}'),
    )
    assert logged_plan(tmp_path / "csv" / "version_0") == "1000"
    record = json.loads((tmp_path / "rank0.json").read_text())
    assert record["stopper"] == {"stopped_epoch": 0, "stop_reason": "energy_budget"}
    savings = record["summary"]["stop_savings"]
    assert savings["planned_end"] == 1000 and savings["epochs_not_run"] == 999


def test_where_lightnings_function_cannot_be_wrapped_1000_epochs_is_taken_for_lightnings(
    tmp_path, monkeypatch, ns
):
    """A Lightning without ``_parse_loop_limits`` (or with another signature) is left alone: who set
    max_epochs is not known, and 1000 epochs without max_steps is taken for Lightning's, as before."""
    module = importlib.import_module(f"{ns.name}.trainer.trainer")
    wrapper = module._parse_loop_limits
    assert isinstance(wrapper, _compat._LoopLimitsRecorder)
    _compat.record_max_epochs_origin()  # idempotent: wrapped once
    assert module._parse_loop_limits is wrapper and not isinstance(
        wrapper.original, _compat._LoopLimitsRecorder
    )

    def other_signature(limits, trainer_state):
        return limits

    monkeypatch.setattr(module, "_parse_loop_limits", other_signature)
    _compat.record_max_epochs_origin()
    assert module._parse_loop_limits is other_signature  # left alone
    monkeypatch.delattr(module, "_parse_loop_limits")
    _compat.record_max_epochs_origin()  # no error

    monkeypatch.setattr(module, "_parse_loop_limits", wrapper.original, raising=False)  # unwrapped
    positions = []

    class Position(AnyCallback):
        def on_train_epoch_end(self, trainer, pl_module):
            positions.append(_compat.fit_position(trainer))
            trainer.should_stop = True

    trainer = make_trainer(
        tmp_path, [Position()], max_epochs=1000, lightning=ns, limit_train_batches=2, limit_val_batches=0
    )
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))
    assert _compat.max_epochs_implicit(trainer) is None
    (position,) = positions
    assert position.max_epochs == 1000 and position.max_epochs_implicit is None
    assert position.planned_epochs is None
