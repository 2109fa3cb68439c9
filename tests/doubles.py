"""Doubles for what this machine lacks (energy hardware), and scripted-curve modules.

``ScriptedMeter`` stands in for a GPU/RAPL counter: it grows by a fixed amount per read, so
energy expectations are exact. ``CurveModule`` is a real LightningModule trained on real data
whose *logged* validation metric follows a scripted curve, so stopping decisions are exact too.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from conftest import PL

from lightning_green.energy.meter import EnergyMeter


class ScriptedMeter(EnergyMeter):
    """A counter that grows by ``j_per_read`` joules at every read (``source`` as given)."""

    def __init__(self, j_per_read: float = 1000.0, source: str = "nvml", domain: str = "gpu:0") -> None:
        super().__init__()
        self.j_per_read, self.source, self.domain = j_per_read, source, domain
        self.reads = 0

    def _start(self) -> None:
        self.reads = 0

    def _read_j(self) -> dict[str, float]:
        self.reads += 1
        return {self.domain: self.reads * self.j_per_read}


def install_scripted_meter(monkeypatch, j_per_read: float = 1000.0) -> list[ScriptedMeter]:
    """Make EnergyMonitor build ScriptedMeters; returns the list of meters built."""
    from lightning_green.callbacks import energy_monitor

    built: list[ScriptedMeter] = []

    def build(spec, **_kwargs):
        meter = ScriptedMeter(j_per_read)
        built.append(meter)
        return meter

    monkeypatch.setattr(energy_monitor, "build_meter", build)
    return built


def curve_module(base: type) -> type:
    """``CurveModule`` on ``base`` (a ``DigitsClassifier`` of either Lightning namespace)."""

    class CurveModule(base):
        """Trains the digits CNN for real but logs ``val_loss`` = ``curve[current_epoch]``.

        Args:
            curve: The scripted validation loss per epoch.
            lr_milestones: MultiStepLR milestones (the schedule the stopper reads).
        """

        def __init__(self, curve: list[float], lr_milestones: list[int] | None = None) -> None:
            super().__init__(lr_milestones=lr_milestones)
            self.curve = list(curve)

        def validation_step(self, batch, batch_idx):
            value = self.curve[min(self.current_epoch, len(self.curve) - 1)]
            self.log("val_loss", torch.tensor(value), sync_dist=True)

    return CurveModule


CurveModule = PL.module(curve_module)


class Stream(torch.utils.data.IterableDataset):
    """The first ``n`` samples of a dataset, streamed: a train loader without a length."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __iter__(self):
        return (self.dataset[i] for i in range(self.n))


def streamed_digits(base: type, samples: int) -> type:
    """``base`` (a digits DataModule of either namespace) whose train loader streams ``samples``.

    Its first ``samples`` training samples at the DataModule's ``batch_size``, from an
    ``IterableDataset`` without a length: Lightning knows an epoch's batches only once it ended.
    """

    class StreamedDigits(base):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(Stream(self.train_set, samples), batch_size=self.batch_size)

    return StreamedDigits


def saturating_curve(epochs: int, floor: float = 1.0, tau: float = 3.0) -> list[float]:
    """A loss that falls fast, then flattens: ``floor + 2 exp(-epoch / tau)``."""
    import math

    return [floor + 2.0 * math.exp(-e / tau) for e in range(epochs)]


__all__ = [
    "CurveModule",
    "ScriptedMeter",
    "Stream",
    "curve_module",
    "install_scripted_meter",
    "pl",
    "saturating_curve",
    "streamed_digits",
]
