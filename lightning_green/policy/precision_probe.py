"""Probing precisions: interleaved reference/candidate windows, a paired verdict, a bounded budget.

:class:`ProbeRunner` is the part of :class:`~lightning_green.policy.precision.PrecisionPolicy`
that probes. A probe of the candidates ``c1, c2, ...`` alternates single windows::

    ref | c1 | ref | c1 | ref ... ref | c2 | ref | c2 | ref ...

(each window after the policy's warm-up steps), so drift and the load of other processes hit
both alike. After each reference window that follows a candidate window the candidate is judged
by :func:`~lightning_green.policy.paired_windows.compare_interleaved` (``min_saving`` = the
switch margin): ``cheaper`` or ``costlier`` ends its probe (two pairs at least: a single pair
puts no bound on the noise), ``unresolved`` measures another pair while ``max_pairs`` and the
budget allow, and is the verdict when they run out. At the end a candidate resolved cheaper whose
loss tracks the reference trend
(:func:`~lightning_green.policy.loss_trajectory.probe_loss_check`) is adopted; among several,
the earlier in :data:`~lightning_green.policy.precision_plan.PRECISIONS` unless another is
resolved cheaper than it (its interval entirely below). Unresolved means staying.

**Replication on the estimate.** Where the energy is the CPU-time estimate, the noise is
one-sided and comes in regimes: a competing process inflates the CPU time of whatever runs while
it holds the cores, for seconds at a time, longer than a pair of windows, and it can hit one
setting harder than the other (multi-threaded fp32 kernels spin at their barriers, bf16's
single-threaded conversions do not). One probe can then resolve a difference that is a property
of that stretch of load, not of the setting (measured here: bf16 resolved 0.36x "cheaper" in
the first seconds under a busy process, 1.3x costlier for the rest of the run). So on the
estimate a candidate resolved cheaper (and no slower) is not adopted at once: it is probed
again from the next epoch (``to_confirm``) and adopted only if the second probe resolves it
cheaper too; otherwise it is dropped. Measured energy (NVML, RAPL) adopts on one probe.

**Budget** (:class:`~lightning_green.policy.paired_windows.ProbeBudget`): the energy of the
steps trained at a candidate precision while probing (warm-up steps included; reference windows
are ordinary training and cost nothing extra) may reach ``probe_budget`` of a *low* projection
of the run's energy: everything it spent so far (probes included) plus its planned steps still
to come at the lower quartile of the base precision's window costs per step (without a plan: of
the energy spent so far). Noise in a CPU-time estimate only adds time, and it comes in stretches:
probing during one (measured: the first epochs under a busy process read at up to 15x the
rest) spends inflated joules, and a projection at the inflated rate would have allowed them
(probing reached 12.6 % of such a run); against the low projection the share of the run the
probes take stays within the budget as long as the rest of the run costs no less than its
cheaper windows did. A candidate window is only started when its estimated energy still fits
(the first from the reference window's energy per step, later ones as its dearest so far), and
a probe only starts when two candidate windows fit; otherwise the policy says so once
(``no_budget``) and waits for the budget to grow. A window can cost more than estimated (a
burst of load): a candidate segment is cut, back to the reference, as soon as the probing
energy reaches the allowance, so the budget is overrun by at most one recorded step group.

**Paid as it goes.** A run can end at any step (a stopper, a target accuracy reached), and what
probing cost by then is what the user paid for it. So a candidate window also starts only if
the probing energy, the windows asked for included, stays within ``probe_budget`` of the energy
the run has recorded by their end: a probe starts once the run has spent about 20 times what
two candidate windows cost, and a candidate's next pair waits, on reference windows (ordinary
training), until the run has spent enough again. Measured on the digits benchmark under load
before this rule: a run that reached its target in 6 epochs of a 40-epoch plan had spent 26 %
of its energy in bf16 probe windows, allowed by the projection to 40 epochs.

The state it works on belongs to the policy and is saved by it.
"""

