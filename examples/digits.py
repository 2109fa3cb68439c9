"""A small real task for the examples and tests: scikit-learn's handwritten digits (offline).

1,797 8x8 grey images of the digits 0-9, split into train and validation sets; a small CNN
reaches about 95% validation accuracy in a few CPU epochs.

The classes are defined once, for either Lightning namespace: ``DigitsDataModule`` and
``DigitsClassifier`` here are ``pytorch_lightning`` ones; ``for_lightning(lightning.pytorch)``
gives the same two on ``lightning.pytorch`` (``import lightning as L``).
"""

from __future__ import annotations

import functools
from types import ModuleType

import numpy as np
import pytorch_lightning
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset


@functools.cache
def for_lightning(lightning: ModuleType) -> tuple[type, type]:
    """The digits DataModule and classifier on a Lightning namespace.

    Args:
        lightning: ``pytorch_lightning`` or ``lightning.pytorch``.

    Returns:
        ``(DigitsDataModule, DigitsClassifier)`` subclassing that namespace's
        ``LightningDataModule`` and ``LightningModule``.
    """

    class DigitsDataModule(lightning.LightningDataModule):
        """scikit-learn's digits as tensors of shape (N, 1, 8, 8), scaled to [0, 1].

        Args:
            batch_size: Training and validation batch size (adaptive callbacks may change it).
            val_fraction: Share of the samples held out for validation.
            seed: Seed of the split.
            num_workers: DataLoader worker processes.
        """

        def __init__(
            self, batch_size: int = 32, val_fraction: float = 0.2, seed: int = 0, num_workers: int = 0
        ):
            super().__init__()
            self.batch_size = batch_size
            self.val_fraction = val_fraction
            self.seed = seed
            self.num_workers = num_workers
            self.train_set: TensorDataset | None = None
            self.val_set: TensorDataset | None = None

        def setup(self, stage: str | None = None) -> None:
            if self.train_set is not None:
                return
            data = load_digits()
            images = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
            labels = torch.tensor(data.target, dtype=torch.long)
            order = np.random.default_rng(self.seed).permutation(len(labels))
            n_val = round(len(labels) * self.val_fraction)
            val_idx, train_idx = torch.tensor(order[:n_val]), torch.tensor(order[n_val:])
            self.train_set = TensorDataset(images[train_idx], labels[train_idx])
            self.val_set = TensorDataset(images[val_idx], labels[val_idx])

        def train_dataloader(self) -> DataLoader:
            return DataLoader(
                self.train_set,
                batch_size=self.batch_size,
                shuffle=True,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )

        def val_dataloader(self) -> DataLoader:
            return DataLoader(
                self.val_set,
                batch_size=256,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )

    class DigitsClassifier(lightning.LightningModule):
        """A small CNN for 8x8 digits; logs ``train_loss``, ``val_loss`` and ``val_acc`` (percent).

        Args:
            lr: Learning rate of Adam.
            channels: Channels of the two convolutions.
            hidden: Width of the hidden dense layer.
            lr_milestones: Epochs at which a MultiStepLR divides the learning rate by 10 (none: constant).
        """

        def __init__(
            self,
            lr: float = 1e-3,
            channels: int = 16,
            hidden: int = 64,
            lr_milestones: list[int] | None = None,
        ):
            super().__init__()
            self.save_hyperparameters()
            self.lr = lr
            self.features = nn.Sequential(
                nn.Conv2d(1, channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(channels * 16, hidden), nn.ReLU(), nn.Linear(hidden, 10)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = functional.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val_loss", functional.cross_entropy(logits, y), sync_dist=True, prog_bar=True)
            accuracy = (logits.argmax(-1) == y).float().mean() * 100.0
            self.log("val_acc", accuracy, sync_dist=True, prog_bar=True)

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
            if not self.hparams.lr_milestones:
                return optimizer
            scheduler = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=self.hparams.lr_milestones, gamma=0.1
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    return DigitsDataModule, DigitsClassifier


DigitsDataModule, DigitsClassifier = for_lightning(pytorch_lightning)
