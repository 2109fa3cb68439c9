"""Generate real learning curves with smooth learning-rate schedules and adaptive optimizers.

The companion of ``make_step_schedule_curves.py`` (same models, datasets and CSV format, its
``train``): small MLPs on scikit-learn's bundled datasets (digits, breast_cancer, wine), trained
with the schedules most runs use today, which decay continuously and have no step ahead for the
callback to announce:

- ``CosineAnnealingLR`` over the run with SGD (momentum 0.9), peak 0.05;
- ``OneCycleLR`` over the run (per batch) with SGD, peak 0.1;
- ``CosineAnnealingLR`` with AdamW, peak 3e-3;
- a constant learning rate with Adam, 1e-3 (no schedule: the validation loss of these small,
  noisy-label tasks turns up once the model starts to overfit).

Runs of 40-100 epochs; 40 runs, each recorded as ``val_loss`` (nats, lower is better) and
``val_accuracy_x100`` (points, higher is better) in ``benchmarks/data/smooth_schedule_curves.csv``,
with the ``lr`` column. Every value is measured after a real epoch; nothing is simulated. A
further held-out style source for ``benchmarks/stopping.py`` (replayed without learning-rate
information: the callback reports no decay ahead for these schedules), generated once and not
tuned on.

Usage::

    python benchmarks/make_smooth_schedule_curves.py [-o benchmarks/data/smooth_schedule_curves.csv]

Metric values are reproducible bit for bit on the same platform (fixed seeds, one thread); the
wall times differ between machines and runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_step_schedule_curves import RunConfig, write_curves  # noqa: E402

DEFAULT_OUT = HERE / "data" / "smooth_schedule_curves.csv"
SCHEDULES = (
    ("cosine", "sgd", 0.05),
    ("onecycle", "sgd", 0.1),
    ("cosine", "adamw", 3e-3),
    ("constant", "adam", 1e-3),
)
"""(schedule, optimizer, peak learning rate) of each family."""


def configs() -> list[RunConfig]:
    """The grid: four schedule families x (digits at four lengths and two widths, breast_cancer, wine)."""
    runs = []
    for i, (schedule, optimizer, lr) in enumerate(SCHEDULES):
        for j, epochs in enumerate((40, 60, 80, 100)):
            seed = 1000 + 10 * i + j
            runs.append(
                RunConfig("digits", epochs, schedule, (), 1.0, lr, (128,), 1.5, 0.2, 32, seed, optimizer)
            )
            runs.append(
                RunConfig(
                    "digits", epochs, schedule, (), 1.0, lr, (64, 64), 1.0, 0.1, 32, seed + 100, optimizer
                )
            )
        runs.append(
            RunConfig("breast_cancer", 60, schedule, (), 1.0, lr, (64,), 1.5, 0.1, 16, 1200 + i, optimizer)
        )
        runs.append(RunConfig("wine", 80, schedule, (), 1.0, lr, (32,), 1.5, 0.1, 8, 1300 + i, optimizer))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    write_curves(configs(), args.out, "sklearn_smooth_schedule")


if __name__ == "__main__":
    main()
