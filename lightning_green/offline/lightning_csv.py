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

import functools
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lightning_green import keys
from lightning_green.offline.csv_curves import MAX_ROWS, csv_records, parse_number
from lightning_green.offline.errors import CurveFormatError, OfflineInputError
from lightning_green.offline.hf_trainer import LABEL as HF_TRAINER_LABEL
from lightning_green.offline.hf_trainer import is_hf_trainer_log
from lightning_green.offline.mlflow_runs import steps_done, training_series

HPARAMS_FILE = "hparams.yaml"
"""The run parameters ``CSVLogger`` writes beside ``metrics.csv``."""
SUMMARY_FILE = "energy_summary.json"
"""The summary :class:`~lightning_green.EnergyMonitor` writes in the logger's folder."""


def _open(path: str | os.PathLike[str]) -> Any:
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def csv_header(path: str | os.PathLike[str]) -> set[str]:
    """The column names of the CSV file at ``path`` (its first non-blank record), blank names left out."""
    with _open(path) as f:
        for _, row in csv_records(f, str(path)):
            names = {cell.strip() for cell in row} - {""}
            if names:
                return names
    return set()


def is_lightning_csv(path: str | os.PathLike[str]) -> bool:
    r"""Whether ``path`` is a ``CSVLogger`` ``metrics.csv``: its header has ``step`` and no ``curve_id``.

    A log of steps whose header is that of a Hugging Face Trainer log (:func:`is_hf_trainer_csv`)
    is not one.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> _ = f.write_text("epoch,step,val_loss\\n0,9,0.5\\n")
        >>> is_lightning_csv(f)
        True
    """
    names = csv_header(path)
    return "step" in names and "curve_id" not in names and not is_hf_trainer_log(names)


def is_hf_trainer_csv(path: str | os.PathLike[str]) -> bool:
    r"""Whether ``path`` is a CSV export of a Hugging Face Trainer's ``log_history``.

    One row per entry of ``trainer_state.json``'s ``log_history`` (``step`` is the Trainer's
    ``global_step``, ``epoch`` the epochs completed), as ``pandas.DataFrame(log_history).to_csv()``
    writes it; told by the Trainer's own columns (:func:`~.hf_trainer.is_hf_trainer_log`).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "log_history.csv"
        >>> _ = f.write_text("epoch,step,eval_loss,eval_runtime\n1.0,150,0.5,3.1\n")
        >>> is_hf_trainer_csv(f), is_lightning_csv(f)
        (True, False)
    """
    names = csv_header(path)
    return "step" in names and "curve_id" not in names and is_hf_trainer_log(names)


