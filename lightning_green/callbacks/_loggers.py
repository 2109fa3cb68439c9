"""Writing to the Trainer's loggers beyond ``self.log``: params, MLflow tags and artifacts.

All functions here are meant for global rank 0 and never raise into the fit: a logger that
refuses something gets one warning.

A Trainer without an ``MLFlowLogger`` in a process where an MLflow run is active
(``mlflow.start_run()``; ``mlflow.pytorch.autolog()`` logs the per-epoch ``callback_metrics``, the
callbacks' ``energy/*`` among them, into it) has that run as one more logger here
(:class:`ActiveMlflowRun`): the callbacks' params, tags, artifacts and the metrics they log
outside ``self.log`` go to it too, so replay and report read it as any run. Without autolog,
every series goes to the step an ``MLFlowLogger`` would log it at (Lightning's logging step);
under autolog, the series of an epoch go to the epoch's number, beside autolog's own.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lightning_green import keys
from lightning_green.callbacks import _compat
from lightning_green.callbacks._compat import Trainer
from lightning_green.report import error_text

REPORTS_DIRNAME = "energy_reports"
"""Folder for summaries and plots when no logger has a directory of its own."""

Written = TypeVar("Written", bound=tuple[Path | None, ...])
"""The files a writer of :func:`write_in_output_dirs` wrote (None for one it did not)."""


class ActiveMlflowRun:
    """The MLflow run active in this process, written to as an ``MLFlowLogger`` writes to its run.

    Metrics go to the step they are logged at: Lightning's logging step, as an ``MLFlowLogger``
    gets them, so that the run's steps are optimizer steps (``--cost-key step``) and a resumed
    run's copied records fall in order among its own. Under ``mlflow.pytorch.autolog()``
    (``by_epoch``) the metrics of an epoch (``epoch`` of :func:`log_metrics`, :func:`log_history`,
    and :func:`log_to_active_run`) go to the epoch's number instead: autolog logs the epoch's
    ``callback_metrics`` (the monitored metric, ``energy/total_kwh``) there, and the series of one
    run share their steps; the per-step energy and the records of checks inside an epoch still go
    to Lightning's step, one step each.

    Attributes:
        run_id: The active run.
        by_epoch: Whether autolog logs the trainer's epochs into it (at the epochs' numbers).
        experiment: An ``MlflowClient`` of the current tracking URI.
    """

    def __init__(self, run_id: str, by_epoch: bool = False) -> None:
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.by_epoch = by_epoch
        self.experiment = MlflowClient()

    def step_of(self, step: int, epoch: int | None) -> int:
        """The step metrics logged at Lightning's ``step`` for ``epoch`` (or ``None``) go to in this run.

        Example:
            >>> run = ActiveMlflowRun.__new__(ActiveMlflowRun)
            >>> run.by_epoch = False
            >>> run.step_of(29, 2), run.step_of(29, None)
            (29, 29)
            >>> run.by_epoch = True
            >>> run.step_of(29, 2), run.step_of(29, None)
            (2, 29)
        """
        return int(epoch) if self.by_epoch and epoch is not None else int(step)

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Log run parameters (values as str; MLflow refuses to change one already logged)."""
        for key, value in params.items():
            self.experiment.log_param(self.run_id, key, str(value))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log metrics at ``step`` in one ``log_batch`` request.

        Each point as ``MlflowClient.log_metric`` would log it: ``float(value)``, the time now. More
        than :data:`MLFLOW_METRICS_PER_REQUEST` metrics go in requests of that many.
        """
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp_ms, int(step)) for key, value in metrics.items()]
        for chunk in _chunks(batch):
            self.experiment.log_batch(self.run_id, metrics=chunk)


def active_run(trainer: Trainer) -> ActiveMlflowRun | None:
    """The MLflow run active in this process, when the trainer has no ``MLFlowLogger`` of its own.

    ``None`` where mlflow was never imported (nothing can be active) or no run is active.
    """
    if any(_compat.is_mlflow_logger(lg) for lg in trainer.loggers):
        return None
    mlflow = sys.modules.get("mlflow")
    try:
        run = None if mlflow is None else mlflow.active_run()
        return None if run is None else ActiveMlflowRun(run.info.run_id, by_epoch=autologged(trainer))
    except Exception:  # an mlflow without a usable active-run API: no such run
        return None


def any_logger(trainer: Trainer) -> bool:
    """Whether anything logs the run: a logger of the trainer, or an MLflow run active in the process."""
    return bool(trainer.loggers) or active_run(trainer) is not None


_UNREACHABLE_RUNS: set[str] = set()
"""MLflow runs whose tracking server stopped answering during this fit: nothing more is sent to them."""

_CONNECTION_ERRORS = frozenset(
    {
        "MaxRetryError",
        "NewConnectionError",
        "ConnectTimeoutError",
        "RetryError",
        "ConnectTimeout",
        "ReadTimeout",
        "ConnectionError",  # requests' (an OSError, not the builtin)
    }
)
_CONNECTION_TEXTS = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection")


def is_connection_failure(err: BaseException | None) -> bool:
    """Whether ``err``, or what caused it, is a failure to reach a server (refused, timed out).

    MLflow wraps the HTTP library's errors in its own exception, so the chain and the message
    are both looked at.

    Example:
        >>> is_connection_failure(RuntimeError("x")), is_connection_failure(ConnectionRefusedError())
        (False, True)
    """
    return any(
        isinstance(e, (ConnectionError, TimeoutError))
        or type(e).__name__ in _CONNECTION_ERRORS
        or any(t in str(e) for t in _CONNECTION_TEXTS)
        for e in _causes(err)
    )


def _causes(err: BaseException | None, depth: int = 8) -> list[BaseException]:
    """``err`` and what caused it (``__cause__``, else ``__context__``), at most ``depth`` deep."""
    chain: list[BaseException] = []
    while err is not None and len(chain) < depth:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def mlflow_unreachable(err: BaseException | None) -> bool:
    """Whether ``err`` is MLflow failing to reach its tracking server.

    That is: an MLflow exception in the chain, and a connection failure.
    """
    from_mlflow = any(type(e).__module__.split(".")[0] == "mlflow" for e in _causes(err))
    return from_mlflow and is_connection_failure(err)


def reachable(logger: Any) -> bool:
    """False for an MLflow logger whose server stopped answering in this fit (see :func:`give_up_on`)."""
    return not (_is_mlflow(logger) and str(getattr(logger, "run_id", "")) in _UNREACHABLE_RUNS)


def give_up_on(logger: Any, err: BaseException) -> None:
    """Send nothing more to this MLflow logger in this fit: its server does not answer.

    Every further call would wait out MLflow's retries (minutes each with its defaults); one
    warning says so, the reports are still written locally.
    """
    run_id = str(getattr(logger, "run_id", ""))
    if run_id in _UNREACHABLE_RUNS:
        return
    _UNREACHABLE_RUNS.add(run_id)
    text = " ".join(str(err).split())[:300]
    warnings.warn(
        f"lightning_green: the MLflow tracking server of run {run_id} does not answer ({text}); nothing more "
        "is sent to it in this fit (the energy summary and plot are still written locally)",
        stacklevel=3,
    )


def _failed(logger: Any, err: BaseException, message: str) -> None:
    """One logger refused a call: give up on an MLflow server that does not answer, else warn."""
    if _is_mlflow(logger) and is_connection_failure(err):
        give_up_on(logger, err)
    else:
        warnings.warn(f"lightning_green: {message}: {err}", stacklevel=3)


def _is_mlflow(logger: Any) -> bool:
    return isinstance(logger, ActiveMlflowRun) or _compat.is_mlflow_logger(logger)


def mlflow_loggers(trainer: Trainer) -> list[Any]:
    """The trainer's MLflow loggers, else the MLflow run active in the process (if any)."""
    own = [lg for lg in trainer.loggers if _compat.is_mlflow_logger(lg)]
    if own:
        return own
    run = active_run(trainer)
    return [] if run is None else [run]


