"""Checks the offline commands make before any work: inputs, outputs, tracking URIs, image formats.

Each raises :class:`~lightning_green.offline.errors.UsageError` (or
:class:`~lightning_green.offline.errors.OutputPathError`) with one line naming the argument and
the value, so that nothing is read, computed or written when the command cannot succeed.

An output is refused when it is empty, names a directory, resolves (through ``..``, ``.``,
symbolic links, or a hard link) to an input or to another output of the same command, exists
and is not a regular file (a directory, a device such as ``/dev/null``, a FIFO, a socket), or
lies in a directory that does not exist or cannot be written.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_green import keys
from lightning_green.offline.errors import OutputPathError, UsageError

if TYPE_CHECKING:
    import sqlite3

SQLITE_PREFIX = "sqlite:///"
COST_KEYS_ALLOWED = (
    f"a running total the run logged ({keys.TOTAL_KWH!r}, the default, or another) or {keys.STEP!r} "
    "(optimizer steps)"
)
"""What ``--cost-key`` may name, as the refusals of ``replay`` and ``report`` say it."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Sequence[tuple[str, str]], inputs: Sequence[tuple[str, str]]) -> list[Path]:
    """Resolve each output destination, refusing one that must not be written.

    Args:
        outputs: ``(flag, path)`` of each output (``("-o/--output", "d.csv")``).
        inputs: ``(what, path)`` of each input file (``("curves file", "c.csv")``).

    Returns:
        Each output's resolved path (symbolic links followed: the file that will be replaced).

    Raises:
        OutputPathError: On the first output that is refused, naming it and why.

    Example:
        >>> check_outputs([("-o", "")], [])
        Traceback (most recent call last):
        ...
        lightning_green.offline.errors.OutputPathError: -o is empty: give the name of the file to write
    """
    resolved: list[Path] = []
    for k, (flag, path) in enumerate(outputs):
        if not path.strip():
            raise OutputPathError(f"{flag} is empty: give the name of the file to write")
        if path.endswith(("/", os.sep)):
            raise OutputPathError(f"{flag} {path}: names a directory; give the name of a file to write")
        real = Path(os.path.realpath(path))
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as e:
            raise OutputPathError(f"{flag} {path}: cannot be checked ({e.strerror})") from None
        if mode is not None and not stat.S_ISREG(mode):
            raise OutputPathError(
                f"{flag} {path}: is {_kind(mode)}, not a regular file; give a file to write"
            )
        if not real.parent.is_dir():
            raise OutputPathError(f"{flag} {path}: directory {str(Path(path).parent)!r} does not exist")
        if not os.access(real.parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"{flag} {path}: directory {str(real.parent)!r} is not writable")
        for what, source in inputs:
            if _same(path, source):
                raise OutputPathError(f"{flag} {path} is the {what} {source}: refusing to overwrite an input")
        for (other_flag, other), other_real in zip(outputs[:k], resolved, strict=True):
            if real == other_real or _same(path, other):
                raise OutputPathError(f"{flag} {path} and {other_flag} {other} are the same file")
        resolved.append(real)
    return resolved


def check_input_file(what: str, path: str) -> None:
    """Refuse an input file that does not exist or is a directory.

    Raises:
        UsageError: Naming ``what`` and ``path``.
    """
    if not path:
        raise UsageError(f"{what} is empty: give the file to read")
    if not os.path.exists(path):
        raise UsageError(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path}: not readable")


def expand_inputs(what: str, patterns: Sequence[str]) -> list[str]:
    """The input files named by ``patterns``: paths, or glob patterns such as ``'runs/*.csv'``.

    A pattern that is not an existing path and holds ``*``, ``?`` or ``[`` is expanded (sorted;
    directories it matches are left out), so a quoted pattern works where the shell does not
    expand it.

    Args:
        what: What the files are, for messages (``"curves file"``).
        patterns: As given on the command line.

    Returns:
        The files, in order.

    Raises:
        UsageError: For a path that does not exist or is a directory, a pattern that matches no
            file, or a file named twice.
    """
    files: list[str] = []
    for pattern in patterns:
        if not os.path.exists(pattern) and glob.has_magic(pattern):
            matches = [p for p in sorted(glob.glob(pattern)) if not os.path.isdir(p)]
            if not matches:
                raise UsageError(f"{what} pattern {pattern!r}: no file matches")
            files += matches
        else:
            check_input_file(what, pattern)
            files.append(pattern)
    for k, path in enumerate(files):
        for other in files[:k]:
            if _same(path, other):
                raise UsageError(f"{what} {path} is given twice (as {other})")
    return files


