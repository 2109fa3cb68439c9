"""Host energy from RAPL through the Linux powercap interface (``/sys/class/powercap``).

Each RAPL zone exposes a cumulative ``energy_uj`` counter (microjoules) that wraps around at
``max_energy_range_uj``. Counted here: the package zones (``package-N``) and their DRAM
subzones (``dram``). Never counted: the ``core`` and ``uncore`` subzones (they are inside the
package: counting them would count their energy twice) and the ``psys`` platform zone (it
covers the whole SoC, packages included) unless the machine has no package zone at all. Intel
and AMD (whose RAPL driver uses the same ``intel-rapl`` layout) are both handled, and so are the
Xeons whose packages and DRAM the kernel exposes through TPMI (``intel-rapl-tpmi``, Granite
Rapids and later: there the MSR interface ``intel-rapl`` holds only ``psys``); the duplicate MMIO
interface (``intel-rapl-mmio``) is ignored. A zone two interfaces both expose counts once.

Wraparound: a reading below the previous one means the counter wrapped once. The counter wraps
after ``max_energy_range_uj / power`` seconds - about 26 minutes for a 262 kJ range at 170 W,
but only about a minute on parts with a small range at high power. A counter that wraps twice
between two reads loses a whole range without any sign of it, and epochs are often longer than
that, so :class:`RaplMeter` polls the counters from a daemon thread every
:data:`DEFAULT_POLL_INTERVAL_S` seconds by default.

Since Linux 5.10 (CVE-2020-8694, "Platypus") ``energy_uj`` is readable by root only;
:func:`rapl_available` says how to grant access.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from dataclasses import dataclass

from lightning_green.checks import check_positive
from lightning_green.energy.meter import EnergyMeter, PeriodicWorker

DEFAULT_POWERCAP_ROOT: str = "/sys/class/powercap"
"""Where the kernel exposes the powercap zones."""

DEFAULT_POLL_INTERVAL_S: float = 10.0
"""Background poll period of the RAPL counters. The fastest wrap seen in practice is about
60 s (small counter range at high power), so 10 s leaves a six-fold margin; a poll reads a few
small sysfs files (tens of microseconds) and costs well under 0.001% of a core."""

_CONTROL_TYPES = ("intel-rapl", "intel-rapl-tpmi", "amd-rapl")
"""The powercap control types read, in order of preference where two expose the same zone."""
_TOP_ZONE = re.compile(r"^(intel-rapl|intel-rapl-tpmi|amd-rapl):(\d+)$")
_PACKAGE_INDEX = re.compile(r"^package-(\d+(?:-die-\d+)?)")
"""A package zone's index, with its die on multi-die packages (``package-0-die-1``): its DRAM
subzone is named after both, so two dies' DRAM zones are two domains."""


