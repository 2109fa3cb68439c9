"""Learning-curve fits: the monitored metric as a saturating function of cumulative cost.

Coordinates are normalised, which makes every fit, and so every decision, independent of the
units of cost and metric: ``x`` is the cost since a reference point (the start of the run, or the
check before the curve's last step-jump) divided by the cost at the latest check, so ``x = 1``
now; ``y`` is the metric oriented so that higher is better (a loss is negated), shifted and divided
by its range over the fitted checks.

Three families, each written as ``y = c + a * phi(x; theta)`` with ``phi(1) = 0`` and
``phi'(1) = 1``, so that ``c`` is the level and ``a >= 0`` the slope *at the latest check* (both
well determined by the data whatever the shape parameter ``theta``):

- ``pow3``: ``phi = (1 - x**-alpha) / alpha``, the power law ``c' - a' x**-alpha`` of learning
  curves in compute; ``alpha -> 0`` is a logarithm (no saturation in sight);
- ``exp3``: ``phi = (1 - exp(-b (x - 1))) / b``, ``c' - a' exp(-b x)``, which saturates fast;
  ``b -> 0`` is a straight line;
- ``hyp3``: ``phi = (1 + k) (x - 1) / (x + k)``, the hyperbola ``c' - a' / (1 + x / k)``
  (Morgan-Mercer-Flodin with unit exponent), from a straight line (large ``k``) to a ``1/x`` tail.

Fitting, all within each family's bounds: separable least squares over a log-spaced grid of
``theta`` refined twice around its best point (for each ``theta``, ``c`` and ``a >= 0`` follow in
closed form; :func:`grid_fit`), then ``scipy.optimize.curve_fit`` (Levenberg-Marquardt with the
analytic Jacobian) from there (:func:`fit_family`); a shape parameter that leaves its bounds is
held at the bound. Quality checks (:func:`acceptable`): residuals within three times the noise of
the data, and a recent slope not more than three standard errors below the measured one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

FloatArray = np.ndarray


def _pow3(x: FloatArray, c: float, a: float, alpha: float) -> FloatArray:
    return c - a * np.expm1(-alpha * np.log(x)) / alpha


def _pow3_jac(x: FloatArray, c: float, a: float, alpha: float) -> FloatArray:
    log_x = np.log(x)
    e = np.exp(-alpha * log_x)
    phi = -np.expm1(-alpha * log_x) / alpha
    d_alpha = (alpha * log_x * e - (1.0 - e)) / (alpha * alpha)
    return np.column_stack([np.ones_like(x), phi, a * d_alpha])


def _exp3(x: FloatArray, c: float, a: float, b: float) -> FloatArray:
    return c - a * np.expm1(-b * (x - 1.0)) / b


def _exp3_jac(x: FloatArray, c: float, a: float, b: float) -> FloatArray:
    u = x - 1.0
    e = np.exp(-b * u)
    phi = -np.expm1(-b * u) / b
    d_b = (b * u * e - (1.0 - e)) / (b * b)
    return np.column_stack([np.ones_like(x), phi, a * d_b])


def _hyp3(x: FloatArray, c: float, a: float, k: float) -> FloatArray:
    return c + a * (1.0 + k) * (x - 1.0) / (x + k)


def _hyp3_jac(x: FloatArray, c: float, a: float, k: float) -> FloatArray:
    u = x - 1.0
    return np.column_stack([np.ones_like(x), (1.0 + k) * u / (x + k), a * u * u / ((x + k) ** 2)])


@dataclass(frozen=True)
class Family:
    """A saturating learning-curve family ``y = c + a * phi(x; theta)``.

    ``phi(1) = 0`` and ``phi'(1) = 1``, so ``c`` is the level and ``a`` the slope of the curve at
    the latest check (``x = 1``): both are well determined by the data, whatever the shape
    parameter ``theta``, which keeps the fit well conditioned even in the limits (``theta``
    towards 0: a logarithm or a straight line, no saturation in sight).

    Attributes:
        name: Short name (``"pow3"``, ``"exp3"``, ``"hyp3"``).
        func: ``func(x, c, a, theta)``.
        jac: Its Jacobian with respect to ``(c, a, theta)``.
        grid: Candidate values of ``theta`` for the separable search, shape ``(G, 1)``.
        lower: Lower bounds of ``(c, a, theta)``.
        upper: Upper bounds of ``(c, a, theta)``.
    """

    name: str
    func: Callable[..., FloatArray]
    jac: Callable[..., FloatArray]
    grid: FloatArray
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return len(self.lower)


MAX_EVALUATIONS = 60
"""Function evaluations allowed to ``curve_fit``: from the separable start a family that describes
the data converges in about ten; one that needs many more is running off its bounds."""

BOUND = 1e3
"""Bound on level and slope at the latest check, in normalised units (the fitted window spans 1)."""


def _family(
    name: str, f: Callable[..., FloatArray], jac: Callable[..., FloatArray], grid_max: float, rate_max: float
) -> Family:
    """A family with its rate start grid up to ``grid_max`` and its rate bounded by ``rate_max``."""
    grid = np.geomspace(1e-3, grid_max, 16)[:, None]
    return Family(name, f, jac, grid, (-BOUND, 0.0, 1e-3), (BOUND, BOUND, rate_max))


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        _family("pow3", _pow3, _pow3_jac, grid_max=8.0, rate_max=10.0),
        _family("exp3", _exp3, _exp3_jac, grid_max=100.0, rate_max=200.0),
        _family("hyp3", _hyp3, _hyp3_jac, grid_max=300.0, rate_max=1e3),
    )
}
"""The families, by name."""


@dataclass(frozen=True)
class CurveFit:
    """A fitted learning curve, with what is needed to draw it in the metric's own units.

    Attributes:
        family: Family name (a key of :data:`FAMILIES`).
        params: ``(c, a, theta)`` in normalised coordinates: level and slope at the latest check,
            shape parameter.
        cost_ref_kwh: Cost at which ``x = 0`` (the start of the run, or the check before the last
            step-change of the curve).
        cost_scale_kwh: Cost span that maps to ``x = 1`` (the latest check is at ``x = 1``).
        metric_offset: ``y = sign * (metric - metric_offset) / metric_scale``.
        metric_scale: See ``metric_offset``.
        sign: +1 when higher is better, -1 when lower is better.
        rmse: Root-mean-square residual in normalised units.
        n_points: Number of checks fitted.
    """

    family: str
    params: tuple[float, ...]
    cost_ref_kwh: float
    cost_scale_kwh: float
    metric_offset: float
    metric_scale: float
    sign: float
    rmse: float
    n_points: int

    def x_of(self, cost_kwh: FloatArray | float) -> FloatArray:
        """Normalised cost coordinate of a cumulative cost."""
        return (np.asarray(cost_kwh, dtype=float) - self.cost_ref_kwh) / self.cost_scale_kwh

    def predict(self, cost_kwh: FloatArray | float) -> FloatArray:
        """The fitted metric at the given cumulative costs, in the metric's own units.

        Example:
            >>> fit = CurveFit("exp3", (1.0, 0.5, 2.0), 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 5)
            >>> float(fit.predict(1.0)), round(float(fit.predict(100.0)), 6)
            (1.0, 1.25)
        """
        x = np.maximum(self.x_of(cost_kwh), 1e-12)
        y = FAMILIES[self.family].func(x, *self.params)
        return self.metric_offset + self.sign * self.metric_scale * y


@dataclass(frozen=True)
class NormalisedFit:
    """A fit in normalised coordinates with its covariance (internal to the policy).

    Attributes:
        family: The family.
        params: Fitted ``(c, a, theta)``.
        pcov: Their covariance, ``s^2 (J^T J)^+`` with ``s^2`` the residual variance.
        sse: Sum of squared residuals.
        n_points: Number of points fitted.
    """

    family: Family
    params: FloatArray
    pcov: FloatArray
    sse: float
    n_points: int

    @property
    def rmse(self) -> float:
        """Root-mean-square residual."""
        return math.sqrt(self.sse / self.n_points)

    def gain(self, x_from: float, x_to: float) -> tuple[float, float]:
        """Fitted gain ``y(x_to) - y(x_from)`` and its standard error (delta method).

        Args:
            x_from: Start of the projection (normally 1, the latest check).
            x_to: End of the projection (the planned horizon).

        Returns:
            ``(gain, standard_error)`` in normalised units.
        """
        xs = np.array([x_from, x_to])
        f = self.family.func(xs, *self.params)
        j = self.family.jac(xs, *self.params)
        g = j[1] - j[0]
        var = float(g @ self.pcov @ g)
        return float(f[1] - f[0]), math.sqrt(max(var, 0.0))


def _profile(
    family: Family, x: FloatArray, y: FloatArray, theta: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """For every ``theta`` (shape ``(G,)``): the best ``(c, a >= 0)`` and the SSE, vectorised."""
    basis = family.func(x[None, :], 0.0, 1.0, theta[:, None])  # (G, n): phi(x; theta)
    n = basis.shape[1]
    bm = basis.sum(axis=1) / n  # means, without ndarray.mean's overhead (the same values)
    db = basis - bm[:, None]
    y_mean = y.sum() / n
    yc = y - y_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.einsum("gn,gn->g", db, db)
        a = np.maximum(np.where(var > 0, (db @ yc) / var, 0.0), 0.0)
        # SSE of y - (c + a phi) with c = mean(y) - a mean(phi):  |yc|^2 - 2 a (db.yc) + a^2 var
        sse = float(yc @ yc) - 2.0 * a * (db @ yc) + a * a * var
    sse = np.where(np.isfinite(sse), np.maximum(sse, 0.0), np.inf)
    c = y_mean - a * bm
    return np.column_stack([c, a, theta]), sse


ZOOM_STEPS = 2
"""Refinements of the grid around its best point (each 8x finer in ``log theta``)."""
_ZOOM = np.linspace(0.0, 1.0, 9)


def _separable_start(family: Family, x: FloatArray, y: FloatArray) -> FloatArray | None:
    """Separable least squares over the shape parameter: ``(c, a, theta)`` or None.

    A log-spaced grid of ``theta`` within the bounds, then ``ZOOM_STEPS`` finer grids between the
    neighbours of the best point: vectorised, so the whole search costs a few array passes.
    """
    theta = family.grid[:, 0]
    params, sse = _profile(family, x, y, theta)
    best, best_sse = params[int(np.argmin(sse))], float(sse.min())
    for _ in range(ZOOM_STEPS):
        i = int(np.argmin(sse))
        if not math.isfinite(float(sse[i])):
            return None
        lo, hi = math.log(theta[max(i - 1, 0)]), math.log(theta[min(i + 1, len(theta) - 1)])
        theta = np.exp(lo + (hi - lo) * _ZOOM)
        params, sse = _profile(family, x, y, theta)
        if float(sse.min()) < best_sse:
            best, best_sse = params[int(np.argmin(sse))], float(sse.min())
    if not math.isfinite(best_sse):
        return None
    lower, upper = np.array(family.lower), np.array(family.upper)
    span = upper - lower
    return np.clip(best, lower + 1e-9 * span, upper - 1e-9 * span)


def _linear_part(family: Family, x: FloatArray, y: FloatArray, theta: float) -> FloatArray:
    """``(c, a, theta)`` with ``theta`` fixed: least squares for ``c`` and ``a >= 0``."""
    phi = family.func(x, 0.0, 1.0, theta)
    dphi = phi - phi.mean()
    var = float(dphi @ dphi)
    a = max(float(dphi @ (y - y.mean())) / var, 0.0) if var > 0 else 0.0
    return np.array([float(y.mean() - a * phi.mean()), a, theta])


def _with_covariance(
    family: Family, x: FloatArray, y: FloatArray, params: FloatArray
) -> NormalisedFit | None:
    """The fit at ``params``, with covariance ``s^2 (J^T J)^+`` (``s^2``: residual variance)."""
    n, k = len(x), family.n_params
    with np.errstate(all="ignore"):
        resid = y - family.func(x, *params)
        sse = float(resid @ resid)
        jac = family.jac(x, *params)
    if not (math.isfinite(sse) and np.all(np.isfinite(jac))):
        return None
    pcov = (sse / (n - k)) * np.linalg.pinv(jac.T @ jac)
    if not np.all(np.isfinite(pcov)):
        return None
    return NormalisedFit(family, np.asarray(params, dtype=float), pcov, sse, n)


def grid_fit(family: Family, x: FloatArray, y: FloatArray) -> NormalisedFit | None:
    """Separable least squares on the family's grid of shape parameters (within the bounds).

    For every ``theta`` on the grid, ``c`` and ``a >= 0`` follow in closed form; the best grid
    point is the fit. Cheap (one vectorised pass), accurate to the grid's resolution, and the
    starting point of :func:`fit_family`.

    Example:
        >>> x = np.linspace(0.1, 1.0, 10)
        >>> fit = grid_fit(FAMILIES["pow3"], x, 1.0 - x ** -0.5)
        >>> round(float(fit.params[2]), 1)  # alpha, to the grid's resolution
        0.5
    """
    if len(x) <= family.n_params:
        return None
    start = _separable_start(family, x, y)
    return None if start is None else _with_covariance(family, x, y, start)


def fit_family(
    family: Family, x: FloatArray, y: FloatArray, start: FloatArray | None = None
) -> NormalisedFit | None:
    """Least-squares fit of one family within its bounds, or ``None`` if it fails.

    The start is the best point of the separable problem on the family's grid (which respects
    the bounds by construction); ``curve_fit`` (Levenberg-Marquardt, analytic Jacobian) then
    polishes it. If the polished shape parameter leaves its bounds, it is held at the bound it
    crossed and ``c``, ``a >= 0`` are solved again (the constrained optimum): at the lower bound
    every family is a straight line or a logarithm, "no saturation in sight". The covariance is
    ``s^2 (J^T J)^+`` at the result, with ``s^2`` the residual variance.

    Args:
        family: The family.
        x: Normalised cost, positive, increasing.
        y: Normalised metric, higher is better.
        start: The separable start if already computed (:func:`grid_fit`'s parameters).

    Returns:
        The fit, or ``None`` when there are too few points or nothing finite came out.

    Example:
        >>> x = np.linspace(0.1, 1.0, 10)
        >>> y = 2.0 - 1.5 * np.exp(-3.0 * x)
        >>> fit = fit_family(FAMILIES["exp3"], x, y)
        >>> [round(float(p), 3) for p in fit.params]  # level and slope at x = 1, rate
        [1.925, 0.224, 3.0]
    """
    if len(x) <= family.n_params:
        return None
    if start is None:
        start = _separable_start(family, x, y)
    if start is None:
        return None
    lower, upper = np.array(family.lower), np.array(family.upper)
    params = start
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            polished, _ = curve_fit(
                family.func,
                x,
                y,
                p0=start,
                jac=family.jac,
                method="lm",
                xtol=1e-8,
                ftol=1e-8,
                maxfev=MAX_EVALUATIONS,
            )
        if np.all(np.isfinite(polished)):
            if polished[2] < lower[2] or polished[2] > upper[2]:
                polished = _linear_part(family, x, y, float(np.clip(polished[2], lower[2], upper[2])))
            if polished[1] < 0:
                polished = _linear_part(family, x, y, float(polished[2]))
            params = np.clip(polished, lower, upper)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        pass
    with np.errstate(all="ignore"):
        sse = float(np.sum((y - family.func(x, *params)) ** 2))
        sse_start = float(np.sum((y - family.func(x, *start)) ** 2))
    if not sse <= sse_start:  # never worse than the bounded start (also catches NaN)
        params = start
    return _with_covariance(family, x, y, params)


def noise_sd(y: FloatArray) -> float:
    """Robust standard deviation of the noise around a smooth trend (from second differences).

    Second differences ``y[i] - 2 y[i+1] + y[i+2]`` cancel any straight-line trend (a smooth curve
    leaves only its change of slope) and carry ``sqrt(6)`` times the standard deviation of
    independent noise; their median absolute value about zero, scaled for a normal distribution,
    gives ``1.4826 * median(|d2|) / sqrt(6)``. (Differences are not taken about their median: a
    metric that alternates between two levels has differences of a single size, and their spread
    about the median is zero.)

    When more than half of the second differences are exactly zero the median cannot see the
    noise: the metric moves on a grid (accuracies in whole points, losses to a few decimals) and
    mostly repeats itself. The estimate is then the standard deviation of rounding to the data's
    quantum ``q``, the smallest non-zero gap between its values: ``q / sqrt(12)``. A constant
    metric, or an exact straight line, has no noise.

    Example:
        >>> round(noise_sd(np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])), 3)
        1.211
        >>> round(noise_sd(np.array([90.0, 90, 91, 90, 90, 90, 91, 90, 90])), 3)
        0.605
        >>> round(noise_sd(np.array([90.0, 90, 90, 90, 91, 90, 90, 90, 90, 90, 90, 90, 91, 90, 90])), 3)
        0.289
        >>> noise_sd(np.linspace(0.0, 1.0, 10)), noise_sd(np.full(5, 3.0))
        (0.0, 0.0)
    """
    y = np.asarray(y, dtype=float)
    if len(y) < 3:
        return 0.0
    d2 = np.abs(y[2:] - 2.0 * y[1:-1] + y[:-2])
    resolution = 64.0 * np.finfo(float).eps * float(np.abs(y).max())  # floating-point rounding
    middle = float(np.median(d2))
    if middle > resolution:
        return 1.4826 * middle / math.sqrt(6.0)
    if float(d2.max()) <= resolution:
        return 0.0  # constant, or a straight line
    gaps = np.diff(np.unique(y))
    gaps = gaps[gaps > resolution]
    return float(gaps.min()) / math.sqrt(12.0) if len(gaps) else 0.0


def linear_slope(x: FloatArray, y: FloatArray) -> tuple[float, float, float]:
    """Least-squares line through ``(x, y)``: ``(slope, standard_error, value_at_last_x)``.

    The slope is 0 and its standard error ``inf`` when ``x`` does not vary; the standard error is
    ``inf`` with fewer than three points.

    Example:
        >>> s, se, last = linear_slope(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))
        >>> float(s), float(se), float(last)
        (2.0, 0.0, 5.0)
    """
    n = len(x)
    xm, ym = float(x.sum()) / n, float(y.sum()) / n
    dx = x - xm
    sxx = float(dx @ dx)
    if n < 2 or sxx <= 0:
        return 0.0, math.inf, ym
    slope = float(dx @ (y - ym)) / sxx
    at_last = ym + slope * (float(x[-1]) - xm)
    if n < 3:
        return slope, math.inf, at_last
    resid = y - (ym + slope * dx)
    se = math.sqrt(float(resid @ resid) / (n - 2) / sxx)
    return slope, se, at_last


def acceptable(
    fit: NormalisedFit,
    noise: float,
    recent_x: FloatArray | None = None,
    recent_slope: tuple[float, float] | None = None,
) -> bool:
    """Quality checks of a fit (normalised units).

    A fit is kept when: its root-mean-square residual is no more than three times the noise of
    the data (the family describes the trend); and, over the recent window, the straight line
    through its predictions does not fall more than three standard errors *below* the slope
    measured on the data (its extrapolation starts from what the run does now, not from what a
    fit dominated by early checks says). The slope test is one-sided on purpose: a fit that
    improves faster than measured only makes the policy more cautious (it projects more gain),
    while one that improves slower would stop a run that is still improving.

    Args:
        fit: The fit.
        noise: Noise standard deviation of the fitted data (:func:`noise_sd`).
        recent_x: Normalised costs of the recent window, or ``None`` to skip the slope check.
        recent_slope: ``(slope, standard_error)`` of the data against ``x`` over that window.

    Returns:
        Whether the fit passes.
    """
    floor = 1e-3  # normalised units: 0.1% of the fitted window's range
    if fit.rmse > 3.0 * max(noise, floor):
        return False
    if recent_x is not None and recent_slope is not None and len(recent_x) >= 2:
        slope, se = recent_slope
        fitted = linear_slope(recent_x, fit.family.func(recent_x, *fit.params))[0]
        if fitted < slope - 3.0 * max(se, floor):
            return False
    return True
