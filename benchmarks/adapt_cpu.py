"""Energy to a target validation accuracy: adaptive batch size + precision vs batch 32 / 32-true (CPU).

Trains the digits CNN (examples/digits.py, scikit-learn's real handwritten digits) to a target
validation accuracy twice per seed, side by side in one run - once with the fixed default
(batch 32, ``32-true``) and once with ``AdaptiveBatchSize`` and ``AdaptivePrecision`` - and
prints, per seed and as medians: the energy to the target (the shared EnergyMonitor's total
at the end of the first epoch whose validation reached it), the ratio fixed / adaptive (> 1:
the adaptive run needed less), the accuracy reached, the final batch size and precision, and
what probing precisions cost: the energy of the non-baseline probe windows as a share of the
run and the extra over what those samples would have cost in fp32.

Energy here is the labelled CPU-time estimate (CPU time of the process tree x 10 W per core),
not a measurement: this machine has no RAPL or GPU. All runs of a seed use the same seed, data
split and initialisation. Torch's default threads unless ``--threads``; ``--load N`` starts N
busy background processes (numpy matmul loops) for the whole benchmark and kills them at the
end, so every run meets the same competition. Under load the estimate of the same work swings
(OpenMP threads spin-wait, other tenants come and go), so the two runs of a seed run in lockstep:
two processes that alternate epoch by epoch (who goes first alternates by seed), so that the
load of each moment hits both alike; waiting for the turn blocks and costs no CPU time.
``--floor`` also runs the fixed run against itself in lockstep: the scatter of the measurement
alone, the noise floor of a seed's ratio. Under load that floor reaches 1.2x for one pair, more
than the 1.10x the target allows, so ``--repeats R`` runs R lockstep pairs per seed (who goes
first alternating) and judges the seed on the geometric mean of its paired ratios adaptive /
fixed (every pair counts, the run-to-run scatter of the estimate averages out), with a 90 %
t-interval on it, printing every pair's ratio and the epochs each run took to the target.

    python benchmarks/adapt_cpu.py [--seeds 0,1,2] [--target 97] [--max-epochs 40] [--load 1] [--floor]
                                   [--repeats 3]

Targets on this CPU: every seed's adaptive energy <= 1.10x the fixed run's; the precision
policy ends on ``32-true``; probing precisions costs at most 5 % extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import signal
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(ROOT / "benchmarks")]

import logging  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from _load import BusyLoad  # noqa: E402
from digits import DigitsClassifier, DigitsDataModule  # noqa: E402
from scipy import stats  # noqa: E402

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyMonitor  # noqa: E402

for name in ("pytorch_lightning", "lightning", "lightning.pytorch"):
    logging.getLogger(name).setLevel(logging.ERROR)


@dataclass
class Outcome:
    """One run to the target."""

    reached: bool = False
    epochs: int = 0
    energy_j: float = 0.0
    accuracy: float = 0.0
    seconds: float = 0.0
    source: str = ""
    batch_size: int = 32
    precision: str = "32-true"
    batch_switches: str = ""
    precision_switches: str = ""
    probe_j: float = 0.0
    probe_extra_j: float = 0.0
    j_per_sample: dict = field(default_factory=dict)
    batch_probe_j: float = 0.0
    adaptive: bool = False

    def record_adaptation(self, batch: AdaptiveBatchSize, precision: AdaptivePrecision) -> None:
        """Copy the final settings, switches and probing energy (PUE included) from the adaptive callbacks."""
        fields = {**batch.energy_summary_fields(), **precision.energy_summary_fields()}
        self.batch_size, self.precision = fields["batch_size"], fields["precision"]
        self.batch_switches = fields["batch_size_switches"]
        self.precision_switches = fields["precision_switches"]
        self.probe_j = fields["precision_probe_j"]
        self.probe_extra_j = fields["precision_probe_extra_j"] or 0.0
        self.j_per_sample = fields["precision_j_per_sample"]
        self.batch_probe_j = fields["batch_size_probe_j"]


class StopAtTarget(pl.Callback):
    """Stops at the end of the first epoch whose validation accuracy reached the target."""

    def __init__(self, monitor: EnergyMonitor, target: float) -> None:
        self.monitor, self.target = monitor, target
        self.outcome = Outcome()

    def on_train_epoch_end(self, trainer, pl_module):
        record = self.monitor.history[-1]  # closed by the monitor's own hook, which runs first
        self.outcome.epochs = record.epoch + 1
        self.outcome.energy_j = record.total_j
        self.outcome.accuracy = record.metric if record.metric is not None else float("nan")
        if record.metric is not None and record.metric >= self.target:
            self.outcome.reached = True
            trainer.should_stop = True


def fit_to_target(
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    adaptive: tuple[AdaptiveBatchSize, AdaptivePrecision] | None,
    *,
    target: float,
    max_epochs: int,
    root_dir: Path,
    baton: pl.Callback | None = None,
    **trainer_kwargs,
) -> Outcome:
    """Fit (32-true, one device, batch size from the datamodule) until ``val_acc`` reaches ``target``.

    Shared by the CPU and GPU benchmarks so that the fixed and the adaptive runs differ only
    in the callbacks given in ``adaptive``.
    """
    monitor = EnergyMonitor(monitor="val_acc", mode="max", summary=False, prog_bar=False)
    stopper = StopAtTarget(monitor, target)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        devices=1,
        precision="32-true",
        logger=False,
        callbacks=[monitor, *(adaptive or ()), stopper, *([baton] if baton is not None else [])],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root_dir),
        **trainer_kwargs,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    out = stopper.outcome
    out.seconds = time.perf_counter() - start
    out.source = monitor.energy_source or "?"
    if adaptive is not None:
        out.record_adaptation(*adaptive)
        out.adaptive = True
    return out


class Baton(pl.Callback):
    """Lockstep with another run: each epoch waits for this run's turn and hands it over at its end.

    Two runs of a seed then alternate epoch by epoch, so that load that comes and goes hits both
    alike; waiting blocks (no CPU time, so no estimated energy).
    """

    def __init__(self, mine, theirs, theirs_done) -> None:
        self.mine, self.theirs, self.theirs_done = mine, theirs, theirs_done

    def on_train_epoch_start(self, trainer, pl_module):
        while not self.mine.wait(0.05) and not self.theirs_done.is_set():
            pass

    def on_train_epoch_end(self, trainer, pl_module):
        self.mine.clear()
        self.theirs.set()


def _lockstep_child(seed, adaptive, args, mine, theirs, my_done, theirs_done, results) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        out = run(seed, adaptive, args, Baton(mine, theirs, theirs_done))
        results.put((adaptive, dataclasses.asdict(out)))
    finally:
        my_done.set()
        theirs.set()


def lockstep(
    seed: int, args: argparse.Namespace, first_adaptive: bool, both: tuple[bool, bool]
) -> list[Outcome]:
    """Run two runs of ``seed`` (``both``: adaptive or not) in two processes, alternating epochs."""
    ctx = multiprocessing.get_context("spawn")
    turn, done = [ctx.Event(), ctx.Event()], [ctx.Event(), ctx.Event()]
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_lockstep_child,
            args=(seed, both[i], args, turn[i], turn[1 - i], done[i], done[1 - i], results),
        )
        for i in (0, 1)
    ]
    for process in procs:
        process.start()
    turn[0 if both[0] == first_adaptive else 1].set()
    got = [results.get() for _ in procs]
    for process in procs:
        process.join()
    return [Outcome(**out) for _, out in got]


def run(seed: int, adaptive: bool, args: argparse.Namespace, baton: pl.Callback | None = None) -> Outcome:
    pl.seed_everything(seed, verbose=False)
    callbacks = None
    if adaptive:
        callbacks = (
            AdaptiveBatchSize(
                min_batch_size=args.min_batch_size,
                max_batch_size=args.max_batch_size,
                window_s=args.window_s,
                probe_windows=args.probe_windows,
            ),
            AdaptivePrecision(precisions=args.precisions, window_s=args.precision_window_s),
        )
    return fit_to_target(
        DigitsClassifier(),
        DigitsDataModule(batch_size=32, seed=seed),
        callbacks,
        target=args.target,
        max_epochs=args.max_epochs,
        root_dir=args.root / f"seed{seed}-{'adaptive' if adaptive else 'fixed'}",
        baton=baton,
        accelerator="cpu",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--target", type=float, default=97.0, help="validation accuracy to reach, percent")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--load", type=int, default=0, help="busy background processes during the runs")
    parser.add_argument("--min-batch-size", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument(
        "--window-s", type=float, default=None, help="AdaptiveBatchSize window (default: its own)"
    )
    parser.add_argument("--probe-windows", type=int, default=3)
    parser.add_argument(
        "--precisions", default=None, help="AdaptivePrecision candidates (32-true: batch size alone)"
    )
    parser.add_argument(
        "--precision-window-s", type=float, default=None, help="AdaptivePrecision window (default: its own)"
    )
    parser.add_argument("--root", type=Path, default=Path("/tmp/lightning_green_adapt_cpu"))
    parser.add_argument(
        "--floor", action="store_true", help="also run the fixed run twice in lockstep (the noise floor)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="lockstep pairs per seed; a seed is judged on the geometric mean of its paired ratios",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # kill the load on the way out
    with BusyLoad(args.load):
        compare(seeds, args)


@dataclass
class SeedResult:
    """One seed's pairs: medians, the geometric mean of adaptive/fixed with its interval, the noise floor."""

    seed: int
    fixed: list[Outcome]
    adapted: list[Outcome]
    per_pair: list[float]  # adaptive / fixed, pair by pair
    fixed_j: float  # medians
    adapt_j: float
    ratio: float  # fixed / adaptive: 1 / the geometric mean of per_pair
    low: float  # 90 % interval of adaptive / fixed
    high: float
    floor: float


