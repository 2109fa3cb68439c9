"""Marginal gain per kWh: what the run buys now, what it bought so far, what it will still buy.

Three rates, all in metric units per unit of cost and oriented so that improvement is positive:

- the **recent** rate, a least-squares slope of the metric against cumulative cost over a window
  of recent checks (single-epoch differences are far too noisy to act on);
- the **average** rate so far: how much the best value of the metric improved on the first check,
  per unit of cost spent since (the reference of the scale-free threshold);
- the **projected** rate: the gain in the best value that the rest of the planned run is expected
  to bring, divided by the projected cost of getting there.

The projected gain is about the *best* value, since the best checkpoint is what a run keeps and
what it is judged by: ``E[max(best, X_1, ..., X_m)] - best`` over the ``m`` checks still planned
(:func:`expected_improvement`), each ``X_k`` normal around the learning-curve fit
(:mod:`.learning_curve`) at its projected cost, with the noise of the metric around its trend. On a
smooth curve this is the fit's own projected gain; on a noisy one it accounts both for a best that
already sits above the trend by luck (less to gain than the trend says) and for the chance that a
later check beats it on a flat trend (more than the trend says). Of the families that pass the
quality checks the most optimistic one is used, and its trend is raised by one standard error of
its projection at every future check (noisy or short histories give wide projections, so they are
not stopped on a lucky fit); when no family passes, the straight line through the current segment,
also optimistic by one standard error, is extrapolated instead.

The ratio projected / average is the *relative gain*: "a further kWh buys this fraction of what
the average kWh bought so far", the same for a loss in nats and an accuracy in points, for a run
of joules and one of megawatt-hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.integrate import trapezoid  # numpy.trapezoid is numpy >= 2.0 only (numpy>=1.24 is supported)
from scipy.special import log_ndtr

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
    "expected_improvement",
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
FUTURE_GROUPS = 16
"""The checks still planned are taken in at most this many groups of consecutive checks, each at
the trend of its last (on a rising trend, its most promising) check, when the expected improvement
of the best is computed: bounded work however many checks remain, erring on the optimistic side."""
_EI_GRID = 49
"""Evenly spaced points of the integration grid of :func:`expected_improvement` (to which points
around every mean are added, where the integrand changes)."""
_EI_AROUND = np.linspace(-3.0, 6.0, 10)
"""Offsets, in noise standard deviations, of the grid points added around every mean."""


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
            has not improved on its first check, or nothing is left to project).
        fit: The learning-curve fit used, or ``None`` (straight line extrapolated, or not projected).
        projected_gain_central: The gain in the best value expected up to the horizon around the
            central trend (no optimism) of the acceptable family that fits the segment best (not
            the most optimistic one, :attr:`fit`), or ``None``: what a stop gives up, as projected.
        noise_sd: Standard deviation of the metric around its trend over the segment (metric
            units), or ``None``.
    """

    gain_per_kwh: float | None = None
    gain_per_kwh_se: float | None = None
    average_gain_per_kwh: float | None = None
    projected_gain: float | None = None
    projected_cost_kwh: float | None = None
    projected_gain_per_kwh: float | None = None
    relative_gain: float | None = None
    fit: CurveFit | None = None
    projected_gain_central: float | None = None
    noise_sd: float | None = None

    RATES: ClassVar[tuple[str, ...]] = (
        "gain_per_kwh",
        "average_gain_per_kwh",
        "projected_gain",
        "projected_cost_kwh",
        "projected_gain_per_kwh",
        "relative_gain",
    )
    """The figures (plain numbers) a :class:`~lightning_green.policy.decision.StopDecision` carries."""
    DECISION_FIELDS: ClassVar[tuple[str, ...]] = (*RATES, "fit")
    """Every attribute a :class:`~lightning_green.policy.decision.StopDecision` carries, same names."""

    def decision_fields(self) -> dict[str, Any]:
        """The :attr:`DECISION_FIELDS` by name, for the decision at this check."""
        return {name: getattr(self, name) for name in self.DECISION_FIELDS}

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


