"""Precision: the cheapest one whose training loss tracks the full-precision run.

Mixed precision is not cheaper everywhere: on an H100 ``bf16-mixed`` costs a fraction of the
joules per sample of ``32-true``, on a CPU without native bf16 kernels it costs about three
times more. So nothing is assumed: the policy measures joules per sample of each supported
precision on a few real training steps, checks that the loss under it stays on the
full-precision trajectory, and keeps the cheapest precision that passes, if it saves more than
a margin. It rolls back when a precision misbehaves later and bans it for a cooling period.

**Windows.** The caller reports training steps with :meth:`PrecisionPolicy.record` (one step
or a few at a time: energy, samples, wall time, losses, GradScaler overflows). After each
change of precision the first ``warmup_steps`` steps are excluded from measurement (autocast
caches, kernel selection, a fresh GradScaler calibrating its scale); the rest is cut into
windows of at least ``window_steps`` steps *and* ``min_window_s`` seconds (so an energy
counter with coarse updates still resolves a window). A window gives one joules-per-sample
figure and the mean and spread of its losses.

**Probing** (:mod:`~lightning_green.policy.precision_probe`), from step ``start_step``: each
candidate in alternating single windows with the base precision (normally ``32-true``)::

    32-true | bf16-mixed | 32-true | bf16-mixed | 32-true ... | 16-mixed | 32-true ...

judged after every pair by a paired confidence interval on the ratio of joules per sample
(:func:`~lightning_green.policy.paired_windows.compare_interleaved`, ``min_saving`` =
``switch_margin``): only a candidate *resolved* cheaper is adopted; one resolved costlier stops
after two pairs; one still unresolved after ``max_pairs`` pairs, or when the budget runs out, is
not adopted. Probing energy (the candidate's steps) stays within ``probe_budget`` of the run's
projected energy; a run too short for two candidate windows does not probe (``no_budget``), nor
does one whose planned end comes before them (``too_short``): both keep the candidates, and a run
continued to a longer plan probes them.
On the CPU-time estimate a saving must replicate: resolved cheaper (and no slower) once, the
candidate is probed again from the next epoch (``to_confirm``) and adopted only if resolved
cheaper again.

**Loss check.** When a candidate is resolved cheaper, a straight line is fitted (weighted least
squares) to the mean losses of the reference windows around its windows, over step number: the
local trend of the base run. The candidate's mean loss (all its steps, warm-up included) is
compared with that line at its mean step. It fails when
it is higher by more than ``loss_tolerance × |trend|`` plus ``loss_noise_z`` standard errors
of the difference (per-step loss noise, pooled within the reference windows). Only a higher
loss counts against a precision.

**Rollback** (while probing a precision, or after adopting one): a non-finite loss;
``max_overflows`` GradScaler overflows within one window; or a window whose mean loss jumps
above the median of the previous three windows' means by more than ``loss_tolerance`` (plus
the same noise allowance). The policy goes back to the precision it came from and bans the
offender until ``cooldown_epochs`` epochs have passed; then it is probed again.

Nothing Lightning here. Decisions are pure functions of what was recorded, in plain Python
floats: every DDP rank decides the same when fed the same (all-reduced) numbers, and a state
round trip through JSON continues identically.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_green.checks import as_number, check_bool, check_int, check_range
from lightning_green.policy._util import check_state_version
from lightning_green.policy.loss_trajectory import (
    add_losses,
    loss_jump,
    new_acc,
)
from lightning_green.policy.precision_plan import (
    PRECISIONS,
    REFERENCE_PRECISION,
    PrecisionDecision,
    PrecisionReason,
    check_precision,
)
from lightning_green.policy.precision_probe import (
    CANDIDATE,
    ProbeRunner,
    energy_comparable,
    new_probe,
    no_budget_text,
    probe_cost,
    probing_off_text,
    too_short_text,
)

__all__ = [
    "PRECISIONS",
    "REFERENCE_PRECISION",
    "PrecisionDecision",
    "PrecisionPolicy",
    "PrecisionReason",
    "no_budget_text",
    "probe_cost",
    "probing_off_text",
    "too_short_text",
]

_STATE_VERSION = 3
_MAX_WINDOWS = 64
_JUMP_HISTORY = 3

# --------------------------------------------------------------------------- the policy


class PrecisionPolicy(ProbeRunner):
    """Measure each supported precision, keep the cheapest that tracks the reference loss.

    Usage by the callback: after every training step (or every few), call :meth:`record`
    with what the steps cost and their losses, then :meth:`decide` with the current epoch
    and the run's planned steps, and apply the returned precision.

    Args:
        supported: Precisions the hardware supports, Lightning's spelling (``"bf16-mixed"``,
            ``"16-mixed"``; ``"32-true"`` is always added).
        initial_precision: The precision training starts with. Default ``"32-true"``.
        loss_tolerance: Relative excess of the mean training loss over the reference
            trend (probe check) or over the recent windows (jump check) that counts as
            harm, on top of the noise allowance. Default 0.05: where mixed precision works,
            its training loss stays within about 1 % of fp32 at the same step; where it
            does not (fp16 gradient underflow, a bf16 accumulation problem), the gap is
            several percent and grows, or the loss diverges. 5 % separates the two while a
            local linear trend over a few dozen steps stays well within it. Per-step noise
            is accounted for separately (``loss_noise_z``).
        switch_margin: Fraction of joules per sample a cheaper precision must save, beyond
            the measured noise (the whole confidence interval of the ratio below
            ``1 - switch_margin``), before the policy switches. Default 0.1: a precision change
            carries a small numerical risk, so a saving under 10 % is not worth it. (Typical
            savings are 2x or more where there are any.)
        cooldown_epochs: Epochs a precision stays banned after a rollback or failed loss
            check, after which it is probed again. Default 2.
        max_overflows: GradScaler overflows (skipped steps) within one measured window that
            trigger a rollback. Default 3: a few overflows while the scale calibrates are
            normal (and fall in the warm-up), three in one window of four or more steps means
            most of the work is being thrown away.
        window_steps: Minimum steps per measurement window. Default 4.
        min_window_s: Minimum seconds per window. Default 1.0: long enough for GPU energy
            counters (updated every few tens of milliseconds) to resolve a window.
        warmup_steps: Steps after each change of precision excluded from measurement.
            Default 2.
        max_pairs: Candidate windows (each paired with its neighbouring reference windows)
            measured at most per candidate. Default 6.
        confidence: Two-sided confidence level of the interval on the paired ratio. Default 0.9.
        probe_budget: Share of the run's energy the candidates' steps may take: of its
            projection, and at every step of what it has spent so far. Default 0.05.
        start_step: Steps before probing begins. Default 20: the first steps carry one-off
            costs (compilation, caches, data loader start) and the steepest loss drop, both
            bad for comparisons.
        loss_noise_z: Standard errors of per-step loss noise added to the loss tolerance.
            Default 2.0.

    Raises:
        ValueError: For arguments out of range, naming the argument.

    Example:
        >>> policy = PrecisionPolicy(["bf16-mixed"], start_step=0, min_window_s=0.0)
        >>> policy.decide(epoch=0).reason.value  # nothing spent yet: probing is paid as it goes
        'keep'
        >>> for _ in range(300): policy.record("32-true", 1.0, 32, 0.1, losses=[1.0])  # 1 J a step
        >>> policy.decide(epoch=0).reason.value  # 5 % of 300 J pays for two 6 J windows: a reference first
        'probe'
    """

    def __init__(
        self,
        supported: Sequence[str],
        *,
        initial_precision: str = REFERENCE_PRECISION,
        loss_tolerance: float = 0.05,
        switch_margin: float = 0.1,
        cooldown_epochs: int = 2,
        max_overflows: int = 3,
        window_steps: int = 4,
        min_window_s: float = 1.0,
        warmup_steps: int = 2,
        max_pairs: int = 6,
        confidence: float = 0.9,
        probe_budget: float = 0.05,
        start_step: int = 20,
        loss_noise_z: float = 2.0,
    ) -> None:
        if isinstance(supported, str) or not isinstance(supported, Sequence):
            raise ValueError(
                f"supported must be a list of precisions from {list(PRECISIONS)}, got {supported!r}"
            )
        listed = {check_precision("supported", p) for p in supported} | {REFERENCE_PRECISION}
        self.supported: tuple[str, ...] = tuple(p for p in PRECISIONS if p in listed)
        initial = check_precision("initial_precision", initial_precision)
        if initial not in self.supported:
            raise ValueError(
                f"initial_precision must be one of supported={list(self.supported)}, "
                f"got {initial_precision!r}"
            )
        self.initial_precision = initial
        self.loss_tolerance = check_range("loss_tolerance", loss_tolerance, 0.0, math.inf, what="a fraction")
        self.switch_margin = check_range("switch_margin", switch_margin, 0.0, 1.0)
        self.cooldown_epochs = check_int("cooldown_epochs", cooldown_epochs, 0)
        self.max_overflows = check_int("max_overflows", max_overflows, 1)
        self.window_steps = check_int("window_steps", window_steps, 1)
        self.min_window_s = check_range("min_window_s", min_window_s, 0.0, math.inf, what="seconds")
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        self.max_pairs = check_int("max_pairs", max_pairs, 2)
        self.confidence = check_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
        self.probe_budget = check_range("probe_budget", probe_budget, 0.0, 1.0, high_open=True)
        self.start_step = check_int("start_step", start_step, 0)
        self.loss_noise_z = check_range("loss_noise_z", loss_noise_z, 0.0, math.inf)

        self._step = 0
        self._current = initial
        self._previous: list[str] = []  # precisions switched away from, most recent last
        self._seg_precision: str | None = None
        self._seg_steps = 0
        self._acc = new_acc()
        self._windows: list[dict[str, Any]] = []
        self._probe: dict[str, Any] | None = None  # the probe in progress (precision_probe.new_probe)
        self._outcomes: dict[str, dict[str, Any]] = {}  # candidate -> verdict and its figures
        self._probe_j: dict[str, float] = {}  # energy of the steps probed at each candidate
        self._probe_samples: dict[str, int] = {}
        self._probe_steps = 0
        self._train_j = 0.0  # energy of every step recorded
        self._estimated = False  # whether the last steps' energy was the CPU-time estimate
        self._budget_noted = False
        self._too_short_for: float | None = None  # the plan too short to probe (said once per plan)
        self._started = False
        self._pending: list[str] = []
        self._banned: dict[str, int] = {}  # precision -> epoch from which it may be probed again
        self._unconfirmed: dict[str, int] = {}  # estimate: precision -> epoch first resolved cheaper
        self._alarm: dict[str, Any] | None = None
        self._j: dict[str, float] = {}
        self.dropped_candidates: tuple[str, ...] = ()
        """Candidates a loaded state held (still to probe, or in the probe) that are not supported."""

    # ------------------------------------------------------------------ queries

    @property
    def current_precision(self) -> str:
        """The precision of the last decision (the initial one before any)."""
        return self._current

    @property
    def step(self) -> int:
        """Training steps recorded so far."""
        return self._step

    @property
    def banned(self) -> dict[str, int]:
        """Banned precisions and the epoch from which each may be probed again."""
        return dict(self._banned)

    @property
    def probing(self) -> bool:
        """Whether a probe is in progress."""
        return self._probe is not None

    def probe_energy_j(self) -> dict[str, float]:
        """Joules of the steps trained at each candidate while probing (warm-up included)."""
        return dict(self._probe_j)

    def probe_samples(self) -> dict[str, int]:
        """Training samples of those steps, per candidate."""
        return dict(self._probe_samples)

    def j_per_sample(self) -> dict[str, float]:
        """Joules per sample measured per precision (median of its windows in its last probe)."""
        return dict(self._j)

    # ------------------------------------------------------------------ recording

    def record(
        self,
        precision: str,
        energy_j: float,
        samples: int,
        duration_s: float,
        losses: Sequence[float] = (),
        overflows: int = 0,
        steps: int | None = None,
        estimated: bool = False,
        partial: bool = False,
    ) -> None:
        """Record one or a few training steps that ran at ``precision``.

        Args:
            precision: The precision the steps actually ran at.
            energy_j: Their energy in joules (all ranks summed under DDP).
            samples: Training samples they processed (all ranks).
            duration_s: Their wall time in seconds.
            losses: Their training losses, one per step (all-reduced under DDP); NaN or inf
                entries count as non-finite losses. Without losses no loss checks can be made
                and no candidate is adopted.
            overflows: GradScaler overflows (skipped optimizer steps) among them.
            steps: How many steps; default ``max(len(losses), 1)``.
            estimated: Whether ``energy_j`` is the CPU-time estimate, not a measurement: a
                candidate is then adopted only if it is also no slower per sample.
            partial: Whether a measurement fault happened while they ran (an NVML error, a counter
                reset): their energy counts towards the run, but a window they are part of is not
                compared with others (nor is one that measured no energy); the next window of the
                same precision is measured instead.

        Raises:
            ValueError: For an unknown or unsupported precision or out-of-range numbers.
        """
        prec = check_precision("precision", precision)
        self._estimated = check_bool("estimated", estimated)
        faulty = check_bool("partial", partial)
        if prec not in self.supported:
            raise ValueError(f"precision must be one of supported={list(self.supported)}, got {precision!r}")
        energy = check_range("energy_j", energy_j, 0.0, math.inf, what="joules")
        duration = check_range("duration_s", duration_s, 0.0, math.inf, what="seconds")
        count = check_int("samples", samples, 1)
        n_over = check_int("overflows", overflows, 0)
        values = []
        for v in losses:  # NaN and inf are data here (they trigger a rollback), text is not
            number = as_number(v)
            if number is None:
                raise ValueError(f"losses must be numbers, got {v!r}")
            values.append(float(number))
        n_steps = check_int("steps", max(len(values), 1) if steps is None else steps, 1)

        if prec != self._seg_precision:
            self._seg_precision, self._seg_steps, self._acc = prec, 0, new_acc()
        mid_step = self._step + (n_steps + 1) / 2.0
        finite = [v for v in values if math.isfinite(v)]
        non_finite = len(values) - len(finite)
        probe = self._probe
        if probe is not None and probe["role"] == CANDIDATE and probe["cand"] == prec and finite:
            add_losses(probe["cand_loss"], finite, mid_step)
        self._train_j += energy
        can_roll_back = prec == self._current and self._rollback_target() not in (None, prec)
        if non_finite and can_roll_back:
            self._raise_alarm(PrecisionReason.ROLLBACK_NON_FINITE, prec, {"non_finite_losses": non_finite})

        warm = self._seg_steps < self.warmup_steps
        self._step += n_steps
        self._seg_steps += n_steps
        if warm:
            self._probe_record(prec, energy, count, n_steps, None)
            return
        acc = self._acc
        acc["energy_j"] += energy
        acc["samples"] += count
        acc["duration_s"] += duration
        acc["steps"] += n_steps
        acc["overflows"] += n_over
        acc["faults"] = acc.get("faults", 0.0) + float(faulty)
        add_losses(acc, finite, mid_step)
        if acc["steps"] < self.window_steps or acc["duration_s"] < self.min_window_s:
            self._probe_record(prec, energy, count, n_steps, None)
            return
        window: dict[str, Any] = dict(acc)
        window["precision"] = prec
        self._acc = new_acc()
        self._probe_record(prec, energy, count, n_steps, window if energy_comparable(window) else None)
        if can_roll_back:
            self._check_window(window)
        self._windows.append(window)
        del self._windows[:-_MAX_WINDOWS]

    def _check_window(self, window: dict[str, Any]) -> None:
        prec = window["precision"]
        if window["overflows"] >= self.max_overflows:
            self._raise_alarm(
                PrecisionReason.ROLLBACK_OVERFLOW, prec, {"overflows": int(window["overflows"])}
            )
            return
        if window["loss_n"] <= 0:
            return
        recent = [w for w in self._windows if w["loss_n"] > 0][-_JUMP_HISTORY:]
        if not recent:
            return
        jump = loss_jump(window, recent, self.loss_tolerance, self.loss_noise_z)
        if jump is not None:
            self._raise_alarm(PrecisionReason.ROLLBACK_LOSS_JUMP, prec, jump)

    def _raise_alarm(self, reason: PrecisionReason, precision: str, details: dict[str, Any]) -> None:
        if self._alarm is None:
            self._alarm = {"reason": reason.value, "precision": precision, "details": details}

    def _rollback_target(self) -> str | None:
        if self._probe is not None and self._probe["role"] == CANDIDATE:
            return self._probe["base"]
        return self._previous[-1] if self._previous else None

    # ------------------------------------------------------------------ deciding

    def decide(self, epoch: int, planned_steps: float | None = None, hold: bool = False) -> PrecisionDecision:
        """Decide the precision for what follows.

        Args:
            epoch: The current epoch (0-based); drives the cooling periods.
            planned_steps: The run's planned length in training steps (the unit of :meth:`record`'s
                ``steps``), for the probing budget; None: no plan, the budget is a share of the
                energy recorded so far.
            hold: Another adaptation is comparing its settings now (a batch-size trial, whose
                epochs must all train at one precision): no new probe starts (those due wait);
                rollbacks and a probe already running go on.

        Returns:
            The decision; the policy then assumes it is applied.

        Raises:
            ValueError: For a negative or non-integer epoch.
        """
        ep = check_int("epoch", epoch, 0)
        details: dict[str, Any] = {"previous_precision": self._current, "step": self._step, "epoch": ep}

        if self._alarm is not None:
            alarm, self._alarm = self._alarm, None
            if alarm["precision"] == self._current:
                return self._roll_back(PrecisionReason(alarm["reason"]), ep, {**details, **alarm["details"]})

        expired = [p for p in PRECISIONS if p in self._banned and ep >= self._banned[p]]
        if expired:
            for p in expired:
                del self._banned[p]
                if p not in self._pending:
                    self._pending.append(p)
            return self._emit(
                self._current, PrecisionReason.COOLDOWN_OVER, {**details, "precisions": expired}
            )

        if self._probe is None and self._step >= self.start_step and not check_bool("hold", hold):
            if not self._started:
                self._started = True
                self._pending = list(self.supported)
            later = [p for p in self._pending if self._unconfirmed.get(p, -1) >= ep]
            todo = [
                p for p in self._pending if p not in later and p != self._current and p not in self._banned
            ]
            self._pending = later  # a replication waits for a later epoch
            if todo:
                waiting = self._start_or_wait(todo, details, planned_steps)
                if waiting is not None:
                    return waiting

        if self._probe is not None:
            return self._advance(ep, details, planned_steps)
        return self._emit(self._current, PrecisionReason.KEEP, details)

    def _roll_back(self, reason: PrecisionReason, ep: int, details: dict[str, Any]) -> PrecisionDecision:
        offender, probe = self._current, self._probe
        if probe is not None and probe["role"] == CANDIDATE:
            target = probe["base"]
            self._outcomes[offender] = {"status": reason.value}
            probe.update(new_probe(target, probe["queue"]))  # a fresh reference, then the next one
        else:
            target = self._previous.pop() if self._previous else offender
            if probe is not None:  # a re-probe based on the offender: abandon it, probe later
                rest = [p for p in [probe["cand"], *probe["queue"]] if p is not None]
                self._pending += [p for p in rest if p not in self._pending]
                self._probe = None
        self._banned[offender] = ep + self.cooldown_epochs
        self._unconfirmed.pop(offender, None)
        return self._emit(
            target, reason, {**details, "banned": offender, "banned_until_epoch": ep + self.cooldown_epochs}
        )

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: windows, the probe in progress, outcomes, budget, bans, the precision in use."""
        return {
            "version": _STATE_VERSION,
            "step": self._step,
            "current": self._current,
            "previous": list(self._previous),
            "seg_precision": self._seg_precision,
            "seg_steps": self._seg_steps,
            "acc": dict(self._acc),
            "windows": [dict(w) for w in self._windows],
            "probe": copy.deepcopy(self._probe),
            "outcomes": copy.deepcopy(self._outcomes),
            "probe_j": dict(self._probe_j),
            "probe_samples": dict(self._probe_samples),
            "probe_steps": self._probe_steps,
            "train_j": self._train_j,
            "budget_noted": self._budget_noted,
            "too_short_for": self._too_short_for,
            "started": self._started,
            "pending": list(self._pending),
            "banned": dict(self._banned),
            "unconfirmed": dict(self._unconfirmed),
            "alarm": None if self._alarm is None else dict(self._alarm),
            "j_per_sample": dict(self._j),
            "estimated": self._estimated,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (possibly through JSON); later decisions are identical.

        A state saved with other precisions supported (a run resumed with fewer allowed) keeps
        only this policy's (:attr:`dropped_candidates` names the candidates it loses); the precision
        in use, where no longer supported, becomes ``initial_precision`` (:attr:`current_precision`
        says which).

        Args:
            state: What :meth:`state_dict` returned: windows, the probe in progress, outcomes,
                probing energy, bans and the precision in use.

        Raises:
            ValueError: For a state of another version.
        """
        check_state_version(state, _STATE_VERSION)
        self._step = int(state["step"])
        self._current = str(state["current"])
        self._previous = [str(p) for p in state["previous"]]
        self._seg_precision = state["seg_precision"]
        self._seg_steps = int(state["seg_steps"])
        self._acc = {k: float(v) for k, v in state["acc"].items()}
        self._windows = [
            {k: (v if k == "precision" else float(v)) for k, v in w.items()} for w in state["windows"]
        ]
        self._probe = copy.deepcopy(state["probe"])
        self._outcomes = copy.deepcopy(dict(state["outcomes"]))
        self._probe_j = {str(k): float(v) for k, v in state["probe_j"].items()}
        self._probe_samples = {str(k): int(v) for k, v in state["probe_samples"].items()}
        self._probe_steps = int(state["probe_steps"])
        self._train_j = float(state["train_j"])
        self._budget_noted = bool(state["budget_noted"])
        too_short = state.get("too_short_for")  # absent from states saved before it
        self._too_short_for = None if too_short is None else float(too_short)
        self._started = bool(state["started"])
        self._pending = [str(p) for p in state["pending"]]
        self._banned = {str(k): int(v) for k, v in state["banned"].items()}
        self._unconfirmed = {str(k): int(v) for k, v in state["unconfirmed"].items()}
        alarm = state["alarm"]
        self._alarm = None if alarm is None else dict(alarm)
        self._j = {str(k): float(v) for k, v in state["j_per_sample"].items()}
        self._estimated = bool(state.get("estimated", False))
        self.dropped_candidates = self._keep_supported()

    def _keep_supported(self) -> tuple[str, ...]:
        """After a load: forget the precisions of the state that this policy does not support.

        A run resumed with fewer precisions allowed (``AdaptivePrecision(precisions=...)``) trains
        only in those: the candidates still to probe lose the others; a probe measured against a
        precision no longer supported ends (its supported candidates wait to be probed again), one
        of a candidate no longer supported goes on with the next candidate (back to its base); bans,
        rollback targets and an alarm about them are forgotten. The precision in use, where no longer
        supported (or the candidate of a probe that ended here), becomes ``initial_precision``.

        Returns:
            The candidates dropped (still to probe, or in the probe), in :data:`PRECISIONS` order.
        """
        ok = set(self.supported)
        probe = self._probe
        held = set(self._pending)
        if probe is not None:
            held |= {p for p in [probe["cand"], *probe["queue"]] if p is not None}
        dropped = tuple(p for p in PRECISIONS if p in held and p not in ok)
        self._pending = [p for p in self._pending if p in ok]
        if probe is not None:
            probe["queue"] = [p for p in probe["queue"] if p in ok]
            if probe["base"] not in ok:  # its reference windows compare with a precision not allowed
                rest = [p for p in [probe["cand"], *probe["queue"]] if p is not None and p in ok]
                self._pending += [p for p in rest if p not in self._pending]
                self._probe = None
                self._current = self.initial_precision
            elif probe["cand"] is not None and probe["cand"] not in ok:  # as after a rollback of it
                if self._current == probe["cand"]:
                    self._current = probe["base"]
                probe.update(new_probe(probe["base"], probe["queue"]))
        self._previous = [p for p in self._previous if p in ok]
        self._banned = {p: e for p, e in self._banned.items() if p in ok}
        self._unconfirmed = {p: e for p, e in self._unconfirmed.items() if p in ok}
        if self._alarm is not None and self._alarm["precision"] not in ok:
            self._alarm = None
        if self._current not in ok:
            self._current = self.initial_precision
        return dropped