def ordered_loggers(trainer: Trainer) -> list[Any]:
    """The trainer's loggers, MLflow first (the active MLflow run where it has no MLFlowLogger)."""
    run = active_run(trainer)
    ordered = sorted(trainer.loggers, key=lambda lg: not _compat.is_mlflow_logger(lg))
    return ordered if run is None else [run, *ordered]


def log_params(trainer: Trainer, params: dict[str, Any]) -> None:
    """Record run parameters on every logger (MLflow params, TensorBoard/CSV hparams).

    An MLflow run is sent each parameter once: the callbacks of a fit share one record per run of
    what it holds (:func:`_held_params`), so a parameter two of them log (``monitor``, ``mode``)
    is sent by the first only. MLflow's async logging (``MLFlowLogger(synchronous=False)``) may
    merge two batches of a run into one, or write them at the same time: one key in both made the
    store refuse one of them whole, in MLflow's background thread, and a callback's parameters were
    lost without a word. A parameter the run already holds with another value (a resumed run whose
    energy source or plan changed) is recorded as a tag ``<name>.resumed`` instead (the latest
    value); one logged again with the value the run holds is not sent. TensorBoard and CSV loggers
    merge hyperparameters in a dict of their own: they get ``params`` whole.
    """
    for logger in filter(reachable, ordered_loggers(trainer)):
        if _is_mlflow(logger):
            _log_mlflow_params(logger, params)
            continue
        try:
            logger.log_hyperparams(params)
        except Exception as err:
            _failed(logger, err, f"{type(logger).__name__} refused params {params}")


