"""AdaptiveBatchSize trials on real fits (digits, CPU): noise, budget, resume mid-probe, last epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from test_adaptive_batch_size import FAST, STEP_HEAVY, ScriptedValLoss, fit, moves
from test_adaptive_doubles import (  # noqa: F401
    CostedDigits,
    ResumableLoader,
    Spy,
    install_step_cost,
    one_thread,
)

from lightning_green import AdaptiveBatchSize, EnergyAwareEarlyStopping, EnergyMonitor, keys
from lightning_green.adaptations import ADAPTATIONS_FILENAME
from lightning_green.callbacks import _loggers

# One intra-op thread: CPU time (the energy estimate) stays meaningful on a shared 2-core box.
pytestmark = pytest.mark.usefixtures("one_thread")


def _saved_state(path, weights_only: bool = False) -> dict:
    """AdaptiveBatchSize's entry of the checkpoint at ``path``."""
    return torch.load(path, weights_only=weights_only)["callbacks"]["lightning_green.AdaptiveBatchSize"]


def _size_and_switch(saved: dict) -> tuple:
    """The size a saved state trains at, and its pending switch's size and reason."""
    return saved["current_batch_size"], saved["pending"]["to"], saved["pending"]["reason"]


def test_a_difference_within_the_measured_noise_is_never_adopted(tmp_path, monkeypatch):
    # The same joules per sample at every size, each step's cost scattered by up to x2 either way:
    # a window can look much cheaper at 64, but the paired visits never resolve it.
    cost = install_step_cost(monkeypatch, overhead_j=0.0, per_sample_j=0.001)
    rng, charge = np.random.default_rng(0), cost.charge
    cost.charge = lambda batch, dtype: charge(batch * float(np.exp(rng.uniform(-0.7, 0.7))), dtype)
    cb = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, **FAST)
    spy = Spy()
    fit(tmp_path, [spy, cb], epochs=12)
    assert "cheaper" not in [m[3] for m in moves(cb)]
    assert cb.chosen_setting() == 32 and spy.rows[-1]["batch_size"] == 32
    verdict = next(h for h in cb.history if h["from"] == h["to"])
    assert verdict["reason"] in ("unresolved", "costlier")
    assert (
        verdict["details"]["comparison"]["ratio_low"]
        < 1.0 - 0.1
        < verdict["details"]["comparison"]["ratio_high"]
    )


def test_a_run_too_short_to_pay_for_probing_does_not_probe_and_says_so_once(tmp_path, monkeypatch, recwarn):
    install_step_cost(monkeypatch, **STEP_HEAVY)
    cb = AdaptiveBatchSize(min_batch_size=16, max_batch_size=128, window_s=0.001)  # 5 % of 6 epochs
    spy = Spy()
    trainer, _, _ = fit(tmp_path, [spy, cb], epochs=6)
    assert [r["batch_size"] for r in spy.rows] == [32] * 6
    assert moves(cb) == [(0, 32, 32, "no_probe_budget")]  # recorded once, at the first epoch end
    details = cb.history[0]["details"]
    assert details["min_visits"] * details["visit_j"] > details["probe_allowance_j"] > 0
    said = [w for w in recwarn if "does not probe" in str(w.message)]
    assert len(said) == 1 and "probing budget" in str(said[0].message)
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    assert summary[keys.BATCH_SIZE_PROBE_SHARE] == 0.0 and summary["batch_size"] == 32


def test_probe_fraction_0_never_probes_and_says_so_once_without_advice(
    tmp_path, monkeypatch, recwarn, caplog, ns
):
    # probe_fraction=0 is "never probe" (README): no warning that the run is too short, no advice
    # that a longer run could afford probing, and a record naming the argument's choice.
    install_step_cost(monkeypatch, **STEP_HEAVY)
    cb = AdaptiveBatchSize(min_batch_size=16, max_batch_size=128, window_s=0.001, probe_fraction=0)
    spy = Spy()
    caplog.set_level("INFO")
    fit(tmp_path, [spy, cb], epochs=3, lightning=ns)
    assert [r["batch_size"] for r in spy.rows] == [32] * 3
    assert moves(cb) == [(0, 32, 32, "probing_off")]  # not no_probe_budget
    assert [str(w.message) for w in recwarn if "does not probe" in str(w.message)] == []
    assert caplog.text.count("AdaptiveBatchSize does not probe: probe_fraction=0 turns probing off") == 1
    assert "Longer runs" not in caplog.text and "probing budget" not in caplog.text


