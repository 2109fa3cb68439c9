"""Overhead of EnergyMonitor on training-step time, measured side by side in one run.

Trains the digits CNN (examples/digits.py) alternately without and with EnergyMonitor (same
seed, same data, interleaved so that machine noise hits both alike) and prints the median
training-step time (consecutive ``on_train_batch_start`` to ``on_train_batch_start``, so every
callback hook in between is included), the median epoch time and their ratios.

    python benchmarks/overhead.py [--rounds 5] [--epochs 3] [--meter auto] [--step-interval 0]

Target: median step-time ratio (with / without) under 1.01.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from digits import DigitsClassifier, DigitsDataModule  # noqa: E402

from lightning_green import EnergyMonitor  # noqa: E402


class StepTimer(pl.Callback):
    """Wall time between consecutive batch starts (within an epoch) and of whole epochs."""

    def __init__(self) -> None:
        self.steps_s: list[float] = []
        self.epochs_s: list[float] = []
        self._last: float | None = None
        self._epoch0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._last = None
        self._epoch0 = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self._last is not None:
            self.steps_s.append(now - self._last)
        self._last = now

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs_s.append(time.perf_counter() - self._epoch0)


def run(with_monitor: bool, args: argparse.Namespace) -> StepTimer:
    pl.seed_everything(args.seed, verbose=False)
    timer = StepTimer()
    callbacks: list[pl.Callback] = [timer]
    if with_monitor:
        callbacks.append(
            EnergyMonitor(
                meter=args.meter,
                monitor="val_acc",
                mode="max",
                step_interval=args.step_interval,
                summary=False,
            )
        )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(batch_size=args.batch_size, seed=args.seed))
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--meter", default="auto")
    parser.add_argument("--step-interval", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    run(False, args)  # warm-up: imports, allocator, data loading
    base_step, mon_step, base_epoch, mon_epoch = [], [], [], []
    for _ in range(args.rounds):
        for with_monitor in (False, True):
            timer = run(with_monitor, args)
            (mon_step if with_monitor else base_step).append(statistics.median(timer.steps_s))
            (mon_epoch if with_monitor else base_epoch).append(statistics.median(timer.epochs_s))
    step_b, step_m = statistics.median(base_step), statistics.median(mon_step)
    epoch_b, epoch_m = statistics.median(base_epoch), statistics.median(mon_epoch)
    pairs = [m / b for m, b in zip(mon_step, base_step, strict=True)]
    print(
        f"device: cpu, torch threads 1, batch {args.batch_size}, {args.rounds} rounds x {args.epochs} epochs,"
        f" meter={args.meter}, step_interval={args.step_interval}"
    )
    print(
        f"median step time   without: {step_b * 1e3:8.3f} ms   with EnergyMonitor: {step_m * 1e3:8.3f} ms"
        f"   ratio {step_m / step_b:.4f}"
    )
    print(
        f"median epoch time  without: {epoch_b * 1e3:8.1f} ms   with EnergyMonitor: {epoch_m * 1e3:8.1f} ms"
        f"   ratio {epoch_m / epoch_b:.4f}"
    )
    ratios = ", ".join(f"{r:.4f}" for r in pairs)
    print(f"per-round step ratios: {ratios}  (median {statistics.median(pairs):.4f})")
    print(f"target: step ratio < 1.01 -> {'MET' if step_m / step_b < 1.01 else 'NOT MET'}")


if __name__ == "__main__":
    main()
