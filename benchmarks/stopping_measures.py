"""What ``benchmarks/stopping.py`` measures: cost saved, regret, harm, patience rules, the oracle.

- :func:`stats`: mean cost saved, mean regret and the share of curves harmed (regret above 0.01
  nats for a loss, 0.5 points for an accuracy);
- :func:`patience_table`: Lightning ``EarlyStopping(patience=p, min_delta=d)`` over the curves for
  patience 1-100 x ``min_delta`` in {0, 1e-3, 1e-2}; :func:`best_rule` the one that saves most at a
  mean regret no higher than a given one; :func:`saved_ratio` the policy's cost saved over that
  rule's;
- :func:`oracle_at`: what a hindsight oracle saves at a given mean regret (one tolerance for all
  curves); :func:`best_stops_at`: the most any choice of one stop per curve saves at that mean
  regret (a tighter bound on what was possible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lightning_green.offline import Curve, ReplayResult, result_at, summarize

PATIENCES = np.arange(1, 101)
MIN_DELTAS = (0.0, 1e-3, 1e-2)


def harm_threshold(curve: Curve) -> float:
    """0.01 nats for a loss, 0.5 points for an accuracy-like metric (x100)."""
    name = (curve.metric_name or "").lower()
    if "loss" in name or not curve.higher_is_better:
        return 0.01
    return 0.5


def group_of(curve: Curve) -> str:
    return "loss" if harm_threshold(curve) == 0.01 else "accuracy"


@dataclass(frozen=True)
class Stats:
    saved: float
    regret: float
    harm: float
    n: int
    stops: dict[str, int]


def stats(curves: Sequence[Curve], results: Sequence[ReplayResult]) -> Stats:
    """The library's summary, plus the share of curves harmed (regret above the curve's threshold)."""
    s = summarize(results)
    harmed = [r.regret > harm_threshold(c) for c, r in zip(curves, results, strict=True)]
    return Stats(s.mean_cost_saved, s.mean_regret, float(np.mean(harmed)), s.n_curves, s.stops)


def _wait_counts(metrics: np.ndarray, mode: str, min_delta: float) -> np.ndarray:
    """Lightning's ``wait_count`` after every check (``EarlyStopping(min_delta=...)``, finite metrics)."""
    best = math.inf if mode == "min" else -math.inf
    wait = 0
    out = np.empty(len(metrics), dtype=int)
    for i, m in enumerate(metrics.tolist()):
        improved = (m + min_delta < best) if mode == "min" else (m - min_delta > best)
        if improved:
            best, wait = m, 0
        else:
            wait += 1
        out[i] = wait
    return out


@dataclass(frozen=True)
class Rule:
    patience: int
    min_delta: float
    stats: Stats


def patience_table(curves: Sequence[Curve]) -> list[Rule]:
    """Every rule ``EarlyStopping(patience=p, min_delta=d)`` over the curves (p 1-100, d in MIN_DELTAS).

    Lightning stops at the first check whose ``wait_count`` reaches ``patience``; the wait counts
    of a curve are computed once per ``min_delta`` (the same as :func:`evaluate_plateau`, check by
    check, on finite metrics).
    """
    table = []
    for d in MIN_DELTAS:
        waits = [_wait_counts(c.metrics, c.mode, d) for c in curves]
        for p in PATIENCES.tolist():
            results = []
            for c, w in zip(curves, waits, strict=True):
                hit = np.flatnonzero(w >= p)
                results.append(result_at(c, int(hit[0]) if len(hit) else len(c.metrics) - 1))
            table.append(Rule(p, d, stats(curves, results)))
    return table


def best_rule(table: Sequence[Rule], regret: float) -> Rule | None:
    """The rule that saves most among those whose mean regret is at most ``regret``."""
    eligible = [r for r in table if r.stats.regret <= regret + 1e-12]
    if not eligible:
        return None
    return max(eligible, key=lambda r: (r.stats.saved, -r.stats.regret))


def saved_ratio(s: Stats, table: Sequence[Rule]) -> tuple[float, Rule | None]:
    """Cost saved by the policy / by the best rule of equal or lower regret (inf when that saves 0)."""
    rule = best_rule(table, s.regret)
    if rule is None:
        return math.inf, None
    if rule.stats.saved <= 0:
        return (math.inf if s.saved > 0 else math.nan), rule
    return s.saved / rule.stats.saved, rule


def oracle_at(curves: Sequence[Curve], regret: float) -> Stats:
    """Hindsight oracle: stop at the first check within ``tol`` of the final best, ``tol`` chosen so
    that its mean regret matches ``regret`` (bisection). Context for what was possible."""

    def at(tol: float) -> Stats:
        out = []
        for c in curves:
            s = c.metrics if c.higher_is_better else -c.metrics
            best = np.maximum.accumulate(np.where(np.isfinite(s), s, -np.inf))
            i = int(np.argmax(best >= best[-1] - tol))
            out.append(result_at(c, i))
        return stats(curves, out)

    lo, hi = 0.0, 1.0
    while at(hi).regret < regret and hi < 1e6:
        hi *= 2
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if at(mid).regret <= regret else (lo, mid)
    return at(lo)


def best_stops_at(curves: Sequence[Curve], regrets: Sequence[float]) -> list[Stats]:
    """The most cost any choice of one stop per curve saves at a mean regret of at most each of ``regrets``.

    Hindsight: each curve stops where ``saved - lam * regret`` is largest, ``lam`` the smallest
    price of regret (bisection on a log scale) that keeps the mean regret within the level; the
    Lagrangian solution of the multiple-choice knapsack, exact at the points it reaches (all but a
    sliver of the frontier). Context for how far above the patience rules a rule could be. The
    outcome of every stop of every curve is worked out once, for all the levels.
    """
    saved = []
    regret_at = []
    for c in curves:
        results = [result_at(c, i) for i in range(len(c.metrics))]
        saved.append(np.array([r.cost_saved for r in results]))
        regret_at.append(np.array([r.regret for r in results]))

    def picks(lam: float) -> list[int]:
        return [int(np.argmax(a - lam * b)) for a, b in zip(saved, regret_at, strict=True)]

    def mean_regret(idx: Sequence[int]) -> float:
        return float(np.mean([b[i] for b, i in zip(regret_at, idx, strict=True)]))

    out = []
    for level in regrets:
        lo, hi = -12.0, 12.0  # log10 of the price of regret
        if mean_regret(picks(10.0**lo)) <= level:
            hi = lo
        for _ in range(60):
            if hi == lo:
                break
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if mean_regret(picks(10.0**mid)) <= level else (mid, hi)
        out.append(stats(curves, [result_at(c, i) for c, i in zip(curves, picks(10.0**hi), strict=True)]))
    return out


def p10_regret(table: Sequence[Rule]) -> float:
    return next(r.stats.regret for r in table if r.patience == 10 and r.min_delta == 0.0)
