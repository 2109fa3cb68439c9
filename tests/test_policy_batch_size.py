"""Batch-size policy: candidates, the energy-to-target model, probing, OOM, hysteresis, state."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from lightning_green.policy.batch_size import (
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


def _run(policy: BatchSizePolicy, b_noise_seq, windows_per_decision: int = 1) -> list:
    decisions = []
    for b_noise in b_noise_seq:
        _feed(policy, policy.current_batch_size, windows_per_decision)
        decisions.append(policy.decide(b_noise))
    return decisions


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


def test_probes_every_candidate_then_settles_on_energy_optimum():
    policy = BatchSizePolicy(64, 16, 512, min_windows=3, warmup_windows=1)
    decisions = _run(policy, [40.0] * 40)
    probed = [d.batch_size for d in decisions if d.reason is BatchSizeReason.PROBE]
    assert probed[0] == 64 and set(probed) == set(J_PER_SAMPLE)
    assert policy.measured() == pytest.approx(J_PER_SAMPLE)
    assert decisions[-1].batch_size == 64 and decisions[-1].reason is BatchSizeReason.KEEP
    # With a large noise scale the same measurements lead to the largest size.
    grown = policy.decide(1e5)
    assert grown.batch_size == 512 and grown.reason is BatchSizeReason.CHEAPER
    assert grown.details["energy_vs_current"][512] < 0.9


def test_warmup_window_of_each_visit_is_discarded():
    policy = BatchSizePolicy(64, 64, 128, min_windows=1, warmup_windows=1)
    # First window of each visit 10x more expensive (allocator, autotuning).
    _feed(policy, 64, windows=1, first_factor=10.0)
    assert policy.j_per_sample(64) is None  # only the warm-up so far
    _feed(policy, 64, windows=1)
    _feed(policy, 128, windows=2, first_factor=10.0)
    _feed(policy, 64, windows=1, first_factor=10.0)  # a new visit warms up again
    assert policy.j_per_sample(64) == pytest.approx(J_PER_SAMPLE[64])
    assert policy.j_per_sample(128) == pytest.approx(J_PER_SAMPLE[128])
    no_warmup = BatchSizePolicy(64, 64, 128, min_windows=1, warmup_windows=0)
    _feed(no_warmup, 64, windows=2, first_factor=10.0)
    assert no_warmup.j_per_sample(64) > 2 * J_PER_SAMPLE[64]


def test_median_resists_an_outlier_window():
    policy = BatchSizePolicy(64, 64, 64, min_windows=3, warmup_windows=0)
    for j in (0.8, 8.0, 0.81, 0.79, 0.8):
        policy.record_probe(64, energy_j=j * 640, samples=640, duration_s=1.0)
    assert policy.j_per_sample(64) == pytest.approx(0.8)


def test_out_of_memory_rules_out_size_and_everything_larger_for_good():
    policy = BatchSizePolicy(64, 16, 512, min_windows=2, warmup_windows=0)
    seen = []
    for _ in range(60):
        b = policy.current_batch_size
        if b >= 256:
            policy.record_probe(b, 0.0, 0, 0.0, oom=True)
        else:
            _feed(policy, b)
        d = policy.decide(1e6)
        seen.append(d.batch_size)
    first_oom = seen.index(256) if 256 in seen else None
    assert first_oom is not None  # it was tried once ...
    assert all(b < 256 for b in seen[first_oom + 1 :])  # ... and never again, nor 512
    assert 512 not in seen
    assert policy.oom_batch_size == 256 and policy.candidates == [16, 32, 64, 128]
    assert seen[-1] == 128  # the largest that fits wins at a huge noise scale


def test_out_of_memory_of_the_adopted_size_backs_off():
    policy = BatchSizePolicy(64, 32, 128, min_windows=1, warmup_windows=0)
    _run(policy, [1e6] * 6)
    assert policy.current_batch_size == 128
    policy.record_probe(128, 0.0, 0, 0.0, oom=True)
    d = policy.decide(1e6)
    assert d.reason is BatchSizeReason.OUT_OF_MEMORY and d.batch_size == 64 and d.changed


def test_everything_out_of_memory_is_reported_not_raised():
    policy = BatchSizePolicy(64, 64, 128)
    policy.record_probe(64, 0.0, 0, 0.0, oom=True)
    d = policy.decide(100.0)
    assert (
        d.reason is BatchSizeReason.OUT_OF_MEMORY
        and "every candidate ran out of memory" in d.details["error"]
    )


def test_hysteresis_avoids_flapping_on_a_noisy_noise_scale():
    # Break-even between 64 and 128 at B_noise ≈ 134 for these J/sample (0.8 vs 0.62).
    j = {64: 0.8, 128: 0.62}
    break_even = (0.62 * 128 - 0.8 * 64) / (0.8 - 0.62)
    noisy = [break_even * (1.25 if i % 2 else 0.8) for i in range(30)]
    for margin, expect_flapping in ((0.1, False), (0.0, True)):
        policy = BatchSizePolicy(64, 64, 128, min_windows=1, warmup_windows=0, switch_margin=margin)
        for b in (64, 128):
            policy.record_probe(b, j[b] * b, b, 0.1)
        switches = sum(policy.decide(bn).reason is BatchSizeReason.CHEAPER for bn in noisy)
        assert (switches > 5) is expect_flapping


def test_grows_with_the_noise_scale_over_training():
    policy = BatchSizePolicy(32, 16, 256, min_windows=1, warmup_windows=0)
    sizes = [d.batch_size for d in _run(policy, [20.0] * 6 + [200.0] * 3 + [1e5] * 3)]
    assert sizes[5] <= 32 < sizes[8] < sizes[11] == 256


def test_unknown_noise_scale_stays_at_the_users_size():
    policy = BatchSizePolicy(64, 16, 512, min_windows=1, warmup_windows=0)
    decisions = _run(policy, [None] * 10)
    assert decisions[-1].reason is BatchSizeReason.UNKNOWN_NOISE_SCALE
    assert decisions[-1].batch_size == 64


def test_state_round_trip_gives_identical_decisions():
    schedule = [None] * 5 + [40.0] * 10 + [3000.0] * 10
    whole = BatchSizePolicy(64, 16, 512, min_windows=2, warmup_windows=1)
    expected = [(d.batch_size, d.reason) for d in _run(whole, schedule)]
    first = BatchSizePolicy(64, 16, 512, min_windows=2, warmup_windows=1)
    got = [(d.batch_size, d.reason) for d in _run(first, schedule[:12])]
    resumed = BatchSizePolicy(64, 16, 512, min_windows=2, warmup_windows=1)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got += [(d.batch_size, d.reason) for d in _run(resumed, schedule[12:])]
    assert got == expected
    assert len({b for b, _ in expected}) > 2  # the schedule exercises probing and switching


def test_decide_uses_its_own_noise_scale_estimate_which_survives_a_resume():
    kwargs = dict(min_windows=1, warmup_windows=0, noise_min_updates=1)
    policy = BatchSizePolicy(64, 32, 128, **kwargs)
    for b in (64, 128, 32):
        _feed(policy, b)
    assert policy.decide().reason is BatchSizeReason.UNKNOWN_NOISE_SCALE  # no gradients seen yet
    # |G|² = 1, tr(Σ) = 1e5: B_noise = 1e5, far above every candidate -> the cheapest per sample.
    policy.noise_scale.update(1 + 1e5 / 8, 1 + 1e5 / 32, 8, 32)
    state = json.loads(json.dumps(policy.state_dict()))
    d = policy.decide()
    assert d.details["b_noise"] == pytest.approx(1e5) and d.batch_size == 128
    resumed = BatchSizePolicy(64, 32, 128, **kwargs)
    resumed.load_state_dict(state)
    assert resumed.noise_scale.b_noise == pytest.approx(1e5)
    assert resumed.decide() == d


def test_policy_rejects_bad_arguments():
    with pytest.raises(ValueError, match="initial_batch_size must be an integer >= 1, got 0"):
        BatchSizePolicy(0, 1, 8)
    with pytest.raises(ValueError, match="max_batch_size must be >= current=64, got 32"):
        BatchSizePolicy(64, 16, 32)
    with pytest.raises(ValueError, match="history_windows must be >= min_windows=3, got 2"):
        BatchSizePolicy(64, 16, 128, history_windows=2)
    policy = BatchSizePolicy(64, 16, 128)
    with pytest.raises(ValueError, match="energy_j must be a finite number of joules >= 0, got -5"):
        policy.record_probe(64, -5, 64, 1.0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1, got 0"):
        policy.record_probe(64, 5.0, 0, 1.0)
    with pytest.raises(ValueError, match=r"b_noise must be None or a number >= 0 \(inf allowed\), got nan"):
        policy.decide(float("nan"))


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