@pytest.mark.parametrize("at_validation_end", [False, True])
@pytest.mark.parametrize("resume_after", [1, 2, 3])
def test_resume_mid_probe_restores_the_batch_size_and_makes_the_same_decisions(
    tmp_path, monkeypatch, at_validation_end, resume_after
):
    # Lightning saves either after the epoch-end hooks (its default with per-epoch validation) or
    # at validation end, before them: then the resumed run makes the epoch-end decision, once.
    # Epoch 1 ends deciding the probe, epoch 2 trains at the candidate, epoch 3 back at 32.
    def checkpoint(name):
        return ModelCheckpoint(
            dirpath=str(tmp_path / name),
            every_n_epochs=1,
            save_top_k=-1,
            save_on_train_epoch_end=not at_validation_end,
        )

    install_step_cost(monkeypatch, **STEP_HEAVY)
    whole = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, **FAST)
    spy_whole = Spy()
    fit(tmp_path / "a", [spy_whole, whole, checkpoint("ckpt")], epochs=7, enable_checkpointing=True)
    assert [r["batch_size"] for r in spy_whole.rows] == [32, 32, 64, 32, 64, 32, 64]

    install_step_cost(monkeypatch, **STEP_HEAVY)
    resumed, spy = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, **FAST), Spy()
    step = 20 * (resume_after + 1)
    path = str(tmp_path / "ckpt" / f"epoch={resume_after}-step={step}.ckpt")
    saved = _saved_state(path)
    assert saved["current_batch_size"] == spy_whole.rows[resume_after]["batch_size"]
    ckpt_b = checkpoint("ckpt_b")
    fit(tmp_path / "b", [spy, resumed, ckpt_b], epochs=7, ckpt_path=path, enable_checkpointing=True)
    trained = [r for r in spy.rows if r["batch_size"] is not None]  # a resumed epoch end trains nothing
    expected = spy_whole.rows[resume_after + 1 :]
    assert [r["batch_size"] for r in trained] == [r["batch_size"] for r in expected]
    assert [r["lr"] for r in trained] == pytest.approx([r["lr"] for r in expected])  # scaled once, not twice
    assert moves(resumed) == moves(whole)  # the same decisions, none repeated
    assert resumed.current_batch_size == whole.current_batch_size == 64
    assert resumed.policy.probe_j == pytest.approx(whole.policy.probe_j)
    # The same figures behind the decision (up to the last bits of the restarted meter's sums).
    got, want = (cb.history[-1]["details"]["comparison"] for cb in (resumed, whole))
    assert (got["verdict"], got["pairs"]) == (want["verdict"], want["pairs"])
    assert got["ratio"] == pytest.approx(want["ratio"], rel=1e-9)
    assert got["window_j_per_sample"] == pytest.approx(want["window_j_per_sample"], rel=1e-9)


def _decisions(cb):
    pending = cb.pending
    last = None if pending is None else (pending.epoch, pending.step, pending.to, pending.reason)
    return [(h["epoch"], h["step"], h["from"], h["to"], h["reason"]) for h in cb.history], last


