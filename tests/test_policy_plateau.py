"""The plateau rule is Lightning EarlyStopping's, decision for decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason

from lightning_green.policy import PlateauState, StopReason, evaluate_plateau

REASONS = {
    EarlyStoppingReason.NON_FINITE_METRIC: StopReason.NON_FINITE,
    EarlyStoppingReason.STOPPING_THRESHOLD: StopReason.THRESHOLD_REACHED,
    EarlyStoppingReason.DIVERGENCE_THRESHOLD: StopReason.DIVERGENCE,
    EarlyStoppingReason.PATIENCE_EXHAUSTED: StopReason.PLATEAU,
}


def _random_case(rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    mode = str(rng.choice(["min", "max"]))
    n = int(rng.integers(5, 40))
    steps = rng.normal(-0.05 if mode == "min" else 0.05, 0.1, n)
    values = 1.0 + np.cumsum(steps)
    values = np.round(values, int(rng.integers(1, 4)))  # ties, so min_delta and strictness matter
    if rng.random() < 0.3:
        values[rng.integers(0, n)] = rng.choice([np.nan, np.inf, -np.inf])
    kwargs = {
        "mode": mode,
        "min_delta": float(rng.choice([0.0, 0.01, 0.05, 0.1])),
        "patience": int(rng.integers(0, 6)),
        "check_finite": bool(rng.random() < 0.8),
        "stopping_threshold": float(np.quantile(values[np.isfinite(values)], 0.1 if mode == "min" else 0.9))
        if rng.random() < 0.3
        else None,
        "divergence_threshold": float(values[0] + (0.3 if mode == "min" else -0.3))
        if rng.random() < 0.3
        else None,
    }
    return kwargs, values


def _lightning_message(message: str | None, current: torch.Tensor, value: float) -> str | None:
    # Lightning formats the raw tensor with str(); ours formats the float with str().
    return None if message is None else message.replace(str(current), str(value))


@pytest.mark.parametrize("seed", range(40))
def test_same_decisions_as_lightning_early_stopping(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(10):
        kwargs, values = _random_case(rng)
        ours = PlateauState.initial(kwargs["mode"])
        theirs = EarlyStopping(monitor="val_loss", **kwargs)
        for value in values:
            current = torch.tensor(float(value), dtype=torch.float64)
            should_stop, message = theirs._evaluate_stopping_criteria(current)
            result = evaluate_plateau(float(value), ours, monitor="val_loss", **kwargs)
            ours = result.state
            assert result.should_stop == should_stop, (kwargs, values)
            assert ours.wait_count == theirs.wait_count
            assert ours.best_score == float(theirs.best_score) or (
                math.isnan(ours.best_score) and math.isnan(float(theirs.best_score))
            )
            assert result.message == _lightning_message(message, current, float(value))
            if should_stop:
                assert result.reason is REASONS[theirs.stopping_reason]
            else:
                assert result.reason is None


def test_min_delta_sign_follows_mode() -> None:
    # In "min" mode an improvement must be larger than min_delta downwards, in "max" mode upwards.
    s = evaluate_plateau(1.0, PlateauState.initial("min"), mode="min", min_delta=0.1).state
    assert not evaluate_plateau(0.95, s, mode="min", min_delta=0.1).improved
    assert evaluate_plateau(0.85, s, mode="min", min_delta=0.1).improved
    s = evaluate_plateau(1.0, PlateauState.initial("max"), mode="max", min_delta=0.1).state
    assert not evaluate_plateau(1.05, s, mode="max", min_delta=0.1).improved
    assert evaluate_plateau(1.15, s, mode="max", min_delta=0.1).improved


def test_order_of_checks_matches_lightning() -> None:
    # A non-finite value is reported as such even when thresholds are set; a value past the
    # stopping threshold is "threshold reached" even if it is also an improvement.
    state = PlateauState.initial("min")
    r = evaluate_plateau(math.nan, state, stopping_threshold=0.5, divergence_threshold=2.0)
    assert r.reason is StopReason.NON_FINITE and r.state == state
    r = evaluate_plateau(0.1, state, stopping_threshold=0.5, divergence_threshold=2.0)
    assert r.reason is StopReason.THRESHOLD_REACHED and r.state == state
    r = evaluate_plateau(3.0, state, stopping_threshold=0.5, divergence_threshold=2.0)
    assert r.reason is StopReason.DIVERGENCE


def test_stop_reason_values() -> None:
    assert {r.value for r in StopReason} == {
        "plateau",
        "marginal_gain",
        "energy_budget",
        "non_finite",
        "divergence",
        "threshold_reached",
    }
    assert isinstance(StopReason.PLATEAU, str)
