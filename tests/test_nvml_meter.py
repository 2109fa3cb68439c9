"""NvmlMeter against a scripted pynvml double, plus the real pynvml where a GPU is present."""

from __future__ import annotations

import math
import threading
import time
import warnings

import pytest
from nvml_double import (
    FakeGpu,
    FakeNvml,
    NVMLError_GpuIsLost,
    NVMLError_NotSupported,
    NVMLError_Unknown,
    gpus,
)

from lightning_green.energy.meter import EnergyMeasurementWarning
from lightning_green.energy.nvml import (
    NvmlMeter,
    NvmlUnavailableError,
    nvml_available,
    resolve_nvml_indices,
)

UUIDS = ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-bbbc3333-0000", "GPU-dddd4444-0000"]


def energy_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, EnergyMeasurementWarning)]


def wait_until(predicate, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


# -- CUDA_VISIBLE_DEVICES -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("visible", "cuda_indices", "expected"),
    [
        (None, [0, 1, 3], [0, 1, 3]),
        ("2,3", [0, 1], [2, 3]),
        (" 3 , 0 ", [0, 1], [3, 0]),
        ("GPU-dddd4444-0000,GPU-aaaa1111-0000", [0, 1], [3, 0]),
        ("GPU-dd,gpu-AAAA", [0, 1], [3, 0]),  # unique prefixes, any case, as CUDA accepts
        ("1,GPU-bbbc", [1], [2]),
    ],
)
def test_resolve_nvml_indices_follows_cuda_visible_devices(visible, cuda_indices, expected):
    assert resolve_nvml_indices(cuda_indices, visible, UUIDS) == expected


@pytest.mark.parametrize(
    ("visible", "cuda_index"),
    [
        ("", 0),  # nothing visible
        ("2,3", 2),  # only two visible
        (None, 4),  # only four GPUs
        ("1,7,0", 1),  # CUDA stops at the invalid 7: only GPU 1 is visible
        ("GPU-bbb,0", 0),  # ambiguous prefix (bbbb2222 and bbbc3333): invalid, list ends
        ("GPU-ffff", 0),  # unknown UUID
        ("0,0,1", 1),  # a repeated device ends the list
        ("-1,0", 0),
    ],
)
def test_resolve_nvml_indices_rejects_invisible_devices(visible, cuda_index):
    with pytest.raises(NvmlUnavailableError, match=f"CUDA device {cuda_index} not found"):
        resolve_nvml_indices([cuda_index], visible, UUIDS)


def test_resolve_nvml_indices_refuses_mig_uuids():
    visible = "0,MIG-5c4ae3b9-1b32-5c0e-9b3f-1f2e3d4c5b6a"
    assert resolve_nvml_indices([0], visible, UUIDS) == [0]
    with pytest.raises(NvmlUnavailableError, match="CUDA device 1 is a MIG instance") as info:
        resolve_nvml_indices([1], visible, UUIDS)
    assert "energy" in info.value.reason


