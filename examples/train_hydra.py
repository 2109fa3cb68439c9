"""Hydra-driven training: the callbacks are instantiated from ``_target_`` entries.

From the repository root:

    python examples/train_hydra.py
    python examples/train_hydra.py callbacks.stopping.energy_budget_kwh=0.00002 trainer.max_epochs=10

Any callback can be dropped with ``~callbacks.batch_size`` (Hydra's delete syntax).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra
import pytorch_lightning as pl
from digits import DigitsClassifier, DigitsDataModule
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def run(cfg: DictConfig) -> pl.Trainer:
    """Build the trainer from the config, fit, and return it."""
    pl.seed_everything(cfg.seed)
    callbacks = [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True), logger=logger, callbacks=callbacks
    )
    trainer.fit(DigitsClassifier(**cfg.model), datamodule=DigitsDataModule(**cfg.data))
    return trainer


@hydra.main(version_base=None, config_path="hydra", config_name="config")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point."""
    run(cfg)


if __name__ == "__main__":
    main()