class LightningCsvRun:
    """One ``CSVLogger`` folder read as a logged run (:class:`~.mlflow_curves.LoggedRun`).

    A run resumed from a checkpoint into a new folder (``version_1``) is joined to the earlier
    parts it continues (:func:`earlier_parts`): their rows up to the resumed log's first step (less
    a check its checkpoint did not hold, :func:`kept_until`), then its own. A resumed log that holds
    a copy of its earlier part (:data:`~lightning_green.keys.PARAM_EARLIER_PART_UNTIL_STEP`) is read
    whole where that part is not there, and joined to it, less the copy, where it is
    (:func:`joined_span`).

    Attributes:
        run_id: The folder of ``metrics.csv``, as given (the curve's ``curve_id``); for a Hugging
            Face Trainer log, the file.
        label: How messages name it: ``Lightning CSV log <metrics.csv>`` (and the logs it continues),
            or ``Hugging Face Trainer log <file>``.
        hf_trainer: Whether the file is a Hugging Face Trainer's ``log_history`` exported to CSV
            (:func:`is_hf_trainer_csv`): its ``epoch`` is the epochs completed, not Lightning's
            0-based index.
        params: ``hparams.yaml``'s entries as text (as MLflow keeps parameters); empty without it.
        tags: ``lightning_green.stop_reason`` (and ``stopped_epoch``) from ``energy_summary.json``,
            when the folder has one.
        failed: Whether that summary marks the run failed (the fit raised).
        inputs: Every file read for the run: ``metrics.csv``, the ``hparams.yaml`` and
            ``energy_summary.json`` beside it (when there), and those of the earlier parts it
            continues (an output must be none of them).
        continues: The ``metrics.csv`` files of the earlier parts of this run, joined in before its
            rows, latest first.
        folders: The folders read: this log's, then those of the earlier parts it continues.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, parts: LogParts | None = None, hf_trainer: bool | None = None
    ) -> None:
        """Read ``metrics.csv`` at ``path`` and the files beside it (and the logs it continues).

        Args:
            path: The log's ``metrics.csv``.
            parts: The folders already read by this command (:data:`LogParts`), shared between
                the logs it opens so that each sibling folder is read once; default: this call's.
            hf_trainer: Whether the file is a Hugging Face Trainer log (:func:`is_hf_trainer_csv`),
                when the caller has told; default: told from its header here.

        Raises:
            CurveFormatError: If a ``metrics.csv`` is malformed (no ``step`` column, a bad step).
            OfflineInputError: If ``hparams.yaml`` or ``energy_summary.json`` cannot be read.
            OSError: If a file cannot be opened or read.
        """
        parts = {} if parts is None else parts
        own = _csv_part(Path(path), parts)
        self.path = str(path)
        self.hf_trainer = is_hf_trainer_csv(path) if hf_trainer is None else hf_trainer
        # a CSVLogger folder holds one log; Trainer exports are files of any name, several to a folder
        self.run_id = self.path if self.hf_trainer else str(Path(path).parent)
        self.label = f"{HF_TRAINER_LABEL if self.hf_trainer else 'Lightning CSV log'} {self.path}"
        self.tags: Mapping[str, str] = own.tags
        self.failed = own.failed
        chain: list[tuple[_CsvPart, int]] = []
        if own.resume is not None:  # a resumed log: its earlier parts are sibling folders
            here = Path(own.path)
            siblings = sorted(here.parent.parent.glob(f"*/{here.name}"), reverse=True)
            pool = [
                _csv_part(other, parts)
                for other in siblings
                if ("csv", other.resolve()) in parts or is_lightning_csv(other)
            ]
            chain = earlier_parts(own, pool)
        self._cells = _joined_cells(
            [(part.cells, last, part.copied_until) for part, last in chain], own.cells, own.copied_until
        )
        self.params: Mapping[str, str] = joined_params(own, chain)
        self.continues: tuple[str, ...] = tuple(part.path for part, _ in chain)
        self.inputs: tuple[str, ...] = (
            self.path,
            *side_files(Path(path).parent),
            *(f for part, _ in chain for f in part.inputs),
        )
        self.folders: tuple[str, ...] = (str(Path(path).parent), *(str(part.folder) for part, _ in chain))
        if chain:
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

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The columns the log has a value in, sorted (``step`` aside: every row's)."""
        return tuple(sorted(self._cells))

    def history(self, key: str) -> dict[int, float]:
        """``step -> value`` of the column ``key`` (empty when the run never logged it).

        ``"step"`` is the optimizer steps done at every step the training logged at (the step plus
        one, :func:`~.mlflow_runs.steps_done`, :func:`~.mlflow_runs.training_series`: a cost for a
        run logged without energy, ``--cost-key step``).

        Raises:
            CurveFormatError: At the first cell of the column that is not a number.
        """
        return _cells_history(self.path, self._cells, key, 0 if self.hf_trainer else 1)


LogParts = dict[tuple[str, Path], Any]
"""The folders a command has read, by kind (``"csv"``, ``"tensorboard"``) and real path: each one's
own rows, before any earlier part is joined. Shared between the logs one command opens, so that
a folder is read once however many logs look at it as a possible earlier part."""

Cell = tuple[int, int, str]
"""A ``metrics.csv`` cell: ``(line, column number, text)``."""


