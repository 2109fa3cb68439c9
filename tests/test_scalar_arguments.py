"""NumPy and torch scalars are accepted exactly as Python numbers by every callback (bools are not).

Configs built from arrays (a sweep over ``np.arange``, a Hydra value computed with NumPy) hand the
callbacks NumPy scalars; before, ``patience=np.int64(5)`` and ``min_delta=np.float32(0.1)`` were
refused while ``pue=np.float64(1.2)`` was accepted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyAwareEarlyStopping, EnergyMonitor
from lightning_green.policy.config import StoppingConfig


def test_stopping_config_takes_numpy_and_torch_scalars_as_python_numbers():
    config = StoppingConfig(
        patience=np.int64(5),
        min_delta=np.float32(0.25),
        min_epochs=torch.tensor(3),
        energy_budget_kwh=np.float64(2.0),
        min_relative_gain=torch.tensor(0.1, dtype=torch.float64),
    )
    assert (config.patience, config.min_epochs) == (5, 3)
    assert type(config.patience) is int and type(config.min_epochs) is int
    assert config.min_delta == pytest.approx(0.25) and type(config.min_delta) is float
    assert config.min_relative_gain == pytest.approx(0.1)
    # The same configuration from plain numbers is the same object value (same decisions).
    assert config == StoppingConfig(
        patience=5, min_delta=0.25, min_epochs=3, energy_budget_kwh=2.0, min_relative_gain=0.1
    )


@pytest.mark.parametrize(
    ("name", "value"), [("patience", np.bool_(True)), ("patience", True), ("min_delta", "0.1")]
)
def test_stopping_config_still_refuses_bools_and_text(name, value):
    with pytest.raises(ValueError, match=name):
        StoppingConfig(**{name: value})


def test_callbacks_take_numpy_scalars():
    stopper = EnergyAwareEarlyStopping(
        monitor="val_loss", patience=np.int64(5), min_delta=np.float32(0.1), min_epochs=np.int32(2)
    )
    assert stopper.patience == 5 and stopper.min_delta == pytest.approx(-0.1)  # Lightning's sign for "min"
    monitor = EnergyMonitor(
        pue=np.float64(1.2), step_interval=np.int64(2), sampling_interval_s=np.float32(0.5)
    )
    assert monitor.step_interval == 2 and type(monitor.step_interval) is int
    assert monitor.sampling_interval_s == pytest.approx(0.5)
    AdaptiveBatchSize(min_batch_size=np.int64(16), max_batch_size=np.int64(128))
    AdaptivePrecision(loss_tolerance=np.float64(0.05), cooldown_epochs=np.int64(2), start_step=np.int64(20))


@pytest.mark.parametrize("bad", [{"step_interval": np.bool_(True)}, {"sampling_interval_s": "0.5"}])
def test_energy_monitor_refuses_bools_and_text(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        EnergyMonitor(**bad)
