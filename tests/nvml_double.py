# ruff: noqa: N802 - the names are pynvml's
"""A stand-in for the ``pynvml`` module, driven by scripted counters, power traces and errors.

It exposes the pynvml names that :mod:`lightning_green.energy.nvml` uses and raises the real
``pynvml`` exception classes, so the production code's ``isinstance`` and error-code checks are
exercised exactly as with the real library. Like the real library, every device call fails with
``NVMLError_Uninitialized`` unless ``nvmlInit`` was called more often than ``nvmlShutdown``.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import pynvml as _real

NVMLError = _real.NVMLError
NVMLError_NotSupported = _real.NVMLError_NotSupported
NVMLError_LibraryNotFound = _real.NVMLError_LibraryNotFound
NVMLError_Uninitialized = _real.NVMLError_Uninitialized
NVMLError_Unknown = _real.NVMLError_Unknown
NVMLError_GpuIsLost = _real.NVMLError_GpuIsLost
NVMLError_InvalidArgument = _real.NVMLError_InvalidArgument


@dataclass
class FakeGpu:
    """One scripted GPU.

    Attributes:
        uuid: What ``nvmlDeviceGetUUID`` returns.
        energy_mj: The counter value ``nvmlDeviceGetTotalEnergyConsumption`` returns; None means
            the GPU has no counter (pre-Volta: ``NVMLError_NotSupported``).
        energy_mj_fn: When set, the counter is this function of ``time.monotonic()`` (mJ)
            instead of ``energy_mj``: with ``power_mw`` its derivative, a GPU under a scripted
            load whose counter and power readings agree.
        counter_errors: Exceptions raised by the next counter reads, one per call, in order.
        power_mw: Constant power in mW, or a function of ``time.monotonic()`` returning mW.
        power_errors: Exceptions raised by the next power reads, one per call.
        power_errors_in_thread: Like ``power_errors`` but consumed only by calls made off the
            main thread (the sampler).
        mig_mode: Current MIG mode (``NVML_DEVICE_MIG_ENABLE`` = 1); None: MIG not supported.
    """

    uuid: str
    energy_mj: int | None = 0
    energy_mj_fn: Callable[[float], float] | None = None
    counter_errors: list[BaseException] = field(default_factory=list)
    power_mw: float | Callable[[float], float] = 100_000.0
    power_errors: list[BaseException] = field(default_factory=list)
    power_errors_in_thread: list[BaseException] = field(default_factory=list)
    mig_mode: int | None = None
    counter_calls: int = 0
    power_calls: list[tuple[float, bool]] = field(default_factory=list)  # (time, on main thread)
    raised_in_thread: threading.Event = field(default_factory=threading.Event)


class FakeNvml(types.ModuleType):
    """A module object standing in for ``pynvml``."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVML_ERROR_NOT_SUPPORTED = _real.NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_LIBRARY_NOT_FOUND = _real.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = _real.NVML_ERROR_DRIVER_NOT_LOADED
    NVML_DEVICE_MIG_ENABLE = _real.NVML_DEVICE_MIG_ENABLE
    NVML_DEVICE_MIG_DISABLE = _real.NVML_DEVICE_MIG_DISABLE

    def __init__(self, gpus: list[FakeGpu] | None = None, *, library_found: bool = True) -> None:
        super().__init__("pynvml_double")
        self.gpus = list(gpus or [])
        self.library_found = library_found
        self.init_refcount = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self._lock = threading.Lock()

    # -- library ------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if not self.library_found:
            raise NVMLError(_real.NVML_ERROR_LIBRARY_NOT_FOUND)
        with self._lock:
            self.init_refcount += 1
            self.init_calls += 1

    def nvmlShutdown(self) -> None:
        self._check_init()
        with self._lock:
            self.init_refcount -= 1
            self.shutdown_calls += 1

    def _check_init(self) -> None:
        if self.init_refcount <= 0:
            raise NVMLError(_real.NVML_ERROR_UNINITIALIZED)

    # -- devices ------------------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        self._check_init()
        return handle.uuid

    def nvmlDeviceGetMigMode(self, handle: FakeGpu) -> list[int]:
        self._check_init()
        if handle.mig_mode is None:
            raise NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
        return [handle.mig_mode, handle.mig_mode]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:
        self._check_init()
        handle.counter_calls += 1
        if handle.counter_errors:
            raise handle.counter_errors.pop(0)
        if handle.energy_mj_fn is not None:
            return round(handle.energy_mj_fn(time.monotonic()))
        if handle.energy_mj is None:
            raise NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
        return handle.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        self._check_init()
        now_s = time.monotonic()
        main = threading.current_thread() is threading.main_thread()
        if not main and handle.power_errors_in_thread:
            handle.raised_in_thread.set()
            raise handle.power_errors_in_thread.pop(0)
        if handle.power_errors:
            raise handle.power_errors.pop(0)
        handle.power_calls.append((now_s, main))
        power = handle.power_mw
        return round(power(now_s) if callable(power) else power)


def gpus(count: int, **kwargs: object) -> list[FakeGpu]:
    """``count`` GPUs with UUIDs ``GPU-<i><i>...`` and the same settings."""
    return [
        FakeGpu(uuid=f"GPU-{i}{i}{i}{i}aaaa-0000-1111-2222-33334444555{i}", **kwargs)  # type: ignore[arg-type]
        for i in range(count)
    ]
