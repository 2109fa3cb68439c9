"""Config-driven training with LightningCLI: every lightning_green callback from YAML.

From the repository root:

    python examples/cli.py fit --config examples/configs/digits.yaml
    # override any argument, e.g. the energy budget of the last callback in the list:
    python examples/cli.py fit --config examples/configs/digits.yaml \
        --trainer.max_epochs 10 --trainer.callbacks.init_args.energy_budget_kwh 0.00002

The resolved config is logged to the MLflow run as ``config/config.yaml`` (LightningCLI's own
config saving does not work with an MLflow database or server store).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits import DigitsClassifier, DigitsDataModule
from pytorch_lightning.cli import LightningCLI

from lightning_green.callbacks.save_config import SaveConfigToLoggers


def main(args: list[str] | None = None) -> LightningCLI:
    """Run LightningCLI for the digits task (``args`` as on the command line; None reads sys.argv)."""
    return LightningCLI(
        DigitsClassifier,
        DigitsDataModule,
        save_config_callback=SaveConfigToLoggers,
        args=args,
    )


if __name__ == "__main__":
    main()
