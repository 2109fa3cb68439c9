"""Batch-size policy: candidates, the energy-to-target model, interleaved trials, budget, OOM, state."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_green.policy.batch_size import (
    USE_ESTIMATE,
    BatchSizePolicy,
    BatchSizeReason,
    candidate_batch_sizes,
    choose_batch_size,
    relative_samples_to_target,
    scale_learning_rate,
)

ROOT = Path(__file__).resolve().parents[1]
ZEUS = ROOT / "benchmarks" / "data" / "zeus_traces"

# Joules per sample falling with the batch size, flattening out (device saturates).
J_PER_SAMPLE = {16: 2.0, 32: 1.2, 64: 0.8, 128: 0.62, 256: 0.55, 512: 0.52}


def _feed(policy: BatchSizePolicy, batch_size: int, windows: int = 1, first_factor: float = 1.0) -> None:
    for i in range(windows):
        j = J_PER_SAMPLE[batch_size] * (first_factor if i == 0 else 1.0)
        policy.record_probe(batch_size, energy_j=j * batch_size * 10, samples=batch_size * 10, duration_s=1.0)


def simulate(policy, j_of, epochs, horizon, b_noise=1e6, windows=4, start=0, run_j=0.0, log=None):
    """Train ``epochs`` epochs of ``windows`` windows at the policy's size; decide at each end.

    ``j_of(size, epoch, window)`` gives the joules per sample of a window. Returns the decisions
    as ``(epoch, batch_size, reason)`` (None decisions left out) and the run energy.
    """
    out = [] if log is None else log
    for epoch in range(start, start + epochs):
        size = policy.current_batch_size
        for w in range(windows):
            energy = j_of(size, epoch, w) * size * 10
            policy.record_probe(size, energy_j=energy, samples=size * 10, duration_s=1.0)
            run_j += energy
        d = policy.decide(
            run_energy_j=run_j, epochs_done=epoch + 1, fraction_done=(epoch + 1) / horizon, b_noise=b_noise
        )
        if d is not None:
            out.append((epoch, d.batch_size, d.reason.value, d))
    return out, run_j


def eager_policy(*args, **kwargs) -> BatchSizePolicy:
    """A policy whose trials may start at the first epoch end: a 90 % probing budget.

    With the default 5 %, paid as it goes, a trial waits until the run has spent 19 times what
    it costs (38 epochs for two candidate epochs); what a trial decides does not depend on when
    it starts. The tests of the budget and of that wait use the defaults.
    """
    return BatchSizePolicy(*args, **{"probe_fraction": 0.9, **kwargs})


def noisy(spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda size, epoch, w: J_PER_SAMPLE[size] * float(np.exp(rng.normal(0.0, spread)))


# ----------------------------------------------------------------------------- pure functions


def test_scale_learning_rate_rules():
    assert scale_learning_rate(0.1, 64, 256, "linear") == pytest.approx(0.4)
    assert scale_learning_rate(0.1, 256, 64, "linear") == pytest.approx(0.025)
    assert scale_learning_rate(0.1, 64, 256, "sqrt") == pytest.approx(0.2)
    assert scale_learning_rate(0.1, 64, 256, "none") == 0.1
    with pytest.raises(ValueError, match=r"rule must be one of \['linear', 'sqrt', 'none'\], got 'cubic'"):
        scale_learning_rate(0.1, 64, 256, "cubic")
    with pytest.raises(ValueError, match="new_batch_size must be an integer >= 1, got 0"):
        scale_learning_rate(0.1, 64, 0)
    with pytest.raises(ValueError, match=r"lr must be a positive number, got -0\.1"):
        scale_learning_rate(-0.1, 64, 128)


def test_candidates_are_current_times_powers_of_two_within_bounds():
    assert candidate_batch_sizes(64, 16, 1024) == [16, 32, 64, 128, 256, 512]
    assert candidate_batch_sizes(64, 1, 100000, max_factor=2) == [32, 64, 128]
    assert candidate_batch_sizes(96, 1, 1000) == [12, 24, 48, 96, 192, 384, 768]
    assert candidate_batch_sizes(6, 1, 24) == [3, 6, 12, 24]  # 6/4 is not a batch size
    assert candidate_batch_sizes(64, 16, 1024, oom_batch_size=256) == [16, 32, 64, 128]
    assert candidate_batch_sizes(64, 64, 64) == [64]
    with pytest.raises(ValueError, match="min_batch_size must be <= current=64, got 128"):
        candidate_batch_sizes(64, 128, 256)
    with pytest.raises(ValueError, match=r"max_factor must be a power of two .*, got 6"):
        candidate_batch_sizes(64, 1, 256, max_factor=6)


def test_samples_to_target_model():
    assert relative_samples_to_target(100, 100.0) == pytest.approx(2.0)
    assert relative_samples_to_target(10, 1000.0) == pytest.approx(1.01)
    assert relative_samples_to_target(100, math.inf) == 1.0
    assert relative_samples_to_target(100, 0.0) == math.inf
    with pytest.raises(ValueError, match="b_noise must be None or a number >= 0"):
        relative_samples_to_target(100, -1.0)


def test_small_noise_scale_keeps_batches_small_even_though_j_per_sample_falls():
    # j·(1 + B/B_noise) at B_noise = 40: 16 -> 2.80, 32 -> 2.16, 64 -> 2.08, 128 -> 2.60, ...
    best, rel = choose_batch_size(J_PER_SAMPLE, b_noise=40.0)
    assert best == 64
    assert min(J_PER_SAMPLE, key=J_PER_SAMPLE.get) == 512  # what a min-J/sample tuner picks
    assert rel[512] > 3 * rel[64]
    # Large noise scale: samples barely grow with B, J/sample dominates -> the largest.
    assert choose_batch_size(J_PER_SAMPLE, b_noise=1e6)[0] == 512
    assert choose_batch_size(J_PER_SAMPLE, b_noise=math.inf)[0] == 512
    # No noise at all: minimise joules per step -> the smallest batch.
    assert choose_batch_size(J_PER_SAMPLE, b_noise=0.0)[0] == 16


def test_global_batch_factor_counts_all_ranks():
    # 8 ranks: per-device 64 is a global 512, far above B_noise = 400.
    single = choose_batch_size(J_PER_SAMPLE, b_noise=400.0)[0]
    ddp = choose_batch_size(J_PER_SAMPLE, b_noise=400.0, global_batch_factor=8)[0]
    assert single > ddp


def test_choose_rejects_bad_inputs():
    with pytest.raises(ValueError, match="j_per_sample must map at least one batch size"):
        choose_batch_size({}, 10.0)
    with pytest.raises(ValueError, match=r"j_per_sample\[64\] must be a positive number of joules, got nan"):
        choose_batch_size({64: float("nan")}, 10.0)
    with pytest.raises(ValueError, match=r"switch_margin must be a number in \[0, 1\), got 1.5"):
        choose_batch_size({64: 1.0}, 10.0, switch_margin=1.5)


# ----------------------------------------------------------------------------- the policy


def test_a_resolved_saving_is_adopted_after_interleaved_epochs_with_its_figures():
    policy = eager_policy(32, 32, 64, noise_min_updates=1)
    log, _ = simulate(policy, noisy(0.02), epochs=6, horizon=100)
    # R C R C R by epoch: two candidate visits give two pairs, the least an interval needs.
    assert [(e, b, r) for e, b, r, _ in log] == [
        (0, 64, "probe"),
        (1, 32, "interleave"),
        (2, 64, "probe"),
        (3, 32, "interleave"),
        (4, 64, "cheaper"),
    ]
    assert log[2][3].details["comparison"]["verdict"] == "insufficient"  # one pair: no bound yet
    figures = log[-1][3].details["comparison"]
    assert figures["verdict"] == "cheaper" and figures["pairs"] == 2
    assert figures["ratio"] == pytest.approx(0.8 / 1.2, rel=0.05)
    assert figures["ratio_high"] < 0.9 and figures["energy_to_target_high"] < 0.9
    # Per visit (3 reference, 2 candidate) and per window (the first of each visit dropped).
    assert len(figures["reference_j_per_sample"]) == 3 and len(figures["candidate_j_per_sample"]) == 2
    assert figures["window_roles"].count("candidate") == 6 and len(figures["window_j_per_sample"]) == 15
    assert policy.current_batch_size == policy.adopted_batch_size == 64 and policy.tried == {
        64: "cheaper",
        32: "left",
    }


@pytest.mark.parametrize("seed", range(4))
def test_a_difference_within_the_noise_is_unresolved_and_the_size_stays(seed):
    # 64 is 3 % cheaper per sample (less than the 10 % margin) and windows scatter by +-30 %.
    j_of = noisy(0.3, seed)
    policy = eager_policy(32, 32, 64, noise_min_updates=1)
    log, _ = simulate(
        policy, lambda b, e, w: j_of(32, e, w) * (0.97 if b == 64 else 1.0), epochs=12, horizon=200
    )
    reasons = [r for _, _, r, _ in log]
    assert reasons == ["probe", "interleave", "probe", "interleave", "probe", "interleave", "unresolved"]
    assert log[-1][3].details["visits"] == 3  # max_visits
    assert policy.current_batch_size == 32 and policy.tried == {64: "unresolved"}
    assert log[-1][3].details["comparison"]["verdict"] == "unresolved"


def test_cheaper_per_sample_is_not_adopted_when_the_extra_samples_cost_more():
    policy = eager_policy(32, 32, 64, noise_min_updates=1)
    log, _ = simulate(policy, noisy(0.02), epochs=6, horizon=100, b_noise=20.0)
    assert log[-1][2] == "more_samples" and policy.current_batch_size == 32
    assert log[-1][3].details["comparison"]["verdict"] == "cheaper"  # per sample it was
    assert log[-1][3].details["comparison"]["samples_factor"] == pytest.approx((20 + 64) / (20 + 32))


def test_a_costlier_candidate_is_dropped_and_the_next_one_tried():
    policy = eager_policy(64, 32, 128, noise_min_updates=1)
    log, _ = simulate(policy, noisy(0.02), epochs=12, horizon=400)
    steps = [(b, r) for _, b, r, _ in log]
    # 128 first (nearest, larger first): cheaper per sample -> adopted; then 256 is out of range,
    # 64 was left, 32 is costlier per sample.
    visits = [(128, "probe"), (64, "interleave")] * 2
    assert steps[:5] == [*visits, (128, "cheaper")]
    assert steps[5:] == [
        (32, "probe"),
        (128, "interleave"),
        (32, "probe"),
        (128, "interleave"),
        (128, "costlier"),
    ]
    assert policy.tried == {128: "cheaper", 64: "left", 32: "costlier"}


def test_unknown_noise_scale_waits_without_probing():
    policy = BatchSizePolicy(64, 32, 128)
    log, _ = simulate(policy, noisy(0.02), epochs=5, horizon=100, b_noise=None)
    assert log == [] and policy.current_batch_size == 64 and policy.probe_j == 0


@pytest.mark.parametrize(("horizon", "probes"), [(30, False), (39, False), (40, True), (200, True)])
def test_a_run_too_short_for_two_candidate_epochs_does_not_probe_and_says_so_once(horizon, probes):
    """Paid as it goes: two candidate epochs at 5 % need 38 epochs spent before them: a plan
    under 40 epochs says so at once."""
    policy = BatchSizePolicy(32, 32, 64, noise_min_updates=1)
    run_j, shares, log = 0.0, [], []
    for epoch in range(min(horizon, 45)):
        _, run_j = simulate(policy, noisy(0.0), epochs=1, horizon=horizon, start=epoch, run_j=run_j, log=log)
        shares.append(policy.probe_j / run_j)
    if probes:
        assert [(e, r) for e, _, r, _ in log][:2] == [(37, "probe"), (38, "interleave")]
        assert max(shares) <= 0.05 * (1 + 1e-9)  # at every epoch end, not only at the planned one
    else:
        assert [(e, r) for e, _, r, _ in log] == [(0, "no_probe_budget")]  # once, at the first epoch end
        details = log[0][3].details
        assert details["min_visits"] * details["visit_j"] > details["probe_allowance_j"]
        assert details["paid_after_epochs"] + details["min_visits"] > details["planned_epochs"]
        assert policy.probe_j == 0 and not policy.active


def test_a_run_continued_to_a_longer_plan_probes_as_if_planned_so_from_the_start():
    """fit(max_epochs=5) cannot pay for probing (said once); the same run continued to 60 epochs
    can: it probes where a 60-epoch plan does, the no-budget note does not stick."""
    records = {}
    for name, plans in (("continued", [5] * 5 + [60] * 40), ("planned", [60] * 45)):
        policy = BatchSizePolicy(32, 32, 64, noise_min_updates=1)
        run_j, log = 0.0, []
        for epoch, horizon in enumerate(plans):
            _, run_j = simulate(
                policy, noisy(0.0), epochs=1, horizon=horizon, start=epoch, run_j=run_j, log=log
            )
            if name == "continued" and epoch < 5:
                assert not policy.active and policy.waiting_for_longer_plan  # nothing measured meanwhile
        records[name] = [(e, r) for e, _, r, _ in log]
    assert records["continued"][0] == (0, "no_probe_budget")
    assert records["continued"][1:] == records["planned"] and records["planned"][0] == (37, "probe")


@pytest.mark.parametrize("seed", range(5))
def test_probing_energy_stays_within_five_percent_of_the_run(seed):
    # Noisy windows, many candidates, smaller ones more expensive: probing stops at the budget.
    policy = BatchSizePolicy(64, 16, 512, noise_min_updates=1)
    horizon = 60
    _, run_j = simulate(policy, noisy(0.2, seed), epochs=horizon, horizon=horizon)
    assert 0 < policy.probe_j <= 0.05 * run_j


def test_out_of_memory_rules_out_the_candidate_and_everything_larger():
    policy = eager_policy(64, 32, 256, noise_min_updates=1)
    log, _ = simulate(policy, noisy(0.02), epochs=1, horizon=200)
    assert log[-1][1:3] == (128, "probe")
    policy.record_oom(128)
    d = policy.decide(run_energy_j=100.0, epochs_done=2, fraction_done=0.01, b_noise=1e6)
    assert (d.batch_size, d.reason) == (64, BatchSizeReason.OUT_OF_MEMORY) and d.changed
    assert policy.candidates == [32, 64] and policy.tried[128] == "out_of_memory"


def test_everything_out_of_memory_is_reported_not_raised():
    policy = BatchSizePolicy(64, 64, 128)
    policy.record_oom(64)
    d = policy.decide(run_energy_j=10.0, epochs_done=1, fraction_done=0.1, b_noise=100.0)
    assert (
        d.reason is BatchSizeReason.OUT_OF_MEMORY
        and "every candidate ran out of memory" in d.details["error"]
    )


@pytest.mark.parametrize("cut", [1, 2, 3, 5])
def test_state_round_trip_mid_trial_gives_identical_decisions(cut):
    j_of = noisy(0.3, seed=1)
    values = {(b, e, w): j_of(b, e, w) for b in J_PER_SAMPLE for e in range(12) for w in range(4)}
    replay = lambda b, e, w: values[(b, e, w)]  # noqa: E731 - the same windows for both runs
    whole = eager_policy(32, 16, 128, noise_min_updates=1)
    expected, _ = simulate(whole, replay, epochs=12, horizon=100)
    first = eager_policy(32, 16, 128, noise_min_updates=1)
    got, run_j = simulate(first, replay, epochs=cut, horizon=100)
    resumed = eager_policy(32, 16, 128, noise_min_updates=1)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    simulate(resumed, replay, epochs=12 - cut, horizon=100, start=cut, run_j=run_j, log=got)
    assert [(e, b, r) for e, b, r, _ in got] == [(e, b, r) for e, b, r, _ in expected]
    assert resumed.probe_j == pytest.approx(whole.probe_j) and len(expected) >= 3


def test_decide_uses_its_own_noise_scale_estimate_which_survives_a_resume():
    policy = eager_policy(64, 32, 128, noise_min_updates=1)
    log, run_j = simulate(policy, noisy(0.0), epochs=2, horizon=100, b_noise=USE_ESTIMATE)
    assert log == []  # no gradients yet
    # |G|² = 1, tr(Σ) = 1e5: B_noise = 1e5.
    policy.noise_scale.update(1 + 1e5 / 8, 1 + 1e5 / 32, 8, 32)
    resumed = eager_policy(64, 32, 128, noise_min_updates=1)
    resumed.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert resumed.noise_scale.b_noise == pytest.approx(1e5)
    log, _ = simulate(resumed, noisy(0.0), epochs=1, horizon=100, b_noise=USE_ESTIMATE, start=2, run_j=run_j)
    assert log[0][2] == "probe" and log[0][3].details["b_noise"] == pytest.approx(1e5)


def test_policy_rejects_bad_arguments():
    with pytest.raises(ValueError, match="initial_batch_size must be an integer >= 1, got 0"):
        BatchSizePolicy(0, 1, 8)
    with pytest.raises(ValueError, match="max_batch_size must be >= current=64, got 32"):
        BatchSizePolicy(64, 16, 32)
    with pytest.raises(ValueError, match="history_windows must be >= min_windows=3, got 2"):
        BatchSizePolicy(64, 16, 128, history_windows=2)
    policy = eager_policy(64, 16, 128)
    with pytest.raises(ValueError, match="energy_j must be a finite number of joules >= 0, got -5"):
        policy.record_probe(64, -5, 64, 1.0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1, got 0"):
        policy.record_probe(64, 5.0, 0, 1.0)
    with pytest.raises(ValueError, match=r"b_noise must be None or a number >= 0 \(inf allowed\), got nan"):
        policy.decide(run_energy_j=1.0, epochs_done=1, fraction_done=0.1, b_noise=float("nan"))
    with pytest.raises(ValueError, match="max_visits must be an integer >= 2, got 1"):
        BatchSizePolicy(64, 16, 128, max_visits=1)
    with pytest.raises(ValueError, match=r"fraction must be a number in \[0.0, 1.0\), got 1.5"):
        BatchSizePolicy(64, 16, 128, probe_fraction=1.5)


# ----------------------------------------------------------------------------- recorded data


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "zeus_bench", ROOT / "benchmarks" / "zeus_batch_size_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_model_beats_naive_choices_on_zeus_traces():
    bench = _load_benchmark()
    results, _ = bench.evaluate(ZEUS, "max", "default")
    stats = bench.summary_stats(results)
    assert len(results) >= 20
    # The model's choice costs far less energy to target than min-J/sample or the default size.
    assert stats["model"]["geo_mean"] < 0.5 * stats["min-J/sample"]["geo_mean"]
    assert stats["policy"]["geo_mean"] < 0.5 * stats["default"]["geo_mean"]
    assert stats["policy"]["within_25"] > stats["default"]["within_25"]
    # A workload with a known answer: librispeech/deepspeech2 to WER 40 on a V100.
    row = next(r for r in results if r["wl"][0] == "librispeech" and r["gpu"] == "v100")
    assert row["oracle"] == row["picks"]["model"] == 48
    assert row["picks"]["default"] == 192 and row["regret"]["default"] > 0.2


def test_a_trial_of_a_size_outside_the_loaded_range_is_dropped():
    # A trial of 64 against 32, between its epochs; loaded into a policy of [16, 32] (a run resumed
    # with max_batch_size=32): the trial is dropped and named, and 64 is never decided again.
    first = eager_policy(32, 32, 64, noise_min_updates=1)
    log, run_j = simulate(first, noisy(0.0), epochs=2, horizon=100)
    assert [(e, b, r) for e, b, r, _ in log] == [(0, 64, "probe"), (1, 32, "interleave")]
    assert first.in_trial and first.current_batch_size == 32
    for decided in (False, True):  # the trial between its epochs, or its switch to 64 just decided
        state = json.loads(json.dumps(first.state_dict()))
        if decided:
            state["current"] = 64
        narrower = eager_policy(32, 16, 32, noise_min_updates=1)
        narrower.load_state_dict(state)
        assert (narrower.dropped_trial, narrower.in_trial, narrower.current_batch_size) == (64, False, 32)
        later, _ = simulate(narrower, noisy(0.0), epochs=6, horizon=100, start=2, run_j=run_j)
        assert 64 not in [b for _, b, _, _ in later] and later[0][1:3] == (16, "probe")
    same = eager_policy(32, 32, 64, noise_min_updates=1)
    same.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert (same.dropped_trial, same.in_trial) == (None, True)
