"""Precisions a device can train in, and the per-step care they need (torch, no Lightning).

The names are Lightning's precision flags (``32-true``, ``bf16-mixed``, ``16-mixed``): weights
stay fp32 under each, mixed precision only autocasts, so the precision can change between
optimizer steps. ``16-mixed`` needs a GradScaler, whose overflows are read from its scale (a
device sync) only at window boundaries; ``bf16-mixed`` has no scaler, so a step with
non-finite gradients is skipped before it reaches the weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lightning_green.policy.precision import PRECISIONS
from lightning_green.training.gradient_pairs import gradients

PRECISION_BITS: dict[str, int] = {"32-true": 32, "bf16-mixed": 16, "16-mixed": 16}
"""``energy/precision`` as logged: the bits of the compute type (the name is in the tag and summary)."""


def hardware_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions this device can train in with a swappable plugin, in policy order.

    CPU: ``32-true`` and ``bf16-mixed`` (CPU autocast). CUDA: ``32-true``, ``bf16-mixed`` where
    the GPU has native bf16 (Ampere and newer), and ``16-mixed`` with a GradScaler.

    Args:
        device: The strategy's root device.

    Returns:
        Precision names, ``32-true`` first; empty for device types not supported.

    Example:
        >>> hardware_precisions(torch.device("cpu"))
        ('32-true', 'bf16-mixed')
    """
    if device.type == "cpu":
        return ("32-true", "bf16-mixed")
    if device.type == "cuda":
        try:
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch
            bf16 = torch.cuda.is_bf16_supported()
        return ("32-true", "bf16-mixed", "16-mixed") if bf16 else ("32-true", "16-mixed")
    return ()


def parse_precisions(precisions: str | None) -> tuple[str, ...] | None:
    """Parse the ``precisions`` argument: comma-separated names, or None for all the hardware supports.

    Raises:
        ValueError: For an unknown name or an empty list.

    Example:
        >>> parse_precisions("32-true, bf16-mixed")
        ('32-true', 'bf16-mixed')
    """
    if precisions is None:
        return None
    if not isinstance(precisions, str):
        raise ValueError(
            f"precisions must be None or a comma-separated string of {list(PRECISIONS)}, got {precisions!r}"
        )
    names = [p.strip() for p in precisions.split(",") if p.strip()]
    bad = [p for p in names if p not in PRECISIONS]
    if bad or not names:
        raise ValueError(
            f"precisions must be None (all the hardware supports) or a comma-separated list of "
            f"{list(PRECISIONS)}, got {precisions!r}"
        )
    return tuple(p for p in PRECISIONS if p in names)


def skip_non_finite_step(optimizer: torch.optim.Optimizer) -> bool:
    """Drop the gradients of a step whose gradients are not all finite (the optimizer then skips it).

    Returns:
        Whether the step was skipped (one norm pass over the gradients and a host sync).
    """
    grads = gradients(optimizer)
    if not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
        return False
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None
    return True


def gradient_overflows(scaler: Any, start_scale: float | None, end_scale: float | None) -> int:
    """GradScaler overflows between two reads of its scale: the number of backoffs from one to the other.

    The scale is multiplied by the backoff factor at each overflow and grows only after
    ``growth_interval`` (2000) clean steps, so this is exact unless it also grew in between.

    Example:
        >>> gradient_overflows(torch.amp.GradScaler("cpu"), 65536.0, 8192.0)
        3
    """
    if start_scale is None or end_scale is None or not (0 < end_scale < start_scale):
        return 0
    backoff = float(scaler.get_backoff_factor())
    if not 0 < backoff < 1:
        return 0
    return max(0, round(math.log(end_scale / start_scale) / math.log(backoff)))
