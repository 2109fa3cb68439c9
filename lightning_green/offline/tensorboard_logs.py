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
earlier part it continues, as a ``CSVLogger`` log is (:mod:`.lightning_csv`). Reading needs the
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
    continued_step,
    read_hparams,
    read_summary_marks,
    role_in_log,
    side_files,
)
from lightning_green.offline.mlflow_runs import latest_per_step

EVENTS_PREFIX = "events.out.tfevents."
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
    and so is the earlier part a run resumed into a new folder continues (a sibling folder, as
    for ``CSVLogger``: :meth:`~.lightning_csv.LightningCsvRun._earlier_part`).

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

    def __init__(self, path: str | os.PathLike[str], *, _opening: frozenset[Path] = frozenset()) -> None:
        """Read the event files of the folder of ``path`` (an event file) and the earlier parts.

        The files beside the event files are read too, and so are those of the earlier parts the
        log continues.

        Raises:
            RuntimeError: If tensorboard is not installed.
            OfflineInputError: If an event file cannot be read, or ``hparams.yaml`` or
                ``energy_summary.json`` is malformed.
        """
        try:
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
            from tensorboard.plugins.hparams import plugin_data_pb2
            from tensorboard.util import tensor_util
        except ImportError:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "reading TensorBoard logs needs tensorboard: pip install tensorboard"
            ) from None
        folder = Path(path).parent
        self.run_id = str(folder)
        self.label = f"TensorBoard log {folder}"
        params = read_hparams(folder / HPARAMS_FILE)
        self.tags, self.failed = read_summary_marks(folder / SUMMARY_FILE)
        self._scalars: dict[str, list[_Scalar]] = {}
        event_files = tuple(map(str, sorted(folder.glob(EVENTS_PREFIX + "*"))))
        self.inputs: tuple[str, ...] = (*event_files, *side_files(folder))
        self.continues: tuple[str, ...] = ()
        self.folders: tuple[str, ...] = (str(folder),)
        for events in event_files:
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
                raise OfflineInputError(f"{self.label}: {Path(events).name} cannot be read: {e}") from None
        self.params = params
        earlier = self._earlier_part(folder, _opening)
        if earlier is not None:
            run, last_step = earlier
            joined = {
                tag: [e for e in scalars if e.step <= last_step] for tag, scalars in run._scalars.items()
            }
            for tag, scalars in self._scalars.items():
                joined.setdefault(tag, []).extend(scalars)
            self._scalars = joined
            self.params = {**run.params, **self.params}
            self.continues = (*(f for f in run.inputs if is_tensorboard_log(f)), *run.continues)
            self.inputs = (*self.inputs, *run.inputs)
            self.folders = (*self.folders, *run.folders)
            self.label = f"{self.label} (continuing {', '.join(run.folders)})"

    def reads(self, path: str | os.PathLike[str]) -> str | None:
        """What this log's reader reads a file at ``path`` as, whether it exists or not; else ``None``.

        In the log's folder and those of the earlier parts it continues: every
        ``events.out.tfevents.*`` file, ``hparams.yaml`` and ``energy_summary.json``. A file
        written there becomes part of the log the next time it is read.
        """
        return role_in_log(
            path, self.folders, lambda name: name.startswith(EVENTS_PREFIX), "an event file of the log"
        )

    def _earlier_part(self, folder: Path, opening: frozenset[Path]) -> tuple[TensorBoardRun, int] | None:
        """The log this one continues, and its last step before the resume; ``None`` if none.

        As :meth:`.LightningCsvRun._earlier_part`: the sibling folders (``version_*`` beside this
        log's) holding event files are searched for the epoch whose ``energy/total_kwh`` is the
        total this log's first epoch started from (:func:`~.lightning_csv.continued_step`).
        """
        totals, epoch_kwh = self.history(keys.TOTAL_KWH), self.history(keys.EPOCH_KWH)
        if not totals or not epoch_kwh:
            return None
        first = min(totals)
        base = totals[first] - epoch_kwh.get(first, 0.0)
        if not base > 0:
            return None
        epoch = self.history("epoch").get(first)
        first_step = min(
            e.step for tag, scalars in self._scalars.items() if tag != HP_METRIC for e in scalars
        )
        here = folder.resolve()
        opening = opening | {here}  # the logs being opened: a later part is not an earlier one
        siblings = sorted({p.parent for p in here.parent.glob(f"*/{EVENTS_PREFIX}*")}, reverse=True)
        for other in siblings:
            if other.resolve() in opening:
                continue
            run = TensorBoardRun(sorted(other.glob(EVENTS_PREFIX + "*"))[0], _opening=opening)
            step = continued_step(run, base, epoch, first_step)
            if step is not None:
                return run, step
        return None

    def _add(self, tag: str, event: object, value: float) -> None:
        step, wall_time = int(event.step), float(event.wall_time)  # type: ignore[attr-defined]
        self._scalars.setdefault(tag, []).append(_Scalar(step, wall_time, value))

    def history(self, key: str) -> dict[int, float]:
        """``step -> value`` of the scalar ``key`` (empty when the run never logged it).

        ``"step"`` (when no scalar has that name) is the step itself at every step logged
        (optimizer steps: a cost for a run logged without energy, ``--cost-key step``).
        """
        if key == "step" and key not in self._scalars:
            return {e.step: float(e.step) for events in self._scalars.values() for e in events}
        return latest_per_step(self._scalars.get(key, []))


def _text(value: object) -> str:
    """An hparams plugin value as MLflow keeps a parameter: ``3`` for 3.0, else ``str``."""
    kind = value.WhichOneof("kind")  # type: ignore[attr-defined]
    x = getattr(value, kind) if kind else ""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)
