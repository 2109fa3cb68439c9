"""What a batch-size switch cannot work with, and the message saying what to change (no Lightning).

AdaptiveBatchSize refuses these at fit start (``AdaptationUnsupportedError``) rather than crash
at a switch: the checks take plain values read from the Trainer, so they are testable alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from lightning_green.checks import check_int
from lightning_green.training.learning_rates import raises_past_its_end


def check_bounds(min_batch_size: int | None, max_batch_size: int | None) -> None:
    """Check AdaptiveBatchSize's bounds: integers >= 1 (or None), ``min <= max``.

    Raises:
        ValueError: Naming the argument at fault.
    """
    for name, value in (("min_batch_size", min_batch_size), ("max_batch_size", max_batch_size)):
        if value is not None:
            check_int(name, value, 1)
    if min_batch_size is not None and max_batch_size is not None and min_batch_size > max_batch_size:
        raise ValueError(
            f"min_batch_size must be <= max_batch_size, got min_batch_size={min_batch_size!r} "
            f"and max_batch_size={max_batch_size!r}"
        )


def loader_problem(
    attr_name: str, from_module: bool, has_attr: bool, value: Any = None, read_only_in: str | None = None
) -> str | None:
    """Why the train dataloader's batch size cannot be changed, or None when it can.

    Args:
        attr_name: The attribute the dataloader reads its batch size from.
        from_module: Whether the train dataloader comes from the module or datamodule.
        has_attr: Whether the module, its hparams or the datamodule has ``attr_name``.
        value: The attribute's value (checked when it exists).
        read_only_in: The class where ``attr_name`` is a property without a setter, if any.

    Example:
        >>> loader_problem("batch_size", True, True, 32) is None
        True
    """
    if not from_module:
        return (
            "AdaptiveBatchSize cannot change the batch size of dataloaders passed directly to "
            "Trainer.fit(train_dataloaders=...). Build the train dataloader in your LightningDataModule "
            f"or LightningModule `train_dataloader()` from an attribute `{attr_name}` (or set "
            "attr_name) and pass datamodule=..., or remove AdaptiveBatchSize."
        )
    if not has_attr:
        return (
            f"AdaptiveBatchSize(attr_name={attr_name!r}): no attribute {attr_name!r} in the "
            "model, model.hparams or the datamodule, so there is no batch size to change. Give your "
            f"datamodule or model a `{attr_name}` attribute that train_dataloader() reads."
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        who = f"AdaptiveBatchSize(attr_name={attr_name!r})"
        return f"{who}: the attribute must be an integer >= 1, got {value!r}."
    if read_only_in is not None:
        return (
            f"AdaptiveBatchSize(attr_name={attr_name!r}): {read_only_in}.{attr_name} is a property without "
            "a setter, so the batch size cannot be changed (a switch would fail with AttributeError). "
            f"Give the property a setter (for instance one that writes self.hparams.{attr_name}), make "
            f"{attr_name} a plain attribute that train_dataloader() reads, or remove AdaptiveBatchSize."
        )
    return None


def switch_problem(
    val_check_interval: Any,
    per_epoch_validation: bool,
    step_schedulers: Iterable[Any],
    grid: Sequence[int],
    initial: int,
) -> str | None:
    """What a switch within ``grid`` would crash, or None.

    Larger sizes make epochs shorter (fewer batches): an integer ``val_check_interval`` with
    per-epoch validation would outlast the epoch (a fraction of the epoch, or a time-based interval,
    follows the batches per epoch or does not count batches at all). Smaller sizes add optimizer steps: a
    ``OneCycleLR`` stepped per step raises past ``total_steps``.

    Args:
        val_check_interval: The Trainer's ``val_check_interval``; None when it is time-based.
        per_epoch_validation: Whether validation runs within epochs (``check_val_every_n_epoch``
            set and validation batches > 0).
        step_schedulers: The learning-rate schedulers stepped per optimizer step.
        grid: The candidate batch sizes.
        initial: The batch size the run starts with.
    """
    integer = isinstance(val_check_interval, int) and not isinstance(val_check_interval, bool)
    if integer and per_epoch_validation and max(grid) > initial:
        return (
            f"AdaptiveBatchSize cannot work with Trainer(val_check_interval={val_check_interval}) (an "
            "integer: validate every that many batches within an epoch): a larger batch size makes epochs "
            "shorter, and Lightning stops the run when an epoch has fewer batches than the interval. "
            "Give val_check_interval as a fraction of the epoch (e.g. 0.25) or 1.0, validate across "
            f"epochs with check_val_every_n_epoch=None, or set max_batch_size={initial} (no larger "
            "sizes)."
        )
    for scheduler in step_schedulers:
        if raises_past_its_end(scheduler) and min(grid) < initial:
            return (
                f"AdaptiveBatchSize cannot work with {type(scheduler).__name__} stepped per "
                "optimizer step: OneCycleLR is sized in total_steps and raises once stepped past them, "
                "and smaller batch sizes take more steps per epoch. Step it per epoch (interval='epoch', "
                "total_steps=max_epochs), use a schedule that tolerates a changing number of steps, or "
                f"set min_batch_size={initial} (no smaller sizes; the schedule then does not finish)."
            )
    return None


def loader_ignored_switch(first_batch: int, new: int, previous: int, loader_batches: int | None) -> bool:
    """Whether the first batch after a switch to ``new`` shows that the train dataloader did not follow it.

    The first batch of an epoch holds ``new`` samples per device unless the (per-device) dataset
    is smaller: then the loader yields one batch of all of it.

    Args:
        first_batch: Samples in the first training batch after the switch (per device).
        new: The per-device batch size switched to.
        previous: The batch size before the switch.
        loader_batches: Batches the rebuilt train dataloader yields per epoch (its ``len``), None
            when it has no length (then a first batch of the previous size tells).

    Example:
        >>> loader_ignored_switch(32, 64, 32, 57), loader_ignored_switch(64, 64, 32, 29)
        (True, False)
        >>> loader_ignored_switch(20, 64, 32, 1)  # 20 samples in all: one batch of them
        False
    """
    # a first batch smaller than the new size: the whole dataset in one batch
    whole_dataset = first_batch < new and (
        loader_batches == 1 or (loader_batches is None and first_batch != previous)
    )
    return first_batch != new and not whole_dataset


def could_be_partial_last(
    first_batch: int, new: int, batches_done: int, batches_per_epoch: float | None
) -> bool:
    """Whether the first batch after a resume inside an epoch may be the epoch's last, partial batch.

    A loader Lightning restores mid-epoch (one with ``state_dict``/``load_state_dict``) goes on
    where it was: when only the last batch was left, a ``drop_last=False`` loader yields the
    remainder, fewer than ``new`` samples, though it follows the size. Such a batch tells nothing;
    the next epoch's first batch does.

    Args:
        first_batch: Samples in the batch (per device).
        new: The per-device batch size the loader should yield.
        batches_done: Batches of the epoch trained before this one (0: the epoch's first batch).
        batches_per_epoch: Batches in an epoch; None or infinite when the loader has no length
            (then any batch after the first may be the last).

    Example:
        >>> could_be_partial_last(30, 64, 22, 23), could_be_partial_last(30, 64, 0, 23)
        (True, False)
        >>> could_be_partial_last(30, 64, 10, 23), could_be_partial_last(30, 64, 10, None)
        (False, True)
    """
    if batches_done <= 0 or first_batch >= new:
        return False
    if batches_per_epoch is None or not math.isfinite(batches_per_epoch):
        return True
    return batches_done + 1 >= batches_per_epoch


def loader_ignored_message(
    attr_name: str, previous: int, new: int, first_batch: int, epoch: int, lr_factor: float
) -> str:
    """The warning when the train dataloader did not follow a switch: what happened and what to change.

    Example:
        >>> "train_dataloader()" in loader_ignored_message("batch_size", 32, 64, 32, 2, 2.0)
        True
    """
    return (
        f"AdaptiveBatchSize: the train dataloader did not follow {attr_name}={new}: the first batch of "
        f"epoch {epoch} has {first_batch} samples per device. It "
        "reuses a DataLoader built once (in setup() or __init__, returned again by train_dataloader()), "
        f"so changing {attr_name} changes nothing. AdaptiveBatchSize stops adapting for the rest of this "
        f"run and trains at {attr_name}={previous} (the learning-rate scaling x{lr_factor:.3g} undone). "
        f"To adapt the batch size, build the DataLoader in train_dataloader() from self.{attr_name} "
        "each time it is called."
    )