def sqlite_file(uri: str) -> str | None:
    """The database file of a ``sqlite:///PATH`` tracking URI, else ``None``.

    Example:
        >>> sqlite_file("sqlite:///runs/mlflow.db?mode=ro"), sqlite_file("http://127.0.0.1:5000")
        ('runs/mlflow.db', None)
    """
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = uri[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return None if not path or path == ":memory:" else path


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI that would make MLflow create a store instead of reading one.

    An empty URI (MLflow would fall back to its default store in the working directory), a
    ``sqlite:///PATH`` whose file does not exist, is not an SQLite database (an empty file
    included) or has no MLflow tables (MLflow would create them in it), and a file store (a
    path or ``file:``) whose directory does not exist are refused, and so is an ``http(s)://``
    address where no server answers within a few seconds (MLflow itself retries for minutes
    before it says so).

    Raises:
        UsageError: Naming the URI and the problem.
    """
    if not uri.strip():
        raise UsageError("--mlflow-uri is empty: give the store to read (sqlite:///PATH or http://HOST:PORT)")
    if uri.startswith(("http://", "https://")):
        problem = _unreachable(uri)
        if problem is not None:
            raise UsageError(f"--mlflow-uri {uri}: no MLflow server answers there ({problem})")
        return
    path = sqlite_file(uri)
    if path is None:
        _check_file_store(uri)
        return
    if not Path(path).is_file():
        raise UsageError(
            f"--mlflow-uri {uri}: no MLflow database at {path!r} (the file does not exist; "
            "give the path of an existing store)"
        )
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as e:
        raise UsageError(f"--mlflow-uri {uri}: cannot read {path!r}: {e.strerror}") from None
    if header != b"SQLite format 3\x00":
        raise UsageError(
            f"--mlflow-uri {uri}: {path!r} is not an SQLite database ("
            f"{'an empty file' if not header else 'another kind of file'}); give the path of an MLflow store"
        )
    tables = _sqlite_tables(path)
    if not tables >= MLFLOW_TABLES:
        raise UsageError(
            f"--mlflow-uri {uri}: {path!r} is an SQLite database but not an MLflow tracking store "
            f"(it has no {', '.join(sorted(MLFLOW_TABLES - tables))} table); give the path of an MLflow store"
        )


MLFLOW_TABLES = frozenset({"experiments", "runs", "metrics", "params", "tags"})
"""Tables every MLflow SQL tracking store has."""


def open_read_only(path: str) -> sqlite3.Connection:
    """A connection to the SQLite database at ``path`` that cannot write to it (``mode=ro``)."""
    import sqlite3
    import urllib.parse

    return sqlite3.connect(f"file:{urllib.parse.quote(os.path.realpath(path))}?mode=ro", uri=True)


def _sqlite_tables(path: str) -> set[str]:
    """The tables of the SQLite database at ``path``, read without writing to it."""
    import sqlite3

    try:
        db = open_read_only(path)
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise UsageError(f"--mlflow-uri sqlite:///{path}: cannot read {path!r}: {e}") from None
    return {str(name) for (name,) in rows}


def _check_file_store(uri: str) -> None:
    """Refuse a local file store (a path, or ``file:``) whose directory does not exist.

    MLflow would create an empty store there (``.trash``, ``0/meta.yaml``) and then report the
    experiment or run missing: a mistyped path must not leave a new store behind.
    """
    import urllib.parse

    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        path = urllib.parse.unquote(parsed.path)
    elif not parsed.scheme or (len(parsed.scheme) == 1 and os.name == "nt"):  # a plain path
        path = uri
    else:  # another store (databricks, postgresql, ...): MLflow checks it
        return
    if not Path(path).is_dir():
        raise UsageError(
            f"--mlflow-uri {uri}: no MLflow file store at {path!r} (the directory does not exist; "
            "give the path of an existing store)"
        )


def _unreachable(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why no server answers at ``uri`` (its ``/health`` endpoint), or None when one does.

    Any HTTP answer counts, an error status included (a proxy or an authenticating server).
    """
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, "reason", e))


NOT_RUNNING_TOTALS = frozenset(
    {
        keys.EPOCH_KWH,
        keys.AVG_POWER_W,
        keys.SAMPLES_PER_J,
        keys.STEP_J,
        keys.STEP_POWER_W,
        keys.GAIN_PER_KWH,
        keys.PROJECTED_GAIN,
        keys.PROJECTED_GAIN_PER_KWH,
        keys.EPOCHS_UNTIL_LR_DECAY,
        keys.CHECK_METRIC,
        keys.BATCH_SIZE,
        keys.PRECISION,
    }
)
"""What lightning_green logs per epoch, per check or as a rate: refused as ``--cost-key`` by name
(a per-epoch cost that is the same every epoch never decreases, so the check of a running total
would not catch it)."""


def cost_key(value: str | None) -> str:
    """The cost ``--cost-key`` names, for ``replay`` and ``report`` alike (checked before any work).

    Args:
        value: The option as given (``None``: not given).

    Returns:
        ``value``, or ``energy/total_kwh`` (the cumulative energy) when it was not given.

    Raises:
        UsageError: When it is empty or blank, naming what the option may name.

    Example:
        >>> cost_key(None), cost_key("step")
        ('energy/total_kwh', 'step')
    """
    if value is None:
        return keys.TOTAL_KWH
    if not value.strip():
        raise UsageError(f"--cost-key {value!r} is empty: give {COST_KEYS_ALLOWED}")
    if value in NOT_RUNNING_TOTALS:
        raise UsageError(
            f"--cost-key {value!r} is logged per epoch or per check, not as a running total: give "
            f"{COST_KEYS_ALLOWED}"
        )
    return value


def image_format(flag: str, path: str) -> str:
    """The image format matplotlib will write for ``path`` (its extension; none means PNG).

    Raises:
        UsageError: If matplotlib is not installed or cannot write that format.
    """
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise UsageError(
            f"{flag} {path}: drawing needs matplotlib: pip install 'lightning_green[plot]'"
        ) from None
    suffix = Path(path).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise UsageError(
            f"{flag} {path}: matplotlib cannot write {suffix!r} images; use one of {sorted(formats)}"
        )
    return suffix or "png"
