"""The stopping policy run offline over logged curves: what it would have saved.

One package for the offline tools (``lightning-green replay`` and ``report``):

- :mod:`~lightning_green.offline.curve`: a logged curve (:class:`Curve`);
- :mod:`~lightning_green.offline.errors`: what the tools refuse (:class:`OfflineInputError`);
- :mod:`~lightning_green.offline.csv_curves`: the curves CSV reader (:func:`read_curves_csv`);
- :mod:`~lightning_green.offline.mlflow_runs`: the one MLflow run reader (:class:`MlflowRun`),
  used by replay and by the report (one rule for a step logged twice: the latest timestamp);
- :mod:`~lightning_green.offline.mlflow_curves`: curves from an experiment's runs
  (:func:`read_mlflow_curves`);
- :mod:`~lightning_green.offline.lightning_csv`, :mod:`~lightning_green.offline.tensorboard_logs`:
  a Lightning ``CSVLogger`` / ``TensorBoardLogger`` log read as an MLflow run is
  (:class:`LightningCsvRun`, :class:`TensorBoardRun`);
- :mod:`~lightning_green.offline.lightning_logs`: which of them reads a log file, and its curve
  (:func:`read_log_curve`);
- :mod:`~lightning_green.offline.check_places`: where the checks of a log without the stopper's
  records of them fall in training (several an epoch: by their steps);
- :mod:`~lightning_green.offline.hf_trainer`: Hugging Face Trainer logs (an ``MLflowCallback`` run,
  a ``log_history`` CSV export) told apart from Lightning's, their ``epoch`` the epochs completed;
- :mod:`~lightning_green.offline.engine`: the replay (:func:`replay_curve`, :func:`summarize`,
  :func:`summarize_per_metric`);
- :mod:`~lightning_green.offline.outputs`: the decisions CSV and the trade-off plot.
- :mod:`~lightning_green.offline.cost_axis`: a past run against another cost than kWh, for
  ``report --cost-key`` (replay's curve of the run in that cost, and its figures).
- :mod:`~lightning_green.offline.stop_marks`: a run's stop from the stopper's records of its
  checks, replayed, for ``report`` of a log without a stop tag or summary (:func:`replayed_stop`).

Nothing here imports torch or Lightning; MLflow and matplotlib only when used.
"""

from lightning_green.offline.csv_curves import REQUIRED_COLUMNS, read_curves_csv
from lightning_green.offline.curve import Curve
from lightning_green.offline.engine import (
    NO_STOP,
    MetricSummary,
    PolicyInputs,
    ReplayResult,
    Summary,
    config_for,
    policy_inputs,
    replay,
    replay_curve,
    result_at,
    summarize,
    summarize_per_metric,
)
from lightning_green.offline.errors import (
    CurveFormatError,
    OfflineInputError,
    OutputPathError,
    RecordedParamError,
    SummaryFormatError,
    UsageError,
)
from lightning_green.offline.lightning_csv import LightningCsvRun
from lightning_green.offline.lightning_logs import is_lightning_log, open_lightning_log, read_log_curve
from lightning_green.offline.mlflow_curves import ENERGY_KEY, read_mlflow_curves
from lightning_green.offline.mlflow_runs import MlflowRun, latest_per_step
from lightning_green.offline.outputs import (
    DECISION_COLUMNS,
    decisions_rows,
    plot_tradeoff,
    write_decisions_csv,
)
from lightning_green.offline.tensorboard_logs import TensorBoardRun

__all__ = [
    "DECISION_COLUMNS",
    "ENERGY_KEY",
    "NO_STOP",
    "REQUIRED_COLUMNS",
    "Curve",
    "CurveFormatError",
    "LightningCsvRun",
    "MetricSummary",
    "MlflowRun",
    "OfflineInputError",
    "OutputPathError",
    "PolicyInputs",
    "RecordedParamError",
    "ReplayResult",
    "Summary",
    "SummaryFormatError",
    "TensorBoardRun",
    "UsageError",
    "config_for",
    "decisions_rows",
    "is_lightning_log",
    "latest_per_step",
    "open_lightning_log",
    "plot_tradeoff",
    "policy_inputs",
    "read_curves_csv",
    "read_log_curve",
    "read_mlflow_curves",
    "replay",
    "replay_curve",
    "result_at",
    "summarize",
    "summarize_per_metric",
    "write_decisions_csv",
]