def expected_improvement(
    best: float, means: np.ndarray, sigma: float, counts: np.ndarray | None = None
) -> float:
    """``E[max(best, X_1, ..., X_m)] - best`` for independent ``X_k ~ N(means[k], sigma**2)``.

    The expected gain in the best value from checks still to come, each normal around its trend
    value with the noise ``sigma``. ``counts[k]`` checks share ``means[k]`` (default: one each).
    Computed as ``integral from best to infinity of (1 - prod_k Phi((z - means[k]) / sigma)) dz``
    by the trapezoidal rule on a grid that is fine around every mean; without noise,
    ``max(0, max(means) - best)``.

    Args:
        best: The best value so far (oriented so that higher is better).
        means: Trend values of the future checks (same orientation).
        sigma: Standard deviation of the noise around the trend (``>= 0``).
        counts: Checks at each mean, or ``None`` for one each.

    Returns:
        The expected improvement (``>= 0``), in metric units.

    Example:
        >>> round(expected_improvement(0.0, np.array([0.0]), 1.0), 3)  # E[max(0, N(0, 1))] = 0.3989
        0.4
        >>> expected_improvement(1.0, np.array([0.0]), 0.0), expected_improvement(0.0, np.array([2.0]), 0.0)
        (0.0, 2.0)
        >>> a = expected_improvement(0.0, np.array([0.0]), 1.0, np.array([10]))  # ten tries on a flat trend
        >>> b = expected_improvement(0.0, np.zeros(10), 1.0)
        >>> round(a, 3) == round(b, 3), round(a, 2)
        (True, 1.54)
    """
    mu = np.asarray(means, dtype=float)
    if len(mu) == 0:
        return 0.0
    top = float(mu.max())
    if not sigma > 0:
        return max(top - best, 0.0)
    n = np.ones(len(mu)) if counts is None else np.asarray(counts, dtype=float)
    z_hi = max(best, top) + 8.0 * sigma * math.sqrt(1.0 + math.log(max(float(n.sum()), 1.0)))
    around = (mu[:, None] + sigma * _EI_AROUND[None, :]).ravel()
    z = np.unique(np.clip(np.concatenate((np.linspace(best, z_hi, _EI_GRID), around)), best, z_hi))
    log_cdf = log_ndtr((z[:, None] - mu[None, :]) / sigma) @ n
    return max(float(trapezoid(-np.expm1(log_cdf), z)), 0.0)


