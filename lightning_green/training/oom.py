"""Out-of-memory guard: a training step that runs out of memory is skipped, not fatal (torch only).

While a batch size is probed, a size too large for the device raises ``torch.OutOfMemoryError``
in the forward or backward pass. :class:`OutOfMemoryGuard` wraps a module's ``training_step``
and ``backward`` so that such an error frees memory, drops the step's gradients and reports it;
the caller decides what follows (the adaptive batch size skips the rest of the epoch and rules
the size out). One process only: under DDP an error on one rank cannot be recovered consistently.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Any

import torch


class OutOfMemoryGuard:
    """Wraps ``module.training_step`` and ``module.backward`` against ``torch.OutOfMemoryError``.

    Args:
        module: The module (a LightningModule: it has ``training_step`` and ``backward``).
        skipping: Whether steps are being skipped (the rest of an epoch that ran out of memory):
            ``training_step`` then returns None without running.
        on_oom: Called after an out-of-memory error was caught and memory freed.
    """

    def __init__(self, module: Any, skipping: Callable[[], bool], on_oom: Callable[[], None]) -> None:
        self.module = module
        original_step, original_backward = module.training_step, module.backward

        def caught() -> None:
            for param in module.parameters():
                param.grad = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            on_oom()

        @functools.wraps(original_step)
        def training_step(*args: Any, **kwargs: Any) -> Any:
            if skipping():
                return None
            try:
                return original_step(*args, **kwargs)
            except torch.OutOfMemoryError:
                caught()
                return None

        @functools.wraps(original_backward)
        def backward(*args: Any, **kwargs: Any) -> None:
            try:
                original_backward(*args, **kwargs)
            except torch.OutOfMemoryError:
                caught()

        module.training_step, module.backward = training_step, backward

    def remove(self) -> None:
        """Give the module its own methods back."""
        for name in ("training_step", "backward"):
            self.module.__dict__.pop(name, None)
