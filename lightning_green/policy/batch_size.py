"""Batch size: switch only to a size that measurably reaches the target for fewer joules.

The model (:mod:`lightning_green.policy.batch_size_model`, McCandlish et al. 2018): the energy
to reach a target at batch size ``B`` is ``j_per_sample(B) · E_min · (1 + B / B_noise)``, with
``B_noise`` the gradient noise scale (:mod:`lightning_green.policy.noise_scale`): bigger batches
are cheaper per sample but need more samples.

The measurement (:mod:`lightning_green.policy.batch_size_trial`): a candidate trains whole
epochs interleaved with the size in use, and is adopted only when the paired comparison of their
windows resolves a saving beyond the measured noise *and* the model, with the extra samples,
still favours it. Unresolved means staying. Probing takes at most ``probe_fraction`` (5 %) of
the run's projected energy; a run too short to afford two candidate epochs does not probe.

Nothing Lightning here: the callback measures, calls :meth:`BatchSizePolicy.record_probe` and
:meth:`BatchSizePolicy.decide`, and applies the decision. Decisions depend only on what was
recorded, in plain Python floats, so every DDP rank decides the same when fed the same
(all-reduced) numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lightning_green.checks import (
    check_fraction_below_1,
    check_int,
    check_non_negative,
    check_positive,
    check_range,
)
from lightning_green.policy._util import check_state_version, median
from lightning_green.policy.batch_size_model import (
    LRScalingRule,
    candidate_batch_sizes,
    check_b_noise,
    choose_batch_size,
    relative_samples_to_target,
    scale_learning_rate,
)
from lightning_green.policy.batch_size_trial import (
    VERDICT_REASONS,
    BatchSizeDecision,
    BatchSizeReason,
    Trial,
    judge,
)
from lightning_green.policy.noise_scale import GradientNoiseScale
from lightning_green.policy.paired_windows import ProbeBudget, projected_run_energy_j

__all__ = [
    "USE_ESTIMATE",
    "BatchSizeDecision",
    "BatchSizePolicy",
    "BatchSizeReason",
    "LRScalingRule",
    "candidate_batch_sizes",
    "choose_batch_size",
    "relative_samples_to_target",
    "scale_learning_rate",
]

_STATE_VERSION = 2

USE_ESTIMATE = "estimate"
"""Default of :meth:`BatchSizePolicy.decide`: use the policy's own noise-scale estimate."""


# --------------------------------------------------------------------------- the policy


