"""Benchmark: the energy-aware stopping policy against Lightning's patience rules on real curves.

Replays the policy with its default arguments over every CSV in the curves directory and over the
learning-rate step-schedule curves (``benchmarks/data/step_schedule_curves.csv``, without and with
the learning rates as schedule information), each file split by metric kind (loss, accuracy), and
prints per file:

- mean cost saved (fraction of each curve's cumulative cost not spent), mean regret (best metric of
  the whole curve minus best up to the stop, improving direction), harm rate (share of curves
  whose regret exceeds 0.01 nats for losses, 0.5 points for accuracies) and the stop reasons;
- the best Lightning ``EarlyStopping`` rule of equal or lower mean regret, chosen after the fact for
  that file among patience 1-100 x ``min_delta`` in {0, 1e-3, 1e-2} (the plateau module reproduces
  Lightning's rule exactly), and the ratio of the policy's cost saved to that rule's
  (target >= 1.5, stretch 2);
- how many marginal-gain stops fell on the first check ``min_horizon_fraction`` allowed;
- what a hindsight oracle saves at the same mean regret (context: what was possible).

Then the no-harm targets (MLPerf regret <= 0.5 points; step-schedule regret <= 0.5 x patience 10's),
the time per decision, and a leave-one-source-out check of the defaults: for each source (file),
the setting of ``min_relative_gain`` x ``min_horizon_fraction`` x ``patience`` (a small grid around
the defaults) that does best on the *other* sources (largest smallest ratio, no-harm targets kept)
is judged on the source left out.

Usage::

    python benchmarks/stopping.py [CURVES_DIR] [--step-curves CSV] [--jobs N] [--no-loso]
    python benchmarks/stopping.py --scaling     # replay time: 2,000 vs 20,000 checks
"""

from __future__ import annotations

import argparse
import gc
import inspect
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lightning_green.offline import Curve, ReplayResult, read_curves_csv, result_at, summarize
from lightning_green.policy import StoppingConfig, StoppingPolicy

HERE = Path(__file__).resolve().parent
DEFAULT_CURVES = HERE / "data" / "curves"
DEFAULT_STEP_CURVES = HERE / "data" / "step_schedule_curves.csv"
PATIENCES = np.arange(1, 101)
MIN_DELTAS = (0.0, 1e-3, 1e-2)
RATIO_TARGET, RATIO_STRETCH = 1.5, 2.0
RATIO_CAP = 3.0
"""Ratios above this count as this much when settings are compared (a rule that saves next to
nothing at a very low regret makes any ratio huge)."""
LOSO_GRID = {
    "min_relative_gain": (0.04, 0.08, 0.15),
    "min_horizon_fraction": (0.4, 0.5, 0.6),
}
LOSO_PATIENCE = (20, 50)
"""Patience values tried (each with the default ``min_relative_gain`` and ``min_horizon_fraction``)."""

_PROGRESS_API = "progress" in inspect.signature(StoppingPolicy.update).parameters


# --------------------------------------------------------------------------- datasets


def harm_threshold(curve: Curve) -> float:
    """0.01 nats for a loss, 0.5 points for an accuracy-like metric (x100)."""
    name = (curve.metric_name or "").lower()
    if "loss" in name or not curve.higher_is_better:
        return 0.01
    return 0.5


def group_of(curve: Curve) -> str:
    return "loss" if harm_threshold(curve) == 0.01 else "accuracy"


@dataclass(frozen=True)
class Dataset:
    """The curves of one file and metric kind, replayed with or without schedule information."""

    key: str
    source: str
    curves: tuple[Curve, ...]
    use_lr: bool = False
    step_schedule: bool = False

    @property
    def is_mlperf(self) -> bool:
        return self.source.startswith("mlperf")


def load_datasets(curves_dir: Path, step_curves: Path | None) -> list[Dataset]:
    out: list[Dataset] = []
    files = sorted(curves_dir.glob("*.csv"))
    for f in files:
        by_group: dict[str, list[Curve]] = {}
        for c in read_curves_csv(f, name=f.name):
            by_group.setdefault(group_of(c), []).append(c)
        for g, cs in by_group.items():
            out.append(Dataset(f"{f.name}[{g}]", f.name, tuple(cs)))
    if step_curves is not None and step_curves.exists():
        by_group = {}
        for c in read_curves_csv(step_curves, name=step_curves.name):
            by_group.setdefault(group_of(c), []).append(c)
        for lr in (False, True):
            for g, cs in by_group.items():
                label = f"{step_curves.name}[{g}]" + (" lr info" if lr else "")
                out.append(Dataset(label, step_curves.name, tuple(cs), use_lr=lr, step_schedule=True))
    return out


