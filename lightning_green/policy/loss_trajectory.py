"""Loss trajectory checks of the precision policy: loss accumulators, trend line, two checks.

Training steps are summed into accumulators: plain, JSON-able dicts of floats holding energy,
samples, duration, steps and GradScaler overflows next to the count, sum, sum of squares and
sum of step numbers of the finite losses. From them:

- :func:`loss_stats`: mean loss, per-step loss noise (variance pooled within accumulators) and
  mean step;
- :func:`trend_at`: a weighted least-squares line through windows' mean losses over step
  number, the local trend of the reference run;
- :func:`probe_loss_check`: a candidate's mean loss against that trend at its mean step;
- :func:`loss_jump`: a window's mean loss against the median of the recent windows' means.

Both checks allow ``tolerance × |reference|`` plus ``noise_z`` standard errors of the
difference, and only a higher loss counts against a precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence

from lightning_green.policy._util import median

__all__ = ["add_losses", "loss_jump", "loss_stats", "new_acc", "probe_loss_check", "trend_at"]


def new_acc() -> dict[str, float]:
    """An empty accumulator (all sums zero)."""
    return {
        "energy_j": 0.0,
        "samples": 0.0,
        "duration_s": 0.0,
        "steps": 0.0,
        "loss_n": 0.0,
        "loss_sum": 0.0,
        "loss_sq": 0.0,
        "loss_step_sum": 0.0,
        "overflows": 0.0,
    }


def add_losses(acc: MutableMapping[str, float], finite: Sequence[float], mid_step: float) -> None:
    """Add finite losses to an accumulator, each counted at step ``mid_step``."""
    acc["loss_n"] += len(finite)
    acc["loss_sum"] += math.fsum(finite)
    acc["loss_sq"] += math.fsum(v * v for v in finite)
    acc["loss_step_sum"] += mid_step * len(finite)


def loss_stats(items: Sequence[Mapping[str, float]]) -> tuple[float, float, float, float]:
    """(n, mean, pooled within-item variance, mean step) over accumulators; NaNs when empty."""
    n = sum(w["loss_n"] for w in items)
    if n <= 0:
        return 0.0, math.nan, math.nan, math.nan
    total = sum(w["loss_sum"] for w in items)
    ss_within, dof = 0.0, 0.0
    for w in items:
        if w["loss_n"] > 1:
            ss_within += max(w["loss_sq"] - w["loss_sum"] ** 2 / w["loss_n"], 0.0)
            dof += w["loss_n"] - 1
    var = ss_within / dof if dof > 0 else 0.0
    return n, total / n, var, sum(w["loss_step_sum"] for w in items) / n


def trend_at(windows: Sequence[Mapping[str, float]], step: float) -> float:
    """Weighted least-squares line through the windows' mean losses, evaluated at ``step``."""
    pts = [(w["loss_step_sum"] / w["loss_n"], w["loss_sum"] / w["loss_n"], w["loss_n"]) for w in windows]
    sw = sum(p[2] for p in pts)
    mx = sum(p[0] * p[2] for p in pts) / sw
    my = sum(p[1] * p[2] for p in pts) / sw
    sxx = sum(p[2] * (p[0] - mx) ** 2 for p in pts)
    if sxx <= 0:
        return my
    slope = sum(p[2] * (p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return my + slope * (step - mx)


def _allowed_excess(
    level: float, var: float, n_a: float, n_b: float, tolerance: float, noise_z: float
) -> float:
    return tolerance * abs(level) + noise_z * math.sqrt(var * (1.0 / n_a + 1.0 / n_b))


def probe_loss_check(
    probe: Mapping[str, float], references: Sequence[Mapping[str, float]], tolerance: float, noise_z: float
) -> tuple[bool, dict[str, float]]:
    """Whether a probe's mean loss stays on the trend of the reference windows around it.

    Args:
        probe: The probe's loss accumulator (at least one loss).
        references: Reference windows before and after the probe (with losses).
        tolerance: Relative excess over the trend allowed.
        noise_z: Standard errors of the difference allowed on top.

    Returns:
        ``(passed, figures)``, figures: ``probe_loss``, ``reference_trend_loss``,
        ``allowed_excess``.
    """
    n_c, mean_c, _, step_c = loss_stats([probe])
    n_r, _, var_r, _ = loss_stats(references)
    trend = trend_at(references, step_c)
    allowed = _allowed_excess(trend, var_r, n_c, n_r, tolerance, noise_z)
    figures = {"probe_loss": mean_c, "reference_trend_loss": trend, "allowed_excess": allowed}
    return not mean_c - trend > allowed, figures


def loss_jump(
    window: Mapping[str, float], recent: Sequence[Mapping[str, float]], tolerance: float, noise_z: float
) -> dict[str, float] | None:
    """Whether a window's mean loss jumped above the median of the recent windows' means.

    Args:
        window: The new window (at least one loss).
        recent: The windows before it (each with losses; at least one).
        tolerance: Relative excess over the recent median allowed.
        noise_z: Standard errors of the difference allowed on top.

    Returns:
        ``window_loss``, ``recent_loss`` and ``allowed_excess`` when it jumped, else None.
    """
    ref = median([w["loss_sum"] / w["loss_n"] for w in recent])
    n_ref, _, var, _ = loss_stats(recent)
    mean = window["loss_sum"] / window["loss_n"]
    allowed = _allowed_excess(ref, var, window["loss_n"], n_ref, tolerance, noise_z)
    if mean - ref > allowed:
        return {"window_loss": mean, "recent_loss": ref, "allowed_excess": allowed}
    return None
