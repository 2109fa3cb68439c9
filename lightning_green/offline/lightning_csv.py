"""Curves from Lightning ``CSVLogger`` logs: ``metrics.csv`` and what the callbacks wrote beside it.

A run logged with ``CSVLogger`` leaves a folder (``lightning_logs/version_0``) holding
``metrics.csv`` (one row per logging call: ``step``, ``epoch`` and the metrics logged, blank where
a metric was not), ``hparams.yaml`` (the run parameters, the callbacks' ``lightning_green.<name>``
among them) and, from :class:`~lightning_green.EnergyMonitor`, ``energy_summary.json`` (how the
run ended). :class:`LightningCsvRun` reads that folder as an MLflow run is read, and the one reader of logged
runs (:func:`~lightning_green.offline.mlflow_curves.curve_of_run`, through
:func:`~lightning_green.offline.lightning_logs.read_log_curve`) makes its curve: the same metric,
costs, progress, planned horizon and recorded policy arguments as from MLflow, so a replay of the
CSV log makes the callback's decisions.

``metrics.csv`` is read under the limits of a curves CSV (:mod:`.csv_curves`); a cell that is not
a number, or a ``step`` that is not a whole number >= 0, raises
:class:`~lightning_green.offline.errors.CurveFormatError` naming the file, line and column, when
its column is read. A step logged twice keeps its later row (the file is in logging order).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_green import keys
from lightning_green.offline.csv_curves import MAX_ROWS, csv_records, parse_number
from lightning_green.offline.errors import CurveFormatError, OfflineInputError

HPARAMS_FILE = "hparams.yaml"
"""The run parameters ``CSVLogger`` writes beside ``metrics.csv``."""
SUMMARY_FILE = "energy_summary.json"
"""The summary :class:`~lightning_green.EnergyMonitor` writes in the logger's folder."""


def _open(path: str | os.PathLike[str]) -> Any:
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def is_lightning_csv(path: str | os.PathLike[str]) -> bool:
    r"""Whether ``path`` is a ``CSVLogger`` ``metrics.csv``: its header has ``step`` and no ``curve_id``.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> _ = f.write_text("epoch,step,val_loss\\n0,9,0.5\\n")
        >>> is_lightning_csv(f)
        True
    """
    with _open(path) as f:
        for _, row in csv_records(f, str(path)):
            names = {cell.strip() for cell in row}
            if names - {""}:
                return "step" in names and "curve_id" not in names
    return False


