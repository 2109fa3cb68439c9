"""build_meter / validate_meter_spec: auto-selection, fallbacks, DDP roles."""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from nvml_double import FakeNvml, gpus

from lightning_green.energy import estimate
from lightning_green.energy.estimate import CpuTimeEstimateMeter
from lightning_green.energy.meter import CompositeMeter, EnergyMeasurementWarning
from lightning_green.energy.nvml import NvmlMeter, nvml_available
from lightning_green.energy.rapl import RaplMeter
from lightning_green.energy.selection import METER_SPECS, build_meter, validate_meter_spec


@pytest.fixture
def no_rapl(tmp_path: Path) -> str:
    return str(tmp_path / "no-powercap")


@pytest.fixture
def rapl_root(tmp_path: Path) -> str:
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    return str(tmp_path / "powercap")


@pytest.fixture
def no_proc(monkeypatch):
    """The estimate sees a platform without ``/proc`` (macOS), as it would there."""
    monkeypatch.setattr(estimate, "sys", SimpleNamespace(platform="darwin"))


def build(spec: str, **kwargs):
    """build_meter, returning the meter and the EnergyMeasurementWarnings it gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter = build_meter(spec, **kwargs)
    return meter, [str(w.message) for w in record if issubclass(w.category, EnergyMeasurementWarning)]


# -- validate_meter_spec --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("auto", "auto"),
        ("nvml", "nvml"),
        ("rapl", "rapl"),
        ("estimate", "estimate"),
        ("nvml+rapl", "nvml+rapl"),
        ("rapl+nvml", "nvml+rapl"),
        (" NVML + Estimate ", "nvml+estimate"),
    ],
)
def test_valid_specs_are_normalised(spec, expected):
    assert validate_meter_spec(spec) == expected
    assert expected in METER_SPECS


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("gpu", "unknown source 'gpu'"),
        ("nvml+", "an empty part"),
        ("", "an empty part"),
        ("estimate+estimate", "twice"),
        ("auto+nvml", "'auto' cannot be combined"),
        ("rapl+estimate", "count it twice"),
    ],
)
def test_invalid_specs_raise_naming_meter_the_value_and_the_allowed_values(spec, problem):
    with pytest.raises(ValueError) as info:
        validate_meter_spec(spec)
    message = str(info.value)
    assert message.startswith(f"meter={spec!r} is invalid")
    assert problem in message
    assert "allowed values: 'auto', 'nvml', 'rapl', 'estimate', 'nvml+rapl', 'nvml+estimate'" in message


def test_non_string_spec_is_rejected():
    with pytest.raises(ValueError, match="meter must be a string"):
        validate_meter_spec(None)  # type: ignore[arg-type]


def test_build_meter_validates_too():
    with pytest.raises(ValueError, match="meter='gpu'"):
        build_meter("gpu")


# -- auto -----------------------------------------------------------------------------------------
def test_auto_on_a_cpu_only_machine_is_the_estimate(no_rapl):
    meter, warned = build("auto", rapl_root=no_rapl, cpu_power_per_core_w=12.0, root_pids=[os.getpid()])
    assert isinstance(meter, CpuTimeEstimateMeter) and meter.source == "estimate"
    assert meter.power_per_core_w == 12.0 and meter.root_pids == (os.getpid(),)
    assert warned == []


def test_auto_with_gpu_and_rapl_is_nvml_plus_rapl(rapl_root):
    nvml = FakeNvml(gpus(2, energy_mj=0))
    meter, warned = build("auto", cuda_indices=[1], rapl_root=rapl_root, nvml=nvml, environ={})
    assert warned == []
    assert isinstance(meter, CompositeMeter) and meter.source == "nvml+rapl"
    assert [type(m) for m in meter.meters] == [NvmlMeter, RaplMeter]
    meter.start()
    nvml.gpus[1].energy_mj = 2_000
    (Path(rapl_root) / "intel-rapl:0" / "energy_uj").write_text("3001000\n")
    reading = meter.read()
    meter.close()
    assert dict(reading.domains_j) == {"gpu:1": pytest.approx(2.0), "rapl:package-0": pytest.approx(3.0)}
    assert reading.source == "nvml+rapl" and not reading.is_estimate


def test_auto_with_gpu_and_no_rapl_is_nvml_plus_estimate(no_rapl):
    meter, warned = build("auto", cuda_indices=[0], rapl_root=no_rapl, nvml=FakeNvml(gpus(1)), environ={})
    assert warned == []
    assert isinstance(meter, CompositeMeter) and meter.source == "nvml+estimate"


def test_auto_on_a_gpu_rank_that_is_not_the_host_reader_is_nvml_only(rapl_root):
    meter, warned = build(
        "auto", cuda_indices=[0], host_reader=False, rapl_root=rapl_root, nvml=FakeNvml(gpus(1)), environ={}
    )
    assert warned == [] and isinstance(meter, NvmlMeter) and meter.source == "nvml"


def test_auto_with_gpus_but_no_nvml_warns_that_the_gpu_is_not_measured(no_rapl):
    nvml = FakeNvml(gpus(1), library_found=False)
    meter, warned = build("auto", cuda_indices=[0], rapl_root=no_rapl, nvml=nvml, environ={})
    assert isinstance(meter, CpuTimeEstimateMeter)
    assert len(warned) == 1 and "NVML library not found" in warned[0] and "estimate" in warned[0]


def test_auto_with_unreadable_rapl_warns_how_to_grant_access(rapl_root):
    energy = Path(rapl_root) / "intel-rapl:0" / "energy_uj"
    energy.unlink()
    energy.mkdir()  # unreadable, even for root
    meter, warned = build("auto", rapl_root=rapl_root)
    assert isinstance(meter, CpuTimeEstimateMeter)
    assert len(warned) == 1 and "sudo chmod -R a+r" in warned[0] and "estimate is used instead" in warned[0]


def test_auto_with_a_rapl_counter_the_driver_cannot_read_does_not_blame_access(rapl_root, monkeypatch):
    import errno

    from lightning_green.energy import rapl

    def failing_read(path: str) -> int:
        raise OSError(errno.ENODATA, os.strerror(errno.ENODATA), path)

    monkeypatch.setattr(rapl, "_read_int", failing_read)
    meter, warned = build("auto", rapl_root=rapl_root)
    assert isinstance(meter, CpuTimeEstimateMeter)
    assert len(warned) == 1 and "the RAPL driver could not read the counter" in warned[0]
    assert "chmod" not in warned[0] and "estimate is used instead" in warned[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
@pytest.mark.parametrize("spec", ["auto", "estimate", "rapl"])
@pytest.mark.parametrize("rapl", ["rapl_root", "no_rapl"])
def test_nothing_to_read_on_a_cpu_rank_that_is_not_the_host_reader(spec, rapl, request):
    # The host reader's RAPL, or its estimate of every local rank's process tree, counts it.
    meter, warned = build(spec, host_reader=False, rapl_root=request.getfixturevalue(rapl))
    assert meter is None and warned == []


# -- platforms where the estimate cannot read other processes (no /proc) ---------------------------
def test_process_trees_are_not_readable_without_proc(no_proc):
    assert estimate.process_trees_readable() is False
    assert CpuTimeEstimateMeter(power_per_core_w=10.0)._use_proc is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_process_trees_are_readable_with_proc(tmp_path):
    assert estimate.process_trees_readable() is True
    assert estimate.process_trees_readable(str(tmp_path)) is False  # a procfs without this process


@pytest.mark.parametrize("spec", ["auto", "estimate"])
def test_without_proc_a_rank_that_is_not_the_host_reader_estimates_its_own_process(spec, no_rapl, no_proc):
    # No other process can read this rank's CPU time there: it is counted here or nowhere.
    meter, warned = build(spec, host_reader=False, rapl_root=no_rapl)
    assert warned == [] and isinstance(meter, CpuTimeEstimateMeter) and meter.source == "estimate"
    assert meter.root_pids == (os.getpid(),) and meter._use_proc is False


def test_without_proc_the_host_reader_estimates_its_own_process_only(no_rapl, no_proc):
    meter, _ = build("auto", rapl_root=no_rapl, root_pids=[os.getpid(), os.getpid() + 1])
    assert isinstance(meter, CpuTimeEstimateMeter) and meter.root_pids == (os.getpid(),)


def test_without_proc_a_non_host_rank_falls_back_to_its_own_estimate_like_the_host_reader(no_rapl, no_proc):
    meter, warned = build("rapl", host_reader=False, rapl_root=no_rapl)
    assert isinstance(meter, CpuTimeEstimateMeter)
    assert len(warned) == 1 and "RAPL is unavailable" in warned[0] and "estimate" in warned[0]


def test_without_proc_a_gpu_rank_adds_its_own_estimate_to_nvml(no_rapl, no_proc):
    nvml = FakeNvml(gpus(1))
    meter, warned = build(
        "auto", cuda_indices=[0], host_reader=False, rapl_root=no_rapl, nvml=nvml, environ={}
    )
    assert warned == [] and isinstance(meter, CompositeMeter) and meter.source == "nvml+estimate"


@pytest.mark.parametrize("spec", ["auto", "rapl"])
def test_without_proc_a_non_host_rank_adds_nothing_to_the_host_readers_rapl(spec, rapl_root, no_proc):
    # RAPL measures the whole host, every rank's CPU included: the host reader's reading counts it.
    assert isinstance(build(spec, rapl_root=rapl_root)[0], RaplMeter)
    meter, warned = build(spec, host_reader=False, rapl_root=rapl_root)
    assert meter is None and warned == []


# -- named sources and fallbacks ------------------------------------------------------------------
def test_named_nvml_without_nvml_warns_once_and_uses_the_estimate(no_rapl):
    nvml = FakeNvml(gpus(1), library_found=False)
    meter, warned = build("nvml", cuda_indices=[0], rapl_root=no_rapl, nvml=nvml, environ={})
    assert isinstance(meter, CpuTimeEstimateMeter) and meter.source == "estimate"
    assert len(warned) == 1
    assert "NVML library not found (no NVIDIA driver)" in warned[0]
    assert "the CPU-time estimate is used instead" in warned[0]


def test_named_nvml_on_a_cpu_run_falls_back_to_the_estimate(no_rapl):
    meter, warned = build("nvml", rapl_root=no_rapl, nvml=FakeNvml(gpus(1)), environ={})
    assert isinstance(meter, CpuTimeEstimateMeter)
    assert len(warned) == 1 and "uses no CUDA device" in warned[0]


def test_named_nvml_with_the_real_library_on_a_machine_without_nvml(no_rapl):
    ok, reason = nvml_available([0])
    if ok:
        pytest.skip(f"this machine has working NVML ({reason}); the fallback needs a machine without it")
    meter, warned = build("nvml", cuda_indices=[0], rapl_root=no_rapl)
    assert isinstance(meter, CpuTimeEstimateMeter) and meter.source == "estimate"
    assert len(warned) == 1 and reason in warned[0]


def test_named_nvml_on_a_non_host_rank_without_nvml_measures_nothing():
    nvml = FakeNvml(gpus(1), library_found=False)
    meter, warned = build("nvml", cuda_indices=[0], host_reader=False, nvml=nvml, environ={})
    assert meter is None
    assert len(warned) == 1 and "measures nothing" in warned[0]


def test_named_rapl_without_rapl_falls_back_to_the_estimate(no_rapl):
    meter, warned = build("rapl", rapl_root=no_rapl)
    assert isinstance(meter, CpuTimeEstimateMeter)
    assert len(warned) == 1 and "RAPL is unavailable" in warned[0] and "estimate" in warned[0]


def test_named_rapl_that_works_is_rapl(rapl_root):
    meter, warned = build("rapl", rapl_root=rapl_root)
    assert warned == [] and isinstance(meter, RaplMeter) and meter.source == "rapl"


def test_nvml_plus_rapl_without_nvml_keeps_rapl_and_says_so(rapl_root):
    nvml = FakeNvml(gpus(1), library_found=False)
    meter, warned = build("nvml+rapl", cuda_indices=[0], rapl_root=rapl_root, nvml=nvml, environ={})
    # RAPL already measures the host CPU: the estimate would count it twice.
    assert isinstance(meter, RaplMeter) and meter.source == "rapl"
    assert len(warned) == 1 and "energy source is now 'rapl'" in warned[0]


def test_nvml_plus_estimate_with_mig_falls_back_with_the_reason(no_rapl):
    environ = {"CUDA_VISIBLE_DEVICES": "MIG-5c4ae3b9-1b32-5c0e-9b3f-1f2e3d4c5b6a"}
    nvml = FakeNvml(gpus(1))
    meter, warned = build("nvml+estimate", cuda_indices=[0], rapl_root=no_rapl, nvml=nvml, environ=environ)
    assert isinstance(meter, CpuTimeEstimateMeter)
    assert len(warned) == 1 and "MIG instance" in warned[0]


def test_named_estimate_ignores_readable_rapl(rapl_root):
    meter, warned = build("estimate", rapl_root=rapl_root)
    assert warned == [] and isinstance(meter, CpuTimeEstimateMeter)


def test_sampling_interval_reaches_the_nvml_meter(no_rapl):
    nvml = FakeNvml(gpus(1, energy_mj=None))
    meter, _ = build(
        "nvml", cuda_indices=[0], host_reader=False, sampling_interval_s=0.05, nvml=nvml, environ={}
    )
    assert isinstance(meter, NvmlMeter) and meter.sampling_interval_s == 0.05
    assert meter.source == "nvml-sampled"


def test_without_proc_the_estimate_needs_no_posix_only_module(no_proc, monkeypatch):
    """Windows has no ``resource`` module: the estimate there reads ``os.times`` (every platform)."""
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` now raises, as on Windows
    meter = CpuTimeEstimateMeter(power_per_core_w=10.0)
    meter.start()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # 200 ms of this process's own CPU time
        pass
    reading = meter.read()
    meter.close()
    # ``os.times`` counts in clock ticks (10 ms on Linux): each end of the interval may lose a tick,
    # so 200 ms at 10 W/core reads 2 J less at most 0.2 J; a loaded machine only adds CPU time.
    assert reading.source == "estimate" and 1.7 <= reading.energy_j <= 10.0
