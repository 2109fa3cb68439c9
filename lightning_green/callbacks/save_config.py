"""LightningCLI's config saving for every logger, MLflow included.

LightningCLI's default ``SaveConfigCallback`` writes ``config.yaml`` to ``trainer.log_dir``, which
an MLflow logger on a database or server store does not have (``assert log_dir is not None``).
:class:`SaveConfigToLoggers` writes the fully resolved config next to the energy reports (in every
logger's folder) and logs it as an artifact of every MLflow run, so the run records exactly what
was trained.
"""

from __future__ import annotations

from pathlib import Path

from lightning_green.callbacks import _compat, _loggers
from lightning_green.callbacks._compat import LightningModule, Trainer


class SaveConfigToLoggers(*_compat.save_config_bases()):
    """Save the resolved LightningCLI config locally and as an artifact ``config/`` of every MLflow run.

    Use ``LightningCLI(..., save_config_callback=SaveConfigToLoggers)`` with either namespace's
    ``LightningCLI``. The file goes into every folder
    :func:`~lightning_green.callbacks._loggers.output_dirs` names (each logger's, beside the energy
    reports); written once, on global rank 0.

    Args:
        parser: Set by LightningCLI.
        config: Set by LightningCLI.
        config_filename: Name of the written file.
        overwrite: Unused (each MLflow run gets its own folder).
        multifile: Save the config as several files (LightningCLI's option).
        save_to_log_dir: Ignored.
    """

    def __init__(
        self,
        parser,  # jsonargparse parser, typed by LightningCLI
        config,  # jsonargparse Namespace
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = False,
    ) -> None:
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)
        self.saved_path: Path | None = None

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Write the config beside every logger's energy reports and log it to every MLflow run.

        Called on global rank 0 only. Each folder of
        :func:`~lightning_green.callbacks._loggers.output_dirs` gets it (written there by the
        parser, so a ``multifile`` config keeps its parts beside it); a folder that cannot be
        written gets one warning naming it, and the others still get it. The first one written is
        logged (one written into a temporary folder when none could be).
        """

        def write(folder: Path) -> tuple[Path]:
            return (self._save(folder / self.config_filename),)

        written = _loggers.write_in_output_dirs(trainer, write, self.config_filename, copy=False)
        self.saved_path = None if written is None else written[0]
        _loggers.log_written(trainer, written, write, self.config_filename, artifact_path="config")

    def _save(self, path: Path) -> Path:
        """Write the resolved config to ``path`` (its folder created when missing); returns ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # Keep None values: the saved config must rebuild exactly this run. jsonargparse >= 4.50
        # calls the option skip_unset; older releases call it skip_none and reject the new name,
        # with a TypeError (before 4.39) or a ValueError naming it (4.39 to 4.49).
        try:
            self.parser.save(
                self.config, str(path), overwrite=True, multifile=self.multifile, skip_unset=False
            )
        except (TypeError, ValueError) as err:
            if "skip_unset" not in str(err):
                raise
            self.parser.save(
                self.config, str(path), overwrite=True, multifile=self.multifile, skip_none=False
            )
        return path
