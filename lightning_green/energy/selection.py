"""Choosing the meter of a process: NVML for its GPUs, RAPL or the CPU estimate for the host.

GPU sources are per process (the ``cuda_indices`` of this rank). Host sources - RAPL and the
CPU-time estimate - are read by one process per machine (``host_reader``: local rank 0 under
DDP, whose estimate counts every local rank through ``root_pids``). Where the estimate cannot
read other processes (no ``/proc``: macOS, Windows; see
:func:`~lightning_green.energy.estimate.process_trees_readable`) every rank that would use it
has an estimate of its own process instead, and the session sums them over ranks; RAPL (Linux
only) stays the host reader's. RAPL and the estimate both measure the host CPU, so they are
never combined; the estimate counts CPU time only, so it never double counts a GPU measured
by NVML.

A named source that cannot be used falls back with one :class:`EnergyMeasurementWarning`
saying why and what is used instead; the ``source`` label of the result always tells the truth.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType

from lightning_green.energy.estimate import CpuTimeEstimateMeter, process_trees_readable
from lightning_green.energy.meter import CompositeMeter, EnergyMeasurementWarning, EnergyMeter
from lightning_green.energy.nvml import DEFAULT_SAMPLING_INTERVAL_S, NvmlMeter, NvmlUnavailableError
from lightning_green.energy.rapl import DEFAULT_POWERCAP_ROOT, RaplMeter, RaplUnavailableError

GPU_SOURCES: tuple[str, ...] = ("nvml",)
"""Sources that measure this process's GPUs."""

HOST_SOURCES: tuple[str, ...] = ("rapl", "estimate")
"""Sources that measure the host; at most one of them is used."""

METER_SPECS: tuple[str, ...] = ("auto", "nvml", "rapl", "estimate", "nvml+rapl", "nvml+estimate")
"""Every valid ``meter`` value after normalisation."""


def validate_meter_spec(spec: str) -> str:
    """Check and normalise a ``meter`` argument.

    Case and spaces are ignored and the parts of a combination are put in canonical order
    (GPU source first), so ``"RAPL + nvml"`` becomes ``"nvml+rapl"``.

    Args:
        spec: ``"auto"``, ``"nvml"``, ``"rapl"``, ``"estimate"``, or a ``+``-joined GPU and
            host source (``"nvml+rapl"``, ``"nvml+estimate"``).

    Returns:
        The normalised spec, one of :data:`METER_SPECS`.

    Raises:
        ValueError: Naming the argument ``meter``, the bad value and the allowed values.

    Example:
        >>> validate_meter_spec(" Rapl+NVML ")
        'nvml+rapl'
    """
    allowed = ", ".join(repr(s) for s in METER_SPECS)
    if not isinstance(spec, str):
        raise ValueError(f"meter must be a string, one of {allowed}; got {spec!r}")
    parts = [part.strip().lower() for part in spec.split("+")]
    problem = ""
    if any(not part for part in parts):
        problem = "an empty part"
    elif any(part not in ("auto", *GPU_SOURCES, *HOST_SOURCES) for part in parts):
        unknown = [part for part in parts if part not in ("auto", *GPU_SOURCES, *HOST_SOURCES)]
        problem = f"unknown source {unknown[0]!r}"
    elif len(set(parts)) != len(parts):
        problem = "a source given twice"
    elif "auto" in parts and len(parts) > 1:
        problem = "'auto' cannot be combined"
    elif sum(part in HOST_SOURCES for part in parts) > 1:
        problem = "'rapl' and 'estimate' both measure the host CPU and would count it twice"
    if problem:
        raise ValueError(f"meter={spec!r} is invalid ({problem}); allowed values: {allowed}")
    order = ("auto", *GPU_SOURCES, *HOST_SOURCES)
    return "+".join(sorted(parts, key=order.index))


