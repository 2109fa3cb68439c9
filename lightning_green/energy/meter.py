"""The meter interface shared by every energy source.

A meter is started once, read at boundaries (epoch or step ends) and closed at the end of
the fit. ``read()`` never raises: a fault is warned about once per kind, counted in the
reading's ``faults`` and measurement carries on with what is still available.
"""

from __future__ import annotations

import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable

from lightning_green.energy.readings import EnergyReading


class EnergyMeasurementWarning(UserWarning):
    """A meter could not measure something; the affected readings are marked partial."""


class PeriodicWorker:
    """A daemon thread calling ``fn`` every ``interval_s`` seconds until :meth:`stop`.

    The meters' background work (the NVML power sampler, the RAPL wrap poller): an exception
    escaping ``fn`` ends the thread but is kept, and :meth:`reap` hands it to the meter's next
    read, which counts the fault and calls :meth:`ensure` to start a fresh thread.

    Args:
        name: The thread's name.
        fn: Called in the thread every ``interval_s`` seconds (first call after one interval).
        interval_s: Seconds between calls.

    Example:
        >>> import threading
        >>> ticked = threading.Event()
        >>> worker = PeriodicWorker("example", ticked.set, 0.001)
        >>> worker.ensure()
        >>> ticked.wait(5.0), worker.alive
        (True, True)
        >>> worker.stop()
        >>> worker.alive, worker.reap()
        (False, None)
    """

    def __init__(self, name: str, fn: Callable[[], object], interval_s: float) -> None:
        self.name = name
        self.fn = fn
        self.interval_s = float(interval_s)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()

    @property
    def alive(self) -> bool:
        """Whether the thread is running."""
        return self.thread is not None and self.thread.is_alive()

    def ensure(self) -> None:
        """Start the thread unless it is running (a dead one is replaced)."""
        if self.alive:
            return
        self._stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(self._stop,), name=self.name, daemon=True)
        self.thread.start()

    def reap(self) -> BaseException | None:
        """The exception that ended the thread on its own, or None while it runs or after :meth:`stop`.

        A dead thread is forgotten, so the next :meth:`ensure` starts a new one.
        """
        thread = self.thread
        if thread is None or thread.is_alive() or self._stop.is_set():
            return None
        self.thread = None
        return self.error if self.error is not None else RuntimeError(f"{self.name} thread ended")

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the thread and wait for it (default: ``max(2 s, 5 intervals)``). Safe to repeat."""
        thread = self.thread
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(2.0, 5 * self.interval_s) if timeout_s is None else timeout_s)
        self.thread = None

    def _run(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(self.interval_s):
                self.fn()
        except BaseException as err:  # kept for reap(): the meter's next read reports it and restarts
            self.error = err


class EnergyMeter(ABC):
    """Base class of every meter: cumulative energy since :meth:`start`, never decreasing.

    Subclasses implement :meth:`_start` and :meth:`_read_j`, returning cumulative joules per
    domain since ``_start``; the base class turns exceptions into counted, warned-once faults
    and guarantees that readings never go down.

    Attributes:
        source: The label of this meter's readings (``nvml``, ``nvml-sampled``, ``rapl``,
            ``estimate`` or a ``+``-joined combination).
    """

    source: str = "estimate"

    def __init__(self) -> None:
        self._faults = 0
        self._warned: set[str] = set()
        self._last_domains_j: dict[str, float] = {}
        self._started = False
        self._stale = False  # whether the read in progress kept a domain's last good figure
        self._lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------
    def start(self) -> None:
        """Take the baseline: later readings count energy from now on."""
        with self._lock:
            self._faults = 0
            self._last_domains_j = {}
            try:
                self._start()
            except Exception as err:  # a broken meter must not stop training
                self.record_fault("start", f"{type(self).__name__} could not start: {err!r}")
            self._started = True

    def read(self) -> EnergyReading:
        """Read cumulative energy since :meth:`start`.

        Returns:
            A reading whose energy never decreases from one call to the next. On a fault the
            last good per-domain values are kept and ``faults`` grows; a domain that could not
            be read now makes the reading ``stale`` (:meth:`mark_stale`).
        """
        with self._lock:
            if not self._started:
                raise RuntimeError(f"{type(self).__name__}.read() called before start()")
            self._stale = False
            try:
                domains_j = self._read_j()
            except Exception as err:  # a broken meter must not stop training
                self.record_fault("read", f"{type(self).__name__} read failed: {err!r}")
                self.mark_stale()
                domains_j = dict(self._last_domains_j)
            merged = dict(self._last_domains_j)
            for name, value_j in domains_j.items():
                # Monotonic per domain: a meter that went backwards keeps its last value.
                merged[name] = max(value_j, self._last_domains_j.get(name, 0.0))
            self._last_domains_j = merged
            return EnergyReading(
                timestamp_s=time.monotonic(),
                energy_j=float(sum(merged.values())),
                domains_j=merged,
                source=self.source,
                faults=self.faults,
                stale=self._stale,
            )

    def close(self) -> None:
        """Release resources (threads, library handles). Safe to call more than once."""
        try:
            self._close()
        except Exception as err:  # closing must never raise into the fit
            if "close" not in self._warned:  # not a fault: nothing measured is lost
                self._warned.add("close")
                warnings.warn(
                    f"{type(self).__name__} could not close cleanly: {err!r}. The readings taken are "
                    "unaffected; training continues.",
                    EnergyMeasurementWarning,
                    stacklevel=2,
                )

    @property
    def faults(self) -> int:
        """Number of faults recorded since :meth:`start`."""
        return self._faults

    def record_fault(self, kind: str, message: str) -> None:
        """Count a fault and warn about it, once per ``kind``.

        Args:
            kind: A short key; the first fault of each kind is warned about, later ones only
                counted.
            message: What happened and what it means for the readings.
        """
        self._faults += 1
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(
                f"{message} Energy readings from now on are marked partial; training continues.",
                EnergyMeasurementWarning,
                stacklevel=3,
            )

    def mark_stale(self) -> None:
        """Note that the read in progress keeps a domain's last good figure (it could not be read now).

        For a fault whose energy is not lost but late: a counter that answers again gives it to
        a later reading, so the reading is ``stale`` and the span it begins is partial too. Call it
        from :meth:`_read_j` beside :meth:`record_fault`; not for energy that is lost (a counter
        reset, a sampler gap).
        """
        self._stale = True

    # -- to implement ---------------------------------------------------------------------------
    @abstractmethod
    def _start(self) -> None:
        """Take the hardware baseline."""

    @abstractmethod
    def _read_j(self) -> dict[str, float]:
        """Cumulative joules per domain since :meth:`_start`; may raise on a fault."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    def __enter__(self) -> EnergyMeter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CompositeMeter(EnergyMeter):
    """Several meters read together: their domains are merged, their labels ``+``-joined.

    Args:
        meters: The meters to combine; domain names must not overlap.

    Example:
        >>> from lightning_green.energy.estimate import CpuTimeEstimateMeter
        >>> meter = CompositeMeter([CpuTimeEstimateMeter(power_per_core_w=10.0)])
        >>> meter.source
        'estimate'
    """

    def __init__(self, meters: list[EnergyMeter]) -> None:
        super().__init__()
        if not meters:
            raise ValueError("CompositeMeter needs at least one meter, got an empty list")
        self.meters = list(meters)
        self.source = "+".join(dict.fromkeys(m.source for m in self.meters))

    def _start(self) -> None:
        for meter in self.meters:
            meter.start()

    def _read_j(self) -> dict[str, float]:
        domains_j: dict[str, float] = {}
        for meter in self.meters:
            reading = meter.read()
            domains_j.update(reading.domains_j)
            if reading.stale:
                self.mark_stale()
        # A part may have degraded to another source (NVML to its power sampler, say).
        self.source = "+".join(dict.fromkeys(m.source for m in self.meters))
        return domains_j

    @property
    def faults(self) -> int:
        """Faults of the composite itself plus those of its parts."""
        return self._faults + sum(meter.faults for meter in self.meters)

    def _close(self) -> None:
        for meter in self.meters:
            meter.close()
