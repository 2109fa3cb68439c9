"""GPU energy from NVML: the cumulative energy counter, or a power sampler where it is missing.

Volta and newer GPUs have a cumulative energy counter (``nvmlDeviceGetTotalEnergyConsumption``,
millijoules since the driver loaded); it is read at each boundary and costs nothing in between.
Older GPUs only report instantaneous power (``nvmlDeviceGetPowerUsage``, milliwatts): for those
a daemon thread samples the power every ``sampling_interval_s`` and integrates it with the
trapezoid rule against ``time.monotonic()``.

Which NVML device a torch CUDA index is: :mod:`lightning_green.energy.nvml_devices`.

MIG instances are refused (:class:`NvmlUnavailableError`): NVML has no energy counter for a MIG
instance, and the parent GPU's counter includes the work of every other tenant.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from lightning_green.checks import check_positive
from lightning_green.energy.meter import EnergyMeter, PeriodicWorker
from lightning_green.energy.nvml_devices import NvmlUnavailableError, match_uuids, resolve_nvml_indices

DEFAULT_SAMPLING_INTERVAL_S: float = 0.1
"""Power sampling period of the fallback sampler (10 Hz)."""

_NVML_ERROR_NOT_SUPPORTED = 3
_NVML_ERROR_DRIVER_NOT_LOADED = 9
_NVML_ERROR_LIBRARY_NOT_FOUND = 12
_NVML_DEVICE_MIG_ENABLE = 1


# -- NVML helpers ---------------------------------------------------------------------------------
def _import_nvml(nvml: ModuleType | None) -> ModuleType:
    if nvml is not None:
        return nvml
    try:
        import pynvml
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise NvmlUnavailableError(f"pynvml (package nvidia-ml-py) cannot be imported: {err}") from None
    return pynvml


def _error_code(err: BaseException) -> int | None:
    value = getattr(err, "value", None)
    return value if isinstance(value, int) else None


def _is_nvml_error(nvml: ModuleType, err: BaseException) -> bool:
    cls = getattr(nvml, "NVMLError", None)
    return isinstance(cls, type) and isinstance(err, cls)


def _is_not_supported(nvml: ModuleType, err: BaseException) -> bool:
    code = getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", _NVML_ERROR_NOT_SUPPORTED)
    return _is_nvml_error(nvml, err) and _error_code(err) == code


def _init_nvml(nvml: ModuleType) -> None:
    try:
        nvml.nvmlInit()
    except Exception as err:
        code = _error_code(err)
        if code == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", _NVML_ERROR_LIBRARY_NOT_FOUND):
            reason = "NVML library not found (no NVIDIA driver)"
        elif code == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", _NVML_ERROR_DRIVER_NOT_LOADED):
            reason = "NVIDIA driver not loaded"
        else:
            reason = f"NVML initialisation failed: {err}"
        raise NvmlUnavailableError(reason) from err


def _device_uuid(nvml: ModuleType, index: int) -> str:
    try:
        uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index))
    except Exception:  # an unreadable UUID only means this device cannot be named by UUID
        return ""
    return uuid.decode() if isinstance(uuid, bytes) else str(uuid)


@dataclass
class _Gpu:
    """One GPU of the meter: its counter or sampler state."""

    cuda_index: int
    nvml_index: int
    sampled_at_probe: bool
    handle: Any = None
    sampled: bool = False
    # Cumulative energy since start, in joules.
    energy_j: float = 0.0
    # Counter mode: energy = acc_j + (raw - base_mj) / 1000.
    acc_j: float = 0.0
    base_mj: int | None = None
    last_raw_mj: int | None = None
    # Sampler mode (guarded by the meter's sampler lock): the previous sample.
    last_t_s: float | None = None
    last_p_w: float = 0.0
    power_errors: int = 0
    last_power_error: str = ""

    @property
    def domain(self) -> str:
        return f"gpu:{self.cuda_index}"

    def reset(self) -> None:
        self.handle = None
        self.sampled = self.sampled_at_probe
        self.energy_j = self.acc_j = 0.0
        self.base_mj = self.last_raw_mj = None
        self.last_t_s = None
        self.last_p_w = 0.0
        self.power_errors = 0
        self.last_power_error = ""


def _probe(
    cuda_indices: Sequence[int],
    nvml: ModuleType,
    environ: Mapping[str, str],
    cuda_uuids: Sequence[str | None] = (),
) -> list[_Gpu]:
    """Check that NVML can measure ``cuda_indices`` and choose counter or sampler for each GPU."""
    indices = list(dict.fromkeys(int(i) for i in cuda_indices))
    if not indices:
        raise NvmlUnavailableError("no CUDA device is used by this process")
    _init_nvml(nvml)
    try:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as err:
            raise NvmlUnavailableError(f"NVML could not count the GPUs: {err}") from err
        if count == 0:
            raise NvmlUnavailableError("NVML sees no GPU")
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        uuids = [_device_uuid(nvml, i) for i in range(count)]
        by_uuid = match_uuids(cuda_indices, cuda_uuids, uuids)
        if all(uuids):  # every GPU named: a UUID of torch's that names none is not a whole GPU
            for cuda_index, uuid in zip(cuda_indices, cuda_uuids, strict=False):
                if uuid and int(cuda_index) not in by_uuid:
                    raise NvmlUnavailableError(
                        f"CUDA device {cuda_index} (UUID {uuid}) is none of the GPUs NVML sees "
                        f"({', '.join(uuids)}): a MIG instance or a virtual device, whose energy NVML "
                        "cannot attribute; counting a GPU found by index could count another GPU"
                    )
        unmatched = [i for i in indices if i not in by_uuid]
        by_index = dict(zip(unmatched, resolve_nvml_indices(unmatched, visible, uuids), strict=True))
        nvml_indices = [by_uuid.get(i, by_index.get(i)) for i in indices]
        return [_probe_gpu(nvml, cuda, index) for cuda, index in zip(indices, nvml_indices, strict=True)]
    finally:
        with contextlib.suppress(Exception):  # the probe's result stands; shutdown is bookkeeping
            nvml.nvmlShutdown()


def _probe_gpu(nvml: ModuleType, cuda_index: int, nvml_index: int) -> _Gpu:
    where = f"CUDA device {cuda_index} (NVML GPU {nvml_index})"
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
    except Exception as err:
        raise NvmlUnavailableError(f"{where}: NVML has no handle for it: {err}") from err
    try:
        mig_mode = nvml.nvmlDeviceGetMigMode(handle)
        current = int(mig_mode[0] if isinstance(mig_mode, Sequence) else mig_mode)
    except Exception:  # NotSupported on GPUs without MIG; a missing function in old bindings
        current = 0
    if current == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", _NVML_DEVICE_MIG_ENABLE):
        raise NvmlUnavailableError(
            f"{where} has MIG mode enabled, so CUDA device {cuda_index} is a MIG instance: "
            "NVML cannot attribute its energy (no counter per instance; the GPU's counter "
            "includes the other instances)"
        )
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return _Gpu(cuda_index, nvml_index, sampled_at_probe=False)
    except Exception as err:
        if not _is_not_supported(nvml, err):
            raise NvmlUnavailableError(f"{where}: reading its energy counter failed: {err}") from err
    try:
        nvml.nvmlDeviceGetPowerUsage(handle)
    except Exception as err:
        raise NvmlUnavailableError(
            f"{where} has neither an energy counter nor a power reading: {err}"
        ) from err
    return _Gpu(cuda_index, nvml_index, sampled_at_probe=True)


def nvml_available(
    cuda_indices: Sequence[int],
    nvml: ModuleType | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[bool, str]:
    """Whether :class:`NvmlMeter` can measure these GPUs, and why not.

    Args:
        cuda_indices: Torch CUDA indices used by this process.
        nvml: The ``pynvml`` module, or a stand-in; None imports ``pynvml``.
        environ: Environment to read ``CUDA_VISIBLE_DEVICES`` from; None means ``os.environ``.

    Returns:
        ``(True, description)`` or ``(False, reason)``, e.g. ``(False, "NVML library not found
        (no NVIDIA driver)")``.
    """
    try:
        gpus = _probe(cuda_indices, _import_nvml(nvml), os.environ if environ is None else environ)
    except NvmlUnavailableError as err:
        return False, err.reason
    counters = [g.domain for g in gpus if not g.sampled_at_probe]
    sampled = [g.domain for g in gpus if g.sampled_at_probe]
    parts = []
    if counters:
        parts.append(f"energy counter on {', '.join(counters)}")
    if sampled:
        parts.append(f"power sampling on {', '.join(sampled)}")
    return True, "NVML " + "; ".join(parts)


class NvmlMeter(EnergyMeter):
    """Energy of this process's GPUs from NVML, one domain ``gpu:<torch index>`` per GPU.

    Each GPU is read through its cumulative energy counter where it has one (Volta and newer,
    label ``nvml``), else through a background power sampler (label ``nvml-sampled``); a
    meter with both kinds is labelled ``nvml+nvml-sampled``.

    Faults are per GPU and never stop the others: a failed counter read keeps that GPU's last
    value and is retried at the next read (the counter is cumulative, so nothing is lost once it
    works again); a counter that goes backwards (driver reload, GPU reset) becomes a new
    baseline; a counter that starts answering "not supported" hands the GPU to the sampler;
    failed power reads are counted (the integral bridges the gap between good samples); a
    sampler thread that died is restarted at the next read, the energy of the dead period being
    missing. Every fault is counted and marks the interval that contains it partial.

    Args:
        cuda_indices: Torch CUDA indices this process uses (under DDP, the rank's device).
        sampling_interval_s: Power sampling period for GPUs without an energy counter.
        nvml: The ``pynvml`` module, or a stand-in for tests; None imports ``pynvml``.
        environ: Environment to read ``CUDA_VISIBLE_DEVICES`` from; None means ``os.environ``.
        cuda_uuids: Torch's UUID of each CUDA device, where known: matched exactly against
            NVML's (robust to CUDA's fastest-first device order on mixed-GPU boxes); devices
            without one are mapped by index through ``CUDA_VISIBLE_DEVICES``.

    Raises:
        NvmlUnavailableError: If NVML cannot measure these GPUs (no driver, no such device, a
            MIG instance, neither counter nor power reading); ``reason`` says why.
        ValueError: If ``sampling_interval_s`` is not a positive number.
    """

    source = "nvml"

    def __init__(
        self,
        cuda_indices: Sequence[int],
        *,
        sampling_interval_s: float = DEFAULT_SAMPLING_INTERVAL_S,
        nvml: ModuleType | None = None,
        environ: Mapping[str, str] | None = None,
        cuda_uuids: Sequence[str | None] = (),
    ) -> None:
        super().__init__()
        self.sampling_interval_s = check_positive("sampling_interval_s", sampling_interval_s, unit="seconds")
        self._nvml = _import_nvml(nvml)
        self._gpus = _probe(cuda_indices, self._nvml, os.environ if environ is None else environ, cuda_uuids)
        for gpu in self._gpus:
            gpu.reset()
        self._initialized = False
        self._sample_lock = threading.Lock()
        self._sampler = PeriodicWorker(
            "lightning-green-nvml-sampler", self._sample_background, self.sampling_interval_s
        )
        self._starting = False
        self._closed = False
        self._update_source()

    @property
    def domains(self) -> list[str]:
        """Domain names of this meter, ``gpu:<torch index>`` in the order given."""
        return [gpu.domain for gpu in self._gpus]

    @property
    def nvml_indices(self) -> dict[str, int]:
        """The NVML device index behind each domain."""
        return {gpu.domain: gpu.nvml_index for gpu in self._gpus}

    # -- EnergyMeter hooks ------------------------------------------------------------------
    def _start(self) -> None:
        self._closed = False
        self._stop_sampler()
        for gpu in self._gpus:
            gpu.reset()
        self._update_source()
        if not self._initialized:
            self._nvml.nvmlInit()
            self._initialized = True
        self._starting = True
        try:
            self._take_baselines()
        finally:
            self._starting = False
        self._closed = False
        self._update_source()
        self._ensure_sampler()

    def _take_baselines(self) -> None:
        for gpu in self._gpus:
            try:
                gpu.handle = self._nvml.nvmlDeviceGetHandleByIndex(gpu.nvml_index)
            except Exception as err:
                self.record_fault(
                    f"nvml-handle:{gpu.domain}", f"NVML has no handle for {gpu.domain}: {err!r}."
                )
                continue
            if not gpu.sampled:
                self._read_counter(gpu)
            if gpu.sampled:
                self._sample_now(gpu)

    def _read_j(self) -> dict[str, float]:
        if not self._initialized and not self._closed:
            # NVML failed to initialise at start: retry. Counted as the start fault was (warned
            # once, at start) whether it fails again or succeeds: either way the interval up to now
            # was not measured, so it is marked partial.
            try:
                self._start()
            except Exception as err:
                self.record_fault("start", f"{type(self).__name__} could not start: {err!r}")
            else:
                self.record_fault(
                    "start", f"{type(self).__name__} started late: the energy before is missing"
                )
        if self._initialized:
            self._check_sampler()
            for gpu in self._gpus:
                try:
                    if gpu.handle is None:
                        gpu.handle = self._nvml.nvmlDeviceGetHandleByIndex(gpu.nvml_index)
                    if not gpu.sampled:
                        self._read_counter(gpu)
                    if gpu.sampled:
                        self._sample_now(gpu)
                except Exception as err:  # one bad GPU must not freeze the others
                    self.record_fault(
                        f"nvml-read:{gpu.domain}",
                        f"NVML read of {gpu.domain} failed: {err!r}; its last value is kept.",
                    )
                    self.mark_stale()
            self._update_source()
            self._ensure_sampler()
        with self._sample_lock:
            for gpu in self._gpus:
                if gpu.power_errors:
                    errors, last = gpu.power_errors, gpu.last_power_error
                    gpu.power_errors = 0
                    self.record_fault(
                        f"nvml-power:{gpu.domain}",
                        f"NVML power reads of {gpu.domain} failed ({errors} since the previous reading, "
                        f"last: {last}); the power between good samples is interpolated.",
                    )
            return {gpu.domain: gpu.energy_j for gpu in self._gpus}

    def _close(self) -> None:
        self._closed = True
        self._stop_sampler()
        if self._initialized:
            self._initialized = False
            self._nvml.nvmlShutdown()

    # -- counter --------------------------------------------------------------------------------
    def _read_counter(self, gpu: _Gpu) -> None:
        try:
            raw_mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))
        except Exception as err:
            if _is_not_supported(self._nvml, err):
                self._switch_to_sampler(gpu)
            else:
                self.record_fault(
                    f"nvml-read:{gpu.domain}",
                    f"NVML energy counter read of {gpu.domain} failed: {err!r}; its last value is kept "
                    "and the counter is read again next time (a counter that recovers loses nothing).",
                )
                self.mark_stale()  # what it missed comes with the next good read
            return
        if gpu.base_mj is None or gpu.last_raw_mj is None:
            gpu.base_mj = gpu.last_raw_mj = raw_mj
            gpu.acc_j = gpu.energy_j
            return
        if raw_mj < gpu.last_raw_mj:
            self.record_fault(
                f"nvml-reset:{gpu.domain}",
                f"NVML energy counter of {gpu.domain} went backwards ({gpu.last_raw_mj} mJ -> {raw_mj} mJ: "
                "driver reload or GPU reset); it is taken as a new baseline and the energy since the "
                "previous read is missing.",
            )
            gpu.acc_j = gpu.energy_j
            gpu.base_mj = raw_mj
        gpu.last_raw_mj = raw_mj
        gpu.energy_j = gpu.acc_j + (raw_mj - gpu.base_mj) / 1000.0

    def _switch_to_sampler(self, gpu: _Gpu) -> None:
        if not self._starting:  # at start no energy is lost: it is only the choice of method
            self.record_fault(
                f"nvml-unsupported:{gpu.domain}",
                f"The NVML energy counter of {gpu.domain} stopped being supported; the GPU is now "
                "measured by power sampling and the energy since the previous read is missing.",
            )
        with self._sample_lock:
            gpu.sampled = True
            gpu.last_t_s = None

    # -- sampler --------------------------------------------------------------------------------
    def _sample(self, gpu: _Gpu) -> None:
        """Take one power sample and integrate it; the caller holds ``_sample_lock``."""
        try:
            power_mw = self._nvml.nvmlDeviceGetPowerUsage(gpu.handle)
        except Exception as err:
            if not _is_nvml_error(self._nvml, err):
                raise
            gpu.power_errors += 1
            gpu.last_power_error = repr(err)
            return
        now_s = time.monotonic()
        power_w = float(power_mw) / 1000.0
        if gpu.last_t_s is not None:
            gpu.energy_j += 0.5 * (gpu.last_p_w + power_w) * max(0.0, now_s - gpu.last_t_s)
        gpu.last_t_s, gpu.last_p_w = now_s, power_w

    def _sample_now(self, gpu: _Gpu) -> None:
        with self._sample_lock:
            self._sample(gpu)

    def _sample_background(self) -> None:
        """One round of the sampler thread: every sampled GPU (an escaping error ends the thread)."""
        with self._sample_lock:
            for gpu in self._gpus:
                if gpu.sampled and gpu.handle is not None:
                    self._sample(gpu)

    def _ensure_sampler(self) -> None:
        if any(gpu.sampled for gpu in self._gpus):
            self._sampler.ensure()

    def _check_sampler(self) -> None:
        """Detect a dead sampler thread: count the fault; the next ensure starts afresh (the gap is lost)."""
        error = self._sampler.reap()
        if error is None:
            return
        dead = [gpu for gpu in self._gpus if gpu.sampled]
        self.record_fault(
            "nvml-sampler",
            f"The NVML power sampler thread died ({error!r}); it is restarted and the "
            f"energy of {', '.join(g.domain for g in dead)} while it was dead is missing.",
        )
        with self._sample_lock:
            for gpu in dead:
                gpu.last_t_s = None

    def _stop_sampler(self) -> None:
        self._sampler.stop()

    def _update_source(self) -> None:
        kinds = {gpu.sampled for gpu in self._gpus}
        if kinds == {True}:
            self.source = "nvml-sampled"
        elif kinds == {False}:
            self.source = "nvml"
        else:
            self.source = "nvml+nvml-sampled"
