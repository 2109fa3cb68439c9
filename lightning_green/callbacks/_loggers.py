"""Writing to the Trainer's loggers beyond ``self.log``: params, MLflow tags and artifacts.

All functions here are meant for global rank 0 and never raise into the fit: a logger that
refuses something gets one warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning_green.callbacks import _compat
from lightning_green.callbacks._compat import Trainer

REPORTS_DIRNAME = "energy_reports"
"""Folder for summaries and plots when no logger has a directory of its own."""


def mlflow_loggers(trainer: Trainer) -> list[Any]:
    """The trainer's MLflow loggers."""
    return [lg for lg in trainer.loggers if _compat.is_mlflow_logger(lg)]


def ordered_loggers(trainer: Trainer) -> list[Any]:
    """The trainer's loggers, MLflow first."""
    return sorted(trainer.loggers, key=lambda lg: not _compat.is_mlflow_logger(lg))


def log_params(trainer: Trainer, params: dict[str, Any]) -> None:
    """Record run parameters on every logger (MLflow params, TensorBoard/CSV hparams).

    A parameter an MLflow run already holds with another value (a resumed run whose energy
    source changed) is recorded as a tag ``<name>.resumed`` instead.
    """
    for logger in ordered_loggers(trainer):
        try:
            logger.log_hyperparams(params)
        except Exception as err:
            if _compat.is_mlflow_logger(logger):
                set_tags(trainer, {f"{k}.resumed": v for k, v in params.items()})
            else:
                warnings.warn(
                    f"lightning_green: {type(logger).__name__} refused params {params}: {err}", stacklevel=2
                )


def log_metrics(trainer: Trainer, metrics: dict[str, float], step: int) -> None:
    """Log metrics at ``step`` straight to every logger (where ``LightningModule.log`` is not allowed)."""
    for logger in ordered_loggers(trainer):
        try:
            logger.log_metrics(metrics, step=step)
        except Exception as err:
            warnings.warn(
                f"lightning_green: {type(logger).__name__} refused metrics {list(metrics)}: {err}",
                stacklevel=2,
            )


def set_tags(trainer: Trainer, tags: dict[str, Any]) -> None:
    """Set tags (values as str) on every MLflow run of the trainer (other loggers have no tags)."""
    for logger in mlflow_loggers(trainer):
        try:
            for key, value in tags.items():
                logger.experiment.set_tag(logger.run_id, key, str(value))
        except Exception as err:
            warnings.warn(f"lightning_green: could not set MLflow tags {tags}: {err}", stacklevel=2)


def log_artifact(trainer: Trainer, path: Path, artifact_path: str = "lightning_green") -> None:
    """Upload a local file into folder ``artifact_path`` of every MLflow run of the trainer."""
    for logger in mlflow_loggers(trainer):
        try:
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=artifact_path)
        except Exception as err:
            warnings.warn(f"lightning_green: could not log artifact {path} to MLflow: {err}", stacklevel=2)


def output_dir(trainer: Trainer) -> Path:
    """Where to write report files: the first logger's directory, else the trainer's root.

    TensorBoard and CSV loggers give their versioned directory; an MLflow logger gives a
    per-run folder ``energy_reports/<run_id>`` under ``default_root_dir`` (its own ``save_dir``
    only exists for file stores); without a logger, ``energy_reports`` under ``default_root_dir``.
    The directory is not created.
    """
    for logger in trainer.loggers:
        if _compat.is_file_logger(logger) and logger.log_dir:
            return Path(logger.log_dir)
        if _compat.is_mlflow_logger(logger):
            return Path(trainer.default_root_dir) / REPORTS_DIRNAME / str(logger.run_id)
        if getattr(logger, "log_dir", None):
            return Path(logger.log_dir)
    return Path(trainer.default_root_dir) / REPORTS_DIRNAME