def _future_trend(
    fit: NormalisedFit | None,
    x_h: float,
    m: int,
    *,
    level_now: float,
    scale: float,
    offset: float,
    line_rate: float,
    span: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimistic and central trend values of the ``m`` future checks, in at most ``FUTURE_GROUPS`` groups.

    The future checks are evenly spaced in cost between now (``x = 1``) and the horizon
    (``x = x_h``); each group of consecutive ones is taken at the trend of its last check.

    Returns:
        ``(optimistic_means, central_means, counts)`` in oriented metric units.
    """
    groups = min(m, FUTURE_GROUPS)
    edges = np.round(np.linspace(0.0, float(m), groups + 1))
    counts = np.diff(edges)
    last = edges[1:][counts > 0]  # 1-based index of each group's last check
    counts = counts[counts > 0]
    xs = 1.0 + (x_h - 1.0) * last / m
    if fit is None:  # the straight line, optimistic slope
        central = level_now + line_rate * (xs - 1.0) * span
        return central, central, counts
    central = offset + scale * fit.family.func(xs, *fit.params)
    grad = fit.family.jac(xs, *fit.params) - fit.family.jac(np.array([1.0]), *fit.params)[0]
    se = scale * np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", grad, fit.pcov, grad), 0.0))
    return central + OPTIMISM_SE * se, central, counts


@dataclass(frozen=True)
class _SegmentFits:
    """The families' fits to one (normalised) segment that pass the quality checks.

    Every family is fitted on its grid (:func:`~.learning_curve.grid_fit`) once; the one chosen is
    then refined with ``curve_fit`` (:func:`~.learning_curve.fit_family`), which keeps a decision
    within a few milliseconds.
    """

    x: np.ndarray
    y: np.ndarray
    noise: float
    recent_x: np.ndarray
    recent: tuple[float, float]
    fits: tuple[NormalisedFit, ...]

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, window: int, recent: tuple[float, float]) -> _SegmentFits:
        """Fit every family to ``(x, y)``; keep those :func:`~.learning_curve.acceptable` judges fit."""
        noise, recent_x = noise_sd(y), x[-window:]
        fits = (grid_fit(family, x, y) for family in FAMILIES.values())
        kept = tuple(f for f in fits if f is not None and acceptable(f, noise, recent_x, recent))
        return cls(x, y, noise, recent_x, recent, kept)

    def _refined(self, coarse: NormalisedFit) -> NormalisedFit:
        fit = fit_family(coarse.family, self.x, self.y, start=coarse.params)
        if fit is None or not acceptable(fit, self.noise, self.recent_x, self.recent):
            return coarse
        return fit

    def most_optimistic(self, x_h: float) -> tuple[NormalisedFit, float, float] | None:
        """The fit projecting the most gain up to ``x_h`` (optimistic by ``OPTIMISM_SE``), refined.

        Several families often describe the same history equally well and extrapolate
        differently; taking the most optimistic one means the policy stops only when every
        acceptable extrapolation agrees that the rest of the run is not worth its cost.

        Returns:
            ``(fit, gain, standard_error)`` in normalised units, or ``None`` if no family passes.
        """
        if not self.fits:
            return None

        def optimistic_gain(fit: NormalisedFit) -> float:
            gain, se = fit.gain(1.0, x_h)
            return gain + OPTIMISM_SE * se

        fit = self._refined(max(self.fits, key=optimistic_gain))
        gain, se = fit.gain(1.0, x_h)
        return fit, gain, se

    def closest(self) -> NormalisedFit | None:
        """The fit that describes the history best (smallest residual), refined, or ``None``.

        What a stop gives up is projected from it rather than from :meth:`most_optimistic` (which
        the decisions use): the optimistic choice errs on the side of going on, which is right
        for deciding and wrong for saying what the stop cost.
        """
        return self._refined(min(self.fits, key=lambda fit: fit.rmse)) if self.fits else None


def assess_marginal(
    costs_kwh: np.ndarray,
    values: np.ndarray,
    *,
    segment_start: int,
    horizon_cost_kwh: float,
    sign: float,
    project: bool = True,
    n_future_checks: float | None = None,
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
        n_future_checks: Checks still planned up to the horizon (``None``: as many per unit of
            cost as so far).

    Returns:
        The assessment (fields are ``None`` where there is too little data).
    """
    if len(values) < 2:
        return MarginalAssessment(projected_cost_kwh=horizon_cost_kwh)
    segment = segment_of(costs_kwh, values, segment_start, MAX_FIT_POINTS)
    return assess_segment(
        segment,
        horizon_cost_kwh=horizon_cost_kwh,
        sign=sign,
        project=project,
        n_future_checks=n_future_checks,
    )


def assess_segment(
    segment: Segment,
    *,
    horizon_cost_kwh: float,
    sign: float,
    project: bool = True,
    n_future_checks: float | None = None,
    central: bool = True,
) -> MarginalAssessment:
    """Recent, average and projected gain per unit cost at the latest check, from a :class:`Segment`.

    The work is bounded by the number of points of the segment (at most :data:`MAX_FIT_POINTS`
    when it comes from :meth:`History.segment <lightning_green.policy.history.History.segment>`)
    and by :data:`FUTURE_GROUPS`, not by the length of the run. The recent window is a third of
    the points (at least :data:`RECENT_WINDOW_MIN`).

    Args:
        segment: The current segment of the finite checks (after the last step-jump or decay).
        horizon_cost_kwh: Projected cost of the rest of the planned run.
        sign: +1 when higher is better, -1 when lower is better.
        project: Fit the learning curve and project to the horizon.
        n_future_checks: Checks still planned up to the horizon (``None``: as many per unit of
            cost as so far).
        central: Also project the gain around the central trend of the best-fitting family
            (``projected_gain_central``; the policy asks for it only when it stops).

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
    c_start, v_start, best_now = segment.cost_start_kwh, segment.value_start, segment.best_value
    average = (best_now - v_start) / (c_now - c_start) if c_now > c_start else None
    if not project:
        return MarginalAssessment(gain_per_kwh=slope, gain_per_kwh_se=slope_se, average_gain_per_kwh=average)
    want_central = central

    best: tuple[NormalisedFit, float, float] | None = None
    x = (seg_c - c_ref) / span
    x_h = 1.0 + horizon_cost_kwh / span
    offset, scale = 0.0, 1.0
    keep = x > 1e-9  # a check at the reference cost itself carries no information on the shape
    n_fitted = 0
    closest: NormalisedFit | None = None
    if int(np.count_nonzero(keep)) >= MIN_FIT_POINTS:
        x, y_raw = x[keep], seg_v[keep]
        n_fitted = segment.n_total - int(segment.indices[keep][0])
        offset = float(np.median(y_raw))
        scale = float(y_raw.max() - y_raw.min()) or 1.0
        y = (y_raw - offset) / scale
        recent_x = (slope * span / scale, slope_se * span / scale)
        fits = _SegmentFits.of(x, y, min(w, len(x)), recent_x)
        best = fits.most_optimistic(x_h)
        if want_central and best is not None:
            closest = fits.closest()

    fit_out: CurveFit | None = None
    fit: NormalisedFit | None = None
    line_rate = 0.0
    if best is not None:
        fit = best[0]
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
        line_rate = max(seg_slope + OPTIMISM_SE * se, 0.0)
        level_now = seg_level

    # The gain in the best value over the checks still planned, around the (optimistic) trend.
    noise = noise_sd(seg_v)
    if n_future_checks is None:
        per_cost = segment.n_total / (c_now - c_start) if c_now > c_start else 0.0
        n_future_checks = per_cost * horizon_cost_kwh
    m = max(1, round(n_future_checks)) if horizon_cost_kwh > 0 else 0
    projected_gain = projected_central = 0.0
    if m:
        optimistic, central_means, counts = _future_trend(
            fit, x_h, m, level_now=level_now, scale=scale, offset=offset, line_rate=line_rate, span=span
        )
        projected_gain = expected_improvement(best_now, optimistic, noise, counts)
        if want_central:
            if closest is not None and closest is not fit:
                _, central_means, counts = _future_trend(
                    closest, x_h, m, level_now=level_now, scale=scale, offset=offset, line_rate=0.0, span=span
                )
            projected_central = expected_improvement(best_now, central_means, noise, counts)

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
        projected_gain_central=projected_central if best is not None and want_central else None,
        noise_sd=noise,
    )
