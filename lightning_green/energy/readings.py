"""Measurement dataclasses: a cumulative reading and the interval between two readings.

A meter reports *cumulative* energy since it was started, never decreasing: resets and
wraparounds of the underlying hardware counter are absorbed by the meter. Faults (a failed
read, a counter that went backwards, a sampler thread that died) are counted in
``faults``; an interval whose end reading has seen more faults than its start reading is
``partial`` - some energy in it may be missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lightning_green.energy.units import j_to_kwh


def _frozen(mapping: Mapping[str, float] | None) -> Mapping[str, float]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class EnergyReading:
    """A cumulative energy reading.

    Attributes:
        timestamp_s: ``time.monotonic()`` when the reading was taken.
        energy_j: Energy since the meter was started, all domains summed, in joules.
        domains_j: The same energy split by domain (``"gpu:0"``, ``"rapl:package-0"``,
            ``"cpu-estimate"`` ...), cumulative, in joules.
        source: Where the energy came from: ``nvml``, ``nvml-sampled``, ``rapl``,
            ``estimate`` or a ``+``-joined combination.
        faults: Number of measurement faults since the meter was started.
    """

    timestamp_s: float
    energy_j: float
    domains_j: Mapping[str, float] = field(default_factory=dict)
    source: str = "estimate"
    faults: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains_j", _frozen(self.domains_j))

    @property
    def is_estimate(self) -> bool:
        """Whether any part of this reading is an estimate rather than a measurement."""
        return "estimate" in self.source.split("+")


@dataclass(frozen=True)
class EnergyInterval:
    """The energy spent between two readings of the same meter.

    Attributes:
        start_s: Monotonic time of the start reading.
        end_s: Monotonic time of the end reading.
        energy_j: Energy spent in the interval, in joules.
        domains_j: Energy per domain in the interval, in joules.
        source: Energy source label of the end reading.
        partial: True when a measurement fault happened in the interval.
    """

    start_s: float
    end_s: float
    energy_j: float
    domains_j: Mapping[str, float] = field(default_factory=dict)
    source: str = "estimate"
    partial: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains_j", _frozen(self.domains_j))

    @classmethod
    def between(cls, start: EnergyReading, end: EnergyReading) -> EnergyInterval:
        """The interval from ``start`` to ``end``.

        Args:
            start: The earlier reading.
            end: The later reading, from the same meter.

        Returns:
            The interval. Negative differences (which a correct meter never produces) are
            clamped to zero and mark the interval partial.

        Example:
            >>> a = EnergyReading(timestamp_s=0.0, energy_j=10.0)
            >>> b = EnergyReading(timestamp_s=2.0, energy_j=30.0)
            >>> EnergyInterval.between(a, b).avg_power_w
            10.0
        """
        energy_j = end.energy_j - start.energy_j
        partial = end.faults > start.faults or energy_j < 0
        domains = {
            name: max(0.0, value - start.domains_j.get(name, 0.0)) for name, value in end.domains_j.items()
        }
        return cls(
            start_s=start.timestamp_s,
            end_s=end.timestamp_s,
            energy_j=max(0.0, energy_j),
            domains_j=domains,
            source=end.source,
            partial=partial,
        )

    @property
    def duration_s(self) -> float:
        """Length of the interval in seconds."""
        return max(0.0, self.end_s - self.start_s)

    @property
    def energy_kwh(self) -> float:
        """Energy of the interval in kWh."""
        return j_to_kwh(self.energy_j)

    @property
    def avg_power_w(self) -> float:
        """Mean power over the interval in watts (0 for an empty interval)."""
        duration_s = self.duration_s
        return self.energy_j / duration_s if duration_s > 0 else 0.0
