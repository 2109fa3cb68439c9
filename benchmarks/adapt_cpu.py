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
not a measurement: this machine has no RAPL or GPU. Both runs of a seed use the same seed,
data split and initialisation, and the order alternates between seeds so that drifts of the
shared machine hit both alike. One intra-op thread: with two on this shared 2-core box,
OpenMP spin-waiting under other tenants' load inflates CPU time many-fold.

    python benchmarks/adapt_cpu.py [--seeds 0,1,2] [--target 97] [--max-epochs 40]

Targets on this CPU: the precision policy ends on ``32-true``; probing precisions costs at most
5 % extra.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import logging  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from digits import DigitsClassifier, DigitsDataModule  # noqa: E402

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

    def record_adaptation(self, batch: AdaptiveBatchSize, precision: AdaptivePrecision) -> None:
        """Copy the final settings, switches and probing energy (PUE included) from the adaptive callbacks."""
        fields = {**batch.energy_summary_fields(), **precision.energy_summary_fields()}
        self.batch_size, self.precision = fields["batch_size"], fields["precision"]
        self.batch_switches = fields["batch_size_switches"]
        self.precision_switches = fields["precision_switches"]
        self.probe_j = fields["precision_probe_j"]
        self.probe_extra_j = fields["precision_probe_extra_j"] or 0.0
        self.j_per_sample = fields["precision_j_per_sample"]


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
        callbacks=[monitor, *(adaptive or ()), stopper],
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
    return out


def run(seed: int, adaptive: bool, args: argparse.Namespace) -> Outcome:
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
            AdaptivePrecision(window_s=args.precision_window_s),
        )
    return fit_to_target(
        DigitsClassifier(),
        DigitsDataModule(batch_size=32, seed=seed),
        callbacks,
        target=args.target,
        max_epochs=args.max_epochs,
        root_dir=args.root / f"seed{seed}-{'adaptive' if adaptive else 'fixed'}",
        accelerator="cpu",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--target", type=float, default=97.0, help="validation accuracy to reach, percent")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-batch-size", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--window-s", type=float, default=0.05, help="AdaptiveBatchSize window")
    parser.add_argument("--probe-windows", type=int, default=3)
    parser.add_argument("--precision-window-s", type=float, default=0.1, help="AdaptivePrecision window")
    parser.add_argument("--root", type=Path, default=Path("/tmp/lightning_green_adapt_cpu"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]

    print(
        f"digits CNN to val_acc >= {args.target:g} %, fixed batch 32 / 32-true vs AdaptiveBatchSize("
        f"{args.min_batch_size}..{args.max_batch_size}, window {args.window_s:g} s, {args.probe_windows} "
        f"windows) + AdaptivePrecision(window {args.precision_window_s:g} s); {args.threads} thread(s)"
    )
    rows = []
    for i, seed in enumerate(seeds):
        order = (False, True) if i % 2 == 0 else (True, False)
        results = {adaptive: run(seed, adaptive, args) for adaptive in order}
        fixed, adapt = results[False], results[True]
        ratio = fixed.energy_j / adapt.energy_j if adapt.energy_j > 0 else float("nan")
        rows.append((seed, fixed, adapt, ratio))
        share = adapt.probe_j / adapt.energy_j if adapt.energy_j else float("nan")
        extra = adapt.probe_extra_j / adapt.energy_j if adapt.energy_j else float("nan")
        print(
            f"\nseed {seed}: energy source {fixed.source!r} (an ESTIMATE from CPU time, not a measurement)\n"
            f"  fixed    : {fixed.energy_j:7.1f} J to {fixed.accuracy:5.2f} % in {fixed.epochs:2d} epochs "
            f"({fixed.seconds:.1f} s){'' if fixed.reached else '  TARGET NOT REACHED'}\n"
            f"  adaptive : {adapt.energy_j:7.1f} J to {adapt.accuracy:5.2f} % in {adapt.epochs:2d} epochs "
            f"({adapt.seconds:.1f} s){'' if adapt.reached else '  TARGET NOT REACHED'}\n"
            f"  ratio fixed/adaptive energy: {ratio:.2f}x\n"
            f"  final batch size {adapt.batch_size}, final precision {adapt.precision}\n"
            f"  batch-size switches: {adapt.batch_switches or 'none'}\n"
            f"  precision switches : {adapt.precision_switches or 'none'}\n"
            f"  precision J/sample : "
            + ", ".join(f"{p} {j * 1e3:.3f} mJ" for p, j in sorted(adapt.j_per_sample.items()))
            + f"\n  precision probing  : {adapt.probe_j:.2f} J in non-fp32 probe windows = {share:.1%} "
            f"of the run; extra over fp32 {adapt.probe_extra_j:.2f} J = {extra:.1%}"
        )
    ratios = [r for *_, r in rows]
    both = all(f.reached and a.reached for _, f, a, _ in rows)
    print("\nsummary (energy: CPU-time ESTIMATE, 10 W per busy core)")
    print(
        f"  median ratio fixed/adaptive energy to {args.target:g} %: {statistics.median(ratios):.2f}x "
        f"(per seed {', '.join(f'{r:.2f}' for r in ratios)}); every run reached the target: {both}"
    )
    print(
        f"  accuracy reached: fixed {', '.join(f'{f.accuracy:.2f}' for _, f, _, _ in rows)}; "
        f"adaptive {', '.join(f'{a.accuracy:.2f}' for _, _, a, _ in rows)}"
    )
    print(f"  final precision: {', '.join(a.precision for _, _, a, _ in rows)} (target: 32-true on this CPU)")
    print(f"  final batch size: {', '.join(str(a.batch_size) for _, _, a, _ in rows)}")
    shares = [a.probe_j / a.energy_j for _, _, a, _ in rows if a.energy_j]
    extras = [a.probe_extra_j / a.energy_j for _, _, a, _ in rows if a.energy_j]
    print(
        f"  precision probing: median {statistics.median(shares):.1%} of the energy in non-fp32 probe "
        f"windows, median extra over fp32 {statistics.median(extras):.1%} (target <= 5 %)"
    )


if __name__ == "__main__":
    main()
