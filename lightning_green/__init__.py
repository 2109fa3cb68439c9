"""lightning_green: PyTorch Lightning callbacks that make training stop wasting energy.

Measure energy per epoch (NVML, RAPL, or a labelled CPU-time estimate), decide when more
epochs stop paying for themselves, adapt batch size and precision by measurement, and log
energy, CO2 and the gain per kWh to every Lightning logger.

The callbacks are imported on first use (PEP 562): ``from lightning_green import EnergyMonitor``
loads torch and Lightning, while ``import lightning_green`` alone, the offline tools
(:mod:`lightning_green.offline`) and the ``lightning-green`` command do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_CALLBACK_NAMES: tuple[str, ...] = (
    "AdaptationUnsupportedError",
    "AdaptiveBatchSize",
    "AdaptivePrecision",
    "EnergyAwareEarlyStopping",
    "EnergyMonitor",
)
"""The callbacks' public names: exported here lazily, and by :mod:`lightning_green.callbacks`."""

__all__ = [*_CALLBACK_NAMES, "__version__"]

_CALLBACKS = frozenset(_CALLBACK_NAMES)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them
    from lightning_green.callbacks import AdaptationUnsupportedError as AdaptationUnsupportedError
    from lightning_green.callbacks import AdaptiveBatchSize as AdaptiveBatchSize
    from lightning_green.callbacks import AdaptivePrecision as AdaptivePrecision
    from lightning_green.callbacks import EnergyAwareEarlyStopping as EnergyAwareEarlyStopping
    from lightning_green.callbacks import EnergyMonitor as EnergyMonitor


def __getattr__(name: str) -> Any:
    """The callbacks, imported from :mod:`lightning_green.callbacks` when first asked for."""
    if name in _CALLBACKS:
        from lightning_green import callbacks

        value = getattr(callbacks, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CALLBACKS)