class _CsvPart:
    """One ``metrics.csv`` and the files beside it, its own rows only (no earlier part joined)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.folder = path.parent
        self.params = read_hparams(self.folder / HPARAMS_FILE)
        self.copied_until = earlier_part_until(self.params, self.folder)
        self.tags, self.failed = read_summary_marks(self.folder / SUMMARY_FILE)
        self.cells = _read_cells(self.path)
        self.inputs = (self.path, *side_files(self.folder))
        steps = [step for cells in self.cells.values() for step in cells]
        self.first_step: int | None = min(steps) if steps else None
        self.begun = version_number(self.folder)
        self.resume = resume_point(self)

    def history(self, key: str) -> dict[int, float]:
        return _cells_history(self.path, self.cells, key)


def _csv_part(path: Path, parts: LogParts) -> _CsvPart:
    """The own rows of the ``metrics.csv`` at ``path``, read once per ``parts``."""
    key = ("csv", path.resolve())
    if key not in parts:
        parts[key] = _CsvPart(path)
    return parts[key]


def _cells_history(
    path: str, cells: Mapping[str, Mapping[int, Cell]], key: str, steps_offset: int = 1
) -> dict[int, float]:
    """``step -> value`` of the column ``key`` of ``cells`` (read from ``path``).

    ``"step"``: the optimizer steps done, the logged step plus ``steps_offset``
    (:func:`~.mlflow_runs.steps_done`).
    """
    if key == "step":
        return steps_done(
            (step for name, column in cells.items() if training_series(name) for step in column), steps_offset
        )
    out: dict[int, float] = {}
    for step, (line, col, text) in cells.get(key, {}).items():
        value = parse_number(text)
        if value is None:
            raise CurveFormatError(path, line, col, key, f"not a number: {text!r}")
        out[step] = value
    return out


def _read_cells(path: str) -> dict[str, dict[int, Cell]]:
    """``column -> step -> (line, column number, text)`` of every non-blank cell of ``metrics.csv``."""
    cells: dict[str, dict[int, Cell]] = {}
    with _open(path) as f:
        records = csv_records(f, path)
        header_line, header = next(records, (0, []))
        while header_line and not any(cell.strip() for cell in header):  # blank lines first
            header_line, header = next(records, (0, []))
        names = [cell.strip() for cell in header]
        if "step" not in names:
            raise CurveFormatError(
                path, max(header_line, 1), 0, "step", "no 'step' column: not a CSVLogger log"
            )
        step_col = names.index("step")
        n_rows = 0
        for line, row in records:
            if not any(cell.strip() for cell in row):
                continue
            n_rows += 1
            if n_rows > MAX_ROWS:
                raise CurveFormatError(path, line, 0, None, f"more than {MAX_ROWS:,} rows")
            if len(row) > len(names):
                raise CurveFormatError(
                    path, line, len(names) + 1, None, f"{len(row)} cells, the header has {len(names)}"
                )
            step = _step(path, line, step_col, row[step_col] if step_col < len(row) else "")
            for col, text in enumerate(row):
                if col != step_col and text.strip():
                    cells.setdefault(names[col], {})[step] = (line, col + 1, text.strip())
    return cells


class LogPart(Protocol):
    """One folder of a Lightning log, its own rows only: what :func:`earlier_parts` matches on."""

    first_step: int | None
    """The first step it logged anything at (``None``: nothing logged)."""
    begun: float | None
    """When the folder was begun, in an order shared by its sibling folders (Lightning's ``N`` of a
    ``version_N`` folder, or the wall time of its first event, in seconds); ``None``: not known."""
    resume: ResumePoint | None
    """Where it resumed from a checkpoint (:func:`resume_point`), or ``None``."""
    params: Mapping[str, str]
    """Its ``hparams.yaml``'s entries as text."""
    copied_until: int | None
    """The last step of the copy of its run's earlier part it holds (:func:`earlier_part_until`), or
    ``None``."""

    def history(self, key: str) -> dict[int, float]:
        """``step -> value`` of ``key`` in its own rows."""
        ...


