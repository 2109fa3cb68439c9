"""StoppingConfig: defaults and validation that names the argument."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lightning_green.policy import StoppingConfig


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("mode", "minimum"),
        ("mode", None),
        ("min_delta", -0.1),
        ("min_delta", float("nan")),
        ("min_delta", "0.1"),
        ("patience", -1),
        ("patience", 2.5),
        ("patience", True),
        ("check_finite", "yes"),
        ("stopping_threshold", float("inf")),
        ("divergence_threshold", "high"),
        ("min_epochs", -3),
        ("energy_budget_kwh", 0.0),
        ("energy_budget_kwh", -1.0),
        ("min_gain_per_kwh", -0.5),
        ("min_relative_gain", 1.5),
        ("min_relative_gain", -0.01),
        ("min_horizon_fraction", 1.0),
        ("min_horizon_fraction", -0.2),
        ("patience_rest_fraction", 0.0),
        ("patience_rest_fraction", "half"),
    ],
)
def test_bad_value_raises_value_error_naming_argument(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be ") as info:
        StoppingConfig(**{name: value})
    assert f", got {value!r}" in str(info.value)  # (text that reads as a number says it is text)


def test_defaults_are_plain_json_values() -> None:
    config = StoppingConfig()
    values = config.to_dict()
    assert json.loads(json.dumps(values)) == values
    assert StoppingConfig.from_dict(values) == config
    assert {f.name for f in dataclasses.fields(StoppingConfig)} == {
        "mode",
        "min_delta",
        "patience",
        "check_finite",
        "stopping_threshold",
        "divergence_threshold",
        "min_epochs",
        "energy_budget_kwh",
        "min_gain_per_kwh",
        "min_relative_gain",
        "min_horizon_fraction",
        "patience_rest_fraction",
    }


def test_optional_thresholds_accept_none_and_ints() -> None:
    config = StoppingConfig(min_relative_gain=None, energy_budget_kwh=2, stopping_threshold=0)
    assert config.min_relative_gain is None and config.energy_budget_kwh == 2


def test_unknown_argument_rejected() -> None:
    with pytest.raises(ValueError, match="unknown argument"):
        StoppingConfig.from_dict({"monitor": "val_loss"})


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        StoppingConfig().patience = 3  # type: ignore[misc]
