"""AdaptivePrecision on real fits (digits, CPU): swaps, real measurement, rollbacks, resume, refusals."""

from __future__ import annotations

import csv
import json
import math
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import test_adaptive_doubles
import torch
from conftest import PL, AnyCallback, make_trainer
from digits import DigitsClassifier, DigitsDataModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.plugins.precision import MixedPrecision
from test_adaptive_doubles import (  # noqa: F401
    CostedDigits,
    ResumableLoader,
    Spy,
    costed_digits,
    install_step_cost,
    one_thread,
)
from torch.utils.data import DataLoader

from lightning_green import (
    AdaptationUnsupportedError,
    AdaptiveBatchSize,
    AdaptivePrecision,
    EnergyAwareEarlyStopping,
    EnergyMonitor,
)
from lightning_green.callbacks import adaptive_precision
from lightning_green.energy.meter import EnergyMeasurementWarning
from lightning_green.training import windows
from lightning_green.training.precision import PRECISION_BITS

# One intra-op thread: CPU time (the energy estimate) stays meaningful on a shared 2-core box.
pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(window_s=0.001, start_step=4, probe_budget=0.5)  # scripted energy: short windows, short runs
AMPLE = dict(FAST, probe_budget=0.9)  # two 3x-dearer bf16 windows in a run of a few dozen steps
LATE = dict(AMPLE, start_step=20)  # a run ending soon after the first probe still affords it


