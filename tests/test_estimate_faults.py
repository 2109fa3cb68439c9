"""Faults of the CPU-time estimate: an unreadable ``/proc/<pid>/stat`` is a read failure (warned once,
the spans partial, the last good figure kept), never a zero; a failed baseline read at start leaves
the baseline to the first good read, never to zero (the process's whole CPU history); a child that
exits between being listed and being read is counted once, in its parent.

The failures are injected as QA found them: ``open`` of ``/proc/<pid>/stat`` raising
``PermissionError``, in unit tests and in real fits under both Lightning namespaces.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest
from conftest import AnyCallback, make_trainer

from lightning_green import EnergyMonitor
from lightning_green.energy import estimate
from lightning_green.energy.estimate import CpuTimeEstimateMeter, process_tree_cpu_s
from lightning_green.energy.meter import EnergyMeasurementWarning
from lightning_green.energy.units import J_PER_KWH

POWER_W = 10.0

pytestmark = pytest.mark.skipif(not estimate.process_trees_readable(), reason="reads /proc (Linux)")


def _cpu_s() -> float:
    """This process's CPU seconds and its reaped children's: what ``/proc/<pid>/stat`` sums."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _energy_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, EnergyMeasurementWarning)]


class StatFaults:
    """``open`` of ``/proc/<pid>/stat`` (for ``pids``) raises ``PermissionError`` while ``armed``,
    and for the next ``fail_next`` opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pids: set[int]) -> None:
        self.paths = {f"/proc/{pid}/stat" for pid in pids}
        self.armed = False
        self.fail_next = 0
        self.failed = 0
        real_open = builtins.open

        def faulty_open(file, *args, **kwargs):
            if isinstance(file, str) and file in self.paths and (self.armed or self.fail_next > 0):
                self.fail_next = max(0, self.fail_next - 1)
                self.failed += 1
                raise PermissionError(13, "Permission denied", file)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", faulty_open)


# -- the meter ------------------------------------------------------------------------------------
def test_an_unreadable_stat_of_the_training_process_is_a_fault_not_zero(monkeypatch):
    """The reads that fail keep the last good figure and are stale (the spans they begin are
    partial); one warning names the process; the CPU time used meanwhile comes with the next good
    read, nothing lost."""
    faults = StatFaults(monkeypatch, {os.getpid()})
    meter = CpuTimeEstimateMeter(power_per_core_w=POWER_W)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        _busy(0.1)
        first = meter.read()
        faults.armed = True
        _busy(0.3)
        second = meter.read()
        third = meter.read()
        faults.armed = False
        fourth = meter.read()
    messages = _energy_warnings(record)
    assert faults.failed == 2
    assert len(messages) == 1 and f"process {os.getpid()}" in messages[0] and "partial" in messages[0]
    assert second.energy_j == third.energy_j == first.energy_j > 0.0  # kept, not read as zero
    assert first.faults == 0 < second.faults < third.faults and fourth.faults == third.faults
    assert [r.stale for r in (first, second, third, fourth)] == [False, True, True, False]
    assert fourth.energy_j - first.energy_j >= 0.8 * 0.3 * POWER_W  # the missed CPU time arrives


def test_process_tree_cpu_s_raises_for_a_process_that_exists_but_cannot_be_read(monkeypatch):
    faults = StatFaults(monkeypatch, {os.getpid()})
    faults.fail_next = 1
    with pytest.raises(PermissionError, match=f"process {os.getpid()} exists but"):
        process_tree_cpu_s([os.getpid()])
    assert process_tree_cpu_s([os.getpid()]) > 0.0


def test_a_failed_start_takes_the_baseline_at_the_first_good_read(monkeypatch):
    """Counting from zero would count the process's whole CPU history (imports, an earlier fit);
    the first good read is the baseline and the span up to it is partial (one more fault)."""
    _busy(max(0.0, 0.5 - _cpu_s()))  # a history of at least half a second to leave out
    faults = StatFaults(monkeypatch, {os.getpid()})
    meter = CpuTimeEstimateMeter(power_per_core_w=POWER_W)
    faults.fail_next = 1
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meter.start()
        first = meter.read()  # the baseline
        _busy(0.3)
        second = meter.read()
    messages = _energy_warnings(record)
    assert len(messages) == 1 and "could not start" in messages[0]
    assert first.energy_j < 0.05 * POWER_W  # not the 0.5 s or more of history
    assert first.faults == 2  # the failed start, and the interval up to the late baseline
    assert second.energy_j - first.energy_j == pytest.approx(0.3 * POWER_W, rel=0.2, abs=0.2)
    assert second.faults == first.faults and not second.stale
    meter.start()  # a restart that succeeds measures afresh
    assert meter.read().faults == 0


# -- the process tree -----------------------------------------------------------------------------
def _stat(pid: int, ppid: int, ticks: int) -> str:
    # proc(5): pid (comm) state ppid, 9 more fields, then utime stime cutime cstime (14-17).
    return f"{pid} (python worker) S {ppid} " + "0 " * 9 + f"{ticks} 0 0 0 20 0 1 0 0\n"


def _fake_process(proc: Path, pid: int, ppid: int, ticks: int, children: tuple[int, ...] = ()) -> None:
    (proc / str(pid) / "task" / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(_stat(pid, ppid, ticks))
    (proc / str(pid) / "task" / str(pid) / "children").write_text(" ".join(map(str, children)))


def test_a_child_reaped_between_listing_and_reading_is_counted_once_in_its_parent(tmp_path, monkeypatch):
    """The parent is read (100 ticks), its child listed (50 ticks), then the child exits and its
    parent reaps it (its 50 ticks move into the parent's cutime) before the child is read: a read
    taking the child as gone would count 100 ticks. The torn read is taken again: 150."""
    proc = tmp_path / "proc"
    _fake_process(proc, 100, 1, 100, children=(101,))
    _fake_process(proc, 101, 100, 50)
    real_read_stat = estimate._read_stat

    def read_stat(pid: int, proc_root: str):
        if pid == 101 and (proc / "101").exists():  # reaped just before its own read
            shutil.rmtree(proc / "101")
            (proc / "100" / "stat").write_text(_stat(100, 1, 150))
            (proc / "100" / "task" / "100" / "children").write_text("")
        return real_read_stat(pid, proc_root)

    monkeypatch.setattr(estimate, "_read_stat", read_stat)
    ticks = estimate._clock_ticks_per_s()
    assert process_tree_cpu_s([100], str(proc)) == pytest.approx(150 / ticks)


def test_a_child_gone_for_good_is_not_a_fault_and_a_live_unreadable_one_is(tmp_path):
    proc = tmp_path / "proc"
    _fake_process(proc, 100, 1, 100, children=(101, 102))  # 102 is listed but gone
    _fake_process(proc, 101, 100, 50)
    ticks = estimate._clock_ticks_per_s()
    assert process_tree_cpu_s([100], str(proc)) == pytest.approx(150 / ticks)
    stat = proc / "101" / "stat"
    stat.unlink()
    stat.mkdir()  # exists, cannot be read (even by root)
    with pytest.raises(OSError, match="process 101 exists but"):
        process_tree_cpu_s([100], str(proc))


# -- real fits --------------------------------------------------------------------------------------
class TrainingCpu(AnyCallback):
    """This process's CPU seconds from ``on_train_start`` to ``on_train_end``: the epochs' span."""

    def __init__(self) -> None:
        self.start_s = self.end_s = 0.0

    def on_train_start(self, trainer, pl_module):
        self.start_s = _cpu_s()

    def on_train_end(self, trainer, pl_module):
        self.end_s = _cpu_s()

    @property
    def cpu_s(self) -> float:
        return self.end_s - self.start_s


def _fit(tmp_path, ns, callbacks: list, max_epochs: int) -> tuple[EnergyMonitor, float, list[str]]:
    """A digits fit measured by the estimate; returns the monitor, the fit's CPU seconds and the
    energy warnings."""
    monitor = EnergyMonitor(meter="estimate", monitor="val_acc", mode="max", cpu_power_per_core_w=POWER_W)
    trainer = make_trainer(
        tmp_path,
        [monitor, *callbacks],
        max_epochs=max_epochs,
        lightning=ns,
        limit_train_batches=4,
        limit_val_batches=1,
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        before_s = _cpu_s()
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
        fit_cpu_s = _cpu_s() - before_s
    return monitor, fit_cpu_s, _energy_warnings(record)


def _check_totals(monitor: EnergyMonitor, fit_cpu_s: float, training: TrainingCpu) -> dict:
    """The summary's total holds no CPU time from before the fit, and the epochs hold all of theirs."""
    saved = json.loads(monitor.summary_path.read_text())
    assert saved["total_kwh"] * J_PER_KWH / POWER_W <= fit_cpu_s + 0.05
    epochs_cpu_s = sum(r.energy_j for r in monitor.history) / POWER_W
    assert training.cpu_s - 0.15 <= epochs_cpu_s <= training.cpu_s + 0.05
    # No epoch's zero passed off as whole: an epoch's work always takes some CPU time.
    assert all(r.partial for r in monitor.history if r.energy_j == 0.0)
    assert [e["partial"] for e in saved["per_epoch"]] == [r.partial for r in monitor.history]
    return saved


def test_an_unreadable_proc_stat_mid_fit_warns_once_and_marks_the_epochs_partial(tmp_path, monkeypatch, ns):
    """The read closing epoch 1 fails: one warning; epoch 1 (nothing read) and epoch 2 (which gets
    what epoch 1's close missed) are partial, epochs 0 and 3 whole; the run's total is whole."""
    faults = StatFaults(monkeypatch, {os.getpid()})

    class FailEpochOneClose(AnyCallback):
        def on_train_epoch_start(self, trainer, pl_module):  # after the monitor's: no read until the close
            faults.armed = trainer.current_epoch == 1

    training = TrainingCpu()
    monitor, fit_cpu_s, messages = _fit(tmp_path, ns, [FailEpochOneClose(), training], max_epochs=4)
    assert faults.failed == 1
    assert len(messages) == 1 and "cannot be read" in messages[0] and "partial" in messages[0]
    assert [r.partial for r in monitor.history] == [False, True, True, False]
    assert monitor.history[1].energy_j == 0.0  # kept the last good figure: in epoch 2, marked
    saved = _check_totals(monitor, fit_cpu_s, training)
    assert saved["partial"] is True


def test_a_failed_baseline_read_at_fit_start_counts_from_the_first_good_read(tmp_path, monkeypatch, ns):
    """The meter's start read fails: the run counts none of the process's earlier CPU time (an
    earlier fit of a sweep, imports), only what it measured from its first good read; the run is
    partial (its setup is missing), its epochs whole."""
    _busy(max(0.0, 1.0 - _cpu_s()))  # a history to leave out, whatever ran before this test
    faults = StatFaults(monkeypatch, {os.getpid()})
    faults.fail_next = 1  # the first read of the fit: the meter's baseline at fit start
    training = TrainingCpu()
    monitor, fit_cpu_s, messages = _fit(tmp_path, ns, [training], max_epochs=2)
    assert faults.failed == 1
    assert len(messages) == 1 and "could not start" in messages[0]
    saved = _check_totals(monitor, fit_cpu_s, training)
    assert [r.partial for r in monitor.history] == [False, False]
    assert saved["partial"] is True