@pytest.mark.parametrize(
    ("window_s", "resume_at"),
    [
        # One-step windows: step 21's checkpoint holds the first gradients of the pair (20, 21);
        # step 40 is epoch 1's last batch, before the epoch's end decides the probe of 64.
        (0.001, (21, 40)),
        # Windows of 6 steps (20 // (probe_windows + 1)): step 23's checkpoint catches a window
        # open with a noise pair summed in it; step 60 is epoch 2's last batch, before it decides.
        (600.0, (23, 60)),
    ],
)
def test_a_resume_inside_an_epoch_or_at_its_last_batch_makes_the_uninterrupted_runs_decisions(
    tmp_path, monkeypatch, ns, window_s, resume_at
):
    # A loader Lightning restores mid-epoch (the same batches as the uninterrupted run) and a
    # checkpoint after every step: a run resumed from any of them makes the same decisions, at the
    # same epochs and steps, from the same gradient noise scale, and trains the same sizes and lrs.
    class Resumable(ns.DigitsDataModule):
        def train_dataloader(self):
            kwargs = dict(batch_size=self.batch_size, shuffle=False, epoch_batches=20)
            return ResumableLoader(self.train_set, **kwargs)

    args = dict(min_batch_size=32, max_batch_size=64, window_s=window_s, probe_windows=2, probe_fraction=0.9)
    every_step = ns.callbacks.ModelCheckpoint(
        dirpath=str(tmp_path / "ckpt"), save_top_k=-1, every_n_train_steps=1, filename="{step}"
    )
    install_step_cost(monkeypatch, **STEP_HEAVY)
    whole, spy_whole = AdaptiveBatchSize(**args), Spy()
    run = dict(dm=Resumable(batch_size=32), epochs=6, lightning=ns, limit_val_batches=2)
    fit(tmp_path / "a", [spy_whole, whole, every_step], enable_checkpointing=True, **run)
    assert len(whole.history) >= 2 and 64 in [r["batch_size"] for r in spy_whole.rows], _decisions(whole)
    trained = {r["epoch"]: (r["batch_size"], r["lr"]) for r in spy_whole.rows}

    for step in resume_at:
        path = tmp_path / "ckpt" / f"step={step}.ckpt"
        install_step_cost(monkeypatch, **STEP_HEAVY)
        resumed, spy = AdaptiveBatchSize(**args), Spy()
        run["dm"] = Resumable(batch_size=32)
        fit(tmp_path / f"r{step}", [spy, resumed], ckpt_path=str(path), **run)
        assert _decisions(resumed) == _decisions(whole), step
        assert resumed.b_noise == pytest.approx(whole.b_noise, rel=1e-9), step
        first = step // 20  # the epoch it goes on in; after an epoch's last batch, the next one
        assert {r["epoch"]: (r["batch_size"], r["lr"]) for r in spy.rows} == {
            e: trained[e] for e in range(first, 6)
        }, step
        saved = _saved_state(path, weights_only=True)
        assert saved["open_epoch"] == (step - 1) // 20  # caught before the epoch's end


def test_a_checkpoint_without_the_open_window_still_resumes(tmp_path, monkeypatch):
    # A checkpoint of an earlier release (no window, gradient pairs or caught epoch) resumes; the
    # window and the pair it caught restart, as they did. This one's pair waits in it as tensors
    # that torch.load(weights_only=True) loads.
    install_step_cost(monkeypatch, **STEP_HEAVY)
    at_21 = ModelCheckpoint(
        dirpath=str(tmp_path / "ckpt"), save_top_k=-1, every_n_train_steps=21, filename="{step}"
    )
    first = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, **FAST)
    fit(tmp_path / "a", [first, at_21], epochs=3, enable_checkpointing=True)
    checkpoint = torch.load(tmp_path / "ckpt" / "step=21.ckpt", weights_only=True)
    saved = checkpoint["callbacks"]["lightning_green.AdaptiveBatchSize"]
    assert saved["noise_pairs"]["first_step"] == 20 and all(
        isinstance(g, torch.Tensor) for g in saved["noise_pairs"]["first"]
    )
    for key in ("window", "window_precision", "noise_pairs", "open_epoch"):
        del saved[key]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    install_step_cost(monkeypatch, **STEP_HEAVY)
    resumed = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, **FAST)
    trainer = fit(tmp_path / "b", [resumed], epochs=3, ckpt_path=str(tmp_path / "old.ckpt"))[0]
    assert trainer.current_epoch == 3 and resumed.policy is not None