from __future__ import annotations

from typing import Any

from lightning_green.keys import PRECISION_PROBE_SHARE
from lightning_green.policy._util import median
from lightning_green.policy.loss_trajectory import new_acc, probe_loss_check
from lightning_green.policy.paired_windows import (
    CANDIDATE,
    REFERENCE,
    ProbeBudget,
    compare_interleaved,
)
from lightning_green.policy.precision_plan import PRECISIONS, PrecisionDecision, PrecisionReason

__all__ = [
    "MIN_PAIRS",
    "ProbeRunner",
    "energy_comparable",
    "new_probe",
    "no_budget_text",
    "probe_cost",
    "probing_off_text",
    "too_short_text",
]

MIN_PAIRS = 2
"""Candidate windows a probe must be able to afford before it starts (a bound needs two pairs)."""


def energy_comparable(window: dict[str, Any]) -> bool:
    """Whether a closed window's energy can be compared with others': measured whole, and some.

    A window with a measurement fault inside it (``faults``: an NVML error, a counter reset) or
    that measured no energy at all says nothing about its precision's cost per sample.

    Example:
        >>> energy_comparable({"energy_j": 2.0, "faults": 0.0}), energy_comparable({"energy_j": 0.0})
        (True, False)
    """
    return float(window.get("faults", 0.0)) == 0.0 and float(window["energy_j"]) > 0.0


def new_probe(base: str, candidates: list[str]) -> dict[str, Any]:
    """A probe of ``candidates`` against ``base`` (plain, JSON-able data), starting on a reference."""
    return {
        "base": base,
        "queue": list(candidates),
        "cand": None,
        "role": REFERENCE,
        "filled": False,  # whether the current segment has measured its window
        "roles": [],
        "j": [],
        "s": [],  # wall seconds per sample of each window (the estimate cannot see static power)
        "refs": [],  # the candidate's reference windows (their loss sums, for the trend)
        "cand_loss": new_acc(),
        "seg_j": 0.0,  # energy of the candidate segment in progress, warm-up included
        "cand_max_j": 0.0,  # the dearest of the candidate's segments so far
        "ref_step_j": None,  # the last reference window's energy per step
        "ref_steps": 0.0,
    }


