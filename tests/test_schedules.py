"""Distance to the next learning-rate drop, checked against the rates a real fit actually used."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import make_trainer
from digits import DigitsClassifier, DigitsDataModule

from lightning_green.training.learning_rates import epochs_until_lr_decay


class ScheduledDigits(DigitsClassifier):
    def __init__(self, make_scheduler, interval: str = "epoch") -> None:
        super().__init__()
        self.make_scheduler, self.interval = make_scheduler, interval

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        config = {"scheduler": self.make_scheduler(optimizer), "interval": self.interval}
        if isinstance(config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val_loss"
        return {"optimizer": optimizer, "lr_scheduler": config}


class Probe(pl.Callback):
    """Records, at each epoch end, the distance the helper reports and the rate the epoch ran at."""

    def __init__(self) -> None:
        self.reported: dict[int, int | None] = {}
        self.lr: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lr[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer, pl_module):
        steps = trainer.num_training_batches / trainer.accumulate_grad_batches
        self.reported[trainer.current_epoch] = epochs_until_lr_decay(trainer.lr_scheduler_configs, steps)


def _run(tmp_path, make_scheduler, epochs=9, interval="epoch", **kwargs):
    probe = Probe()
    pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path,
        [probe],
        max_epochs=epochs,
        limit_train_batches=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        **kwargs,
    )
    trainer.fit(ScheduledDigits(make_scheduler, interval), datamodule=DigitsDataModule())
    return probe


def _first_drop_after(probe: Probe, epoch: int) -> int | None:
    """The first epoch trained at a lower rate than ``epoch``."""
    later = [e for e in sorted(probe.lr) if e > epoch and probe.lr[e] < probe.lr[epoch] * (1 - 1e-9)]
    return later[0] if later else None


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 6], gamma=0.1),
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
    ],
    ids=["multistep", "step"],
)
def test_reported_distance_matches_the_rates_used(tmp_path, make_scheduler):
    probe = _run(tmp_path, make_scheduler)
    for epoch, distance in probe.reported.items():
        drop = _first_drop_after(probe, epoch)
        if distance is None:
            assert drop is None, (epoch, drop)
        elif epoch + distance + 1 < max(probe.lr) + 1:  # a drop within the run: it must be exact
            assert drop == epoch + distance + 1, (epoch, distance, drop)


def test_step_interval_schedule_counts_optimizer_steps_under_accumulation(tmp_path):
    # 4 batches per epoch, 2 accumulated: 2 optimizer steps per epoch; the drop after step 5.
    probe = _run(
        tmp_path,
        lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5], gamma=0.1),
        epochs=5,
        interval="step",
        accumulate_grad_batches=2,
    )
    drop = _first_drop_after(probe, 0)  # step 5 is the first of epoch 2: epoch 3 runs wholly lower
    assert drop is not None
    assert probe.reported[0] + 1 <= drop <= probe.reported[0] + 2


def test_plateau_scheduler_reports_a_drop_only_while_a_plateau_forms():
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2)
    configs = [type("C", (), {"scheduler": plateau, "interval": "epoch", "frequency": 1})()]
    plateau.step(1.0)  # improving
    assert epochs_until_lr_decay(configs, 10) is None
    plateau.step(1.0)  # one bad epoch: with two more the rate drops
    assert epochs_until_lr_decay(configs, 10) == 1
    plateau.step(1.0)
    assert epochs_until_lr_decay(configs, 10) == 0
    plateau.step(1.0)  # dropped now; cooldown 0 resets the count
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert epochs_until_lr_decay(configs, 10) is None