class LightningCsvRun:
    """One ``CSVLogger`` folder read as a logged run (:class:`~.mlflow_curves.LoggedRun`).

    Attributes:
        run_id: The folder of ``metrics.csv``, as given (the curve's ``curve_id``).
        label: How messages name it: ``Lightning CSV log <metrics.csv>``.
        params: ``hparams.yaml``'s entries as text (as MLflow keeps parameters); empty without it.
        tags: ``lightning_green.stop_reason`` (and ``stopped_epoch``) from ``energy_summary.json``,
            when the folder has one.
        failed: Whether that summary marks the run failed (the fit raised).
        inputs: Every file read for the run: ``metrics.csv``, the ``hparams.yaml`` and
            ``energy_summary.json`` beside it (when there), and those of the earlier parts it
            continues (an output must be none of them).
    """

    def __init__(self, path: str | os.PathLike[str], *, _opening: frozenset[Path] = frozenset()) -> None:
        """Read ``metrics.csv`` at ``path`` and the files beside it (and the logs it continues).

        Raises:
            CurveFormatError: If ``metrics.csv`` is malformed (no ``step`` column, a bad step).
            OfflineInputError: If ``hparams.yaml`` or ``energy_summary.json`` cannot be read.
            OSError: If a file cannot be opened or read.
        """
        self.path = str(path)
        folder = Path(path).parent
        self.run_id = str(folder)
        self.label = f"Lightning CSV log {self.path}"
        self.params: Mapping[str, str] = read_hparams(folder / HPARAMS_FILE)
        tags, self.failed = read_summary_marks(folder / SUMMARY_FILE)
        self.tags: Mapping[str, str] = tags
        self._cells = self._read_cells()
        self.inputs: tuple[str, ...] = (self.path, *side_files(folder))
        self.continues: tuple[str, ...] = ()
        """The ``metrics.csv`` files of the earlier parts of this run, joined in before its rows
        (a run resumed from a checkpoint writes a new ``version_N`` folder), latest first."""
        self.folders: tuple[str, ...] = (str(folder),)
        """The folders read: this log's, then those of the earlier parts it continues."""
        earlier = self._earlier_part(_opening)
        if earlier is not None:
            run, last_step = earlier
            joined = {
                col: {st: c for st, c in cells.items() if st <= last_step}
                for col, cells in run._cells.items()
            }
            for col, cells in self._cells.items():
                joined.setdefault(col, {}).update(cells)
            self._cells = joined
            self.params = {**run.params, **self.params}
            self.continues = (run.path, *run.continues)
            self.inputs = (*self.inputs, *run.inputs)
            self.folders = (*self.folders, *run.folders)
            self.label = f"{self.label} (continuing {', '.join(self.continues)})"

    def reads(self, path: str | os.PathLike[str]) -> str | None:
        r"""What this log's reader reads a file at ``path`` as, whether it exists or not; else ``None``.

        In the log's folder and those of the earlier parts it continues: the log (``metrics.csv``),
        ``hparams.yaml`` and ``energy_summary.json``. A file written there becomes part of the log
        the next time it is read.

        Example:
            >>> import tempfile, pathlib
            >>> f = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
            >>> _ = f.write_text("epoch,step,val_loss\n0,9,0.5\n")
            >>> LightningCsvRun(f).reads(f.parent / "energy_summary.json")
            'its energy summary (energy_summary.json)'
        """
        return role_in_log(path, self.folders, lambda name: name == Path(self.path).name, "the log itself")

    def _earlier_part(self, opening: frozenset[Path]) -> tuple[LightningCsvRun, int] | None:
        """The log this one continues, and its last step before the resume; ``None`` if none.

        A run resumed from a checkpoint continues ``energy/total_kwh`` from the checkpoint: its
        first epoch's total less that epoch's ``energy/epoch_kwh`` is the total of an epoch of the
        earlier log. The sibling folders (``version_*`` beside this log's) are searched for it;
        rows the earlier log wrote after that epoch (re-run after the resume) are left out.
        """
        totals, epoch_kwh = self._cells.get(keys.TOTAL_KWH), self._cells.get(keys.EPOCH_KWH)
        if not totals or not epoch_kwh:
            return None
        first = min(totals)
        total, spent = parse_number(totals[first][2]), parse_number(epoch_kwh.get(first, (0, 0, ""))[2])
        if total is None or spent is None or not total - spent > 0:
            return None
        base = total - spent
        epoch = parse_number(self._cells.get("epoch", {}).get(first, (0, 0, ""))[2])
        first_step = min(step for cells in self._cells.values() for step in cells)
        here = Path(self.path).resolve()
        opening = opening | {here}  # the logs being opened: a later part is not an earlier one
        for other in sorted(here.parent.parent.glob(f"*/{here.name}"), reverse=True):
            if other.resolve() in opening or not is_lightning_csv(other):
                continue
            run = LightningCsvRun(other, _opening=opening)
            step = continued_step(run, base, epoch, first_step)
            if step is not None:
                return run, step
        return None

    def _read_cells(self) -> dict[str, dict[int, tuple[int, int, str]]]:
        """``column -> step -> (line, column number, text)`` of every non-blank cell."""
        cells: dict[str, dict[int, tuple[int, int, str]]] = {}
        with _open(self.path) as f:
            records = csv_records(f, self.path)
            header_line, header = next(records, (0, []))
            while header_line and not any(cell.strip() for cell in header):  # blank lines first
                header_line, header = next(records, (0, []))
            names = [cell.strip() for cell in header]
            if "step" not in names:
                raise CurveFormatError(
                    self.path, max(header_line, 1), 0, "step", "no 'step' column: not a CSVLogger log"
                )
            step_col = names.index("step")
            n_rows = 0
            for line, row in records:
                if not any(cell.strip() for cell in row):
                    continue
                n_rows += 1
                if n_rows > MAX_ROWS:
                    raise CurveFormatError(self.path, line, 0, None, f"more than {MAX_ROWS:,} rows")
                if len(row) > len(names):
                    raise CurveFormatError(
                        self.path,
                        line,
                        len(names) + 1,
                        None,
                        f"{len(row)} cells, the header has {len(names)}",
                    )
                step = _step(self.path, line, step_col, row[step_col] if step_col < len(row) else "")
                for col, text in enumerate(row):
                    if col != step_col and text.strip():
                        cells.setdefault(names[col], {})[step] = (line, col + 1, text.strip())
        return cells

    def history(self, key: str) -> dict[int, float]:
        """``step -> value`` of the column ``key`` (empty when the run never logged it).

        ``"step"`` is the step itself at every step logged (optimizer steps: a cost for a run
        logged without energy, ``--cost-key step``).

        Raises:
            CurveFormatError: At the first cell of the column that is not a number.
        """
        if key == "step":
            return {step: float(step) for cells in self._cells.values() for step in cells}
        out: dict[int, float] = {}
        for step, (line, col, text) in self._cells.get(key, {}).items():
            value = parse_number(text)
            if value is None:
                raise CurveFormatError(self.path, line, col, key, f"not a number: {text!r}")
            out[step] = value
        return out


