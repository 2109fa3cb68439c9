"""Gradient pairs of consecutive optimizer steps: the inputs of the gradient noise scale (torch only).

McCandlish et al. 2018 (appendix A.1) estimate the gradient noise scale from squared gradient
norms at two batch sizes. Consecutive optimizer steps serve as the two halves of a batch of
``2B``: the mean of their squared norms is ``|G_B|²`` and the squared norm of their mean is
``|G_2B|²`` (the parameters move by one step in between, which biases the estimate slightly
upwards at large learning rates). :class:`GradientPairs` keeps one step's gradients every
``every`` steps and compares them with the next step's; the other steps compare two integers.
The estimator itself is :class:`~lightning_green.policy.noise_scale.GradientNoiseScale`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

MAX_SAVED_GRADIENT_ELEMENTS = 4_000_000
"""Largest kept gradient (elements, all parameters together; 16 MB in float32) a checkpoint holds so
that a resumed run completes the pair it started. Larger models lose that one pair on resume."""


def gradients(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The gradients of an optimizer's parameters that have one."""
    return [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


def _squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(torch._foreach_norm(tensors)).double().pow(2).sum()


@dataclass
class PairsSoFar:
    """The gradient pairs a checkpoint caught (:meth:`GradientPairs.so_far`): a resume goes on from them.

    Attributes:
        count: Pairs completed since the last :meth:`GradientPairs.take`.
        small: Their sum of ``|G_B|²``.
        big: Their sum of ``|G_2B|²``.
        first_step: The optimizer step whose gradients wait for the next step's, to make a pair; -1: none.
        first: Those gradients, as CPU tensors (``torch.load(weights_only=True)`` loads them: a pair
            compares whole gradients, which no plain number summarises); None when none wait.
    """

    count: int = 0
    small: float = 0.0
    big: float = 0.0
    first_step: int = -1
    first: list[Any] | None = None


class GradientPairs:
    """Sums of ``(|G_B|², |G_2B|²)`` over gradient pairs of consecutive steps (on the device, no sync).

    Args:
        every: A pair starts every this many optimizer steps.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([w], lr=0.1)
        >>> pairs = GradientPairs(every=4)
        >>> for step, grad in [(4, [1.0, 0.0]), (5, [0.0, 1.0])]:
        ...     w.grad = torch.tensor(grad)
        ...     pairs.offer(step, opt)
        >>> count, small, big = pairs.take()  # |G_B|² = mean(1, 1); |G_2B|² = |(0.5, 0.5)|²
        >>> count, small, round(big, 6)
        (1, 1.0, 0.5)
    """

    def __init__(self, every: int = 4) -> None:
        self.every = every
        self.reset()

    def reset(self) -> None:
        """Forget the kept gradient and the sums."""
        self.drop()
        self._sum: torch.Tensor | None = None
        self._carried = (0.0, 0.0)  # the sums restored from a checkpoint, not taken yet
        self.count = 0

    def drop(self) -> None:
        """Forget a kept first gradient (the next pair starts afresh)."""
        self._first: list[torch.Tensor] | None = None
        self._first_step = -1
        self._first_restored = False  # kept gradients from a checkpoint: checked against the next step's

    def so_far(self, max_saved_elements: int = MAX_SAVED_GRADIENT_ELEMENTS) -> PairsSoFar:
        """The sums not taken yet and a kept first gradient (a CPU copy), for a checkpoint (one sync).

        Args:
            max_saved_elements: A kept gradient of more elements is left out (the pair it would
                have made is lost on resume: one of many), so that a large model's checkpoint does
                not grow by a copy of its gradients.
        """
        small, big = self._sums()
        first = None
        if self._first is not None and sum(g.numel() for g in self._first) <= max_saved_elements:
            first = [g.detach().to("cpu", copy=True) for g in self._first]
        return PairsSoFar(self.count, small, big, self._first_step if first is not None else -1, first)

    def restore(self, saved: PairsSoFar) -> None:
        """Go on from :meth:`so_far`: its sums count at the next take, its gradients pair with the next."""
        self.reset()
        self.count = int(saved.count)
        self._carried = (float(saved.small), float(saved.big))
        if saved.first is not None and saved.first_step >= 0:
            self._first, self._first_step = list(saved.first), int(saved.first_step)
            self._first_restored = True

    def offer(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """See the gradients of optimizer step ``step`` (before the optimizer uses them)."""
        first, first_step, restored = self._first, self._first_step, self._first_restored
        if first is None:
            if step % self.every == 0:
                grads = gradients(optimizer)
                if grads:
                    self._first, self._first_step = [g.detach().clone() for g in grads], step
            return
        self.drop()
        if step != first_step + 1:
            return
        grads = gradients(optimizer)
        if len(first) != len(grads):
            return
        if restored:  # saved on the CPU: on the gradients' device, for the same parameters only
            if any(f.shape != g.shape for f, g in zip(first, grads, strict=True)):
                return
            first = [f.to(g.device, g.dtype, copy=True) for f, g in zip(first, grads, strict=True)]
        with torch.no_grad():
            small = (_squared_norm(first) + _squared_norm(grads)) / 2.0
            torch._foreach_add_(first, grads)
            pair = torch.stack([small, _squared_norm(first) / 4.0])
        self._sum = pair if self._sum is None else self._sum + pair
        self.count += 1

    def take(self) -> tuple[int, float, float]:
        """``(pairs, sum of |G_B|², sum of |G_2B|²)`` since the last take (one device sync); then zero."""
        small, big = self._sums()
        count = self.count
        self._sum, self._carried, self.count = None, (0.0, 0.0), 0
        return count, small, big

    def _sums(self) -> tuple[float, float]:
        """The sums of ``|G_B|²`` and ``|G_2B|²`` since the last take, restored ones included (one sync)."""
        small, big = [float(v) for v in self._sum.cpu().tolist()] if self._sum is not None else (0.0, 0.0)
        return small + self._carried[0], big + self._carried[1]
