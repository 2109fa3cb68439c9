"""RaplMeter against a fake powercap tree written in tmp_path."""

from __future__ import annotations

import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import pytest

from lightning_green.energy.meter import EnergyMeasurementWarning
from lightning_green.energy.rapl import (
    RaplMeter,
    RaplUnavailableError,
    discover_rapl_zones,
    rapl_available,
)

RANGE_UJ = 262_143_328_850


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a poller never sees a half-written file


def make_zone(path: Path, name: str, energy_uj: int = 0, max_range_uj: int | None = RANGE_UJ) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    if max_range_uj is not None:
        (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return path


class FakePowercap:
    """A powercap tree shaped like the kernel's: zones, subzones and their top-level links."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zones: dict[str, Path] = {}
        (root / "intel-rapl").mkdir(parents=True)  # the control type: no energy_uj

    def add(self, zone_id: str, name: str, **kwargs: int | None) -> Path:
        parts = zone_id.split(":")
        if len(parts) == 2:
            path = make_zone(self.root / zone_id, name, **kwargs)  # type: ignore[arg-type]
        else:
            parent = self.root / ":".join(parts[:2])
            path = make_zone(parent / zone_id, name, **kwargs)  # type: ignore[arg-type]
            os.symlink(path, self.root / zone_id)
        self.zones[name if name not in self.zones else zone_id] = path
        return path

    def set(self, zone: Path, energy_uj: int) -> None:
        write_atomic(zone / "energy_uj", f"{energy_uj}\n")

    def bump(self, zone: Path, delta_uj: int) -> None:
        self.set(zone, int((zone / "energy_uj").read_text()) + delta_uj)


@pytest.fixture
def server(tmp_path: Path) -> tuple[FakePowercap, dict[str, Path]]:
    """Two packages (package-0 with core/uncore/dram subzones, package-1 with dram), a psys
    zone and the duplicate MMIO package interface."""
    cap = FakePowercap(tmp_path / "powercap")
    z = {
        "package-0": cap.add("intel-rapl:0", "package-0", energy_uj=1_000_000),
        "core-0": cap.add("intel-rapl:0:0", "core", energy_uj=5),
        "uncore-0": cap.add("intel-rapl:0:1", "uncore", energy_uj=5),
        "dram-0": cap.add("intel-rapl:0:2", "dram", energy_uj=7_000),
        "package-1": cap.add("intel-rapl:1", "package-1", energy_uj=2_000_000),
        "dram-1": cap.add("intel-rapl:1:0", "dram", energy_uj=9_000),
        "psys": cap.add("intel-rapl:2", "psys", energy_uj=50),
    }
    z["mmio"] = make_zone(cap.root / "intel-rapl-mmio:0", "package-0", energy_uj=123)
    return cap, z


def energy_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, EnergyMeasurementWarning)]


def wait_for_poll(meter: RaplMeter, timeout_s: float = 3.0) -> None:
    """Wait until the background poller has read the counters at least once more."""
    target = meter._poll_count + 2  # +2: a poll in progress may have read before our write
    deadline = time.monotonic() + timeout_s
    while meter._poll_count < target:
        if time.monotonic() > deadline:
            raise AssertionError("the RAPL poller did not poll")
        time.sleep(0.001)


def test_discovery_counts_packages_and_dram_only(server):
    cap, _ = server
    zones = discover_rapl_zones(str(cap.root))
    assert [z.domain for z in zones] == ["rapl:package-0", "rapl:package-1", "rapl:dram-0", "rapl:dram-1"]
    assert all(z.max_energy_range_uj == RANGE_UJ for z in zones)
    assert rapl_available(str(cap.root)) == (True, "RAPL package-0, package-1, dram-0, dram-1")


def test_energy_sums_packages_and_dram_never_core_uncore_psys(server):
    cap, z = server
    meter = RaplMeter(str(cap.root), poll_interval_s=None)
    assert meter.source == "rapl"
    meter.start()
    deltas = {"package-0": 3_000_000, "package-1": 1_000_000, "dram-0": 250_000, "dram-1": 500_000}
    for name, delta in deltas.items():
        cap.bump(z[name], delta)
    for name in ("core-0", "uncore-0", "psys", "mmio"):  # inside the packages, or duplicates
        cap.bump(z[name], 99_000_000)
    reading = meter.read()
    meter.close()
    assert dict(reading.domains_j) == {
        "rapl:package-0": pytest.approx(3.0),
        "rapl:package-1": pytest.approx(1.0),
        "rapl:dram-0": pytest.approx(0.25),
        "rapl:dram-1": pytest.approx(0.5),
    }
    assert reading.energy_j == pytest.approx(4.75)
    assert reading.source == "rapl" and reading.faults == 0


def test_multi_die_packages_count_each_dies_dram(tmp_path):
    # The kernel names the zones of a package with several dies package-0-die-0, package-0-die-1.
    cap = FakePowercap(tmp_path / "powercap")
    zones = [
        cap.add("intel-rapl:0", "package-0-die-0"),
        cap.add("intel-rapl:0:0", "dram"),
        cap.add("intel-rapl:1", "package-0-die-1"),
        cap.add("intel-rapl:1:0", "dram"),
    ]
    meter = RaplMeter(str(cap.root), poll_interval_s=None)
    assert meter.domains == [
        "rapl:package-0-die-0",
        "rapl:package-0-die-1",
        "rapl:dram-0-die-0",
        "rapl:dram-0-die-1",
    ]
    meter.start()
    for zone in zones:
        cap.bump(zone, 1_000_000)
    reading = meter.read()
    meter.close()
    assert reading.energy_j == pytest.approx(4.0) and reading.faults == 0


def test_psys_counts_only_without_package_zones(tmp_path):
    cap = FakePowercap(tmp_path / "powercap")
    psys = cap.add("intel-rapl:0", "psys", energy_uj=10)
    meter = RaplMeter(str(cap.root), poll_interval_s=None)
    meter.start()
    cap.bump(psys, 2_000_000)
    assert dict(meter.read().domains_j) == {"rapl:psys": pytest.approx(2.0)}


def test_granite_rapids_layout_counts_the_tpmi_packages_not_the_msr_psys(tmp_path):
    # Xeons with TPMI (Granite Rapids on): the MSR interface keeps only psys, the packages and their
    # DRAM are under intel-rapl-tpmi; psys must not stand in for them.
    root = tmp_path / "powercap"
    psys = make_zone(root / "intel-rapl:0", "psys", energy_uj=10)
    packages = [make_zone(root / f"intel-rapl-tpmi:{i}", f"package-{i}", energy_uj=100) for i in (0, 1)]
    dram = make_zone(packages[0] / "intel-rapl-tpmi:0:0", "dram", energy_uj=5)
    os.symlink(dram, root / "intel-rapl-tpmi:0:0")
    meter = RaplMeter(str(root), poll_interval_s=None)
    assert meter.domains == ["rapl:package-0", "rapl:package-1", "rapl:dram-0"]
    meter.start()
    write_atomic(packages[0] / "energy_uj", "2000100\n")
    write_atomic(packages[1] / "energy_uj", "1000100\n")
    write_atomic(dram / "energy_uj", "500005\n")
    write_atomic(psys / "energy_uj", "99000010\n")
    reading = meter.read()
    meter.close()
    assert reading.energy_j == pytest.approx(3.5)


def test_a_zone_both_msr_and_tpmi_expose_counts_once(tmp_path):
    root = tmp_path / "powercap"
    msr = make_zone(root / "intel-rapl:0", "package-0", energy_uj=0)
    tpmi = make_zone(root / "intel-rapl-tpmi:0", "package-0", energy_uj=0)
    meter = RaplMeter(str(root), poll_interval_s=None)
    assert meter.domains == ["rapl:package-0"]
    meter.start()
    write_atomic(msr / "energy_uj", "1000000\n")
    write_atomic(tpmi / "energy_uj", "1000000\n")
    assert meter.read().energy_j == pytest.approx(1.0)


def test_amd_layout_with_a_package_only(tmp_path):
    root = tmp_path / "powercap"
    package = make_zone(root / "amd-rapl:0", "package-0", energy_uj=0, max_range_uj=65_532_610_987)
    meter = RaplMeter(str(root), poll_interval_s=None)
    assert meter.domains == ["rapl:package-0"]
    meter.start()
    write_atomic(package / "energy_uj", "1500000\n")
    assert meter.read().energy_j == pytest.approx(1.5)


def test_wraparound_at_max_energy_range(tmp_path):
    cap = FakePowercap(tmp_path / "powercap")
    package = cap.add("intel-rapl:0", "package-0", energy_uj=900_000, max_range_uj=1_000_000)
    meter = RaplMeter(str(cap.root), poll_interval_s=None)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        cap.set(package, 950_000)
        first = meter.read()
        cap.set(package, 100_000)  # wrapped: 50_000 to the top, then 100_000
        second = meter.read()
        cap.set(package, 400_000)
        third = meter.read()
    assert [r.energy_j for r in (first, second, third)] == pytest.approx([0.05, 0.2, 0.5])
    assert energy_warnings(record) == [] and third.faults == 0


def test_background_poller_catches_wraps_that_reads_alone_miss(tmp_path):
    trace = [600_000, 100_000, 700_000, 200_000, 800_000]  # wraps twice at 1_000_000

    def run(poll_interval_s: float | None) -> float:
        cap = FakePowercap(tmp_path / f"powercap-{poll_interval_s}")
        package = cap.add("intel-rapl:0", "package-0", energy_uj=0, max_range_uj=1_000_000)
        meter = RaplMeter(str(cap.root), poll_interval_s=poll_interval_s)
        meter.start()
        for value in trace:
            cap.set(package, value)
            if poll_interval_s is not None:
                wait_for_poll(meter)
        energy_j = meter.read().energy_j
        meter.close()
        return energy_j

    assert run(0.002) == pytest.approx(2.8)  # 0.6 + 0.5 + 0.6 + 0.5 + 0.6
    assert run(None) == pytest.approx(0.8)  # only 0 -> 800_000 is seen: two ranges lost


def _make_unreadable(path: Path) -> None:
    """Make a file unreadable even for root: replace it by a directory."""
    path.unlink()
    path.mkdir()


def test_file_unreadable_mid_run_is_a_fault_and_recovers(server):
    cap, z = server
    meter = RaplMeter(str(cap.root), poll_interval_s=None)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        cap.bump(z["package-0"], 1_000_000)
        cap.bump(z["package-1"], 1_000_000)
        first = meter.read()
        energy = z["package-0"] / "energy_uj"
        saved = int(energy.read_text())
        _make_unreadable(energy)
        cap.bump(z["package-1"], 1_000_000)
        second = meter.read()
        third = meter.read()
        shutil.rmtree(energy)
        energy.write_text(f"{saved + 3_000_000}\n")
        fourth = meter.read()
    messages = energy_warnings(record)
    assert len(messages) == 1 and "package-0" in messages[0] and "energy_uj" in messages[0]
    assert second.domains_j["rapl:package-0"] == pytest.approx(1.0)  # kept
    assert second.domains_j["rapl:package-1"] == pytest.approx(2.0)  # others go on
    assert second.faults > first.faults
    assert third.faults > second.faults
    assert fourth.domains_j["rapl:package-0"] == pytest.approx(4.0)  # recovered
    assert fourth.faults == third.faults
    assert [r.stale for r in (first, second, third, fourth)] == [False, True, True, False]


def test_a_counter_unreadable_at_start_takes_its_baseline_at_the_first_good_read(server):
    """A zone unreadable at start never counts its value since boot: its first good read is its
    baseline; the read before is a fault and stale (the span up to the baseline is partial)."""
    cap, z = server
    meter = RaplMeter(str(cap.root), poll_interval_s=None)
    energy = z["package-0"] / "energy_uj"
    saved = int(energy.read_text())
    _make_unreadable(energy)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        cap.bump(z["package-1"], 1_000_000)
        first = meter.read()  # package-0 still unreadable
        shutil.rmtree(energy)
        energy.write_text(f"{saved + 5_000_000}\n")
        second = meter.read()  # package-0's baseline
        cap.bump(z["package-0"], 2_000_000)
        third = meter.read()
        meter.close()
    messages = energy_warnings(record)
    assert len(messages) == 1 and "package-0" in messages[0]
    assert first.domains_j["rapl:package-0"] == 0.0
    assert first.domains_j["rapl:package-1"] == pytest.approx(1.0)
    assert second.domains_j["rapl:package-0"] == 0.0  # not the 6 J since boot
    assert third.domains_j["rapl:package-0"] == pytest.approx(2.0)
    assert (first.faults, first.stale) == (1, True)
    assert (second.faults, second.stale) == (1, False) and third.faults == 1


def test_availability_reasons(tmp_path, server):
    ok, reason = rapl_available(str(tmp_path / "absent"))
    assert not ok and "not found" in reason
    (tmp_path / "empty").mkdir()
    ok, reason = rapl_available(str(tmp_path / "empty"))
    assert not ok and "no RAPL package zone" in reason
    cap, z = server
    _make_unreadable(z["dram-1"] / "energy_uj")
    ok, reason = rapl_available(str(cap.root))
    assert not ok
    assert "dram" in reason and "not readable" in reason
    assert f"sudo chmod -R a+r {cap.root}/intel-rapl" in reason and "udev" in reason and "setcap" in reason
    with pytest.raises(RaplUnavailableError) as info:
        RaplMeter(str(cap.root))
    assert info.value.unreadable and info.value.reason == reason


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod 000 does not deny root reads (the directory variant covers it)",
)
def test_availability_with_permission_denied(server):
    cap, z = server
    (z["package-0"] / "energy_uj").chmod(0)
    ok, reason = rapl_available(str(cap.root))
    assert not ok and "Permission denied" in reason and "sudo chmod -R a+r" in reason


def test_unknown_range_treats_a_drop_as_a_reset(tmp_path):
    cap = FakePowercap(tmp_path / "powercap")
    package = cap.add("intel-rapl:0", "package-0", energy_uj=5_000_000, max_range_uj=None)
    meter = RaplMeter(str(cap.root), poll_interval_s=None)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        cap.set(package, 6_000_000)
        first = meter.read()
        cap.set(package, 1_000)
        second = meter.read()
        cap.set(package, 501_000)
        third = meter.read()
    assert [r.energy_j for r in (first, second, third)] == pytest.approx([1.0, 1.0, 1.5])
    messages = energy_warnings(record)
    assert len(messages) == 1 and "backwards" in messages[0] and second.faults == 1


def test_dead_poller_is_detected_and_restarted(tmp_path, monkeypatch):
    cap = FakePowercap(tmp_path / "powercap")
    package = cap.add("intel-rapl:0", "package-0", energy_uj=0)
    meter = RaplMeter(str(cap.root), poll_interval_s=0.002)
    meter.start()
    real_poll_all = meter._poll_all

    def poll_all_that_dies_in_the_thread() -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("poller bug")
        real_poll_all()

    monkeypatch.setattr(meter, "_poll_all", poll_all_that_dies_in_the_thread)
    first_thread = meter._poller.thread
    assert first_thread is not None
    first_thread.join(timeout=2.0)
    assert not first_thread.is_alive()
    monkeypatch.setattr(meter, "_poll_all", real_poll_all)
    cap.set(package, 2_000_000)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        reading = meter.read()
    messages = energy_warnings(record)
    assert len(messages) == 1 and "died" in messages[0] and "RuntimeError" in messages[0]
    assert reading.faults == 1 and reading.energy_j == pytest.approx(2.0)
    assert meter._poller.alive and meter._poller.thread is not first_thread
    wait_for_poll(meter)
    meter.close()
    meter.close()
    assert meter._poller.thread is None and not [t for t in threading.enumerate() if "rapl-poller" in t.name]


def test_default_poll_interval_runs_a_daemon_poller(server):
    cap, _ = server
    meter = RaplMeter(str(cap.root))
    assert meter.poll_interval_s == 10.0
    meter.start()
    thread = meter._poller.thread
    assert thread is not None and thread.daemon and thread.is_alive()
    meter.close()
    assert not thread.is_alive()
    meter.read()  # a read after close gives the last values and starts no thread
    assert meter._poller.thread is None


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "10"])
def test_invalid_poll_interval_is_rejected(server, bad):
    cap, _ = server
    with pytest.raises(ValueError, match="poll_interval_s"):
        RaplMeter(str(cap.root), poll_interval_s=bad)
