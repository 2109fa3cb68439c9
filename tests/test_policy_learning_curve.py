"""Learning-curve fits, the step-jump detector and the cost projections."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_green.policy import budget, schedule
from lightning_green.policy.learning_curve import (
    FAMILIES,
    CurveFit,
    acceptable,
    fit_family,
    grid_fit,
    noise_sd,
)
from lightning_green.policy.marginal import assess_marginal, linear_slope


@pytest.mark.parametrize(
    ("family", "truth"),
    [("pow3", (0.2, 0.5, 0.7)), ("exp3", (1.0, 0.3, 4.0)), ("hyp3", (0.5, 0.8, 0.3))],
)
def test_fit_recovers_parameters(family: str, truth: tuple[float, ...]) -> None:
    fam = FAMILIES[family]
    x = np.linspace(0.05, 1.0, 30)
    y = fam.func(x, *truth)
    fit = fit_family(fam, x, y)
    assert fit is not None
    np.testing.assert_allclose(fit.params, truth, rtol=1e-4, atol=1e-6)
    coarse = grid_fit(fam, x, y)
    np.testing.assert_allclose(coarse.params, truth, rtol=0.05, atol=1e-3)


def test_shape_parameter_held_at_its_bound_for_a_straight_line() -> None:
    x = np.linspace(0.1, 1.0, 20)
    fit = fit_family(FAMILIES["exp3"], x, 2.0 * x)  # no saturation at all
    assert fit is not None and fit.params[2] == pytest.approx(FAMILIES["exp3"].lower[2], rel=1e-3)
    gain, _ = fit.gain(1.0, 2.0)
    assert gain == pytest.approx(2.0, rel=0.01)  # a straight line is extrapolated as one


def test_projection_uncertainty_grows_with_noise() -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(0.05, 1.0, 30)
    clean = FAMILIES["pow3"].func(x, 0.2, 0.5, 0.7)
    _, se_small = fit_family(FAMILIES["pow3"], x, clean + rng.normal(0, 0.001, 30)).gain(1.0, 2.0)
    _, se_large = fit_family(FAMILIES["pow3"], x, clean + rng.normal(0, 0.05, 30)).gain(1.0, 2.0)
    assert se_large > 10 * se_small


def test_acceptance_rejects_a_family_that_misses_the_recent_trend() -> None:
    x = np.linspace(0.05, 1.0, 40)
    y = np.where(x < 0.5, np.sqrt(x), np.sqrt(0.5) + 2.0 * (x - 0.5))  # saturating, then a new rise
    fit = grid_fit(FAMILIES["exp3"], x, y)
    slope, se, _ = linear_slope(x[-10:], y[-10:])
    assert not acceptable(fit, noise_sd(y), x[-10:], (slope, se))


def test_curve_fit_predicts_in_metric_units() -> None:
    fit = CurveFit(
        "pow3",
        (0.0, 1.0, 0.5),
        cost_ref_kwh=0.0,
        cost_scale_kwh=10.0,
        metric_offset=3.0,
        metric_scale=2.0,
        sign=-1.0,
        rmse=0.0,
        n_points=10,
    )
    # A loss (sign -1): at the latest check (cost 10) the fit is at its offset; it falls after.
    assert float(fit.predict(10.0)) == pytest.approx(3.0)
    assert float(fit.predict(40.0)) < 3.0


def test_assessment_is_unit_free() -> None:
    rng = np.random.default_rng(2)
    costs = np.arange(1, 41) * 0.3
    values = -(2.0 + 3.0 * costs**-0.6) + rng.normal(0, 0.01, 40)
    a = assess_marginal(costs, values, segment_start=0, horizon_cost_kwh=6.0, sign=-1.0)
    b = assess_marginal(costs * 1e6, 100 * values + 7, segment_start=0, horizon_cost_kwh=6e6, sign=-1.0)
    assert a.relative_gain == pytest.approx(b.relative_gain, rel=1e-6)
    assert a.fit.family == b.fit.family


def test_noise_sd_ignores_a_smooth_trend() -> None:
    rng = np.random.default_rng(4)
    trend = np.linspace(0, 10, 200)
    assert noise_sd(trend + rng.normal(0, 0.1, 200)) == pytest.approx(0.1, rel=0.2)


def test_detect_steps_finds_decays_not_early_training() -> None:
    rng = np.random.default_rng(5)
    e = np.arange(90)
    early = 1.0 - np.exp(-e / 4.0)  # fast early training: no step
    level = early + np.select([e < 30, e < 60], [0.0, 0.5], 0.8) + rng.normal(0, 0.02, 90)
    steps = schedule.detect_steps(level)
    assert len(steps) == 2 and abs(steps[0] - 30) <= 1 and abs(steps[1] - 60) <= 1
    assert schedule.detect_steps(early + rng.normal(0, 0.02, 90)) == []
    assert schedule.step_hold_until(e + 1.0, steps, horizon=90) == 90  # 61 + (61 - 31), capped
    assert schedule.step_hold_until(e + 1.0, steps[:1], horizon=90) == 61  # 31 + (31 - 1), not epoch 1


def test_lr_decay_ahead_within_horizon() -> None:
    assert schedule.lr_decay_ahead(11, 0, 100)
    assert not schedule.lr_decay_ahead(99, 1, 100)  # the decayed epoch would be the 101st
    assert schedule.lr_decay_ahead(99, 0, 100)
    assert schedule.lr_decay_ahead(99.5, 0.25, 100)  # fractional progress: a quarter epoch ahead
    assert not schedule.lr_decay_ahead(99.75, 0.25, 100)
    assert schedule.lr_decay_ahead(11, 500, None)  # no plan: ahead (DecayTracker bounds the wait)


def test_cost_per_epoch_robust_to_a_late_meter() -> None:
    costs = np.array([1.0, 2.0, 2.0, 2.0, 5.0, 6.0])  # stale twice, then caught up
    epochs = np.arange(6)
    assert budget.cost_per_epoch(costs, epochs) == pytest.approx(1.0)
    assert budget.remaining_cost(costs, epochs, max_epochs=10) == pytest.approx(4.0)
    assert budget.remaining_cost(costs, epochs, max_epochs=None) == pytest.approx(6.0)
    mlperf_like = np.array([10.0, 11.0, 12.0])  # checks thousands of "epochs" apart: cost per check
    assert budget.next_check_cost(mlperf_like) == pytest.approx(1.0)


# --------------------------------------------------------------------------- review B7, B8


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0],  # alternating: every difference the same size
        [90, 90, 91, 90, 90, 90, 91, 90, 90, 90, 90, 91, 90, 90],  # a quantised plateau
        [90, 90, 90, 90, 90, 91, 90, 90, 90, 90, 90, 90, 90, 90],  # one flicker on a grid
    ],
)
def test_noise_sd_sees_noise_that_successive_differences_hide(values) -> None:
    assert noise_sd(np.array(values, dtype=float)) > 0.25


def test_noise_sd_is_zero_only_without_noise() -> None:
    assert noise_sd(np.full(10, 3.0)) == 0.0
    assert noise_sd(np.linspace(1.0, 2.0, 10)) == 0.0  # a straight line is all trend
    rng = np.random.default_rng(9)
    quantised = np.round(90 + rng.normal(0, 0.6, 400))  # whole points
    assert noise_sd(quantised) == pytest.approx(0.6, rel=0.3)


def test_noise_sd_unaffected_by_a_trend_and_curvature() -> None:
    rng = np.random.default_rng(4)
    x = np.linspace(0, 1, 300)
    assert noise_sd(5.0 * x**2 + rng.normal(0, 0.05, 300)) == pytest.approx(0.05, rel=0.2)


def test_next_check_cost_is_per_check() -> None:
    # Four checks per epoch: the next check costs a quarter epoch, whatever the epoch indices say.
    costs = 0.25 * np.arange(1, 13)
    assert budget.next_check_cost(costs) == pytest.approx(0.25)
    over, step = budget.exceeds_budget(costs, 3.3)
    assert not over and step == pytest.approx(0.25)
    # A meter that updates late (stale, then caught up) still averages out.
    late = np.array([1.0, 2.0, 2.0, 2.0, 5.0, 6.0])
    assert budget.next_check_cost(late) == pytest.approx(1.0)


def test_linear_slope_is_shared() -> None:
    from lightning_green.policy import learning_curve, marginal

    assert marginal.linear_slope is learning_curve.linear_slope
    assert not hasattr(learning_curve, "_line_slope")


# --------------------------------------------------------------------------- the gain of the best value


@pytest.mark.parametrize("seed", range(4))
def test_expected_improvement_matches_simulation(seed: int) -> None:
    from lightning_green.policy.marginal import expected_improvement

    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 0.5, 6)
    counts = rng.integers(1, 20, 6)
    sigma, best = float(rng.uniform(0.1, 1.0)), float(rng.normal(0.5, 0.3))
    draws = rng.normal(np.repeat(means, counts), sigma, (100_000, int(counts.sum()))).max(axis=1)
    simulated = float(np.maximum(draws, best).mean() - best)
    assert expected_improvement(best, means, sigma, counts) == pytest.approx(simulated, abs=0.01)


def test_expected_improvement_needs_no_numpy_2(monkeypatch: pytest.MonkeyPatch) -> None:
    # numpy>=1.24 is declared: numpy < 2.0 has no numpy.trapezoid (the stopper crashed there).
    # Without it, the expected improvement is what numpy's own trapezoidal rule gives, to the bit.
    from lightning_green.policy.marginal import expected_improvement

    rng = np.random.default_rng(0)
    cases = [
        (
            float(rng.normal(0.5, 0.3)),
            rng.normal(0.0, 0.5, 6),
            float(rng.uniform(0.1, 1.0)),
            rng.integers(1, 20, 6),
        )
        for _ in range(5)
    ]
    numpys_rule = getattr(np, "trapezoid", None) or np.trapz  # numpy 2, numpy 1
    monkeypatch.setattr(np, "trapezoid", numpys_rule, raising=False)
    with_numpys_rule = [expected_improvement(*case) for case in cases]
    monkeypatch.delattr(np, "trapezoid")
    assert [expected_improvement(*case) for case in cases] == with_numpys_rule


def test_projection_is_the_gain_of_the_best_value() -> None:
    # A smooth curve: the best is the latest check, and the projected gain is the fit's own.
    costs = np.arange(1, 41, dtype=float)
    smooth = -(2.0 + 3.0 * costs**-0.6)
    a = assess_marginal(costs, smooth, segment_start=0, horizon_cost_kwh=40.0, sign=-1.0, n_future_checks=40)
    trend_gain = float(a.fit.predict(80.0) - a.fit.predict(40.0))  # metric units, a loss: negative
    assert a.projected_gain_central == pytest.approx(-trend_gain, rel=0.05)
    # A saturating noisy curve, and the same with one lucky check above its trend: that best is not
    # what the trend will improve on, so less is projected, the more the luckier the check.
    rng = np.random.default_rng(1)
    noisy = -(2.0 + 3.0 * np.exp(-costs / 8.0)) + rng.normal(0, 0.005, 40)
    gains = []
    for luck in (0.0, 0.01, 0.02, 0.03):
        lucky = noisy.copy()
        lucky[38] += luck
        c = assess_marginal(
            costs, lucky, segment_start=0, horizon_cost_kwh=40.0, sign=-1.0, n_future_checks=40
        )
        assert c.fit is not None and c.projected_gain_central <= c.projected_gain
        gains.append(c.projected_gain)
    assert gains == sorted(gains, reverse=True) and gains[-1] < 0.3 * gains[0]


def test_a_flat_noisy_metric_can_still_beat_its_best() -> None:
    # On a flat trend, only the noise can bring a new best: more checks to come, more chance.
    rng = np.random.default_rng(3)
    costs = np.arange(1, 61, dtype=float)
    flat = 90.0 + rng.normal(0, 0.5, 60)
    few = assess_marginal(costs, flat, segment_start=0, horizon_cost_kwh=60.0, sign=1.0, n_future_checks=3)
    many = assess_marginal(costs, flat, segment_start=0, horizon_cost_kwh=60.0, sign=1.0, n_future_checks=300)
    assert 0 <= few.projected_gain < many.projected_gain
