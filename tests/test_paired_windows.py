"""The paired comparison of interleaved windows and the probing budget (issue: adaptation under noise)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lightning_green.policy.paired_windows import (
    CANDIDATE,
    REFERENCE,
    ProbeBudget,
    compare_interleaved,
    projected_run_energy_j,
)


def _interleave(ref: np.ndarray, cand: np.ndarray) -> tuple[list[str], list[float]]:
    roles, values = [], []
    for r, c in zip(ref, cand, strict=False):
        roles += [REFERENCE, CANDIDATE]
        values += [float(r), float(c)]
    roles.append(REFERENCE)
    values.append(float(ref[len(cand)]))
    return roles, values


@pytest.mark.parametrize("true_ratio", [0.33, 3.0])
def test_a_large_difference_is_resolved_under_heavy_noise(true_ratio: float) -> None:
    """bf16 at 3x the joules of fp32 on a CPU, with 30 % multiplicative window noise: resolved."""
    rng = np.random.default_rng(0)
    ref = np.exp(rng.normal(0.0, 0.3, 5))
    cand = true_ratio * np.exp(rng.normal(0.0, 0.3, 4))
    c = compare_interleaved(*_interleave(ref, cand))
    assert c.verdict == ("cheaper" if true_ratio < 1 else "costlier")
    assert c.ratio_low < true_ratio < c.ratio_high


def test_a_small_difference_inside_the_noise_is_not_adopted() -> None:
    """fp16 1.4 % cheaper than bf16 with a few % of window noise: never 'cheaper' (the H200 case)."""
    rng = np.random.default_rng(1)
    adopted = 0
    for _ in range(200):
        ref = np.exp(rng.normal(0.0, 0.03, 4))
        cand = 0.986 * np.exp(rng.normal(0.0, 0.03, 3))
        adopted += compare_interleaved(*_interleave(ref, cand)).verdict == "cheaper"
    assert adopted <= 10  # 5 % min_saving beyond a 90 % interval: rare false adoption


def test_load_swings_hitting_both_alike_cancel_in_the_pairs() -> None:
    """Load drifting 1x-4x over the windows hides a 0.6 ratio from plain means, not from the pairs."""
    load = np.array([1.0, 1.1, 1.4, 2.0, 2.8, 3.5, 3.9, 3.2, 2.4])  # smooth at the window scale
    roles = [REFERENCE, CANDIDATE] * 4 + [REFERENCE]
    values = [x * (0.6 if r == CANDIDATE else 1.0) for x, r in zip(load, roles, strict=True)]
    c = compare_interleaved(roles, values)
    assert c.verdict == "cheaper"
    assert 0.4 < c.ratio < 0.8
    ref = np.log([v for v, r in zip(values, roles, strict=True) if r == REFERENCE])
    cand = np.log([v for v, r in zip(values, roles, strict=True) if r == CANDIDATE])
    assert stats.ttest_ind(cand, ref, equal_var=False).pvalue > 0.1  # unpaired: unresolved


def test_record_has_the_figures_and_bad_input_is_named() -> None:
    c = compare_interleaved([REFERENCE, CANDIDATE, REFERENCE, CANDIDATE, REFERENCE], [1, 2, 1, 2, 1])
    record = c.to_dict()
    assert record["reference_j_per_sample"] == [1.0, 1.0, 1.0]
    assert record["candidate_j_per_sample"] == [2.0, 2.0]
    assert record["pairs"] == 2 and record["verdict"] == "costlier"
    with pytest.raises(ValueError, match="finite and > 0"):
        compare_interleaved([REFERENCE, CANDIDATE], [1.0, 0.0])
    with pytest.raises(ValueError, match="'probe'"):
        compare_interleaved([REFERENCE, "probe"], [1.0, 1.0])
    with pytest.raises(ValueError, match="min_saving"):
        compare_interleaved([REFERENCE], [1.0], min_saving=1.5)


def test_budget_is_five_percent_of_the_projected_run() -> None:
    projected = projected_run_energy_j(spent_j=120.0, progress=2, horizon=40)
    assert projected == pytest.approx(2400.0)
    budget = ProbeBudget()
    assert budget.allowance_j(projected) == pytest.approx(120.0)
    assert budget.affords(next_probe_j=60.0, spent_probe_j=60.0, projected_run_j=projected)
    assert not budget.affords(next_probe_j=61.0, spent_probe_j=60.0, projected_run_j=projected)
    assert budget.allowance_j(projected_run_energy_j(120.0, 2, None)) == 0.0  # no plan: no probing
    with pytest.raises(ValueError, match="fraction"):
        ProbeBudget(fraction=1.0)
