"""Benchmark: the energy-aware stopping policy against Lightning's patience rules on real curves.

Replays the policy with its default arguments over every CSV in the curves directory, over the
smooth-schedule curves (``benchmarks/data/smooth_schedule_curves.csv``: cosine, one-cycle and
constant learning rates, SGD and Adam(W); no decay for the callback to announce, so replayed
without learning rates) and over the learning-rate step-schedule curves
(``benchmarks/data/step_schedule_curves.csv``, without and with the learning rates as schedule
information), each file split by metric kind (loss, accuracy), and prints per file:

- mean cost saved (fraction of each curve's cumulative cost not spent), mean regret (best metric of
  the whole curve minus best up to the stop, improving direction), harm rate (share of curves
  whose regret exceeds 0.01 nats for losses, 0.5 points for accuracies) and the stop reasons;
- the best Lightning ``EarlyStopping`` rule of equal or lower mean regret, chosen after the fact for
  that file among patience 1-100 x ``min_delta`` in {0, 1e-3, 1e-2} (the plateau module reproduces
  Lightning's rule exactly), and the ratio of the policy's cost saved to that rule's
  (target >= 1.5, stretch 2);
- how many marginal-gain stops fell on the first check ``min_horizon_fraction`` allowed;
- what a hindsight oracle saves at the same mean regret (context: what was possible): one
  tolerance for all curves, and the best stop per curve; and, at a tenth, a half and one harm
  threshold of mean regret, the best stops per curve against the best patience rule; and what the
  1.5x target takes at several levels of regret, as a share of the best stops per curve there
  (a rule that knows only the history reaches a share of them: the policy's own is printed).

Then the no-harm targets (MLPerf regret <= 0.5 points; step-schedule regret <= 0.5 x patience 10's),
the time per decision, and a leave-one-source-out check of the defaults: for each source (file),
the setting of ``min_relative_gain`` x ``min_horizon_fraction``, ``patience`` or
``patience_rest_fraction`` (a small grid around the defaults) that does best on the *other*
sources (largest smallest ratio, no-harm targets kept) is judged on the source left out.

What is measured (cost saved, regret, harm, the patience rules, the oracle) is in
``stopping_measures.py``, the timing in ``stopping_timing.py``.

Usage::

    python benchmarks/stopping.py [CURVES_DIR] [--step-curves CSV] [--smooth-curves CSV]
                                  [--jobs N] [--no-loso]
    python benchmarks/stopping.py --scaling     # replay time: 2,000 vs 20,000 checks
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lightning_green.offline import Curve, ReplayResult, policy_inputs, read_curves_csv, result_at
from lightning_green.policy import StoppingConfig, StoppingPolicy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stopping_measures import (  # noqa: E402
    Rule,
    Stats,
    best_rule,
    best_stops_at,
    group_of,
    harm_threshold,
    oracle_at,
    p10_regret,
    patience_table,
    saved_ratio,
    stats,
)
from stopping_timing import scaling, time_per_decision  # noqa: E402

DEFAULT_CURVES = HERE / "data" / "curves"
DEFAULT_STEP_CURVES = HERE / "data" / "step_schedule_curves.csv"
DEFAULT_SMOOTH_CURVES = HERE / "data" / "smooth_schedule_curves.csv"
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
LOSO_REST_FRACTION = (0.33, 0.67, None)
"""``patience_rest_fraction`` values tried (each with the other arguments at their defaults)."""

# --------------------------------------------------------------------------- datasets


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


def load_datasets(
    curves_dir: Path, step_curves: Path | None, extra_curves: Sequence[Path] = ()
) -> list[Dataset]:
    """The curve files by metric kind: ``curves_dir``'s and ``extra_curves`` (replayed without
    learning rates), then ``step_curves`` without and with them."""
    out: list[Dataset] = []
    files = sorted(curves_dir.glob("*.csv")) + [f for f in extra_curves if f.exists()]
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


def run_curve(curve: Curve, config: StoppingConfig, use_lr: bool) -> ReplayResult:
    """The policy over one curve, one check at a time, until it stops, told at each check what
    ``lightning-green replay`` tells it (:func:`~lightning_green.offline.policy_inputs`): progress
    from the CSV's ``epoch``, the curve's last epoch as the horizon, and with ``use_lr`` the
    distance to the next step drop of the logged learning rates."""
    config = replace(config, mode=curve.mode)
    policy = StoppingPolicy(config)
    inputs = policy_inputs(curve, use_lr_schedule=use_lr)
    decision = None
    for i in range(len(curve.metrics)):
        decision = policy.update(float(curve.metrics[i]), float(curve.costs[i]), **inputs.update_args(i))
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


def gain_forgone(
    curves: Sequence[Curve], results: Sequence[ReplayResult]
) -> tuple[int, float, float, float] | None:
    """How well a stop's projected ``metric_gain_forgone`` (what the summary and MLflow report)
    matched the gain the rest of the curve brought (its regret): ``(stops, mean projected, mean
    realized, mean absolute error in harm thresholds)``, or ``None`` without such stops."""
    projected, realized, error = [], [], []
    for curve, result in zip(curves, results, strict=True):
        savings = result.decision.savings if result.decision is not None else None
        if result.stop_reason is None or savings is None or savings.metric_gain_forgone is None:
            continue
        projected.append(savings.metric_gain_forgone)
        realized.append(result.regret)
        error.append(abs(savings.metric_gain_forgone - result.regret) / harm_threshold(curve))
    if not projected:
        return None
    return len(projected), float(np.mean(projected)), float(np.mean(realized)), float(np.mean(error))


def fmt_stops(stops: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(stops.items(), key=lambda kv: -kv[1]))


def line(s: Stats) -> str:
    return f"saved {100 * s.saved:5.1f}%  regret {s.regret:8.4g}  harm {100 * s.harm:5.1f}%"


def fmt_ratio(r: float) -> str:
    return "inf" if math.isinf(r) else "n/a" if math.isnan(r) else f"{r:.2f}"


def capped(r: float) -> float:
    return 0.0 if math.isnan(r) else min(r, RATIO_CAP)


# --------------------------------------------------------------------------- no-harm targets


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


# --------------------------------------------------------------------------- leave one source out


def versus(saved: float, rule: Rule | None) -> str:
    """`` (r x the patience rule's)``, or nothing when that rule saves nothing."""
    if rule is None or rule.stats.saved <= 0:
        return ""
    return f" ({saved / rule.stats.saved:.2f} x the patience rule's)"


FRONTIER_SHARES = (0.1, 0.5, 1.0)
"""Levels of mean regret, in harm thresholds, at which :func:`frontier` compares."""

NEEDS_SHARES = (0.1, 0.2, 0.5, 1.0, 2.0)
"""Levels of mean regret, in harm thresholds, at which :func:`needs` says what the target asks."""


def frontier(curves: Sequence[Curve], table: Sequence[Rule], best: Sequence[Stats]) -> str:
    """The best stop per curve (``best``, at :data:`FRONTIER_SHARES`) vs the best patience rule there."""
    parts = []
    for share, at in zip(FRONTIER_SHARES, best, strict=True):
        rule = best_rule(table, share * harm_threshold(curves[0]))
        patience = 0.0 if rule is None else rule.stats.saved
        ratio = f"{at.saved / patience:.2f}x" if patience > 0 else "inf"
        parts.append(
            f"{share:g} threshold: best stops {100 * at.saved:.1f}% vs patience"
            f" {100 * patience:.1f}% ({ratio})"
        )
    return "; ".join(parts)


def needs(curves: Sequence[Curve], table: Sequence[Rule], best: Sequence[Stats]) -> str:
    """What :data:`RATIO_TARGET` asks at each of :data:`NEEDS_SHARES`: the cost saved it takes, as a
    share of what the best stop per curve (``best``, hindsight) saves at that mean regret."""
    parts = []
    for share, at in zip(NEEDS_SHARES, best, strict=True):
        rule = best_rule(table, share * harm_threshold(curves[0]))
        patience = 0.0 if rule is None else rule.stats.saved
        parts.append(f"{100 * RATIO_TARGET * patience / at.saved:.0f}%" if at.saved > 0 else "n/a")
    return "/".join(parts)


def loso_configs(default: StoppingConfig) -> dict[str, StoppingConfig]:
    configs = {"default": default}
    for r in LOSO_GRID["min_relative_gain"]:
        for f in LOSO_GRID["min_horizon_fraction"]:
            cfg = replace(default, min_relative_gain=r, min_horizon_fraction=f)
            if cfg != default:
                configs[f"min_relative_gain={r},min_horizon_fraction={f}"] = cfg
    for p in LOSO_PATIENCE:
        configs[f"patience={p}"] = replace(default, patience=p)
    for f in LOSO_REST_FRACTION:
        cfg = replace(default, patience_rest_fraction=f)
        if cfg != default:
            configs[f"patience_rest_fraction={f}"] = cfg
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
    parser.add_argument(
        "--smooth-curves",
        type=Path,
        default=DEFAULT_SMOOTH_CURVES,
        help="cosine / one-cycle / constant-rate curves, replayed without learning rates",
    )
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
    datasets = load_datasets(args.curves_dir, args.step_curves, [args.smooth_curves])
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
        forgone = gain_forgone(d.curves, results[("default", d.key)])
        if forgone is not None:
            n, projected, realized, error = forgone
            print(
                f"  metric gain forgone at the {n} stops before the end: projected {projected:.4g} on"
                f" average, realized {realized:.4g} (mean |error| {error:.2f} harm thresholds)"
            )
        oracle = oracle_at(d.curves, s.regret).saved
        thr = harm_threshold(d.curves[0])
        levels = [share * thr for share in FRONTIER_SHARES]
        at_policy, *at_levels = best_stops_at(d.curves, [s.regret, *levels, *(x * thr for x in NEEDS_SHARES)])
        at_levels, at_needs = at_levels[: len(levels)], at_levels[len(levels) :]
        best = at_policy.saved
        print(
            f"  (hindsight at the same mean regret: one tolerance for all curves saves {100 * oracle:.1f}%"
            f"{versus(oracle, rule)}, the best stop per curve {100 * best:.1f}%{versus(best, rule)})"
        )
        print("  (at lower regret: " + frontier(d.curves, tables[d.key], at_levels) + ")")
        reached = f"{100 * s.saved / best:.0f}%" if best > 0 else "n/a"
        print(
            f"  ({RATIO_TARGET}x the patience rules takes, at a mean regret of"
            f" {'/'.join(f'{x:g}' for x in NEEDS_SHARES)} harm thresholds,"
            f" {needs(d.curves, tables[d.key], at_needs)} of what the best stop per curve saves there;"
            f" the policy saves {reached} of it at its own regret)"
        )
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
