"""Energy to a target accuracy on a GPU: adaptive batch size + precision vs batch 32 / 32-true.

The GPU counterpart of ``benchmarks/adapt_cpu.py``: a CNN large enough to keep a GPU busy, on
real data that loads offline - scikit-learn's handwritten digits upsampled to ``--side``
pixels, each epoch showing every training image ``--repeat`` times under random shifts (real
images, augmented; no synthetic data) - trained to ``--target`` % validation accuracy once with
the fixed default (batch 32, ``32-true``) and once with ``AdaptiveBatchSize`` and
``AdaptivePrecision``, per seed, side by side. Energy is the shared EnergyMonitor's (NVML on
NVIDIA GPUs, plus RAPL where readable; the label is printed). The precision policy has to find
``bf16-mixed`` by measurement; the target is at least 1.5x less energy than the fixed run.

    python benchmarks/adapt_gpu.py [--seeds 0,1,2] [--target 99] [--side 64] [--repeat 8]
    python benchmarks/adapt_gpu.py --smoke      # tiny, on the CPU, checks it runs (CI)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(Path(__file__).resolve().parent)]

import logging  # noqa: E402

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from adapt_cpu import Outcome, fit_to_target  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional  # noqa: E402
from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402

from lightning_green import AdaptiveBatchSize, AdaptivePrecision  # noqa: E402

for name in ("pytorch_lightning", "lightning", "lightning.pytorch"):
    logging.getLogger(name).setLevel(logging.ERROR)


class Repeated(Dataset):
    """A dataset shown ``repeat`` times per epoch."""

    def __init__(self, base: TensorDataset, repeat: int) -> None:
        self.base, self.repeat = base, repeat

    def __len__(self) -> int:
        return len(self.base) * self.repeat

    def __getitem__(self, index: int):
        return self.base[index % len(self.base)]


class UpsampledDigits(pl.LightningDataModule):
    """scikit-learn's digits upsampled to ``side`` x ``side`` (bilinear), as (N, 1, side, side) in [0, 1].

    Args:
        batch_size: Training batch size (the adaptive callback changes it).
        side: Image side in pixels.
        repeat: Times each training image is shown per epoch (with random shifts in the model).
        seed: Seed of the train/validation split (20 % validation).
        num_workers: DataLoader workers.
    """

    def __init__(
        self, batch_size: int = 32, side: int = 64, repeat: int = 8, seed: int = 0, num_workers: int = 2
    ):
        super().__init__()
        self.batch_size, self.side, self.repeat, self.seed, self.num_workers = (
            batch_size,
            side,
            repeat,
            seed,
            num_workers,
        )
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = load_digits()
        images = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
        images = functional.interpolate(
            images, size=(self.side, self.side), mode="bilinear", align_corners=False
        )
        labels = torch.tensor(data.target, dtype=torch.long)
        order = np.random.default_rng(self.seed).permutation(len(labels))
        n_val = round(len(labels) * 0.2)
        val_idx, train_idx = torch.tensor(order[:n_val]), torch.tensor(order[n_val:])
        self.train_set = Repeated(TensorDataset(images[train_idx], labels[train_idx]), self.repeat)
        self.val_set = TensorDataset(images[val_idx], labels[val_idx])

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 512, False)


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DigitsCNN(pl.LightningModule):
    """A VGG-style CNN (three stages of two 3x3 convolutions) with random-shift augmentation.

    Args:
        width: Channels of the first stage (doubled at each of the next two).
        lr: AdamW learning rate at batch 32.
        shift: Maximum random shift in pixels during training (applied on the device).
    """

    def __init__(self, width: int = 64, lr: float = 1e-3, shift: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lr, self.shift = lr, shift
        self.net = nn.Sequential(
            block(1, width),
            nn.MaxPool2d(2),
            block(width, 2 * width),
            nn.MaxPool2d(2),
            block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.shift:
            dx, dy = (int(v) for v in torch.randint(-self.shift, self.shift + 1, (2,)))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        loss = functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean() * 100.0)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def run(seed: int, adaptive: bool, args: argparse.Namespace, **trainer_kwargs) -> Outcome:
    """One fit of ``seed`` to ``args.target``: fixed (batch 32, 32-true) or adaptive.

    ``trainer_kwargs`` go to the Trainer (``benchmarks/gpu_check.py`` passes ``max_time``).
    """
    pl.seed_everything(seed, verbose=False)
    callbacks = None
    if adaptive:
        callbacks = (
            AdaptiveBatchSize(
                min_batch_size=args.min_batch_size, max_batch_size=args.max_batch_size, window_s=args.window_s
            ),
            AdaptivePrecision(window_s=args.window_s, start_step=args.start_step),
        )
    data = UpsampledDigits(
        batch_size=32, side=args.side, repeat=args.repeat, seed=seed, num_workers=args.workers
    )
    return fit_to_target(
        DigitsCNN(width=args.width),
        data,
        callbacks,
        target=args.target,
        max_epochs=args.max_epochs,
        root_dir=args.root / f"seed{seed}-{'adaptive' if adaptive else 'fixed'}",
        accelerator=args.accelerator,
        limit_train_batches=args.limit_train_batches,
        **trainer_kwargs,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, with their defaults (also used by ``benchmarks/gpu_check.py``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--target", type=float, default=99.0, help="validation accuracy to reach, percent")
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--min-batch-size", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=1024)
    parser.add_argument("--window-s", type=float, default=None, help="None: by energy source (1 s with NVML)")
    parser.add_argument("--start-step", type=int, default=20)
    parser.add_argument("--limit-train-batches", type=float, default=1.0)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--root", type=Path, default=Path("/tmp/lightning_green_adapt_gpu"))
    parser.add_argument("--smoke", action="store_true", help="tiny run on the CPU: checks that it runs")
    return parser


def apply_smoke(args: argparse.Namespace) -> None:
    """Shrink ``args`` to the tiny CPU run of ``--smoke`` (meaningless figures; checks that it runs)."""
    args.seeds, args.side, args.repeat, args.width, args.workers = "0", 16, 1, 8, 0
    args.max_epochs, args.target, args.accelerator, args.window_s, args.start_step = 3, 101.0, "cpu", 0.02, 4
    args.min_batch_size, args.max_batch_size, args.limit_train_batches = 16, 64, 12


def main() -> None:
    args = build_parser().parse_args()
    if args.smoke:
        apply_smoke(args)
        torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    device = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.accelerator != "cpu" else "cpu"
    )
    print(
        f"{device}: CNN width {args.width} on digits {args.side}x{args.side} (x{args.repeat} per epoch) to "
        f"val_acc >= {args.target:g} %, fixed batch 32 / 32-true vs AdaptiveBatchSize({args.min_batch_size}.."
        f"{args.max_batch_size}) + AdaptivePrecision"
        + (" [SMOKE: tiny, meaningless figures]" if args.smoke else "")
    )
    rows = []
    for i, seed in enumerate(seeds):
        order = (False, True) if i % 2 == 0 else (True, False)
        results = {adaptive: run(seed, adaptive, args) for adaptive in order}
        fixed, adapt = results[False], results[True]
        ratio = fixed.energy_j / adapt.energy_j if adapt.energy_j > 0 else float("nan")
        rows.append((fixed, adapt, ratio))
        print(
            f"\nseed {seed}: energy source {fixed.source!r}"
            + (" (an ESTIMATE from CPU time, not a measurement)" if "estimate" in fixed.source else "")
            + f"\n  fixed    : {fixed.energy_j:9.1f} J to {fixed.accuracy:5.2f} % in {fixed.epochs:2d} "
            f"epochs ({fixed.seconds:.1f} s){'' if fixed.reached else '  TARGET NOT REACHED'}"
            f"\n  adaptive : {adapt.energy_j:9.1f} J to {adapt.accuracy:5.2f} % in {adapt.epochs:2d} "
            f"epochs ({adapt.seconds:.1f} s){'' if adapt.reached else '  TARGET NOT REACHED'}"
            f"\n  ratio fixed/adaptive energy: {ratio:.2f}x; final batch size {adapt.batch_size}, "
            f"precision {adapt.precision}"
            f"\n  batch-size switches: {adapt.batch_switches or 'none'}"
            f"\n  precision switches : {adapt.precision_switches or 'none'}"
            "\n  precision J/sample : "
            + ", ".join(f"{p} {j * 1e3:.3f} mJ" for p, j in sorted(adapt.j_per_sample.items()))
        )
    ratios = [r for *_, r in rows]
    print(
        f"\nmedian ratio fixed/adaptive energy: {statistics.median(ratios):.2f}x (target >= 1.5x); "
        f"final precisions {[a.precision for _, a, _ in rows]} (target: bf16-mixed where the GPU has it); "
        f"every run reached the target: {all(f.reached and a.reached for f, a, _ in rows)}"
    )


if __name__ == "__main__":
    main()
