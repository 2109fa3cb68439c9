"""What the offline tools refuse: malformed input, contradictory records, unsafe outputs.

Every one is an :class:`OfflineInputError`; the ``lightning-green`` command reports it as one
``error:`` line and exits with status 2, having written nothing.
"""

from __future__ import annotations


class OfflineInputError(ValueError):
    """Input the offline tools cannot use: a malformed file or artifact, or a record that contradicts it.

    The ``lightning-green`` command reports it as one ``error:`` line and exits with status 2.
    """


class RecordedParamError(OfflineInputError):
    """What an MLflow run recorded contradicts what replay was told, or replay lacks what it needs.

    A usage problem rather than bad data: a ``mode`` that contradicts the direction the run
    recorded for the same metric, or no monitored metric given for a run that recorded none.
    """


class CurveFormatError(OfflineInputError):
    """Malformed curve input, located as ``file:line:column``.

    Attributes:
        path: The file.
        line: 1-based line number (1 is the header).
        column: 1-based column number (0 when the problem is not one cell).
        column_name: The column's name, if known.
        problem: What is wrong.
    """

    def __init__(self, path: str, line: int, column: int, column_name: str | None, problem: str) -> None:
        self.path, self.line, self.column, self.column_name, self.problem = (
            path,
            line,
            column,
            column_name,
            problem,
        )
        where = f"{path}:{line}:{column}"
        what = f" (column '{column_name}')" if column_name else ""
        super().__init__(f"{where}: {problem}{what}")


class SummaryFormatError(OfflineInputError):
    """A malformed ``energy_summary.json`` (an MLflow artifact or a file), naming the field and where."""


class OutputPathError(OfflineInputError):
    """An output destination that must not be written: an input, another output, or not a regular file."""


class UsageError(OfflineInputError):
    """Arguments that cannot work together or do not match the input (checked before any work)."""
