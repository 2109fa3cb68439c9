"""A Lightning log by its file: a ``CSVLogger`` ``metrics.csv`` or a ``TensorBoardLogger`` event file.

A Hugging Face Trainer's ``log_history`` exported to CSV is read by the ``CSVLogger`` reader too,
as the Trainer's log (:mod:`~lightning_green.offline.hf_trainer`): its ``epoch`` is the epochs
completed.

The one place that tells which reader reads a log (:func:`open_lightning_log`), for replay and
report alike, and the curve of a log (:func:`read_log_curve`), read with the one reader of logged
runs (:func:`~lightning_green.offline.mlflow_curves.curve_of_run`) as an MLflow run is.
"""

from __future__ import annotations

import os

from lightning_green.offline.curve import Curve
from lightning_green.offline.lightning_csv import (
    LightningCsvRun,
    LogParts,
    is_hf_trainer_csv,
    is_lightning_csv,
)
from lightning_green.offline.mlflow_curves import ENERGY_KEY, curve_of_run
from lightning_green.offline.tensorboard_logs import TensorBoardRun, is_tensorboard_log


def is_lightning_log(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TensorBoard event file (by its name) or a ``CSVLogger`` ``metrics.csv``.

    Or a Hugging Face Trainer's ``log_history`` exported to CSV, which the ``CSVLogger`` reader reads.
    """
    return is_tensorboard_log(path) or is_lightning_csv(path) or is_hf_trainer_csv(path)


def open_lightning_log(
    path: str | os.PathLike[str], *, parts: LogParts | None = None
) -> LightningCsvRun | TensorBoardRun | None:
    """The run of the log ``path`` (``None``: no kind of log).

    An event file is told by its name first: it is binary, not a CSV to look into.

    Args:
        path: A ``CSVLogger`` ``metrics.csv``, a TensorBoard event file, or a Hugging Face
            Trainer's ``log_history`` exported to CSV.
        parts: The folders already read (:data:`~.lightning_csv.LogParts`): give the same dict
            to every log of one command, and each folder (a log, or a sibling looked at as the
            earlier part of a resumed one) is read once; default: read afresh.

    Raises:
        CurveFormatError, OfflineInputError, RuntimeError: As the reader of its kind.
    """
    if is_tensorboard_log(path):
        return TensorBoardRun(path, parts=parts)
    if is_lightning_csv(path):
        return LightningCsvRun(path, parts=parts, hf_trainer=False)
    if is_hf_trainer_csv(path):  # read as a CSVLogger log is, its epochs by the Trainer's rule
        return LightningCsvRun(path, parts=parts, hf_trainer=True)
    return None


def read_log_curve(
    path: str | os.PathLike[str],
    monitor: str | None = None,
    *,
    mode: str | None = None,
    cost_key: str = ENERGY_KEY,
) -> Curve | None:
    """The curve of the log ``path``, read as :func:`~.mlflow_curves.read_mlflow_curves` reads a run.

    The metric (``monitor``, else the one the run recorded), its direction, the stopper's costs and
    progress at each check, the planned horizon and the recorded policy arguments.

    Args:
        path: The log's ``metrics.csv``, or one of its ``events.out.tfevents.*`` files (the
            folder's are all read).
        monitor: The monitored metric's name (default: the one the run recorded).
        mode: ``"min"`` or ``"max"`` (default: the recorded direction, else ``"min"``).
        cost_key: The metric of cumulative cost in kWh (``"step"``: optimizer steps).

    Returns:
        The curve (``curve_id`` is the log's folder), or ``None`` when the log lacks the metric or
        the cost.

    Raises:
        ValueError: If ``path`` is neither kind of log.
        CurveFormatError: If a ``metrics.csv`` is malformed.
        RuntimeError: If tensorboard is needed and not installed.
        RecordedParamError: If ``mode`` contradicts the recorded direction, or no metric is given
            for a log that recorded none.
        OfflineInputError: If a record is invalid (as for an MLflow run).
    """
    run = open_lightning_log(path)
    if run is None:
        raise ValueError(f"{path}: not a Lightning log (a CSVLogger metrics.csv or a TensorBoard event file)")
    return curve_of_run(run, monitor, mode=mode, cost_key=cost_key)
