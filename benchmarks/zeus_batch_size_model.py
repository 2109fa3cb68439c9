"""Check the batch-size energy model against the Zeus traces (NSDI'23).

The policy (lightning_green.policy.batch_size) picks the batch size B minimising

    energy_to_target(B) ∝ j_per_sample(B) · (1 + B / B_noise)

(McCandlish et al. 2018: samples to reach a target grow as E_min (1 + B / B_noise)). The
Zeus traces measure both halves for real: epochs to reach each target metric per batch size
(several seeds, ``summary_train.csv``) and seconds per epoch and average GPU power per batch
size (``summary_power_<gpu>.csv``; energy per epoch = time × power, which is proportional to
joules per sample since an epoch is the same number of samples at every batch size).

For every (workload, target, GPU) this script

1. computes the true energy to target per batch size: median epochs to target over the seeds
   (a seed that never got there counts as infinite) × energy per epoch at the GPU's default
   (maximum) power limit;
2. fits the model to the epochs-to-target data: epochs(B) = e_min (1 + B / B_noise), linear in
   B, by non-negative least squares on relative errors over the batch sizes whose median
   reached the target ("global" fit, every size of the train trace), and again on the three
   such sizes nearest the user's default only ("local" fit: what an online estimate near the
   default sees);
3. compares, as regret in energy to target against the oracle (the true argmin):
   - model: argmin of j_per_sample(B)·(1 + B/B_noise) over every size, global fit (the
     principle, in-sample: the fit has seen every size's epochs),
   - model-local: the same with the local fit (out-of-sample for sizes far from the default),
   - policy: what BatchSizePolicy would do with its defaults: local fit, candidates within the
     default ×/÷ 8, switch only for a predicted saving over 10 %,
   - min-J/sample: the size with the least energy per epoch (what a naive tuner picks),
   - min-J-range: the same within the default ×/÷ 8,
   - default: the Zeus default batch size of the workload (capped to what fits the GPU).

A choice whose median seed never reached the target has infinite regret (counted apart).

Run (from the repository root):

    python benchmarks/zeus_batch_size_model.py [--data benchmarks/data/zeus_traces]
        [--power-limits max|all] [--targets default|all]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_green.policy.batch_size import choose_batch_size  # noqa: E402

DEFAULT_DATA = ROOT / "benchmarks" / "data" / "zeus_traces"
GPUS = ("a40", "p100", "rtx6000", "v100")

# The Zeus defaults (examples/research_reproducibility/zeus_nsdi23/run_alibaba.py): the batch
# size a user would start from and the target metric of each workload.
ZEUS_DEFAULTS: dict[tuple[str, str, str], tuple[int, float]] = {
    ("cifar100", "shufflenetv2", "adadelta"): (1024, 0.6),
    ("imagenet", "resnet50", "adadelta"): (256, 0.65),
    ("squad", "bert_base_uncased", "adamw"): (32, 84.0),
    ("librispeech", "deepspeech2", "adamw"): (256, 40.0),
    ("movielens-1m", "ncf", "adam"): (1024, 0.41),
    ("sentiment140", "bert_base_uncased", "adamw"): (128, 0.84),
}
POLICY_MARGIN = 0.1  # BatchSizePolicy's default switch_margin
POLICY_MAX_FACTOR = 8  # BatchSizePolicy's default max_factor: candidates within default ×/÷ 8
STRATEGIES = ("model", "model-local", "policy", "min-J/sample", "min-J-range", "default")

Workload = tuple[str, str, str]


@dataclass
class Fit:
    b_noise: float  # samples; inf: no growth of epochs with B seen
    e_min: float  # epochs
    rel_rmse: float  # root mean square relative error of the fitted epochs
    median_abs_rel_err: float
    n_sizes: int


def read_train(path: Path) -> dict[Workload, dict[float, dict[int, list[float]]]]:
    """epochs[workload][target][batch_size] = epochs to target per seed (inf: never)."""
    rows = list(csv.DictReader(path.open()))
    runs: dict[tuple[Workload, int], set[str]] = defaultdict(set)
    for r in rows:
        runs[((r["dataset"], r["network"], r["optimizer"]), int(r["batch_size"]))].add(r["run"])
    reached: dict[tuple[Workload, float, int], dict[str, float]] = defaultdict(dict)
    targets: dict[Workload, set[float]] = defaultdict(set)
    for r in rows:
        wl = (r["dataset"], r["network"], r["optimizer"])
        t = float(r["target_metric"])
        targets[wl].add(t)
        e = float(r["target_epoch"]) if r["target_epoch"] not in ("", "nan", "NaN") else math.inf
        reached[(wl, t, int(r["batch_size"]))][r["run"]] = e if math.isfinite(e) else math.inf
    out: dict[Workload, dict[float, dict[int, list[float]]]] = defaultdict(dict)
    for (wl, bs), seeds in runs.items():
        for t in targets[wl]:
            got = reached.get((wl, t, bs), {})
            out[wl].setdefault(t, {})[bs] = [got.get(s, math.inf) for s in sorted(seeds)]
    return out


def read_power(path: Path) -> dict[Workload, dict[int, dict[int, float]]]:
    """joules_per_epoch[workload][batch_size][power_limit]."""
    out: dict[Workload, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in csv.DictReader(path.open()):
        wl = (r["dataset"], r["network"], r["optimizer"])
        out[wl][int(r["batch_size"])][int(r["power_limit"])] = float(r["time_per_epoch"]) * float(
            r["average_power"]
        )
    return out


def median_epochs(seeds: list[float]) -> float:
    return float(np.median(np.asarray(seeds, dtype=float)))  # inf where most seeds never got there


def fit_b_noise(epochs: dict[int, float]) -> Fit | None:
    """Fit epochs(B) = a + c·B (a = e_min, c = e_min / B_noise) on relative errors, a, c >= 0."""
    pts = sorted((b, e) for b, e in epochs.items() if math.isfinite(e) and e > 0)
    if len(pts) < 2:
        return None
    b = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts], dtype=float)
    w = 1.0 / y
    (a, c), _ = nnls(np.column_stack([w, w * b]), w * y)
    pred = a + c * b
    rel = (pred - y) / y
    # No measurable growth of epochs with B: the noise scale is beyond every size tried.
    b_noise = math.inf if c * b.max() <= 1e-9 * max(a, 1e-300) else a / c
    return Fit(
        b_noise=float(b_noise),
        e_min=float(a),
        rel_rmse=float(np.sqrt(np.mean(rel**2))),
        median_abs_rel_err=float(np.median(np.abs(rel))),
        n_sizes=len(pts),
    )


def local_sizes(epochs: dict[int, float], default: int, count: int = 3) -> list[int]:
    """The ``count`` sizes nearest the default (log scale) whose median reached the target.

    What probing near the user's batch size sees; when the default itself never reaches the
    target, its nearest neighbours that do.
    """
    feasible = [b for b, e in epochs.items() if math.isfinite(e)]
    return sorted(sorted(feasible, key=lambda b: (abs(math.log2(b / default)), b))[:count])


def fmt_b(b: float) -> str:
    if math.isinf(b):
        return "inf"
    return f"{b:.0f}" if b >= 10 else f"{b:.1f}"


def fmt_regret(r: float) -> str:
    return "never" if math.isinf(r) else f"{100 * r:.0f}%"


def fit_all(
    train: dict[Workload, dict[float, dict[int, list[float]]]],
) -> tuple[dict[tuple[Workload, float], dict[int, float]], dict[tuple[Workload, float], Fit | None]]:
    """Median epochs to target per batch size, and the global fit, per (workload, target)."""
    medians: dict[tuple[Workload, float], dict[int, float]] = {}
    fits: dict[tuple[Workload, float], Fit | None] = {}
    for wl, by_target in train.items():
        for t, by_bs in by_target.items():
            med = {bs: median_epochs(seeds) for bs, seeds in by_bs.items()}
            medians[(wl, t)] = med
            fits[(wl, t)] = fit_b_noise(med)
    return medians, fits


def evaluate(data: Path, power_limits: str = "max", targets: str = "all") -> tuple[list[dict], dict]:
    """Every scenario's choices and regrets; also returns the trace tables used."""
    train = read_train(data / "summary_train.csv")
    power = {g: read_power(data / f"summary_power_{g}.csv") for g in GPUS}
    medians, fits = fit_all(train)
    results: list[dict] = []
    for g in GPUS:
        for wl, by_bs in power[g].items():
            if wl not in train:
                continue
            default_bs, default_t = ZEUS_DEFAULTS[wl]
            pls = sorted({pl for per in by_bs.values() for pl in per})
            for pl in [max(pls)] if power_limits == "max" else pls:
                j_epoch = {bs: per[pl] for bs, per in by_bs.items() if pl in per}
                for t in sorted(train[wl]):
                    if targets == "default" and not math.isclose(t, default_t):
                        continue
                    med = medians[(wl, t)]
                    fit = fits[(wl, t)]
                    sizes = sorted(b for b in j_epoch if b in med)
                    eta = {b: med[b] * j_epoch[b] for b in sizes}
                    feasible = [b for b in sizes if math.isfinite(eta[b])]
                    if len(feasible) < 2 or fit is None:
                        continue
                    oracle = min(feasible, key=lambda b: (eta[b], b))
                    default = max([b for b in sizes if b <= default_bs], default=min(sizes))
                    jps = {b: j_epoch[b] for b in sizes}
                    fit_local = fit_b_noise({b: med[b] for b in local_sizes(med, default)})
                    b_local = fit_local.b_noise if fit_local else None
                    lo, hi = default / POLICY_MAX_FACTOR, default * POLICY_MAX_FACTOR
                    in_range = {b: j for b, j in jps.items() if lo <= b <= hi}
                    picks = {
                        "model": choose_batch_size(jps, fit.b_noise)[0],
                        "model-local": choose_batch_size(jps, b_local)[0] if b_local is not None else default,
                        "policy": (
                            choose_batch_size(in_range, b_local, default, switch_margin=POLICY_MARGIN)[0]
                            if b_local is not None
                            else default
                        ),
                        "min-J/sample": min(sizes, key=lambda b: (j_epoch[b], b)),
                        "min-J-range": min(in_range, key=lambda b: (j_epoch[b], b)),
                        "default": default,
                    }
                    results.append(
                        dict(
                            gpu=g,
                            pl=pl,
                            max_pl=max(pls),
                            wl=wl,
                            target=t,
                            is_default_target=math.isclose(t, default_t),
                            fit=fit,
                            fit_local=fit_local,
                            oracle=oracle,
                            picks=picks,
                            regret={k: eta[b] / eta[oracle] - 1.0 for k, b in picks.items()},
                        )
                    )
    return results, {"train": train, "fits": fits}