_HELD_PARAMS: dict[str, dict[str, str]] = {}
"""Per MLflow run id: the ``lightning_green.*`` parameters it holds (as text; a ``.resumed`` tag's
value for one it holds with another), as read from the run at the first parameters a fit logs to
it, and as the callbacks of the fit logged them since (:func:`log_params`)."""


def begin_fit(trainer: Trainer) -> None:
    """At a fit's start: forget what this process knew of the trainer's MLflow runs.

    Their server is tried again (it may be back), and their parameters are read anew at the first
    ones the fit logs (:data:`_HELD_PARAMS`).
    """
    for logger in mlflow_loggers(trainer):
        run_id = str(getattr(logger, "run_id", ""))
        _UNREACHABLE_RUNS.discard(run_id)
        _HELD_PARAMS.pop(run_id, None)


def _held_params(logger: Any) -> dict[str, str] | None:
    """The record of the ``lightning_green.*`` parameters the MLflow run of ``logger`` holds.

    Read from the run once a fit: its parameters, and for one held with another value since, the
    tag ``<name>.resumed``. ``None`` when its server does not answer (given up on); ``{}`` for a
    run that cannot be read otherwise (a refused batch is then logged one by one).
    """
    run_id = str(logger.run_id)
    held = _HELD_PARAMS.get(run_id)
    if held is not None:
        return held
    held = {}
    try:
        data = logger.experiment.get_run(run_id).data
    except Exception as err:
        if is_connection_failure(err):
            _failed(logger, err, f"could not read the parameters of MLflow run {run_id}")
            return None
    else:
        held = {k: str(v) for k, v in data.params.items() if k.startswith(keys.PARAM_PREFIX)}
        for key, value in data.tags.items():
            name = key.removesuffix(keys.RESUMED_SUFFIX)
            if name != key and name in held:
                held[name] = str(value)
    _HELD_PARAMS[run_id] = held
    return held


def _log_mlflow_params(logger: Any, params: dict[str, Any]) -> None:
    """Log to an MLflow run the parameters it does not hold; a changed one becomes a ``.resumed`` tag."""
    held = _held_params(logger)
    if held is None:
        return
    new = {name: value for name, value in params.items() if name not in held}
    changed = {name: value for name, value in params.items() if name in held and held[name] != str(value)}
    if new:
        try:
            logger.log_hyperparams(new)
        except Exception as err:
            if is_connection_failure(err):
                _failed(logger, err, f"{type(logger).__name__} refused params {new}")
                return
            refused = _log_params_one_by_one(logger, new, held)
            if refused is None:
                return
            changed.update(refused)
        else:
            held.update({name: str(value) for name, value in new.items()})
    if changed:
        _set_tags_on(logger, {f"{name}{keys.RESUMED_SUFFIX}": value for name, value in changed.items()})
        held.update({name: str(value) for name, value in changed.items()})


