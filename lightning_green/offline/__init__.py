"""The stopping policy run offline over logged curves: what it would have saved.

One package for the offline tools (``lightning-green replay`` and ``report``):

- :mod:`~lightning_green.offline.curve`: a logged curve (:class:`Curve`);
- :mod:`~lightning_green.offline.errors`: what the tools refuse (:class:`OfflineInputError`);
- :mod:`~lightning_green.offline.csv_curves`: the curves CSV reader (:func:`read_curves_csv`);
- :mod:`~lightning_green.offline.mlflow_runs`: the one MLflow run reader (:class:`MlflowRun`),
  used by replay and by the report (one rule for a step logged twice: the latest timestamp);
- :mod:`~lightning_green.offline.mlflow_curves`: curves from an experiment's runs
  (:func:`read_mlflow_curves`);
- :mod:`~lightning_green.offline.lightning_csv`: the curve of a Lightning ``CSVLogger`` log
  (:func:`read_lightning_csv_curve`), read as an MLflow run is;
- :mod:`~lightning_green.offline.tensorboard_logs`: the curve of a ``TensorBoardLogger`` log
  (:func:`read_tensorboard_curve`), likewise;
- :mod:`~lightning_green.offline.engine`: the replay (:func:`replay_curve`, :func:`summarize`);
- :mod:`~lightning_green.offline.outputs`: the decisions CSV and the trade-off plot.

Nothing here imports torch or Lightning; MLflow and matplotlib only when used.
"""

from lightning_green.offline.csv_curves import REQUIRED_COLUMNS, read_curves_csv
from lightning_green.offline.curve import Curve
from lightning_green.offline.engine import (
    NO_STOP,
    PolicyInputs,
    ReplayResult,
    Summary,
    config_for,
    policy_inputs,
    replay,
    replay_curve,
    result_at,
    summarize,
)
from lightning_green.offline.errors import (
    CurveFormatError,
    OfflineInputError,
    OutputPathError,
    RecordedParamError,
    SummaryFormatError,
    UsageError,
)
from lightning_green.offline.lightning_csv import LightningCsvRun, is_lightning_csv, read_lightning_csv_curve
from lightning_green.offline.mlflow_curves import ENERGY_KEY, read_mlflow_curves
from lightning_green.offline.mlflow_runs import MlflowRun, latest_per_step
from lightning_green.offline.outputs import (
    DECISION_COLUMNS,
    decisions_rows,
    plot_tradeoff,
    write_decisions_csv,
)
from lightning_green.offline.tensorboard_logs import (
    TensorBoardRun,
    is_tensorboard_log,
    read_tensorboard_curve,
)

__all__ = [
    "DECISION_COLUMNS",
    "ENERGY_KEY",
    "NO_STOP",
    "REQUIRED_COLUMNS",
    "Curve",
    "CurveFormatError",
    "LightningCsvRun",
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
    "is_lightning_csv",
    "is_tensorboard_log",
    "latest_per_step",
    "plot_tradeoff",
    "policy_inputs",
    "read_curves_csv",
    "read_lightning_csv_curve",
    "read_mlflow_curves",
    "read_tensorboard_curve",
    "replay",
    "replay_curve",
    "result_at",
    "summarize",
    "write_decisions_csv",
]
