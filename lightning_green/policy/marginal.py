"""Marginal gain per kWh: what the run buys now, what it bought on average, what it will still buy.

Three rates, all in metric units per unit of cost and oriented so that improvement is positive:

- the **recent** rate, a least-squares slope of the metric against cumulative cost over a window
  of recent checks (single-epoch differences are far too noisy to act on);
- the **average** rate so far, from the first check to the present (the fitted level now):
  the reference of the scale-free threshold;
- the **projected** rate: the gain a learning-curve fit (:mod:`.learning_curve`) still expects
  between now and the planned horizon, divided by the projected cost of getting there. Of the
  families that pass the quality checks, the most optimistic one is used, and it is optimistic by
  one standard error of its projection (noisy or short histories give wide projections, so they
  are not stopped on a lucky fit); when no family passes, the straight line through the current
  segment, also optimistic by one standard error, is extrapolated instead.

The ratio projected / average is the *relative gain*: "a further kWh buys this fraction of what
the average kWh bought so far", the same for a loss in nats and an accuracy in points, for a run
of joules and one of megawatt-hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lightning_green.policy.history import Segment, segment_of
from lightning_green.policy.learning_curve import (
    FAMILIES,
    CurveFit,
    NormalisedFit,
    acceptable,
    fit_family,
    grid_fit,
    linear_slope,
    noise_sd,
)

__all__ = [
    "MAX_FIT_POINTS",
    "MarginalAssessment",
    "assess_marginal",
    "assess_segment",
    "linear_slope",
    "recent_window",
]

MAX_FIT_POINTS = 256
"""Most checks a segment is fitted on: a longer segment is represented by this many evenly spaced
checks, its first and latest included (:func:`~lightning_green.policy.history.segment_indices`),
so a decision costs the same at check 300 and at check 300,000. 256 points resolve a
three-parameter curve many times over; what thinning loses is precision (the standard errors of a
fit to ``n`` checks shrink as ``1 / sqrt(n)``, here no further than ``1 / sqrt(256)``), which only
makes the optimistic projection more cautious. Segments of up to 256 checks are fitted whole."""
MIN_FIT_POINTS = 6
"""Checks in the current segment needed before a learning curve is fitted."""
RECENT_WINDOW_MIN = 5
"""Smallest window (checks) of the recent slope."""
RECENT_WINDOW_FRACTION = 1.0 / 3.0
"""The recent window covers this fraction of the current segment, at least ``RECENT_WINDOW_MIN``."""
OPTIMISM_SE = 1.0
"""Standard errors added to projections (and taken off the recent slope in the safety check)."""


@dataclass(frozen=True)
class MarginalAssessment:
    """Rates of gain per unit cost at one check (metric units per kWh, improvement positive).

    Attributes:
        gain_per_kwh: Recent rate (slope over the recent window), or ``None``.
        gain_per_kwh_se: Its standard error, or ``None``.
        average_gain_per_kwh: Average rate since the start of the run, or ``None``.
        projected_gain: Gain still expected up to the horizon (optimistic by ``OPTIMISM_SE``).
        projected_cost_kwh: Projected cost up to the horizon.
        projected_gain_per_kwh: ``projected_gain / projected_cost_kwh``.
        relative_gain: ``projected_gain_per_kwh / average_gain_per_kwh`` (``None`` when the run
            has not improved on average, or nothing is left to project).
        fit: The learning-curve fit used, or ``None`` (straight line extrapolated, or not projected).
    """

    gain_per_kwh: float | None = None
    gain_per_kwh_se: float | None = None
    average_gain_per_kwh: float | None = None
    projected_gain: float | None = None
    projected_cost_kwh: float | None = None
    projected_gain_per_kwh: float | None = None
    relative_gain: float | None = None
    fit: CurveFit | None = None

    def recent_rate_lower_bound(self) -> float | None:
        """The recent rate minus ``OPTIMISM_SE`` standard errors: what the run surely still buys."""
        if self.gain_per_kwh is None or self.gain_per_kwh_se is None:
            return None
        return self.gain_per_kwh - OPTIMISM_SE * self.gain_per_kwh_se


def recent_window(n_points: int) -> int:
    """Number of checks in the recent window for a segment of ``n_points`` checks.

    Example:
        >>> recent_window(6), recent_window(30)
        (5, 10)
    """
    return min(n_points, max(RECENT_WINDOW_MIN, round(n_points * RECENT_WINDOW_FRACTION)))


def _best_fit(
    x: np.ndarray, y: np.ndarray, window: int, recent: tuple[float, float], x_h: float
) -> tuple[NormalisedFit, float, float] | None:
    """The acceptable fit projecting the most gain up to ``x_h`` (optimistic by ``OPTIMISM_SE``).

    Several families often describe the same history equally well and extrapolate differently;
    taking the most optimistic one means the policy stops only when every acceptable
    extrapolation agrees that the rest of the run is not worth its cost. Every family is fitted on
    its grid (:func:`~.learning_curve.grid_fit`); the chosen one is then refined with
    ``curve_fit`` (:func:`~.learning_curve.fit_family`), which keeps a decision within a few
    milliseconds.

    Returns:
        ``(fit, gain, standard_error)`` in normalised units, or ``None`` if no family passes.
    """
    noise = noise_sd(y)
    recent_x = x[-window:]
    best: tuple[float, NormalisedFit] | None = None
    for family in FAMILIES.values():
        fit = grid_fit(family, x, y)
        if fit is None or not acceptable(fit, noise, recent_x, recent):
            continue
        gain, se = fit.gain(1.0, x_h)
        if best is None or gain + OPTIMISM_SE * se > best[0]:
            best = (gain + OPTIMISM_SE * se, fit)
    if best is None:
        return None
    coarse = best[1]
    fit = fit_family(coarse.family, x, y, start=coarse.params)
    if fit is None or not acceptable(fit, noise, recent_x, recent):
        fit = coarse
    gain, se = fit.gain(1.0, x_h)
    return fit, gain, se


def assess_marginal(
    costs_kwh: np.ndarray,
    values: np.ndarray,
    *,
    segment_start: int,
    horizon_cost_kwh: float,
    sign: float,
    project: bool = True,
) -> MarginalAssessment:
    """Recent, average and projected gain per unit cost at the latest check.

    The segment is summarised by at most :data:`MAX_FIT_POINTS` points (:func:`segment_of`), as
    :class:`~lightning_green.policy.StoppingPolicy` does incrementally; see :func:`assess_segment`.

    Args:
        costs_kwh: Cumulative cost at every (finite) check, non-decreasing.
        values: The metric at those checks, oriented so that higher is better.
        segment_start: Index of the first check of the current segment (after the last step-jump
            of the curve; 0 without one). The recent slope and the fit use the segment only.
        horizon_cost_kwh: Projected cost of the rest of the planned run.
        sign: +1 when higher is better, -1 when lower is better (to report the fit in the
            metric's own orientation).
        project: Fit the learning curve and project to the horizon (``False``: only the recent and
            average rates, which are cheap; the policy skips the fit while the marginal rule is held).

    Returns:
        The assessment (fields are ``None`` where there is too little data).
    """
    if len(values) < 2:
        return MarginalAssessment(projected_cost_kwh=horizon_cost_kwh)
    segment = segment_of(costs_kwh, values, segment_start, MAX_FIT_POINTS)
    return assess_segment(segment, horizon_cost_kwh=horizon_cost_kwh, sign=sign, project=project)


def assess_segment(
    segment: Segment,
    *,
    horizon_cost_kwh: float,
    sign: float,
    project: bool = True,
) -> MarginalAssessment:
    """Recent, average and projected gain per unit cost at the latest check, from a :class:`Segment`.

    The work is bounded by the number of points of the segment (at most :data:`MAX_FIT_POINTS`
    when it comes from :meth:`History.segment <lightning_green.policy.history.History.segment>`),
    not by the length of the run. A point is a check, or the mean of consecutive checks in a long
    segment; the recent window is a third of the points (at least :data:`RECENT_WINDOW_MIN`).

    Args:
        segment: The current segment of the finite checks (after the last step-jump or decay).
        horizon_cost_kwh: Projected cost of the rest of the planned run.
        sign: +1 when higher is better, -1 when lower is better.
        project: Fit the learning curve and project to the horizon.

    Returns:
        The assessment (fields are ``None`` where there is too little data).
    """
    if segment.n_total < 2:
        return MarginalAssessment(projected_cost_kwh=horizon_cost_kwh)
    c_now, c_ref = segment.cost_now_kwh, segment.cost_ref_kwh
    seg_c, seg_v = segment.costs_kwh, segment.values
    span = c_now - c_ref
    if span <= 0 or segment.n_checks < 2:
        return MarginalAssessment(projected_cost_kwh=horizon_cost_kwh)

    w = recent_window(len(seg_v))
    slope, slope_se, _ = linear_slope(seg_c[-w:], seg_v[-w:])
    seg_slope, seg_slope_se, seg_level = linear_slope(seg_c, seg_v)
    c_start, v_start = segment.cost_start_kwh, segment.value_start
    if not project:
        average = (seg_level - v_start) / (c_now - c_start) if c_now > c_start else None
        return MarginalAssessment(gain_per_kwh=slope, gain_per_kwh_se=slope_se, average_gain_per_kwh=average)

    best: tuple[NormalisedFit, float, float] | None = None
    x = (seg_c - c_ref) / span
    x_h = 1.0 + horizon_cost_kwh / span
    offset, scale = 0.0, 1.0
    keep = x > 1e-9  # a check at the reference cost itself carries no information on the shape
    n_fitted = 0
    if int(np.count_nonzero(keep)) >= MIN_FIT_POINTS:
        x, y_raw = x[keep], seg_v[keep]
        n_fitted = segment.n_total - int(segment.indices[keep][0])
        offset = float(np.median(y_raw))
        scale = float(y_raw.max() - y_raw.min()) or 1.0
        y = (y_raw - offset) / scale
        recent_x = (slope * span / scale, slope_se * span / scale)
        best = _best_fit(x, y, min(w, len(x)), recent_x, x_h)

    fit_out: CurveFit | None = None
    if best is not None:
        fit, gain, se = best
        projected_gain = (gain + OPTIMISM_SE * se) * scale
        level_now = offset + scale * float(fit.params[0])
        fit_out = CurveFit(
            family=fit.family.name,
            params=tuple(float(p) for p in fit.params),
            cost_ref_kwh=c_ref,
            cost_scale_kwh=span,
            metric_offset=sign * offset,
            metric_scale=scale,
            sign=sign,
            rmse=fit.rmse,
            n_points=n_fitted,
        )
    else:  # no family describes the segment: continue its straight line, optimistically
        se = seg_slope_se if math.isfinite(seg_slope_se) else abs(seg_slope)
        projected_gain = max(seg_slope + OPTIMISM_SE * se, 0.0) * horizon_cost_kwh
        level_now = seg_level

    average = (level_now - v_start) / (c_now - c_start) if c_now > c_start else None

    projected_rate = projected_gain / horizon_cost_kwh if horizon_cost_kwh > 0 else None
    relative = None
    if projected_rate is not None and average is not None and average > 0:
        relative = projected_rate / average
    return MarginalAssessment(
        gain_per_kwh=slope,
        gain_per_kwh_se=slope_se,
        average_gain_per_kwh=average,
        projected_gain=projected_gain,
        projected_cost_kwh=horizon_cost_kwh,
        projected_gain_per_kwh=projected_rate,
        relative_gain=relative,
        fit=fit_out,
    )