def _log_params_one_by_one(
    logger: Any, params: dict[str, Any], held: dict[str, str]
) -> dict[str, Any] | None:
    """Log ``params`` to an MLflow run that refused them together, recording each it takes in ``held``.

    Returns:
        The parameters it refused (held with another value: each becomes a ``.resumed`` tag), or
        ``None`` when its server stopped answering.
    """
    refused = {}
    for name, value in params.items():
        try:
            logger.log_hyperparams({name: value})
        except Exception as err:
            if is_connection_failure(err):
                _failed(logger, err, f"{type(logger).__name__} refused params {params}")
                return None
            refused[name] = value
        else:
            held[name] = str(value)
    return refused


EARLIER_PART_SERIES = (keys.TOTAL_KWH, keys.CHECK_KWH)
"""Series a log of the run holds once the run's epochs or the stopper's checks were logged to it."""


def runs_without_energy(trainer: Trainer) -> list[Any]:
    """The trainer's logs that hold none of the run's series: logs its earlier part never wrote to.

    A fit resumed from a checkpoint into a new log writes into one: a new MLflow run
    (``MLFlowLogger`` without ``run_id``), a new ``version_N`` folder of ``CSVLogger`` or
    ``TensorBoardLogger``; a fit resumed into the run's own MLflow run (``run_id``) finds the
    series its earlier part logged there. What tells, per logger (:data:`EARLIER_PART_SERIES`,
    with the logger's prefix):

    - an MLflow run (``MLFlowLogger``, or the run active in the process): its metrics;
    - a ``CSVLogger``: the header of its ``metrics.csv`` and the rows it has yet to write;
    - a ``TensorBoardLogger``: whether its folder holds an event file besides the one it writes
      (written by an earlier fit: taken to hold them; event files are not read here).

    Any other logger (W&B, Comet, Neptune ...) cannot be inspected and is left out, as is a
    ``TensorBoardLogger`` whose event file cannot be named or whose folder is not local. For
    global rank 0; a logger that cannot be read is left out (with one warning).
    """
    loggers = filter(reachable, ordered_loggers(trainer))
    held = _what_each_holds(
        loggers, lambda logger: f"could not read what {type(logger).__name__} holds of the run"
    )
    return [logger for logger, holds in held if holds is False]


def _what_each_holds(
    loggers: Iterable[Any], failure: Callable[[Any], str]
) -> Iterator[tuple[Any, bool | None]]:
    """Each logger with whether it holds any of :data:`EARLIER_PART_SERIES` (``None``: cannot tell).

    A logger that cannot be read is left out, with one warning (``failure(logger)``).
    """
    for logger in loggers:
        names = {_prefixed(logger, key) for key in EARLIER_PART_SERIES}
        try:
            held = _holds_any(logger, names)
        except Exception as err:
            _failed(logger, err, failure(logger))
            continue
        yield logger, held


def mlflow_runs_with_energy(trainer: Trainer) -> list[str]:
    """The trainer's MLflow runs that already hold the energy series of a run (a fit logged there).

    Asked when a fit that starts a new run (no checkpoint resumed) begins: an MLflow run it logs
    to that holds them (``MLFlowLogger(run_id=...)`` of an earlier fit's run, or such a run
    started again with ``mlflow.start_run(run_id=...)``) gets two runs' series at the same steps.
    For global rank 0; a run that cannot be read is left out (with one warning).

    Returns:
        Their run ids, once each, in the trainer's order.
    """
    found: list[str] = []
    loggers = filter(reachable, mlflow_loggers(trainer))
    for logger, held in _what_each_holds(
        loggers, lambda logger: f"could not read what MLflow run {getattr(logger, 'run_id', '?')} holds"
    ):
        run_id = str(logger.run_id)
        if held and run_id not in found:
            found.append(run_id)
    return found


