"""Where the checks of a logged run fall in training, from Lightning's ``epoch`` series and the steps.

A run logged without the stopper's record of its checks (``energy/check_epochs``: a plain Lightning
log, or one of an :class:`~lightning_green.EnergyMonitor` alone) is placed by Lightning's ``epoch``
series, the 0-based index of the running epoch, which Lightning logs with every row. A check alone
in its epoch closes it: ``epoch + 1`` epochs completed. Several checks in one epoch
(``val_check_interval < 1``) are placed by the training completed at each, as the callback places
its own checks (:func:`~lightning_green.training.check_progress.check_place`): ``epoch + done / L``,
``done`` the optimizer steps done in the epoch (Lightning logs a check at the optimizer steps done,
minus one) and ``L`` the optimizer steps of an epoch, where the log determines ``L`` exactly
(:func:`steps_per_epoch`). Where it does not, the run is refused (:func:`epochs_at_checks`): a
repeated whole epoch would be replayed, silently wrong. Plain data; no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from lightning_green.offline.errors import OfflineInputError


def steps_per_epoch(checks: Sequence[tuple[int, int]], rows: Mapping[int, float]) -> int | None:
    """The optimizer steps of an epoch of a Lightning log, where its steps and epochs determine it.

    Every row Lightning logs is at a step of the epoch it names (logged step ``s`` in 0-based epoch
    ``e`` of ``L`` steps: ``e * L <= s <= (e + 1) * L - 1``); a row at an epoch's last step (an
    epoch's ``on_epoch`` metrics) bounds ``L`` from below, one at an epoch's first steps from
    above. ``L`` is determined when these bounds leave one value, or when one value in them puts
    the checks at the same steps of every epoch they are in (the validations of a
    ``val_check_interval`` below 1, which Lightning runs at the same batches of each epoch; the
    last epoch may end early, after its first checks).

    Args:
        checks: ``(logged step, 0-based epoch)`` of each check, in the order of the steps.
        rows: ``logged step -> 0-based epoch`` of every row of the log (its ``epoch`` series); a
            value that is no whole number >= 0 tells nothing and is passed over.

    Returns:
        ``L``, or ``None`` where the log leaves it undetermined (or contradicts every value).

    Example:
        >>> checks = [(21, 0), (43, 0), (66, 1), (88, 1)]  # two checks an epoch of 45 steps
        >>> steps_per_epoch(checks, dict(checks))
        45
        >>> print(steps_per_epoch(checks[:2], dict(checks[:2])))  # one epoch: any length from 44
        None
    """
    low, high = 1, math.inf
    for step, value in rows.items():
        if not (math.isfinite(value) and value >= 0 and value == math.floor(value)):
            continue
        epoch = int(value)
        low = max(low, -(-(step + 1) // (epoch + 1)))  # ceil((step + 1) / (epoch + 1))
        if epoch:
            high = min(high, step // epoch)
    if low > high:
        return None
    if low == high:
        return low
    by_epoch: dict[int, list[int]] = {}
    for step, epoch in checks:
        by_epoch.setdefault(epoch, []).append(step)
    epochs = sorted(by_epoch)
    if len(epochs) < 2:
        return None
    first, second = epochs[0], epochs[1]
    span = by_epoch[second][0] - by_epoch[first][0]  # each epoch's first check: the same batch
    if span <= 0 or span % (second - first):
        return None
    length = span // (second - first)
    if not low <= length <= high:
        return None
    offsets = [[step - epoch * length for step in by_epoch[epoch]] for epoch in epochs]
    full, last = offsets[0], offsets[-1]
    if any(o != full for o in offsets[1:-1]) or last != full[: len(last)]:
        return None
    return length


def epochs_at_checks(
    where: str, metric: str, checks: Sequence[tuple[int, int]], rows: Mapping[int, float]
) -> np.ndarray:
    """The epochs completed at each check of a logged run placed by Lightning's ``epoch`` series.

    One check an epoch: ``epoch + 1`` (an integer array), as always. Several in an epoch: the
    training completed at each, ``epoch + done / L`` (:func:`steps_per_epoch`; whole where a
    check is at its epoch's last step).

    Args:
        where: How messages name the run.
        metric: The monitored metric (its checks), as messages name it.
        checks: ``(logged step, 0-based epoch)`` of each check, in the order of the steps.
        rows: ``logged step -> 0-based epoch`` of every row of the log (:func:`steps_per_epoch`).

    Returns:
        The epochs completed at each check: integers, or floats where a check is inside an epoch.

    Raises:
        OfflineInputError: Where an epoch holds several checks and the log does not determine the
            steps of an epoch, naming the run, the epoch and what to do instead.

    Example:
        >>> checks = [(21, 0), (43, 0), (66, 1), (88, 1)]
        >>> epochs_at_checks("log", "val_loss", checks, {**dict(checks), 44: 0, 89: 1}).round(4).tolist()
        [0.4889, 0.9778, 1.4889, 1.9778]
        >>> epochs_at_checks("log", "val_loss", [(44, 0), (89, 1)], {44: 0, 89: 1}).tolist()
        [1, 2]
    """
    epochs = [epoch for _, epoch in checks]
    if len(set(epochs)) == len(epochs):
        return np.array([epoch + 1 for epoch in epochs])
    length = steps_per_epoch(checks, rows)
    if length is None:
        crowded = next(e for e in epochs if epochs.count(e) > 1)
        raise OfflineInputError(
            f"{where}: {epochs.count(crowded)} checks of {metric!r} in epoch {crowded} (0-based), and "
            "the log does not determine the optimizer steps of an epoch to place them within it (it "
            "does with checks at the same steps of two epochs or more); "
            "replay a curves CSV with each check's progress in fractional epochs (epoch = optimizer "
            "steps done / steps per epoch), or --monitor a metric logged once an epoch"
        )
    places = []
    for step, epoch in checks:
        done = step + 1 - epoch * length  # 1..length: the bounds of steps_per_epoch
        places.append(float(epoch + 1) if done >= length else epoch + done / length)
    values = np.array(places, dtype=float)
    return values.astype(np.int64) if bool(np.all(values == np.floor(values))) else values
