"""Running a precision probe plan: measuring each segment, judging each probe, choosing.

:class:`ProbePlanRunner` is the part of
:class:`~lightning_green.policy.precision.PrecisionPolicy` that walks its probe plan
(:func:`~lightning_green.policy.precision_plan.probe_plan`): it waits for enough windows in
each segment, stops a probe early when it clearly costs more than the base, judges each probe's
loss against the reference trend once the reference after it is complete
(:func:`~lightning_green.policy.loss_trajectory.probe_loss_check`), and at the end of the plan
picks the cheapest precision that passed, if it saves more than the switch margin. The state it
works on (windows, plan, outcomes, bans) belongs to the policy and is saved by it.
"""

from __future__ import annotations

from typing import Any

from lightning_green.policy._util import median
from lightning_green.policy.loss_trajectory import probe_loss_check
from lightning_green.policy.precision_plan import PRECISIONS, PrecisionDecision, PrecisionReason, probe_plan

__all__ = ["ProbePlanRunner"]


class ProbePlanRunner:
    """Mixin of :class:`~lightning_green.policy.precision.PrecisionPolicy`: the probe plan's steps."""

    _banned: dict[str, int]
    _current: str
    _j: dict[str, float]
    _outcomes: dict[str, dict[str, Any]]
    _plan: list[list[str]]
    _plan_id: int
    _plan_losses: dict[str, dict[str, float]]
    _plan_pos: int
    _previous: list[str]
    _windows: list[dict[str, Any]]
    cooldown_epochs: int
    early_stop_margin: float
    loss_noise_z: float
    loss_tolerance: float
    probe_windows: int
    reference_windows: int
    switch_margin: float

    def _emit(self, precision: str, reason: PrecisionReason, details: dict[str, Any]) -> PrecisionDecision:
        self._current = precision
        return PrecisionDecision(precision, reason, details)

    def _start_plan(self, candidates: list[str]) -> None:
        plan = probe_plan(candidates, self._current)
        self._plan = [[s.precision, s.role] for s in plan]
        self._plan_pos = 0
        self._plan_id += 1
        self._plan_losses = {}
        self._outcomes = {}

    def _plan_windows(self, pos: int) -> list[dict[str, Any]]:
        prec = self._plan[pos][0]
        return [
            w
            for w in self._windows
            if w["plan_id"] == self._plan_id and w["plan_pos"] == pos and w["precision"] == prec
        ]

    def _base_j(self) -> float | None:
        base = self._plan[0][0]
        js = [
            w["energy_j"] / w["samples"]
            for pos, (p, role) in enumerate(self._plan)
            if role == "reference"
            for w in self._plan_windows(pos)
            if p == base
        ]
        return median(js) if js else None

    def _advance_plan(self, ep: int, details: dict[str, Any]) -> PrecisionDecision:
        base = self._plan[0][0]
        while True:
            prec, role = self._plan[self._plan_pos]
            windows = self._plan_windows(self._plan_pos)
            if role == "reference":
                if len(windows) < self.reference_windows:
                    return self._emit(base, PrecisionReason.PROBE, {**details, "segment": "reference"})
                prev = self._plan_pos - 1
                failed = None
                if prev >= 0 and self._plan[prev][0] not in self._outcomes:
                    failed = self._verdict(prev, ep)
                self._plan_pos += 1
                done = self._plan_pos >= len(self._plan)
                if failed is not None:
                    deviation = {**details, **failed}
                    if done:
                        final = self._finish_plan(deviation)
                        if final.reason is PrecisionReason.CHEAPER:  # an earlier candidate passed
                            return final
                    return self._emit(base, PrecisionReason.LOSS_DEVIATION, deviation)
                if done:
                    return self._finish_plan(details)
                continue
            # probe segment
            js = [w["energy_j"] / w["samples"] for w in windows]
            base_j = self._base_j()
            if js and base_j is not None and median(js) > base_j * (1.0 + self.early_stop_margin):
                self._outcomes[prec] = {"status": "too_expensive", "j_per_sample": median(js)}
                self._j[prec] = median(js)
                self._plan_pos += 1
                return self._emit(
                    base,
                    PrecisionReason.TOO_EXPENSIVE,
                    {**details, "candidate": prec, "j_per_sample": {base: base_j, prec: median(js)}},
                )
            if len(js) >= self.probe_windows:
                self._plan_pos += 1
                return self._emit(base, PrecisionReason.PROBE, {**details, "segment": "reference"})
            return self._emit(prec, PrecisionReason.PROBE, {**details, "segment": "probe"})

    def _verdict(self, probe_pos: int, ep: int) -> dict[str, Any] | None:
        """Judge the probe at ``probe_pos`` once the reference after it is complete.

        Returns details when the loss check failed (the candidate is banned), else None.
        """
        cand = self._plan[probe_pos][0]
        js = [w["energy_j"] / w["samples"] for w in self._plan_windows(probe_pos)]
        before = self._plan_windows(probe_pos - 1)[-self.reference_windows :]
        after = self._plan_windows(probe_pos + 1)[: self.reference_windows]
        refs = [w for w in before + after if w["loss_n"] > 0]
        probe_acc = self._plan_losses.get(str(probe_pos))
        if not js:
            self._outcomes[cand] = {"status": "unmeasured"}
            return None
        j = median(js)
        self._j[cand] = j
        if probe_acc is None or probe_acc["loss_n"] <= 0 or len(refs) < 2:
            self._outcomes[cand] = {"status": "unverified", "j_per_sample": j}
            return None
        passed, figures = probe_loss_check(probe_acc, refs, self.loss_tolerance, self.loss_noise_z)
        check = {"candidate": cand, **figures}
        if not passed:
            self._outcomes[cand] = {"status": "loss_deviation", "j_per_sample": j, **check}
            self._banned[cand] = ep + self.cooldown_epochs
            return {**check, "banned_until_epoch": ep + self.cooldown_epochs}
        self._outcomes[cand] = {"status": "ok", "j_per_sample": j, **check}
        return None

    def _finish_plan(self, details: dict[str, Any]) -> PrecisionDecision:
        base = self._plan[0][0]
        base_j = self._base_j()
        outcomes = {p: dict(o) for p, o in self._outcomes.items()}
        self._plan, self._plan_pos, self._plan_losses = [], 0, {}
        if base_j is None:
            return self._emit(base, PrecisionReason.KEEP, {**details, "outcomes": outcomes})
        self._j[base] = base_j
        passed = {
            p: o["j_per_sample"] for p, o in outcomes.items() if o["status"] == "ok" and p not in self._banned
        }
        info = {**details, "j_per_sample": {base: base_j, **passed}, "outcomes": outcomes}
        if passed:
            best = min(passed, key=lambda p: (passed[p], PRECISIONS.index(p)))
            saving = 1.0 - passed[best] / base_j
            if saving > self.switch_margin:
                self._previous.append(base)
                return self._emit(best, PrecisionReason.CHEAPER, {**info, "saving": saving})
        return self._emit(base, PrecisionReason.KEEP, info)
