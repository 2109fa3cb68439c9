"""NumPy and torch scalars are accepted exactly as Python numbers by every callback (bools are not).

They are kept as the plain Python values they hold, so a checkpoint loads with
``torch.load(weights_only=True)`` (a NumPy scalar in it failed the resume, a NumPy bool the save).

Configs built from arrays (a sweep over ``np.arange``, a Hydra value computed with NumPy) hand the
callbacks NumPy scalars; before, ``patience=np.int64(5)`` and ``min_delta=np.float32(0.1)`` were
refused while ``pue=np.float64(1.2)`` was accepted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_trainer

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


def _numpy_callbacks(check_finite=True):
    """All four callbacks built from NumPy scalars, as a sweep over ``np.linspace`` hands them."""
    return [
        EnergyAwareEarlyStopping(
            monitor="val_loss",
            patience=np.int64(10),
            min_delta=np.float64(0.0),
            min_relative_gain=np.linspace(0.04, 0.16, 4)[1],
            min_horizon_fraction=np.float64(0.5),
            check_finite=check_finite,
            verbose=np.bool_(False),
        ),
        EnergyMonitor(
            pue=np.float64(1.1), carbon_intensity_g_per_kwh=np.float64(300.0), prog_bar=np.bool_(False)
        ),
        AdaptiveBatchSize(min_batch_size=np.int64(16), max_batch_size=np.int64(64), grow=np.bool_(True)),
        AdaptivePrecision(cooldown_epochs=np.int64(1), start_step=np.int64(5), probe_budget=np.float64(0.05)),
    ]


def _plain_types(data, path="state"):
    """Where a checkpoint state holds anything but plain Python values (a tensor is allowed)."""
    if isinstance(data, dict):
        return [bad for key, value in data.items() for bad in _plain_types(value, f"{path}.{key}")]
    if isinstance(data, (list, tuple)):
        return [bad for i, value in enumerate(data) for bad in _plain_types(value, f"{path}[{i}]")]
    if data is None or type(data) in (bool, int, float, str) or isinstance(data, torch.Tensor):
        return []
    return [f"{path}: {type(data).__module__}.{type(data).__name__}"]


def test_callbacks_keep_numpy_arguments_as_plain_python_values():
    for callback in _numpy_callbacks(check_finite=np.bool_(True)):
        kept = {k: v for k, v in vars(callback).items() if type(v).__module__.split(".")[0] == "numpy"}
        assert kept == {}, f"{type(callback).__name__} keeps NumPy values: {kept}"
    stopper = _numpy_callbacks()[0]
    assert type(stopper.patience) is int and type(stopper.config.min_relative_gain) is float
    assert type(stopper.config.check_finite) is bool
    assert _plain_types(stopper.state_dict()) == []


def test_a_run_with_numpy_arguments_resumes_from_its_checkpoint(tmp_path, ns):
    """A checkpoint of callbacks built from NumPy scalars loads with weights_only=True and resumes."""

    def fit(epochs, ckpt_path=None):
        checkpoint = ns.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        trainer = make_trainer(
            tmp_path,
            [*_numpy_callbacks(), checkpoint],
            max_epochs=epochs,
            lightning=ns,
            limit_train_batches=8,
            enable_checkpointing=True,
        )
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
        return trainer

    fit(1)
    last = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(last, weights_only=True)["callbacks"]  # raised UnpicklingError on numpy scalars
    assert _plain_types(saved) == []
    assert fit(2, ckpt_path=str(last)).current_epoch == 2


@pytest.mark.parametrize("flag", [np.bool_(True), torch.tensor(True)], ids=["np.bool_", "bool tensor"])
def test_a_numpy_or_tensor_check_finite_saves_checkpoints(tmp_path, ns, flag):
    """check_finite=np.bool_(True) failed the fit at the first checkpoint save ("cannot save bool")."""
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", check_finite=flag)
    trainer = make_trainer(
        tmp_path, [stopper], max_epochs=2, lightning=ns, enable_checkpointing=True, limit_train_batches=4
    )
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))
    assert trainer.current_epoch == 2 and list((tmp_path / "checkpoints").glob("*.ckpt"))
    assert stopper.config.check_finite is True and stopper.check_finite is True
