"""lightning_green: PyTorch Lightning callbacks that make training stop wasting energy.

Measure energy per epoch (NVML, RAPL, or a labelled CPU-time estimate), decide when more
epochs stop paying for themselves, adapt batch size and precision by measurement, and log
energy, CO2 and the gain per kWh to every Lightning logger.
"""

from lightning_green.callbacks import (
    AdaptationUnsupportedError,
    AdaptiveBatchSize,
    AdaptivePrecision,
    EnergyAwareEarlyStopping,
    EnergyMonitor,
)

__version__ = "0.1.0"

__all__ = [
    "AdaptationUnsupportedError",
    "AdaptiveBatchSize",
    "AdaptivePrecision",
    "EnergyAwareEarlyStopping",
    "EnergyMonitor",
    "__version__",
]