def test_a_resume_with_a_range_that_excludes_the_size_trained_at_is_refused_and_a_trial_of_one_dropped(
    tmp_path, monkeypatch, recwarn, ns
):
    """The run trains at 64 (a probe) when the checkpoint is saved; resumed with max_batch_size=32
    (say, a smaller GPU) it would go on at 64 unannounced: refused at fit start, naming both. A
    checkpoint where the trial of 64 is only decided (its switch pending) resumes at 32, the trial
    and its switch dropped with one warning; one where 64 is adopted (its switch pending) is refused."""
    from lightning_green.callbacks import AdaptationUnsupportedError

    install_step_cost(monkeypatch, **STEP_HEAVY)
    first = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, **FAST)
    saver = ns.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1)
    spy = Spy()
    fit(tmp_path / "a", [spy, first, saver], epochs=6, enable_checkpointing=True, lightning=ns)
    assert [r["batch_size"] for r in spy.rows] == [32, 32, 64, 32, 64, 32]
    path = str(tmp_path / "ckpt" / "epoch=2-step=60.ckpt")
    saved = _saved_state(path)
    assert saved["current_batch_size"] == 64

    def narrower():
        return AdaptiveBatchSize(min_batch_size=16, max_batch_size=32, **FAST)

    with pytest.raises(
        AdaptationUnsupportedError, match=r"trains at batch_size=64.*outside this range \[16, 32\]"
    ):
        fit(tmp_path / "b", [Spy(), narrower()], epochs=6, ckpt_path=path, lightning=ns)
    # Saved at the end of epoch 5, which decided to adopt 64: a switch pending, not yet made.
    adopted = str(tmp_path / "ckpt" / "epoch=5-step=120.ckpt")
    saved = _saved_state(adopted)
    assert _size_and_switch(saved) == (32, 64, "cheaper")
    with pytest.raises(AdaptationUnsupportedError, match=r"switches at its next epoch to batch_size=64"):
        fit(tmp_path / "b2", [Spy(), narrower()], epochs=6, ckpt_path=adopted, lightning=ns)
    # Saved at the end of epoch 1, which decided the probe of 64: the trial starts with its switch.
    decided = str(tmp_path / "ckpt" / "epoch=1-step=40.ckpt")
    saved = _saved_state(decided)
    assert _size_and_switch(saved) == (32, 64, "probe")
    recwarn.clear()
    resumed, spy_b = narrower(), Spy()
    fit(tmp_path / "b3", [spy_b, resumed], epochs=4, ckpt_path=decided, lightning=ns)
    assert {r["batch_size"] for r in spy_b.rows if r["batch_size"] is not None} <= {16, 32}
    assert 64 not in [h["to"] for h in resumed.history[len(saved["history"]) :]]
    said = [str(w.message) for w in recwarn if "trial of batch_size=64" in str(w.message)]
    assert len(said) == 1 and "[16, 32]" in said[0] and "the switch to it" in said[0], said
    wider = AdaptiveBatchSize(min_batch_size=16, max_batch_size=128, **FAST)  # contains 64: trains on
    fit(tmp_path / "c", [Spy(), wider], epochs=4, ckpt_path=path, lightning=ns)
    assert wider.current_batch_size in (32, 64)