def _prefixed(logger: Any, key: str) -> str:
    """``key`` as ``logger`` logs it (after its ``prefix``, joined by its ``LOGGER_JOIN_CHAR``)."""
    prefix = getattr(logger, "_prefix", "") or ""
    return f"{prefix}{getattr(logger, 'LOGGER_JOIN_CHAR', '-')}{key}" if prefix else key


def _holds_any(logger: Any, names: set[str]) -> bool | None:
    """Whether ``logger`` holds a series of ``names``; ``None`` where that cannot be told."""
    if _is_mlflow(logger):
        return not names.isdisjoint(logger.experiment.get_run(logger.run_id).data.metrics)
    if _compat.is_csv_logger(logger):
        writer = logger.experiment
        path = getattr(writer, "metrics_file_path", None)
        if path is None:
            return None
        held = set(getattr(writer, "metrics_keys", ()))
        held.update(key for row in getattr(writer, "metrics", ()) for key in row)
        if os.path.isfile(path):
            with open(path, newline="", encoding="utf-8") as f:
                held.update(cell.strip() for cell in next(csv.reader(f), []))
        return not names.isdisjoint(held)
    if _compat.is_tensorboard_logger(logger):
        own = _event_file(logger.experiment)
        folder = Path(str(logger.log_dir))
        if own is None or not folder.is_dir():
            return None
        return any(p.name != Path(own).name for p in folder.glob(keys.TENSORBOARD_EVENTS_PREFIX + "*"))
    return None


def _event_file(writer: Any) -> str | None:
    """The event file a TensorBoard ``SummaryWriter`` writes (torch's or tensorboardX's), or ``None``."""
    get = getattr(writer, "_get_file_writer", None)
    file_writer = get() if callable(get) else getattr(writer, "file_writer", None)
    events = getattr(file_writer, "event_writer", None)
    name = getattr(events, "_file_name", None)
    if name is None:  # tensorboardX keeps it one level down
        name = getattr(getattr(events, "_ev_writer", None), "_file_name", None)
    return None if name is None else str(name)


def log_history(loggers: Sequence[Any], rows: Sequence[tuple[int, int | None, dict[str, float]]]) -> None:
    """Write records of a run's earlier part into ``loggers`` (logs that hold none of them), step by step.

    The records of one step go in one ``log_metrics`` call (one row of a ``metrics.csv``), in the
    order of the steps. An MLflow run (``MLFlowLogger``, :class:`ActiveMlflowRun`) gets the same points, in
    the same order, in a few ``log_batch`` requests (:func:`_log_mlflow_history`) rather than
    one a step: a long run's copy took seconds before its first epoch, on every resume, counted
    as the run's energy. A ``CSVLogger`` or ``TensorBoardLogger`` also gets the run parameter
    :data:`~lightning_green.keys.PARAM_EARLIER_PART_UNTIL_STEP` (the last step written here: its
    readers tell the copy from the fit's own records by it) and writes both out at once.

    Args:
        loggers: The loggers (:func:`runs_without_energy`).
        rows: ``(step, epoch, metrics)``: the metrics go to ``step``; ``epoch``, when not
            ``None``, is the epoch they belong to: the step an autologged active MLflow run gets
            instead (:meth:`ActiveMlflowRun.step_of`, as :func:`log_metrics`), which gets no
            ``epoch`` series either (the step is the epoch; autolog logs none).
    """
    for logger in filter(reachable, loggers):
        by_epoch = isinstance(logger, ActiveMlflowRun) and logger.by_epoch
        by_step: dict[int, dict[str, float]] = {}
        for step, epoch, metrics in rows:
            if by_epoch:
                metrics = {key: value for key, value in metrics.items() if key != "epoch"}
            if metrics:
                target = logger.step_of(step, epoch) if by_epoch else step
                by_step.setdefault(target, {}).update(metrics)
        if not by_step:
            continue
        try:
            if _is_mlflow(logger):
                _log_mlflow_history(logger, by_step)
                continue
            for step in sorted(by_step):
                logger.log_metrics(by_step[step], step=step)
            if _compat.is_csv_logger(logger) or _compat.is_tensorboard_logger(logger):
                logger.log_hyperparams({keys.PARAM_EARLIER_PART_UNTIL_STEP: max(by_step)})
                logger.save()
        except Exception as err:
            _failed(logger, err, f"{type(logger).__name__} refused the run's earlier records")


