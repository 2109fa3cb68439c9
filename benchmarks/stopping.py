"""Benchmark: the energy-aware stopping policy against Lightning's patience rule on real curves.

Replays, side by side, the policy with its default arguments and Lightning ``EarlyStopping``-style
patience rules (patience 1-15, min_delta 0 and 1e-3; the plateau module reproduces Lightning's
semantics exactly) over every CSV in the curves directory, and prints per file:

- mean cost saved (fraction of each curve's cumulative cost not spent), mean regret (best metric of
  the whole curve minus best up to the stop, improving direction) and harm rate (share of curves
  whose regret exceeds 0.01 nats for losses, 0.5 points for accuracies);
- against the patience rule whose mean regret is the smallest one still >= the policy's (the rule
  that loses at least as much), the ratio of cost saved;
- the policy's time per decision (median and p99 with 50 epochs of history).

Then the held-out style check on real curves with learning-rate step schedules
(``benchmarks/data/step_schedule_curves.csv``, made by ``make_step_schedule_curves.py``), with and
without ``epochs_until_lr_decay``; and a sensitivity table: each default changed alone.

Usage::

    python benchmarks/stopping.py [CURVES_DIR] [--step-curves CSV] [--no-sensitivity] [--jobs N]
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lightning_green.offline import Curve, ReplayResult, read_curves_csv, replay_curve, result_at, summarize
from lightning_green.policy import PlateauState, StoppingConfig, StoppingPolicy, evaluate_plateau

HERE = Path(__file__).resolve().parent
DEFAULT_CURVES = HERE / "data" / "curves"
DEFAULT_STEP_CURVES = HERE / "data" / "step_schedule_curves.csv"
PATIENCES = range(1, 16)
MIN_DELTAS = (0.0, 1e-3)


# --------------------------------------------------------------------------- helpers


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


def patience_stop(curve: Curve, patience: int, min_delta: float) -> int:
    """Index where Lightning's EarlyStopping(patience, min_delta) stops (our exact re-implementation)."""
    state = PlateauState.initial(curve.mode)
    for i, m in enumerate(curve.metrics):
        r = evaluate_plateau(float(m), state, mode=curve.mode, min_delta=min_delta, patience=patience)
        state = r.state
        if r.should_stop:
            return i
    return len(curve.metrics) - 1


def patience_table(curves: Sequence[Curve]) -> list[tuple[int, float, Stats]]:
    return [
        (p, d, stats(curves, [result_at(c, patience_stop(c, p, d)) for c in curves]))
        for d in MIN_DELTAS
        for p in PATIENCES
    ]


def comparator(table: list[tuple[int, float, Stats]], regret: float) -> tuple[int, float, Stats] | None:
    """The patience rule with the smallest mean regret that is still >= ``regret``."""
    worse = [t for t in table if t[2].regret >= regret]
    if not worse:
        return None
    return min(worse, key=lambda t: (t[2].regret, -t[2].saved))


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


def run_policy(curves: Sequence[Curve], config: StoppingConfig, use_lr: bool = False) -> list[ReplayResult]:
    return [replay_curve(c, config, use_lr_schedule=use_lr) for c in curves]


def _job(args: tuple[str, list[Curve], StoppingConfig, bool]) -> tuple[str, list[ReplayResult]]:
    key, curves, config, use_lr = args
    return key, run_policy(curves, config, use_lr)


def fmt_stops(stops: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(stops.items(), key=lambda kv: -kv[1]))


def line(s: Stats) -> str:
    return f"saved {100 * s.saved:5.1f}%  regret {s.regret:8.4f}  harm {100 * s.harm:5.1f}%"


# --------------------------------------------------------------------------- timing


