"""Measured training windows: energy, time, samples and losses of optimizer steps (torch, no Lightning).

A *training window* is a run of optimizer steps between two boundaries that every rank of a
distributed run reaches at the same step. Its energy and time come from a named window of the
run's :class:`~lightning_green.energy.session.EnergySession`; its samples, per-step losses and
the caller's counts are summed over ranks in the same collective, so every rank holds the same
figures. The window pauses outside training (validation, epoch-end work) and resumes after.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lightning_green.energy.session import EnergySession


@dataclass(frozen=True)
class AdaptWindow:
    """What a closed training window measured, identical on every rank.

    Attributes:
        energy_j: Energy of the window, all ranks and devices, before PUE.
        duration_s: Rank 0's wall time in training during the window.
        samples: Training samples of all ranks.
        steps: Optimizer steps.
        losses: Per-step training losses, averaged over ranks.
        extras: The caller's named values, summed over ranks.
        source: The energy source label.
        partial: Whether a measurement fault happened inside the window (on any rank): its
            energy is incomplete.
    """

    energy_j: float
    duration_s: float
    samples: int
    steps: int
    losses: list[float]
    extras: dict[str, float]
    source: str
    partial: bool = False


@dataclass
class OpenWindow:
    """What a training window a checkpoint caught open had measured so far (plain data).

    A resumed fit continues the window from here (:meth:`TrainingWindow.restore`), so it closes
    at the step and with the energy it would have without the interruption.

    Attributes:
        energy_j: Energy of the window so far, all ranks and devices, before PUE.
        duration_s: Rank 0's wall time in training during the window so far.
        steps: Optimizer steps counted so far.
        target_steps: Steps at which the window is due.
        samples: Training samples of all ranks so far.
        loss_sum: Per counted step, the training loss summed over the ranks that had one.
        loss_n: Per counted step, how many ranks had a loss.
        partial: Whether a measurement fault happened inside the window so far.
    """

    energy_j: float
    duration_s: float
    steps: int
    target_steps: int
    samples: int = 0
    loss_sum: list[float] = dataclasses.field(default_factory=list)
    loss_n: list[float] = dataclasses.field(default_factory=list)
    partial: bool = False


class TrainingWindow:
    """Energy, time, samples and losses of training steps, paused outside training.

    :meth:`resume`, :meth:`pause` and :meth:`close` read the session's meters: collectives
    in a distributed run. Each first calls ``sync`` (waiting for queued GPU kernels, so the
    counter read covers the steps counted).

    Args:
        key: The name of the session window.
        session: The run's measurement session.
        sync: Waits for the device (nothing on a CPU).
    """

    def __init__(self, key: str, session: EnergySession, sync: Callable[[], None] = lambda: None) -> None:
        self.key = key
        self.session = session
        self.sync = sync
        self.paused = True
        self.target_steps = 1
        self.reset()

    def reset(self) -> None:
        """Drop what was accumulated (no collective)."""
        self.energy_j = 0.0
        self.duration_s = 0.0
        self.partial = False
        self.samples_local = 0
        self.steps = 0
        self._losses: list[torch.Tensor | None] = []
        self._step_loss: torch.Tensor | None = None
        self._carried: OpenWindow | None = None  # what the window had measured before a resume

    def restore(self, saved: OpenWindow) -> None:
        """Continue a window a checkpoint caught open (:meth:`so_far`), paused (no collective).

        Its steps, energy, time and target count at once; its samples and losses are added,
        once for all ranks, when the window closes.
        """
        self.reset()
        self.energy_j, self.duration_s, self.partial = saved.energy_j, saved.duration_s, saved.partial
        self.steps, self.target_steps = saved.steps, max(int(saved.target_steps), 1)
        self._carried = saved

    def _carried_fields(self) -> dict[str, Any]:
        """The restored samples and losses, counted once (rank 0's) when summed over ranks."""
        carried = self._carried
        if carried is None:
            return {}
        return {
            "carried.samples": float(carried.samples),
            "carried.loss_sum": list(carried.loss_sum),
            "carried.loss_n": list(carried.loss_n),
        }

    def _local_losses(self) -> tuple[list[float], list[float]]:
        """This rank's loss sums and counts per counted step, ``(0, 0)`` for a step without loss."""
        present = [v.reshape(()) for v in self._losses if v is not None]
        if len({v.dtype for v in present}) > 1:  # a module returning losses of several dtypes
            present = [v.double() for v in present]
        values = iter(torch.stack(present).double().cpu().tolist() if present else [])
        losses = [0.0 if v is None else float(next(values)) for v in self._losses]
        return losses, [0.0 if v is None else 1.0 for v in self._losses]

    @staticmethod
    def _with_carried(summed: Mapping[str, Any]) -> tuple[float, list[float], list[float]]:
        """Samples, loss sums and loss counts of the whole window: the restored part first."""
        samples = float(summed["samples"]) + float(summed.get("carried.samples", 0.0))
        loss_sum = list(summed.get("carried.loss_sum", [])) + list(summed["loss_sum"])
        loss_n = list(summed.get("carried.loss_n", [])) + list(summed["loss_n"])
        return samples, loss_sum, loss_n

    def so_far(self, collective: bool = True) -> OpenWindow:
        """What the window has measured so far, to keep in a checkpoint (also with no step counted yet).

        A window that counted no step still has its target: after a switch decided at the step a
        checkpoint is saved (an epoch's last), the next window is the policy's warm-up, which a
        resumed fit must wait for as the uninterrupted one does.

        Args:
            collective: Read the meters of a running window (without interrupting it) and sum the
                samples and losses over ranks: every rank must call it. False: no meter read, this
                rank's figures only (a fit that is over).
        """
        if collective and not self.paused:
            self.sync()
            record = self.session.end(self.key, restart=True)  # reopened at this very reading
            self.energy_j += record.energy_j
            self.duration_s += record.duration_s
            self.partial = self.partial or record.partial
        loss_sum, loss_n = self._local_losses()
        fields: dict[str, Any] = {
            "samples": float(self.samples_local),
            "loss_sum": loss_sum,
            "loss_n": loss_n,
        }
        carried = self._carried_fields()
        summed: Mapping[str, Any] = self.session.sum(fields, carried) if collective else {**fields, **carried}
        samples, loss_sum, loss_n = self._with_carried(summed)
        return OpenWindow(
            energy_j=self.energy_j,
            duration_s=self.duration_s,
            steps=self.steps,
            target_steps=self.target_steps,
            samples=round(samples),
            loss_sum=[float(v) for v in loss_sum],
            loss_n=[float(v) for v in loss_n],
            partial=self.partial,
        )

    def resume(self) -> None:
        """Start counting again (collective when paused)."""
        if self.paused:
            self.sync()
            self.session.begin(self.key)
            self.paused = False

    def pause(self) -> None:
        """Stop counting, adding what passed since the last resume (collective when running)."""
        if not self.paused:
            self.sync()
            record = self.session.end(self.key)
            self.energy_j += record.energy_j
            self.duration_s += record.duration_s
            self.partial = self.partial or record.partial
            self.paused = True

    def add_batch(self, samples: int, loss: torch.Tensor | None) -> None:
        """Count one (micro-)batch: its samples and its loss (already divided by accumulation)."""
        self.samples_local += int(samples)
        if loss is not None:
            value = loss.detach()  # cast and shaped at close: one op per window, not per step
            self._step_loss = value if self._step_loss is None else self._step_loss + value

    def end_step(self, with_loss: bool = True) -> None:
        """Close one optimizer step (after the last micro-batch of an accumulation cycle)."""
        self.steps += 1
        if with_loss:
            self._losses.append(self._step_loss)  # None: the step had no loss
        self._step_loss = None

    @property
    def due(self) -> bool:
        """Whether the window has its target number of steps."""
        return self.steps >= self.target_steps

    @property
    def half_due(self) -> bool:
        """Whether the window has at least half its target steps (a step count: the same on every rank)."""
        return self.steps > 0 and 2 * self.steps >= self.target_steps

    def close(self, extras: Mapping[str, float] | None = None) -> AdaptWindow:
        """Read the meters, sum over ranks and start the next window right here (collective).

        Args:
            extras: This rank's named values to sum over ranks with the record.
        """
        self.sync()
        # Per step: (loss, 1) or (0, 0) - the same length on every rank, summed in one collective.
        loss_sum, loss_n = self._local_losses()
        fields = {
            "samples": float(self.samples_local),
            "loss_sum": loss_sum,
            "loss_n": loss_n,
            **{f"extra.{k}": float(v) for k, v in (extras or {}).items()},
        }
        carried = self._carried_fields()
        energy_j, duration_s, partial = self.energy_j, self.duration_s, self.partial
        if self.paused:
            reading, summed = self.session.read(fields, carried)
            source = reading.source
        else:
            record = self.session.end(self.key, fields, restart=True, rank0=carried)
            energy_j, duration_s = energy_j + record.energy_j, duration_s + record.duration_s
            summed, source, partial = record.fields, record.source, partial or record.partial
        samples, all_loss_sum, all_loss_n = self._with_carried(summed)
        pairs = zip(all_loss_sum, all_loss_n, strict=True)
        window = AdaptWindow(
            energy_j=max(energy_j, 0.0),
            duration_s=max(duration_s, 0.0),
            samples=round(samples),
            steps=self.steps,
            losses=[total / n for total, n in pairs if n > 0],
            extras={k.removeprefix("extra."): float(v) for k, v in summed.items() if k.startswith("extra.")},
            source=source,
            partial=partial,
        )
        self.reset()
        return window


def loss_of(outputs: Any) -> torch.Tensor | None:
    """The training loss in ``on_train_batch_end``'s ``outputs`` (automatic optimization)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


MAX_BATCH_DEPTH = 6
"""How deep :func:`batch_samples` looks into nested containers for a tensor."""

COUNTED_BATCHES = (
    "a tensor, a mapping, a list or tuple (namedtuples included), a dataclass or an object with "
    "public tensor attributes"
)
"""What :func:`batch_samples` counts the samples of (the first dimension of the first tensor inside)."""


def _children(batch: Any) -> list[Any]:
    """What a batch container holds: values of a mapping, items, dataclass fields, public attributes."""
    if isinstance(batch, Mapping):
        return list(batch.values())
    if isinstance(batch, (list, tuple)):
        return list(batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return [getattr(batch, f.name, None) for f in dataclasses.fields(batch)]
    attributes = getattr(batch, "__dict__", None)
    if (
        isinstance(attributes, dict)
        and not isinstance(batch, (type, types.ModuleType))
        and not callable(batch)
    ):
        return [v for k, v in attributes.items() if not k.startswith("_")]
    return []


def batch_samples(batch: Any, _depth: int = 0) -> int | None:
    """Samples in a batch: the first dimension of the first non-empty tensor in it; None when it holds none.

    Looks into mappings, lists and tuples (namedtuples too), dataclasses and the public attributes
    of other objects (:data:`COUNTED_BATCHES`), :data:`MAX_BATCH_DEPTH` levels deep. 0: only empty
    tensors.

    Example:
        >>> from collections import namedtuple
        >>> Pair = namedtuple("Pair", "x y")
        >>> batch_samples(Pair(torch.zeros(16, 3), torch.zeros(16))), batch_samples(["a", "b"])
        (16, None)
    """
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if _depth >= MAX_BATCH_DEPTH:
        return None
    found = None
    for item in _children(batch):
        n = batch_samples(item, _depth + 1)
        if n:
            return n
        if n is not None:
            found = 0
    return found


def count_samples(batch: Any) -> int:
    """Samples in a batch (:func:`batch_samples`), 0 when it holds no tensor.

    Example:
        >>> count_samples((torch.zeros(32, 3), torch.zeros(32))), count_samples({"x": [torch.zeros(8, 2)]})
        (32, 8)
        >>> @dataclasses.dataclass
        ... class Batch:
        ...     x: torch.Tensor
        >>> count_samples(Batch(torch.zeros(4, 2))), count_samples("text")
        (4, 0)
    """
    return batch_samples(batch) or 0


def uncounted_batch_message(batch: Any) -> str:
    """The warning for a training batch whose samples cannot be counted: its type and what is needed.

    Example:
        >>> "builtins.str" in uncounted_batch_message("text")
        True
    """
    kind = type(batch)
    return (
        f"lightning_green: cannot count the samples of a training batch of type "
        f"{kind.__module__}.{kind.__qualname__}: no tensor found in it. Samples are the first dimension of "
        f"the first tensor in {COUNTED_BATCHES}. Until then energy/samples_per_j is 0, joules per "
        "sample are not measured, and AdaptiveBatchSize and AdaptivePrecision (which compare joules per "
        "sample) measure nothing and never switch. Have collate_fn return one of those types, or hold "
        "the batch's tensors in public attributes."
    )


def default_window_s(source: str) -> float:
    """Window length suited to an energy source: 1 s for NVML's counter, 0.25 s for RAPL and the estimate.

    NVML's counter updates every few tens of milliseconds; RAPL every millisecond and the CPU-time
    estimate every 10 ms clock tick (25 ticks of one busy core in 0.25 s).

    Example:
        >>> default_window_s("nvml+rapl"), default_window_s("estimate")
        (1.0, 0.25)
    """
    return 1.0 if "nvml" in source else 0.25


def steps_for_window(
    window_s: float | None, step_s: Mapping[int, float], size: int | None, default: int
) -> int:
    """Optimizer steps that take about ``window_s`` at batch size ``size``, from measured step times.

    A size not measured yet is scaled from the nearest measured one (time per sample); with no
    measurement at all, ``default``.

    Example:
        >>> steps_for_window(1.0, {32: 0.1}, 32, 4), steps_for_window(1.0, {32: 0.1}, 64, 4)
        (10, 5)
    """
    if size is None or not window_s:
        return default
    if size in step_s:
        return max(1, math.ceil(window_s / step_s[size]))
    if step_s:
        near = min(step_s, key=lambda b: abs(math.log2(b / size)))
        return max(1, math.ceil(window_s / (step_s[near] / near * size)))
    return default