def summary_stats(results: list[dict]) -> dict[str, dict[str, float]]:
    """Per strategy: share at the oracle / within 5, 10, 25 %, median, mean, geo-mean regret, never."""
    out = {}
    for k in STRATEGIES:
        rg = np.array([r["regret"][k] for r in results], dtype=float)
        fin = rg[np.isfinite(rg)]
        out[k] = {
            "at_oracle": float(np.mean(rg <= 1e-12)),
            "within_5": float(np.mean(rg <= 0.05)),
            "within_10": float(np.mean(rg <= 0.10)),
            "within_25": float(np.mean(rg <= 0.25)),
            "median": float(np.median(rg)),
            "mean": float(np.mean(fin)),
            "geo_mean": float(np.exp(np.mean(np.log1p(fin))) - 1.0),
            "never": int(np.sum(~np.isfinite(rg))),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--power-limits", choices=("max", "all"), default="max")
    parser.add_argument("--targets", choices=("default", "all"), default="all", help="targets in the summary")
    args = parser.parse_args(argv)

    results, tables = evaluate(args.data, args.power_limits, args.targets)
    train, fits = tables["train"], tables["fits"]

    print("Fitted gradient noise scale B_noise (samples) per target: epochs(B) = e_min (1 + B/B_noise)")
    print("(fit error) = median |relative error| of the fitted epochs-to-target over batch sizes\n")
    for wl in sorted(train):
        default_bs, default_t = ZEUS_DEFAULTS[wl]
        cells = []
        for t in sorted(train[wl]):
            f = fits[(wl, t)]
            mark = "*" if math.isclose(t, default_t) else ""
            cell = f"{fmt_b(f.b_noise)}({100 * f.median_abs_rel_err:.0f}%)" if f else "-"
            cells.append(f"{t:g}{mark}:{cell}")
        print(f"{wl[0]}/{wl[1]}  [default B={default_bs}, * = default target]")
        print("   " + "  ".join(cells))
    print()

    # 3. Table at the default targets.
    print("Energy to target at the Zeus default target, default (max) power limit; regret vs the oracle")
    short = {
        "model": "model",
        "model-local": "m-local",
        "policy": "policy",
        "min-J/sample": "minJ",
        "min-J-range": "minJ-rg",
        "default": "default",
    }
    head = f"{'workload':<31}{'gpu':<8}{'B_noise':>8}{'local':>7}{'fit err':>8}{'oracle':>7}  " + "".join(
        f"{short[k]:>15}" for k in STRATEGIES
    )
    print(head)
    print("-" * len(head))
    for r in results:
        if not r["is_default_target"] or r["pl"] != r["max_pl"]:
            continue
        p, rg = r["picks"], r["regret"]
        local = fmt_b(r["fit_local"].b_noise) if r["fit_local"] else "-"
        print(
            f"{r['wl'][0] + '/' + r['wl'][1]:<31}{r['gpu']:<8}{fmt_b(r['fit'].b_noise):>8}{local:>7}"
            f"{100 * r['fit'].median_abs_rel_err:>7.0f}%{r['oracle']:>7}  "
            + "".join(f"{str(p[k]) + ' ' + fmt_regret(rg[k]):>15}" for k in STRATEGIES)
        )
    print("  cells: chosen batch size and its regret; B_noise: global fit, local: fit on the 3 sizes")
    print(
        "  nearest the default that reached the target; fit err: median |relative error| of the global fit.\n"
    )

    # 4. Summaries.
    def summarise(rows: list[dict], title: str) -> None:
        extra = " × power limit" if args.power_limits == "all" else ""
        print(f"{title}: {len(rows)} scenarios (workload × target × GPU{extra})")
        print(
            f"{'strategy':<14}{'=oracle':>8}{'<=5%':>7}{'<=10%':>7}{'<=25%':>7}{'median':>9}"
            f"{'mean*':>9}{'geo-mean':>10}{'never':>7}"
        )
        for k, st in summary_stats(rows).items():
            print(
                f"{k:<14}{100 * st['at_oracle']:>7.0f}%{100 * st['within_5']:>6.0f}%"
                f"{100 * st['within_10']:>6.0f}%{100 * st['within_25']:>6.0f}%"
                f"{100 * st['median']:>8.1f}%{100 * st['mean']:>8.1f}%"
                f"{100 * st['geo_mean']:>9.1f}%{st['never']:>7}"
            )
        print("  regret = energy to target of the choice / oracle's - 1; mean* and geo-mean over choices")
        print("  that reached the target; never = the choice's median seed never reached it.\n")

    summarise([r for r in results if r["is_default_target"]], "Default targets")
    if args.targets == "all":
        summarise(results, "All targets")
        fit_errs = np.array([f.median_abs_rel_err for f in fits.values() if f is not None])
        rmse = np.array([f.rel_rmse for f in fits.values() if f is not None])
        print(
            f"Fit quality over {len(fit_errs)} (workload, target) fits: median |rel. error| of "
            f"epochs-to-target {100 * np.median(fit_errs):.1f}% (per-fit medians: 25th/75th pct "
            f"{100 * np.percentile(fit_errs, 25):.1f}%/{100 * np.percentile(fit_errs, 75):.1f}%), "
            f"median relative RMSE {100 * np.median(rmse):.1f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
