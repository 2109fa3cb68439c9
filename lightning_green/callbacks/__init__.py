"""Thin Lightning adapters: gather readings and metrics, call the policy, apply and log."""

from lightning_green import _CALLBACK_NAMES
from lightning_green.callbacks._adapt import AdaptationUnsupportedError as AdaptationUnsupportedError
from lightning_green.callbacks.adaptive_batch_size import AdaptiveBatchSize as AdaptiveBatchSize
from lightning_green.callbacks.adaptive_precision import AdaptivePrecision as AdaptivePrecision
from lightning_green.callbacks.early_stopping import EnergyAwareEarlyStopping as EnergyAwareEarlyStopping
from lightning_green.callbacks.energy_monitor import EnergyMonitor as EnergyMonitor
from lightning_green.callbacks.energy_monitor import MonitorNotLoggedError as MonitorNotLoggedError

__all__ = [*_CALLBACK_NAMES, "MonitorNotLoggedError"]