def time_per_decision(
    curves: Sequence[Curve], history: int = 50, repeats: int = 3
) -> tuple[tuple[float, float], tuple[float, float], int]:
    """Median and p99 (ms) of one ``update`` with ``history`` checks, the marginal rule active.

    The run is planned for 1.5 times the history, so the 50th check is past the first half of the
    run (``min_horizon_fraction``) and the learning curve is fitted: the expensive case. Returns
    wall-clock and CPU (thread) time: on a shared machine the wall clock also counts the time other
    processes held the core.
    """
    wall, cpu = [], []
    planned = history + history // 2
    config = StoppingConfig(patience=10_000)
    gc.collect()
    gc.disable()
    try:
        for c in curves:
            if len(c.metrics) < history:
                continue
            for _ in range(repeats):
                policy = StoppingPolicy(replace(config, mode=c.mode))
                for i in range(history - 1):
                    policy.update(float(c.metrics[i]), float(c.costs[i]), epoch=i, max_epochs=planned)
                t0, c0 = time.perf_counter(), time.thread_time()
                policy.update(
                    float(c.metrics[history - 1]),
                    float(c.costs[history - 1]),
                    epoch=history - 1,
                    max_epochs=planned,
                )
                cpu.append(time.thread_time() - c0)
                wall.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    if not wall:
        return (math.nan, math.nan), (math.nan, math.nan), 0
    w, c = np.array(wall) * 1e3, np.array(cpu) * 1e3
    return (
        (float(np.median(w)), float(np.percentile(w, 99))),
        (float(np.median(c)), float(np.percentile(c, 99))),
        len(w),
    )


