"""Generate real learning curves with learning-rate step schedules.

Small real models (MLPs in ``torch``) are trained on scikit-learn's bundled datasets (digits,
breast_cancer, wine: they load offline) with ``MultiStepLR``/``StepLR`` schedules. At the high
learning rate the validation metric wanders on a long, noisy, flat stretch; at each decay it jumps.
Nothing is simulated: every number is a measured validation loss (nats) or accuracy (points, x100)
after a real epoch of SGD, and ``time_s`` is the measured cumulative wall time.

The curves are written in the long format of ``shared/data/curves``
(``source,curve_id,group,step,epoch,metric_name,metric,higher_is_better,time_s,energy_J``) to
``benchmarks/data/step_schedule_curves.csv``, with one extra column, ``lr``: the learning rate
the epoch was trained at (what the callback knows from the trainer's schedulers, so the benchmark
can replay the policy with and without ``epochs_until_lr_decay``). They are a held-out style
check for the stopping policy (``benchmarks/stopping.py``), not something to tune on.

Usage::

    python benchmarks/make_step_schedule_curves.py [-o benchmarks/data/step_schedule_curves.csv]

Metric values are reproducible bit for bit on the same platform (fixed seeds, one thread); the
wall times naturally differ between machines and runs.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "step_schedule_curves.csv"
LOADERS = {"digits": load_digits, "breast_cancer": load_breast_cancer, "wine": load_wine}
COLUMNS = [
    "source",
    "curve_id",
    "group",
    "step",
    "epoch",
    "metric_name",
    "metric",
    "higher_is_better",
    "time_s",
    "energy_J",
    "lr",
]


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    epochs: int
    schedule: str
    """``multistep`` (milestones as fractions of the epochs), ``step`` (step_size as a fraction),
    ``cosine`` (``CosineAnnealingLR`` over the run), ``onecycle`` (``OneCycleLR`` over the run, per
    batch, peak ``lr``) or ``constant``."""
    fractions: tuple[float, ...]
    gamma: float
    lr: float
    hidden: tuple[int, ...]
    input_noise: float  # std of Gaussian input-noise augmentation (standardised features)
    label_noise: float  # fraction of training labels replaced by random ones (a noisy-label task)
    batch_size: int
    seed: int
    optimizer: str = "sgd"
    """``sgd`` (momentum 0.9, weight decay 5e-4), ``adam`` or ``adamw`` (weight decay 1e-2)."""

    @property
    def run_id(self) -> str:
        sched = "-".join(f"{f:g}" for f in self.fractions)
        opt = "" if self.optimizer == "sgd" else f"_{self.optimizer}"
        return (
            f"{self.dataset}_{self.schedule}{sched}_g{self.gamma:g}{opt}_lr{self.lr:g}_e{self.epochs}"
            f"_h{'x'.join(map(str, self.hidden))}_s{self.seed}"
        )


def configs() -> list[RunConfig]:
    """The grid of runs: three schedule shapes, four lengths, three datasets, a few seeds."""
    runs = []
    shapes = [("multistep", (0.5, 0.75), 0.1), ("multistep", (0.3, 0.6, 0.9), 0.1), ("step", (0.25,), 0.2)]
    for i, (schedule, fractions, gamma) in enumerate(shapes):
        for j, epochs in enumerate((40, 60, 80, 100)):
            seed = 10 * i + j
            runs.append(
                RunConfig("digits", epochs, schedule, fractions, gamma, 0.05, (128,), 1.5, 0.2, 32, seed)
            )
            runs.append(
                RunConfig(
                    "digits", epochs, schedule, fractions, gamma, 0.03, (64, 64), 1.0, 0.1, 32, seed + 100
                )
            )
        runs.append(
            RunConfig("breast_cancer", 60, schedule, fractions, gamma, 0.05, (64,), 1.5, 0.1, 16, 200 + i)
        )
        runs.append(RunConfig("wine", 80, schedule, fractions, gamma, 0.05, (32,), 1.5, 0.1, 8, 300 + i))
    return runs


def make_optimizer(cfg: RunConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The run's optimizer (``cfg.optimizer``) at ``cfg.lr``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {cfg.optimizer!r}")


def make_scheduler(
    cfg: RunConfig, opt: torch.optim.Optimizer, batches: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The run's learning-rate schedule and whether it is stepped per batch (else per epoch)."""
    lr_sched = torch.optim.lr_scheduler
    if cfg.schedule == "multistep":
        return lr_sched.MultiStepLR(opt, [round(f * cfg.epochs) for f in cfg.fractions], cfg.gamma), False
    if cfg.schedule == "step":
        return lr_sched.StepLR(opt, round(cfg.fractions[0] * cfg.epochs), cfg.gamma), False
    if cfg.schedule == "cosine":
        return lr_sched.CosineAnnealingLR(opt, T_max=cfg.epochs), False
    if cfg.schedule == "onecycle":
        return lr_sched.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=batches), True
    if cfg.schedule == "constant":
        return lr_sched.ConstantLR(opt, factor=1.0, total_iters=0), False
    raise ValueError(
        f"schedule must be 'multistep', 'step', 'cosine', 'onecycle' or 'constant', got {cfg.schedule!r}"
    )


