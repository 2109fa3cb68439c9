"""Shared fixtures: real data (scikit-learn digits), real trainers, real MLflow stores."""

from __future__ import annotations

import csv
import functools
import importlib
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
for path in (ROOT, ROOT / "examples"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


NAMESPACES = ("lightning.pytorch", "pytorch_lightning")
"""Lightning's two namespaces: the unified package's (``import lightning as L``) and the standalone one."""


@dataclass(frozen=True)
class Lightning:
    """One Lightning namespace as a test sees it: its Trainer, loggers, callbacks and the digits task."""

    name: str

    @property
    def pl(self) -> ModuleType:
        """The namespace's package (``lightning.pytorch`` or ``pytorch_lightning``)."""
        return importlib.import_module(self.name)

    @property
    def Trainer(self) -> type:  # noqa: N802 - the class, as ``pl.Trainer``
        return self.pl.Trainer

    @property
    def LightningModule(self) -> type:  # noqa: N802
        return self.pl.LightningModule

    @property
    def loggers(self) -> ModuleType:
        return importlib.import_module(f"{self.name}.loggers")

    @property
    def callbacks(self) -> ModuleType:
        return importlib.import_module(f"{self.name}.callbacks")

    @property
    def cli(self) -> ModuleType:
        return importlib.import_module(f"{self.name}.cli")

    @property
    def DigitsDataModule(self) -> type:  # noqa: N802
        from digits import for_lightning

        return for_lightning(self.pl)[0]

    @property
    def DigitsClassifier(self) -> type:  # noqa: N802
        from digits import for_lightning

        return for_lightning(self.pl)[1]

    def module(self, factory: Any) -> type:
        """A test LightningModule of this namespace: ``factory(DigitsClassifier)``, built once."""
        return _module(factory, self.name)


@functools.cache
def _module(factory: Any, name: str) -> type:
    return factory(Lightning(name).DigitsClassifier)


PL = Lightning("pytorch_lightning")


@pytest.fixture(params=NAMESPACES)
def ns(request) -> Lightning:
    """Each Lightning namespace in turn (integration tests that must pass under both)."""
    return Lightning(request.param)


def _any_callback_bases() -> tuple[type, ...]:
    return tuple(Lightning(name).pl.Callback for name in NAMESPACES)


class AnyCallback(*_any_callback_bases()):
    """A test callback that the Trainer of either namespace accepts."""


class KilledError(Exception):
    """What :class:`KillAt` raises: the process dying, for a test of resuming from a checkpoint."""


class KillAt(AnyCallback):
    """The process dies at the start of ``epoch`` (after the last checkpoint was saved)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KilledError


@pytest.fixture(autouse=True)
def _quiet_lightning():
    # Lightning's own noise (LeafSpec FutureWarning, "does not have many workers") is not ours.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        yield


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    """A fresh embedded MLflow tracking store."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def make_trainer(
    tmp_path: Path, callbacks: list, logger=False, max_epochs: int = 3, lightning: Lightning = PL, **kwargs
):
    """A quiet CPU trainer for tests (of ``lightning``'s namespace)."""
    defaults = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        log_every_n_steps=5,
    )
    defaults.update(kwargs)
    return lightning.Trainer(**defaults)


def replay_decision(out: Path) -> dict[str, str]:
    """The one row of a ``replay`` decisions CSV (one run replayed)."""
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    return row


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``error:`` line a command wrote (MLflow may log a line of its own when it opens a store)."""
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    return line


DDP_SCRIPT = Path(__file__).with_name("ddp_fit.py")


def run_ddp_script(out: Path, *args: str, timeout: int = 240) -> str:
    """Run ``ddp_fit.py`` (2 ranks over gloo, as its arguments say) writing into ``out``; its output.

    Fails the test when the script exits non-zero (a fit failing inside it is caught there).
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "LIGHTNING_GREEN_CPU_POWER_PER_CORE_W": ""}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(DDP_SCRIPT), str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr
