"""All-or-nothing outputs: written beside their targets, renamed into place together.

A command stages each of its outputs to a temporary file in the target's own directory and
renames them into place only when all of them are complete (a rename within a directory is
atomic), so a failure half-way leaves the old files as they were and no temporary behind.
Temporary files are created with mode ``0o666``, which the kernel reduces by the process umask
(and a directory's default ACL) exactly as for any new file: no umask is read or changed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from types import TracebackType


def create_new_file(directory: str | os.PathLike[str], name: str) -> str:
    """Create an empty temporary file for ``name`` in ``directory``, readable like any new file.

    Args:
        directory: Where (the target's directory, so that the final rename is atomic).
        name: The target's file name (the temporary one is ``.NAME.<random>.tmp``).

    Returns:
        The temporary file's path.
    """
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        os.close(fd)
        return tmp


def _cannot_write(name: str, error: OSError) -> OSError:
    """``error`` told of the output ``name`` (the temporary file beside it is no name to show)."""
    return OSError(f"{name}: cannot be written ({error.strerror or error})")


class StagedOutputs:
    r"""Outputs staged to temporary files and renamed into place by :meth:`commit`.

    Use as a context manager: whatever was not committed is removed on exit.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> with StagedOutputs() as out:
        ...     out.write_text(d / "a.csv", "x\\n")
        ...     out.commit()
        >>> sorted(p.name for p in d.iterdir()), (d / "a.csv").read_text()
        (['a.csv'], 'x\\n')
    """

    def __init__(self) -> None:
        self._staged: list[tuple[str, Path, str]] = []

    def stage(self, target: str | os.PathLike[str], name: str | None = None) -> str:
        """A temporary file to write ``target``'s content into; renamed to ``target`` on commit.

        Args:
            target: The file the content is for.
            name: How errors name the output (``"-o/--output d.csv"``; default: ``target``).

        Raises:
            OSError: If the temporary file cannot be created, naming ``name`` (not the temporary).
        """
        target = Path(target)
        label = name or str(target)
        try:
            tmp = create_new_file(target.parent, target.name)
        except OSError as e:
            raise _cannot_write(label, e) from None
        self._staged.append((tmp, target, label))
        return tmp

    def write_text(self, target: str | os.PathLike[str], text: str, name: str | None = None) -> None:
        """Stage ``text`` as ``target``'s content (UTF-8, line endings as given).

        Raises:
            OSError: If it cannot be written, naming ``name`` (default: ``target``).
        """
        tmp = self.stage(target, name)
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as e:
            raise _cannot_write(name or str(target), e) from None

    def commit(self) -> None:
        """Rename every staged file into place, in the order staged.

        Raises:
            OSError: If a rename fails, naming that output as staged.
        """
        while self._staged:
            tmp, target, label = self._staged[0]
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise _cannot_write(label, e) from None
            self._staged.pop(0)

    def discard(self) -> None:
        """Remove the staged files not yet committed."""
        for tmp, _, _ in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._staged.clear()

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()
