"""Doubles shared by the adaptive-callback tests: a scripted energy hardware and a digits module.

``StepCostMeter`` stands in for energy hardware whose cost per training step is known exactly:
the module charges ``overhead_j + per_sample_j * batch`` joules per step, times a factor for
the compute dtype autocast is really running (bf16/fp16), so decisions that depend only on
energy are deterministic. ``CostedDigits`` is the real digits CNN trained on real data, with
switches for the failures a real device shows (NaN under a dtype, out of memory above a size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from conftest import PL, AnyCallback
from torch.nn import functional
from torch.utils.data import DataLoader

from lightning_green.energy.meter import EnergyMeter


@dataclass
class StepCost:
    """Joules per training step: ``(overhead_j + per_sample_j * batch) * dtype factor``."""

    overhead_j: float = 0.05
    per_sample_j: float = 0.001
    factors: dict = field(default_factory=lambda: {"float32": 1.0, "bfloat16": 3.0, "float16": 3.0})
    charged_j: float = 0.0

    def charge(self, batch: int, dtype: str) -> None:
        self.charged_j += (self.overhead_j + self.per_sample_j * batch) * self.factors[dtype]


COST = StepCost()


class StepCostMeter(EnergyMeter):
    """Reads the joules charged by the training steps (a deterministic energy counter).

    Labelled as a measured source (a scripted counter, as RAPL's), not the CPU-time estimate: the
    policies believe a measured saving, while an estimated one must also not be slower.
    """

    source = "rapl"

    def _start(self) -> None:
        self._base = COST.charged_j

    def _read_j(self) -> dict[str, float]:
        return {"scripted": COST.charged_j - self._base}


class FlakyStepCostMeter(StepCostMeter):
    """:class:`StepCostMeter` whose reads number ``failing`` (1-based) raise, as an NVML outage does."""

    def __init__(self, failing: range) -> None:
        super().__init__()
        self.failing, self.reads = failing, 0

    def _read_j(self) -> dict[str, float]:
        self.reads += 1
        if self.reads in self.failing:
            raise RuntimeError("NVMLError_Unknown (scripted outage)")
        return super()._read_j()


def install_step_cost(monkeypatch, failing_reads: range = range(0), **cost) -> StepCost:
    """Make EnergyMonitor read the scripted step costs; returns the cost model (fresh).

    Args:
        monkeypatch: pytest's fixture.
        failing_reads: Meter reads (1-based) that fail, as an NVML outage.
        cost: :class:`StepCost` arguments.
    """
    from lightning_green.callbacks import energy_monitor

    global COST
    COST = StepCost(**cost)
    monkeypatch.setattr(energy_monitor, "build_meter", lambda spec, **_: FlakyStepCostMeter(failing_reads))
    return COST


def autocast_dtype() -> str:
    """The compute dtype the current step really runs in on the CPU."""
    if torch.is_autocast_enabled("cpu"):
        return str(torch.get_autocast_dtype("cpu")).removeprefix("torch.")
    return "float32"


def costed_digits(base: type) -> type:
    """``CostedDigits`` on ``base`` (a ``DigitsClassifier`` of either Lightning namespace)."""

    class CostedDigits(base):
        """The digits CNN, charging the scripted cost per step and recording what each step ran in.

        Args:
            nan_under: A dtype (``"bfloat16"``) under which the loss is NaN (a numerically failing
                precision).
            oom_above: Batch sizes above this raise ``torch.OutOfMemoryError`` (a device too small).
            huge_under: A dtype under which the loss is scaled up so that fp16 gradients overflow.
            kwargs: DigitsClassifier arguments.
        """

        def __init__(self, nan_under=None, oom_above=None, huge_under=None, **kwargs) -> None:
            super().__init__(**kwargs)
            self.nan_under, self.oom_above, self.huge_under = nan_under, oom_above, huge_under
            self.steps: list[tuple[int, str]] = []
            self.val_dtypes: list[str] = []  # what each validation step ran in

        def training_step(self, batch, batch_idx):
            x, y = batch
            if self.oom_above is not None and len(x) > self.oom_above:
                raise torch.OutOfMemoryError("CUDA out of memory (scripted)")
            dtype = autocast_dtype()
            self.steps.append((len(x), dtype))
            COST.charge(len(x), dtype)
            logits = self(x)
            loss = functional.cross_entropy(logits, y)
            if dtype == self.huge_under:
                loss = loss * 6.0e4 / loss.detach().float()  # the same gradient direction, fp16-sized
            if dtype == self.nan_under:
                loss = loss * math.nan
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            self.val_dtypes.append(autocast_dtype())
            return super().validation_step(batch, batch_idx)

    return CostedDigits


CostedDigits = PL.module(costed_digits)


class Spy(AnyCallback):
    """Per epoch: the batch size the dataloader really yielded, the precision and the lr."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._first: int | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._first = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._first is None:
            self._first = len(batch[0])

    def on_train_epoch_end(self, trainer, pl_module):
        self.rows.append(
            {
                "epoch": trainer.current_epoch,
                "batch_size": self._first,
                "precision": trainer.precision,
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
            }
        )


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core box OpenMP spin-waits inflate CPU time otherwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_step_cost_meter_counts_exactly(monkeypatch):
    cost = install_step_cost(monkeypatch, overhead_j=1.0, per_sample_j=0.5)
    meter = StepCostMeter()
    meter.start()
    cost.charge(4, "float32")
    cost.charge(4, "bfloat16")
    assert meter.read().energy_j == pytest.approx(3.0 + 9.0)


class ResumableLoader(DataLoader):
    """A loader Lightning restores mid-epoch (``state_dict``/``load_state_dict``, as torchdata's).

    ``epoch_batches``: the batches an epoch trains (``limit_train_batches``; default: all): a
    checkpoint at an epoch's end resumes with the next epoch from its start.
    """

    def __init__(self, *args, epoch_batches: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_batches, self._skip, self._yielded = epoch_batches, 0, 0

    def __iter__(self):
        skip, self._skip, self._yielded = self._skip, 0, 0
        for i, batch in enumerate(super().__iter__()):
            self._yielded = i + 1
            if i >= skip:
                yield batch

    def state_dict(self):
        return {"yielded": self._yielded}

    def load_state_dict(self, state):
        self._skip = state["yielded"] % (self.epoch_batches or len(self))
