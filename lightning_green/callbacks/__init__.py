"""Thin Lightning adapters: gather readings and metrics, call the policy, apply and log."""

from lightning_green.callbacks.energy_monitor import EnergyMonitor, MonitorNotLoggedError

__all__ = ["EnergyMonitor", "MonitorNotLoggedError"]
