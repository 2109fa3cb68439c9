"""The CPU-time estimate on real work: it grows with CPU time and counts worker processes."""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

import pytest

from lightning_green.energy.estimate import (
    CpuTimeEstimateMeter,
    process_tree_cpu_s,
    resolve_cpu_power_per_core_w,
)


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(seconds: float, conn) -> None:
    _busy(seconds)
    conn.send(_own_cpu_s())  # everything this process used, imports included
    conn.close()


def test_energy_grows_with_cpu_time_at_the_given_power():
    meter = CpuTimeEstimateMeter(power_per_core_w=20.0)
    meter.start()
    first = meter.read()
    _busy(0.3)
    second = meter.read()
    _busy(0.6)
    third = meter.read()
    e1 = second.energy_j - first.energy_j
    e2 = third.energy_j - second.energy_j
    assert e1 == pytest.approx(0.3 * 20.0, abs=0.5)
    assert e2 == pytest.approx(0.6 * 20.0, abs=0.5)
    assert third.source == "estimate" and third.is_estimate
    assert third.faults == first.faults


def test_idle_time_costs_nothing():
    meter = CpuTimeEstimateMeter(power_per_core_w=10.0)
    meter.start()
    before = meter.read()
    time.sleep(0.3)
    assert meter.read().energy_j - before.energy_j < 0.3  # < 30 ms of CPU at 10 W


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_processes_count_while_alive_and_after_exit(start_method):
    meter = CpuTimeEstimateMeter(power_per_core_w=10.0)
    parent0_s = _own_cpu_s()
    meter.start()
    ctx = mp.get_context(start_method)
    receiver, sender = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_worker, args=(0.8, sender))
    worker.start()
    deadline = time.monotonic() + 30
    live = 0.0
    while time.monotonic() < deadline and live < 4.0:
        time.sleep(0.05)  # a live worker's CPU shows up before it exits
        live = meter.read().energy_j
    assert live >= 4.0, live
    worker_cpu_s = receiver.recv()
    worker.join()
    after_j = meter.read().energy_j
    expected_j = 10.0 * (worker_cpu_s + _own_cpu_s() - parent0_s)
    if start_method == "fork":
        # Counted once: the reaped worker moves into the parent's cutime, it is not added again.
        assert after_j == pytest.approx(expected_j, rel=0.1, abs=0.3)
    else:
        # spawn also starts multiprocessing's resource-tracker process: part of our tree, counted.
        assert after_j >= 0.9 * expected_j


def test_overlapping_roots_are_counted_once():
    import os

    pid = os.getpid()
    assert process_tree_cpu_s([pid, pid]) == pytest.approx(process_tree_cpu_s([pid]), abs=0.05)


def test_power_from_environment(monkeypatch):
    monkeypatch.setenv("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "7.5")
    assert CpuTimeEstimateMeter().power_per_core_w == 7.5
    monkeypatch.setenv("LIGHTNING_GREEN_CPU_POWER_PER_CORE_W", "lots")
    with pytest.raises(ValueError, match=r"LIGHTNING_GREEN_CPU_POWER_PER_CORE_W.*'lots'"):
        resolve_cpu_power_per_core_w(None)


def test_read_before_start_is_a_programming_error():
    with pytest.raises(RuntimeError, match="before start"):
        CpuTimeEstimateMeter(power_per_core_w=1.0).read()
