"""The check history and the incremental step detector: bounded work per check, same results."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_green.policy import StoppingConfig, StoppingPolicy, schedule
from lightning_green.policy import rules as stopping_module  # where decide() calls assess_segment
from lightning_green.policy.history import History, segment_of
from lightning_green.policy.marginal import MAX_FIT_POINTS, assess_segment


def test_a_long_segment_is_evenly_spaced_checks_first_and_latest_included() -> None:
    rng = np.random.default_rng(0)
    costs = np.cumsum(rng.uniform(0.5, 1.5, 1000))
    metrics = 3.0 - np.log1p(costs) + rng.normal(0, 0.01, 1000)
    h = History(metrics, costs, np.arange(1000), sign=-1.0)
    seg = h.segment(100, max_points=64)
    assert len(seg.values) == 64 and seg.n_checks == 900
    assert seg.indices[0] == 100 and seg.indices[-1] == 999
    assert np.ptp(np.diff(seg.indices)) <= 1  # evenly spaced
    assert seg.costs_kwh.tolist() == costs[seg.indices].tolist()  # checks as measured
    assert seg.values.tolist() == (-metrics[seg.indices]).tolist()
    assert seg.cost_ref_kwh == costs[99] and seg.cost_now_kwh == costs[-1]
    short = h.segment(990, max_points=64)  # a short segment is every check
    assert short.costs_kwh.tolist() == costs[990:].tolist()
    assert short.indices.tolist() == list(range(990, 1000))


def test_history_skips_non_finite_checks_for_the_fits() -> None:
    h = History(sign=1.0)
    for i, m in enumerate([1.0, float("nan"), 2.0, float("inf"), 3.0]):
        h.append(m, 0.1 * (i + 1), i)
    assert len(h) == 5 and h.n_finite == 3
    assert h.finite_values.tolist() == [1.0, 2.0, 3.0]
    assert h.finite_costs_kwh.tolist() == pytest.approx([0.1, 0.3, 0.5])
    assert [h.finite_index_of(i) for i in range(3)] == [0, 2, 4]


@pytest.mark.parametrize("seed", range(8))
def test_incremental_step_detector_finds_the_same_jumps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 160
    levels = np.cumsum(rng.choice([0.0, 0.0, 0.0, 0.5], n))  # random step-jumps
    values = levels + rng.normal(0, rng.choice([0.02, 0.1]), n) + 0.3 * (1 - np.exp(-np.arange(n) / 10))
    detector = schedule.StepDetector()
    for i, v in enumerate(values):
        detector.push(v)
        if i % 7 == 0 or i == n - 1:
            assert detector.steps == schedule.detect_steps(values[: i + 1])
    assert detector.steps  # the case is exercised


def test_fit_on_a_thinned_long_segment_agrees_with_the_fit_on_every_check() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    costs = np.arange(1, n + 1) * 0.5
    values = -(2.0 + 3.0 * (costs / costs[-1] * 20) ** -0.5) + rng.normal(0, 0.01, n)
    full = assess_segment(segment_of(costs, values, 0), horizon_cost_kwh=500.0, sign=-1.0)
    binned = assess_segment(segment_of(costs, values, 0, MAX_FIT_POINTS), horizon_cost_kwh=500.0, sign=-1.0)
    assert full.fit is not None and binned.fit is not None
    assert binned.fit.n_points == full.fit.n_points == n  # the fit spans every check
    assert binned.projected_gain == pytest.approx(full.projected_gain, rel=0.1)
    assert binned.average_gain_per_kwh == pytest.approx(full.average_gain_per_kwh, rel=0.01)
    assert binned.gain_per_kwh == pytest.approx(full.gain_per_kwh, rel=0.15)


def test_work_per_check_does_not_grow_with_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    # A never-stopping run of 1500 checks: every fit sees at most MAX_FIT_POINTS points, however
    # long the history (the replay time is linear in the curve's length; benchmarks/stopping.py
    # --scaling times it).
    sizes: list[int] = []
    real = stopping_module.assess_segment

    def observed(segment, **kwargs):
        sizes.append(len(segment.values))
        return real(segment, **kwargs)

    monkeypatch.setattr(stopping_module, "assess_segment", observed)
    n = 1500
    rng = np.random.default_rng(0)
    metrics = 3.0 - np.arange(n) / n + rng.normal(0, 0.2 / n, n)
    policy = StoppingPolicy(StoppingConfig(min_horizon_fraction=0.0))
    for i in range(n):
        assert not policy.update(float(metrics[i]), 0.01 * (i + 1), epoch=i, max_epochs=n).should_stop
    assert len(sizes) == n - 1
    assert sizes[MAX_FIT_POINTS - 1] == MAX_FIT_POINTS and max(sizes) == MAX_FIT_POINTS