class RaplUnavailableError(RuntimeError):
    """RAPL cannot be read on this machine.

    Args:
        reason: A human-readable reason, with how to fix it where that is possible.
        unreadable: True when the counters exist but cannot be read (access denied, or the driver
            fails to read them): worth a warning where an absent RAPL is not.

    Attributes:
        reason: The same reason.
        unreadable: The same flag.
    """

    def __init__(self, reason: str, *, unreadable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreadable = unreadable


@dataclass(frozen=True)
class RaplZone:
    """A RAPL zone that is counted.

    Attributes:
        domain: Domain name in readings (``rapl:package-0``, ``rapl:dram-0``, ``rapl:psys``).
        path: The zone's sysfs directory.
        max_energy_range_uj: Where ``energy_uj`` wraps around; None when unreadable.
    """

    domain: str
    path: str
    max_energy_range_uj: int | None


def _read_text(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def _read_int(path: str) -> int:
    return int(_read_text(path))


def _zone_name(path: str) -> str | None:
    try:
        return _read_text(os.path.join(path, "name"))
    except OSError:
        return None


def _max_range_uj(path: str) -> int | None:
    try:
        value = _read_int(os.path.join(path, "max_energy_range_uj"))
    except (OSError, ValueError):
        return None
    return value if value > 0 else None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def discover_rapl_zones(root: str = DEFAULT_POWERCAP_ROOT) -> list[RaplZone]:
    """The RAPL zones to count under a powercap root: packages and their DRAM subzones.

    Args:
        root: The powercap directory (``/sys/class/powercap``; tests point it elsewhere).

    Returns:
        The zones, packages first then DRAM in package order; ``psys`` only where there is no
        package zone. Empty when there is no RAPL interface.
    """
    tops: list[tuple[int, int, str, str]] = []
    for entry in _listdir(root):
        match = _TOP_ZONE.match(entry)
        if match:
            prefix = match.group(1)
            tops.append((_CONTROL_TYPES.index(prefix), int(match.group(2)), prefix, entry))
    tops.sort()
    packages: list[RaplZone] = []
    drams: list[RaplZone] = []
    psys: list[RaplZone] = []
    seen: set[str] = set()

    def add(bucket: list[RaplZone], domain: str, path: str) -> None:
        if domain not in seen:  # the same hardware exposed twice (two control types)
            seen.add(domain)
            bucket.append(RaplZone(domain, path, _max_range_uj(path)))

    for _, number, prefix, entry in tops:
        path = os.path.join(root, entry)
        name = _zone_name(path)
        if name is None:
            continue
        if name.startswith("package"):
            add(packages, f"rapl:{name}", path)
            index_match = _PACKAGE_INDEX.match(name)
            package_index = index_match.group(1) if index_match else str(number)
            sub_zone = re.compile(rf"^{re.escape(prefix)}:{number}:(\d+)$")
            for sub in _listdir(path):
                sub_path = os.path.join(path, sub)
                if sub_zone.match(sub) and _zone_name(sub_path) == "dram":
                    add(drams, f"rapl:dram-{package_index}", sub_path)
        elif name == "dram":  # a top-level DRAM zone (some servers)
            add(drams, f"rapl:dram-{number}", path)
        elif name == "psys":
            add(psys, "rapl:psys", path)
    return packages + drams if packages else psys


def _access_hint(root: str, control_type: str = "intel-rapl") -> str:
    zones = f"{root}/{control_type}"
    return (
        "RAPL counters are readable by root only since Linux 5.10 (CVE-2020-8694). Grant read "
        f"access with `sudo chmod -R a+r {zones}` (lost at reboot); persistently with a udev "
        'rule such as `SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod a+r /sys%p/energy_uj"` '
        "in /etc/udev/rules.d/99-rapl.rules; or give the interpreter the capability "
        "(`sudo setcap cap_dac_read_search+ep $(readlink -f $(which python))`, which lets it "
        "read every file on the machine)."
    )


def _check_zones(root: str) -> list[RaplZone]:
    if not os.path.isdir(root):
        raise RaplUnavailableError(
            f"{root} not found: no powercap interface (not Linux, or a VM/container without it)"
        )
    zones = discover_rapl_zones(root)
    if not zones:
        raise RaplUnavailableError(
            f"no RAPL package zone under {root} (intel_rapl/rapl driver not loaded, or no RAPL on this CPU)"
        )
    for zone in zones:
        path = os.path.join(zone.path, "energy_uj")
        try:
            _read_int(path)
        except OSError as err:
            if err.errno in (errno.EIO, errno.ENODATA):  # the driver failed: access is not the cause
                raise RaplUnavailableError(
                    f"reading {path} ({zone.domain}) failed: {err.strerror or err} (the RAPL driver "
                    "could not read the counter; granting access would not help)",
                    unreadable=True,
                ) from err
            who = f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "this user"
            raise RaplUnavailableError(
                f"{path} ({zone.domain}) is not readable by this process ({who}): {err.strerror or err}. "
                + _access_hint(root, os.path.basename(zone.path).split(":")[0]),
                unreadable=True,
            ) from err
        except ValueError as err:
            raise RaplUnavailableError(f"{path} does not hold a counter: {err}") from err
    return zones


def rapl_available(root: str = DEFAULT_POWERCAP_ROOT) -> tuple[bool, str]:
    """Whether :class:`RaplMeter` can read this machine's RAPL counters, and why not.

    Args:
        root: The powercap directory.

    Returns:
        ``(True, description)`` or ``(False, reason)``; when the counters exist but cannot be
        read the reason says how to grant access.
    """
    try:
        zones = _check_zones(root)
    except RaplUnavailableError as err:
        return False, err.reason
    return True, "RAPL " + ", ".join(zone.domain.removeprefix("rapl:") for zone in zones)


@dataclass
class _ZoneState:
    zone: RaplZone
    prev_uj: int | None = None
    energy_uj: int = 0
    errors: int = 0
    last_error: str = ""
    failing: bool = False  # whether the last poll failed (the zone keeps its last value)
    resets: int = 0


class RaplMeter(EnergyMeter):
    """Host CPU package and DRAM energy from RAPL, one domain per counted zone.

    Args:
        root: The powercap directory.
        poll_interval_s: Period of the background poller that catches every wraparound of the
            counters; None reads only when :meth:`read` is called (correct only when reads are
            closer together than the wrap period, see the module docstring). Default
            :data:`DEFAULT_POLL_INTERVAL_S`.

    Raises:
        RaplUnavailableError: If there is no RAPL zone or ``energy_uj`` cannot be read.
        ValueError: If ``poll_interval_s`` is neither None nor a positive number.

    A counter that becomes unreadable mid-run is a fault (warned once, readings partial) and
    is read again at each poll; when it recovers the energy in between is recovered too,
    provided it did not wrap more than once meanwhile.
    """

    source = "rapl"

    def __init__(
        self,
        root: str = DEFAULT_POWERCAP_ROOT,
        *,
        poll_interval_s: float | None = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        super().__init__()
        self.poll_interval_s: float | None = check_positive(
            "poll_interval_s", poll_interval_s, unit="seconds", allow_none=True
        )
        self.root = root
        self.zones: list[RaplZone] = _check_zones(root)
        self._states = [_ZoneState(zone) for zone in self.zones]
        self._poll_lock = threading.Lock()
        self._poller = PeriodicWorker(
            "lightning-green-rapl-poller",
            self._poll_background,
            self.poll_interval_s or DEFAULT_POLL_INTERVAL_S,
        )
        self._poll_count = 0
        self._closed = False

    @property
    def domains(self) -> list[str]:
        """Domain names of this meter."""
        return [zone.domain for zone in self.zones]

    # -- EnergyMeter hooks ------------------------------------------------------------------
    def _start(self) -> None:
        self._stop_poller()
        self._closed = False
        with self._poll_lock:
            for index, zone in enumerate(self.zones):
                self._states[index] = _ZoneState(zone)
            self._poll_all()
        self._ensure_poller()

    def _read_j(self) -> dict[str, float]:
        self._check_poller()
        with self._poll_lock:
            self._poll_all()
            for state in self._states:
                if state.errors:
                    errors, state.errors = state.errors, 0
                    path = os.path.join(state.zone.path, "energy_uj")
                    self.record_fault(
                        f"rapl-read:{state.zone.domain}",
                        f"Reading {path} failed ({errors} time(s) since "
                        f"the previous reading, last: {state.last_error}); {state.zone.domain} keeps its "
                        "last value until the counter can be read again.",
                    )
                if state.failing:  # unreadable now: what it misses comes with the next good poll
                    self.mark_stale()
                if state.resets:
                    state.resets = 0
                    self.record_fault(
                        f"rapl-reset:{state.zone.domain}",
                        f"The RAPL counter of {state.zone.domain} went backwards and its wrap range is "
                        "unknown; the new value is taken as a baseline and energy since the previous "
                        "poll is missing.",
                    )
            result = {state.zone.domain: state.energy_uj / 1e6 for state in self._states}
        self._ensure_poller()
        return result

    def _close(self) -> None:
        self._closed = True
        self._stop_poller()

    # -- counters ---------------------------------------------------------------------------
    def _poll_all(self) -> None:
        """Read every counter and add the deltas; the caller holds ``_poll_lock``."""
        self._poll_count += 1
        for state in self._states:
            self._poll_zone(state)

    def _poll_zone(self, state: _ZoneState) -> None:
        try:
            value_uj = _read_int(os.path.join(state.zone.path, "energy_uj"))
        except (OSError, ValueError) as err:
            state.errors += 1
            state.last_error = repr(err)
            state.failing = True
            return
        state.failing = False
        prev_uj = state.prev_uj
        state.prev_uj = value_uj
        if prev_uj is None:  # first good read: the baseline
            return
        if value_uj >= prev_uj:
            state.energy_uj += value_uj - prev_uj
        elif state.zone.max_energy_range_uj is not None:
            state.energy_uj += state.zone.max_energy_range_uj - prev_uj + value_uj
        else:
            state.resets += 1

    # -- poller -----------------------------------------------------------------------------
    def _poll_background(self) -> None:
        """One round of the poller thread (an escaping error ends the thread, see :meth:`_check_poller`)."""
        with self._poll_lock:
            self._poll_all()

    def _ensure_poller(self) -> None:
        if not self._closed and self.poll_interval_s is not None:
            self._poller.ensure()

    def _check_poller(self) -> None:
        error = self._poller.reap()
        if error is not None:
            self.record_fault(
                "rapl-poller",
                f"The RAPL poller thread died ({error!r}); it is restarted, and a counter "
                "that wrapped more than once while it was dead lost whole ranges.",
            )

    def _stop_poller(self) -> None:
        self._poller.stop(timeout_s=2.0)