def test_a_trial_of_a_size_outside_the_resumed_range_caught_between_its_epochs_is_dropped(
    tmp_path, monkeypatch, recwarn, ns
):
    # Saved at validation end (before the epoch-end decision) of epoch 3, a reference epoch at 32
    # inside the trial of 64 (epoch 2 trained at 64): resumed with max_batch_size=32, the trial is
    # dropped with one warning, never a 64 again, and the run goes on adapting within [16, 32].
    install_step_cost(monkeypatch, **STEP_HEAVY)
    first = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, **FAST)
    saver = ns.callbacks.ModelCheckpoint(
        dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=False
    )
    spy = Spy()
    fit(tmp_path / "a", [spy, first, saver], epochs=4, enable_checkpointing=True, lightning=ns)
    assert [r["batch_size"] for r in spy.rows] == [32, 32, 64, 32]
    path = str(tmp_path / "ckpt" / "epoch=3-step=80.ckpt")
    saved = _saved_state(path)
    assert (saved["current_batch_size"], saved["pending"]) == (32, None)
    assert (saved["policy"]["trial"]["reference"], saved["policy"]["trial"]["candidate"]) == (32, 64)

    recwarn.clear()
    resumed, spy_b = AdaptiveBatchSize(min_batch_size=16, max_batch_size=32, **FAST), Spy()
    fit(tmp_path / "b", [spy_b, resumed], epochs=8, ckpt_path=path, lightning=ns)
    assert {r["batch_size"] for r in spy_b.rows if r["batch_size"] is not None} <= {16, 32}
    assert resumed.policy.candidates == [16, 32] and 64 not in resumed.policy.tried
    assert 64 not in [h["to"] for h in resumed.history[len(saved["history"]) :]]
    said = [str(w.message) for w in recwarn if "trial of batch_size=64" in str(w.message)]
    assert len(said) == 1 and "[16, 32]" in said[0] and "goes on at batch_size=32" in said[0], said


def test_a_resume_with_another_lr_scaling_rescales_the_restored_rates_and_reports_it(
    tmp_path, monkeypatch, recwarn, ns
):
    # Saved at validation end of epoch 2, trained at 64 with lr_scaling="sqrt" (lr x1.41): resumed
    # with "linear", the restored rates become the user's scaled linearly (x2 at 64), from the
    # resume on; the summary names the rule in force and one warning names both.
    install_step_cost(monkeypatch, **STEP_HEAVY)
    first = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, lr_scaling="sqrt", **FAST)
    saver = ns.callbacks.ModelCheckpoint(
        dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=False
    )
    spy = Spy()
    fit(tmp_path / "a", [spy, first, saver], epochs=3, enable_checkpointing=True, lightning=ns)
    lr0 = spy.rows[0]["lr"]
    assert [r["batch_size"] for r in spy.rows] == [32, 32, 64]
    assert [r["lr"] for r in spy.rows] == pytest.approx([lr0, lr0, lr0 * 2**0.5])
    path = str(tmp_path / "ckpt" / "epoch=2-step=60.ckpt")
    saved = _saved_state(path)
    assert (saved["current_batch_size"], saved["lr_rule"]) == (64, "sqrt")

    recwarn.clear()
    resumed, spy_b = (
        AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, lr_scaling="linear", **FAST),
        Spy(),
    )
    trainer, _, _ = fit(tmp_path / "b", [resumed, spy_b], epochs=5, ckpt_path=path, lightning=ns)
    assert spy_b.rows[0]["batch_size"] is None  # epoch 2's end, made by the resumed run: still at 64
    sizes = [64] + [r["batch_size"] for r in spy_b.rows[1:]]
    assert 32 in sizes
    assert [r["lr"] for r in spy_b.rows] == pytest.approx([lr0 * size / 32 for size in sizes])
    assert resumed.lr_rule == "linear"
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    assert summary["lr_scaling"] == "linear"
    said = [str(w.message) for w in recwarn if "lr_scaling" in str(w.message)]
    assert len(said) == 1 and "'sqrt'" in said[0] and "'linear'" in said[0] and "x1.41" in said[0], said


