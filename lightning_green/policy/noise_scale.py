"""The gradient noise scale: the batch size beyond which bigger batches stop paying.

McCandlish et al. 2018, "An Empirical Model of Large-Batch Training" (arXiv:1812.06162). With
``G`` the true gradient and ``Σ`` the per-example gradient covariance, the *simple noise
scale* is

    B_noise = tr(Σ) / |G|²

and the steps ``S`` and examples ``E`` needed to reach a given loss satisfy
``(S / S_min - 1)(E / E_min - 1) = 1`` with ``S = S_min (1 + B_noise / B)`` and
``E = E_min (1 + B / B_noise)``: below ``B_noise`` a bigger batch buys fewer steps for almost
the same number of examples; above it, the examples (and so the energy) needed grow about
linearly with the batch size.

Neither ``tr(Σ)`` nor ``|G|²`` is observed directly. A minibatch gradient of ``B`` examples has
``E|G_B|² = |G|² + tr(Σ) / B``, so squared norms measured at two batch sizes
``B_small < B_big`` give unbiased estimates of both (the paper's appendix A.1)::

    |G|²  ≈ (B_big |G_big|² - B_small |G_small|²) / (B_big - B_small)
    tr(Σ) ≈ (|G_small|² - |G_big|²) / (1 / B_small - 1 / B_big)

Each single estimate is very noisy; the paper recommends averaging numerator and denominator
*separately* over many steps (an exponential moving average of each) and only then taking
their ratio - the ratio of averages, not the average of ratios. :class:`GradientNoiseScale`
does that.

Where the two batch sizes come from:

- DDP: ``B_small`` is one rank's batch and ``|G_small|²`` the squared norm of the local
  gradient before the all-reduce (averaged over ranks, which only lowers its variance);
  ``B_big`` is the global batch and ``|G_big|²`` the squared norm of the all-reduced gradient.
- One process: split the batch into ``k`` micro-batches (gradient accumulation does it
  already): ``|G_small|²`` is the mean squared norm of the micro-batch gradients, ``|G_big|²``
  the squared norm of their mean (:meth:`GradientNoiseScale.update_from_micro_batches`).
  Successive steps can serve as micro-batches too, as long as the parameters move little
  between them.

Everything here takes plain floats: computing gradient norms is the caller's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_green.checks import check_fraction_below_1, check_int, check_non_negative, check_positive
from lightning_green.policy._util import check_state_version

__all__ = ["GradientNoiseScale", "noise_scale_components"]

_STATE_VERSION = 1


def noise_scale_components(
    sq_norm_small: float,
    sq_norm_big: float,
    batch_size_small: float,
    batch_size_big: float,
) -> tuple[float, float]:
    """Unbiased single-step estimates of ``|G|²`` and ``tr(Σ)`` from two batch sizes.

    Args:
        sq_norm_small: ``|G_small|²``, the squared L2 norm of a gradient averaged over
            ``batch_size_small`` examples (or the mean of several such squared norms).
        sq_norm_big: ``|G_big|²``, the squared L2 norm of a gradient averaged over
            ``batch_size_big`` examples.
        batch_size_small: Examples behind ``sq_norm_small``.
        batch_size_big: Examples behind ``sq_norm_big``; must be larger than
            ``batch_size_small``.

    Returns:
        ``(grad_sq_norm, trace_cov)``: estimates of ``|G|²`` and ``tr(Σ)``. Either can come
        out negative on a single step; only their averages are meaningful.

    Raises:
        ValueError: For a negative or non-finite squared norm, a non-positive batch size, or
            ``batch_size_big <= batch_size_small``.

    Example:
        >>> # |G|² = 1, tr(Σ) = 8: E|G_B|² = 1 + 8/B -> 3.0 at B=4 and 1.5 at B=16.
        >>> noise_scale_components(3.0, 1.5, 4, 16)
        (1.0, 8.0)
    """
    small = check_non_negative("sq_norm_small", sq_norm_small)
    big = check_non_negative("sq_norm_big", sq_norm_big)
    b_small = check_positive("batch_size_small", batch_size_small)
    b_big = check_positive("batch_size_big", batch_size_big)
    if b_big <= b_small:
        raise ValueError(
            f"batch_size_big must be larger than batch_size_small, got batch_size_big={batch_size_big!r} "
            f"and batch_size_small={batch_size_small!r}"
        )
    grad_sq_norm = (b_big * big - b_small * small) / (b_big - b_small)
    trace_cov = (small - big) / (1.0 / b_small - 1.0 / b_big)
    return grad_sq_norm, trace_cov


class GradientNoiseScale:
    """Running estimate of the simple gradient noise scale ``B_noise = tr(Σ) / |G|²``.

    Keeps bias-corrected exponential moving averages of the two components separately and
    reports their ratio, as McCandlish et al. recommend. Pure Python floats: the same updates
    give the same estimate on every rank and after a state round trip.

    Args:
        ema_decay: Weight of the past in each EMA update, in ``[0, 1)``. The default 0.99
            averages over roughly the last 100 updates: single-step estimates are very noisy
            (the ``|G|²`` estimate is often negative on its own), while ``B_noise`` itself
            drifts only slowly over training, so a long memory costs little.
        min_updates: Updates needed before :attr:`b_noise` reports a value. Default 10.

    Raises:
        ValueError: For an ``ema_decay`` outside ``[0, 1)`` or a negative ``min_updates``.

    Example:
        >>> gns = GradientNoiseScale(min_updates=1)
        >>> gns.update(sq_norm_small=3.0, sq_norm_big=1.5, batch_size_small=4, batch_size_big=16)
        >>> gns.b_noise
        8.0
    """

    def __init__(self, ema_decay: float = 0.99, min_updates: int = 10) -> None:
        self.ema_decay = check_fraction_below_1("ema_decay", ema_decay)
        self.min_updates = check_int("min_updates", min_updates, 0)
        self._grad_sq_ema = 0.0
        self._trace_ema = 0.0
        self._weight = 0.0  # 1 - decay**n, the bias correction of both EMAs
        self._num_updates = 0

    def update(
        self,
        sq_norm_small: float,
        sq_norm_big: float,
        batch_size_small: float,
        batch_size_big: float,
    ) -> None:
        """Add one measurement (one step) of squared gradient norms at two batch sizes.

        Args:
            sq_norm_small: ``|G_small|²`` at ``batch_size_small`` examples (per rank under DDP).
            sq_norm_big: ``|G_big|²`` at ``batch_size_big`` examples (all-reduced under DDP).
            batch_size_small: Examples behind ``sq_norm_small``.
            batch_size_big: Examples behind ``sq_norm_big``, larger than ``batch_size_small``.

        Raises:
            ValueError: As :func:`noise_scale_components`.
        """
        grad_sq, trace = noise_scale_components(sq_norm_small, sq_norm_big, batch_size_small, batch_size_big)
        d = self.ema_decay
        self._grad_sq_ema = d * self._grad_sq_ema + (1.0 - d) * grad_sq
        self._trace_ema = d * self._trace_ema + (1.0 - d) * trace
        self._weight = d * self._weight + (1.0 - d)
        self._num_updates += 1

    def update_from_micro_batches(
        self, micro_sq_norms: Sequence[float], mean_sq_norm: float, micro_batch_size: float
    ) -> None:
        """Add one step measured as ``k`` equal micro-batches (gradient accumulation).

        Args:
            micro_sq_norms: Squared norms of the ``k >= 2`` micro-batch gradients, each the mean
                over ``micro_batch_size`` examples.
            mean_sq_norm: Squared norm of the mean of those ``k`` gradients (the accumulated
                gradient, normalised to a mean over ``k * micro_batch_size`` examples).
            micro_batch_size: Examples per micro-batch.

        Raises:
            ValueError: For fewer than two micro-batches, or as :func:`noise_scale_components`.

        Example:
            >>> gns = GradientNoiseScale(min_updates=1)
            >>> gns.update_from_micro_batches([2.5, 3.5], mean_sq_norm=2.0, micro_batch_size=4)
            >>> gns.b_noise
            8.0
        """
        norms = list(micro_sq_norms)
        if len(norms) < 2:
            raise ValueError(f"micro_sq_norms needs at least 2 micro-batches, got {len(norms)}")
        mean_small = math.fsum(check_non_negative("micro_sq_norms", n) for n in norms) / len(norms)
        b_small = check_positive("micro_batch_size", micro_batch_size)
        self.update(mean_small, mean_sq_norm, b_small, b_small * len(norms))

    @property
    def num_updates(self) -> int:
        """Updates seen so far."""
        return self._num_updates

    @property
    def grad_sq_norm(self) -> float | None:
        """Bias-corrected EMA of the ``|G|²`` estimate; None before the first update."""
        return self._grad_sq_ema / self._weight if self._weight > 0 else None

    @property
    def trace_cov(self) -> float | None:
        """Bias-corrected EMA of the ``tr(Σ)`` estimate; None before the first update."""
        return self._trace_ema / self._weight if self._weight > 0 else None

    @property
    def b_noise(self) -> float | None:
        """The noise scale ``tr(Σ) / |G|²`` in examples, or None when it cannot be told yet.

        None before ``min_updates`` updates, and when neither average is positive. When the
        ``|G|²`` average is still ``<= 0`` while ``tr(Σ)`` is positive, the gradient signal is
        below what the noise lets one resolve: the noise scale is very large and the result is
        ``math.inf`` (any batch size in range is below it). A negative ``tr(Σ)`` average reads
        as 0.
        """
        if self._num_updates < max(self.min_updates, 1):
            return None
        grad_sq, trace = self._grad_sq_ema, self._trace_ema  # the bias correction cancels in the ratio
        if grad_sq <= 0.0:
            return math.inf if trace > 0.0 else None
        return max(trace, 0.0) / grad_sq

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the EMAs, their bias correction and the update count."""
        return {
            "version": _STATE_VERSION,
            "ema_decay": self.ema_decay,
            "min_updates": self.min_updates,
            "grad_sq_ema": self._grad_sq_ema,
            "trace_ema": self._trace_ema,
            "weight": self._weight,
            "num_updates": self._num_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; later updates then give the same estimates.

        Args:
            state: What :meth:`state_dict` returned (possibly through JSON).

        Raises:
            ValueError: For a state of another version.
        """
        check_state_version(state, _STATE_VERSION)
        self.ema_decay = float(state["ema_decay"])
        self.min_updates = int(state["min_updates"])
        self._grad_sq_ema = float(state["grad_sq_ema"])
        self._trace_ema = float(state["trace_ema"])
        self._weight = float(state["weight"])
        self._num_updates = int(state["num_updates"])