# --------------------------------------------------------------------------- replay


def lr_decay_in(curve: Curve) -> list[float | None]:
    """At each check, the progress still to run at its learning rate before the next decay.

    From the learning rate logged at each check (``lr``): the decay takes effect after the last
    check at the current rate that precedes the first check at a lower one, so the distance is
    the progress from this check to that one (``None``: no lower rate later).
    """
    n = len(curve.epochs)
    lrs = getattr(curve, "lrs", None)
    if lrs is None or len(lrs) != n:
        return [None] * n
    rates, progress = np.asarray(lrs, dtype=float), curve.epochs.astype(float)
    out: list[float | None] = []
    for i in range(n):
        lower = np.flatnonzero(rates[i + 1 :] < rates[i])
        out.append(None if not len(lower) else float(progress[i + lower[0]] - progress[i]))
    return out


def run_curve(curve: Curve, config: StoppingConfig, use_lr: bool) -> ReplayResult:
    """The policy over one curve, one check at a time, until it stops.

    Progress is the CSV's ``epoch`` (epochs completed at the check); the horizon is the curve's
    last epoch; with ``use_lr``, the distance to the next learning-rate decay comes from the
    learning rates logged at the checks (:func:`lr_decay_in`).
    """
    config = replace(config, mode=curve.mode)
    policy = StoppingPolicy(config)
    horizon = float(curve.epochs[-1])
    hints = lr_decay_in(curve) if use_lr else [None] * len(curve.epochs)
    decision = None
    for i in range(len(curve.metrics)):
        hint = hints[i]
        if _PROGRESS_API:
            decision = policy.update(
                float(curve.metrics[i]),
                float(curve.costs[i]),
                progress=float(curve.epochs[i]),
                horizon=horizon,
                lr_decay_in=hint,
            )
        else:  # an older policy: 0-based epoch indices
            decision = policy.update(
                float(curve.metrics[i]),
                float(curve.costs[i]),
                epoch=max(int(curve.epochs[i]) - 1, 0),
                max_epochs=int(horizon),
                epochs_until_lr_decay=None if hint is None else round(hint),
            )
        if decision.should_stop:
            return result_at(curve, i, decision.reason, decision)
    return result_at(curve, len(curve.metrics) - 1, None, decision)


def _job(args: tuple[str, Sequence[Curve], StoppingConfig, bool]) -> tuple[str, list[ReplayResult]]:
    key, curves, config, use_lr = args
    return key, [run_curve(c, config, use_lr) for c in curves]


def replay_all(
    datasets: Sequence[Dataset], configs: dict[str, StoppingConfig], jobs: int
) -> dict[tuple[str, str], list[ReplayResult]]:
    """Every config over every dataset, in worker processes: ``{(config name, dataset key): results}``."""
    work = []
    for name, cfg in configs.items():
        for d in datasets:
            # Split big datasets so that the workers stay busy.
            step = max(1, math.ceil(len(d.curves) / 4))
            for k in range(0, len(d.curves), step):
                work.append((f"{name}|{d.key}|{k}", d.curves[k : k + step], cfg, d.use_lr))
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        parts = dict(pool.map(_job, work))
    out: dict[tuple[str, str], list[ReplayResult]] = {}
    for key in sorted(parts, key=lambda k: (k.rsplit("|", 1)[0], int(k.rsplit("|", 1)[1]))):
        name, dkey, _ = key.split("|")
        out.setdefault((name, dkey), []).extend(parts[key])
    return out


# --------------------------------------------------------------------------- statistics


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


def first_allowed_stops(curves: Sequence[Curve], results: Sequence[ReplayResult], fraction: float) -> int:
    """Marginal-gain stops at the first check past ``fraction`` of the planned run (the guard's first)."""
    n = 0
    for c, r in zip(curves, results, strict=True):
        if r.stop_reason is None or r.stop_reason.value != "marginal_gain":
            continue
        i = int(np.flatnonzero(c.epochs == r.stop_epoch)[0])
        horizon = float(c.epochs[-1])
        if i > 0 and float(c.epochs[i - 1]) <= fraction * horizon < float(c.epochs[i]):
            n += 1
    return n