@dataclass(frozen=True)
class ResumePoint:
    """Where a log resumed from a checkpoint starts: what its earlier part must hold.

    Attributes:
        base_kwh: The ``energy/total_kwh`` its first epoch started from (the checkpoint's), kWh.
        epoch: The ``epoch`` it logged with its first total, or ``None``.
        first_step: The first step it logged anything at.
        first_check: The ``energy/check_number`` of its first check (the checkpoint held one
            fewer), or ``None`` when the stopper logged none (runs logged before it existed).
    """

    base_kwh: float
    epoch: float | None
    first_step: int
    first_check: int | None = None

    def same_as(self, other: ResumePoint) -> bool:
        """Whether ``other`` resumed from the same point (another branch from the same checkpoint)."""
        return self.epoch == other.epoch and math.isclose(
            self.base_kwh, other.base_kwh, rel_tol=1e-6, abs_tol=1e-18
        )


VERSION_FOLDER = re.compile(r"version_(\d+)")
"""How Lightning's loggers name the folder of each new fit: ``version_N``, ``N`` counting up."""


def version_number(folder: Path) -> int | None:
    """``N`` of a Lightning ``version_N`` folder (the order the folders were begun in), else ``None``.

    Example:
        >>> version_number(Path("lightning_logs/version_12")), version_number(Path("logs/my_run"))
        (12, None)
    """
    match = VERSION_FOLDER.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def earlier_part_until(params: Mapping[str, str], folder: Path) -> int | None:
    """The last step of the copy of its run's earlier part a log holds, from its run parameters.

    A fit resumed from a checkpoint into a new folder writes the run's epochs and checks before
    its own records, up to the step it records as
    :data:`~lightning_green.keys.PARAM_EARLIER_PART_UNTIL_STEP`.

    Args:
        params: The log's own run parameters (as text).
        folder: The log's folder, for the message.

    Returns:
        The step, or ``None`` for a log that holds no such copy.

    Raises:
        OfflineInputError: If the parameter is not a whole number >= 0.

    Example:
        >>> earlier_part_until({"lightning_green.earlier_part_until_step": "15"}, Path("v1"))
        15
    """
    text = params.get(keys.PARAM_EARLIER_PART_UNTIL_STEP)
    if text is None:
        return None
    value = parse_number(text.strip())
    if value is None or not math.isfinite(value) or value < 0 or value != math.floor(value):
        name = keys.PARAM_EARLIER_PART_UNTIL_STEP
        raise OfflineInputError(f"{folder}: run parameter {name} is not a whole number >= 0: {text!r}")
    return int(value)


def resume_point(part: LogPart) -> ResumePoint | None:
    """Where ``part`` resumed from a checkpoint, from its own rows; ``None`` if it started afresh.

    A run resumed from a checkpoint continues ``energy/total_kwh``: its first epoch's total less
    that epoch's ``energy/epoch_kwh`` is more than zero (the total the checkpoint held). A log that
    holds a copy of its earlier part (:attr:`LogPart.copied_until`) resumed right after the copy:
    from the copy's last total, at the epoch and check after the copy's last, its first step the
    first it logged anything at after the copy (the one after the copy when there is none: a fit
    that trained nothing).

    Raises:
        CurveFormatError: If a cell of those columns is not a number.
    """
    if part.copied_until is not None:
        return _after_copy(part, part.copied_until)
    totals, epoch_kwh = part.history(keys.TOTAL_KWH), part.history(keys.EPOCH_KWH)
    if not totals or not epoch_kwh or part.first_step is None:
        return None
    first = min(totals)
    base = totals[first] - epoch_kwh.get(first, 0.0)
    if not base > 0:
        return None
    numbers = part.history(keys.CHECK_NUMBER)
    first_check = int(numbers[min(numbers)]) if numbers else None
    return ResumePoint(base, part.history("epoch").get(first), part.first_step, first_check)