MLFLOW_METRICS_PER_REQUEST = 1000
"""The most metrics one MLflow ``log_batch`` request may carry (the tracking server's limit)."""

_Chunked = TypeVar("_Chunked")


def _chunks(
    items: Sequence[_Chunked], size: int = MLFLOW_METRICS_PER_REQUEST
) -> Iterator[Sequence[_Chunked]]:
    """``items`` in consecutive slices of at most ``size``, in order.

    Example:
        >>> [list(c) for c in _chunks(range(5), 2)]
        [[0, 1], [2, 3], [4]]
    """
    for start in range(0, len(items), size):
        yield items[start : start + size]


_Batch = tuple[str, list[Any], list[Any], list[Any], dict[str, Any]]
"""One recorded ``log_batch`` call: ``(run_id, metrics, params, tags, other keyword arguments)``."""


@contextlib.contextmanager
def _recording_batches(client: Any) -> Iterator[list[_Batch]]:
    """While open, ``client.log_batch`` records its calls (in the list yielded) instead of sending them.

    The client's own method is put back on exit. Only this client's ``log_batch`` is held back:
    whatever else is called on it is sent as usual (and every call, where the client cannot be
    given an attribute of its own).
    """
    recorded: list[_Batch] = []

    def record(
        run_id: str,
        metrics: Iterable[Any] = (),
        params: Iterable[Any] = (),
        tags: Iterable[Any] = (),
        **kwargs: Any,
    ) -> None:
        recorded.append((run_id, list(metrics), list(params), list(tags), kwargs))

    try:
        own = vars(client).get("log_batch")
        client.log_batch = record
    except (TypeError, AttributeError):  # a client that cannot be given one: its calls are sent as made
        yield recorded
        return
    try:
        yield recorded
    finally:
        if own is None:
            del client.log_batch
        else:
            client.log_batch = own


def _send_batches(client: Any, recorded: Sequence[_Batch]) -> None:
    """Send recorded ``log_batch`` calls in as few requests as MLflow takes, in their order.

    Consecutive calls of metrics alone to one run, with the same other arguments, are joined and
    sent in chunks of :data:`MLFLOW_METRICS_PER_REQUEST`; any other call is sent as recorded.
    """
    pending: list[Any] = []
    pending_to: tuple[str, dict[str, Any]] | None = None

    def flush() -> None:
        if pending_to is not None:
            for chunk in _chunks(pending):
                client.log_batch(pending_to[0], metrics=list(chunk), **pending_to[1])
        pending.clear()

    for run_id, metrics, params, tags, kwargs in recorded:
        if params or tags:
            flush()
            pending_to = None
            client.log_batch(run_id, metrics=metrics, params=params, tags=tags, **kwargs)
            continue
        if pending_to != (run_id, kwargs):
            flush()
            pending_to = (run_id, kwargs)
        pending.extend(metrics)
    flush()


def _log_mlflow_history(logger: Any, by_step: dict[int, dict[str, float]]) -> None:
    """Log ``step -> metrics`` into an MLflow run in a few requests, in the order of the steps.

    Each step's metrics are given to the logger's own ``log_metrics`` (an ``MLFlowLogger``'s
    prefix, key clean-up and arguments, :class:`ActiveMlflowRun`'s), with the requests they make
    recorded, not sent (:func:`_recording_batches`); the recorded points are then sent joined
    (:func:`_send_batches`): the same keys, values and steps as one request a step (each step its
    own timestamp, taken as it was recorded: they never decrease from step to step), in
    ``ceil(points / 1000)`` requests. A logger whose ``log_metrics`` sends otherwise than by its
    client's ``log_batch`` sends as it does; one that fails part-way sends nothing of the copy.
    """
    client = logger.experiment
    with _recording_batches(client) as recorded:
        for step in sorted(by_step):
            logger.log_metrics(by_step[step], step=step)
    _send_batches(client, recorded)