def paired_interval(logs: list[float], confidence: float = 0.9) -> tuple[float, float, float]:
    """Geometric mean of paired ratios (given as logs) and its two-sided t-interval (nan below two pairs)."""
    if not logs:
        return float("nan"), float("nan"), float("nan")
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def compare(seeds: list[int], args: argparse.Namespace) -> None:
    """Run the fixed and the adaptive run of each seed in lockstep; print per-seed and worst ratios."""
    threads = args.threads or torch.get_num_threads()
    print(
        f"digits CNN to val_acc >= {args.target:g} %, fixed batch 32 / 32-true vs AdaptiveBatchSize("
        f"{args.min_batch_size}..{args.max_batch_size}, window {args.window_s or 'default'} s, "
        f"{args.probe_windows} windows) + AdaptivePrecision({args.precisions or 'all precisions'}, window "
        f"{args.precision_window_s or 'default'} s); {threads} torch thread(s) "
        f"({'set' if args.threads else 'default'}), {args.load} busy background process(es), max_epochs "
        f"{args.max_epochs}; runs of a seed in lockstep by epoch; energy: CPU-time ESTIMATE (10 W per "
        "busy core), not a measurement"
    )
    rows = []
    for seed in seeds:
        pairs = []
        for rep in range(args.repeats):  # who takes the first epoch alternates by seed and repeat
            both = lockstep(seed, args, (seed + rep) % 2 == 1, (False, True))
            pairs.append(tuple(sorted(both, key=lambda o: o.adaptive)))
        fixed_j = statistics.median(f.energy_j for f, _ in pairs)
        adapt_j = statistics.median(a.energy_j for _, a in pairs)
        per_pair = [a.energy_j / f.energy_j if f.energy_j > 0 else float("nan") for f, a in pairs]
        gmean, low, high = paired_interval([math.log(r) for r in per_pair if r > 0])
        runs, floor = [], float("nan")
        for rep, (f, a) in enumerate(pairs):
            tag = f" {rep + 1}" if args.repeats > 1 else ""
            runs += [(f"fixed{tag}", f), (f"adaptive{tag}", a)]
        if args.floor:  # the same fixed run twice in lockstep: what the measurement alone scatters
            pair = lockstep(seed, args, False, (False, False))
            floor = max(o.energy_j for o in pair) / min(o.energy_j for o in pair)
            runs += [("fixed A", pair[0]), ("fixed B", pair[1])]
        ratio = 1.0 / gmean if gmean > 0 else float("nan")  # fixed / adaptive
        fixed_runs, adapted_runs = [f for f, _ in pairs], [a for _, a in pairs]
        rows.append(
            SeedResult(seed, fixed_runs, adapted_runs, per_pair, fixed_j, adapt_j, ratio, low, high, floor)
        )
        print(
            f"\nseed {seed}:\n"
            + "".join(
                f"  {name:11s}: {o.energy_j:7.1f} J to {o.accuracy:5.2f} % in {o.epochs:2d} epochs "
                f"({o.seconds:.1f} s){'' if o.reached else '  TARGET NOT REACHED'}\n"
                for name, o in runs
            )
            + (
                f"  adaptive/fixed per pair: {', '.join(f'{r:.2f}' for r in per_pair)}; geometric mean "
                f"{gmean:.2f}x (90 % interval {low:.2f}-{high:.2f}x); "
                f"medians {adapt_j:.1f} J / {fixed_j:.1f} J\n"
                if args.repeats > 1
                else ""
            )
            + f"  fixed/adaptive {ratio:.2f}x, adaptive/fixed {1 / ratio:.2f}x"
            + (f"; fixed vs fixed {floor:.2f}x (this seed's noise floor)" if args.floor else ""),
            flush=True,
        )
        for rep, (_, adapt) in enumerate(pairs):
            share = adapt.probe_j / adapt.energy_j if adapt.energy_j else float("nan")
            extra = adapt.probe_extra_j / adapt.energy_j if adapt.energy_j else float("nan")
            bshare = adapt.batch_probe_j / adapt.energy_j if adapt.energy_j else float("nan")
            print(
                (f"  adaptive {rep + 1}:\n" if args.repeats > 1 else "")
                + f"  final batch size {adapt.batch_size}, final precision {adapt.precision}\n"
                f"  batch-size switches: {adapt.batch_switches or 'none'}; "
                f"probing {adapt.batch_probe_j:.1f} J = {bshare:.1%} of this run\n"
                f"  precision switches : {adapt.precision_switches or 'none'}\n"
                f"  precision J/sample : "
                + ", ".join(f"{p} {j * 1e3:.3f} mJ" for p, j in sorted(adapt.j_per_sample.items()))
                + f"\n  precision probing  : {adapt.probe_j:.2f} J in non-fp32 probe windows = {share:.1%} "
                f"of the run; extra over fp32 {adapt.probe_extra_j:.2f} J = {extra:.1%}",
                flush=True,
            )
    print("\nsummary (energy: CPU-time ESTIMATE, 10 W per busy core)")
    if args.repeats > 1:
        print(
            f"  ({args.repeats} lockstep pairs per seed: J are medians, a/f the geometric mean of the paired "
            "ratios with its 90 % interval, each pair's a/f in brackets; epochs to the target fixed/adaptive)"
        )
    print(f"  {'seed':>4} {'fixed J':>8} {'adapt J':>8} {'f/a':>5} {'a/f':>5} {'f/f':>5}  batch  precision")
    for row in rows:
        epochs = ", ".join(f"{fo.epochs}/{ao.epochs}" for fo, ao in zip(row.fixed, row.adapted, strict=True))
        print(
            f"  {row.seed:>4} {row.fixed_j:8.1f} {row.adapt_j:8.1f} {row.ratio:5.2f} {1 / row.ratio:5.2f} "
            f"{row.floor:5.2f}  {'/'.join(sorted({str(o.batch_size) for o in row.adapted})):>5}  "
            f"{'/'.join(sorted({o.precision for o in row.adapted}))}"
            + (
                f"  ({row.low:.2f}-{row.high:.2f}) [{', '.join(f'{x:.2f}' for x in row.per_pair)}] "
                f"epochs {epochs}"
                if args.repeats > 1
                else ""
            )
        )
    ratios = [row.ratio for row in rows]
    worst = max(rows, key=lambda row: 1 / row.ratio)
    reached = all(o.reached for row in rows for o in (*row.adapted, *row.fixed))
    print(
        f"  median fixed/adaptive {statistics.median(ratios):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}x); "
        f"worst seed {worst.seed}: adaptive/fixed {1 / worst.ratio:.2f}x (target <= 1.10x); "
        f"every run reached the target: {reached}"
    )
    if args.repeats > 1:
        highs = [row.high for row in rows]
        same = sum(
            fo.epochs == ao.epochs for row in rows for fo, ao in zip(row.fixed, row.adapted, strict=True)
        )
        print(
            f"  upper ends of the seeds' 90 % intervals: {', '.join(f'{h:.2f}' for h in highs)}x; "
            f"epochs to the target the same as the fixed run in "
            f"{same} of {sum(len(row.adapted) for row in rows)} adaptive runs"
        )
        singles = [x for row in rows for x in row.per_pair]
        print(
            f"  single pairs: adaptive/fixed {min(singles):.2f}-{max(singles):.2f}x, "
            f"median {statistics.median(singles):.2f}x"
        )
    adapted = [a for row in rows for a in row.adapted]
    print(f"  final precision: {', '.join(a.precision for a in adapted)} (target: 32-true on this CPU)")
    print(f"  final batch size: {', '.join(str(a.batch_size) for a in adapted)}")
    shares = [a.probe_j / a.energy_j for a in adapted if a.energy_j]
    extras = [a.probe_extra_j / a.energy_j for a in adapted if a.energy_j]
    bshares = [a.batch_probe_j / a.energy_j for a in adapted if a.energy_j]
    print(
        f"  batch-size probing: {', '.join(f'{b:.1%}' for b in bshares)} of each adaptive run's energy "
        f"(budgeted on the projection to max_epochs={args.max_epochs}; these runs stop at the target)"
    )
    print(
        f"  precision probing: median {statistics.median(shares):.1%} (max {max(shares):.1%}) of the "
        f"energy in non-fp32 probe windows, median extra over fp32 {statistics.median(extras):.1%} "
        f"(max {max(extras):.1%}; target <= 5 %)"
    )


if __name__ == "__main__":
    main()