def train(cfg: RunConfig) -> list[tuple[int, float, float, float, float]]:
    """Train one model; per epoch: (epoch, val_loss, val_accuracy_x100, cumulative_time_s, lr)."""
    x, y = LOADERS[cfg.dataset](return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, random_state=cfg.seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    x_tr, x_va = scaler.transform(x_tr), scaler.transform(x_va)
    n_classes = int(y.max()) + 1
    rng = np.random.default_rng(cfg.seed)
    if cfg.label_noise > 0:
        flip = rng.random(len(y_tr)) < cfg.label_noise
        y_tr = y_tr.copy()
        y_tr[flip] = rng.integers(0, n_classes, int(flip.sum()))
    xt = torch.tensor(x_tr, dtype=torch.float32)
    xv = torch.tensor(x_va, dtype=torch.float32)
    yt, yv = torch.tensor(y_tr), torch.tensor(y_va)

    torch.manual_seed(cfg.seed)
    layers: list[torch.nn.Module] = []
    width = x.shape[1]
    for h in cfg.hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, n_classes))
    opt = make_optimizer(cfg, model.parameters())
    batches = -(-len(xt) // cfg.batch_size)
    sched, per_batch = make_scheduler(cfg, opt, batches)
    gen = torch.Generator().manual_seed(cfg.seed)

    rows = []
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        lr = opt.param_groups[0]["lr"]
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            xb = xt[idx]
            if cfg.input_noise > 0:
                xb = xb + cfg.input_noise * torch.randn(xb.shape, generator=gen)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx])
            loss.backward()
            opt.step()
            if per_batch:
                sched.step()
        if not per_batch:
            sched.step()
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            val_loss = torch.nn.functional.cross_entropy(logits, yv).item()
            val_acc = (logits.argmax(1) == yv).double().mean().item() * 100.0
        rows.append((epoch, val_loss, val_acc, time.perf_counter() - start, lr))
    return rows


def write_curves(runs: Iterable[RunConfig], out: Path, source: str) -> None:
    """Train every run and write its ``val_loss`` and ``val_accuracy_x100`` curves to ``out``."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    out_rows = []
    for cfg in runs:
        rows = train(cfg)
        for name, col, hib in (("val_loss", 1, 0), ("val_accuracy_x100", 2, 1)):
            curve_id = f"{cfg.run_id}/{name}"
            for step, row in enumerate(rows):
                out_rows.append(
                    [
                        source,
                        curve_id,
                        cfg.dataset,
                        step,
                        row[0],
                        name,
                        repr(float(row[col])),
                        hib,
                        f"{row[3]:.4f}",
                        "",
                        repr(float(row[4])),
                    ]
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(out_rows)
    tmp.replace(out)
    n_curves = len({r[1] for r in out_rows})
    print(f"wrote {n_curves} curves ({len(out_rows)} rows) to {out} in {time.perf_counter() - t0:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    write_curves(configs(), args.out, "sklearn_step_schedule")


if __name__ == "__main__":
    main()