def log_metrics(trainer: Trainer, metrics: dict[str, float], step: int, epoch: int | None = None) -> None:
    """Log metrics at ``step`` straight to every logger (where ``LightningModule.log`` is not allowed).

    ``epoch``: the epoch they belong to, for metrics of an epoch: the step an autologged active
    MLflow run gets instead of ``step`` (where autolog logs that epoch's metrics,
    :class:`ActiveMlflowRun`), and the ``epoch`` a ``CSVLogger`` row gets (as the rows Lightning
    logs for the epoch have).
    """
    for logger in filter(reachable, ordered_loggers(trainer)):
        try:
            if isinstance(logger, ActiveMlflowRun):
                logger.log_metrics(metrics, step=logger.step_of(step, epoch))
            elif epoch is not None and _compat.is_csv_logger(logger):
                logger.log_metrics({**metrics, "epoch": epoch}, step=step)
            else:
                logger.log_metrics(metrics, step=step)
        except Exception as err:
            _failed(logger, err, f"{type(logger).__name__} refused metrics {list(metrics)}")


def autologged(trainer: Trainer) -> bool:
    """Whether ``mlflow.pytorch.autolog()`` attached its callback to this trainer.

    That callback logs the epoch's ``callback_metrics`` into the active run every epoch.
    """
    return any(type(cb).__name__.endswith("MlflowPLCallback") for cb in trainer.callbacks)


def log_to_active_run(trainer: Trainer, metrics: dict[str, float]) -> None:
    """Log an epoch's metrics, at its end, to the MLflow run active in the process only, if any.

    At the step Lightning logs the epoch's end at (one below its logging step now), with
    Lightning's ``epoch`` series, as an ``MLFlowLogger`` gets them; under autolog at the epoch's
    number, where autolog logs the epoch's metrics (:class:`ActiveMlflowRun`).
    """
    run = active_run(trainer)
    if run is None or not reachable(run):
        return
    epoch = int(trainer.current_epoch)
    step = run.step_of(max(0, _compat.logging_step(trainer) - 1), epoch)
    if not run.by_epoch:
        metrics = {**metrics, "epoch": float(epoch)}
    try:
        run.log_metrics(metrics, step=step)
    except Exception as err:
        _failed(run, err, f"the active MLflow run refused metrics {list(metrics)}")


def set_tags(trainer: Trainer, tags: dict[str, Any]) -> None:
    """Set tags (values as str) on every MLflow run of the trainer (other loggers have no tags)."""
    for logger in filter(reachable, mlflow_loggers(trainer)):
        _set_tags_on(logger, tags)


def _set_tags_on(logger: Any, tags: dict[str, Any]) -> None:
    """Set tags (values as str) on the run of one MLflow logger (one warning if it refuses)."""
    try:
        for key, value in tags.items():
            logger.experiment.set_tag(logger.run_id, key, str(value))
    except Exception as err:
        _failed(logger, err, f"could not set MLflow tags {tags}")


def log_artifact(trainer: Trainer, path: Path, artifact_path: str = "lightning_green") -> None:
    """Upload a local file into folder ``artifact_path`` of every MLflow run of the trainer."""
    for logger in filter(reachable, mlflow_loggers(trainer)):
        try:
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=artifact_path)
        except Exception as err:
            _failed(logger, err, f"could not log artifact {path} to MLflow")


def output_dirs(trainer: Trainer) -> list[Path]:
    """Every folder the report files go to: each logger's own, once each, in the trainer's order.

    TensorBoard and CSV loggers (and any logger with a local ``log_dir``) give their versioned
    directory; an MLflow logger gives a per-run folder ``energy_reports/<run_id>`` under
    ``default_root_dir`` (its own ``save_dir`` only exists for file stores). Two loggers sharing a
    folder give it once. Without a logger, ``energy_reports`` under ``default_root_dir``
    (``energy_reports/<run_id>`` for an MLflow run active in the process). The folders are not
    created.

    Returns:
        At least one folder; the first is :func:`output_dir`.
    """
    found: dict[str, Path] = {}
    for logger in trainer.loggers:
        folder = _logger_dir(trainer, logger)
        if folder is not None:
            found.setdefault(os.path.realpath(folder), folder)
    if found:
        return list(found.values())
    run = active_run(trainer)
    if run is not None:
        return [Path(trainer.default_root_dir) / REPORTS_DIRNAME / run.run_id]
    return [Path(trainer.default_root_dir) / REPORTS_DIRNAME]