def fit(
    tmp_path, callbacks, model=None, epochs=3, batches=20, ckpt_path=None, lightning=PL, **trainer_kwargs
):
    pl.seed_everything(0, verbose=False)
    model = model if model is not None else lightning.module(costed_digits)()
    trainer = make_trainer(
        tmp_path,
        callbacks,
        max_epochs=epochs,
        limit_train_batches=batches,
        lightning=lightning,
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=lightning.DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return trainer, model


def switches(cb):
    return [(h["from"], h["to"], h["reason"]) for h in cb.history if h["from"] != h["to"]]


# -- construction -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"precisions": "fp8"}, "precisions"),
        ({"precisions": ""}, "precisions"),
        ({"precisions": 16}, "precisions"),
        ({"loss_tolerance": -0.1}, "loss_tolerance"),
        ({"switch_margin": 1.5}, "switch_margin"),
        ({"cooldown_epochs": -1}, "cooldown_epochs"),
        ({"cooldown_epochs": "2"}, "cooldown_epochs"),
        ({"max_overflows": 0}, "max_overflows"),
        ({"window_s": 0}, "window_s"),
        ({"start_step": -1}, "start_step"),
        ({"loss_tolerance": "0.05"}, "loss_tolerance"),
        ({"loss_tolerance": True}, "loss_tolerance"),
        ({"switch_margin": "0.1"}, "switch_margin"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdaptivePrecision(**kwargs)


def test_precisions_parsed_in_policy_order():
    assert AdaptivePrecision(precisions="16-mixed, 32-true").precisions == ("32-true", "16-mixed")
    assert AdaptivePrecision().precisions is None


# -- swapping and measuring -------------------------------------------------------------------------
def test_a_swap_takes_effect_from_the_next_step_and_a_3x_costlier_bf16_is_dropped(tmp_path, monkeypatch, ns):
    install_step_cost(monkeypatch)  # bf16 costs 3x per step
    cb = AdaptivePrecision(**AMPLE)
    trainer, model = fit(tmp_path, [cb, EnergyMonitor(pue=2.0)], epochs=3, lightning=ns)
    moves = [h for h in cb.history if h["from"] != h["to"]]
    # Interleaved: fp32 | bf16 | fp32 | bf16 | fp32, then resolved costlier after two pairs.
    assert [(h["to"], h["reason"]) for h in moves] == [("bf16-mixed", "probe"), ("32-true", "probe")] * 2
    dtypes = [d for _, d in model.steps]
    for start, end in [(moves[0]["step"], moves[1]["step"]), (moves[2]["step"], moves[3]["step"])]:
        # Decided after step `start` completed: steps start..end-1 ran under bf16 autocast.
        assert set(dtypes[start:end]) == {"bfloat16"} and end - start == 2 + 4  # warm-up + a window
    assert dtypes.count("bfloat16") == 12
    verdict = next(h for h in cb.history if h["reason"] == "too_expensive")
    figures = verdict["details"]["comparison"]
    assert figures["verdict"] == "costlier" and figures["pairs"] == 2
    assert figures["ratio"] == pytest.approx(3.0, rel=0.05) and figures["ratio_low"] > 1.0
    assert len(figures["reference_j_per_sample"]) == 3 and len(figures["candidate_j_per_sample"]) == 2
    assert cb.current == "32-true" and trainer.precision == "32-true"
    assert cb.policy.j_per_sample()["bf16-mixed"] == pytest.approx(3 * cb.policy.j_per_sample()["32-true"])
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    assert summary["precision"] == "32-true"
    assert "32-true->bf16-mixed probe" in summary["precision_switches"]
    # Joules in the summary carry the PUE, like its totals; the share is of the run's energy.
    probe_j = sum(cb.policy.probe_energy_j().values())
    assert summary["precision_probe_j"] == pytest.approx(2.0 * probe_j)
    assert summary["precision_probe_share"] == pytest.approx(
        probe_j * 2.0 / (summary["total_kwh"] * 3.6e6), rel=0.02
    )
    j = cb.policy.j_per_sample()
    assert summary["precision_j_per_sample"] == pytest.approx({p: 2.0 * v for p, v in j.items()})
    bf16_extra = probe_j - cb.policy.probe_samples()["bf16-mixed"] * j["32-true"]
    assert summary["precision_probe_extra_j"] == pytest.approx(2.0 * bf16_extra)
    adaptations = json.loads(
        (Path(trainer.default_root_dir) / "energy_reports" / "adaptations.json").read_text()
    )
    recorded = [
        h for h in adaptations["precision"]["precision_adaptations"] if h["reason"] == "too_expensive"
    ]
    assert recorded[0]["details"]["comparison"]["candidate_j_per_sample"] == figures["candidate_j_per_sample"]


@pytest.mark.parametrize("failing", [range(4, 6), range(12, 14)])
def test_a_meter_outage_inside_a_probe_neither_stops_training_nor_skews_the_verdict(
    tmp_path, monkeypatch, ns, failing
):
    # Two meter reads fail (an NVML outage): the windows they touch measured 0 J or the outage's
    # energy; they count towards the run but are not compared, the next ones are measured.
    install_step_cost(monkeypatch, failing_reads=failing)
    cb = AdaptivePrecision(**AMPLE)
    with pytest.warns(EnergyMeasurementWarning, match="partial"):
        trainer, _ = fit(tmp_path, [cb, EnergyMonitor()], epochs=3, lightning=ns)
    figures = next(h for h in cb.history if h["reason"] == "too_expensive")["details"]["comparison"]
    assert figures["ratio"] == pytest.approx(3.0, rel=1e-6)  # bf16 costs 3x, exactly as scripted
    assert cb.current == "32-true" and trainer.state.finished
    assert EnergyMonitor.for_trainer(trainer).last_summary["partial"] is True


def _first_switch_step(tmp_path, monkeypatch):
    """The global step after which an uninterrupted run (bf16 3x dearer) first switches precision."""
    install_step_cost(monkeypatch)
    reference = AdaptivePrecision(**LATE)
    fit(tmp_path, [reference], epochs=3)
    return next(h["step"] for h in reference.history if h["from"] != h["to"])


def test_a_switch_decided_after_the_last_step_never_trains_and_is_not_reported(tmp_path, monkeypatch):
    # Where an uninterrupted run switches to bf16 (after step `start`), this run ends: max_steps.
    start = _first_switch_step(tmp_path / "reference", monkeypatch)
    install_step_cost(monkeypatch)
    cb = AdaptivePrecision(**LATE)
    trainer, model = fit(tmp_path, [cb], epochs=3, max_steps=start)
    assert trainer.global_step == start and {d for _, d in model.steps} == {"float32"}
    assert switches(cb) == [] and cb.current == trainer.precision == "32-true"
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    assert (summary["precision"], summary["precision_switches"]) == ("32-true", "")
    assert summary["precision_probe_j"] == 0.0  # no bf16 probe was paid for


class _StopAt(AnyCallback):
    """Stops the fit after global step ``step`` (as a user's callback or an interrupt would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_a_run_that_ends_inside_a_probe_reports_the_precision_it_chose(tmp_path, monkeypatch, caplog, ns):
    # The run is stopped two steps into the bf16 probe (by another callback: the planned end
    # itself is never probed into): it trained its last steps in bf16, but the policy never
    # adopted bf16 - tag and summary say 32-true, the last precision is kept.
    start = _first_switch_step(tmp_path / "reference", monkeypatch)
    install_step_cost(monkeypatch)
    cb = AdaptivePrecision(**LATE)
    trainer, model = fit(tmp_path, [cb, _StopAt(start + 2)], epochs=3, lightning=ns)
    assert [d for _, d in model.steps][-2:] == ["bfloat16", "bfloat16"] and cb.current == "bf16-mixed"
    assert switches(cb) == [("32-true", "bf16-mixed", "probe")]
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    assert (summary["precision"], summary["precision_last"]) == ("32-true", "bf16-mixed")
    assert cb.chosen_setting() == "32-true"
    assert "precision 32-true -> 32-true (ended while probing bf16-mixed" in caplog.text
    # The Trainer is left in the chosen precision: a validation after the fit does not run in bf16.
    assert trainer.precision == "32-true"
    model.val_dtypes = []
    trainer.validate(model, datamodule=ns.DigitsDataModule(batch_size=32), verbose=False)
    assert set(model.val_dtypes) == {"float32"}


DTYPE = {"32-true": "float32", "bf16-mixed": "bfloat16"}
"""The compute dtype autocast runs in under each precision on the CPU."""


class ValidationSpy(AnyCallback):
    """Per validation of the fit: where it ran, the precision trained and chosen then, what it ran in."""

    def __init__(self, cb: AdaptivePrecision | None = None) -> None:
        self.cb, self.rows = cb, []  # None: the Trainer's AdaptivePrecision

    def on_validation_start(self, trainer, pl_module):
        cb = self.cb or next(c for c in trainer.callbacks if isinstance(c, AdaptivePrecision))
        self._seen = len(pl_module.val_dtypes)
        self._at = dict(step=trainer.global_step, current=cb.current, chosen=cb.chosen_setting())
        self._at["pending"] = cb.pending is not None

    def on_validation_end(self, trainer, pl_module):
        dtypes = set(pl_module.val_dtypes[self._seen :])
        self.rows.append(dict(self._at, dtypes=dtypes, sanity=trainer.sanity_checking))


def test_validation_inside_a_probe_window_runs_in_the_chosen_precision_and_the_probe_goes_on(
    tmp_path, monkeypatch, ns
):
    # bf16 costs half: probed from step 20, adopted within 3 epochs. Validations every 5 steps fall
    # inside probe windows (the Trainer then trains in bf16 while the policy is on 32-true): they
    # run in the chosen precision, and the window's next training step is back in the candidate.
    install_step_cost(monkeypatch, **PROBE_COST)
    cb = AdaptivePrecision(**LATE)
    spy = ValidationSpy(cb)
    trainer, model = fit(
        tmp_path, [cb, spy], epochs=3, lightning=ns, val_check_interval=0.25, limit_val_batches=1
    )
    assert ("32-true", "bf16-mixed", "cheaper") in switches(cb)  # validations after it run in bf16
    inside = [r for r in spy.rows if r["current"] != r["chosen"]]
    assert inside and all(not r["sanity"] for r in inside)
    for row in spy.rows:
        assert row["dtypes"] == {DTYPE[row["chosen"]]}, row
    for row in inside:
        if not row["pending"]:  # no switch decided where it ran: the window goes on in the candidate
            assert model.steps[row["step"]][1] == DTYPE[row["current"]], row
    assert trainer.precision == cb.chosen_setting()


class EpochEndSpy(AnyCallback):
    """At every epoch's end (after AdaptivePrecision's): the precision trained then and the one chosen."""

    def __init__(self, cb: AdaptivePrecision) -> None:
        self.cb, self.rows = cb, []

    def on_train_epoch_end(self, trainer, pl_module):
        self.rows.append((self.cb.current, self.cb.chosen_setting()))


def test_the_precision_logged_for_an_epoch_is_the_chosen_one_when_it_ends_inside_a_probe(
    tmp_path, monkeypatch, ns
):
    # bf16 costs half; a probe from step 17 of 20-step epochs straddles the first epoch's end while
    # the policy is still on 32-true: that epoch's energy/precision is 32 (the precision chosen,
    # as the tag says, probes aside), not the 16 of the probe's step at that moment.
    install_step_cost(monkeypatch, **PROBE_COST)
    cb = AdaptivePrecision(**dict(AMPLE, start_step=17))
    spy = EpochEndSpy(cb)
    logger = ns.loggers.CSVLogger(str(tmp_path), name="csv")
    fit(tmp_path, [cb, spy], epochs=3, lightning=ns, logger=logger)
    assert any(current != chosen for current, chosen in spy.rows), spy.rows  # an epoch ended in a probe
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    logged = [float(r["energy/precision"]) for r in rows if r.get("energy/precision")]
    assert logged == [float(PRECISION_BITS[chosen]) for _, chosen in spy.rows]


def nan_in_bf16_digits(base: type) -> type:
    """Costed digits whose outputs are NaN under bf16 autocast, in training and validation alike."""

    class NanInBf16Digits(costed_digits(base)):
        def forward(self, x):
            out = super().forward(x)
            return out * math.nan if test_adaptive_doubles.autocast_dtype() == "bfloat16" else out

    return NanInBf16Digits


def test_a_precision_failing_numerically_in_a_probe_does_not_stop_the_run_by_its_validation(
    tmp_path, monkeypatch, ns
):
    # bf16 NaNs: its probe steps are rolled back; a validation that falls inside the probe window
    # runs in 32-true, so val_loss stays finite and neither stopper (both check it) ends the run.
    install_step_cost(monkeypatch, **PROBE_COST)
    cb = AdaptivePrecision(**LATE)
    spy = ValidationSpy(cb)
    green = EnergyAwareEarlyStopping(monitor="val_loss", patience=50)
    theirs = ns.callbacks.EarlyStopping(monitor="val_loss", patience=50, check_finite=True)
    trainer, _ = fit(
        tmp_path,
        [cb, spy, green, theirs],
        model=ns.module(nan_in_bf16_digits)(),
        epochs=4,
        lightning=ns,
        val_check_interval=0.25,
        limit_val_batches=1,
    )
    assert (green.stopped_epoch, theirs.stopped_epoch) == (0, 0)
    assert trainer.current_epoch == 4 and trainer.global_step == 80
    assert torch.isfinite(trainer.callback_metrics["val_loss"])
    assert any(h["reason"] == "rollback_non_finite" for h in cb.history)
    assert any(r["current"] == "bf16-mixed" for r in spy.rows)  # a validation fell inside a probe
    assert {d for r in spy.rows for d in r["dtypes"]} == {"float32"}


class _FailAt(AnyCallback):
    """Raises ``error`` at the start of global step ``step``: a failing fit, or Ctrl+C."""

    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise self.error


@pytest.mark.parametrize(
    "error", [RuntimeError("the data went bad"), KeyboardInterrupt()], ids=["error", "ctrl_c"]
)
def test_a_fit_that_fails_inside_a_probe_leaves_the_trainer_in_the_chosen_precision(
    tmp_path, monkeypatch, ns, error
):
    # Lightning calls no teardown when a fit raises or is interrupted (Ctrl+C ends it with
    # SystemExit, and ignores SIGINT from then on): the validation after it still runs in 32-true.
    start = _first_switch_step(tmp_path / "reference", monkeypatch)
    install_step_cost(monkeypatch)
    cb = AdaptivePrecision(**LATE)
    ns.pl.seed_everything(0, verbose=False)
    model = ns.module(costed_digits)()
    trainer = make_trainer(
        tmp_path, [cb, _FailAt(start + 2, error)], max_epochs=3, limit_train_batches=20, lightning=ns
    )
    data = ns.DigitsDataModule(batch_size=32)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises((type(error), SystemExit)):
            trainer.fit(model, datamodule=data)
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert [d for _, d in model.steps][-2:] == ["bfloat16", "bfloat16"] and cb.current == "bf16-mixed"
    assert cb.chosen_setting() == "32-true" and trainer.precision == "32-true"
    model.val_dtypes = []
    trainer.validate(model, datamodule=data, verbose=False)
    assert set(model.val_dtypes) == {"float32"}


def test_a_probe_is_not_started_when_the_planned_run_ends_before_its_windows(tmp_path, monkeypatch):
    # The same run planned to end two steps after the probe would start: no bf16 step is wasted.
    start = _first_switch_step(tmp_path / "reference", monkeypatch)
    install_step_cost(monkeypatch)
    cb = AdaptivePrecision(**LATE)
    _, model = fit(tmp_path, [cb], epochs=3, max_steps=start + 2)
    assert {d for _, d in model.steps} == {"float32"} and cb.current == "32-true"
    assert switches(cb) == []


def test_a_fit_planned_too_short_to_probe_says_so_and_a_continued_longer_plan_probes(
    tmp_path, monkeypatch, caplog, ns
):
    # bf16 costs half; probing may start at step 20 but needs 24 steps, and 2 epochs of 20 end at 40.
    install_step_cost(monkeypatch, **PROBE_COST)
    cb = AdaptivePrecision(**LATE)
    caplog.set_level("INFO")
    trainer, model = fit(tmp_path, [cb], epochs=2, lightning=ns)
    assert [(h["step"], h["reason"]) for h in cb.history] == [(20, "too_short")]
    assert (cb.history[0]["details"]["steps_needed"], cb.history[0]["details"]["steps_left"]) == (24, 20)
    assert (
        caplog.text.count("AdaptivePrecision does not probe: two windows of each candidate (bf16-mixed)") == 1
    )
    assert "precision 32-true -> 32-true (not probed: bf16-mixed; the planned run ended before" in caplog.text
    trainer.save_checkpoint(str(tmp_path / "after_fit.ckpt"))

    # fit again on the same Trainer with a larger max_epochs: the run goes on and probes bf16.
    trainer.fit_loop.max_epochs = 10
    trainer.fit(model, datamodule=ns.DigitsDataModule(batch_size=32))
    assert switches(cb)[-1] == ("32-true", "bf16-mixed", "cheaper")
    # Resumed from the first fit's checkpoint with the longer plan: the same.
    install_step_cost(monkeypatch, **PROBE_COST)
    resumed = AdaptivePrecision(**LATE)
    fit(tmp_path / "resumed", [resumed], epochs=10, lightning=ns, ckpt_path=str(tmp_path / "after_fit.ckpt"))
    assert switches(resumed)[-1] == ("32-true", "bf16-mixed", "cheaper")


def test_a_resume_with_fewer_precisions_allowed_drops_the_checkpoints_candidates(
    tmp_path, monkeypatch, recwarn, ns
):
    # The first fit is planned too short to probe bf16 (kept as a candidate in the checkpoint);
    # resumed with precisions="32-true" and a plan long enough, it trains in 32-true only, with one
    # warning naming the candidate dropped (it probed bf16 and failed recording it).
    install_step_cost(monkeypatch, **PROBE_COST)
    trainer, _ = fit(tmp_path, [AdaptivePrecision(**LATE)], epochs=2, lightning=ns)
    trainer.save_checkpoint(str(tmp_path / "after_fit.ckpt"))
    saved = torch.load(tmp_path / "after_fit.ckpt", weights_only=False)["callbacks"]
    assert "bf16-mixed" in saved["lightning_green.AdaptivePrecision"]["policy"]["pending"]

    install_step_cost(monkeypatch, **PROBE_COST)
    recwarn.clear()
    resumed = AdaptivePrecision(precisions="32-true", **LATE)
    trainer, model = fit(
        tmp_path / "resumed", [resumed], epochs=4, lightning=ns, ckpt_path=str(tmp_path / "after_fit.ckpt")
    )
    assert {d for _, d in model.steps} == {"float32"} and len(model.steps) == 40
    assert resumed.current == "32-true" and switches(resumed) == [] and resumed.policy.dropped_candidates
    assert "bf16-mixed" not in resumed.policy.supported
    said = [str(w.message) for w in recwarn if "AdaptivePrecision(precisions='32-true')" in str(w.message)]
    assert len(said) == 1 and "['bf16-mixed'] dropped" in said[0], said
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    assert (summary["precision"], summary["precision_probe_j"]) == ("32-true", 0.0)


@pytest.mark.parametrize("trained_in", ["adopted", "trainer"])
def test_a_resume_whose_precision_is_no_longer_allowed_goes_on_in_an_allowed_one(
    tmp_path, monkeypatch, recwarn, ns, trained_in
):
    # The first fit trains in bf16 (adopted: half the cost; or the Trainer's own). Resumed with
    # precisions="32-true" (and the Trainer's 32-true) it goes on in 32-true from its first step,
    # recorded as a not_allowed switch at the checkpoint's step, with one warning naming both.
    install_step_cost(monkeypatch, **PROBE_COST)
    if trained_in == "adopted":
        first = AdaptivePrecision(**LATE)
        trainer, _ = fit(tmp_path, [first], epochs=-1, max_steps=60, lightning=ns)
        assert switches(first)[-1] == ("32-true", "bf16-mixed", "cheaper")
    else:
        first = AdaptivePrecision(precisions="bf16-mixed", probe_budget=0)
        trainer, _ = fit(tmp_path, [first], epochs=1, lightning=ns, precision="bf16-mixed")
    assert first.current == "bf16-mixed"
    step = trainer.global_step
    trainer.save_checkpoint(str(tmp_path / "after_fit.ckpt"))

    install_step_cost(monkeypatch, **PROBE_COST)
    recwarn.clear()
    resumed = AdaptivePrecision(precisions="32-true", **LATE)
    trainer, model = fit(
        tmp_path / "resumed",
        [resumed],
        epochs=-1,
        max_steps=step + 20,
        lightning=ns,
        ckpt_path=str(tmp_path / "after_fit.ckpt"),
        precision="32-true",
    )
    assert {d for _, d in model.steps} == {"float32"} and len(model.steps) == 20
    assert switches(resumed)[-1] == ("bf16-mixed", "32-true", "not_allowed")
    assert (resumed.history[-1]["step"], resumed.current) == (step, "32-true")
    assert resumed.baseline == first.baseline  # what the run started in, as before
    said = [str(w.message) for w in recwarn if "AdaptivePrecision(precisions='32-true')" in str(w.message)]
    assert len(said) == 1 and "trains in bf16-mixed: it goes on in 32-true" in said[0], said
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    assert (summary["precision"], summary["precision_last"]) == ("32-true", "32-true")
    assert trainer.strategy.precision_plugin.precision == "32-true"


def continued_fits(path, ns, plans):
    """One run fitted again on its Trainer with each longer plan (max_steps): the AdaptivePrecision.

    A checkpoint is saved after the first fit (``after_fit.ckpt``).
    """
    cb = AdaptivePrecision(**LATE)
    trainer, model = fit(path, [cb], epochs=-1, max_steps=plans[0], lightning=ns)
    trainer.save_checkpoint(str(path / "after_fit.ckpt"))
    for max_steps in plans[1:]:
        trainer.fit_loop.epoch_loop.max_steps = max_steps
        trainer.fit(model, datamodule=ns.DigitsDataModule(batch_size=32))
    assert cb.policy.step == trainer.global_step == plans[-1]
    assert [h["details"]["step"] for h in cb.history] == [h["step"] for h in cb.history]
    return cb


def test_a_fit_continued_to_longer_plans_counts_every_step_and_probes_only_where_it_fits(
    tmp_path, monkeypatch, caplog, ns
):
    # A probe of bf16 needs 24 steps. The window open when a fit ends goes on in the next one, so the
    # policy's step is the Trainer's (it lagged 2 steps per fit, its plans looked 2 steps longer).
    install_step_cost(monkeypatch, **PROBE_COST)
    cb = continued_fits(tmp_path / "40", ns, [30, 40, 60])
    too_short = [h for h in cb.history if h["reason"] == "too_short"]
    assert [(h["step"], h["details"]["planned_steps"], h["details"]["steps_left"]) for h in too_short] == [
        (20, 30, 10),
        (32, 40, 8),
        (44, 60, 16),
    ]
    assert switches(cb) == []

    # 30 then 60 steps: the probe that starts fits in the plan and reaches its verdict at its end
    # (a switch decided there is applied by a further fit); it started at step 38 and ended unresolved.
    caplog.set_level("INFO")
    cb = continued_fits(tmp_path / "60", ns, [30, 60])
    probed = [h["step"] for h in cb.history if h["reason"] == "probe"]
    assert probed[0] - 6 + 24 <= 60  # from the reference window before the first switch
    assert cb.pending is not None and (cb.pending.to, cb.pending.reason) == ("bf16-mixed", "cheaper")
    assert "ended while probing" not in caplog.text
    # Resumed from the checkpoint saved after the first fit, with the longer plan: the same.
    install_step_cost(monkeypatch, **PROBE_COST)
    resumed = AdaptivePrecision(**LATE)
    ckpt = str(tmp_path / "60" / "after_fit.ckpt")
    trainer, _ = fit(tmp_path / "resumed", [resumed], epochs=-1, max_steps=60, lightning=ns, ckpt_path=ckpt)
    assert resumed.policy.step == trainer.global_step == 60
    steps = [d[1:] for d in decisions(resumed)]  # (its epochs count from the checkpoint's epoch end)
    assert steps == [d[1:] for d in decisions(cb)] and resumed.pending.step == cb.pending.step


def test_probe_budget_0_never_probes_and_says_so_once_without_advice(tmp_path, monkeypatch, caplog, ns):
    # probe_budget=0 is "never probe": no no_budget verdict about a budget "unless the projected
    # run grows enough" (it never can), but one record and info line naming the argument's choice.
    install_step_cost(monkeypatch)
    cb = AdaptivePrecision(window_s=0.001, start_step=4, probe_budget=0)
    caplog.set_level("INFO")
    _, model = fit(tmp_path, [cb], epochs=2, lightning=ns)
    assert [h["reason"] for h in cb.history] == ["probing_off"]
    assert caplog.text.count("AdaptivePrecision does not probe: probe_budget=0 turns probing off") == 1
    assert "projected run grows" not in caplog.text and "probing budget" not in caplog.text
    assert {d for _, d in model.steps} == {"float32"} and cb.current == "32-true"


def test_a_run_too_short_to_pay_for_probing_does_not_probe_and_says_so_once(tmp_path, caplog):
    # Real measurement (the CPU-time estimate): 60 steps; two bf16 windows (2 warm-up steps and 4
    # steps or 0.1 s at least, each) would take 20 % of the run, ten times the 2 % budget: a
    # margin wide enough that a stretch of load inflating the steps already spent (the budget is
    # a share of the run projected from them) cannot make them affordable.
    cb = AdaptivePrecision(window_s=0.1, start_step=10, probe_budget=0.02)
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer, _ = fit(tmp_path, [cb], model=DigitsClassifier(), epochs=3, batches=20, logger=logger)
    notes = [h for h in cb.history if h["reason"] == "no_budget"]
    assert len(notes) == 1 and len(cb.history) == 1, cb.history
    figures = notes[0]["details"]
    assert figures["probe_min_j"] > figures["probe_allowance_j"] - figures["probe_spent_j"]
    assert figures["planned_steps"] == trainer.estimated_stepping_batches and figures["probe_budget"] == 0.02
    assert caplog.text.count("AdaptivePrecision does not probe") == 1
    assert "bf16-mixed" not in cb.policy.j_per_sample() and cb.current == "32-true"
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    assert summary["precision_probe_share"] == 0.0
    assert [h["reason"] for h in summary["precision_adaptations"]] == ["no_budget"]
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    logged = [float(r["energy/precision"]) for r in rows if r.get("energy/precision")]
    assert logged == [32.0] * 3


def test_nan_under_bf16_rolls_back_skips_the_step_and_respects_the_cooldown(tmp_path, monkeypatch):
    install_step_cost(monkeypatch, factors={"float32": 1.0, "bfloat16": 0.5, "float16": 0.5})
    cb = AdaptivePrecision(cooldown_epochs=2, **FAST)
    _, model = fit(tmp_path, [cb], model=CostedDigits(nan_under="bfloat16"), epochs=5)
    rollbacks = [h for h in cb.history if h["reason"] == "rollback_non_finite"]
    assert rollbacks and all(h["to"] == "32-true" for h in rollbacks)
    assert rollbacks[0]["details"]["banned_until_epoch"] == rollbacks[0]["epoch"] + 2
    bf16_epochs = sorted({i // 20 for i, (_, d) in enumerate(model.steps) if d == "bfloat16"})
    first = rollbacks[0]["epoch"]
    assert first + 1 not in bf16_epochs  # banned: not tried again during the cooling period
    assert any(h["reason"] == "cooldown_over" and h["epoch"] == first + 2 for h in cb.history)
    assert first + 2 in bf16_epochs  # then probed again
    assert cb.current == "32-true" and cb.skipped_steps >= 1
    assert all(torch.isfinite(p).all() for p in model.parameters())  # NaN steps never applied


# -- 16-mixed with a GradScaler (a CPU double of a CUDA device: CPU fp16 autocast + GradScaler) ----
@pytest.fixture
def fp16_capable(monkeypatch):
    monkeypatch.setattr(
        adaptive_precision, "hardware_precisions", lambda device: ("32-true", "bf16-mixed", "16-mixed")
    )


def test_repeated_gradscaler_overflows_roll_back(tmp_path, monkeypatch, fp16_capable):
    install_step_cost(monkeypatch, factors={"float32": 1.0, "bfloat16": 3.0, "float16": 0.5})
    cb = AdaptivePrecision(precisions="16-mixed", max_overflows=3, **FAST)
    fit(tmp_path, [cb], model=CostedDigits(huge_under="float16"), epochs=2)
    reasons = [h["reason"] for h in cb.history]
    assert "rollback_overflow" in reasons, cb.history
    assert cb.current == "32-true"
    assert cb.policy.banned.get("16-mixed") is not None


def test_16_mixed_reads_the_gradscaler_scale_only_at_window_boundaries(tmp_path, monkeypatch, fp16_capable):
    # get_scale() syncs with the device: never once per step, only when a window closes.
    install_step_cost(monkeypatch, factors={"float32": 1.0, "bfloat16": 3.0, "float16": 0.3})
    reads, closes = [], []
    real_get_scale, real_close = torch.amp.GradScaler.get_scale, windows.TrainingWindow.close
    monkeypatch.setattr(torch.amp.GradScaler, "get_scale", lambda s: reads.append(1) or real_get_scale(s))
    monkeypatch.setattr(
        windows.TrainingWindow, "close", lambda w, *a, **k: closes.append(1) or real_close(w, *a, **k)
    )
    cb = AdaptivePrecision(precisions="16-mixed", **FAST)
    _, model = fit(tmp_path, [cb], epochs=3)
    fp16_steps = sum(d == "float16" for _, d in model.steps)
    assert cb.current == "16-mixed" and fp16_steps >= 30, cb.history
    switches_to_16 = sum(h["to"] == "16-mixed" and h["from"] != "16-mixed" for h in cb.history)
    assert len(reads) <= len(closes) + switches_to_16 + 1 < fp16_steps


def test_gradscaler_overflows_are_counted_from_the_scale_at_the_window_ends(
    tmp_path, monkeypatch, fp16_capable
):
    install_step_cost(monkeypatch, factors={"float32": 1.0, "bfloat16": 3.0, "float16": 0.5})
    recorded = []
    real_record = adaptive_precision.PrecisionPolicy.record

    def record(policy, precision, **kwargs):
        recorded.append((precision, kwargs["steps"], kwargs["overflows"]))
        return real_record(policy, precision, **kwargs)

    monkeypatch.setattr(adaptive_precision.PrecisionPolicy, "record", record)
    cb = AdaptivePrecision(precisions="16-mixed", max_overflows=3, **FAST)
    fit(tmp_path, [cb], model=CostedDigits(huge_under="float16"), epochs=2)
    fp16 = [(steps, overflows) for p, steps, overflows in recorded if p == "16-mixed"]
    # Every fp16 step overflows here (the loss is scaled to fp16's limit): one halving per step.
    assert fp16 and all(overflows == steps for steps, overflows in fp16), fp16
    assert all(overflows == 0 for p, _, overflows in recorded if p != "16-mixed")


def test_resume_restores_16_mixed_with_its_gradscaler_state_and_goes_on_deciding(
    tmp_path, monkeypatch, fp16_capable
):
    install_step_cost(monkeypatch, factors={"float32": 1.0, "bfloat16": 3.0, "float16": 0.3})
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, every_n_epochs=1, save_top_k=-1)
    first = AdaptivePrecision(precisions="16-mixed", **FAST)
    fit(tmp_path, [first, ckpt], epochs=3, enable_checkpointing=True)
    assert first.current == "16-mixed", first.history  # adopted: 3x cheaper and the loss tracks fp32
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    state = saved["lightning_green.AdaptivePrecision"]
    assert state["current"] == "16-mixed" and state["scaler"]["scale"] > 0

    class ScaleAtStart(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            plugin = trainer.strategy.precision_plugin
            self.plugin, self.scale = plugin, float(plugin.scaler.get_scale())

    probe = ScaleAtStart()
    resumed = AdaptivePrecision(precisions="16-mixed", **FAST)
    spy = Spy()
    ckpt2 = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, every_n_epochs=1, save_top_k=-1)
    callbacks = [resumed, probe, spy, ckpt2]
    fit(
        tmp_path / "b",
        callbacks,
        epochs=5,
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
        enable_checkpointing=True,
    )
    assert isinstance(probe.plugin, MixedPrecision) and probe.plugin.precision == "16-mixed"
    assert probe.scale == state["scaler"]["scale"]
    assert [r["precision"] for r in spy.rows] == ["16-mixed", "16-mixed"]  # epochs 3 and 4
    assert resumed.history[: len(state["history"])] == state["history"]
    assert resumed.policy.step > state["policy"]["step"]  # the restored policy carried on
    assert not [h for h in resumed.history[len(state["history"]) :] if h["reason"] == "probe"]


class SeedEachEpoch(AnyCallback):
    """Seeds torch at every epoch start: a resumed epoch trains exactly as the uninterrupted one did."""

    def on_train_epoch_start(self, trainer, pl_module):
        torch.manual_seed(trainer.current_epoch)


def unshuffled_digits(lightning):
    """The digits data in a fixed order (a resume must not change which batches a window sees)."""

    class UnshuffledDigits(lightning.DigitsDataModule):
        def train_dataloader(self):
            return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False)

    return UnshuffledDigits(batch_size=32)


PROBE_COST = dict(
    factors={"float32": 1.0, "bfloat16": 0.5, "float16": 0.5}, overhead_j=0.2, per_sample_j=0.001
)
"""bf16 costs half: from step 110 a probe resolves it cheaper within a few windows."""


def probe_run(
    path,
    monkeypatch,
    ns,
    ckpt_path=None,
    with_batch_size=False,
    checkpoint=None,
    extra=(),
    datamodule=None,
    **trainer_kwargs,
):
    """A scripted-energy fit probing bf16 from step 110, with ModelCheckpoint(**checkpoint) (every epoch).

    Returns the trainer, AdaptivePrecision, AdaptiveBatchSize (used with ``with_batch_size``) and a Spy.
    """
    install_step_cost(monkeypatch, **PROBE_COST)
    precision = AdaptivePrecision(precisions="bf16-mixed", window_s=0.001, start_step=110, probe_budget=0.9)
    sizes = AdaptiveBatchSize(
        min_batch_size=32, max_batch_size=64, window_s=0.001, probe_windows=2, probe_fraction=0.9
    )
    saving = checkpoint if checkpoint is not None else dict(every_n_epochs=1, filename="{epoch}")
    saver = ns.callbacks.ModelCheckpoint(dirpath=str(path / "ckpt"), save_top_k=-1, **saving)
    spy = Spy()
    callbacks = [sizes, precision] if with_batch_size else [precision]
    ns.pl.seed_everything(0, verbose=False)
    kwargs = {"max_epochs": 10, "limit_train_batches": 20, **trainer_kwargs}
    trainer = make_trainer(
        path,
        [*callbacks, spy, SeedEachEpoch(), *extra, saver],
        lightning=ns,
        enable_checkpointing=True,
        **kwargs,
    )
    data = datamodule if datamodule is not None else unshuffled_digits(ns)
    trainer.fit(ns.module(costed_digits)(), datamodule=data, ckpt_path=ckpt_path)
    return trainer, precision, sizes, spy


def decisions(cb):
    return [(h["epoch"], h["step"], h["from"], h["to"], h["reason"]) for h in cb.history]


def total_kwh(trainer):
    return EnergyMonitor.for_trainer(trainer).last_summary["total_kwh"]


@pytest.mark.parametrize("with_batch_size", [False, True], ids=["precision", "precision+batch_size"])
def test_a_resume_from_a_checkpoint_inside_a_probe_window_decides_as_the_uninterrupted_run(
    tmp_path, monkeypatch, ns, with_batch_size
):
    # bf16 costs half: from step 110 the probe alternates windows; the switch at step 116 (epoch 5)
    # starts a bf16 segment whose window epoch 5's end (and its checkpoint) catches open.
    whole_trainer, whole, whole_sizes, whole_spy = probe_run(
        tmp_path / "whole", monkeypatch, ns, with_batch_size=with_batch_size
    )
    ckpt = tmp_path / "whole" / "ckpt" / "epoch=5.ckpt"
    assert ("bf16-mixed", "32-true", "probe") in switches(whole)  # the window closes after the resume

    validations = ValidationSpy()
    trainer, resumed, sizes, spy = probe_run(
        tmp_path / "resumed",
        monkeypatch,
        ns,
        ckpt_path=str(ckpt),
        with_batch_size=with_batch_size,
        extra=(validations,),
    )
    assert decisions(resumed) == decisions(whole)
    # The sanity check runs in the chosen precision, not in the probed one the fit resumed in.
    sanity = validations.rows[0]
    assert sanity["sanity"] and (sanity["current"], sanity["chosen"]) == ("bf16-mixed", "32-true")
    assert sanity["dtypes"] == {"float32"}
    got, want = (cb.history[-1]["details"]["comparison"] for cb in (resumed, whole))
    assert got["ratio"] == pytest.approx(want["ratio"], rel=1e-9)
    assert spy.rows == whole_spy.rows[6:]  # epochs 6 to 9: the same batch sizes, precisions and lr
    if with_batch_size:
        assert decisions(sizes) == decisions(whole_sizes) != []  # the trial starts in the same epoch
    assert total_kwh(trainer) == pytest.approx(total_kwh(whole_trainer), rel=1e-9)
    # The open window is in the checkpoint as plain data (it loads with weights_only=True).
    state = torch.load(ckpt, weights_only=True)["callbacks"]["lightning_green.AdaptivePrecision"]
    assert state["current"] == "bf16-mixed" and 0 < state["window"]["steps"] < state["window"]["target_steps"]


@pytest.mark.parametrize("with_batch_size", [False, True], ids=["precision", "precision+batch_size"])
def test_a_resume_from_a_checkpoint_saved_where_a_switch_was_decided_waits_for_the_warm_up_as_uninterrupted(
    tmp_path, monkeypatch, ns, with_batch_size
):
    # 29 batches an epoch: the probe's first switch is decided at step 116, epoch 3's last. Its
    # checkpoint holds the switch pending and a window of no step yet whose target is the policy's
    # 2 warm-up steps (not the 4 of a window): the resumed run closes it where the whole one did.
    kwargs = dict(max_epochs=7, limit_train_batches=29, with_batch_size=with_batch_size)
    whole_trainer, whole, whole_sizes, _ = probe_run(tmp_path / "whole", monkeypatch, ns, **kwargs)
    ckpt = tmp_path / "whole" / "ckpt" / "epoch=3.ckpt"
    assert decisions(whole)[0] == (3, 116, "32-true", "bf16-mixed", "probe")

    trainer, resumed, sizes, _ = probe_run(
        tmp_path / "resumed", monkeypatch, ns, ckpt_path=str(ckpt), **kwargs
    )
    assert decisions(resumed) == decisions(whole)
    assert decisions(sizes) == decisions(whole_sizes)
    assert total_kwh(trainer) == pytest.approx(total_kwh(whole_trainer), rel=1e-9)
    state = torch.load(ckpt, weights_only=True)["callbacks"]["lightning_green.AdaptivePrecision"]
    assert state["pending"]["to"] == "bf16-mixed" and state["current"] == "32-true"
    assert (state["window"]["steps"], state["window"]["target_steps"]) == (0, whole.policy.warmup_steps)
    assert state["step_s"] > 0  # the measured step time sizes the windows after the resume too


def resumable_digits(lightning):
    class ResumableDigits(lightning.DigitsDataModule):
        def train_dataloader(self):
            loader = ResumableLoader  # 20 batches an epoch (limit_train_batches)
            return loader(self.train_set, batch_size=self.batch_size, shuffle=False, epoch_batches=20)

    return ResumableDigits(batch_size=32)


class SlowSave(AnyCallback):
    """Writing a checkpoint costs 3 J (a large model's file; a probe window here is about 1 J)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        test_adaptive_doubles.COST.charged_j += 3.0


@pytest.mark.parametrize("with_batch_size", [False, True], ids=["precision", "precision+batch_size"])
def test_writing_a_checkpoint_mid_epoch_is_not_measured_so_a_resumed_run_decides_as_the_uninterrupted(
    tmp_path, monkeypatch, ns, with_batch_size
):
    # Checkpoints every 9 steps, each 3 J to write: the windows exclude the writing (as validation),
    # so the run decides as without checkpoints, and resumed from step 126 (inside a probe) alike.
    kwargs = dict(with_batch_size=with_batch_size, max_epochs=10)
    plain_trainer, plain, plain_sizes, _ = probe_run(
        tmp_path / "plain",
        monkeypatch,
        ns,
        checkpoint=dict(every_n_epochs=0),
        datamodule=resumable_digits(ns),
        **kwargs,
    )
    every_9 = dict(every_n_train_steps=9, filename="{step}")

    def saving_run(path, ckpt_path=None):
        return probe_run(
            path,
            monkeypatch,
            ns,
            ckpt_path=ckpt_path,
            checkpoint=every_9,
            extra=[SlowSave()],
            datamodule=resumable_digits(ns),
            **kwargs,
        )

    whole_trainer, whole, whole_sizes, _ = saving_run(tmp_path / "whole")
    assert decisions(whole) == decisions(plain) != []
    assert decisions(whole_sizes) == decisions(plain_sizes)
    if with_batch_size:  # the trial's windows measured the same: what probing cost
        assert decisions(whole_sizes) != []
        got, want = (EnergyMonitor.for_trainer(t).last_summary for t in (whole_trainer, plain_trainer))
        assert got["batch_size_probe_j"] == pytest.approx(want["batch_size_probe_j"], rel=1e-9)
    ckpt = tmp_path / "whole" / "ckpt" / "step=126.ckpt"
    state = torch.load(ckpt, weights_only=True)["callbacks"]["lightning_green.AdaptivePrecision"]
    assert state["window"]["steps"] > 0  # inside a window

    # (The resumed run's energy lacks the writing of the checkpoint it resumes from, read before it.)
    _, resumed, sizes, _ = saving_run(tmp_path / "resumed", ckpt_path=str(ckpt))
    assert decisions(resumed) == decisions(whole)
    assert decisions(sizes) == decisions(whole_sizes)


def slow_writes(lightning):
    """A CheckpointIO whose file writes cost 3 J each (a large model's file; a probe window is about 1 J)."""

    class SlowWrites(lightning.pl.plugins.TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            super().save_checkpoint(checkpoint, path, storage_options)
            test_adaptive_doubles.COST.charged_j += 3.0

    return SlowWrites()


def test_writing_a_weights_only_checkpoint_is_not_measured_either(tmp_path, monkeypatch, ns):
    # ModelCheckpoint(save_weights_only=True) every 9 steps, each file 3 J to write: Lightning calls no
    # callback's on_save_checkpoint for these, yet both callbacks decide as without checkpoints
    # (with the writes measured, bf16 was never resolved cheaper and the batch-size trial never ran).
    kwargs = dict(with_batch_size=True, max_epochs=10)
    plain_trainer, plain, plain_sizes, _ = probe_run(
        tmp_path / "plain", monkeypatch, ns, checkpoint=dict(every_n_epochs=0), **kwargs
    )
    weights_only = dict(every_n_train_steps=9, filename="{step}", save_weights_only=True)
    trainer, precision, sizes, _ = probe_run(
        tmp_path / "weights", monkeypatch, ns, checkpoint=weights_only, plugins=[slow_writes(ns)], **kwargs
    )
    assert ("32-true", "bf16-mixed", "cheaper") in switches(plain)
    assert decisions(precision) == decisions(plain)
    assert decisions(sizes) == decisions(plain_sizes) != []
    got, want = (EnergyMonitor.for_trainer(t).last_summary for t in (trainer, plain_trainer))
    assert got["batch_size_probe_j"] == pytest.approx(want["batch_size_probe_j"], rel=1e-9)
    assert got["precision_probe_j"] == pytest.approx(want["precision_probe_j"], rel=1e-9)
    saved = torch.load(tmp_path / "weights" / "ckpt" / "step=126.ckpt", weights_only=True)
    assert "callbacks" not in saved  # a weights-only checkpoint indeed
    assert "save_checkpoint" not in vars(trainer)  # the Trainer's own method again after the fit


# -- refusals at fit start --------------------------------------------------------------------------
class ManualDigits(DigitsClassifier):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = super().training_step(batch, batch_idx)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()


@pytest.mark.parametrize(
    ("cb_kwargs", "trainer_kwargs", "model", "match"),
    [
        ({}, {}, ManualDigits, "automatic optimization"),
        ({}, {"precision": "64-true"}, DigitsClassifier, "64-true"),
        ({}, {"precision": "bf16-true"}, DigitsClassifier, "cast the weights"),
        ({"precisions": "16-mixed"}, {}, DigitsClassifier, "not supported on this cpu"),
    ],
)
def test_what_cannot_be_done_is_refused_clearly_at_fit_start(
    tmp_path, cb_kwargs, trainer_kwargs, model, match
):
    trainer = make_trainer(tmp_path, [AdaptivePrecision(**cb_kwargs)], max_epochs=1, **trainer_kwargs)
    with pytest.raises(AdaptationUnsupportedError, match=match):
        trainer.fit(model(), datamodule=DigitsDataModule())