class ProbeRunner:
    """Mixin of :class:`~lightning_green.policy.precision.PrecisionPolicy`: probing and its budget."""

    _banned: dict[str, int]
    _unconfirmed: dict[str, int]
    _current: str
    _j: dict[str, float]
    _estimated: bool
    _outcomes: dict[str, dict[str, Any]]
    _pending: list[str]
    _previous: list[str]
    _probe: dict[str, Any] | None
    _probe_j: dict[str, float]
    _probe_samples: dict[str, int]
    _probe_steps: int
    _budget_noted: bool
    _too_short_for: float | None
    _step: int
    _train_j: float
    _windows: list[dict[str, Any]]
    confidence: float
    cooldown_epochs: int
    loss_noise_z: float
    loss_tolerance: float
    max_pairs: int
    probe_budget: float
    switch_margin: float
    warmup_steps: int

    def _emit(self, precision: str, reason: PrecisionReason, details: dict[str, Any]) -> PrecisionDecision:
        self._current = precision
        return PrecisionDecision(precision, reason, details)

    # ------------------------------------------------------------------ recording

    def _segment_precision(self) -> str | None:
        probe = self._probe
        if probe is None:
            return None
        return probe["cand"] if probe["role"] == CANDIDATE else probe["base"]

    def _probe_record(
        self, prec: str, energy_j: float, samples: int, steps: int, window: dict[str, Any] | None
    ) -> None:
        """Book steps at ``prec`` (and the window they completed, if any) into the probe."""
        probe = self._probe
        if probe is None or prec != self._segment_precision():
            return
        if probe["role"] == CANDIDATE:
            probe["seg_j"] += energy_j
            self._probe_steps += steps
            self._probe_j[prec] = self._probe_j.get(prec, 0.0) + energy_j
            self._probe_samples[prec] = self._probe_samples.get(prec, 0) + samples
        if window is None or probe["filled"]:
            return
        probe["filled"] = True
        probe["roles"].append(probe["role"])
        probe["j"].append(window["energy_j"] / window["samples"])
        probe["s"].append(window["duration_s"] / window["samples"])
        if probe["role"] == REFERENCE:
            probe["ref_step_j"], probe["ref_steps"] = window["energy_j"] / window["steps"], window["steps"]
            if window["loss_n"] > 0:
                probe["refs"].append({k: window[k] for k in new_acc()})
        else:
            probe["cand_max_j"], probe["seg_j"] = max(probe["cand_max_j"], probe["seg_j"]), 0.0

    # ------------------------------------------------------------------ budget

    def _projected_j(self, planned_steps: float | None) -> float:
        """A low projection of the run's energy: what it spent so far, and its rest at a low rate.

        The rest (planned steps not yet trained) is charged at the lower quartile of the base
        precision's window costs per step, at most the mean rate so far: noise in a CPU-time
        estimate only adds time, so this is close to the cost of the work itself, and a stretch of
        load that inflates the readings while probing cannot inflate the run the budget is a share
        of. Without a plan, the energy recorded so far.
        """
        spent = self._train_j
        if planned_steps is None or self._step <= 0:
            return spent
        base = self._probe["base"] if self._probe is not None else self._current
        kept = [w for w in self._windows if w["precision"] == base and energy_comparable(w)]
        rates = sorted(w["energy_j"] / w["steps"] for w in kept)
        rate = spent / self._step
        if rates:
            rate = min(rate, rates[(len(rates) - 1) // 4])
        return spent + max(float(planned_steps) - self._step, 0.0) * rate

    def _ends_first(self, pairs: int, steps_per_window: float, planned_steps: float | None) -> bool:
        """Whether the planned run ends before ``pairs`` more candidate/reference pairs complete.

        A candidate window the run does not finish is wasted energy and leaves the last steps at a
        precision that was never adopted.
        """
        need = pairs * 2 * (self.warmup_steps + steps_per_window)
        return planned_steps is not None and self._step + need > planned_steps

    def _budget_spent(self, planned_steps: float | None) -> bool:
        """Whether the probing energy has reached the allowance (a candidate segment is then cut)."""
        return sum(self._probe_j.values()) >= self.probe_allowance_j(planned_steps)

    def probe_allowance_j(self, planned_steps: float | None) -> float:
        """Joules probing may take: ``probe_budget`` of the run's projected (unplanned: spent) energy."""
        return ProbeBudget(self.probe_budget).allowance_j(self._projected_j(planned_steps))

    def _affords(self, windows: int, window_j: float | None, planned_steps: float | None) -> bool:
        if window_j is None:
            return False
        return ProbeBudget(self.probe_budget).affords(
            next_probe_j=windows * window_j,
            spent_probe_j=sum(self._probe_j.values()),
            projected_run_j=self._projected_j(planned_steps),
        )

    def _paced(self, windows: int, window_j: float | None) -> bool:
        """Whether ``windows`` more candidate windows keep probing within its share of the energy so far.

        The run may end at any moment (a stopper, a target reached), so probing is paid as it
        goes: the probing energy, these windows included, stays within ``probe_budget`` of the
        energy the run has recorded by their end.
        """
        if window_j is None:
            return False
        return ProbeBudget(self.probe_budget).paced(
            next_probe_j=windows * window_j,
            spent_probe_j=sum(self._probe_j.values()),
            spent_run_j=self._train_j,
        )

    def _first_window_j(self, step_j: float | None, steps: float) -> float | None:
        """A candidate segment's energy estimated from the reference: warm-up plus one window."""
        return None if step_j is None else step_j * (steps + self.warmup_steps)

    def _budget_figures(self, planned_steps: float | None, window_j: float | None) -> dict[str, Any]:
        return {
            "probe_allowance_j": self.probe_allowance_j(planned_steps),
            "probe_spent_j": sum(self._probe_j.values()),
            "probe_min_j": None if window_j is None else MIN_PAIRS * window_j,
            "planned_steps": planned_steps,
            "probe_budget": self.probe_budget,
        }

    def _start_or_wait(
        self, candidates: list[str], details: dict[str, Any], planned_steps: float | None
    ) -> PrecisionDecision | None:
        """Start a probe of ``candidates`` if two candidate windows fit the budget and the plan, else wait.

        Returns None when the probe starts. With ``probe_budget=0`` probing is off: said once
        (``probing_off``), the candidates dropped. Otherwise a wait keeps them: for the budget
        (``no_budget``, said once), for a longer plan (``too_short``, once per plan), or until the
        energy spent pays for the windows.
        """
        if self.probe_budget == 0:
            return self._emit(
                self._current,
                PrecisionReason.PROBING_OFF,
                {**details, "candidates": candidates, "probe_budget": 0.0},
            )
        recent = [w for w in self._windows if w["precision"] == self._current and energy_comparable(w)][-1:]
        window_j = (
            self._first_window_j(recent[0]["energy_j"] / recent[0]["steps"], recent[0]["steps"])
            if recent
            else None
        )
        if window_j is not None and not self._affords(MIN_PAIRS, window_j, planned_steps):
            self._pending += candidates
            self._too_short_for = None  # the budget is what stops it (said once as no_budget)
            if self._budget_noted:
                return self._emit(self._current, PrecisionReason.KEEP, details)
            self._budget_noted = True
            figures = self._budget_figures(planned_steps, window_j)
            return self._emit(
                self._current, PrecisionReason.NO_BUDGET, {**details, "candidates": candidates, **figures}
            )
        if (
            recent
            and planned_steps is not None
            and self._ends_first(MIN_PAIRS, recent[0]["steps"], planned_steps)
        ):
            return self._too_short(candidates, details, recent[0]["steps"], planned_steps)
        self._too_short_for = None
        if not self._paced(MIN_PAIRS, window_j):  # no window yet, or not yet paid for
            self._pending += candidates
            return self._emit(self._current, PrecisionReason.KEEP, details)
        self._probe = new_probe(self._current, candidates)
        self._outcomes = {}
        return None

    def _too_short(
        self,
        candidates: list[str],
        details: dict[str, Any],
        steps_per_window: float,
        planned_steps: float,
    ) -> PrecisionDecision:
        """Not probing ``candidates``: the planned run ends first. They are kept for a longer plan.

        Said once per plan (``too_short``, with the steps needed and left; a probe ending early
        reports its verdicts with it); a run continued to a longer plan still too short says so again.
        """
        self._pending += [p for p in candidates if p not in self._pending]
        noted, self._too_short_for = self._too_short_for, float(planned_steps)
        figures = {
            "candidates": list(candidates),
            "planned_steps": planned_steps,
            "steps_left": max(float(planned_steps) - self._step, 0.0),
            "steps_needed": MIN_PAIRS * 2 * (self.warmup_steps + steps_per_window),
        }
        if self._probe is not None:  # the probe ends: its verdicts so far go with the reason
            return self._finish({**details, **figures}, PrecisionReason.TOO_SHORT)
        if noted is not None and planned_steps <= noted:
            return self._emit(self._current, PrecisionReason.KEEP, details)
        return self._emit(self._current, PrecisionReason.TOO_SHORT, {**details, **figures})

    @property
    def too_short_for_probing(self) -> tuple[str, ...]:
        """The candidates waiting for a longer plan (the last decision was ``too_short``), else empty."""
        if self._too_short_for is None or self._probe is not None:
            return ()
        return tuple(p for p in PRECISIONS if p in self._pending and p not in self._banned)

    # ------------------------------------------------------------------ deciding

    def _advance(self, ep: int, details: dict[str, Any], planned_steps: float | None) -> PrecisionDecision:
        probe = self._probe
        assert probe is not None
        base, cand = probe["base"], probe["cand"]
        if probe["role"] == CANDIDATE and not probe["filled"] and self._budget_spent(planned_steps):
            probe["role"], probe["seg_j"] = REFERENCE, 0.0  # cut: its window is not measured
            spent = {
                "probe_spent_j": sum(self._probe_j.values()),
                "probe_allowance_j": self.probe_allowance_j(planned_steps),
            }
            return self._emit(
                base, PrecisionReason.PROBE, {**details, "segment": REFERENCE, "cut": "budget", **spent}
            )
        if not probe["filled"]:
            segment = self._segment_precision()
            assert segment is not None
            return self._emit(segment, PrecisionReason.PROBE, {**details, "segment": probe["role"]})
        if probe["role"] == CANDIDATE:  # a candidate window measured: back to the reference
            probe["role"], probe["filled"] = REFERENCE, False
            return self._emit(base, PrecisionReason.PROBE, {**details, "segment": REFERENCE})
        if cand is not None:
            comparison = compare_interleaved(
                probe["roles"], probe["j"], min_saving=self.switch_margin, confidence=self.confidence
            )
            budget_ok = self._affords(1, probe["cand_max_j"], planned_steps)
            room = not self._ends_first(1, probe["ref_steps"], planned_steps)
            if not comparison.resolved and comparison.pairs < self.max_pairs and budget_ok and room:
                if not self._paced(1, probe["cand_max_j"]):  # another reference window meanwhile
                    probe["filled"] = False
                    return self._emit(base, PrecisionReason.PROBE, {**details, "segment": REFERENCE})
                probe["role"], probe["filled"] = CANDIDATE, False
                return self._emit(cand, PrecisionReason.PROBE, {**details, "segment": CANDIDATE})
            stopped_by = "budget" if not budget_ok else "max_pairs" if room else "end"
            reason, figures = self._judge(cand, comparison.to_dict(), ep, stopped_by)
            probe.update(new_probe(base, probe["queue"]))
            if probe["queue"]:
                return self._emit(base, reason, {**details, **figures})
            return self._finish({**details, **figures}, reason)
        if not probe["queue"]:
            return self._finish(details)
        if planned_steps is not None and self._ends_first(MIN_PAIRS, probe["ref_steps"], planned_steps):
            rest, probe["queue"] = probe["queue"], []
            return self._too_short(rest, details, probe["ref_steps"], planned_steps)
        window_j = self._first_window_j(probe["ref_step_j"], probe["ref_steps"])
        affordable = self._affords(MIN_PAIRS, window_j, planned_steps)
        if not affordable or not self._paced(MIN_PAIRS, window_j):  # the rest waits
            self._pending, probe["queue"] = self._pending + probe["queue"], []
            if affordable:
                return self._finish(details)  # started once paid for
            figures = {"candidates": list(self._pending), **self._budget_figures(planned_steps, window_j)}
            noted, self._budget_noted = self._budget_noted, True
            return self._finish(
                {**details, **figures}, PrecisionReason.KEEP if noted else PrecisionReason.NO_BUDGET
            )
        probe["cand"] = probe["queue"].pop(0)
        probe["roles"], probe["j"], probe["s"] = [REFERENCE], [probe["j"][-1]], [probe["s"][-1]]
        probe["role"], probe["filled"] = CANDIDATE, False
        return self._emit(probe["cand"], PrecisionReason.PROBE, {**details, "segment": CANDIDATE})

    def _judge(
        self, cand: str, comparison: dict[str, Any], ep: int, stopped_by: str
    ) -> tuple[PrecisionReason, dict[str, Any]]:
        """The candidate's outcome (saved in :attr:`_outcomes`): the reason to report and its figures."""
        probe = self._probe
        assert probe is not None
        refs = [j for j, role in zip(probe["j"], probe["roles"], strict=True) if role == REFERENCE]
        cands = [j for j, role in zip(probe["j"], probe["roles"], strict=True) if role == CANDIDATE]
        self._j[probe["base"]] = median(refs)
        if cands:  # none when its first window was cut by the budget
            self._j[cand] = median(cands)
        verdict = comparison["verdict"]
        outcome: dict[str, Any] = {"status": verdict, **comparison}
        first_epoch = self._unconfirmed.pop(cand, None)  # a first resolution waits for this one
        if verdict in ("unresolved", "insufficient"):
            outcome["stopped_by"] = stopped_by  # max_pairs, budget or the planned end
        reason = {
            "cheaper": PrecisionReason.PROBE,
            "costlier": PrecisionReason.TOO_EXPENSIVE,
        }.get(verdict, PrecisionReason.UNRESOLVED)
        if verdict == "cheaper" and self._estimated and not self._not_slower(probe, outcome):
            outcome["status"] = "slower"  # estimated joules only: a slower setting is never adopted
            reason = PrecisionReason.UNRESOLVED
        elif verdict == "cheaper":
            acc, refs_acc = probe["cand_loss"], probe["refs"]
            if acc["loss_n"] <= 0 or len(refs_acc) < 2:
                outcome["status"] = "unverified"  # no loss to check: never adopted
                reason = PrecisionReason.UNRESOLVED
            else:
                passed, figures = probe_loss_check(acc, refs_acc, self.loss_tolerance, self.loss_noise_z)
                outcome.update(figures)
                if not passed:
                    outcome["status"] = "loss_deviation"
                    outcome["banned_until_epoch"] = ep + self.cooldown_epochs
                    self._banned[cand] = ep + self.cooldown_epochs
                    reason = PrecisionReason.LOSS_DEVIATION
                elif self._estimated and first_epoch is None:
                    outcome["status"] = "to_confirm"  # estimate: the saving must replicate later
                    outcome["confirm_from_epoch"] = ep + 1
                    self._unconfirmed[cand] = ep
                    reason = PrecisionReason.TO_CONFIRM
                elif self._estimated:
                    outcome["first_resolved_epoch"] = first_epoch
        self._outcomes[cand] = outcome
        return reason, {"candidate": cand, "comparison": outcome}

    def _not_slower(self, probe: dict[str, Any], outcome: dict[str, Any]) -> bool:
        """Whether the candidate is resolved no slower per sample than the base (within the margin).

        Asked only when the energy is the CPU-time estimate: it counts busy cores and cannot see
        the static power a slower setting keeps drawing (bf16 on a CPU without bf16 units runs
        about 3x longer on fewer busy threads), so a saving it shows must not come with more time.
        """
        seconds = probe["s"]
        if min(seconds, default=0.0) <= 0.0:  # a window of no measurable time cannot be compared
            return False
        time = compare_interleaved(probe["roles"], seconds, min_saving=0.0, confidence=self.confidence)
        outcome["wall_time"] = time.to_dict()
        return time.ratio_high is not None and time.ratio_high <= 1.0 + self.switch_margin

    def _finish(
        self, details: dict[str, Any], otherwise: PrecisionReason = PrecisionReason.KEEP
    ) -> PrecisionDecision:
        """End the probe: adopt the preferred candidate resolved cheaper, else keep the base.

        ``otherwise`` is the reason reported when nothing is adopted (the last candidate's verdict).
        """
        probe = self._probe
        assert probe is not None
        base = probe["base"]
        self._probe = None
        outcomes = {p: dict(o) for p, o in self._outcomes.items()}
        # A probe that ends before any candidate was judged (it waits to be paid for) has no outcome
        info = {**details, "outcomes": outcomes, "j_per_sample": dict(self._j)} if outcomes else details
        again = [p for p in PRECISIONS if outcomes.get(p, {}).get("status") == "to_confirm"]
        self._pending += [p for p in again if p not in self._pending]
        cheaper = [p for p in PRECISIONS if outcomes.get(p, {}).get("status") == "cheaper"]
        cheaper = [p for p in cheaper if p not in self._banned]
        if not cheaper:
            keep = PrecisionReason.KEEP if otherwise is PrecisionReason.PROBE else otherwise
            return self._emit(base, keep, info)
        best = cheaper[0]
        for other in cheaper[1:]:  # a later precision only when resolved cheaper than the earlier
            if outcomes[other]["ratio_high"] < outcomes[best]["ratio_low"]:
                best = other
        self._previous.append(base)
        chosen = outcomes[best]
        return self._emit(
            best,
            PrecisionReason.CHEAPER,
            {**info, "candidate": best, "saving": 1.0 - chosen["ratio"], "comparison": chosen},
        )


def probe_cost(
    policy: ProbeRunner | None, base_j_per_sample: float | None, run_j: float, pue: float = 1.0
) -> dict[str, Any]:
    """The summary's probing figures: ``precision_probe_j``, ``..._extra_j`` (with ``pue``), ``..._share``.

    Args:
        policy: The precision policy (None before fit: nothing probed).
        base_j_per_sample: The baseline's joules per sample (before PUE), for the extra cost: what
            the probed steps cost beyond the same samples at the baseline (None when unknown).
        run_j: The run's energy so far before PUE, for the share (None when 0).
        pue: The PUE the joules are reported with, like the summary's totals.
    """
    spent = policy.probe_energy_j() if policy is not None else {}
    samples = policy.probe_samples() if policy is not None else {}
    extra = None
    if base_j_per_sample is not None:
        extra = pue * sum(j - samples.get(p, 0) * base_j_per_sample for p, j in spent.items())
    total = sum(spent.values())
    return {
        "precision_probe_j": pue * total,
        "precision_probe_extra_j": extra,
        PRECISION_PROBE_SHARE: total / run_j if run_j > 0 else None,
    }


def probing_off_text(decision: PrecisionDecision) -> str:
    """One line on a ``probing_off`` decision: ``probe_budget=0`` keeps the precision in use."""
    return f"probe_budget=0 turns probing off; training stays in {decision.precision}"


def too_short_text(decision: PrecisionDecision) -> str:
    """One line on a ``too_short`` decision: the steps two candidate windows need and those left.

    Example:
        >>> d = PrecisionDecision("32-true", PrecisionReason.TOO_SHORT,
        ...     {"candidates": ["bf16-mixed"], "steps_needed": 24.0, "steps_left": 20.0})
        >>> too_short_text(d)[:62]
        'two windows of each candidate (bf16-mixed) with their referenc'
    """
    d = decision.details
    return (
        f"two windows of each candidate ({', '.join(d['candidates'])}) with their reference windows need "
        f"{d['steps_needed']:.0f} steps, the planned run has {d['steps_left']:.0f} left; training stays "
        f"in {decision.precision} (a fit continued to a longer plan probes them)"
    )


def no_budget_text(decision: PrecisionDecision) -> str:
    """One line on a ``no_budget`` decision: what two candidate windows need and what is allowed."""
    d = decision.details
    need, allowed, spent = d.get("probe_min_j"), d["probe_allowance_j"], d["probe_spent_j"]
    plan = (
        "the planned run"
        if d.get("planned_steps") is not None
        else "the energy spent so far (no planned length)"
    )
    return (
        f"two windows of each candidate ({', '.join(d['candidates'])}) need about {need or 0.0:.3g} J, "
        f"more than the {allowed - spent:.3g} J left of the probing budget ({d['probe_budget']:.0%} of "
        f"{plan}); training stays in {decision.precision} unless the projected run grows enough"
    )
