"""Overhead of EnergyMonitor on training-step time, measured side by side in one run.

Trains the digits CNN (examples/digits.py) alternately without and with EnergyMonitor (same
seed, same data, interleaved so that machine noise hits both alike) and prints the median
training-step time (consecutive ``on_train_batch_start`` to ``on_train_batch_start``, so every
callback hook in between is included), the median epoch time and their ratios.

    python benchmarks/overhead.py [--rounds 5] [--epochs 3] [--meter auto] [--step-interval 0]

It also times EnergyMonitor's own hooks inside the monitored runs (every hook call, with
``time.perf_counter``: both per-step hooks together per step, the epoch close, and all the
others): their share of the training time is the overhead without the noise of comparing two
runs on a shared machine.

Target: under 1% overhead.
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


class TimedEnergyMonitor(EnergyMonitor):
    """EnergyMonitor whose every hook is timed: per step (``on_train_batch_start`` plus
    ``on_train_batch_end``), the epoch close (``on_train_epoch_end``) and all the others."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batch_hook_s: list[float] = []
        self.epoch_hook_s: list[float] = []
        self.other_hook_s: list[float] = []
        self._batch_start_s = 0.0
        timed = {"on_train_batch_start", "on_train_batch_end", "on_train_epoch_end"}
        for name, hook in vars(EnergyMonitor).items():
            if name.startswith("on_") and callable(hook) and name not in timed:
                setattr(self, name, self._timed(getattr(self, name)))

    def _timed(self, hook):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.other_hook_s.append(time.perf_counter() - t0)

        return call

    def on_train_batch_start(self, *args, **kwargs):
        t0 = time.perf_counter()
        super().on_train_batch_start(*args, **kwargs)
        self._batch_start_s = time.perf_counter() - t0

    def on_train_batch_end(self, *args, **kwargs):
        t0 = time.perf_counter()
        super().on_train_batch_end(*args, **kwargs)
        self.batch_hook_s.append(self._batch_start_s + time.perf_counter() - t0)

    def on_train_epoch_end(self, *args, **kwargs):
        t0 = time.perf_counter()
        super().on_train_epoch_end(*args, **kwargs)
        self.epoch_hook_s.append(time.perf_counter() - t0)


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


def run(with_monitor: bool, args: argparse.Namespace) -> tuple[StepTimer, TimedEnergyMonitor | None]:
    pl.seed_everything(args.seed, verbose=False)
    timer = StepTimer()
    callbacks: list[pl.Callback] = [timer]
    monitor = None
    if with_monitor:
        monitor = TimedEnergyMonitor(
            meter=args.meter, monitor="val_acc", mode="max", step_interval=args.step_interval, summary=False
        )
        callbacks.append(monitor)
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
    return timer, monitor


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
    batch_hook_s, epoch_hook_s, other_hook_s, train_s = [], [], [], 0.0
    for _ in range(args.rounds):
        for with_monitor in (False, True):
            timer, monitor = run(with_monitor, args)
            if monitor is not None:
                batch_hook_s += monitor.batch_hook_s
                epoch_hook_s += monitor.epoch_hook_s
                other_hook_s += monitor.other_hook_s
                train_s += sum(timer.epochs_s)
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
    step_share = statistics.median(batch_hook_s) / step_m
    epoch_close_s = statistics.median(epoch_hook_s)
    total_share = (sum(batch_hook_s) + sum(epoch_hook_s) + sum(other_hook_s)) / train_s
    hook_us = statistics.median(batch_hook_s) * 1e6
    noise = 100 * (max(pairs) - min(pairs)) / 2
    verdict = "MET" if step_share < 0.01 else "NOT MET"
    print(
        f"EnergyMonitor's own hooks, timed inside the monitored runs: {hook_us:.1f} us per step"
        f" = {100 * step_share:.3f}% of the median step; {epoch_close_s * 1e3:.2f} ms per epoch close"
        " (meter read, sums, Lightning's self.log of the epoch metrics); all hooks together"
        f" {100 * total_share:.2f}% of this tiny model's training time"
    )
    print(
        f"target: step-time overhead < 1% -> {100 * step_share:.3f}% per step {verdict}"
        f" (side-by-side step ratio {step_m / step_b:.4f}, run-to-run noise +-{noise:.1f}%);"
        f" the epoch close is a fixed cost, under 0.1% for epochs longer than {epoch_close_s / 0.001:.1f} s"
    )


if __name__ == "__main__":
    main()