def _after_copy(part: LogPart, until: int) -> ResumePoint | None:
    """Where ``part``, which holds a copy of its earlier part up to step ``until``, resumed (or ``None``)."""
    totals = {step: value for step, value in part.history(keys.TOTAL_KWH).items() if step <= until}
    if not totals:
        return None
    last = max(totals)
    if not totals[last] > 0:
        return None
    epoch = part.history("epoch").get(last)
    numbers = [number for step, number in part.history(keys.CHECK_NUMBER).items() if step <= until]
    after = [step for step in part.history("step") if step > until]
    return ResumePoint(
        totals[last],
        None if epoch is None else epoch + 1,
        min(after, default=until + 1),
        int(max(numbers)) + 1 if numbers else None,
    )


def joined_span(oldest: bool, copied_until: int | None, last_step: int | None) -> tuple[float, float]:
    """The steps ``(after, until]`` of a part's own rows that a log joined to its earlier parts keeps.

    A part continued by a later one is kept up to ``last_step`` (:func:`earlier_parts`); the log
    itself to its end (``None``). A part that holds a copy of its earlier part (up to
    ``copied_until``) is kept after it, unless it is the oldest part read: the earlier parts read
    before it hold those records as they were logged, and where none is there the copy is the run's.

    Example:
        >>> joined_span(True, 15, None), joined_span(False, 15, 40)
        ((-inf, inf), (15, 40))
    """
    after = -math.inf if oldest or copied_until is None else copied_until
    return after, math.inf if last_step is None else last_step


def kept_until(earlier: LogPart, point: ResumePoint) -> int:
    """The last step of ``earlier`` whose rows belong to the run that resumed from it at ``point``.

    The rows up to the resumed log's first step (the step its checkpoint was saved at), less the
    checks the checkpoint did not hold: where the stopper numbered its checks
    (``energy/check_number``), a check of ``earlier`` numbered as the resumed log's first or
    later (one run after the checkpoint was saved: a validation right after a checkpoint saved at a
    training step) is cut, with everything logged from its step on.
    """
    if point.first_check is None:
        return point.first_step
    after = [
        step
        for step, number in earlier.history(keys.CHECK_NUMBER).items()
        if number >= point.first_check and step < point.first_step
    ]
    return min(after) - 1 if after else point.first_step


PartT = TypeVar("PartT", bound=LogPart)


def earlier_parts(part: PartT, candidates: Sequence[PartT]) -> list[tuple[PartT, int]]:
    """The earlier parts a log resumed from a checkpoint continues, latest first, and where each ends.

    The earlier part of a resumed log is the candidate (a sibling folder) whose own rows hold the
    total the log resumed from (:func:`continued_step`) before the log's first step; never one
    that resumed from the same point itself (another branch from the same checkpoint, or a re-run
    of a crashed resume), whose rows are no part of this one, and never one begun after the log
    (:attr:`LogPart.begun`: a later run logged in the same folder). Where several hold it (a meter
    that gives equal totals), the one begun last before the log is taken, else the one that
    logged it last, else the one that started last. The earlier part may itself be resumed: its
    own earlier part follows, and so on.

    Args:
        part: The resumed log's own rows.
        candidates: The sibling folders' own rows (``part`` among them or not), each read once.

    Returns:
        ``[(earlier, last_step), ...]``, latest part first: the part's rows up to ``last_step``
        (the first step of the part that continues it, the step its checkpoint was saved at: a
        checkpoint saved at a validation inside an epoch, or at the epoch's last one before the
        epoch closed, holds the checks of that epoch so far; less a check the checkpoint did not
        hold, :func:`kept_until`) belong to the run; what it logged after was re-run after the
        resume. Empty when the log was not resumed or its earlier
        part is not there.
    """
    chain: list[tuple[PartT, int]] = []
    current = part
    while current.resume is not None:
        point = current.resume
        best: tuple[tuple[float, int, int], PartT] | None = None
        for other in candidates:
            if other is part or other.first_step is None or other.first_step >= point.first_step:
                continue  # not started before the resumed log: a later part, or a sibling branch
            if other.begun is not None and current.begun is not None and other.begun >= current.begun:
                continue  # begun after the resumed log: a later run, whatever its rows hold
            if other.resume is not None and other.resume.same_as(point):
                continue  # resumed from the same checkpoint: another branch
            step = continued_step(other, point.base_kwh, point.epoch, point.first_step)
            if step is None:
                continue
            rank = (-math.inf if other.begun is None else other.begun, step, other.first_step)
            if best is None or rank > best[0]:
                best = (rank, other)
        if best is None:
            break
        # what the checkpoint held: every row up to the resumed log's first step (the global step
        # it was saved at), each check inside the checkpoint's epoch too, not only whole epochs,
        # less a check run after the checkpoint was saved (:func:`kept_until`)
        chain.append((best[1], kept_until(best[1], point)))
        current = best[1]  # its first step is earlier than ``current``'s: the chain ends
    return chain