def build_meter(
    spec: str = "auto",
    *,
    cuda_indices: Sequence[int] = (),
    host_reader: bool = True,
    cpu_power_per_core_w: float | None = None,
    root_pids: Sequence[int] | None = None,
    sampling_interval_s: float = DEFAULT_SAMPLING_INTERVAL_S,
    rapl_root: str = DEFAULT_POWERCAP_ROOT,
    nvml: ModuleType | None = None,
    environ: Mapping[str, str] | None = None,
    cuda_uuids: Sequence[str | None] = (),
) -> EnergyMeter | None:
    """Build the meter this process should read.

    ``auto`` uses NVML for ``cuda_indices`` when NVML works, and on the host reader RAPL when
    it is readable, else the CPU-time estimate: ``estimate`` on a CPU-only machine,
    ``nvml+rapl`` on a GPU server with readable RAPL, ``nvml+estimate`` without. A source named
    explicitly but unavailable gives one :class:`EnergyMeasurementWarning` and falls back (to
    the estimate on the host reader). Where the estimate cannot read other processes' CPU time
    (:func:`~lightning_green.energy.estimate.process_trees_readable` is False) a process that is
    not the host reader gets, wherever the host reader would use the estimate, an estimate of
    its own process (and reaped children): its CPU time is counted by no one else.

    Args:
        spec: The ``meter`` argument (see :func:`validate_meter_spec`).
        cuda_indices: Torch CUDA indices this process uses; empty on a CPU run.
        host_reader: Whether this process reads the host sources for every process of the
            machine (local rank 0 under DDP): RAPL and, where process trees can be read, the
            estimate of every local rank. Where they cannot, every process estimates its own
            CPU time whatever this says (RAPL stays the host reader's).
        cpu_power_per_core_w: Per-core power of the estimate, watts (None: environment or default).
        root_pids: Processes whose CPU time the host reader's estimate counts (all local ranks);
            None: this one. Unused where process trees cannot be read.
        sampling_interval_s: Power sampling period for GPUs without an energy counter.
        rapl_root: The powercap directory.
        nvml: The ``pynvml`` module or a stand-in; None imports ``pynvml``.
        environ: Environment for ``CUDA_VISIBLE_DEVICES``; None means ``os.environ``.
        cuda_uuids: Torch's UUID of each CUDA device where known (exact NVML matching).

    Returns:
        The meter, a :class:`CompositeMeter` when there are several sources, or None when this
        process has nothing to read (a non-host rank without GPUs, where process trees can be
        read or the host reader measures RAPL).

    Raises:
        ValueError: If ``spec`` is invalid.
    """
    spec = validate_meter_spec(spec)
    parts = set(spec.split("+"))
    auto = spec == "auto"
    meters: list[EnergyMeter] = []
    fallbacks: list[str] = []  # reasons a named source was not used

    if auto or "nvml" in parts:
        if cuda_indices:
            try:
                meters.append(
                    NvmlMeter(
                        cuda_indices,
                        sampling_interval_s=sampling_interval_s,
                        nvml=nvml,
                        environ=environ,
                        cuda_uuids=cuda_uuids,
                    )
                )
            except NvmlUnavailableError as err:
                fallbacks.append(f"NVML cannot measure this process's GPUs: {err.reason}")
        elif not auto:
            fallbacks.append("meter 'nvml' was requested but this process uses no CUDA device")

    host: EnergyMeter | None = None
    # Without readable process trees the host reader's estimate sees its own process only: every
    # other rank makes the host reader's choice too, and estimates its own process where that
    # choice is the estimate (where it is RAPL, which measures the whole host, it adds nothing).
    own_only = not process_trees_readable()
    if host_reader or own_only:
        if auto or "rapl" in parts:
            try:
                host = RaplMeter(rapl_root)
            except RaplUnavailableError as err:
                # Absent RAPL is normal under auto; present but unreadable is worth fixing.
                if not auto or err.unreadable:
                    fallbacks.append(f"RAPL is unavailable: {err.reason}")
        if host is None and (auto or "estimate" in parts or fallbacks):
            pids = None if own_only else root_pids
            host = CpuTimeEstimateMeter(power_per_core_w=cpu_power_per_core_w, root_pids=pids)
        if isinstance(host, RaplMeter) and not host_reader:
            host = None  # the host reader reads RAPL for every process of the machine
        if host is not None:
            meters.append(host)

    if fallbacks:
        if not meters:
            instead = "this process measures nothing (it is not the host reader)"
        else:
            labels = "+".join(dict.fromkeys(m.source for m in meters))
            instead = f"energy source is now {labels!r}"
            if isinstance(host, CpuTimeEstimateMeter):
                instead += " (the CPU-time estimate is used instead; it counts CPU time only, no GPU)"
        warnings.warn(
            f"meter={spec!r}: {'; '.join(fallbacks)}. Falling back: {instead}.",
            EnergyMeasurementWarning,
            stacklevel=2,
        )

    if not meters:
        return None
    if len(meters) == 1:
        return meters[0]
    return CompositeMeter(meters)