def never_stopping_curve(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A loss that falls steadily to the end (a straight line in cost, with noise): nothing stops it.

    The per-check noise is a fifth of the per-check improvement, so a new best comes every few
    checks (the plateau rule never fires) and the recent slope is surely positive (the marginal rule
    never fires): every check is decided in full, the learning-curve fit included once the run is
    past ``min_horizon_fraction`` of its plan.
    """
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=float)
    return 3.0 - i / n + rng.normal(0.0, 0.2 / n, n), (i + 1) * 0.01


def time_replay(n: int) -> tuple[float, float, int]:
    """Wall and CPU seconds to replay the default policy over :func:`never_stopping_curve` ``(n)``,
    and the number of stops (0 expected)."""
    metrics, costs = never_stopping_curve(n)
    policy = StoppingPolicy(StoppingConfig())
    stops = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        stops += policy.update(float(metrics[i]), float(costs[i]), epoch=i, max_epochs=n).should_stop
    return time.perf_counter() - t0, time.process_time() - c0, stops


def scaling(sizes: Sequence[int] = (2_000, 20_000)) -> list[str]:
    """Replay time of never-stopping curves of the given lengths: linear in the length, about
    2 ms per check or less. Prints a table and returns the verdict lines."""
    print("\n== Replay time against curve length (never-stopping curve, default policy) ==")
    rows = []
    for n in sizes:
        wall, cpu, stops = time_replay(n)
        rows.append((n, wall, cpu))
        print(
            f"  {n:7d} checks: {wall:7.2f} s wall ({cpu:7.2f} s CPU), {1e3 * wall / n:5.2f} ms per check,"
            f" stops {stops}"
        )
    (n0, w0, c0), (n1, w1, c1) = rows[0], rows[-1]
    ratio, cpu_ratio = w1 / w0, c1 / c0
    per_check = 1e3 * w1 / n1
    print(f"  {n1} vs {n0} checks: {ratio:.1f}x the time (CPU {cpu_ratio:.1f}x; {n1 / n0:.0f}x is linear)")
    return [
        f"replay time {n1} vs {n0} checks: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU (<= 20):"
        f" {'PASS' if min(ratio, cpu_ratio) <= 20 else 'FAIL'}",
        f"time per check over {n1} checks: {per_check:.2f} ms wall (about 2 or less):"
        f" {'PASS' if per_check <= 2.5 else 'FAIL'}",
    ]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves_dir", nargs="?", type=Path, default=DEFAULT_CURVES)
    parser.add_argument("--step-curves", type=Path, default=DEFAULT_STEP_CURVES)
    parser.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity table")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="only time replay of never-stopping 2,000- and 20,000-check curves (about 30 s)",
    )
    args = parser.parse_args(argv)
    if args.scaling:
        for v in scaling():
            print("  " + v)
        return 0

    t_start = time.perf_counter()
    files = sorted(args.curves_dir.glob("*.csv"))
    if not files:
        print(f"no CSV files in {args.curves_dir}", file=sys.stderr)
        return 1
    datasets: dict[str, list[Curve]] = {}
    for f in files:
        for c in read_curves_csv(f, name=f.name):
            datasets.setdefault(f"{f.name}[{group_of(c)}]", []).append(c)
    step_sets: dict[str, list[Curve]] = {}
    if args.step_curves.exists():
        for c in read_curves_csv(args.step_curves, name=args.step_curves.name):
            step_sets.setdefault(f"{args.step_curves.name}[{group_of(c)}]", []).append(c)
    default = StoppingConfig()
    print(f"policy defaults: {default.to_dict()}")
    print(f"curves: {args.curves_dir}  held-out style: {args.step_curves if step_sets else '(missing)'}")

    # Timing first, before the worker processes compete for the cores.
    timing_curves = [c for cs in datasets.values() for c in cs if len(c.metrics) >= 50][:60]
    (wall_med, wall_p99), (cpu_med, cpu_p99), n_timed = time_per_decision(timing_curves)

    # Every replay job of the run, in parallel.
    variants: list[tuple[str, StoppingConfig]] = [("default", default)]
    if not args.no_sensitivity:
        for name, values in (
            ("min_relative_gain", (0.05, 0.1, 0.15, None)),
            ("min_horizon_fraction", (0.0, 0.3, 0.4, 0.6)),
            ("patience", (10, 20, 50)),
            ("min_epochs", (1, 10)),
        ):
            for v in values:
                variants.append((f"{name}={v}", replace(default, **{name: v})))
    jobs = []
    for vname, cfg in variants:
        for key, curves in {**datasets, **step_sets}.items():
            jobs.append((f"{vname}|{key}|nolr", curves, cfg, False))
    for key, curves in step_sets.items():
        jobs.append((f"default|{key}|lr", curves, default, True))
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = dict(pool.map(_job, jobs))

    def get(vname: str, key: str, lr: bool = False) -> Stats:
        curves = {**datasets, **step_sets}[key]
        return stats(curves, results[f"{vname}|{key}|{'lr' if lr else 'nolr'}"])

    tables = {key: patience_table(curves) for key, curves in {**datasets, **step_sets}.items()}

    print("\n== Per file: default policy vs Lightning patience rules ==")
    verdicts = []
    for key, curves in datasets.items():
        s = get("default", key)
        table = tables[key]
        print(f"\n{key}: {s.n} curves, cost in {curves[0].cost_unit}")
        print(f"  policy (defaults)      {line(s)}   stops: {fmt_stops(s.stops)}")
        for d in MIN_DELTAS:
            cells = [f"p{p}:{100 * t.saved:.0f}%/{t.regret:.3g}" for p, dd, t in table if dd == d]
            print(f"  patience, min_delta={d:g}: " + " ".join(cells))
        comp = comparator(table, s.regret)
        if comp is None:
            print("  no patience rule has a mean regret as high as the policy's")
            ratio = math.nan
        else:
            p, d, t = comp
            ratio = s.saved / t.saved if t.saved > 0 else math.inf
            print(
                f"  vs patience {p} (min_delta {d:g}) with regret {t.regret:.4f} >= policy's: "
                f"saved {100 * t.saved:.1f}%, harm {100 * t.harm:.1f}% -> policy saves {ratio:.2f}x"
            )
        oracle = oracle_at(curves, s.regret)
        print(f"  (hindsight oracle at the same mean regret saves {100 * oracle.saved:.1f}%)")
        if key.startswith("nasbench_nlp_wt2_dev"):
            ok = ratio >= 1.5 and s.regret <= 0.02
            verdicts.append(
                f"nasbench_nlp_wt2_dev: cost-saved ratio {ratio:.2f} (>= 1.5) and regret "
                f"{s.regret:.4f} nats (<= 0.02): {'PASS' if ok else 'FAIL'}"
            )
        if key.startswith("mlperf_v4_power_dev"):
            ok = s.regret <= 0.5
            verdicts.append(
                f"mlperf_v4_power_dev: regret {s.regret:.3f} points (<= 0.5): {'PASS' if ok else 'FAIL'}"
            )

    if step_sets:
        print("\n== Held-out style: real curves with learning-rate step schedules ==")
        print("(MultiStepLR/StepLR MLPs on scikit-learn datasets; not used to choose the defaults)")
        for key, curves in step_sets.items():
            table = tables[key]
            p10 = next(t for p, d, t in table if p == 10 and d == 0.0)
            no_lr, with_lr = get("default", key), get("default", key, lr=True)
            print(f"\n{key}: {len(curves)} curves")
            print(f"  patience 10            {line(p10)}")
            print(f"  policy, no lr info     {line(no_lr)}   stops: {fmt_stops(no_lr.stops)}")
            print(f"  policy, lr info        {line(with_lr)}   stops: {fmt_stops(with_lr.stops)}")
            for label, s in (("without", no_lr), ("with", with_lr)):
                frac = s.regret / p10.regret if p10.regret > 0 else math.inf
                ok = s.regret <= 0.5 * p10.regret
                verdicts.append(
                    f"{key} {label} lr info: regret {s.regret:.4g} = {frac:.2f} x patience-10's "
                    f"{p10.regret:.4g} (<= 0.5): {'PASS' if ok else 'FAIL'}"
                )

    print("\n== Time per decision (50 checks of history, marginal rule active) ==")
    print(
        f"  wall clock: median {wall_med:.2f} ms, p99 {wall_p99:.2f} ms;"
        f" CPU: median {cpu_med:.2f} ms, p99 {cpu_p99:.2f} ms ({n_timed} decisions)"
    )
    verdicts.append(
        f"time per decision: median {wall_med:.2f} ms, p99 {wall_p99:.2f} ms wall"
        f" ({cpu_p99:.2f} ms CPU) (<= 5): {'PASS' if wall_p99 <= 5 else 'FAIL'}"
    )

    if not args.no_sensitivity:
        print("\n== Sensitivity: each default changed alone ==")
        keys = list(datasets) + list(step_sets)
        short = {k: k.replace("_dev.csv", "").replace("step_schedule_curves.csv", "step") for k in keys}
        header = f"{'variant':28s}" + "".join(f"{short[k][:30]:>32s}" for k in keys)
        print(header)
        for vname, _ in variants:
            cells = []
            for k in keys:
                s = get(vname, k)
                if k in step_sets:
                    p10 = next(t for p, d, t in tables[k] if p == 10 and d == 0.0)
                    extra = f"{s.regret / p10.regret:.2f}xp10" if p10.regret > 0 else "-"
                else:
                    comp = comparator(tables[k], s.regret)
                    extra = f"{s.saved / comp[2].saved:.2f}x" if comp and comp[2].saved > 0 else "-"
                cells.append(f"{100 * s.saved:5.1f}%/{s.regret:.4f}/{extra}")
            print(f"{vname:28s}" + "".join(f"{c:>32s}" for c in cells))
        print("cells: mean cost saved / mean regret / for the shared files, cost saved as a multiple of the")
        print(
            "patience rule's with equal or higher regret; for the step-schedule curves, regret as a multiple"
        )
        print("of patience 10's (target <= 0.5).")

    print("\n== Targets ==")
    for v in verdicts:
        print("  " + v)
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