def joined_params(own: LogPart, chain: Sequence[tuple[LogPart, int]]) -> dict[str, str]:
    """The run parameters of a log joined to the earlier parts it continues.

    ``chain`` is latest part first, as :func:`earlier_parts` returns it; a later part's value of a
    parameter wins.
    """
    params: dict[str, str] = {}
    for part, _ in reversed(chain):
        params.update(part.params)
    return {**params, **own.params}


def _joined_cells(
    earlier: Sequence[tuple[Mapping[str, Mapping[int, Any]], int, int | None]],
    own: Mapping[str, Mapping[int, Any]],
    own_copied_until: int | None = None,
) -> dict[str, dict[int, Any]]:
    """``key -> step -> value`` of a resumed log joined to its earlier parts.

    Args:
        earlier: ``(rows, last_step, copied_until)`` of each earlier part, latest first
            (:func:`earlier_parts`; ``copied_until``: :attr:`LogPart.copied_until`).
        own: The resumed log's own rows.
        own_copied_until: Where the copy of its earlier part that it holds ends, or ``None``.

    Returns:
        The oldest part's rows up to its ``last_step``, then each later part's (a step both logged
        keeps the later part's value: the resumed run logged it again), then ``own``; of each
        part, the steps :func:`joined_span` keeps.
    """
    joined: dict[str, dict[int, Any]] = {}
    parts = [*reversed(earlier), (own, None, own_copied_until)]
    for i, (rows, last_step, copied_until) in enumerate(parts):
        after, until = joined_span(i == 0, copied_until, last_step)
        for key, by_step in rows.items():
            joined.setdefault(key, {}).update((st, v) for st, v in by_step.items() if after < st <= until)
    return joined


