"""Curves from Lightning ``TensorBoardLogger`` logs: event files and what the callbacks wrote beside them.

``TensorBoardLogger`` (Lightning's default logger where tensorboard is installed) leaves a folder
(``lightning_logs/version_0``) holding ``events.out.tfevents.*`` files (every metric logged, as a
scalar at its step), ``hparams.yaml`` (the run parameters, the callbacks' ``lightning_green.<name>``
among them) and, from :class:`~lightning_green.EnergyMonitor`, ``energy_summary.json``.
:class:`TensorBoardRun` reads the folder as an MLflow run is read and the one reader of logged
runs (:func:`~lightning_green.offline.mlflow_curves.curve_of_run`, through
:func:`~lightning_green.offline.lightning_logs.read_log_curve`) makes its curve, so a replay of the
log makes the callback's decisions. A step logged twice keeps the value with the latest wall time
(MLflow's rule). A run resumed from a checkpoint into a new folder (``version_1``) is joined to the
earlier part it continues, as a ``CSVLogger`` log is (:mod:`.lightning_csv`; a copy of that part
the resumed log holds is read where the part is not there). Reading needs the
``tensorboard`` package (which ``TensorBoardLogger`` needs too).
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning_green import keys
from lightning_green.offline.errors import OfflineInputError
from lightning_green.offline.lightning_csv import (
    HPARAMS_FILE,
    SUMMARY_FILE,
    LogParts,
    earlier_part_until,
    earlier_parts,
    joined_params,
    joined_span,
    read_hparams,
    read_summary_marks,
    resume_point,
    role_in_log,
    side_files,
)
from lightning_green.offline.mlflow_runs import abandoned_spans, latest_per_step, steps_done, training_series

EVENTS_PREFIX = keys.TENSORBOARD_EVENTS_PREFIX
"""How TensorBoard event files are named."""
HP_METRIC = "hp_metric"
"""The placeholder ``TensorBoardLogger`` logs at step 0 with the hyperparameters of every fit (a
resumed one's too): no step of the run's own."""


def is_tensorboard_log(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TensorBoard event file (``events.out.tfevents.*``).

    Example:
        >>> is_tensorboard_log("lightning_logs/version_0/events.out.tfevents.1733.host.1.0")
        True
    """
    return Path(path).name.startswith(EVENTS_PREFIX)


class _Scalar:
    """A TensorBoard scalar event as :func:`~.mlflow_runs.latest_per_step` reads a metric point."""

    __slots__ = ("step", "timestamp", "value")

    def __init__(self, step: int, wall_time: float, value: float) -> None:
        self.step, self.timestamp, self.value = step, int(wall_time * 1e6), value


class TensorBoardRun:
    """The folder of a TensorBoard event file read as a logged run (:class:`~.mlflow_curves.LoggedRun`).

    Every event file of the folder is read (a run resumed into the same folder writes another),
    and so are the earlier parts a run resumed into a new folder continues (sibling folders, as
    for ``CSVLogger``: :func:`~.lightning_csv.earlier_parts`).

    Attributes:
        run_id: The folder, as given (the curve's ``curve_id``).
        label: How messages name it: ``TensorBoard log <folder>`` (and the folders it continues).
        params: ``hparams.yaml``'s entries as text (as MLflow keeps parameters); empty without it.
        tags: ``lightning_green.stop_reason`` (and ``stopped_epoch``) from ``energy_summary.json``,
            when the folder has one.
        failed: Whether that summary marks the run failed (the fit raised).
        inputs: Every file read for the run: the folder's event files, and the ``hparams.yaml``
            and ``energy_summary.json`` beside them (when there), and those of the earlier parts
            it continues (an output must be none of them).
        continues: The event files of the earlier parts of this run, joined in before its own
            scalars (a run resumed from a checkpoint writes a new ``version_N`` folder), latest
            part first.
        folders: The folders read: this log's, then those of the earlier parts it continues.
    """

    def __init__(self, path: str | os.PathLike[str], *, parts: LogParts | None = None) -> None:
        """Read the event files of the folder of ``path`` (an event file) and the earlier parts.

        The files beside the event files are read too, and so are those of the earlier parts the
        log continues.

        Args:
            path: One of the log's event files.
            parts: The folders already read by this command (:data:`~.lightning_csv.LogParts`),
                shared between the logs it opens so that each sibling folder is read once;
                default: this call's.

        Raises:
            RuntimeError: If tensorboard is not installed.
            OfflineInputError: If an event file cannot be read, or ``hparams.yaml`` or
                ``energy_summary.json`` is malformed.
        """
        parts = {} if parts is None else parts
        folder = Path(path).parent
        own = _tb_part(folder, parts)
        self.run_id = str(folder)
        self.label = f"TensorBoard log {folder}"
        self.tags, self.failed = own.tags, own.failed
        chain: list[tuple[_TbPart, int]] = []
        if own.resume is not None:  # a resumed log: its earlier parts are sibling folders
            here = folder.resolve()
            siblings = sorted({p.parent for p in here.parent.glob(f"*/{EVENTS_PREFIX}*")}, reverse=True)
            chain = earlier_parts(own, [_tb_part(other, parts) for other in siblings])
        self._scalars: dict[str, list[_Scalar]] = {}
        # the oldest part first, up to where it was continued, then this log's (a step logged again:
        # the latest wall time wins); a copy of the earlier parts a later part holds is left out
        pieces = [
            *((part, last, part.copied_until) for part, last in reversed(chain)),
            (own, None, own.copied_until),
        ]
        for i, (part, last_step, copied_until) in enumerate(pieces):
            after, until = joined_span(i == 0, copied_until, last_step)
            for tag, events in part.scalars.items():
                self._scalars.setdefault(tag, []).extend(e for e in events if after < e.step <= until)
        self.params = joined_params(own, chain)
        self.continues: tuple[str, ...] = tuple(f for part, _ in chain for f in part.event_files)
        self.inputs: tuple[str, ...] = (
            *(str(folder / Path(f).name) for f in own.event_files),
            *side_files(folder),
            *(f for part, _ in chain for f in part.inputs),
        )
        self.folders: tuple[str, ...] = (str(folder), *(str(part.folder) for part, _ in chain))
        if chain:
            self.label = f"{self.label} (continuing {', '.join(self.folders[1:])})"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The scalars the log holds, sorted."""
        return tuple(sorted(self._scalars))

    def reads(self, path: str | os.PathLike[str]) -> str | None:
        """What this log's reader reads a file at ``path`` as, whether it exists or not; else ``None``.

        In the log's folder and those of the earlier parts it continues: every
        ``events.out.tfevents.*`` file, ``hparams.yaml`` and ``energy_summary.json``. A file
        written there becomes part of the log the next time it is read.
        """
        return role_in_log(
            path, self.folders, lambda name: name.startswith(EVENTS_PREFIX), "an event file of the log"
        )

    def history(self, key: str) -> dict[int, float]:
        """``step -> value`` of the scalar ``key`` (empty when the run never logged it).

        ``"step"`` (when no scalar has that name) is the optimizer steps done at every step a
        scalar of the training keeps (a step logged twice, or one of a fit abandoned for a later one
        logged into the same folder, is read as for ``key``; the step plus one,
        :func:`~.mlflow_runs.steps_done`, :func:`~.mlflow_runs.training_series`: a cost for a run
        logged without energy, ``--cost-key step``).
        """
        return _scalar_history(self._scalars, key)


def _scalar_history(scalars: dict[str, list[_Scalar]], key: str) -> dict[int, float]:
    """``step -> value`` of the scalar ``key`` of ``scalars`` (see :meth:`TensorBoardRun.history`)."""
    abandoned = abandoned_spans(scalars.get(keys.CHECK_NUMBER, []))
    if key == "step" and key not in scalars:  # the steps each scalar keeps, as for an MLflow run
        kept = (latest_per_step(events, abandoned) for tag, events in scalars.items() if training_series(tag))
        return steps_done(step for steps in kept for step in steps)
    return latest_per_step(scalars.get(key, []), abandoned)


class _TbPart:
    """The event files of one folder and the files beside them, its own scalars only."""

    def __init__(self, folder: Path) -> None:
        try:
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
            from tensorboard.plugins.hparams import plugin_data_pb2
            from tensorboard.util import tensor_util
        except ImportError:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "reading TensorBoard logs needs tensorboard: pip install tensorboard"
            ) from None
        self.folder = folder
        params = read_hparams(folder / HPARAMS_FILE)
        self.tags, self.failed = read_summary_marks(folder / SUMMARY_FILE)
        self.scalars: dict[str, list[_Scalar]] = {}
        self.event_files = tuple(map(str, sorted(folder.glob(EVENTS_PREFIX + "*"))))
        self.inputs: tuple[str, ...] = (*self.event_files, *side_files(folder))
        for events in self.event_files:
            try:
                for event in EventFileLoader(events).Load():
                    for value in event.summary.value:
                        plugin = value.metadata.plugin_data.plugin_name
                        if plugin == "hparams" and value.tag == "_hparams_/session_start_info":
                            data = plugin_data_pb2.HParamsPluginData.FromString(
                                value.metadata.plugin_data.content
                            )
                            params.update({k: _text(v) for k, v in data.session_start_info.hparams.items()})
                        elif value.HasField("simple_value"):
                            self._add(value.tag, event, float(value.simple_value))
                        elif plugin == "scalars" and value.HasField("tensor"):
                            self._add(value.tag, event, float(tensor_util.make_ndarray(value.tensor).item()))
            except Exception as e:  # a truncated or foreign file
                raise OfflineInputError(
                    f"TensorBoard log {folder}: {Path(events).name} cannot be read: {e}"
                ) from None
        self.params = params
        self.copied_until = earlier_part_until(params, folder)
        steps = [e.step for tag, scalars in self.scalars.items() if tag != HP_METRIC for e in scalars]
        self.first_step: int | None = min(steps) if steps else None
        # when the folder was begun: the wall time of its first event, in seconds
        times = [e.timestamp / 1e6 for scalars in self.scalars.values() for e in scalars]
        self.begun: float | None = min(times) if times else None
        self.resume = resume_point(self)

    def _add(self, tag: str, event: object, value: float) -> None:
        step, wall_time = int(event.step), float(event.wall_time)  # type: ignore[attr-defined]
        self.scalars.setdefault(tag, []).append(_Scalar(step, wall_time, value))

    def history(self, key: str) -> dict[int, float]:
        return _scalar_history(self.scalars, key)


def _tb_part(folder: Path, parts: LogParts) -> _TbPart:
    """The own scalars of the event files in ``folder``, read once per ``parts``."""
    key = ("tensorboard", folder.resolve())
    if key not in parts:
        parts[key] = _TbPart(folder)
    return parts[key]


def _text(value: object) -> str:
    """An hparams plugin value as MLflow keeps a parameter: ``3`` for 3.0, else ``str``."""
    kind = value.WhichOneof("kind")  # type: ignore[attr-defined]
    x = getattr(value, kind) if kind else ""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)