def fmt_stops(stops: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(stops.items(), key=lambda kv: -kv[1]))


def line(s: Stats) -> str:
    return f"saved {100 * s.saved:5.1f}%  regret {s.regret:8.4g}  harm {100 * s.harm:5.1f}%"


def fmt_ratio(r: float) -> str:
    return "inf" if math.isinf(r) else "n/a" if math.isnan(r) else f"{r:.2f}"


def capped(r: float) -> float:
    return 0.0 if math.isnan(r) else min(r, RATIO_CAP)


# --------------------------------------------------------------------------- no-harm targets


def p10_regret(table: Sequence[Rule]) -> float:
    return next(r.stats.regret for r in table if r.patience == 10 and r.min_delta == 0.0)


def harm_checks(d: Dataset, s: Stats, table: Sequence[Rule]) -> list[tuple[str, bool]]:
    """The no-harm targets that apply to a dataset: (description, holds)."""
    out = []
    if d.is_mlperf:
        out.append((f"{d.key}: regret {s.regret:.3f} points (<= 0.5)", s.regret <= 0.5))
    if d.step_schedule:
        ref = p10_regret(table)
        frac = s.regret / ref if ref > 0 else (0.0 if s.regret == 0 else math.inf)
        out.append(
            (
                f"{d.key}: regret {s.regret:.4g} = {frac:.2f} x patience 10's {ref:.4g} (<= 0.5)",
                s.regret <= 0.5 * ref,
            )
        )
    return out


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
    per_check = 1e3 * c1 / n1
    print(f"  {n1} vs {n0} checks: {ratio:.1f}x the time (CPU {cpu_ratio:.1f}x; {n1 / n0:.0f}x is linear)")
    return [
        f"replay time {n1} vs {n0} checks: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU (<= 20):"
        f" {'PASS' if min(ratio, cpu_ratio) <= 20 else 'FAIL'}",
        f"CPU time per check over {n1} checks: {per_check:.2f} ms (about 2 or less):"
        f" {'PASS' if per_check <= 2.5 else 'FAIL'}",
    ]


# --------------------------------------------------------------------------- leave one source out


def loso_configs(default: StoppingConfig) -> dict[str, StoppingConfig]:
    configs = {"default": default}
    for r in LOSO_GRID["min_relative_gain"]:
        for f in LOSO_GRID["min_horizon_fraction"]:
            cfg = replace(default, min_relative_gain=r, min_horizon_fraction=f)
            if cfg != default:
                configs[f"min_relative_gain={r},min_horizon_fraction={f}"] = cfg
    for p in LOSO_PATIENCE:
        configs[f"patience={p}"] = replace(default, patience=p)
    return configs


