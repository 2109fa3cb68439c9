"""Shared fixtures: real data (scikit-learn digits), real trainers, real MLflow stores."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
for path in (ROOT, ROOT / "examples"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(autouse=True)
def _quiet_lightning():
    # Lightning's own noise (LeafSpec FutureWarning, "does not have many workers") is not ours.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        yield


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    """A fresh embedded MLflow tracking store."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def make_trainer(tmp_path: Path, callbacks: list, logger=False, max_epochs: int = 3, **kwargs):
    """A quiet CPU trainer for tests."""
    import pytorch_lightning as pl

    defaults = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        log_every_n_steps=5,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)