def test_meter_reads_the_gpus_cuda_visible_devices_names():
    nvml = FakeNvml(gpus(4, energy_mj=1_000_000))
    meter = NvmlMeter([0, 1], nvml=nvml, environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert meter.domains == ["gpu:0", "gpu:1"]
    assert meter.nvml_indices == {"gpu:0": 2, "gpu:1": 3}
    meter.start()
    nvml.gpus[0].energy_mj += 9_000  # not ours
    nvml.gpus[2].energy_mj += 2_000
    nvml.gpus[3].energy_mj += 5_000
    reading = meter.read()
    meter.close()
    assert dict(reading.domains_j) == {"gpu:0": pytest.approx(2.0), "gpu:1": pytest.approx(5.0)}
    assert reading.energy_j == pytest.approx(7.0)


def test_meter_matches_gpu_uuid_prefixes():
    nvml = FakeNvml(gpus(3, energy_mj=0))
    uuid = nvml.gpus[2].uuid
    meter = NvmlMeter([0], nvml=nvml, environ={"CUDA_VISIBLE_DEVICES": uuid[:8]})
    assert meter.nvml_indices == {"gpu:0": 2}


def test_meter_matches_torch_uuids_whatever_the_device_order():
    # CUDA's default order is fastest-first, NVML's is by PCI bus: torch index 0 may be NVML GPU 1.
    nvml = FakeNvml(gpus(2, energy_mj=0))
    torch_uuid = nvml.gpus[1].uuid.removeprefix("GPU-")  # what str(props.uuid) gives
    meter = NvmlMeter([0], nvml=nvml, environ={}, cuda_uuids=[torch_uuid])
    assert meter.nvml_indices == {"gpu:0": 1}
    meter.start()
    nvml.gpus[0].energy_mj += 9_000  # the other GPU
    nvml.gpus[1].energy_mj += 4_000
    assert meter.read().energy_j == pytest.approx(4.0)
    meter.close()
    # No UUID from torch: the index mapping applies.
    assert NvmlMeter([0], nvml=FakeNvml(gpus(2)), environ={}, cuda_uuids=[None]).nvml_indices == {"gpu:0": 0}


def test_a_torch_uuid_that_names_no_gpu_is_refused_not_mapped_by_index():
    # A MIG instance on a box that mixes MIG and whole GPUs: torch's UUID is the instance's, no
    # NVML GPU has it, and the index mapping would count a whole GPU another process uses.
    nvml = FakeNvml([FakeGpu(uuid="GPU-a", mig_mode=0), FakeGpu(uuid="GPU-b", mig_mode=1)])
    instance = "MIG-5c4ae3b9-1b32-5c0e-9b3f-1f2e3d4c5b6a"
    with pytest.raises(NvmlUnavailableError, match="is none of the GPUs NVML sees") as info:
        NvmlMeter([0], nvml=nvml, environ={}, cuda_uuids=[instance])
    assert instance in info.value.reason and "GPU-a, GPU-b" in info.value.reason
    assert nvml.init_refcount == 0
    # Where NVML cannot name every GPU, a UUID match proves nothing: the index mapping applies.
    nameless = FakeNvml([FakeGpu(uuid="", energy_mj=0), FakeGpu(uuid="GPU-b", energy_mj=0)])
    assert NvmlMeter([0], nvml=nameless, environ={}, cuda_uuids=[instance]).nvml_indices == {"gpu:0": 0}


# -- counter path ---------------------------------------------------------------------------------
def test_steady_counter_gives_millijoule_deltas_since_start():
    nvml = FakeNvml(gpus(1, energy_mj=5_000_000))
    meter = NvmlMeter([0], nvml=nvml, environ={})
    assert meter.source == "nvml"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        first = meter.read()
        nvml.gpus[0].energy_mj += 1_500
        second = meter.read()
        nvml.gpus[0].energy_mj += 250_000
        third = meter.read()
        meter.close()
    assert energy_warnings(record) == []
    assert [r.energy_j for r in (first, second, third)] == pytest.approx([0.0, 1.5, 251.5])
    assert third.source == "nvml" and third.faults == 0
    assert third.energy_j - second.energy_j == pytest.approx(250.0) and third.faults == second.faults


def test_counter_error_on_one_gpu_warns_once_keeps_its_value_and_recovers():
    nvml = FakeNvml(gpus(2, energy_mj=0))
    bad, good = nvml.gpus
    meter = NvmlMeter([0, 1], nvml=nvml, environ={})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        bad.energy_mj, good.energy_mj = 1_000, 1_000
        first = meter.read()
        bad.counter_errors = [NVMLError_Unknown(), NVMLError_GpuIsLost()]
        bad.energy_mj, good.energy_mj = 3_000, 3_000
        second = meter.read()
        bad.energy_mj, good.energy_mj = 4_000, 4_000
        third = meter.read()
        bad.energy_mj, good.energy_mj = 6_000, 6_000
        fourth = meter.read()
        meter.close()
    messages = energy_warnings(record)
    assert len(messages) == 1 and "gpu:0" in messages[0]
    # The failing GPU keeps its last value; the other one is not frozen.
    assert second.domains_j == {"gpu:0": pytest.approx(1.0), "gpu:1": pytest.approx(3.0)}
    assert third.domains_j == {"gpu:0": pytest.approx(1.0), "gpu:1": pytest.approx(4.0)}
    assert second.faults > first.faults
    assert third.faults > second.faults
    assert third.faults == 2
    # The cumulative counter works again: nothing is lost.
    assert fourth.domains_j == {"gpu:0": pytest.approx(6.0), "gpu:1": pytest.approx(6.0)}
    assert fourth.faults == third.faults
    # A reading that kept a last value is stale: the span it begins gets the energy it missed.
    assert [r.stale for r in (first, second, third, fourth)] == [False, True, True, False]


def test_counter_going_backwards_becomes_a_new_baseline():
    nvml = FakeNvml(gpus(1, energy_mj=10_000))
    gpu = nvml.gpus[0]
    meter = NvmlMeter([0], nvml=nvml, environ={})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        gpu.energy_mj = 12_000
        before = meter.read()
        gpu.energy_mj = 500  # driver reload
        reset = meter.read()
        gpu.energy_mj = 1_500
        after = meter.read()
        meter.close()
    messages = energy_warnings(record)
    assert len(messages) == 1 and "backwards" in messages[0]
    assert [r.energy_j for r in (before, reset, after)] == pytest.approx([2.0, 2.0, 3.0])
    assert reset.faults > before.faults
    assert after.faults == reset.faults
    assert not reset.stale and not after.stale  # the energy is lost, not late: no later span gets it


def test_counter_becoming_unsupported_hands_the_gpu_to_the_sampler():
    nvml = FakeNvml(gpus(2, energy_mj=0, power_mw=200_000.0))
    meter = NvmlMeter([0, 1], nvml=nvml, environ={}, sampling_interval_s=0.005)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        nvml.gpus[0].energy_mj = nvml.gpus[1].energy_mj = 4_000
        first = meter.read()
        nvml.gpus[0].energy_mj = None  # NotSupported from now on
        switched = meter.read()
        assert switched.source == "nvml+nvml-sampled" and meter.source == "nvml+nvml-sampled"
        time.sleep(0.1)
        later = meter.read()
        meter.close()
    messages = energy_warnings(record)
    assert len(messages) == 1 and "power sampling" in messages[0]
    assert switched.faults == 1 and switched.faults > first.faults
    assert switched.domains_j["gpu:0"] == pytest.approx(4.0)  # the counter's energy is kept
    gained = later.domains_j["gpu:0"] - switched.domains_j["gpu:0"]
    elapsed = nvml.gpus[0].power_calls[-1][0] - nvml.gpus[0].power_calls[0][0]
    assert gained == pytest.approx(200.0 * elapsed, rel=0.05) and gained > 0


# -- sampler path ---------------------------------------------------------------------------------
def test_sampler_integrates_a_power_ramp_with_the_trapezoid_rule():
    t0 = time.monotonic()
    ramp = lambda t: 100_000.0 + 2_000_000.0 * (t - t0)  # noqa: E731 - mW: 100 W + 2 kW/s
    nvml = FakeNvml(gpus(1, energy_mj=None, power_mw=ramp))
    # Coarse sampling: a rectangle rule would be ~10% off, the trapezoid rule is exact on a ramp.
    meter = NvmlMeter([0], nvml=nvml, environ={}, sampling_interval_s=0.03)
    assert meter.source == "nvml-sampled"
    meter.start()
    time.sleep(0.2)
    reading = meter.read()
    meter.close()
    calls = nvml.gpus[0].power_calls
    start_s, end_s = calls[0][0] - t0, calls[-1][0] - t0
    exact_j = 100.0 * (end_s - start_s) + 1000.0 * (end_s**2 - start_s**2)  # ∫ 100 + 2000 t dt
    assert reading.source == "nvml-sampled" and reading.faults == 0
    assert reading.energy_j == pytest.approx(exact_j, rel=0.03)  # timestamps jitter by thread switches


def test_sampler_samples_in_the_background_between_reads():
    t0 = time.monotonic()
    period_s = 0.08
    # 100..500 W, three periods of a sin² wave: two samples only would miss it badly.
    wave = lambda t: 100_000.0 + 400_000.0 * math.sin(math.pi * (t - t0) / period_s) ** 2  # noqa: E731
    nvml = FakeNvml(gpus(1, energy_mj=None, power_mw=wave))
    meter = NvmlMeter([0], nvml=nvml, environ={}, sampling_interval_s=0.002)
    meter.start()
    time.sleep(3 * period_s)
    reading = meter.read()
    meter.close()
    calls = nvml.gpus[0].power_calls
    background = [t for t, main in calls if not main]
    assert len(background) >= 20

    def integral(t: float) -> float:  # antiderivative of the wave in joules
        x = t - t0
        return 100.0 * x + 400.0 * (x / 2 - period_s / (4 * math.pi) * math.sin(2 * math.pi * x / period_s))

    exact_j = integral(calls[-1][0]) - integral(calls[0][0])
    assert reading.energy_j == pytest.approx(exact_j, rel=0.05)


def test_mixed_counter_and_sampler_gpus_are_labelled_as_such():
    nvml = FakeNvml([FakeGpu(uuid="GPU-a", energy_mj=0), FakeGpu(uuid="GPU-b", energy_mj=None)])
    meter = NvmlMeter([0, 1], nvml=nvml, environ={}, sampling_interval_s=0.01)
    assert meter.source == "nvml+nvml-sampled"
    meter.start()
    nvml.gpus[0].energy_mj = 3_000
    reading = meter.read()
    meter.close()
    assert reading.source == "nvml+nvml-sampled"
    assert reading.domains_j["gpu:0"] == pytest.approx(3.0)
    assert set(reading.domains_j) == {"gpu:0", "gpu:1"}


def test_dead_sampler_thread_is_detected_and_restarted_with_the_gap_missing():
    nvml = FakeNvml(gpus(1, energy_mj=None, power_mw=100_000.0))  # constant 100 W
    gpu = nvml.gpus[0]
    meter = NvmlMeter([0], nvml=nvml, environ={}, sampling_interval_s=0.005)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        start_s = time.monotonic()
        meter.start()
        time.sleep(0.05)
        gpu.power_errors_in_thread = [RuntimeError("sampler bug")]  # not an NVML error: kills the thread
        assert gpu.raised_in_thread.wait(2.0)
        died_s = time.monotonic()
        time.sleep(0.2)  # dead period
        dead = meter.read()
        read_s = time.monotonic()
        background_before = sum(1 for _, main in gpu.power_calls if not main)
        time.sleep(0.1)
        revived = meter.read()
        meter.close()
    messages = energy_warnings(record)
    assert len(messages) == 1 and "died" in messages[0] and "RuntimeError" in messages[0]
    assert dead.faults == 1
    # Only the time before the death was integrated; the 0.2 s dead period is missing.
    assert dead.energy_j <= 100.0 * (died_s - start_s) + 1e-6
    assert dead.energy_j < 100.0 * (read_s - start_s) - 15.0
    # The restarted sampler samples again and the energy grows at 100 W.
    assert sum(1 for _, main in gpu.power_calls if not main) > background_before
    assert revived.energy_j - dead.energy_j == pytest.approx(100.0 * 0.1, rel=0.5)
    assert revived.faults == 1


def test_power_read_errors_in_the_sampler_are_counted_and_sampling_goes_on():
    nvml = FakeNvml(gpus(1, energy_mj=None, power_mw=50_000.0))
    gpu = nvml.gpus[0]
    meter = NvmlMeter([0], nvml=nvml, environ={}, sampling_interval_s=0.003)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        gpu.power_errors_in_thread = [NVMLError_Unknown() for _ in range(5)]
        wait_until(lambda: not gpu.power_errors_in_thread)
        first = meter.read()
        gpu.power_errors_in_thread = [NVMLError_Unknown()]
        wait_until(lambda: not gpu.power_errors_in_thread)
        second = meter.read()
        time.sleep(0.1)
        third = meter.read()
        alive = meter._sampler.alive
        meter.close()
    messages = energy_warnings(record)
    assert len(messages) == 1 and "power reads" in messages[0]
    assert (first.faults, second.faults, third.faults) == (1, 2, 2)
    assert alive
    elapsed = gpu.power_calls[-1][0] - gpu.power_calls[0][0]
    # The double stamps a call before it returns, the meter after: on a loaded machine a thread
    # descheduled in between shifts an end of the integral by milliseconds (50 W x 20 ms = 1 J).
    assert third.energy_j == pytest.approx(50.0 * elapsed, rel=0.05, abs=1.0)


# -- refusals and lifecycle -----------------------------------------------------------------------
def test_library_not_found_is_refused_with_a_reason():
    nvml = FakeNvml(gpus(1), library_found=False)
    assert nvml_available([0], nvml=nvml, environ={}) == (False, "NVML library not found (no NVIDIA driver)")
    with pytest.raises(NvmlUnavailableError, match="NVML library not found"):
        NvmlMeter([0], nvml=nvml, environ={})


def test_mig_is_refused_at_construction():
    mig_env = {"CUDA_VISIBLE_DEVICES": "MIG-5c4ae3b9-1b32-5c0e-9b3f-1f2e3d4c5b6a"}
    ok, reason = nvml_available([0], nvml=FakeNvml(gpus(1)), environ=mig_env)
    assert not ok and reason.startswith("CUDA device 0 is a MIG instance: NVML cannot attribute its energy")
    # A GPU in MIG mode, addressed by index: CUDA runs on one of its instances.
    nvml = FakeNvml([FakeGpu(uuid="GPU-a", mig_mode=0), FakeGpu(uuid="GPU-b", mig_mode=1)])
    assert nvml_available([0], nvml=nvml, environ={})[0]
    with pytest.raises(NvmlUnavailableError, match="MIG mode enabled") as info:
        NvmlMeter([1], nvml=nvml, environ={})
    assert "cannot attribute its energy" in info.value.reason
    assert nvml.init_refcount == 0  # the probe shut NVML down again


def test_missing_device_and_unmeasurable_gpu_are_refused():
    assert nvml_available([], nvml=FakeNvml(gpus(1)), environ={}) == (
        False,
        "no CUDA device is used by this process",
    )
    ok, reason = nvml_available([2], nvml=FakeNvml(gpus(2)), environ={})
    assert not ok and "CUDA device 2 not found" in reason
    blind = FakeGpu(uuid="GPU-a", energy_mj=None, power_errors=[NVMLError_NotSupported()])
    ok, reason = nvml_available([0], nvml=FakeNvml([blind]), environ={})
    assert not ok and "neither an energy counter nor a power reading" in reason


def test_available_reports_the_method_per_gpu():
    nvml = FakeNvml([FakeGpu(uuid="GPU-a", energy_mj=0), FakeGpu(uuid="GPU-b", energy_mj=None)])
    ok, reason = nvml_available([0, 1], nvml=nvml, environ={})
    assert ok and reason == "NVML energy counter on gpu:0; power sampling on gpu:1"


def test_init_once_at_start_shutdown_at_close_and_double_close_is_harmless():
    nvml = FakeNvml(gpus(1, energy_mj=None))
    meter = NvmlMeter([0], nvml=nvml, environ={}, sampling_interval_s=0.01)
    assert nvml.init_refcount == 0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        assert nvml.init_refcount == 1
        thread = meter._sampler.thread
        assert thread is not None and thread.is_alive() and thread.daemon
        meter.read()
        meter.close()
        meter.close()
    assert energy_warnings(record) == []
    assert nvml.init_refcount == 0 and not thread.is_alive()
    assert meter.faults == 0
    assert not [t for t in threading.enumerate() if t.name == "lightning-green-nvml-sampler"]


def test_nvml_failing_at_start_is_retried_at_each_read_and_every_blind_interval_is_partial():
    nvml = FakeNvml(gpus(1, energy_mj=1_000))
    meter = NvmlMeter([0], nvml=nvml, environ={})
    nvml.library_found = False  # the driver went away between construction and start
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        first = meter.read()
        second = meter.read()
        nvml.library_found = True
        third = meter.read()  # initialises, takes the baseline
        nvml.gpus[0].energy_mj += 4_000
        fourth = meter.read()
        meter.close()
        meter.close()
    assert len(energy_warnings(record)) == 1  # "could not start": the retries are the same fault
    assert "could not start" in energy_warnings(record)[0]
    assert (first.energy_j, second.energy_j, third.energy_j) == (0.0, 0.0, 0.0)
    assert second.faults > first.faults
    assert third.faults > second.faults  # the interval up to the late start was not measured either
    assert fourth.energy_j == pytest.approx(4.0)
    assert fourth.faults == third.faults  # measured from then on: complete
    assert nvml.init_refcount == 0


def test_a_counter_failing_at_start_takes_its_baseline_at_the_first_good_read():
    """The counter's value since the driver loaded (5000 J here) is never counted: the first good
    read is the baseline. The intervals up to it are partial: the start's fault is counted, and
    the read that fails again is stale."""
    nvml = FakeNvml(gpus(1, energy_mj=5_000_000))
    gpu = nvml.gpus[0]
    meter = NvmlMeter([0], nvml=nvml, environ={})
    gpu.counter_errors = [NVMLError_Unknown(), NVMLError_Unknown()]  # at start and at the first read
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        gpu.energy_mj += 1_000
        first = meter.read()
        gpu.energy_mj += 2_000
        second = meter.read()  # the baseline
        gpu.energy_mj += 3_000
        third = meter.read()
        meter.close()
    assert len(energy_warnings(record)) == 1
    assert [r.energy_j for r in (first, second, third)] == pytest.approx([0.0, 0.0, 3.0])
    assert (first.faults, first.stale) == (2, True)
    assert (second.faults, second.stale) == (2, False) and third.faults == 2


def test_a_failing_shutdown_warns_once_and_marks_nothing_partial():
    """nvmlShutdown failing at the end loses no energy: a warning that says so, no fault counted."""
    nvml = FakeNvml(gpus(1, energy_mj=1_000))
    meter = NvmlMeter([0], nvml=nvml, environ={})

    def broken_shutdown():
        raise RuntimeError("driver busy")

    nvml.nvmlShutdown = broken_shutdown
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        nvml.gpus[0].energy_mj += 2_000
        reading = meter.read()
        meter.close()
        meter.close()
    (message,) = energy_warnings(record)
    assert "could not close cleanly" in message and "unaffected" in message and "partial" not in message
    assert meter.faults == reading.faults == 0 and reading.energy_j == pytest.approx(2.0)


def test_invalid_sampling_interval_is_rejected():
    with pytest.raises(ValueError, match="sampling_interval_s"):
        NvmlMeter([0], nvml=FakeNvml(gpus(1)), environ={}, sampling_interval_s=0.0)


# -- the real library -------------------------------------------------------------------------
def test_real_pynvml_meter_measures_gpu_0():
    ok, reason = nvml_available([0])
    if not ok:
        pytest.skip(f"real NVML unavailable on this machine: {reason}")
    meter = NvmlMeter([0])
    assert meter.source in ("nvml", "nvml-sampled")
    meter.start()
    first = meter.read()
    time.sleep(1.0)  # an idle GPU still draws tens of watts; the counter updates every ~100 ms
    second = meter.read()
    meter.close()
    meter.close()
    assert second.faults == 0
    assert set(second.domains_j) == {"gpu:0"}
    assert second.energy_j > first.energy_j
    assert 1.0 < (second.energy_j - first.energy_j) / (second.timestamp_s - first.timestamp_s) < 2000.0