def loso(
    datasets: Sequence[Dataset],
    tables: dict[str, list[Rule]],
    results: dict[tuple[str, str], list[ReplayResult]],
    configs: dict[str, StoppingConfig],
) -> list[str]:
    """For each source: the setting best on the others (largest smallest capped ratio, no-harm
    targets kept on the others), judged on the source left out. Prints a table; returns verdicts."""

    def evaluate(name: str, d: Dataset) -> tuple[Stats, float, bool]:
        s = stats(d.curves, results[(name, d.key)])
        ratio, _ = saved_ratio(s, tables[d.key])
        return s, ratio, all(ok for _, ok in harm_checks(d, s, tables[d.key]))

    table = {(name, d.key): evaluate(name, d) for name in configs for d in datasets}
    sources = sorted({d.source for d in datasets})
    print("\n== Leave one source out: each setting chosen without a file, judged on it ==")
    print(f"settings tried: {len(configs)} ({', '.join(configs)})")
    verdicts = []
    for held in sources:
        train = [d for d in datasets if d.source != held]
        test = [d for d in datasets if d.source == held]

        def score(name: str, train: list[Dataset] = train) -> tuple[bool, float]:
            rows = [table[(name, d.key)] for d in train]
            return all(ok for _, _, ok in rows), min(capped(r) for _, r, _ in rows)

        chosen = max(configs, key=lambda n: (*score(n), n == "default"))
        feasible, train_min = score(chosen)
        print(
            f"\nleft out {held}: chosen on the others: {chosen} (smallest ratio there {train_min:.2f}"
            f"{'' if feasible else ', no-harm targets missed'})"
        )
        for d in test:
            s, r, ok = table[(chosen, d.key)]
            _, r0, _ = table[("default", d.key)]
            missed = "" if ok else "  (no-harm missed)"
            print(
                f"  {d.key:45s} chosen: {line(s)}  ratio {fmt_ratio(r):>5s}{missed}"
                f"   | default: ratio {fmt_ratio(r0)}"
            )
            verdicts.append(
                f"leave-one-source-out {d.key}: ratio {fmt_ratio(r)} (>= {RATIO_TARGET}):"
                f" {'PASS' if capped(r) >= RATIO_TARGET else 'FAIL'}"
            )
    return verdicts


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves_dir", nargs="?", type=Path, default=DEFAULT_CURVES)
    parser.add_argument("--step-curves", type=Path, default=DEFAULT_STEP_CURVES)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--no-loso", action="store_true", help="skip the leave-one-source-out check")
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
    datasets = load_datasets(args.curves_dir, args.step_curves)
    if not datasets:
        print(f"no CSV files in {args.curves_dir}", file=sys.stderr)
        return 1
    default = StoppingConfig()
    print(f"policy defaults: {default.to_dict()}")

    # Timing first, before the worker processes compete for the cores.
    long_curves = [c for d in datasets if not d.step_schedule for c in d.curves if len(c.metrics) >= 50]
    timing_curves = long_curves[:60]
    (wall_med, wall_p99), (cpu_med, cpu_p99), n_timed = time_per_decision(timing_curves)

    configs = {"default": default} if args.no_loso else loso_configs(default)
    results = replay_all(datasets, configs, args.jobs)
    tables = {d.key: patience_table(d.curves) for d in datasets}

    print("\n== Per file: default policy vs the best patience rule of equal or lower regret ==")
    print("(patience 1-100 x min_delta in {0, 1e-3, 1e-2}, the best chosen after the fact per file)")
    verdicts: list[str] = []
    for d in datasets:
        s = stats(d.curves, results[("default", d.key)])
        ratio, rule = saved_ratio(s, tables[d.key])
        print(f"\n{d.key}: {s.n} curves, cost in {d.curves[0].cost_unit}")
        print(f"  policy (defaults)  {line(s)}   stops: {fmt_stops(s.stops)}")
        if rule is None:
            print("  no patience rule has a mean regret as low as the policy's")
        else:
            print(
                f"  best patience rule of equal or lower regret: patience {rule.patience}, min_delta"
                f" {rule.min_delta:g}: {line(rule.stats)}"
            )
        verdict = "PASS" if capped(ratio) >= RATIO_TARGET else "FAIL"
        stretch = "PASS" if capped(ratio) >= RATIO_STRETCH else "FAIL"
        print(
            f"  cost saved: {fmt_ratio(ratio)} x the patience rule's (>= {RATIO_TARGET}: {verdict};"
            f" stretch {RATIO_STRETCH}: {stretch})"
        )
        marginal = s.stops.get("marginal_gain", 0)
        if marginal:
            first = first_allowed_stops(d.curves, results[("default", d.key)], default.min_horizon_fraction)
            print(
                f"  marginal-gain stops at the first check min_horizon_fraction allows: {first} of {marginal}"
            )
        oracle = oracle_at(d.curves, s.regret)
        print(f"  (hindsight oracle at the same mean regret saves {100 * oracle.saved:.1f}%)")
        verdicts.append(f"{d.key}: cost saved {fmt_ratio(ratio)} x the patience rule's (>= 1.5): {verdict}")
        for text, ok in harm_checks(d, s, tables[d.key]):
            verdicts.append(f"{text}: {'PASS' if ok else 'FAIL'}")

    print("\n== Time per decision (50 checks of history, marginal rule active) ==")
    print(
        f"  wall clock: median {wall_med:.2f} ms, p99 {wall_p99:.2f} ms;"
        f" CPU: median {cpu_med:.2f} ms, p99 {cpu_p99:.2f} ms ({n_timed} decisions)"
    )
    verdicts.append(
        f"time per decision: median {cpu_med:.2f} ms CPU ({wall_med:.2f} ms wall), p99 {cpu_p99:.2f} ms CPU"
        f" (median about 2 or less): {'PASS' if cpu_med <= 2.5 else 'FAIL'}"
    )

    if not args.no_loso:
        verdicts += loso(datasets, tables, results, configs)

    print("\n== Targets ==")
    for v in verdicts:
        print("  " + v)
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