def continued_step(earlier: Any, base_kwh: float, epoch: float | None, first_step: int) -> int | None:
    """The step of the epoch of ``earlier`` that a log resumed from a checkpoint continues, or ``None``.

    A resumed run continues ``energy/total_kwh`` from the checkpoint: its first epoch's total less
    that epoch's ``energy/epoch_kwh`` (``base_kwh``) is the total of an epoch of the earlier log,
    logged at a step before the resumed log's first (``first_step``), and (when the resumed log
    logged its ``epoch``) the epoch before the resumed log's first.

    Args:
        earlier: A candidate earlier part, its own rows (anything with ``history(key) -> {step: value}``).
        base_kwh: The total the resumed log started from, in kWh.
        epoch: The ``epoch`` the resumed log logged with its first total, or ``None``.
        first_step: The first step the resumed log logged anything at.

    Returns:
        The earlier log's step of that epoch's total, or ``None`` when ``earlier`` is not the part
        the log continues.
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
    r"""``hparams.yaml`` as text values (``True`` -> ``"True"``, ``None`` -> ``"none"``), or ``{}``.

    The file is read safely, whoever wrote it: nothing in it is run or built. Lightning dumps a
    model's hyperparameters that are Python objects (a NumPy scalar, a ``pathlib.Path``) under
    ``!!python/...`` tags; such an entry, or any other whose value cannot be read, keeps a
    placeholder naming its tag or line (``<!!python/object/apply:pathlib.PosixPath>``). The readers
    use only the callbacks' ``lightning_green.<name>`` entries, plain values, which must be readable.

    Args:
        path: The ``hparams.yaml`` of a ``CSVLogger`` or ``TensorBoardLogger`` folder.

    Returns:
        ``name -> value as text``; ``{}`` when there is no such file or it is empty.

    Raises:
        OfflineInputError: If the file is not YAML, not a mapping of names to values, or a
            ``lightning_green.<name>`` entry cannot be read as a plain value.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "hparams.yaml"
        >>> _ = f.write_text("lr: !!python/object/apply:numpy.float64 [0.01]\nlightning_green.patience: 3")
        >>> read_hparams(f)
        {'lr': '<!!python/object/apply:numpy.float64>', 'lightning_green.patience': '3'}
    """
    if not path.is_file():
        return {}
    import yaml

    try:
        loader = _hparams_loader()(path.read_text(encoding="utf-8"))
        try:
            root = loader.get_single_node()  # parsed only: nothing constructed yet
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise OfflineInputError(f"{path}: not readable as YAML: {e}") from None
    if root is None:
        return {}
    if isinstance(root, yaml.ScalarNode) and _construct(loader, root) is None:
        return {}  # ``null``: as an empty file
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        raise OfflineInputError(f"{path}: expected a mapping of run parameters, got {kind}")
    try:
        loader.flatten_mapping(root)  # merge keys (``<<: *defaults``), as yaml.safe_load does
    except yaml.YAMLError as e:
        raise OfflineInputError(f"{path}: not readable as YAML: {e}") from None
    params: dict[str, str] = {}
    for key_node, value_node in root.value:
        name = str(_construct(loader, key_node))
        value = _construct(loader, value_node)
        if name.startswith(keys.PARAM_PREFIX) and _holds_unread(value):
            raise OfflineInputError(
                f"{path}: parameter {name} ({_line(value_node)}) is not a plain value: {value!r}"
            )
        params[name] = "none" if value is None else str(value)
    return params


class _Unread:
    """A value of ``hparams.yaml`` left unread: under a tag no safe reader builds, or malformed."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"

    __str__ = __repr__


def _holds_unread(value: object) -> bool:
    """Whether ``value`` is, or (a list's item, a mapping's key or value) holds, an :class:`_Unread`."""
    if isinstance(value, _Unread):
        return True
    if isinstance(value, list | tuple | set):
        return any(map(_holds_unread, value))
    if isinstance(value, dict):
        return any(_holds_unread(k) or _holds_unread(v) for k, v in value.items())
    return False


def _short_tag(tag: str) -> str:
    """``!!name`` for a YAML core tag (``tag:yaml.org,2002:name``), else the tag as written."""
    core = "tag:yaml.org,2002:"
    return "!!" + tag[len(core) :] if tag.startswith(core) else tag


def _line(node: Any) -> str:
    """Where ``node`` begins: ``line N``."""
    return f"line {node.start_mark.line + 1}"


def _construct(loader: Any, node: Any) -> Any:
    """``node`` built by the safe ``loader``; an :class:`_Unread` where its value cannot be.

    An explicit core tag on a value it cannot hold (``!!float abc``, ``!!int [1]``) is not built.
    """
    try:
        return loader.construct_object(node, deep=True)
    except Exception:  # the value is malformed for its tag: ValueError, KeyError, ConstructorError ...
        loader.recursive_objects.clear()  # what the failed construction left marked
        loader.state_generators.clear()
        return _Unread(f"{_short_tag(node.tag)} unreadable at {_line(node)}")


@functools.cache
def _hparams_loader() -> type:
    """``yaml.SafeLoader`` building a value under any tag it does not know as an :class:`_Unread`.

    Never a Python object: ``!!python/object/apply:numpy...`` is not applied, only named.
    """
    import yaml

    class HparamsLoader(yaml.SafeLoader):
        def construct_undefined(self, node: Any) -> _Unread:
            return _Unread(_short_tag(node.tag))

    HparamsLoader.add_constructor(None, HparamsLoader.construct_undefined)
    return HparamsLoader


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
