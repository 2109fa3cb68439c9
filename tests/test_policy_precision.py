"""Precision policy on scripted runs: cost ratios, loss tracking, rollbacks, cooldown, state."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from lightning_green.policy.precision import (
    PrecisionPolicy,
    PrecisionReason,
)
from lightning_green.policy.precision_probe import new_probe

FP32, BF16, FP16 = "32-true", "bf16-mixed", "16-mixed"
_RNG = np.random.default_rng(0)
LOSS_NOISE = _RNG.normal(size=4000)
ENERGY_NOISE = _RNG.normal(size=4000)
SAMPLES = 32


def base_loss(t: int) -> float:
    """A training loss falling fast early and flattening: 3.5 at the start, 0.5 at the end."""
    return 3.0 * math.exp(-t / 200) + 0.5


def simulate(
    policy: PrecisionPolicy,
    j_per_sample: dict[str, float],
    steps: int,
    *,
    start: int = 0,
    epoch_steps: int = 100,
    loss_factor: Callable[[int, str], float] = lambda t, p: 1.0,
    overflows: Callable[[int, str], int] = lambda t, p: 0,
    loss_noise: float = 0.01,
    step_s_per_j: float = 0.25,
    planned: int | None = 10_000,
    energy_noise: float = 0.02,
    s_per_sample: dict[str, float] | None = None,
    estimated: bool = False,
    load: Callable[[int, str], float] = lambda t, p: 1.0,
) -> dict:
    """Train ``steps`` steps from ``start``, applying each decision; one record per step.

    Joules per sample per precision with ``energy_noise`` (2 %) noise, wall time proportional to
    the energy, loss = the base curve × (1 + loss_noise·N(0,1)) × loss_factor(t, precision);
    ``planned``: the run's planned steps given to the policy (its probing budget); ``load(t, p)``
    multiplies a step's energy and time (contention on the CPU-time estimate).
    """
    used: Counter = Counter()
    decisions, details = [], []
    energy_j = 0.0
    precision = policy.current_precision
    for t in range(start, start + steps):
        j = j_per_sample[precision] * (1.0 + energy_noise * ENERGY_NOISE[t]) * load(t, precision)
        loss = base_loss(t) * (1.0 + loss_noise * LOSS_NOISE[t]) * loss_factor(t, precision)
        policy.record(
            precision,
            energy_j=j * SAMPLES,
            samples=SAMPLES,
            duration_s=step_s_per_j * j if s_per_sample is None else s_per_sample[precision] * SAMPLES,
            losses=[loss],
            overflows=overflows(t, precision),
            estimated=estimated,
        )
        energy_j += j * SAMPLES
        used[precision] += 1
        d = policy.decide(epoch=t // epoch_steps, planned_steps=planned)
        decisions.append((t, d.precision, d.reason))
        details.append(dict(d.details))
        precision = d.precision
    return {
        "decisions": decisions,
        "details": details,
        "used": used,
        "energy_j": energy_j,
        "final": precision,
    }


def eager_policy(supported: list[str], **kwargs) -> PrecisionPolicy:
    """A policy that may probe from ``start_step`` on: a 50 % probing budget.

    With the default 5 % the probes of these short scripted runs would wait for the run to have
    spent 20 times their cost; what a probe decides does not depend on when it starts. The tests
    of the budget and of that wait use the defaults.
    """
    return PrecisionPolicy(supported, **{"probe_budget": 0.5, **kwargs})


def reasons(run: dict) -> list[PrecisionReason]:
    return [r for _, _, r in run["decisions"]]


def first(run: dict, reason: PrecisionReason) -> tuple[int, str]:
    return next((t, p) for t, p, r in run["decisions"] if r is reason)


# ----------------------------------------------------------------------------- cost


def test_cpu_where_bf16_costs_3x_ends_on_fp32_with_bounded_probe_cost():
    policy = PrecisionPolicy([BF16])  # the defaults
    steps = 1000
    run = simulate(policy, {FP32: 1.0, BF16: 3.0}, steps, planned=steps)
    assert run["final"] == FP32
    assert PrecisionReason.TOO_EXPENSIVE in reasons(run)
    assert PrecisionReason.CHEAPER not in reasons(run)
    # Resolved costlier after two interleaved pairs: two candidate segments (warm-up + a window).
    assert run["used"][BF16] == 2 * (policy.warmup_steps + policy.window_steps)
    outcome = policy.state_dict()["outcomes"][BF16]
    assert outcome["status"] == "costlier" and outcome["pairs"] == 2 and outcome["ratio_low"] > 2.5
    # The second candidate window waited (on reference windows) until the run had spent enough.
    assert len(outcome["candidate_j_per_sample"]) == 2 and len(outcome["reference_j_per_sample"]) > 3
    # The probed steps stay within 5 % of the run's energy.
    assert sum(policy.probe_energy_j().values()) <= 0.05 * run["energy_j"]
    extra = run["energy_j"] / (steps * 1.0 * SAMPLES) - 1.0
    assert extra < 0.05
    # A 600-step run affords one bf16 window, not two: unresolved, stopped by the budget.
    short = PrecisionPolicy([BF16])
    run = simulate(short, {FP32: 1.0, BF16: 3.0}, 600, planned=600)
    outcome = short.state_dict()["outcomes"][BF16]
    assert (run["final"], outcome["status"], outcome["stopped_by"]) == (FP32, "insufficient", "budget")
    assert sum(short.probe_energy_j().values()) <= 0.05 * run["energy_j"]


@pytest.mark.parametrize(
    ("costs", "estimated"),
    [({FP32: 1.0, BF16: 3.0}, False), ({FP32: 1.0, BF16: 1.3}, True), ({FP32: 1.0, BF16: 0.5}, True)],
)
def test_probing_is_paid_as_the_run_goes(costs, estimated):
    """A run can end at any step (a stopper, a target reached), so at no step has probing taken
    more than 5 % of the energy spent so far, but for a first candidate window dearer than the
    reference it was estimated from (r x the estimate: at most 5 % x r/2, two windows being
    asked for), and the probes still conclude."""
    policy = PrecisionPolicy([BF16])
    spent_j, shares = 0.0, []
    for t in range(2000):
        spent_j += simulate(policy, costs, 1, start=t, estimated=estimated, planned=2000)["energy_j"]
        shares.append(sum(policy.probe_energy_j().values()) / spent_j)
    ratio = costs[BF16] / costs[FP32]
    assert max(shares) <= 1.05 * 0.05 * max(1.0, ratio / 2)  # 2 % energy noise
    assert shares[-1] <= 0.05
    assert BF16 in policy.state_dict()["outcomes"]
    assert policy.current_precision == (BF16 if ratio < 1 else FP32)


def test_a_probe_whose_reference_window_a_burst_made_too_dear_to_pay_for_ends_without_an_outcome():
    """The first reference window of a probe sets the candidate windows' estimate; a burst of
    load (3x) there leaves them unpaid for: the probe ends with nothing judged - no outcome
    recorded (an empty one reads as a decision) - and starts again once paid for."""

    def run(load):
        policy, precision, log = PrecisionPolicy([BF16]), FP32, []
        for t in range(1500):
            j = {FP32: 1.0, BF16: 3.0}[precision] * load(t)
            policy.record(precision, j * SAMPLES, SAMPLES, 0.25 * j, losses=[base_loss(t)])
            d = policy.decide(epoch=t // 100, planned_steps=1500)
            log.append((t, d))
            precision = d.precision
        return policy, log

    _, calm = run(lambda t: 1.0)
    t0 = next(t for t, d in calm if d.reason is PrecisionReason.PROBE)  # its reference window follows
    policy, log = run(lambda t: 3.0 if t0 < t <= t0 + 8 else 1.0)
    ended = [(t, d) for t, d in log if "outcomes" in d.details]
    assert ended and all(d.details["outcomes"] for _, d in ended)
    assert PrecisionReason.NO_BUDGET not in [d.reason for _, d in log]  # the projection affords it
    assert policy.state_dict()["outcomes"][BF16]["status"] == "costlier"  # probed later


def test_a_run_too_short_for_two_candidate_windows_does_not_probe_and_says_so_once():
    policy = PrecisionPolicy([BF16, FP16])
    run = simulate(policy, {FP32: 1.0, BF16: 0.5, FP16: 0.5}, 200, planned=200)
    assert run["used"] == {FP32: 200}
    notes = [d for d in run["decisions"] if d[2] is PrecisionReason.NO_BUDGET]
    assert len(notes) == 1 and notes[0][0] == policy.start_step - 1
    # Planned long enough, the same run probes once it has spent 20x what two windows cost: bf16.
    long = PrecisionPolicy([BF16, FP16])
    run = simulate(long, {FP32: 1.0, BF16: 0.5, FP16: 0.5}, 400)
    assert run["final"] == BF16 and PrecisionReason.NO_BUDGET not in reasons(run)
    first_probe = next(t for t, p, _ in run["decisions"] if p != FP32)
    window_j = (long.warmup_steps + long.window_steps) * SAMPLES  # a reference window's steps
    assert 0.05 * first_probe * SAMPLES >= 2 * window_j * 0.95


def test_a_plan_ending_before_two_candidate_windows_says_so_and_a_longer_plan_probes_the_candidates():
    # From step 20 a probe needs 2 pairs of (2 warm-up + 4) steps: 24 steps, more than a 30-step plan has.
    costs = {FP32: 1.0, BF16: 0.5}
    policy = eager_policy([BF16])
    short = simulate(policy, costs, 30, planned=30)
    assert short["used"] == {FP32: 30}
    notes = [d for d in short["decisions"] if d[2] is PrecisionReason.TOO_SHORT]
    assert [t for t, _, _ in notes] == [policy.start_step - 1]  # said once, at the first decision
    assert policy.too_short_for_probing == (BF16,)
    # Continued (through a JSON state, as a checkpoint) to a plan still too short: said again, once.
    continued = eager_policy([BF16])
    continued.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    still = simulate(continued, costs, 10, start=30, planned=40)
    assert still["used"] == {FP32: 10}
    assert reasons(still).count(PrecisionReason.TOO_SHORT) == 1
    # ... then to a long enough plan: bf16 is probed and adopted, as from the start.
    longer = simulate(continued, costs, 200, start=40, planned=240)
    assert PrecisionReason.PROBE in reasons(longer) and longer["final"] == BF16
    assert PrecisionReason.TOO_SHORT not in reasons(longer) and continued.too_short_for_probing == ()


def test_without_a_planned_length_probing_waits_until_5_percent_of_the_spent_energy_pays_for_it():
    policy = PrecisionPolicy([BF16])
    run = simulate(policy, {FP32: 1.0, BF16: 0.5}, 600, planned=None)
    first_probe = next(t for t, p, _ in run["decisions"] if p == BF16)
    # Two candidate segments (2 warm-up steps + a window of 4-5 steps) at the reference's cost:
    # 12-14 steps, 5 % of 240-280 steps; then a fresh reference window.
    assert 240 <= first_probe <= 280 + 5
    assert run["final"] == BF16
    assert [r for r in reasons(run) if r is PrecisionReason.NO_BUDGET] == [PrecisionReason.NO_BUDGET]


@pytest.mark.parametrize("seed", range(5))
def test_a_candidate_1_4_percent_cheaper_in_noise_is_never_adopted_and_3x_cheaper_is(seed):
    global ENERGY_NOISE
    rng = np.random.default_rng(seed)
    saved, ENERGY_NOISE = ENERGY_NOISE, rng.normal(size=4000)
    try:
        close = eager_policy([BF16, FP16])
        run = simulate(close, {FP32: 1.0, BF16: 0.986, FP16: 0.99}, 600, energy_noise=0.05)
        assert run["final"] == FP32 and PrecisionReason.CHEAPER not in reasons(run)
        outcomes = close.state_dict()["outcomes"]
        assert {o["status"] for o in outcomes.values()} <= {"unresolved", "costlier"}, outcomes
        far = simulate(eager_policy([BF16]), {FP32: 1.0, BF16: 1 / 3}, 600, energy_noise=0.05)
        assert far["final"] == BF16
    finally:
        ENERGY_NOISE = saved


def test_of_two_candidates_equally_cheap_bf16_is_preferred_unless_fp16_is_resolved_cheaper():
    tie = simulate(eager_policy([BF16, FP16]), {FP32: 1.0, BF16: 0.5, FP16: 0.49}, 300)
    assert first(tie, PrecisionReason.CHEAPER)[1] == BF16
    clear = simulate(eager_policy([BF16, FP16]), {FP32: 1.0, BF16: 0.5, FP16: 0.3}, 300)
    assert first(clear, PrecisionReason.CHEAPER)[1] == FP16


def test_h100_where_bf16_is_2x_cheaper_and_tracks_fp32_switches_to_bf16():
    run = simulate(eager_policy([BF16]), {FP32: 1.0, BF16: 0.5}, 600)
    t, precision = first(run, PrecisionReason.CHEAPER)
    assert precision == BF16 and t < 100
    assert run["final"] == BF16
    assert run["used"][BF16] > 0.8 * 600
    assert not any(r.value.startswith("rollback") for r in reasons(run))


@pytest.mark.parametrize("estimated", [True, False])
def test_with_estimated_energy_a_cheaper_looking_but_slower_precision_is_not_adopted(estimated):
    """Under load the CPU-time estimate can show bf16 cheaper (fewer busy threads) while it runs
    3x longer: the estimate cannot see the static power of that time, so it is not adopted; a
    meter that measured the same saving is believed."""
    policy = eager_policy([BF16])
    times = {FP32: 0.001, BF16: 0.003}
    run = simulate(policy, {FP32: 1.0, BF16: 0.6}, 600, s_per_sample=times, estimated=estimated)
    outcome = policy.state_dict()["outcomes"][BF16]
    if estimated:
        assert run["final"] == FP32 and run["used"][BF16] < 0.1 * 600
        assert outcome["status"] == "slower" and outcome["wall_time"]["ratio"] == pytest.approx(3.0)
    else:
        assert run["final"] == BF16 and outcome["status"] == "cheaper"


def test_on_the_estimate_a_saving_seen_only_in_a_burst_of_load_is_not_adopted():
    """A busy process slows fp32's threads 3x in the run's first seconds: the first probe resolves
    bf16 cheaper (and faster); on the estimate that must replicate in a later epoch, where bf16
    costs its real 1.3x, so it is dropped. A real saving replicates and is adopted then."""

    def burst(t, p):
        return 3.0 if p == FP32 and t < 90 else 1.0

    policy = eager_policy([BF16])
    run = simulate(policy, {FP32: 1.0, BF16: 1.3}, 600, estimated=True, load=burst)
    assert run["final"] == FP32 and PrecisionReason.CHEAPER not in reasons(run)
    t_first, _ = first(run, PrecisionReason.TO_CONFIRM)
    assert t_first < 90  # the burst resolved it cheaper once
    assert policy.state_dict()["outcomes"][BF16]["status"] == "costlier"  # not replicated
    real = eager_policy([BF16])
    run = simulate(real, {FP32: 1.0, BF16: 0.5}, 600, estimated=True)
    t_confirm, _ = first(run, PrecisionReason.TO_CONFIRM)
    t_adopt, precision = first(run, PrecisionReason.CHEAPER)
    assert precision == BF16 == run["final"] and t_confirm < 100 <= t_adopt  # the next epoch
    outcome = real.state_dict()["outcomes"][BF16]
    assert outcome["status"] == "cheaper" and outcome["first_resolved_epoch"] == 0


def test_a_candidate_window_dearer_than_estimated_is_cut_at_the_budget():
    """A bf16 window that costs 20x what the reference predicted is cut as soon as the probing
    energy reaches the allowance (5 % of the planned run), overshooting by at most one step."""
    policy = PrecisionPolicy([BF16])
    run = simulate(policy, {FP32: 1.0, BF16: 20.0}, 1000, planned=1000, energy_noise=0.0)
    allowance = 0.05 * 1000 * 1.0 * SAMPLES
    assert allowance < sum(policy.probe_energy_j().values()) <= allowance + 20.0 * SAMPLES
    assert run["final"] == FP32
    outcome = policy.state_dict()["outcomes"][BF16]
    assert (outcome["status"], outcome["stopped_by"]) == ("insufficient", "budget")
    # The cut says why: what probing had spent, past what it was allowed.
    (cut,) = [d for d in run["details"] if d.get("cut") == "budget"]
    # (the allowance is 5 % of the run projected from what it spent, the dear window included)
    assert allowance <= cut["probe_allowance_j"] <= cut["probe_spent_j"]
    assert cut["probe_spent_j"] == sum(policy.probe_energy_j().values())  # nothing probed after it


def test_cheapest_of_several_precisions_wins():
    run = simulate(eager_policy([BF16, FP16]), {FP32: 1.0, BF16: 0.5, FP16: 0.4}, 300)
    assert first(run, PrecisionReason.CHEAPER)[1] == FP16
    assert run["final"] == FP16


def test_a_saving_below_the_margin_is_not_worth_switching():
    costs = {FP32: 1.0, BF16: 0.95}
    run = simulate(eager_policy([BF16]), costs, 300)
    assert run["final"] == FP32 and PrecisionReason.CHEAPER not in reasons(run)
    eager = simulate(eager_policy([BF16], switch_margin=0.01), costs, 300)
    assert eager["final"] == BF16


def test_probing_waits_for_start_step_and_alternates_reference_and_candidate_windows():
    policy = eager_policy([BF16, FP16], start_step=50, min_window_s=0.0)
    run = simulate(policy, {FP32: 1.0, BF16: 0.5, FP16: 0.3}, 200)
    sequence = [p for _, p, _ in run["decisions"]]
    first_probe = next(t for t, p, _ in run["decisions"] if p != FP32)
    assert first_probe >= 50 + policy.window_steps - 1
    # fp32 | bf16 | fp32 | bf16 | fp32 (bf16 resolved) | fp16 | fp32 | fp16 | fp32 | fp16 adopted
    changes = [p for i, p in enumerate(sequence) if i == 0 or p != sequence[i - 1]]
    assert changes == [FP32, BF16, FP32, BF16, FP32, FP16, FP32, FP16, FP32, FP16]


# ----------------------------------------------------------------------------- loss tracking


def test_a_probe_whose_loss_leaves_the_fp32_trend_is_banned_then_reprobed_after_cooldown():
    def biased(t, p):  # bf16 loss 7 % above fp32 at the same step: beyond the 5 % tolerance
        return 1.07 if p == BF16 else 1.0

    policy = eager_policy([BF16], cooldown_epochs=2)
    run = simulate(policy, {FP32: 1.0, BF16: 0.5}, 320, loss_factor=biased)
    t_dev, precision = first(run, PrecisionReason.LOSS_DEVIATION)
    assert precision == FP32 and t_dev < 100
    assert PrecisionReason.CHEAPER not in reasons(run)
    # Banned through epochs 0 and 1: no bf16 step there after the verdict ...
    assert all(p == FP32 for t, p, _ in run["decisions"] if t_dev <= t < 200)
    # ... then probed again at epoch 2.
    t_over, _ = first(run, PrecisionReason.COOLDOWN_OVER)
    assert t_over == 200
    assert any(p == BF16 for t, p, _ in run["decisions"] if t > 200)


def test_a_probe_within_tolerance_is_adopted():
    run = simulate(eager_policy([BF16]), {FP32: 1.0, BF16: 0.5}, 200, loss_factor=lambda t, p: 1.02)
    assert first(run, PrecisionReason.CHEAPER)[1] == BF16


def test_without_losses_no_candidate_is_adopted():
    policy = eager_policy([BF16], start_step=0, min_window_s=0.0)
    precision = FP32
    for _ in range(60):
        policy.record(
            precision, energy_j=SAMPLES * (0.5 if precision == BF16 else 1.0), samples=SAMPLES, duration_s=1
        )
        precision = policy.decide(0).precision
    assert precision == FP32


# ----------------------------------------------------------------------------- rollbacks


def test_non_finite_loss_after_adoption_rolls_back_and_respects_cooldown():
    def nan_once(t, p):
        return math.nan if t == 350 and p == BF16 else 1.0

    run = simulate(eager_policy([BF16], cooldown_epochs=2), {FP32: 1.0, BF16: 0.5}, 800, loss_factor=nan_once)
    t_rb, precision = first(run, PrecisionReason.ROLLBACK_NON_FINITE)
    assert (t_rb, precision) == (350, FP32)
    # Epoch 3 is the ban's start: no bf16 until epoch 5.
    assert all(p == FP32 for t, p, _ in run["decisions"] if 350 <= t < 500)
    assert first(run, PrecisionReason.COOLDOWN_OVER)[0] == 500
    assert run["final"] == BF16  # re-probed, fine again, re-adopted


def test_non_finite_loss_during_a_probe_aborts_it_and_the_plan_goes_on():
    def nan_bf16(t, p):
        return math.nan if p == BF16 else 1.0

    policy = eager_policy([BF16, FP16], cooldown_epochs=2)
    run = simulate(policy, {FP32: 1.0, BF16: 0.5, FP16: 0.6}, 190, loss_factor=nan_bf16)
    assert first(run, PrecisionReason.ROLLBACK_NON_FINITE)[1] == FP32
    assert run["used"][BF16] == 1  # rolled back at the first bad step
    assert policy.banned == {BF16: 2}
    assert run["final"] == FP16


def test_repeated_gradscaler_overflows_roll_back():
    costs = {FP32: 1.0, FP16: 0.5}

    def every_step(t, p):
        return 1 if p == FP16 else 0

    run = simulate(eager_policy([FP16]), costs, 300, overflows=every_step)
    assert PrecisionReason.ROLLBACK_OVERFLOW in reasons(run)
    assert run["final"] == FP32

    # Overflows only while the fresh GradScaler calibrates (the warm-up steps) are normal.
    switched_at: dict[str, int] = {}

    def calibrating(t, p):
        if p != FP16:
            switched_at.pop(FP16, None)
            return 0
        start = switched_at.setdefault(FP16, t)
        return 1 if t - start < 2 else 0

    calm = simulate(eager_policy([FP16]), costs, 300, overflows=calibrating)
    assert PrecisionReason.ROLLBACK_OVERFLOW not in reasons(calm)
    assert calm["final"] == FP16


def test_loss_jump_after_adoption_rolls_back():
    def jump(t, p):
        return 1.5 if t >= 400 and p == BF16 else 1.0

    run = simulate(eager_policy([BF16]), {FP32: 1.0, BF16: 0.5}, 500, loss_factor=jump)
    t_rb, precision = first(run, PrecisionReason.ROLLBACK_LOSS_JUMP)
    assert precision == FP32 and 400 <= t_rb < 400 + 3 * 8
    assert run["final"] == FP32
    assert PrecisionReason.ROLLBACK_LOSS_JUMP not in reasons(
        simulate(eager_policy([BF16]), {FP32: 1.0, BF16: 0.5}, 500)
    )


def test_nan_at_the_initial_precision_has_nothing_to_roll_back_to():
    policy = eager_policy([BF16], start_step=1000)
    policy.record(FP32, energy_j=10.0, samples=32, duration_s=1.0, losses=[math.nan])
    d = policy.decide(0)
    assert d.precision == FP32 and d.reason is PrecisionReason.KEEP


# ----------------------------------------------------------------------------- state, plan, arguments


@pytest.mark.parametrize("estimated", [False, True])
@pytest.mark.parametrize("cut", [30, 45, 70, 120, 250, 360, 520])
def test_state_round_trip_gives_identical_decisions(cut, estimated):
    def nan_once(t, p):
        return math.nan if t == 350 and p != FP32 else 1.0

    # estimated: the first resolution waits for a replication in the next epoch (to_confirm)
    kwargs = dict(loss_factor=nan_once, estimated=estimated)
    costs = {FP32: 1.0, BF16: 0.5, FP16: 0.45}
    whole = simulate(eager_policy([BF16, FP16]), costs, 700, **kwargs)
    first_part = eager_policy([BF16, FP16])
    head = simulate(first_part, costs, cut, **kwargs)
    resumed = eager_policy([BF16, FP16])
    resumed.load_state_dict(json.loads(json.dumps(first_part.state_dict())))
    tail = simulate(resumed, costs, 700 - cut, start=cut, **kwargs)
    assert head["decisions"] + tail["decisions"] == whole["decisions"]
    assert len(set(reasons(whole))) >= 4  # probes, a switch, a rollback, a cooldown
    assert (PrecisionReason.TO_CONFIRM in reasons(whole)) == estimated


def test_decision_details_are_json_able():
    run_policy = eager_policy([BF16])
    precision = FP32
    for t in range(80):
        run_policy.record(precision, energy_j=32.0, samples=32, duration_s=1.0, losses=[base_loss(t)])
        d = run_policy.decide(0)
        json.dumps(dict(d.details))
        precision = d.precision


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: PrecisionPolicy(["fp8"]),
            r"supported must name a precision in \['32-true', 'bf16-mixed', '16-mixed'\], got 'fp8'",
        ),
        (lambda: PrecisionPolicy("bf16-mixed"), "supported must be a list of precisions"),
        (
            lambda: PrecisionPolicy([BF16], initial_precision=FP16),
            "initial_precision must be one of supported=",
        ),
        (
            lambda: PrecisionPolicy([BF16], loss_tolerance=-0.1),
            r"loss_tolerance must be a number in \[0.0, inf\)",
        ),
        (
            lambda: PrecisionPolicy([BF16], switch_margin=1.0),
            r"switch_margin must be a number in \[0.0, 1.0\), got 1.0",
        ),
        (
            lambda: PrecisionPolicy([BF16], cooldown_epochs=-1),
            "cooldown_epochs must be an integer >= 0, got -1",
        ),
        (lambda: PrecisionPolicy([BF16], max_overflows=0), "max_overflows must be an integer >= 1, got 0"),
        (lambda: PrecisionPolicy([BF16]).record(FP16, 1.0, 1, 1.0), "precision must be one of supported="),
        (
            lambda: PrecisionPolicy([BF16]).record(BF16, -1.0, 1, 1.0),
            r"energy_j must be a number in \[0.0, inf\)",
        ),
        (
            lambda: PrecisionPolicy([BF16]).record(BF16, 1.0, 1, 1.0, losses=["x"]),
            "losses must be numbers, got 'x'",
        ),
        (lambda: PrecisionPolicy([BF16]).decide(-1), "epoch must be an integer >= 0, got -1"),
        (lambda: PrecisionPolicy([BF16]).load_state_dict({}), "state version must be 3, got None"),
        (lambda: PrecisionPolicy([BF16], max_pairs=1), "max_pairs must be an integer >= 2, got 1"),
        (lambda: PrecisionPolicy([BF16], probe_budget=1.0), r"probe_budget must be a number in \[0.0, 1.0\)"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _probing(
    policy: PrecisionPolicy, costs: dict[str, float], until: Callable[[PrecisionPolicy], bool]
) -> int:
    """Steps simulated one by one until ``until(policy)``; returns the steps taken."""
    for t in range(600):
        if until(policy):
            return t
        simulate(policy, costs, 1, start=t)
    raise AssertionError("never reached")


def test_a_state_loaded_with_fewer_precisions_supported_drops_the_others():
    # A probe of bf16 (then fp16) in a candidate window, loaded where bf16 is no longer supported (a
    # run resumed with precisions="16-mixed"): back to the base, the probe goes on with fp16 alone.
    costs = {FP32: 1.0, BF16: 0.5, FP16: 0.45}
    first = eager_policy([BF16, FP16])
    cut = _probing(first, costs, lambda p: p.probing and p.current_precision == BF16)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = eager_policy([FP16])
    resumed.load_state_dict(state)
    assert (resumed.current_precision, resumed.dropped_candidates, resumed.probing) == (FP32, (BF16,), True)
    run = simulate(resumed, costs, 300, start=cut)
    assert BF16 not in run["used"] and run["final"] == FP16
    assert PrecisionReason.CHEAPER in reasons(run)
    # Candidates still to probe (before any probe started) are dropped too: nothing left to probe.
    early = eager_policy([BF16], start_step=1000)
    simulate(early, costs, 10)
    only_fp32 = eager_policy([])
    only_fp32.load_state_dict({**early.state_dict(), "started": True, "pending": [BF16]})
    assert only_fp32.dropped_candidates == (BF16,)
    assert simulate(only_fp32, costs, 300, start=10)["used"] == {FP32: 300}


def test_a_state_loaded_without_its_probes_base_ends_the_probe_at_the_initial_precision():
    # Adopted bf16, probing fp16 against it; loaded where only fp16 is allowed: the probe ends (fp16
    # waits to be probed against fp32) and the policy stands at its initial precision.
    state = eager_policy([BF16, FP16]).state_dict()
    probe = {**new_probe(BF16, []), "cand": FP16, "role": "candidate"}
    state.update(current=FP16, previous=[FP32], probe=probe, started=True, banned={BF16: 9})
    resumed = eager_policy([FP16], initial_precision=FP32)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert (resumed.current_precision, resumed.probing, resumed.dropped_candidates) == (FP32, False, ())
    assert resumed.banned == {} and resumed.state_dict()["pending"] == [FP16]
    run = simulate(resumed, {FP32: 1.0, FP16: 0.45}, 300, start=0)
    assert set(run["used"]) == {FP32, FP16} and run["final"] == FP16
