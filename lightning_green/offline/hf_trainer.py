"""Logs of the Hugging Face ``transformers`` Trainer, told apart from Lightning's and read by their own rule.

The Trainer adds ``epoch`` to every entry it logs as the *epochs completed*, a float (``1.0`` at
the end of the first epoch, ``0.33`` a third into it), and logs each entry at its ``global_step``
(the optimizer updates done): its ``MLflowCallback`` logs the entry's numbers at
``step=global_step``, and ``trainer_state.json``'s ``log_history`` (exported to CSV, one row per
entry) holds it as ``step``. Lightning logs ``epoch`` as the 0-based index of the epoch running,
so the two read alike would put every check of a Trainer log one epoch late.

A Trainer log is told by the numbers the Trainer always logs (:func:`is_hf_trainer_log`): with
every evaluation ``eval_runtime`` (``eval_<name>_runtime`` for each of several evaluation sets;
``eval_samples_per_second`` beside it), at the end of training ``train_runtime`` and
``total_flos``. Its checks are then at their ``epoch`` as logged
(fractions allowed: evaluations inside an epoch) and its steps are the Trainer's ``global_step``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from lightning_green import keys
from lightning_green.offline.csv_curves import MAX_EPOCH
from lightning_green.offline.errors import OfflineInputError

LABEL = "Hugging Face Trainer log"
"""How messages name a log the Trainer wrote."""
EPOCH_KEY = "epoch"
"""The series of the epoch each entry was logged in (the Trainer's and Lightning's, read differently)."""
TOTAL_FLOS_KEY = "total_flos"
"""Logged by the Trainer once, at the end of training."""
_OWN_RECORDS = keys.TOTAL_KWH.split("/")[0] + "/"
"""What every metric lightning_green's callbacks log begins with (``energy/``): a Lightning run's."""
_RUNTIME = re.compile(r"(?:train|eval(?:_.+)?)_runtime")
"""The Trainer's run time of its training (``train_runtime``, at the end) and of each evaluation
(``eval_runtime``; ``eval_<set>_runtime`` for each of several evaluation sets)."""


def is_hf_trainer_log(names: Iterable[str]) -> bool:
    """Whether a log holding the series ``names`` was written by the Hugging Face Trainer.

    It is when it holds the Trainer's ``total_flos`` or the run time of its training or of an
    evaluation (``train_runtime``, ``eval_runtime``, ``eval_<set>_runtime``), and no record of
    lightning_green's callbacks (``energy/...``: a Lightning run's).

    Example:
        >>> is_hf_trainer_log(["loss", "epoch", "eval_loss", "eval_runtime", "eval_samples_per_second"])
        True
        >>> is_hf_trainer_log(["epoch", "val_loss", "train_loss"])
        False
        >>> is_hf_trainer_log(["epoch", "val_loss", "eval_runtime", "energy/total_kwh"])
        False
    """
    held = set(names)
    if any(name.startswith(_OWN_RECORDS) for name in held):
        return False
    return TOTAL_FLOS_KEY in held or any(_RUNTIME.fullmatch(name) for name in held)


def epochs_completed(where: str, steps: Sequence[int], epoch: Mapping[int, float]) -> np.ndarray:
    """The epochs completed at each check of a Trainer log: its ``epoch`` as logged at the check's step.

    Args:
        where: How messages name the log.
        steps: The checks' steps (``global_step``), in order.
        epoch: ``step -> epoch`` of the log (every one of ``steps`` present).

    Returns:
        An integer array when every check is at a whole number of epochs, else a float array
        (evaluations inside an epoch: fractional progress).

    Raises:
        OfflineInputError: If a value is not a number of epochs >= 0 below ``MAX_EPOCH``, or the
            values do not increase from check to check (naming the steps).

    Example:
        >>> epochs_completed("log", [150, 300], {50: 0.33, 150: 1.0, 300: 2.0})
        array([1, 2])
        >>> epochs_completed("log", [75, 150], {75: 0.5, 150: 1.0})
        array([0.5, 1. ])
    """
    values = [float(epoch[s]) for s in steps]
    for step, value in zip(steps, values, strict=True):
        if not (math.isfinite(value) and 0 <= value < MAX_EPOCH):
            raise OfflineInputError(
                f"{where}: metric {EPOCH_KEY!r} (epochs completed) must be a number >= 0 below "
                f"{MAX_EPOCH:.0e}, got {value!r} at step {step}"
            )
    for (s0, a), (s1, b) in itertools.pairwise(zip(steps, values, strict=True)):
        if b <= a:
            raise OfflineInputError(
                f"{where}: metric {EPOCH_KEY!r} (epochs completed) must increase from check to check, "
                f"got {b!r} at step {s1} after {a!r} at step {s0}"
            )
    out = np.array(values, dtype=float)
    return out.astype(np.int64) if bool(np.all(out == np.floor(out))) else out


def require_lightning_epochs(where: str, epoch: Mapping[int, float]) -> None:
    """Refuse a log read as Lightning's whose ``epoch`` is not the whole 0-based index Lightning logs.

    Lightning logs the index of the epoch running with every metric; a fraction is another
    trainer's ``epoch`` (epochs completed, as the Hugging Face Trainer logs it), which read as
    Lightning's would put every check an epoch late. A Trainer log is recognised by the numbers
    it always logs (:func:`is_hf_trainer_log`); another is refused rather than misread.

    Raises:
        OfflineInputError: Naming the log, the value and its step.

    Example:
        >>> require_lightning_epochs("log", {9: 0.0, 19: 1.0})
        >>> try:
        ...     require_lightning_epochs("log", {50: 0.33, 150: 1.0})
        ... except OfflineInputError as e:
        ...     print(str(e)[:70])
        log: metric 'epoch' is 0.33 at step 50, not the whole 0-based epoch in
    """
    for step, value in sorted(epoch.items()):
        if math.isfinite(value) and value != math.floor(value):
            raise OfflineInputError(
                f"{where}: metric {EPOCH_KEY!r} is {value!r} at step {step}, not the whole 0-based epoch "
                "index Lightning logs: not read as a Lightning log (a Hugging Face Trainer log is read "
                "as one when it holds the Trainer's eval_runtime, train_runtime or total_flos)"
            )
