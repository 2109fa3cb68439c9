"""A labelled estimate for machines where nothing can be measured: CPU time times a per-core power.

The estimate counts the CPU time of a process tree - the training process, its data-loader
workers and, under DDP on local rank 0, every local rank and their workers - and multiplies
it by a per-core power (watts drawn by one fully busy core). It ignores idle power, DRAM and
any accelerator, so it is a rough figure and is labelled ``estimate`` wherever it appears.

On Linux the tree is read from ``/proc``: a live process counts its own CPU time plus that of
the children it has already waited for (``utime + stime + cutime + cstime``), so a worker is
counted while it runs and, once reaped, inside its parent - never twice.

Elsewhere (macOS, Windows: :func:`process_trees_readable` is False) no process can read
another's CPU time, so the estimate counts the CPU time of its own process and of the children it
has reaped (``os.times``; Windows keeps no children's times, so there a data-loader worker is not
counted), and under DDP every rank reads its own (``build_meter`` gives each rank
an estimate; the session sums them over ranks). Nothing is counted twice there either: the
ranks that Lightning's ``ddp`` launcher starts are children of local rank 0, but a child enters
rank 0's children's times only once it has exited and been reaped, and a rank exits only
after the fit's last reading (every reading is a collective that every rank takes part in, so
no rank has exited when rank 0 reads). A data-loader worker is counted in its own rank's figure
when it is reaped, not while it runs; persistent workers, which live until after the fit, are
not counted on this path.

Faults: a process of the tree that exists but whose ``/proc/<pid>/stat`` (or list of children)
cannot be read fails the read, as any meter's read failure does (one warning, the last good figure
kept, the spans around it partial): its CPU time is never taken as zero, which would hand the
epoch's energy to a later one unmarked. A child that exits between being listed and being read is
no fault: the tree is read again, so that it is counted once, in its parent's reaped time. A
baseline read that fails at :meth:`~lightning_green.energy.meter.EnergyMeter.start` leaves the
baseline to the first good read (the energy before it is missing, and that span is partial),
never to zero, which would count the process's whole CPU history.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence

from lightning_green.checks import check_positive
from lightning_green.energy.meter import EnergyMeter

DEFAULT_CPU_POWER_PER_CORE_W: float = 10.0
"""Watts drawn by one fully busy core when the user gives no figure (a mid-range server or
desktop core: 65-200 W package TDP over 8-32 cores)."""

CPU_POWER_ENV: str = "LIGHTNING_GREEN_CPU_POWER_PER_CORE_W"
"""Environment variable that sets the per-core power of the estimate, in watts."""

_UNIT = "watts per core"

_PROC = "/proc"


def resolve_cpu_power_per_core_w(power_per_core_w: float | None) -> float:
    """The per-core power to use: the argument, else the environment variable, else the default.

    Args:
        power_per_core_w: Watts per fully busy core, or None.

    Returns:
        The power in watts.

    Raises:
        ValueError: If the value (argument or environment) is not a positive finite number.

    Example:
        >>> resolve_cpu_power_per_core_w(12.5)
        12.5
    """
    if power_per_core_w is not None:  # the argument is a number, never its text
        return check_positive("cpu_power_per_core_w", power_per_core_w, unit=_UNIT)
    env = os.environ.get(CPU_POWER_ENV)
    if env is None or env.strip() == "":
        return DEFAULT_CPU_POWER_PER_CORE_W
    try:
        watts: object = float(env)
    except ValueError:
        watts = env  # not a number: refused below, quoting the text as set
    return check_positive(CPU_POWER_ENV, watts, unit=_UNIT, given=env)


def _clock_ticks_per_s() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def _unreadable(pid: int, path: str, err: OSError) -> OSError:
    return OSError(err.errno, f"process {pid} exists but {path} cannot be read: {err.strerror or err}")


def _read_stat(pid: int, proc_root: str) -> tuple[int, float] | None:
    """``(ppid, utime + stime + cutime + cstime in ticks)`` of a process, None if it is gone.

    Raises:
        OSError: If the process exists but its ``stat`` cannot be read or parsed: not "gone",
            whose CPU time would be taken as zero.
    """
    path = f"{proc_root}/{pid}/stat"
    try:
        with open(path, "rb") as fh:
            data = fh.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None  # exited (and reaped) since it was listed
    except OSError as err:
        raise _unreadable(pid, path, err) from err
    # The command name is in parentheses and may contain spaces or parentheses.
    fields = data[data.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid is field 4, utime..cstime are 14..17.
    try:
        return int(fields[1]), float(fields[11]) + float(fields[12]) + float(fields[13]) + float(fields[14])
    except (IndexError, ValueError):
        raise OSError(f"process {pid}: {path} does not hold a process status: {data[:80]!r}") from None


def _children(pid: int, proc_root: str) -> list[int] | None:
    """Direct children from ``/proc/PID/task/*/children``; None where the kernel lacks it.

    Raises:
        OSError: If the process exists but its children cannot be listed.
    """
    path = f"{proc_root}/{pid}/task"
    try:
        tids = os.listdir(path)
    except (FileNotFoundError, ProcessLookupError):
        return []  # exited since its stat was read
    except OSError as err:
        raise _unreadable(pid, path, err) from err
    out: list[int] = []
    for tid in tids:
        children = f"{path}/{tid}/children"
        try:
            with open(children) as fh:
                out.extend(int(c) for c in fh.read().split())
        except FileNotFoundError:
            return None
        except ProcessLookupError:
            continue  # the thread ended since it was listed
        except OSError as err:
            raise _unreadable(pid, children, err) from err
    return out


_TREE_READ_TRIES = 3
"""Reads of a process tree when a child vanishes between being listed and being read (below)."""


def process_tree_cpu_s(root_pids: Iterable[int], proc_root: str = _PROC) -> float:
    """CPU seconds of the processes rooted at ``root_pids`` and all their descendants.

    Each process is counted once even when roots overlap (a DDP rank that is a child of
    another rank). Reaped children are included through their parent's ``cutime``/``cstime``.

    A child that exits and is reaped between the read of its parent and its own read would be
    in neither figure (its time moves into its parent's after the parent was read): such a torn
    read is taken again, up to three times in all, so that the child is counted once, in its
    parent. A process that exists but cannot be read is an error, never a zero.

    Args:
        root_pids: The roots of the trees.
        proc_root: The procfs mount point (tests may point it elsewhere).

    Returns:
        Total user + system CPU time in seconds; roots that no longer exist count zero.

    Raises:
        OSError: If a process of the trees exists but its CPU time or its children cannot be
            read (``/proc/<pid>/stat`` unreadable): the figure would be too low.
    """
    roots = list(root_pids)
    for _ in range(_TREE_READ_TRIES):
        total_s, torn = _tree_cpu_s(roots, proc_root)
        if not torn:
            break
    return total_s


def _tree_cpu_s(root_pids: list[int], proc_root: str) -> tuple[float, bool]:
    """CPU seconds of the trees and whether a listed child vanished before it was read."""
    ticks = _clock_ticks_per_s()
    roots = set(root_pids)
    seen: set[int] = set()
    stack = list(root_pids)
    parents: dict[int, list[int]] | None = None
    total_ticks = 0.0
    torn = False
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stat = _read_stat(pid, proc_root)
        if stat is None:
            torn = torn or pid not in roots
            continue
        total_ticks += stat[1]
        kids = _children(pid, proc_root) if parents is None else None
        if kids is None:
            if parents is None:
                parents = _parent_map(proc_root)
            kids = parents.get(pid, [])
        stack.extend(kids)
    return total_ticks / ticks, torn


def _parent_map(proc_root: str) -> dict[int, list[int]]:
    """Children of every process, from a full scan of ``/proc`` (slow path)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            stat = _read_stat(int(entry), proc_root)
        except OSError:  # another user's process behind hidepid: its parent is unknown, and not ours
            continue
        if stat is not None:
            children.setdefault(stat[0], []).append(int(entry))
    return children


def process_trees_readable(proc_root: str = _PROC) -> bool:
    """Whether the estimate can read the CPU time of other processes here (Linux ``/proc``).

    Where it can, one process per machine (local rank 0 under DDP) reads the trees of every
    local rank; where it cannot (macOS, Windows), each process reads its own
    (:class:`CpuTimeEstimateMeter`) and every DDP rank builds an estimate of its own
    (:func:`~lightning_green.energy.selection.build_meter`).

    Args:
        proc_root: The procfs mount point.

    Returns:
        True on Linux with ``proc_root`` showing this process.
    """
    return sys.platform.startswith("linux") and os.path.isdir(f"{proc_root}/{os.getpid()}")


def _own_cpu_s() -> float:
    """CPU seconds of this process and of the children it has reaped.

    ``os.times`` exists on every platform; Windows keeps no children's times (this process only).
    """
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuTimeEstimateMeter(EnergyMeter):
    """Estimated energy: CPU time of a process tree times a per-core power.

    Args:
        power_per_core_w: Watts drawn by one fully busy core; None reads
            ``LIGHTNING_GREEN_CPU_POWER_PER_CORE_W`` or uses :data:`DEFAULT_CPU_POWER_PER_CORE_W`.
        root_pids: The processes whose trees are counted; None means this process only. Under
            DDP, local rank 0 passes the pids of every local rank. Ignored where process trees
            cannot be read (:func:`process_trees_readable`): this process and its reaped
            children are counted, and every rank has an estimate of its own.
        proc_root: The procfs mount point.

    Example:
        >>> meter = CpuTimeEstimateMeter(power_per_core_w=10.0)
        >>> meter.start()
        >>> _ = sum(i * i for i in range(200_000))
        >>> meter.read().energy_j >= 0.0
        True
        >>> meter.read().source
        'estimate'
    """

    source = "estimate"
    domain = "cpu-estimate"

    def __init__(
        self,
        power_per_core_w: float | None = None,
        root_pids: Sequence[int] | None = None,
        proc_root: str = _PROC,
    ) -> None:
        super().__init__()
        self.power_per_core_w = resolve_cpu_power_per_core_w(power_per_core_w)
        self.root_pids: tuple[int, ...] = tuple(root_pids) if root_pids else (os.getpid(),)
        self.proc_root = proc_root
        self._use_proc = process_trees_readable(proc_root)
        self._cpu0_s: float | None = None  # the baseline; None until a read of the tree succeeded

    def cpu_s(self) -> float:
        """CPU seconds of the tree now (absolute, not since start).

        Where process trees cannot be read: this process's and its reaped children's.

        Raises:
            OSError: If a process of the tree exists but cannot be read
                (:func:`process_tree_cpu_s`).
        """
        if self._use_proc:
            return process_tree_cpu_s(self.root_pids, self.proc_root)
        return _own_cpu_s()

    def _start(self) -> None:
        self._cpu0_s = None  # a failed read leaves no baseline: the first good read takes it
        self._cpu0_s = self.cpu_s()

    def _read_j(self) -> dict[str, float]:
        cpu_s = self.cpu_s()  # may raise: the base class keeps the last good figure
        if self._cpu0_s is None:
            # The baseline read at start failed: counting from zero would count the process's
            # whole CPU history (an earlier fit, imports). The baseline is this first good read;
            # the energy before it is missing, so the reading is partial (counted, warned at start).
            self._cpu0_s = cpu_s
            self.record_fault(
                "start",
                f"{type(self).__name__} started late: the CPU time before its first good read is missing.",
            )
        return {self.domain: max(0.0, cpu_s - self._cpu0_s) * self.power_per_core_w}
