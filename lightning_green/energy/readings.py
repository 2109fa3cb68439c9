"""A meter's cumulative energy reading.

A meter reports *cumulative* energy since it was started, never decreasing: resets and
wraparounds of the underlying hardware counter are absorbed by the meter. Faults (a failed
read, a counter that went backwards, a sampler thread that died) are counted in ``faults``: a
span whose end reading has seen more faults than its start is partial - some energy in it may
be missing. A reading that could not read some domain keeps that domain's last good figure and
is ``stale``: the energy it missed comes with a later reading, so a span that begins at a stale
reading is partial too (it holds energy of the span before).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


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
        stale: Whether some domain could not be read now and kept its last good figure: the
            energy it missed comes with a later reading, in the span that begins here.
    """

    timestamp_s: float
    energy_j: float
    domains_j: Mapping[str, float] = field(default_factory=dict)
    source: str = "estimate"
    faults: int = 0
    stale: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains_j", _frozen(self.domains_j))

    @property
    def is_estimate(self) -> bool:
        """Whether any part of this reading is an estimate rather than a measurement."""
        return "estimate" in self.source.split("+")