@pytest.mark.parametrize("ended_by", ["stopper", "max_epochs"])
def test_a_switch_decided_at_the_last_epoch_end_never_trains_and_is_not_reported(
    tmp_path, monkeypatch, sqlite_uri, ended_by
):
    # Epoch 1 ends deciding the probe of 64, epoch 2 trains at 64 and ends deciding the way back
    # to 32, where the run ends - by EnergyAwareEarlyStopping (Lightning runs its epoch-end hook
    # after this callback's) or by max_epochs. 64 -> 32 must not be reported or paid for in the lr.
    install_step_cost(monkeypatch, **STEP_HEAVY)
    logger = MLFlowLogger(
        experiment_name="last", tracking_uri=sqlite_uri, artifact_location=str(tmp_path / "artifacts")
    )
    cb = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, lr_scaling="linear", **FAST)
    spy = Spy()
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0)
    callbacks, model, epochs = [spy, cb, ckpt], CostedDigits(), 3
    if ended_by == "stopper":
        stopper = EnergyAwareEarlyStopping(monitor="val_loss", stopping_threshold=1.0)
        callbacks, model, epochs = [*callbacks, stopper], ScriptedValLoss([2.0, 2.0, 0.5]), 6
    trainer, _, dm = fit(
        tmp_path, callbacks, model=model, epochs=epochs, logger=logger, enable_checkpointing=True
    )
    if ended_by == "stopper":
        assert stopper.stopped_epoch == 2
    lr0 = model.lr
    assert [r["batch_size"] for r in spy.rows] == [32, 32, 64]  # what trained
    assert moves(cb) == [(1, 32, 64, "probe")]  # no 64 -> 32 that never trained
    assert cb.pending is not None and (cb.pending.to, cb.pending.reason) == (32, "interleave")
    assert cb.current_batch_size == dm.batch_size == 64
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(2 * lr0)  # scaled for 64 only
    summary = EnergyMonitor.for_trainer(trainer).last_summary
    # The run ended probing 64: chosen is still the user's 32; the last epoch trained at 64.
    assert (summary["batch_size"], summary["batch_size_last"]) == (32, 64)
    assert summary["batch_size_switches"] == "e1 s40 32->64 probe"
    written = json.loads((_loggers.output_dir(trainer) / ADAPTATIONS_FILENAME).read_text())
    assert (written["batch_size"]["batch_size"], written["batch_size"]["batch_size_last"]) == (32, 64)
    assert [(h["from"], h["to"]) for h in written["batch_size"]["batch_size_adaptations"]] == [(32, 64)]
    tags = logger.experiment.get_run(logger.run_id).data.tags
    assert tags["lightning_green.batch_size"] == "32"
    assert tags["lightning_green.batch_size_switches"] == "e1 s40 32->64 probe"
    # The decision is not lost: resumed, the run trains at 32 from its start, with the lr scaled
    # back once - as a run that had not stopped would have - and goes on with the trial.
    resumed, spy_b = (
        AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, lr_scaling="linear", **FAST),
        Spy(),
    )
    fit(tmp_path / "b", [spy_b, resumed], epochs=5, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    trained = [r for r in spy_b.rows if r["batch_size"] is not None]  # a resumed epoch end trains nothing
    assert [r["batch_size"] for r in trained] == [32, 64]
    assert trained[0]["lr"] == pytest.approx(lr0)
    assert moves(resumed)[:3] == [(1, 32, 64, "probe"), (2, 64, 32, "interleave"), (3, 32, 64, "probe")]


def test_a_large_models_kept_gradient_is_left_out_of_the_checkpoint():
    """A checkpoint holds a kept gradient only up to ``MAX_SAVED_GRADIENT_ELEMENTS``: a large model
    loses that one pair on resume rather than saving a copy of its gradients."""
    from lightning_green.training.gradient_pairs import GradientPairs

    w = torch.nn.Parameter(torch.zeros(10))
    optimizer = torch.optim.SGD([w], lr=0.1)
    pairs = GradientPairs(every=4)
    w.grad = torch.ones(10)
    pairs.offer(4, optimizer)
    kept = pairs.so_far()
    assert kept.first_step == 4 and torch.equal(kept.first[0], torch.ones(10))
    left_out = pairs.so_far(max_saved_elements=9)
    assert left_out.first is None and left_out.first_step == -1
    resumed = GradientPairs(every=4)
    resumed.restore(left_out)
    w.grad = torch.zeros(10)
    resumed.offer(5, optimizer)  # no kept gradient to pair with: nothing counted
    assert resumed.count == 0