class BatchSizePolicy:
    """Try candidate batch sizes on interleaved epochs; adopt one only on a resolved saving.

    Usage by the callback: after every training window at batch size ``b`` call
    :meth:`record_probe` (and feed squared gradient norms to :attr:`noise_scale`); at every
    epoch end call :meth:`decide` and train the next epoch at the returned size (None: no
    change, nothing to record).

    A trial (:mod:`lightning_green.policy.batch_size_trial`) takes the candidates nearest the
    size in use first (larger first at equal distance): candidate and size in use alternate by
    epoch until the paired comparison resolves, at most ``max_visits`` candidate epochs. A trial
    starts only when at least ``min_visits`` candidate epochs fit in the probing budget
    (``probe_fraction`` of the run's projected energy, counting a candidate epoch as an average
    epoch times ``size in use / candidate`` for smaller candidates) and in ``probe_fraction`` of
    the energy spent so far (paid as it goes: 38 epochs for two at 5 %), and once the gradient
    noise scale is known. Each visit discards its first ``warmup_windows`` windows.

    Args:
        initial_batch_size: The user's per-device batch size.
        min_batch_size: Smallest size the policy may choose.
        max_batch_size: Largest size the policy may choose.
        switch_margin: Fraction of energy a candidate must save beyond the measured noise (and,
            times the samples it needs, to the target). Default 0.1.
        warmup_windows: Windows discarded at the start of each visit to a size. Default 1.
        min_windows: Kept windows a size needs before its median counts as measured (summary).
        max_factor: How far from ``initial_batch_size`` candidates go (power of two). Default 8.
        history_windows: Kept windows per size for the median (the most recent). Default 16.
        global_batch_factor: ``world_size × accumulate_grad_batches``. Default 1.
        noise_ema_decay: ``ema_decay`` of :attr:`noise_scale`. Default 0.99.
        noise_min_updates: ``min_updates`` of :attr:`noise_scale`. Default 10.
        probe_fraction: Share of the projected run energy probing may take. Default 0.05.
        min_visits: Candidate epochs a trial needs before it may start. Default 2.
        max_visits: Candidate epochs after which an unresolved trial ends. Default 3.
        confidence: Two-sided confidence of the paired interval. Default 0.9.
        grow: Go on to further candidates after a trial (else one trial at most).

    Raises:
        ValueError: For arguments out of range, naming the argument.

    Example:
        >>> policy = BatchSizePolicy(32, 16, 64, warmup_windows=0, noise_min_updates=1)
        >>> policy.noise_scale.update(2.0, 1.5, 32, 64)  # B_noise = 96
        >>> def epoch():  # three windows at batch size 32
        ...     for j in (1.0, 1.02, 0.98):
        ...         policy.record_probe(32, j * 32, 32, 0.1)
        >>> epoch()
        >>> policy.decide(run_energy_j=100.0, epochs_done=1, fraction_done=0.01) is None  # not paid for yet
        True
        >>> epoch()  # 5 % of the 40 epochs spent by now pays for two candidate epochs
        >>> policy.decide(run_energy_j=4000.0, epochs_done=40, fraction_done=0.4).reason.value
        'probe'
    """

    def __init__(
        self,
        initial_batch_size: int,
        min_batch_size: int,
        max_batch_size: int,
        *,
        switch_margin: float = 0.1,
        warmup_windows: int = 1,
        min_windows: int = 3,
        max_factor: int = 8,
        history_windows: int = 16,
        global_batch_factor: int = 1,
        noise_ema_decay: float = 0.99,
        noise_min_updates: int = 10,
        probe_fraction: float = 0.05,
        min_visits: int = 2,
        max_visits: int = 3,
        confidence: float = 0.9,
        grow: bool = True,
    ) -> None:
        self.noise_scale = GradientNoiseScale(noise_ema_decay, noise_min_updates)
        self.initial_batch_size = check_int("initial_batch_size", initial_batch_size, 1)
        self.min_batch_size = check_int("min_batch_size", min_batch_size, 1)
        self.max_batch_size = check_int("max_batch_size", max_batch_size, 1)
        self.grid = candidate_batch_sizes(
            initial_batch_size, min_batch_size, max_batch_size, max_factor=max_factor
        )
        self.max_factor = check_int("max_factor", max_factor, 1)  # checked above: a power of two
        self.switch_margin = check_fraction_below_1("switch_margin", switch_margin)
        self.warmup_windows = check_int("warmup_windows", warmup_windows, 0)
        self.min_windows = check_int("min_windows", min_windows, 1)
        self.history_windows = check_int("history_windows", history_windows, 1)
        if self.history_windows < self.min_windows:
            raise ValueError(
                f"history_windows must be >= min_windows={self.min_windows}, got {history_windows!r}"
            )
        self.global_batch_factor = check_int("global_batch_factor", global_batch_factor, 1)
        self.budget = ProbeBudget(probe_fraction)
        self.min_visits = check_int("min_visits", min_visits, 1)
        self.max_visits = check_int("max_visits", max_visits, self.min_visits)
        self.confidence = check_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
        self.grow = bool(grow)
        self._windows: dict[int, list[tuple[float, float, float]]] = {}
        self._oom_batch_size: int | None = None
        self._oom_now = False
        self._current = self._reference = self.initial_batch_size
        self._last_recorded: int | None = None
        self._visit_records = 0
        self._trial: Trial | None = None
        self._tried: dict[int, str] = {}
        self._probe_j = 0.0
        self._epoch_values: list[float] = []
        self._epoch_candidate_j = 0.0
        self._done = False
        # The planned length (epochs) at which probing was found unaffordable: said once for it,
        # looked at again when the plan grows (a run continued to a larger max_epochs).
        self._no_budget_planned: float | None = None
        self._last_run_j: float | None = None
        self.dropped_trial: int | None = None
        """The candidate of a trial a loaded state held that is outside this policy's range (dropped)."""

    # ------------------------------------------------------------------ recording

    def record_oom(self, batch_size: int) -> None:
        """Record that ``batch_size`` ran out of memory: it and every larger size are ruled out for good.

        Raises:
            ValueError: For a batch size < 1.
        """
        size = check_int("batch_size", batch_size, 1)
        if self._oom_batch_size is None or size < self._oom_batch_size:
            self._oom_batch_size = size
        self._oom_now = True
        self._last_recorded, self._visit_records = None, 0

    def record_probe(
        self, batch_size: int, energy_j: float, samples: int, duration_s: float, full: bool = True
    ) -> None:
        """Record one window of training at ``batch_size``.

        Args:
            batch_size: Per-device batch size the window ran at.
            energy_j: Energy of the window in joules (all ranks summed under DDP).
            samples: Training samples processed in the window (all ranks).
            duration_s: Wall time of the window in seconds (reported in details only).
            full: False for a short tail window: its energy counts (probing), its value does not.

        Raises:
            ValueError: For a batch size < 1, negative or non-finite energy or duration, or
                ``samples < 1``.
        """
        size = check_int("batch_size", batch_size, 1)
        energy = check_non_negative("energy_j", energy_j, unit="joules")
        duration = check_non_negative("duration_s", duration_s, unit="seconds")
        count = check_int("samples", samples, 1)
        if self._trial is not None and size == self._trial.candidate:
            self._probe_j += energy
            self._epoch_candidate_j += energy
        if size != self._last_recorded:
            self._last_recorded, self._visit_records = size, 0
        self._visit_records += 1
        if self._visit_records <= self.warmup_windows or not full:
            return
        kept = self._windows.setdefault(size, [])
        kept.append((energy, float(count), duration))
        del kept[: -self.history_windows]
        if energy > 0:
            self._epoch_values.append(energy / count)
            if self._trial is not None:
                self._trial.add(size, energy / count)

    # ------------------------------------------------------------------ queries

    @property
    def current_batch_size(self) -> int:
        """The batch size of the last decision (the user's before any)."""
        return self._current

    @property
    def adopted_batch_size(self) -> int:
        """The batch size adopted (the reference of trials), probes aside."""
        return self._reference

    @property
    def probing(self) -> bool:
        """Whether the size of the last decision is a candidate on trial."""
        return self._trial is not None and self._current == self._trial.candidate

    @property
    def in_trial(self) -> bool:
        """Whether a trial is running (its candidate and reference epochs are being compared)."""
        return self._trial is not None

    @property
    def active(self) -> bool:
        """Whether anything is still to be measured (a trial running or still to come)."""
        return self._trial is not None or (not self._done and self._no_budget_planned is None)

    @property
    def waiting_for_longer_plan(self) -> bool:
        """Whether probing was unaffordable for the planned run, and a longer plan could change that.

        :meth:`decide` looks again when the run's plan grows (``fit`` continued to a larger
        ``max_epochs``); nothing needs measuring meanwhile.
        """
        return self._trial is None and not self._done and self._no_budget_planned is not None

    @property
    def probe_j(self) -> float:
        """Energy of the training windows at candidate sizes so far (J, before PUE)."""
        return self._probe_j

    @property
    def tried(self) -> dict[int, str]:
        """The verdict of every concluded trial, by candidate size."""
        return dict(self._tried)

    @property
    def oom_batch_size(self) -> int | None:
        """Smallest size that ran out of memory, or None."""
        return self._oom_batch_size

    @property
    def candidates(self) -> list[int]:
        """Candidate sizes still allowed, ascending."""
        if self._oom_batch_size is None:
            return list(self.grid)
        return [b for b in self.grid if b < self._oom_batch_size]

    def j_per_sample(self, batch_size: int) -> float | None:
        """Median joules per sample measured at ``batch_size``; None until ``min_windows``."""
        kept = self._windows.get(batch_size, [])
        if len(kept) < self.min_windows:
            return None
        return median([e / s for e, s, _ in kept])

    def measured(self) -> dict[int, float]:
        """Joules per sample of every allowed candidate measured so far."""
        out = {}
        for b in self.candidates:
            j = self.j_per_sample(b)
            if j is not None and j > 0:
                out[b] = j
        return out

    def next_candidate(self) -> int | None:
        """The next size to put on trial against the one adopted, or None."""
        ref = self._reference
        rest = [b for b in self.candidates if b != ref and b not in self._tried]
        return min(rest, key=lambda b: (abs(math.log2(b / ref)), -b), default=None)

    # ------------------------------------------------------------------ deciding

    def decide(
        self,
        run_energy_j: float,
        epochs_done: float,
        fraction_done: float,
        b_noise: float | str | None = USE_ESTIMATE,
    ) -> BatchSizeDecision | None:
        """Decide the batch size of the next epoch, at an epoch end.

        Args:
            run_energy_j: The run's energy so far (J, same basis as the windows').
            epochs_done: Epochs trained so far (resumes included), > 0: fractional when the run
                ended inside its last epoch (``max_steps``).
            fraction_done: Share of the planned run done (epochs or steps, whichever ends it
                first); 0 when the run has no planned end (nothing can be projected: no probing).
            b_noise: The gradient noise scale, ``inf`` allowed, None when unknown. Default
                :data:`USE_ESTIMATE`: the estimate of :attr:`noise_scale`.

        Returns:
            The decision (applied by the caller from the next epoch on), or None: carry on at
            the same size, nothing to record.
        """
        noise = self.noise_scale.b_noise if b_noise == USE_ESTIMATE else check_b_noise(b_noise)
        run_j = check_non_negative("run_energy_j", run_energy_j, unit="joules")
        epochs = check_positive("epochs_done", epochs_done, unit="epochs")
        last_j = run_j / epochs if self._last_run_j is None else max(0.0, run_j - self._last_run_j)
        self._last_run_j = run_j
        average = projected = None
        if fraction_done > 0:  # at the average epoch's rate, or the last epoch's where that is lower
            remaining = epochs * (1.0 - min(fraction_done, 1.0)) / fraction_done
            average = projected_run_energy_j(run_j, fraction_done, 1.0)
            projected = min(average, run_j + last_j * remaining)  # type: ignore[type-var]
        in_use, trial = self._current, self._trial
        details: dict[str, Any] = {
            "previous_batch_size": in_use,
            "b_noise": noise,
            "probe_j": self._probe_j,
            "probe_allowance_j": self.budget.allowance_j(projected),
            "projected_run_j": projected,
        }
        values, self._epoch_values = self._epoch_values, []
        candidate_j, self._epoch_candidate_j = self._epoch_candidate_j, 0.0
        if self._oom_now:
            return self._out_of_memory(details)
        if trial is not None:
            if in_use == trial.candidate:
                trial.visits += 1
                trial.visit_j.append(candidate_j)
                return self._move(trial.reference, BatchSizeReason.INTERLEAVE, details)
            return self._conclude(trial, noise, run_j, epochs, projected, details)
        if self._done:
            return None
        candidate = self.next_candidate()
        if candidate is None:
            self._done = True
            return None
        if self.budget.fraction == 0:  # off by argument: no run is long enough, nothing to project
            self._done = True
            details.update(candidate=candidate, probe_fraction=0.0)
            return BatchSizeDecision(in_use, BatchSizeReason.PROBING_OFF, details)
        visit_j = self._visit_cost_j(candidate, run_j / epochs)
        # Before any probing, visits and budget both scale with the average epoch: whether a run
        # can afford probing depends on its planned length only, not on noisy epochs. Exactly at
        # the limit counts as affordable (40 epochs pay for two at 5 %), rounding aside.
        basis = average if self._probe_j == 0 else projected
        details.update(candidate=candidate, visit_j=visit_j, min_visits=self.min_visits)
        details["probe_allowance_j"] = self.budget.allowance_j(basis)
        need_j = self.min_visits * visit_j * (1.0 - 1e-9)
        # Paid as it goes: the run may end at any epoch (a stopper, a target reached), so a trial
        # starts only once the run has spent 1/probe_fraction times what it and the trials before
        # it cost, and only where the plan leaves room for its candidate epochs after that.
        pay_epochs = self.budget.pay_before_j(self._probe_j + need_j) / max(run_j / epochs, 1e-300)
        planned = epochs / fraction_done if fraction_done > 0 else None
        details.update(paid_after_epochs=pay_epochs, planned_epochs=planned)
        too_short = planned is None or planned < pay_epochs + self.min_visits
        if too_short or not self.budget.affords(
            next_probe_j=need_j, spent_probe_j=self._probe_j, projected_run_j=basis
        ):
            plan = math.inf if planned is None else planned
            if self._no_budget_planned is not None and plan <= self._no_budget_planned * (1.0 + 1e-6):
                return None  # already said for this plan
            self._no_budget_planned = plan
            return BatchSizeDecision(in_use, BatchSizeReason.NO_PROBE_BUDGET, details)
        self._no_budget_planned = None  # (again) affordable: measure towards a trial
        if not self.budget.paced(next_probe_j=need_j, spent_probe_j=self._probe_j, spent_run_j=run_j):
            return None  # not yet paid for
        if noise is None or not values:
            return None  # wait for the noise scale and an epoch of windows at the size in use
        self._trial = Trial(in_use, candidate)
        for value in values:
            self._trial.add(in_use, value)
        return self._move(candidate, BatchSizeReason.PROBE, details)

    def _visit_cost_j(self, candidate: int, average_epoch_j: float) -> float:
        """Expected energy of one candidate epoch: an average epoch, times ref/cand below the size in use."""
        trial = self._trial
        if trial is not None and trial.candidate == candidate and trial.visit_j:
            return 1.25 * max(trial.visit_j)  # the dearest visit so far, with room for noise
        return average_epoch_j * max(1.0, self._reference / candidate)

    def _conclude(
        self,
        trial: Trial,
        noise: float | None,
        run_j: float,
        epochs: float,
        projected: float | None,
        details: dict[str, Any],
    ) -> BatchSizeDecision:
        """After a reference epoch that followed a candidate epoch: adopt, measure again, or stay."""
        verdict, figures = judge(
            trial.compare(self.switch_margin, self.confidence),
            trial.reference,
            trial.candidate,
            noise,
            switch_margin=self.switch_margin,
            global_batch_factor=self.global_batch_factor,
            windows={"window_roles": list(trial.roles), "window_j_per_sample": list(trial.j_per_sample)},
        )
        details.update(candidate=trial.candidate, visits=trial.visits, comparison=figures)
        if verdict in ("unresolved", "insufficient") and trial.visits < self.max_visits:
            cost = self._visit_cost_j(trial.candidate, run_j / epochs)
            paced = self.budget.paced(next_probe_j=cost, spent_probe_j=self._probe_j, spent_run_j=run_j)
            if paced and self.budget.affords(
                next_probe_j=cost, spent_probe_j=self._probe_j, projected_run_j=projected
            ):
                return self._move(trial.candidate, BatchSizeReason.PROBE, details)
            details["budget_spent"] = True
        self._tried[trial.candidate] = verdict
        self._trial = None
        self._done = self._done or not self.grow
        if verdict == "cheaper":
            self._tried[trial.reference] = "left"
            self._reference = trial.candidate
            return self._move(trial.candidate, BatchSizeReason.CHEAPER, details)
        return BatchSizeDecision(trial.reference, VERDICT_REASONS[verdict], details)

    def _out_of_memory(self, details: dict[str, Any]) -> BatchSizeDecision:
        self._oom_now = False
        trial, in_use = self._trial, self._current
        self._trial = None
        if trial is not None:
            self._tried[trial.candidate] = "out_of_memory"
        allowed = self.candidates
        if not allowed:
            details["error"] = f"every candidate ran out of memory (smallest failing: {self._oom_batch_size})"
            return BatchSizeDecision(in_use, BatchSizeReason.OUT_OF_MEMORY, details)
        if self._reference not in allowed:
            self._reference = max((b for b in allowed if b < self._reference), default=min(allowed))
        return self._move(self._reference, BatchSizeReason.OUT_OF_MEMORY, details)

    def forget_measurements(self) -> None:
        """Another setting changed (the precision): what was measured before cannot be compared.

        The running trial's windows, the epoch's and each size's kept windows are dropped, and the
        next windows at the size in use are warm-up again; the trial goes on with the windows
        measured from here (and concludes on those alone, or unresolved). Energy spent counts.
        """
        self._epoch_values = []
        self._windows = {}
        self._visit_records = 0
        if self._trial is not None:
            self._trial.roles.clear()
            self._trial.j_per_sample.clear()

    def record_noise(self, batch_size: int, pairs: float, small: float, big: float) -> None:
        """Feed :attr:`noise_scale` with ``pairs`` gradient pairs' summed ``|G_B|²``, ``|G_2B|²``."""
        if pairs >= 1:
            small, big = small / pairs, big / pairs
            if math.isfinite(small) and math.isfinite(big) and small >= 0 and big >= 0:
                global_batch = batch_size * self.global_batch_factor
                self.noise_scale.update(small, big, global_batch, 2 * global_batch)

    def stop(self, batch_size: int) -> None:
        """Stop adapting for good at ``batch_size`` (the size training goes on with): nothing more is tried.

        For a switch that could not be applied (the dataloader does not follow the batch size).

        Raises:
            ValueError: For a batch size < 1.
        """
        self._current = self._reference = check_int("batch_size", batch_size, 1)
        self._trial = None
        self._done = True

    def _move(self, batch_size: int, reason: BatchSizeReason, details: dict[str, Any]) -> BatchSizeDecision:
        self._current = batch_size
        return BatchSizeDecision(batch_size, reason, details)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: windows, trial, verdicts, probing energy, ruled-out sizes, noise scale."""
        return {
            "version": _STATE_VERSION,
            "windows": {str(b): [list(w) for w in ws] for b, ws in sorted(self._windows.items())},
            "oom_batch_size": self._oom_batch_size,
            "oom_now": self._oom_now,
            "current": self._current,
            "reference": self._reference,
            "last_recorded": self._last_recorded,
            "visit_records": self._visit_records,
            "trial": None if self._trial is None else self._trial.to_dict(),
            "tried": {str(b): v for b, v in sorted(self._tried.items())},
            "probe_j": self._probe_j,
            "epoch_values": list(self._epoch_values),
            "epoch_candidate_j": self._epoch_candidate_j,
            "done": self._done,
            "no_budget_planned": self._no_budget_planned,
            "last_run_j": self._last_run_j,
            "noise_scale": self.noise_scale.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (possibly through JSON); later decisions are identical.

        A trial whose candidate is outside this policy's range (a run resumed with a narrower one)
        is dropped, named by :attr:`dropped_trial`: the size of the last decision goes back to the
        trial's reference. (Training at that candidate cannot go on within the range: the caller
        refuses such a resume.)

        Args:
            state: What :meth:`state_dict` returned.

        Raises:
            ValueError: For a state of another version.
        """
        check_state_version(state, _STATE_VERSION)
        self._windows = {
            int(b): [(float(e), float(s), float(d)) for e, s, d in ws] for b, ws in state["windows"].items()
        }
        oom = state["oom_batch_size"]
        self._oom_batch_size = None if oom is None else int(oom)
        self._oom_now = bool(state["oom_now"])
        self._current, self._reference = int(state["current"]), int(state["reference"])
        last = state["last_recorded"]
        self._last_recorded = None if last is None else int(last)
        self._visit_records = int(state["visit_records"])
        self._trial = None if state["trial"] is None else Trial.from_dict(state["trial"])
        self._tried = {int(b): str(v) for b, v in state["tried"].items()}
        self._probe_j = float(state["probe_j"])
        self._epoch_values = [float(v) for v in state["epoch_values"]]
        self._epoch_candidate_j = float(state["epoch_candidate_j"])
        self._done = bool(state["done"])
        no_budget = state.get("no_budget_planned")
        self._no_budget_planned = None if no_budget is None else float(no_budget)
        self._last_run_j = None if state["last_run_j"] is None else float(state["last_run_j"])
        self.noise_scale.load_state_dict(state["noise_scale"])
        trial, self.dropped_trial = self._trial, None
        if trial is not None and trial.candidate not in self.grid:
            self.dropped_trial, self._trial = trial.candidate, None
            self._current, self._epoch_candidate_j = trial.reference, 0.0