def continued_step(earlier: Any, base_kwh: float, epoch: float | None, first_step: int) -> int | None:
    """The step of the epoch of ``earlier`` that a log resumed from a checkpoint continues, or ``None``.

    A resumed run continues ``energy/total_kwh`` from the checkpoint: its first epoch's total less
    that epoch's ``energy/epoch_kwh`` (``base_kwh``) is the total of an epoch of the earlier log,
    logged at a step before the resumed log's first (``first_step``), and (when the resumed log
    logged its ``epoch``) the epoch before the resumed log's first.

    Args:
        earlier: A candidate earlier part (anything with ``history(key) -> {step: value}``).
        base_kwh: The total the resumed log started from, in kWh.
        epoch: The ``epoch`` the resumed log logged with its first total, or ``None``.
        first_step: The first step the resumed log logged anything at.

    Returns:
        The earlier log's step of that epoch's total (its rows after it were re-run after the
        resume), or ``None`` when ``earlier`` is not the part the log continues.
    """
    epochs = earlier.history("epoch")
    for step, value in sorted(earlier.history(keys.TOTAL_KWH).items()):
        # float32, as Lightning logs: the difference of two totals is good to about 1e-7
        same = math.isclose(value, base_kwh, rel_tol=1e-6, abs_tol=1e-18)
        if same and step < first_step and (epoch is None or epochs.get(step) == epoch - 1):
            return step
    return None


def _step(path: str, line: int, col: int, text: str) -> int:
    value = parse_number(text.strip())
    if value is None or not math.isfinite(value) or value < 0 or value != math.floor(value):
        raise CurveFormatError(path, line, col + 1, "step", f"not a whole number >= 0: {text!r}")
    return int(value)


SIDE_FILE_ROLES = {
    HPARAMS_FILE: f"its run parameters ({HPARAMS_FILE})",
    SUMMARY_FILE: f"its energy summary ({SUMMARY_FILE})",
}
"""What a log's readers read each file beside its metrics as."""


def role_in_log(
    path: str | os.PathLike[str], folders: Sequence[str], is_log: Callable[[str], bool], log_role: str
) -> str | None:
    """What a log's reader reads a file at ``path`` as (existing or not), or ``None``.

    Args:
        path: The file (symbolic links and ``..`` are resolved).
        folders: The folders the log reads (its own and those of the earlier parts it continues).
        is_log: Whether a file of that name in one of them is read as the log's metrics.
        log_role: How to name such a file.

    Returns:
        ``log_role`` or the role of a side file (:data:`SIDE_FILE_ROLES`) for a file in one of
        ``folders``; ``None`` for any other path.
    """
    real = Path(os.path.realpath(path))
    if str(real.parent) not in {os.path.realpath(folder) for folder in folders}:
        return None
    return SIDE_FILE_ROLES.get(real.name) or (log_role if is_log(real.name) else None)


def side_files(folder: Path) -> tuple[str, ...]:
    """The files a log's readers read beside its metrics: ``hparams.yaml``, ``energy_summary.json``.

    Only those that exist (an output may create a missing one).
    """
    return tuple(str(folder / name) for name in (HPARAMS_FILE, SUMMARY_FILE) if (folder / name).is_file())


def read_hparams(path: Path) -> dict[str, str]:
    """``hparams.yaml`` as text values (``True`` -> ``"True"``, ``None`` -> ``"none"``), or ``{}``."""
    if not path.is_file():
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise OfflineInputError(f"{path}: not readable as YAML: {e}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise OfflineInputError(f"{path}: expected a mapping of run parameters, got {type(loaded).__name__}")
    return {str(k): "none" if v is None else str(v) for k, v in loaded.items()}


def read_summary_marks(path: Path) -> tuple[dict[str, str], bool]:
    """What the run's ``energy_summary.json`` at ``path`` says of how it ended (one read).

    Returns:
        ``(tags, failed)``: the stop reason and stopped epoch as the MLflow tags hold them (``{}``
        without a stop or a file), and whether the summary marks the run failed (the fit raised).
    """
    if not path.is_file():
        return {}, False
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise OfflineInputError(f"{path}: not a JSON energy summary: {e}") from None
    if not isinstance(summary, dict):
        return {}, False
    failed = summary.get("failed") is True
    reason = summary.get("stop_reason")
    if not isinstance(reason, str):
        return {}, failed
    tags = {keys.TAG_STOP_REASON: reason}
    epoch = summary.get("stopped_epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        tags[keys.TAG_STOPPED_EPOCH] = str(epoch)
    return tags, failed
