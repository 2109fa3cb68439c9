"""Gradient noise scale estimator: recovers a known tr(Σ)/|G|² from synthetic gradients."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lightning_green.policy.noise_scale import GradientNoiseScale, noise_scale_components


def _synthetic(dim: int, b_noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A true gradient G and a diagonal per-example covariance Σ with tr(Σ)/|G|² = b_noise."""
    rng = np.random.default_rng(seed)
    grad = rng.normal(size=dim)
    variances = rng.uniform(0.2, 2.0, size=dim)
    variances *= b_noise * float(grad @ grad) / variances.sum()
    return grad, variances


def _batch_grads(rng, grad, variances, n: int) -> np.ndarray:
    """n per-example gradients G + ε, ε ~ N(0, Σ)."""
    return grad + rng.normal(size=(n, grad.size)) * np.sqrt(variances)


def test_components_are_exact_on_expected_norms():
    # E|G_B|² = |G|² + tr(Σ)/B with |G|² = 2, tr(Σ) = 64.
    g2, trace = noise_scale_components(2 + 64 / 8, 2 + 64 / 32, 8, 32)
    assert g2 == pytest.approx(2.0)
    assert trace == pytest.approx(64.0)


@pytest.mark.parametrize("b_noise", [30.0, 300.0])
def test_recovers_known_noise_scale_from_per_example_gradients(b_noise):
    grad, variances = _synthetic(dim=40, b_noise=b_noise, seed=1)
    assert variances.sum() / (grad @ grad) == pytest.approx(b_noise)
    rng = np.random.default_rng(2)
    gns = GradientNoiseScale(ema_decay=0.999)
    b_small, b_big = 8, 64
    for _ in range(3000):
        per_example = _batch_grads(rng, grad, variances, b_big)
        small = per_example[:b_small].mean(axis=0)
        big = per_example.mean(axis=0)
        gns.update(float(small @ small), float(big @ big), b_small, b_big)
    assert gns.b_noise == pytest.approx(b_noise, rel=0.15)
    assert gns.trace_cov == pytest.approx(variances.sum(), rel=0.15)
    assert gns.grad_sq_norm == pytest.approx(grad @ grad, rel=0.15)


def test_micro_batches_as_under_gradient_accumulation_or_ddp():
    # k ranks (or micro-batches) of 16: small = mean of the per-rank squared norms,
    # big = squared norm of the all-reduced (mean) gradient.
    b_noise = 100.0
    grad, variances = _synthetic(dim=30, b_noise=b_noise, seed=3)
    rng = np.random.default_rng(4)
    gns = GradientNoiseScale(ema_decay=0.999)
    for _ in range(2000):
        per_rank = [_batch_grads(rng, grad, variances, 16).mean(axis=0) for _ in range(4)]
        mean = np.mean(per_rank, axis=0)
        gns.update_from_micro_batches([float(g @ g) for g in per_rank], float(mean @ mean), 16)
    assert gns.b_noise == pytest.approx(b_noise, rel=0.15)


def test_ratio_of_averages_not_average_of_ratios():
    gns = GradientNoiseScale(ema_decay=0.5, min_updates=1)
    # Step 1: |G|² = 1, tr = 8 (ratio 8); step 2: |G|² = 3, tr = 8 (ratio 8/3).
    gns.update(1 + 8 / 4, 1 + 8 / 16, 4, 16)
    gns.update(3 + 8 / 4, 3 + 8 / 16, 4, 16)
    # EMAs with bias correction: |G|² = (0.25*1 + 0.5*3)/0.75, tr = 8 -> ratio 8*0.75/1.75.
    assert gns.grad_sq_norm == pytest.approx(1.75 / 0.75)
    assert gns.trace_cov == pytest.approx(8.0)
    assert gns.b_noise == pytest.approx(8.0 * 0.75 / 1.75)
    assert gns.b_noise != pytest.approx((8.0 + 8.0 / 3) / 2)


def test_none_until_enough_updates_and_inf_when_signal_is_below_noise():
    gns = GradientNoiseScale(min_updates=3)
    assert gns.b_noise is None and gns.grad_sq_norm is None
    for _ in range(2):
        gns.update(3.0, 1.5, 4, 16)
    assert gns.b_noise is None
    gns.update(3.0, 1.5, 4, 16)
    assert gns.b_noise is not None and math.isfinite(gns.b_noise)
    noisy = GradientNoiseScale(min_updates=1)
    # |G_big|² well below what |G_small|² implies: the |G|² estimate is negative.
    noisy.update(10.0, 1.0, 8, 16)
    assert noisy.grad_sq_norm < 0 < noisy.trace_cov
    assert noisy.b_noise == math.inf


def test_state_round_trip_through_json_continues_identically():
    rng = np.random.default_rng(5)
    norms = [(float(a), float(b)) for a, b in rng.uniform([2, 0.5], [4, 1.5], size=(40, 2))]
    a, b = GradientNoiseScale(ema_decay=0.9), GradientNoiseScale(ema_decay=0.9)
    for small, big in norms[:20]:
        a.update(small, big, 8, 32)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for small, big in norms[20:]:
        a.update(small, big, 8, 32)
        b.update(small, big, 8, 32)
        assert a.b_noise == b.b_noise
    assert a.num_updates == b.num_updates == 40


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: GradientNoiseScale(ema_decay=1.0), r"ema_decay must be a number in \[0, 1\), got 1.0"),
        (lambda: GradientNoiseScale(min_updates=-1), "min_updates must be an integer >= 0, got -1"),
        (
            lambda: noise_scale_components(1.0, 1.0, 16, 8),
            "batch_size_big must be larger than batch_size_small",
        ),
        (
            lambda: noise_scale_components(-1.0, 1.0, 8, 16),
            "sq_norm_small must be a finite number >= 0, got -1.0",
        ),
        (
            lambda: noise_scale_components(1.0, 1.0, 0, 16),
            "batch_size_small must be a positive number, got 0",
        ),
        (
            lambda: GradientNoiseScale().update_from_micro_batches([1.0], 1.0, 8),
            "micro_sq_norms needs at least 2 micro-batches, got 1",
        ),
        (lambda: GradientNoiseScale().load_state_dict({"version": 99}), "state version must be 1, got 99"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()
