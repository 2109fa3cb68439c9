"""Small DDP helpers shared by the callbacks: sums, rank-0 values and local pids."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from lightning_green.callbacks._compat import Trainer


def _device(trainer: Trainer) -> torch.device:
    # NCCL needs CUDA tensors, gloo takes CPU ones: the strategy's root device suits both.
    try:
        return trainer.strategy.root_device
    except Exception:  # pragma: no cover - strategies without a root device
        return torch.device("cpu")


def sum_across_ranks(trainer: Trainer, values: Sequence[float]) -> list[float]:
    """Sum a short vector of floats over all ranks (a no-op on one process).

    Every rank must call this at the same point, like any collective.

    Args:
        trainer: The trainer whose strategy does the reduction.
        values: This rank's values.

    Returns:
        The element-wise sum over ranks.
    """
    if trainer.world_size <= 1:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device(trainer))
    reduced = trainer.strategy.reduce(tensor, reduce_op="sum")
    return [float(v) for v in reduced.cpu().tolist()]


def local_rank_pids(trainer: Trainer) -> list[int]:
    """Pids of every rank on this node (collective under DDP).

    Args:
        trainer: The trainer, after the strategy set up its process group.

    Returns:
        The pids of this node's ranks, this process first.
    """
    pid = os.getpid()
    if trainer.world_size <= 1:
        return [pid]
    mine = torch.tensor([trainer.node_rank, pid], dtype=torch.int64, device=_device(trainer))
    gathered = trainer.strategy.all_gather(mine).reshape(-1, 2).cpu().tolist()
    others = [int(p) for node, p in gathered if int(node) == trainer.node_rank and int(p) != pid]
    return [pid, *others]
