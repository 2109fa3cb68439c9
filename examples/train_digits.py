"""Train a small CNN on scikit-learn's digits with lightning_green, logging to a local MLflow store.

Uses every callback: EnergyMonitor measures and logs, AdaptivePrecision and AdaptiveBatchSize
pick the cheapest setting by measurement, EnergyAwareEarlyStopping stops when more epochs stop
paying for themselves.

Run from the repository root:

    python examples/train_digits.py                      # sqlite:///mlflow.db, 30 epochs at most
    python examples/train_digits.py --max-epochs 5 --tracking-uri sqlite:///other.db

Then open the run in the MLflow UI:

    mlflow ui --backend-store-uri sqlite:///mlflow.db    # http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import DigitsClassifier, DigitsDataModule

import lightning_green


def build_callbacks(args: argparse.Namespace) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = [
        lightning_green.EnergyMonitor(monitor="val_acc", mode="max", pue=args.pue, region=args.region),
    ]
    if not args.no_adapt:
        callbacks += [
            lightning_green.AdaptivePrecision(),
            lightning_green.AdaptiveBatchSize(min_batch_size=16, max_batch_size=128, lr_scaling="sqrt"),
        ]
    if not args.no_stopping:
        callbacks.append(lightning_green.EnergyAwareEarlyStopping(monitor="val_acc", mode="max"))
    return callbacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="lightning_green-digits")
    parser.add_argument("--pue", type=float, default=1.0)
    parser.add_argument("--region", default="EU", help="grid region for CO2 (a code of the carbon table)")
    parser.add_argument("--no-stopping", action="store_true", help="never stop early")
    parser.add_argument("--no-adapt", action="store_true", help="keep the batch size and precision fixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed, workers=True)
    logger = MLFlowLogger(experiment_name=args.experiment, tracking_uri=args.tracking_uri)
    trainer = pl.Trainer(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=build_callbacks(args),
        enable_checkpointing=False,
        log_every_n_steps=10,
        enable_progress_bar=not args.quiet,
        default_root_dir="lightning_logs",
    )
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(batch_size=args.batch_size, seed=args.seed))
    monitor = next(cb for cb in trainer.callbacks if isinstance(cb, lightning_green.EnergyMonitor))

    print(f"\nMLflow run {logger.run_id} in experiment {args.experiment!r} at {args.tracking_uri}")
    print(f"Summary and plot: {monitor.summary_path} and {monitor.plot_path} (also artifacts of the run)")
    bin_dir = Path(sys.executable).parent  # the virtual environment's scripts
    if args.tracking_uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        run_page = f"#/experiments/{logger.experiment_id}/runs/{logger.run_id}"
        print(f"Open it at:    {args.tracking_uri.rstrip('/')}/{run_page}")
    else:
        ui = f"{bin_dir / 'mlflow'} ui --backend-store-uri {args.tracking_uri}"
        print(f"Open it with:  {ui}   (then http://127.0.0.1:5000)")
    report = f"{bin_dir / 'lightning-green'} report --mlflow-uri {args.tracking_uri} --run-id {logger.run_id}"
    print(f"or redraw it:  {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
