"""The composite stopping policy: the behaviour a user relies on."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks.early_stopping import EarlyStopping

from lightning_green.offline import Curve, read_curves_csv
from lightning_green.policy import StopDecision, StoppingConfig, StoppingPolicy, StopReason, schedule

CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "curves"


@pytest.fixture(scope="module")
def nas_curves() -> list[Curve]:
    return read_curves_csv(CURVES / "nasbench_nlp_wt2_dev.csv")[:16]


@pytest.fixture(scope="module")
def mlperf_curves() -> list[Curve]:
    return read_curves_csv(CURVES / "mlperf_v4_power_dev.csv")[:4]


def run(
    curve_metrics,
    curve_costs,
    config: StoppingConfig,
    *,
    max_epochs=None,
    epochs=None,
    lr_hint=None,
    stop_on_first: bool = True,
) -> list[StopDecision]:
    policy = StoppingPolicy(config)
    out = []
    epochs = range(len(curve_metrics)) if epochs is None else epochs
    for i, (m, c, e) in enumerate(zip(curve_metrics, curve_costs, epochs, strict=False)):
        d = policy.update(
            float(m),
            float(c),
            epoch=int(e),
            max_epochs=max_epochs,
            epochs_until_lr_decay=None if lr_hint is None else lr_hint(i),
        )
        out.append(d)
        if d.should_stop and stop_on_first:
            break
    return out


def stop_of(decisions: list[StopDecision]) -> tuple[int, StopReason | None]:
    last = decisions[-1]
    return len(decisions) - 1, (last.reason if last.should_stop else None)


def replay_real(curve: Curve, config: StoppingConfig, cost_scale=1.0, metric_scale=1.0, metric_shift=0.0):
    config = replace(config, mode=curve.mode)
    return stop_of(
        run(
            curve.metrics * metric_scale + metric_shift,
            curve.costs * cost_scale,
            config,
            max_epochs=int(curve.epochs[-1]),
            epochs=curve.epochs - 1,
        )
    )


# --------------------------------------------------------------------------- scale-freeness


def test_decisions_do_not_depend_on_units(nas_curves, mlperf_curves) -> None:
    config = StoppingConfig()
    stops = [replay_real(c, config) for c in nas_curves + mlperf_curves]
    assert any(reason is StopReason.MARGINAL_GAIN for _, reason in stops)  # the rule is exercised
    for curve, expected in zip(nas_curves + mlperf_curves, stops, strict=True):
        assert replay_real(curve, config, cost_scale=1e6) == expected
        assert replay_real(curve, config, metric_scale=100.0, metric_shift=-42.0) == expected


def test_relative_threshold_same_for_loss_and_accuracy() -> None:
    # The same learning curve as a loss (nats, falling) and as an accuracy (points, rising).
    x = np.arange(1, 81, dtype=float)
    rng = np.random.default_rng(3)
    shape = 1.0 - x**-0.7 + rng.normal(0, 0.003, len(x))
    loss = 3.0 - 2.0 * shape
    acc = 50.0 + 45.0 * shape
    costs = 0.25 * x
    a = stop_of(run(loss, costs, StoppingConfig(mode="min"), max_epochs=80))
    b = stop_of(run(acc, costs * 3.6e6, StoppingConfig(mode="max"), max_epochs=80))
    assert a == b and a[1] is StopReason.MARGINAL_GAIN


# --------------------------------------------------------------------------- budget


@pytest.mark.parametrize("seed", range(5))
def test_budget_stops_before_exceeding(seed: int) -> None:
    rng = np.random.default_rng(seed)
    per_epoch = rng.uniform(0.9, 1.1, 60)
    per_epoch[rng.integers(0, 60, 6)] = 0.0  # a meter that updates late ...
    costs = np.cumsum(per_epoch)  # ... still adds up
    metrics = 2.0 - 0.01 * np.arange(60)  # improving steadily: only the budget can stop it
    budget = float(rng.uniform(20, 40))
    decisions = run(metrics, costs, StoppingConfig(energy_budget_kwh=budget), max_epochs=60)
    i, reason = stop_of(decisions)
    assert reason is StopReason.ENERGY_BUDGET
    assert costs[i] <= budget < costs[i] + 2.0  # stopped in time, and not absurdly early
    assert decisions[-1].next_epoch_kwh is not None


def test_budget_applies_before_min_epochs() -> None:
    decisions = run([1.0, 0.9], [3.0, 6.0], StoppingConfig(energy_budget_kwh=8.0, min_epochs=50))
    assert stop_of(decisions) == (1, StopReason.ENERGY_BUDGET)


def test_budget_stops_nothing_at_the_planned_end() -> None:
    """At the last planned check no further interval would run: a budget the next one would exceed
    is no stop (the run ran to its end); one check earlier it is."""
    config = StoppingConfig(energy_budget_kwh=2.5, min_epochs=0)
    decisions = run([1.0, 0.9, 0.8], [1.0, 2.0, 3.0], config, max_epochs=3)
    assert stop_of(decisions) == (1, StopReason.ENERGY_BUDGET)
    decisions = run([1.0, 0.9], [1.0, 2.0], config, max_epochs=2)
    assert not any(d.should_stop for d in decisions)
    assert decisions[-1].next_epoch_kwh is not None  # still projected, for the record


# --------------------------------------------------------------------------- safety


def test_never_stops_on_plateau_or_marginal_before_min_epochs() -> None:
    flat = np.full(30, 1.0)
    config = StoppingConfig(patience=1, min_epochs=12, min_horizon_fraction=0.0)
    i, reason = stop_of(run(flat, np.arange(1, 31) * 0.1, config, max_epochs=30))
    assert i == 11 and reason in (StopReason.PLATEAU, StopReason.MARGINAL_GAIN)
    for d in run(flat, np.arange(1, 31) * 0.1, config, max_epochs=30)[:11]:
        assert not d.should_stop and d.hold == "min_epochs"


@pytest.mark.parametrize("noise", [0.0, 0.002, 0.01])
@pytest.mark.parametrize("max_epochs", [100, None])
def test_steadily_improving_metric_never_stopped_by_marginal_rule(
    noise: float, max_epochs: int | None
) -> None:
    rng = np.random.default_rng(0)
    epochs = np.arange(100)
    metric = 3.0 - 0.01 * epochs + rng.normal(0, noise, 100)
    costs = 0.5 * (epochs + 1) * rng.uniform(0.95, 1.05, 100).cumprod() ** 0.01
    for d in run(
        metric,
        costs,
        StoppingConfig(patience=1000, min_relative_gain=0.2),
        max_epochs=max_epochs,
        stop_on_first=False,
    ):
        assert d.reason is not StopReason.MARGINAL_GAIN


def test_saturated_curve_is_stopped_by_marginal_rule() -> None:
    x = np.arange(1, 101, dtype=float)
    metric = 2.0 + 3.0 * np.exp(-x / 8.0)
    i, reason = stop_of(run(metric, x, StoppingConfig(patience=1000), max_epochs=100))
    assert reason is StopReason.MARGINAL_GAIN and 50 <= i < 99


def test_noise_in_the_measured_cost_cannot_decide_a_stop() -> None:
    """Four runs of the README example under load (benchmarks/data/digits_example_under_load.csv):
    the same val_acc curve (fixed seed), epoch energies differing by measurement noise alone. As
    measured, one run's relative gain fell under the threshold at epoch 15 (a stop with 1.1 points
    of regret) while three ran on; the stop must also hold at the run's average rate, so every run
    gets the same decision and that one is held (``cost_noise``)."""
    curves = read_curves_csv(CURVES.parent / "digits_example_under_load.csv")
    assert len(curves) == 4 and all(np.array_equal(c.metrics, curves[0].metrics) for c in curves)
    assert not all(np.allclose(c.costs, curves[0].costs) for c in curves)
    config = StoppingConfig(mode="max")
    results = [run(c.metrics, c.costs, config, max_epochs=30) for c in curves]
    assert len({stop_of(r) for r in results}) == 1
    held = [d for r in results for d in r if d.hold == "cost_noise"]
    assert held and all(d.relative_gain < config.min_relative_gain for d in held)


def test_absolute_threshold_in_metric_units_per_kwh() -> None:
    x = np.arange(1, 101, dtype=float)
    metric = 2.0 + 3.0 * np.exp(-x / 8.0)
    config = StoppingConfig(patience=1000, min_relative_gain=None, min_gain_per_kwh=1e-4)
    _, reason = stop_of(run(metric, x, config, max_epochs=100))
    assert reason is StopReason.MARGINAL_GAIN
    d = run(metric, x, config, max_epochs=100)[-1]
    assert d.projected_gain_per_kwh is not None and d.projected_gain_per_kwh < 1e-4


# --------------------------------------------------------------------------- LR step schedules


def _step_curve() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    e = np.arange(100)
    metric = np.where(e < 60, 1.0 - 0.4 * (1 - np.exp(-e / 5.0)), 0.45 - 0.1 * (1 - np.exp(-(e - 60) / 4.0)))
    return metric + rng.normal(0, 0.01, 100), (e + 1) * 2.0


def lr_hint_for(decay_at: int):
    # Epoch `decay_at` is the first at the lower rate: from epoch e, (decay_at - e - 1) epochs remain.
    return lambda e: decay_at - e - 1 if e < decay_at else None


def test_known_lr_decay_holds_plateau_and_marginal_stops() -> None:
    metric, costs = _step_curve()
    config = StoppingConfig(patience=5, min_horizon_fraction=0.0)
    blind = run(metric, costs, config, max_epochs=100)
    assert stop_of(blind)[0] < 60  # without the schedule the flat stretch looks final
    informed = run(metric, costs, config, max_epochs=100, lr_hint=lr_hint_for(60))
    i, _ = stop_of(informed)
    assert i >= 60
    assert all(d.hold == "lr_decay_ahead" for d in informed[5:60])


def test_decay_beyond_horizon_does_not_hold() -> None:
    metric, costs = _step_curve()
    config = StoppingConfig(patience=5, min_horizon_fraction=0.0)
    # A decay announced after the planned end cannot help: stop as if there were none.
    late = run(metric[:50], costs[:50], config, max_epochs=50, lr_hint=lr_hint_for(60))
    assert stop_of(late) == stop_of(run(metric[:50], costs[:50], config, max_epochs=50))


def test_a_step_jump_seen_holds_for_as_long_again() -> None:
    # Without schedule information: after a jump, the next flat stretch is not taken as final.
    rng = np.random.default_rng(1)
    e = np.arange(120)
    level = np.select([e < 40, e < 80], [1.0 - 0.001 * e, 0.6], 0.4)  # slow, then flat, then flat
    metric = level + rng.normal(0, 0.003, 120) * np.where(e < 40, 0.3, 1.0)
    costs = (e + 1) * 1.0
    config = StoppingConfig(patience=8, min_epochs=1, min_horizon_fraction=0.0)
    alone = run(metric[40:], costs[40:], config, max_epochs=120, epochs=e[40:])
    assert stop_of(alone)[0] < 79 - 40  # a flat stretch with no history: the plateau rule stops ...
    decisions = run(metric, costs, config, max_epochs=120, epochs=e)
    i, _ = stop_of(decisions)
    assert i >= 80  # ... but not after a jump: the next decay is expected as far again
    assert any(d.hold == "lr_step_seen" for d in decisions[43:80])


# --------------------------------------------------------------------------- thresholds


def test_non_finite_divergence_threshold_reasons() -> None:
    assert stop_of(run([1.0, 0.9, float("nan")], [1, 2, 3], StoppingConfig())) == (2, StopReason.NON_FINITE)
    assert stop_of(run([1.0, 0.9, float("inf")], [1, 2, 3], StoppingConfig())) == (2, StopReason.NON_FINITE)
    assert stop_of(run([1.0, 2.0, 5.0], [1, 2, 3], StoppingConfig(divergence_threshold=4.0))) == (
        2,
        StopReason.DIVERGENCE,
    )
    assert stop_of(
        run([50.0, 80.0, 95.0], [1, 2, 3], StoppingConfig(mode="max", stopping_threshold=90.0))
    ) == (2, StopReason.THRESHOLD_REACHED)
    d = run([1.0, float("nan")], [1, 2], StoppingConfig())[-1]
    assert "is not finite" in d.message


def test_nan_ignored_when_check_finite_is_off() -> None:
    metric = [1.0, 0.8, float("nan"), 0.7, 0.65]
    decisions = run(metric, [1, 2, 3, 4, 5], StoppingConfig(check_finite=False), stop_on_first=False)
    assert not any(d.should_stop for d in decisions)


# --------------------------------------------------------------------------- state


def test_state_dict_round_trip_mid_run_gives_identical_decisions(nas_curves) -> None:
    curve = nas_curves[3]
    config = replace(StoppingConfig(), mode=curve.mode)
    steps = list(zip(curve.metrics, curve.costs, curve.epochs - 1, strict=True))
    full = StoppingPolicy(config)
    expected = [full.update(float(m), float(c), epoch=int(e), max_epochs=50) for m, c, e in steps]
    for cut in (5, 24, 33):
        first = StoppingPolicy(config)
        for m, c, e in steps[:cut]:
            first.update(float(m), float(c), epoch=int(e), max_epochs=50)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = StoppingPolicy(config)
        resumed.load_state_dict(state)
        got = [resumed.update(float(m), float(c), epoch=int(e), max_epochs=50) for m, c, e in steps[cut:]]
        assert got == expected[cut:]


def test_deterministic(mlperf_curves) -> None:
    curve = mlperf_curves[0]
    a = run(
        curve.metrics,
        curve.costs,
        StoppingConfig(mode="max"),
        epochs=curve.epochs - 1,
        max_epochs=int(curve.epochs[-1]),
        stop_on_first=False,
    )
    b = run(
        curve.metrics,
        curve.costs,
        StoppingConfig(mode="max"),
        epochs=curve.epochs - 1,
        max_epochs=int(curve.epochs[-1]),
        stop_on_first=False,
    )
    assert a == b


def test_state_dict_with_non_finite_values_is_json() -> None:
    policy = StoppingPolicy(StoppingConfig(check_finite=False))
    policy.update(float("nan"), 1.0, epoch=0)
    text = json.dumps(policy.state_dict(), allow_nan=False)
    restored = StoppingPolicy(StoppingConfig(check_finite=False))
    restored.load_state_dict(json.loads(text))
    assert restored.n_checks == 1 and restored.best_score == float("inf")


# --------------------------------------------------------------------------- inputs, diagnostics, speed


def test_bad_update_inputs() -> None:
    policy = StoppingPolicy()
    policy.update(1.0, 1.0, epoch=3)
    with pytest.raises(ValueError, match="epoch"):
        policy.update(1.0, 2.0, epoch=2)
    with pytest.raises(ValueError, match="cost_kwh"):
        policy.update(1.0, float("nan"), epoch=4)
    with pytest.raises(ValueError, match="max_epochs"):
        policy.update(1.0, 2.0, epoch=4, max_epochs=0)


def test_fit_diagnostics_draw_the_curve() -> None:
    x = np.arange(1, 61, dtype=float)
    metric = 2.0 + 3.0 * x**-0.5
    d = run(metric, 0.1 * x, StoppingConfig(patience=1000, min_relative_gain=0.0), max_epochs=100)[-1]
    assert d.fit is not None and d.fit_family in ("pow3", "exp3", "hyp3")
    assert np.allclose(d.fit.predict(0.1 * x[-10:]), metric[-10:], atol=0.01)
    assert d.projected_gain > 0 and d.relative_gain > 0 and d.gain_per_kwh > 0


def test_decision_is_fast_with_50_checks(nas_curves) -> None:
    times = []
    for curve in nas_curves[:8]:
        policy = StoppingPolicy(StoppingConfig(patience=1000))
        for i in range(50):
            t0 = time.perf_counter()
            policy.update(float(curve.metrics[i]), float(curve.costs[i]), epoch=i, max_epochs=75)
            times.append(time.perf_counter() - t0)
    assert np.median(times[-8:]) < 0.02  # the benchmark measures the 5 ms budget precisely


# --------------------------------------------------------------------------- bounded holds (review B1, B2)


def step_lr_hint(period: int):
    """StepLR(step_size=period): epoch ``k * period`` is the first at each lower rate."""
    return lambda e: period - e % period - 1


def test_periodic_decays_are_not_waited_for_forever_without_a_plan() -> None:
    # A flat metric, StepLR every 30 epochs, no planned end: there is always a decay ahead. The
    # first decay is waited for; it buys nothing, so later ones are not.
    flat = 1.0 + 0.001 * np.random.default_rng(0).standard_normal(500)
    decisions = run(flat, np.arange(1, 501) * 0.1, StoppingConfig(patience=3), lr_hint=step_lr_hint(30))
    i, reason = stop_of(decisions)
    assert reason is StopReason.PLATEAU
    assert 30 <= i < 30 + schedule.DECAY_WINDOW + 3  # after the first decay's window, not 500 epochs on
    assert all(d.hold == "lr_decay_ahead" for d in decisions[5:30])


def test_decays_are_waited_for_while_they_pay() -> None:
    # Each of the first three decays buys a step; the fourth buys nothing: the policy waits for
    # the first four and stops in the fourth's window. (A noise-level new best in a decay's window
    # counts as paying, with min_delta 0 as for the plateau rule: this curve has no noise.)
    e = np.arange(200)
    metric = 1.0 - 0.1 * np.minimum(e // 30, 3)  # a loss: steps down at 30, 60, 90, flat after
    decisions = run(metric, (e + 1) * 0.1, StoppingConfig(patience=3), lr_hint=step_lr_hint(30))
    i, reason = stop_of(decisions)
    assert reason is StopReason.PLATEAU
    assert 120 <= i < 120 + schedule.DECAY_WINDOW + 3
    assert not any(d.should_stop for d in decisions[:120])


def test_announced_decay_forgotten_when_no_longer_announced() -> None:
    # ReduceLROnPlateau announces a decay only while its bad-epoch count is > 0; if the metric
    # improves the announcement stops, and no decay happened.
    decays = schedule.DecayTracker().advance(check=0, progress=1, lr_decay_in=2)
    decays = decays.advance(check=1, progress=2, lr_decay_in=None)
    decays = decays.advance(check=3, progress=4, lr_decay_in=None)
    assert decays.last_decay_at is None and decays.decay_check is None


def test_patience_counts_from_a_known_decay() -> None:
    # The MultiStepLR curve of the review: best on the flat stretch long before the decay at 57, and
    # the decay needs 8 epochs to beat it. Patience restarts at the decay.
    e = np.arange(80)
    acc = np.where(e < 57, 80.0 + 10 * (1 - np.exp(-e / 4.0)), 88.0 + 0.5 * (e - 57))
    acc[12] = 91.0  # the best of the flat stretch, 45 epochs before the decay
    decisions = run(acc, (e + 1) * 1.0, StoppingConfig(mode="max", patience=10), lr_hint=lr_hint_for(57))
    i, _ = stop_of(decisions)
    assert i >= 57 + 10  # not when the post-decay hold lifts
    assert max(d.best_metric for d in decisions) > 91.0  # the decay paid off before any stop


def test_plateau_after_a_decay_says_so() -> None:
    flat = np.full(80, 1.0)
    decisions = run(flat, np.arange(1, 81) * 0.1, StoppingConfig(patience=8), lr_hint=lr_hint_for(40))
    i, reason = stop_of(decisions)
    assert reason is StopReason.PLATEAU and i == 40 + 8 - 1
    assert "since the learning-rate decay at epoch 40" in decisions[-1].message
    assert decisions[-1].wait_count == i  # Lightning's count, from the first check


def test_post_decay_hold_is_counted_in_checks() -> None:
    # Validation every 5 epochs: the hold after a decay lasts DECAY_WINDOW checks, not 5 epochs.
    epochs = np.arange(4, 200, 5)
    flat = np.full(len(epochs), 1.0)
    hint = lambda i: 100 - epochs[i] - 1 if epochs[i] < 100 else None  # noqa: E731
    decisions = run(flat, (epochs + 1) * 0.1, StoppingConfig(patience=2), epochs=epochs, lr_hint=hint)
    first_after = int(np.argmax(epochs >= 100))
    held = [d.hold for d in decisions[first_after : first_after + schedule.DECAY_WINDOW]]
    assert held == ["lr_decay_ahead"] * schedule.DECAY_WINDOW
    assert stop_of(decisions) == (first_after + schedule.DECAY_WINDOW, StopReason.PLATEAU)


def lightning_stop(metric: np.ndarray, patience: int) -> tuple[int, StopReason | None]:
    """Where Lightning's own EarlyStopping(mode="min") stops on ``metric``: (check, PLATEAU), else
    (last check, None)."""
    lightning = EarlyStopping(monitor="m", patience=patience, mode="min")
    for i, value in enumerate(metric):
        if lightning._evaluate_stopping_criteria(torch.tensor(float(value), dtype=torch.float64))[0]:
            return i, StopReason.PLATEAU
    return len(metric) - 1, None


def jump_free_walks(rng: np.random.Generator, min_length: int, max_patience: int):
    """Up to 20 noisy falling random walks of ``min_length``-79 checks without a step-jump (the
    others are drawn and skipped), each with a patience drawn from 1 to ``max_patience - 1``."""
    for _ in range(20):
        n = int(rng.integers(min_length, 80))
        metric = 1.0 + np.cumsum(rng.normal(-0.002, 0.01, n))
        if schedule.detect_steps(-metric):
            continue
        yield metric, int(rng.integers(1, max_patience))


@pytest.mark.parametrize("seed", range(6))
def test_same_stops_as_lightning_without_schedule_information(seed: int) -> None:
    # No schedule information, no step-jump in the curve, the marginal rule off: Lightning's rule.
    for metric, patience in jump_free_walks(np.random.default_rng(seed), min_length=20, max_patience=12):
        config = StoppingConfig(patience=patience, min_epochs=0, min_relative_gain=None)
        ours = stop_of(run(metric, np.arange(1, len(metric) + 1) * 0.1, config, max_epochs=None))
        assert ours == lightning_stop(metric, patience)


@pytest.mark.parametrize("seed", range(3))
def test_same_stops_as_lightning_with_a_plan_when_the_rest_rule_is_off(seed: int) -> None:
    # With a planned end, any patience, patience_rest_fraction=None: still Lightning's rule.
    for metric, patience in jump_free_walks(
        np.random.default_rng(100 + seed), min_length=30, max_patience=40
    ):
        config = StoppingConfig(
            patience=patience, min_epochs=0, min_relative_gain=None, patience_rest_fraction=None
        )
        n = len(metric)
        ours = stop_of(run(metric, np.arange(1, n + 1) * 0.1, config, max_epochs=n))
        assert ours == lightning_stop(metric, patience)


def test_the_wait_shrinks_to_half_the_checks_still_planned() -> None:
    # Best at epoch 9 of 60 planned, flat after it: patience 30 alone would stop at epoch 39;
    # the rest rule stops once the wait reaches half the checks still planned: 17 checks without
    # improvement at epoch 26, when 33 remain (ceil(16.5) = 17).
    metric = np.concatenate([np.linspace(1.0, 0.5, 10), np.full(50, 0.6)])
    costs = np.arange(1, 61) * 0.1
    config = StoppingConfig(min_relative_gain=None)
    decisions = run(metric, costs, config, max_epochs=60)
    assert stop_of(decisions) == (26, StopReason.PLATEAU)
    assert decisions[-1].wait_count == 17
    assert "patience_rest_fraction = 0.5" in decisions[-1].message
    assert "33 checks still planned" in decisions[-1].message
    # Without a planned end, or with the rule off, patience decides.
    assert stop_of(run(metric, costs, config, max_epochs=None)) == (39, StopReason.PLATEAU)
    off = replace(config, patience_rest_fraction=None)
    assert stop_of(run(metric, costs, off, max_epochs=60)) == (39, StopReason.PLATEAU)
    # Near the end the wait is never shorter than REST_PATIENCE_MIN checks.
    late = np.concatenate([np.linspace(1.0, 0.5, 55), np.full(5, 0.6)])
    assert stop_of(run(late, costs, config, max_epochs=60)) == (59, None)


# --------------------------------------------------------------------------- budget per check (review B8)


def test_budget_with_several_checks_per_epoch() -> None:
    # Four checks per epoch (val_check_interval=0.25), each costing 0.25: the budget must project
    # the next check (0.25), not the next epoch, so it stops at the last check within budget.
    n = 40
    epochs = np.arange(n) // 4
    costs = 0.25 * np.arange(1, n + 1)
    metrics = 2.0 - 0.01 * np.arange(n)
    decisions = run(metrics, costs, StoppingConfig(energy_budget_kwh=5.1), epochs=epochs, max_epochs=10)
    i, reason = stop_of(decisions)
    assert reason is StopReason.ENERGY_BUDGET
    assert costs[i] == pytest.approx(5.0) and decisions[-1].next_epoch_kwh == pytest.approx(0.25)


# --------------------------------------------------------------------------- state version


def test_state_of_another_version_is_refused() -> None:
    policy = StoppingPolicy()
    policy.update(1.0, 0.1, epoch=0)
    state = policy.state_dict()
    with pytest.raises(ValueError, match=r"state version must be 3 \(or 2\), got 1"):
        StoppingPolicy().load_state_dict({**state, "version": 1})
    with pytest.raises(ValueError, match="got None"):
        StoppingPolicy().load_state_dict({k: v for k, v in state.items() if k != "version"})


def test_state_round_trip_keeps_the_decay_tracker() -> None:
    flat = np.full(60, 1.0)
    config = StoppingConfig(patience=8)
    hint = lr_hint_for(30)
    full = run(flat, np.arange(1, 61) * 0.1, config, lr_hint=hint, stop_on_first=False)
    first = StoppingPolicy(config)
    for e in range(33):
        first.update(1.0, 0.1 * (e + 1), epoch=e, epochs_until_lr_decay=hint(e))
    resumed = StoppingPolicy(config)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got = [resumed.update(1.0, 0.1 * (e + 1), epoch=e, epochs_until_lr_decay=hint(e)) for e in range(33, 60)]
    assert got == full[33:]


# --------------------------------------------------------------------------- progress: fractions, steps


def run_progress(metrics, costs, config, progress, *, horizon=None, per_epoch=1.0, decay_in=None):
    policy = StoppingPolicy(config)
    out = []
    for m, c, p in zip(metrics, costs, progress, strict=True):
        d = policy.update(
            float(m),
            float(c),
            progress=float(p),
            horizon=horizon,
            progress_per_epoch=per_epoch,
            lr_decay_in=None if decay_in is None else decay_in(p),
        )
        out.append(d)
        if d.should_stop:
            break
    return out


def test_epoch_and_progress_forms_make_the_same_decisions(nas_curves) -> None:
    for curve in nas_curves[:6]:
        config = replace(StoppingConfig(), mode=curve.mode)
        by_epoch = run(curve.metrics, curve.costs, config, epochs=curve.epochs - 1, max_epochs=50)
        by_progress = run_progress(curve.metrics, curve.costs, config, curve.epochs.astype(float), horizon=50)
        assert [(d.should_stop, d.reason, d.epoch, d.message) for d in by_epoch] == [
            (d.should_stop, d.reason, d.epoch, d.message) for d in by_progress
        ]
        assert by_progress[-1].progress == float(curve.epochs[len(by_progress) - 1])


def test_decisions_do_not_depend_on_the_unit_of_progress(nas_curves) -> None:
    # The same run measured in epochs, in steps (100 an epoch, planned as max_steps), and with four
    # checks an epoch measured in quarter epochs: the same decisions.
    for curve in nas_curves[:6]:
        config = replace(StoppingConfig(), mode=curve.mode)
        epochs = curve.epochs.astype(float)
        a = run_progress(curve.metrics, curve.costs, config, epochs, horizon=50)
        b = run_progress(curve.metrics, curve.costs, config, 100 * epochs, horizon=5000, per_epoch=100)
        assert [(d.should_stop, d.reason, d.epoch, d.hold) for d in a] == [
            (d.should_stop, d.reason, d.epoch, d.hold) for d in b
        ]


def test_min_epochs_counts_epochs_with_several_checks_an_epoch() -> None:
    flat = np.full(40, 1.0)
    progress = 0.25 * np.arange(1, 41)  # val_check_interval=0.25
    config = StoppingConfig(patience=1, min_epochs=3, min_horizon_fraction=0.0)
    decisions = run_progress(flat, 0.1 * np.arange(1, 41), config, progress, horizon=10)
    i, reason = stop_of(decisions)
    assert progress[i] == 3.0 and reason is not None  # at the 12th check, after three epochs
    assert all(d.hold == "min_epochs" for d in decisions[:11])
    assert decisions[-1].epoch == 2 and decisions[5].epoch == 1  # 0-based epoch the check fell in


def test_min_epochs_with_a_check_every_few_epochs() -> None:
    # check_val_every_n_epoch=2: progress 2, 4, 6, ...; min_epochs=5 holds until progress 6.
    flat = np.full(20, 1.0)
    progress = 2.0 * np.arange(1, 21)
    config = StoppingConfig(patience=1, min_epochs=5, min_horizon_fraction=0.0)
    i, reason = stop_of(run_progress(flat, 0.1 * progress, config, progress, horizon=40))
    assert progress[i] == 6.0 and reason is StopReason.PLATEAU


def test_min_epochs_counts_checks_when_the_run_has_no_epochs() -> None:
    flat = np.full(20, 1.0)
    steps = 500.0 * np.arange(1, 21)  # an iterable dataset: max_steps, no epochs
    config = StoppingConfig(patience=1, min_epochs=4, min_horizon_fraction=0.0)
    decisions = run_progress(flat, 0.1 * np.arange(1, 21), config, steps, horizon=10_000, per_epoch=None)
    assert stop_of(decisions) == (3, StopReason.PLATEAU)
    assert decisions[-1].epoch == 3  # no epochs: the check index


def test_horizon_fraction_is_a_fraction_of_progress() -> None:
    # A saturated curve checked four times an epoch, planned for 25 epochs: the marginal rule waits
    # for more than half of the progress, not of the checks.
    x = np.arange(1, 101, dtype=float)
    metric = 2.0 + 3.0 * np.exp(-x / 8.0)
    progress = 0.25 * x
    config = StoppingConfig(patience=1000, min_horizon_fraction=0.5)
    decisions = run_progress(metric, x, config, progress, horizon=25)
    i, reason = stop_of(decisions)
    assert reason is StopReason.MARGINAL_GAIN and progress[i] > 12.5
    assert all(d.hold == "horizon_fraction" for d in decisions[20:50])


def test_a_known_decay_in_steps_holds_like_one_in_epochs() -> None:
    metric, costs = _step_curve()
    config = StoppingConfig(patience=5, min_horizon_fraction=0.0)
    steps = 200.0 * np.arange(1, 101)  # 200 steps an epoch; the decay starts at step 12,000
    informed = run_progress(
        metric,
        costs,
        config,
        steps,
        horizon=20_000,
        per_epoch=200,
        decay_in=lambda p: 12_000 - p if p <= 12_000 else None,
    )
    i, _ = stop_of(informed)
    assert i >= 60 and all(d.hold == "lr_decay_ahead" for d in informed[5:60])
    by_epoch = run(metric, costs, config, max_epochs=100, lr_hint=lr_hint_for(60))
    assert stop_of(by_epoch) == (i, informed[-1].reason)


def test_progress_arguments_are_checked() -> None:
    policy = StoppingPolicy()
    policy.update(1.0, 1.0, progress=np.float32(0.5), horizon=np.int64(10))  # numpy scalars are numbers
    policy.update(1.0, 1.0, progress=torch.tensor(0.75), horizon=10)  # so is a one-element tensor
    with pytest.raises(ValueError, match=r"`progress` went backwards: 0\.5 after 0\.75"):
        policy.update(1.0, 2.0, progress=0.5)
    for bad in (True, "1", float("nan"), -1.0):
        with pytest.raises(ValueError, match="`progress` must be a finite number >= 0"):
            policy.update(1.0, 2.0, progress=bad)
    with pytest.raises(ValueError, match="`horizon` must be a finite number > 0"):
        policy.update(1.0, 2.0, progress=1.0, horizon=0)
    with pytest.raises(ValueError, match="`progress_per_epoch` must be a finite number > 0"):
        policy.update(1.0, 2.0, progress=1.0, progress_per_epoch=0)
    with pytest.raises(ValueError, match="either `epoch`"):
        policy.update(1.0, 2.0, epoch=3, progress=4.0)
    with pytest.raises(ValueError, match="not `max_epochs`"):
        policy.update(1.0, 2.0, progress=4.0, max_epochs=10)
    with pytest.raises(ValueError, match=r"`progress`.*or `epoch`.*is required"):
        policy.update(1.0, 2.0)


def test_state_of_version_2_resumes_with_the_same_decisions(nas_curves) -> None:
    # A checkpoint written before progress (0-based epoch indices, decay epochs) resumes exactly.
    curve = nas_curves[5]
    config = replace(StoppingConfig(), mode=curve.mode)
    hint = lr_hint_for(30)
    steps = list(zip(curve.metrics, curve.costs, curve.epochs - 1, strict=True))
    full = StoppingPolicy(config)
    expected = [
        full.update(float(m), float(c), epoch=int(e), max_epochs=50, epochs_until_lr_decay=hint(int(e)))
        for m, c, e in steps
    ]
    first = StoppingPolicy(config)
    for m, c, e in steps[:32]:
        first.update(float(m), float(c), epoch=int(e), max_epochs=50, epochs_until_lr_decay=hint(int(e)))
    state = first.state_dict()
    decays = state["decays"]
    old = {  # the version-2 layout
        **{k: v for k, v in state.items() if k not in ("progress", "decays")},
        "version": 2,
        "epochs": [int(p) - 1 for p in state["progress"]],
        "decays": {
            "next_decay_epoch": None if decays["next_decay_at"] is None else int(decays["next_decay_at"]),
            "last_decay_epoch": None if decays["last_decay_at"] is None else int(decays["last_decay_at"]),
            "decay_check": decays["decay_check"],
            "decay_paid": decays["decay_paid"],
            "decays_pay": decays["decays_pay"],
        },
    }
    assert old["decays"]["last_decay_epoch"] == 30  # the decay happened before the cut
    resumed = StoppingPolicy(config)
    resumed.load_state_dict(json.loads(json.dumps(old)))
    got = [
        resumed.update(float(m), float(c), epoch=int(e), max_epochs=50, epochs_until_lr_decay=hint(int(e)))
        for m, c, e in steps[32:]
    ]
    assert got == expected[32:]


def test_a_run_that_got_worse_after_its_best_is_stopped_by_the_marginal_rule() -> None:
    # Over-fitting: the loss bottoms out at epoch 10 and rises after. The best already banked is
    # what the rest of the run would have to beat, so the marginal rule stops it, long before the
    # planned end and before the plateau rule (patience 1000, no rest-of-run wait here) would.
    rng = np.random.default_rng(0)
    e = np.arange(100)
    loss = np.where(e < 10, 2.0 - 0.1 * e, 1.0 + 0.004 * (e - 10)) + rng.normal(0, 0.01, 100)
    config = StoppingConfig(patience=1000, patience_rest_fraction=None)
    i, reason = stop_of(run(loss, 0.1 * (e + 1), config, max_epochs=100))
    assert reason is StopReason.MARGINAL_GAIN and 50 <= i < 75


# --------------------------------------------------------------------------- what a stop avoided


def test_a_stop_says_what_it_avoided_up_to_the_planned_end(nas_curves) -> None:
    stopped = 0
    for curve in nas_curves:
        decisions = run(
            curve.metrics,
            curve.costs,
            replace(StoppingConfig(), mode=curve.mode),
            epochs=curve.epochs - 1,
            max_epochs=50,
        )
        assert all(d.savings is None for d in decisions[:-1])  # only a stop carries it
        d = decisions[-1]
        if not d.should_stop:
            assert d.savings is None
            continue
        stopped += 1
        i = len(decisions) - 1
        s = d.savings
        assert s.progress_not_run == s.epochs_not_run == s.checks_not_run == 50 - curve.epochs[i]
        # The projection from the recent epochs against what the rest of the logged run cost.
        actual = curve.costs[-1] - curve.costs[i]
        assert s.kwh_not_spent == pytest.approx(actual, rel=0.15)
        assert s.metric_gain_forgone is not None and s.metric_gain_forgone >= 0
        assert s.metric_gain_forgone < 0.2  # nats: a stop gives up little of a smooth loss
    assert stopped >= 3


def test_savings_with_several_checks_an_epoch_and_in_steps() -> None:
    x = np.arange(1, 101, dtype=float)
    metric = 2.0 + 3.0 * np.exp(-x / 8.0)
    config = StoppingConfig(patience=1000)
    quarter = run_progress(metric, 0.01 * x, config, 0.25 * x, horizon=25)
    steps = run_progress(metric, 0.01 * x, config, 50.0 * x, horizon=5000, per_epoch=200)
    assert stop_of(quarter)[1] is StopReason.MARGINAL_GAIN and stop_of(quarter) == stop_of(steps)
    a, b = quarter[-1].savings, steps[-1].savings
    assert a.checks_not_run == b.checks_not_run == 4 * a.epochs_not_run == 4 * b.epochs_not_run
    assert b.progress_not_run == 200 * b.epochs_not_run
    assert a.kwh_not_spent == pytest.approx(0.01 * a.checks_not_run)
    assert a.kwh_not_spent == pytest.approx(b.kwh_not_spent)


@pytest.mark.parametrize(
    ("progress", "horizon", "checks"),
    [
        ([19.0, 20.0, 21.0, 22.0, 22.5], 30, 8),  # ended mid-epoch (Trainer(min_steps)): 23, ..., 30
        ([1.0, 1.5], 10, 9),  # the same after one whole epoch: 2, ..., 10
        ([0.25, 0.5, 0.75, 1.0, 1.125], 2, 4),  # four checks an epoch, ended inside one: 1.25, ..., 2
        ([2.0, 4.0, 6.0], 11, 2),  # every second epoch, to an odd plan: 8, 10
        ([100.0, 200.0, 300.0, 350.0], 1000, 7),  # in steps, every 100, ended at 350: 400, ..., 1000
        ([1.0, 2.0, 3.0], 10, 7),  # one an epoch: as before
    ],
)
def test_the_checks_a_stop_leaves_unrun_are_whole_checks_of_the_schedule(progress, horizon, checks) -> None:
    """A run that ended inside a check interval (its last check at 22.5 epochs, one check an epoch)
    leaves the schedule's checks to the plan unrun - 8, not the 8.33 that the mean progress per
    check (pulled down by the last, partial one) made of it."""
    from lightning_green.policy import project_savings

    costs = 0.1 * np.asarray(progress)
    savings = project_savings(costs, np.asarray(progress), horizon)
    assert savings.checks_not_run == checks and isinstance(savings.checks_not_run, float)
    assert savings.progress_not_run == horizon - progress[-1]


def test_savings_of_a_plateau_stop_before_the_marginal_rule_may_act() -> None:
    # A flat metric stopped by patience in the first half: the fit is made at the stop.
    rng = np.random.default_rng(2)
    metric = 1.0 + rng.normal(0, 0.01, 100)
    decisions = run(metric, np.arange(1, 101) * 0.5, StoppingConfig(patience=10), max_epochs=100)
    i, reason = stop_of(decisions)
    assert reason is StopReason.PLATEAU and i < 50 and decisions[-1].hold == "horizon_fraction"
    s = decisions[-1].savings
    assert s.epochs_not_run == 100 - (i + 1) and s.kwh_not_spent == pytest.approx(0.5 * s.epochs_not_run)
    assert s.metric_gain_forgone is not None and s.metric_gain_forgone < 0.05


def test_no_savings_without_a_plan_or_at_its_end() -> None:
    flat = np.full(30, 1.0)
    no_plan = run(flat, np.arange(1, 31) * 0.1, StoppingConfig(patience=3, min_epochs=0))
    assert no_plan[-1].should_stop and no_plan[-1].savings is None
    at_end = run(flat[:4], np.arange(1, 5) * 0.1, StoppingConfig(patience=3, min_epochs=0), max_epochs=4)
    assert at_end[-1].should_stop and at_end[-1].savings is None


# A real run: the digits CNN, val_acc (percent) at four checks an epoch, cumulative kWh (the CPU-time
# estimate, in micro-kWh here) and epochs completed at each check; planned for 12 epochs.
DIGITS_ACC = [16.713, 31.755, 47.632, 63.788, 62.396, 80.223, 83.565, 86.908, 88.858, 83.844, 91.643, 89.694,
              92.479, 92.479, 92.201, 93.315, 92.479, 92.479, 93.593, 91.643, 93.872, 94.986, 95.265, 94.708,
              96.379, 93.315, 95.822, 94.429, 96.1, 95.265]  # fmt: skip
DIGITS_UKWH = [0.3333, 0.5278, 0.6944, 0.9167, 1.1389, 1.3333, 1.5, 1.6944, 1.9167, 2.1111, 2.2778, 2.4722,
               2.6944, 2.8611, 3.0556, 3.25, 3.5, 3.6944, 3.8611, 4.0556, 4.2778, 4.4722, 4.6389, 4.8333,
               5.0556, 5.2778, 5.5, 5.6944, 5.9167, 6.1389]  # fmt: skip


def test_the_gain_a_stop_forgoes_is_projected_from_the_curve_that_fits_best() -> None:
    """What the summary says a stop gave up is a central projection, not the decision's optimistic one.

    The decisions project from the most optimistic acceptable learning-curve family (so as not to
    stop a run that might still pay); what a stop forgoes is projected from the family that
    describes the history best. On this run the optimistic family projects the accuracy past 100 %.
    """
    policy = StoppingPolicy(StoppingConfig(mode="max", patience=5, min_epochs=1))
    for k, (acc, ukwh) in enumerate(zip(DIGITS_ACC, DIGITS_UKWH, strict=True)):
        decision = policy.update(acc, ukwh * 1e-6, progress=0.25 * (k + 1), horizon=12.0)
    assert decision.should_stop and decision.reason is StopReason.PLATEAU
    forgone = decision.savings.metric_gain_forgone
    best = max(DIGITS_ACC)
    assert 0 < forgone < 2.0 and best + forgone < 100.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(metric=0.9, cost_kwh=0.2, epoch=1, max_epochs=float("inf")), "max_epochs"),
        (dict(metric=0.9, cost_kwh=0.2, epoch=1, max_epochs=float("nan")), "max_epochs"),
        (dict(metric=0.9, cost_kwh=0.2, epoch=1, max_epochs=2.5), "max_epochs"),
        (dict(metric=None, cost_kwh=0.2, epoch=1), "metric"),
        (dict(metric="abc", cost_kwh=0.2, epoch=1), "metric"),
        (dict(metric=0.9, cost_kwh=None, epoch=1), "cost_kwh"),
        (dict(metric=0.9, cost_kwh="x", epoch=1), "cost_kwh"),
    ],
)
def test_a_refused_update_names_the_argument_and_records_nothing(kwargs, name) -> None:
    policy = StoppingPolicy(StoppingConfig(min_epochs=0, patience=3))
    policy.update(1.0, 0.1, epoch=0, max_epochs=10)
    before = policy.state_dict()
    with pytest.raises(ValueError, match=f"`{name}`"):
        policy.update(**kwargs)
    assert policy.state_dict() == before  # the next update decides on the checks that were taken


@pytest.mark.parametrize(
    ("break_it", "match"),
    [
        (lambda s: s.pop("metrics"), "malformed: KeyError"),
        (lambda s: s.update(costs_kwh=["nan", 0.2]), "finite"),
        (lambda s: s.update(progress=[2.0, 1.0]), "must not decrease"),
        (lambda s: s.update(costs_kwh=[0.1]), "one of each per check"),
    ],
)
def test_a_malformed_state_is_refused_naming_what_is_wrong(break_it, match) -> None:
    policy = StoppingPolicy(StoppingConfig(min_epochs=0))
    policy.update(1.0, 0.1, epoch=0)
    policy.update(0.9, 0.2, epoch=1)
    state = policy.state_dict()
    break_it(state)
    with pytest.raises(ValueError, match=match):
        StoppingPolicy().load_state_dict(state)
    with pytest.raises(ValueError, match="must be a dict"):
        StoppingPolicy().load_state_dict([1, 2])


def test_the_budget_counts_the_energy_outside_the_epochs_but_projects_from_the_epochs():
    """A setup of 3 kWh before epochs of 1 kWh: the next epoch is projected at 1 kWh (not 4), and the
    budget, the whole run's, counts the setup: 3 + 2 + 1 > 5.5 stops after the second epoch."""
    policy = StoppingPolicy(StoppingConfig(energy_budget_kwh=5.5, min_epochs=0))
    first = policy.update(1.0, 1.0, epoch=0, max_epochs=10, outside_epochs_kwh=3.0)
    assert not first.should_stop and first.next_epoch_kwh == 1.0  # 3 + 1 + 1 <= 5.5
    second = policy.update(0.9, 2.0, epoch=1, max_epochs=10, outside_epochs_kwh=3.0)
    assert second.reason is StopReason.ENERGY_BUDGET and second.next_epoch_kwh == 1.0
    assert "5 kWh spent (3 of it outside the training epochs)" in second.message
    assert policy.history.costs_kwh.tolist() == [1.0, 2.0]  # the epochs' costs only
    with pytest.raises(ValueError, match=r"`outside_epochs_kwh` must be a finite number >= 0, got -1"):
        policy.update(0.8, 3.0, epoch=2, outside_epochs_kwh=-1.0)
