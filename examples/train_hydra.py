"""Hydra-driven training: the callbacks are instantiated from ``_target_`` entries.

From the repository root:

    .venv/bin/python examples/train_hydra.py
    .venv/bin/python examples/train_hydra.py callbacks.stopping.energy_budget_kwh=2e-5 trainer.max_epochs=10

Any callback can be dropped with ``~callbacks.batch_size`` (Hydra's delete syntax).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf
except ImportError as error:  # hydra-core is a dev extra, not a dependency of lightning_green
    raise SystemExit(
        f"examples/train_hydra.py needs hydra-core ({error}): pip install 'hydra-core>=1.3' "
        "(or install lightning_green with the dev extra)"
    ) from error
import pytorch_lightning as pl
from digits import DigitsClassifier, DigitsDataModule


def run(cfg: DictConfig) -> pl.Trainer:
    """Build the trainer from the config, fit, and return it."""
    pl.seed_everything(cfg.seed)
    callbacks = [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    if HydraConfig.initialized():  # each job of a --multirun sweep writes its reports to its own folder
        options.setdefault("default_root_dir", HydraConfig.get().runtime.output_dir)
    trainer = pl.Trainer(**options, logger=logger, callbacks=callbacks)
    trainer.fit(DigitsClassifier(**cfg.model), datamodule=DigitsDataModule(**cfg.data))
    return trainer


@hydra.main(version_base=None, config_path="hydra_config", config_name="config")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point."""
    run(cfg)


if __name__ == "__main__":
    main()