def _logger_dir(trainer: Trainer, logger: Any) -> Path | None:
    """The local folder of one logger (see :func:`output_dirs`), None for a logger without one.

    A logger that cannot say (its ``log_dir`` or MLflow ``run_id`` raised) has none: the other
    loggers' folders still get the files.
    """
    try:
        if _compat.is_mlflow_logger(logger):
            return Path(trainer.default_root_dir) / REPORTS_DIRNAME / str(logger.run_id)
        log_dir = getattr(logger, "log_dir", None)
    except Exception as err:
        name = type(logger).__name__
        _compat.warn(trainer, f"lightning_green: {name} has no folder for the reports: {err}")
        return None
    return Path(log_dir) if log_dir else None


def output_dir(trainer: Trainer) -> Path:
    """The first of :func:`output_dirs`: where the files logged to MLflow are written first."""
    return output_dirs(trainer)[0]


def write_in_output_dirs(
    trainer: Trainer, write: Callable[[Path], Written], what: str, copy: bool = True
) -> Written | None:
    """Write report files into every folder of :func:`output_dirs`, the same bytes in each.

    ``write`` writes them into the first folder that takes them (a folder it fails in is left for
    the next); they are then copied into every other folder (``copy=False``: ``write`` writes into
    each folder itself, as a config whose writer puts its parts beside it). Each folder that
    cannot take them gets one warning naming it and the error, and the other folders still get
    them: one folder that cannot be written (a root under a regular file, a read-only disk) loses
    the files there only. For global rank 0.

    Args:
        trainer: The trainer whose loggers' folders get the files.
        write: Writes the files into the folder it is given (created by it when missing) and
            returns their paths (None for a file it did not write).
        what: The files in words, for the warnings (``"the energy report"``).
        copy: Copy the first folder's files into the others (else ``write`` in each).

    Returns:
        What ``write`` returned in the first folder that took the files (the ones to log to
        MLflow, :func:`log_written`), or None when no folder did.
    """
    written: Written | None = None
    for folder in output_dirs(trainer):
        try:
            if written is None or not copy:
                files = write(folder)
                if written is None:
                    written = files
                continue
            folder.mkdir(parents=True, exist_ok=True)
            for path in written:
                if path is not None:
                    shutil.copyfile(path, folder / path.name)
        except Exception as err:  # a report must never fail a run: this folder goes without
            _compat.warn(trainer, f"lightning_green: could not write {what} into {folder}: {error_text(err)}")
    return written


def log_written(
    trainer: Trainer,
    written: Sequence[Path | None] | None,
    write: Callable[[Path], Written],
    what: str,
    artifact_path: str = "lightning_green",
) -> None:
    """Log report files into folder ``artifact_path`` of every MLflow run of the trainer.

    The files :func:`write_in_output_dirs` wrote (``written``); when no folder took them
    (``None``), the files ``write`` writes into a temporary folder, removed after: an MLflow run
    gets its artifacts even where no local folder can hold them. For global rank 0.

    Args:
        trainer: The trainer whose MLflow runs get the files.
        written: What :func:`write_in_output_dirs` returned.
        write: The same writer.
        what: The files in words, for a warning when the temporary folder fails too.
        artifact_path: The artifacts' folder in the run.
    """
    if not any(reachable(logger) for logger in mlflow_loggers(trainer)):
        return
    if written is not None:
        for path in written:
            if path is not None:
                log_artifact(trainer, path, artifact_path)
        return
    with tempfile.TemporaryDirectory(prefix="lightning_green_") as folder:
        try:
            files = write(Path(folder))
        except Exception as err:
            _compat.warn(trainer, f"lightning_green: could not write {what} for MLflow: {error_text(err)}")
            return
        for path in files:
            if path is not None:
                log_artifact(trainer, path, artifact_path)
