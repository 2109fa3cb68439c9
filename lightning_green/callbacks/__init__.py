"""Thin Lightning adapters: gather readings and metrics, call the policy, apply and log."""

from lightning_green.callbacks._adapt import AdaptationUnsupportedError
from lightning_green.callbacks.adaptive_batch_size import AdaptiveBatchSize
from lightning_green.callbacks.adaptive_precision import AdaptivePrecision
from lightning_green.callbacks.early_stopping import EnergyAwareEarlyStopping
from lightning_green.callbacks.energy_monitor import EnergyMonitor, MonitorNotLoggedError

__all__ = [
    "AdaptationUnsupportedError",
    "AdaptiveBatchSize",
    "AdaptivePrecision",
    "EnergyAwareEarlyStopping",
    "EnergyMonitor",
    "MonitorNotLoggedError",
]
