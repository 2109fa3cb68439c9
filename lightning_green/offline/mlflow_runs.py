"""The one MLflow run reader of the offline tools: a run's params, tags, metric histories, artifacts.

``lightning-green replay`` (over an experiment's runs) and ``lightning-green report`` (one run)
both read runs through :class:`MlflowRun`, so both follow one rule for a step logged twice:
the value with the latest timestamp (ties: the largest value, NaN lowest), which is MLflow's own
rule for a run's latest metric; the order the tracking server returns the history in plays no
part. MLflow is imported only when a run is opened.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from lightning_green import keys
from lightning_green.offline.checks import open_read_only, sqlite_file
from lightning_green.offline.errors import OfflineInputError
from lightning_green.offline.hf_trainer import LABEL as HF_TRAINER_LABEL
from lightning_green.offline.hf_trainer import is_hf_trainer_log

_SNAPSHOTS: dict[str, tuple[tuple[int, int], str]] = {}
"""``database path -> ((mtime_ns, size) of the file snapshotted, snapshot file)`` in this process:
the latest snapshot of each database (an earlier one is removed when the file changed)."""
_SNAPSHOT_DIR: tempfile.TemporaryDirectory[str] | None = None


def _read_only(tracking_uri: str) -> str:
    """The URI to read ``tracking_uri`` through without writing to it.

    MLflow writes to an SQLite store it opens: it creates its tables in a database that has none
    and upgrades one of an older schema in place (after which an older MLflow server sharing it
    can no longer open it). An ``sqlite:///`` store is therefore read from a consistent snapshot
    (SQLite's backup of the file opened read-only), taken once per process for each state of the
    file (the latest kept, an earlier one removed); other stores are read as they are.
    """
    path = sqlite_file(tracking_uri)
    if path is None:
        return tracking_uri
    global _SNAPSHOT_DIR
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no MLflow database at {path!r} (reading does not create one)")
    stat, real = os.stat(path), os.path.realpath(path)
    state = (stat.st_mtime_ns, stat.st_size)
    known = _SNAPSHOTS.get(real)
    if known is None or known[0] != state:
        if _SNAPSHOT_DIR is None:
            _SNAPSHOT_DIR = tempfile.TemporaryDirectory(prefix="lightning_green_mlflow_")
        handle, copy = tempfile.mkstemp(suffix=".db", dir=_SNAPSHOT_DIR.name)
        os.close(handle)
        source = open_read_only(real)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        if known is not None:
            with contextlib.suppress(OSError):
                os.remove(known[1])
        known = _SNAPSHOTS[real] = (state, copy)
    return "sqlite:///" + known[1]


def _client(tracking_uri: str) -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "reading MLflow runs needs mlflow: pip install 'lightning_green[mlflow]'"
        ) from None
    uri = _read_only(tracking_uri)
    snapshot = sqlite_file(uri) if uri != tracking_uri else None
    if snapshot is None:
        return MlflowClient(tracking_uri=uri)
    # mlflow 2 creates the default artifact root of a database store it opens, ./mlruns, in the
    # working directory: opened from the snapshot's folder, it is made there, not in the user's.
    with _working_directory(os.path.dirname(snapshot)):
        return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _working_directory(path: str) -> Iterator[None]:
    """The process's working directory set to ``path`` for the duration, then put back."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _artifacts_need_the_process_uri(tracking_uri: str, artifact_uri: str) -> bool:
    """Whether a client of ``tracking_uri`` needs it as the process-wide URI to read ``artifact_uri``.

    Artifacts a tracking server keeps (``mlflow-artifacts:/...``) are fetched from the server a
    tracking URI names: mlflow 2 (and the 3.x releases whose artifact repositories take no
    ``tracking_uri``) resolves them against the process-wide URI (``mlflow.set_tracking_uri``,
    ``MLFLOW_TRACKING_URI``, else ``./mlruns``), whatever URI the client was given.
    """
    if not artifact_uri.startswith("mlflow-artifacts:") or not tracking_uri.startswith(
        ("http://", "https://")
    ):
        return False
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    return "tracking_uri" not in inspect.signature(MlflowArtifactsRepository.__init__).parameters


@contextlib.contextmanager
def _process_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Set MLflow's process-wide tracking URI to ``tracking_uri`` for the duration, then put it back.

    What was set with ``mlflow.set_tracking_uri`` (or nothing) and the ``MLFLOW_TRACKING_URI``
    variable (which some releases' ``set_tracking_uri`` also set) are both restored.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before, variable = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable


def abandoned_spans(check_numbers: Iterable[Any]) -> list[tuple[int, int]]:
    """What fits abandoned by a resume into the same run logged after the checkpoint, from the checks.

    The stopper numbers its checks (``energy/check_number``, the checkpoint's counted): a fit
    resumed into the same run numbers its first check as the checkpoint's count plus one, a number
    the abandoned fit had already logged, at a step that fit's check held, however early in the
    step the checkpoint was saved (a validation right after a checkpoint saved at a training step
    logs at the step before the resumed fit's first).

    Args:
        check_numbers: The ``energy/check_number`` history (anything with ``step``, ``timestamp``
            and ``value``), in any order.

    Returns:
        ``[(from_step, until_timestamp), ...]``: every point at ``from_step`` or later logged at
        ``until_timestamp`` or earlier is the abandoned fit's (its checks numbered as the resumed
        fit's first or later, and what it logged before its last such check). Empty without
        a resume (numbers that only grow).

    Example:
        >>> from types import SimpleNamespace as M
        >>> first = [M(step=s, timestamp=s, value=n) for n, s in enumerate((2, 5, 8, 11), 1)]
        >>> again = [M(step=11, timestamp=20, value=3)]  # resumed from a checkpoint of 2 checks
        >>> abandoned_spans(first + again)
        [(8, 11)]
    """
    spans: list[tuple[int, int]] = []
    seen: list[tuple[int, int, float]] = []  # (timestamp, step, number)
    top, top_step = -math.inf, -1
    for m in sorted(check_numbers, key=lambda m: (int(m.timestamp), int(m.step))):
        timestamp, step, number = int(m.timestamp), int(m.step), float(m.value)
        if number < top or (number == top and step != top_step):  # counted again from a
            # checkpoint's checks: a fit resumed into the run (one check logged twice is not)
            after = [(t, s) for t, s, n in seen if n >= number]
            spans.append((min(s for _, s in after), max(t for t, _ in after)))
        top, top_step = number, step
        seen.append((timestamp, step, number))
    return spans


def latest_per_step(points: Iterable[Any], abandoned: Iterable[tuple[int, int]] = ()) -> dict[int, float]:
    """``step -> value`` of a metric history; a step logged twice keeps the latest value.

    Args:
        points: MLflow ``Metric`` entities (anything with ``step``, ``timestamp`` and ``value``).
        abandoned: ``(from_step, until_timestamp)`` spans of what fits abandoned by a resume into
            the same run logged after their checkpoint (:func:`abandoned_spans`): left out.

    Returns:
        One value per step: the one with the largest timestamp, ties broken by the largest value
        (NaN lowest), whatever the order of ``points``. Steps whose latest value is older than
        a smaller step's are dropped: a fit resumed from an earlier checkpoint into the same run
        logged the smaller steps again, and what the abandoned fit logged beyond them is not part
        of the run as it went on.

    Example:
        >>> from types import SimpleNamespace as M
        >>> first = [M(step=s, timestamp=s, value=1.0) for s in (1, 2, 3, 4)]  # stopped at step 4
        >>> again = [M(step=s, timestamp=10 + s, value=2.0) for s in (3,)]  # resumed from step 2
        >>> latest_per_step(first + again)
        {1: 1.0, 2: 1.0, 3: 2.0}
    """
    out: dict[int, tuple[int, float, float]] = {}
    spans = list(abandoned)
    for m in points:
        value = float(m.value)
        key = (int(m.timestamp), -math.inf if math.isnan(value) else value, value)
        step = int(m.step)
        if any(step >= first and key[0] <= until for first, until in spans):
            continue  # logged after the checkpoint by a fit resumed from it into the run
        if step not in out or key[:2] > out[step][:2]:
            out[step] = key
    kept: dict[int, float] = {}
    newest = -math.inf
    for step in sorted(out):
        timestamp, _, value = out[step]
        if timestamp < newest:
            continue  # logged before a smaller step was logged again: an abandoned fit's
        newest = timestamp
        kept[step] = value
    return kept


STEP_KEY = keys.STEP
"""The built-in cost series of every logged run: the optimizer steps done at each step logged
(:func:`steps_done`; ``--cost-key step``)."""


def steps_done(logged_steps: Iterable[int], offset: int = 1) -> dict[int, float]:
    """The ``"step"`` series of a log: ``logged step -> optimizer steps done`` there.

    Lightning logs what it logs during training at the optimizer steps done, minus one (its
    ``_batches_that_stepped`` before the batch that ended is counted: an epoch of 45 steps logs its
    end at step 44, a validation after 22 steps at step 21), and so does lightning_green for every
    record of the training: the cost of a point at step ``s`` is ``s + 1`` optimizer steps, the
    ``Trainer.global_step`` there. The fit's end records (:data:`~lightning_green.keys.FIT_END_KEYS`,
    logged after training at the steps done) are no such point: the readers leave their steps out
    (:func:`training_series`). A Hugging Face Trainer logs at its ``global_step``, the steps done:
    ``offset=0``.

    Args:
        logged_steps: The steps the log holds points at.
        offset: Optimizer steps done at logged step 0 (1 for Lightning's logs, 0 for the Trainer's).

    Example:
        >>> steps_done([44, 89, 0]), steps_done([45], offset=0)
        ({0: 1.0, 44: 45.0, 89: 90.0}, {45: 45.0})
    """
    return {step: float(step + offset) for step in sorted(set(logged_steps))}


def training_series(name: str, prefix: str | None = None) -> bool:
    """Whether the series logged as ``name`` is logged during training (its steps are in ``"step"``).

    Every series but lightning_green's fit's end records (:data:`~lightning_green.keys.FIT_END_KEYS`,
    also under an ``MLFlowLogger`` ``prefix``), which are logged at the optimizer steps done after
    training, one step beyond the training's last point.

    Example:
        >>> training_series("val_loss"), training_series("fold1-energy/run_kwh", "fold1")
        (True, False)
    """
    fit_end = {*keys.FIT_END_KEYS, *(f"{prefix}{PREFIX_JOIN}{key}" for key in keys.FIT_END_KEYS if prefix)}
    return name not in fit_end


PREFIX_JOIN = "-"
"""What Lightning's ``MLFlowLogger`` puts between its ``prefix`` and each metric's name."""

EPOCH_KEY = "epoch"
"""Lightning's own series, logged with every metric it logs to a logger: the epoch at that step."""


def metric_prefix(metric_keys: set[str]) -> str | None:
    """The ``MLFlowLogger(prefix=...)`` a run's metrics were logged with, seen from their names.

    ``None`` when ``energy/total_kwh`` is logged as such (no prefix) or not at all; else the prefix
    in front of the energy series (``fold1`` for ``fold1-energy/total_kwh``). A name that merely
    ends like it (a metric of yours called ``my-energy/total_kwh``) is not taken for one: the
    prefix must carry ``energy/epoch_kwh`` too. Several loggers with their own prefixes write the
    same values to one run: the first prefix in sorted order is read.

    Example:
        >>> metric_prefix({"fold1-energy/total_kwh", "fold1-energy/epoch_kwh", "my-energy/total_kwh"})
        'fold1'
        >>> metric_prefix({"energy/total_kwh"}) is None
        True
    """
    if keys.TOTAL_KWH in metric_keys:
        return None
    ending = PREFIX_JOIN + keys.TOTAL_KWH
    found = {k[: -len(ending)] for k in metric_keys if k.endswith(ending) and len(k) > len(ending)}
    carried = sorted(p for p in found if f"{p}{PREFIX_JOIN}{keys.EPOCH_KWH}" in metric_keys)
    if carried:
        return carried[0]
    return found.pop() if len(found) == 1 else None


class MlflowRun:
    """One MLflow run, read through a tracking client.

    Attributes:
        run_id: The run.
        label: How messages name it: ``MLflow run <run_id>``.
        params: Its parameters, the latest value of each: a ``lightning_green.<name>.resumed`` tag
            (a run resumed or continued with another plan or policy argument; MLflow keeps the
            first value of a parameter) stands for ``lightning_green.<name>``.
        tags: Its tags.
        metric_prefix: The ``MLFlowLogger(prefix=...)`` its metrics were logged with, or ``None``.
        hf_trainer: Whether the Hugging Face Trainer logged it (its ``MLflowCallback``, told by the
            Trainer's own metrics: :func:`~.hf_trainer.is_hf_trainer_log`): its ``epoch`` is the
            epochs completed, not Lightning's 0-based index.
        status: MLflow's status of the run (``FINISHED``, ``FAILED``, ``KILLED``, ``RUNNING``:
            still training, or its process was killed before it could say so).
        artifacts_error: Why the run's artifacts could not be listed (``None`` when they could,
            or were not asked for).
    """

    def __init__(self, client: Any, run: Any) -> None:
        self._client = client
        self.run_id: str = run.info.run_id
        self.label = f"MLflow run {self.run_id}"
        # FINISHED, FAILED, KILLED, RUNNING (still training, or killed without a word) or SCHEDULED
        self.status: str | None = getattr(run.info, "status", None)
        self.artifacts_error: str | None = None  # why the artifacts could not be listed, if so
        self._artifact_uri = str(getattr(run.info, "artifact_uri", None) or "")
        self.tags: Mapping[str, str] = dict(run.data.tags)
        params = dict(run.data.params)
        for key, value in self.tags.items():
            if key.startswith(keys.PARAM_PREFIX) and key.endswith(keys.RESUMED_SUFFIX):
                params[key.removesuffix(keys.RESUMED_SUFFIX)] = value
        self.params: Mapping[str, str] = params
        self._metric_keys = set(getattr(run.data, "metrics", None) or ())
        self.metric_prefix = metric_prefix(self._metric_keys)
        self.hf_trainer = is_hf_trainer_log(self._metric_keys)
        if self.hf_trainer:
            self.label = f"{self.label} ({HF_TRAINER_LABEL})"
        self._spans: list[tuple[int, int]] | None = None
        self._step_series: dict[int, float] | None = None
        self._series: dict[str, dict[int, float]] = {}  # metric name -> its history (read once)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics the run logged, sorted, as :meth:`history` names them (no ``MLFlowLogger`` prefix)."""
        prefix = f"{self.metric_prefix}{PREFIX_JOIN}" if self.metric_prefix else ""
        return tuple(sorted({k.removeprefix(prefix) for k in self._metric_keys}))

    @classmethod
    def open(cls, tracking_uri: str, run_id: str) -> MlflowRun:
        """The run ``run_id`` of the store at ``tracking_uri``.

        Raises:
            RuntimeError: If mlflow is not installed.
            mlflow.exceptions.MlflowException: If there is no such run.
        """
        client = _client(tracking_uri)
        return cls(client, client.get_run(run_id))

    def history(self, key: str) -> dict[int, float]:
        """``step -> value`` of the metric ``key`` (empty when the run never logged it).

        A step logged more than once keeps the value with the latest timestamp
        (:func:`latest_per_step`); what a fit resumed into the run from a checkpoint abandoned
        logged after that checkpoint is left out (:func:`abandoned_spans`). In a run logged
        through ``MLFlowLogger(prefix=...)`` (every metric ``<prefix>-<key>``, :attr:`metric_prefix`),
        ``key`` is the name without the prefix.

        ``"step"`` (when no metric has that name) is the optimizer steps done at every step the run
        logged a metric of its training at (MLflow records Lightning's logging step with each point,
        one below the steps done: :func:`steps_done`, :func:`training_series`; a cost for a run
        logged without energy, ``--cost-key step``), as the ``CSVLogger`` and
        ``TensorBoardLogger`` readers give it.

        Raises:
            OfflineInputError: For ``"step"`` of a run whose epochs are at epoch numbers
                (:attr:`epochs_at_epoch_numbers`): its steps are not optimizer steps.
        """
        if key == STEP_KEY and self._key(key) not in self._metric_keys:
            if self.epochs_at_epoch_numbers:
                raise OfflineInputError(
                    f"{self.label} logged its epochs at MLflow steps that are epoch numbers, not "
                    "optimizer steps (mlflow.pytorch.autolog(), or an MLflow run active without "
                    "MLFlowLogger logged by lightning_green before it logged at Lightning's steps): "
                    f"it has no {STEP_KEY!r} cost (--cost-key); give {keys.TOTAL_KWH!r} or another "
                    "running total it logged"
                )
            return self._steps()
        return dict(self._read(self._key(key)))

    @property
    def epochs_at_epoch_numbers(self) -> bool:
        """Whether the run's per-epoch series are at MLflow steps that are the epochs' numbers.

        So are the epochs of a run ``mlflow.pytorch.autolog()`` logged (it logs each epoch's
        metrics at the epoch's number), and of a run lightning_green logged to as the MLflow run
        active in the process (no ``MLFlowLogger``) before it logged there at Lightning's steps;
        the records of checks inside an epoch, the per-step energy and the run's totals
        (``energy/run_kwh``) are at Lightning's steps all the same. Told by Lightning's
        ``epoch`` series, which Lightning logs with every metric it logs to a logger (an
        ``MLFlowLogger``) and lightning_green with every epoch it logs to an active run, and
        autolog never: a run holding ``energy/total_kwh`` without it. Such a run's steps mix two
        axes: it has no ``"step"`` cost (:meth:`history`).
        """
        held = self._metric_keys
        return self._key(keys.TOTAL_KWH) in held and self._key(EPOCH_KEY) not in held

    def _steps(self) -> dict[int, float]:
        """``step -> optimizer steps done`` at every step of every metric the run logged (read once)."""
        if self._step_series is None:
            steps: set[int] = set()
            for name in sorted(
                filter(lambda name: training_series(name, self.metric_prefix), self._metric_keys)
            ):
                steps.update(self._read(name))
            self._step_series = steps_done(steps, 0 if self.hf_trainer else 1)
        return dict(self._step_series)

    def _read(self, name: str) -> dict[int, float]:
        """``step -> value`` of the metric logged as ``name`` (:meth:`history`), read from the store once.

        The commands ask for some series more than once (the checks of ``replay``, then the checks
        ``report`` draws, the soundness checks of the energy records): one request each to a
        tracking server.
        """
        if name not in self._series:
            points = self._client.get_metric_history(self.run_id, name)
            self._series[name] = latest_per_step(points, self._abandoned())
        return self._series[name]

    def _key(self, key: str) -> str:
        if self.metric_prefix and key not in self._metric_keys:
            return f"{self.metric_prefix}{PREFIX_JOIN}{key}"  # logged through MLFlowLogger(prefix=...)
        return key

    def _abandoned(self) -> list[tuple[int, int]]:
        """:func:`abandoned_spans` of the run's ``energy/check_number`` (read once)."""
        if self._spans is None:
            key = self._key(keys.CHECK_NUMBER)
            numbers = self._client.get_metric_history(self.run_id, key) if key in self._metric_keys else []
            self._spans = abandoned_spans(numbers)
        return self._spans

    def _artifacts(self) -> contextlib.AbstractContextManager[None]:
        """The context of the client's artifact calls: the run's artifacts read through its tracking URI.

        As mlflow 3 does by itself (:func:`_artifacts_need_the_process_uri`).
        """
        uri = str(self._client.tracking_uri)
        if _artifacts_need_the_process_uri(uri, self._artifact_uri):
            return _process_tracking_uri(uri)
        return contextlib.nullcontext()

    def artifact_names(self, folder: str) -> set[str]:
        """Paths of the artifacts in ``folder`` (empty when the store gives no artifact access)."""
        try:
            with self._artifacts():
                return {a.path for a in self._client.list_artifacts(self.run_id, folder)}
        except Exception as err:  # a store without artifact access: treated as no artifacts
            # (e.g. mlflow-artifacts:/ of a run logged through a server, read from its database)
            text = str(err)
            if "mlflow-artifacts" in text:
                self.artifacts_error = (
                    "the tracking server that logged the run keeps them (mlflow-artifacts:/)"
                )
            else:
                first = text.split(". ", 1)[0].splitlines()[0] if text else ""
                self.artifacts_error = f"{type(err).__name__}: {first[:200]}"
            return set()

    def download_artifact(self, path: str, directory: str | os.PathLike[str]) -> str:
        """Download the artifact ``path`` into ``directory``; returns the local file."""
        with self._artifacts():
            return str(self._client.download_artifacts(self.run_id, path, str(directory)))


def experiment_runs(tracking_uri: str, experiment: str) -> list[MlflowRun]:
    """Every run of an experiment, in start-time order.

    Raises:
        RuntimeError: If mlflow is not installed.
        ValueError: If the experiment does not exist.
    """
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"MLflow experiment {experiment!r} not found at {tracking_uri}")
    if getattr(exp, "lifecycle_stage", "active") == "deleted":
        raise ValueError(
            f"MLflow experiment {experiment!r} at {tracking_uri} is deleted (restore it to replay it: "
            f"MLFLOW_TRACKING_URI={tracking_uri} mlflow experiments restore "
            f"--experiment-id {exp.experiment_id})"
        )
    runs: list[MlflowRun] = []
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id], max_results=1000, page_token=token, order_by=["attributes.start_time ASC"]
        )
        runs.extend(MlflowRun(client, run) for run in page)
        token = page.token
        if not token:
            break
    return runs
