"""How a logged run's stopper stopped it, from its records of its checks, where no tag says so.

EnergyAwareEarlyStopping tags an MLflow run with its stop (``lightning_green.stop_reason``,
``lightning_green.stopped_epoch``); a Lightning ``CSVLogger`` or ``TensorBoardLogger`` log has no
tags, and holds the stop only in the ``energy_summary.json`` EnergyMonitor writes beside it (none
with ``summary=False``, or after a killed run). What every log holds are the stopper's records of
each check it decided on (``energy/check_kwh``, ``energy/check_epochs``, ``energy/check_metric``)
and the arguments it ran with: replayed (:func:`~lightning_green.offline.engine.replay_curve`, the
policy the callback runs, fed what it was fed), they give the decision it made at its last check.
``report`` reads the stop from them (:func:`replayed_stop`) as ``replay`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lightning_green import keys
from lightning_green.offline.engine import config_for, replay_curve
from lightning_green.offline.mlflow_curves import LoggedRun, curve_of_run


@dataclass(frozen=True)
class ReplayedStop:
    """A stop read from the stopper's records of its checks.

    Attributes:
        reason: The stop reason (``energy_budget``, ``marginal_gain`` ...), as the tag holds it;
            ``none`` (:data:`~lightning_green.keys.NO_STOP`) for a run that reached its planned end
            unstopped.
        stopped_epoch: The epoch it stopped in, 0-based (Lightning's ``stopped_epoch``, the tag);
            ``None`` for a run not stopped.
    """

    reason: str
    stopped_epoch: int | None


def replayed_stop(run: LoggedRun) -> ReplayedStop | None:
    """The stop of ``run`` as its stopper decided it at its last check, from its records of its checks.

    The run's recorded checks are replayed with the arguments it recorded (as ``lightning-green
    replay`` replays them against kWh); the run was stopped there when that replay stops at its
    last check (a stopper that stops ends the fit: no check follows its stop). A stop the
    Trainer's recorded floor (``Trainer(min_epochs/min_steps)``) held back is replayed as Lightning
    held it (:func:`~lightning_green.offline.engine.floor_reached`): the run ends at the first
    check at the floor, its stopped epoch that of the last check that decided to stop. A run whose
    last check reached the recorded planned end (``lightning_green.max_epochs``, in epochs or a
    fraction of one for a plan in steps) without a stop there ran to its end: reason ``none``, as
    the stopper tags such a run. ``None`` when the run holds no records of the stopper's checks or
    none of its arguments (a replay with the defaults would not be its decision), or the replay
    stops elsewhere, or not at all before the planned end (a run killed, or ended by another
    callback: the log cannot tell which).

    Args:
        run: A logged run (an MLflow run, a Lightning log).

    Returns:
        The stop, or ``None``.

    Raises:
        OfflineInputError: When the records are malformed, as ``replay`` refuses them.
    """
    params = run.params
    monitor = params.get(keys.PARAM_STOPPING_MONITOR) or params.get(keys.PARAM_MONITOR)
    if not monitor or not run.history(keys.CHECK_KWH):
        return None
    curve = curve_of_run(run)  # the metric and the cost replay reads by default
    if curve is None or not curve.recorded_config or curve.arguments_missing:
        return None
    result = replay_curve(curve, config_for(curve))
    last = len(curve.epochs) - 1
    at_last = float(result.stop_epoch) == float(curve.epochs[last]) and result.cost_at_stop == float(
        curve.costs[last]
    )
    if result.stop_reason is None:
        ran_to_end = _reached_plan(curve.epochs, curve.planned_max_epochs)
        return ReplayedStop(keys.NO_STOP, None) if ran_to_end else None
    if not at_last:
        return None
    # The epoch of the check whose decision the stop is (the last renewal of a stop the Trainer's
    # floor held back, as the callback's stopped_epoch): epochs completed at it, whole at an epoch's
    # end (epoch 5 completed: 0-based epoch 4), a fraction inside one (1.98: in 0-based epoch 1).
    decided = last if result.stop_check is None else result.stop_check
    return ReplayedStop(result.stop_reason.value, max(0, math.ceil(float(curve.epochs[decided])) - 1))


def _reached_plan(epochs: np.ndarray, planned: int | float | None) -> bool:
    """Whether the last check was the last the planned run had room for.

    The next check, as far after the last as the last was after the one before (one epoch, a
    fraction of one with several checks an epoch, several with ``check_val_every_n_epoch``), would
    have fallen past the planned end (epochs, a fraction for a plan in steps).

        >>> _reached_plan(np.array([1.0, 2.0, 3.0]), 3), _reached_plan(np.array([1.0, 2.0]), 3)
        (True, False)
        >>> _reached_plan(np.array([3.49, 3.73, 3.98]), 4), _reached_plan(np.array([2.0, 4.0]), 5)
        (True, True)
    """
    if planned is None or not len(epochs):
        return False
    last = float(epochs[-1])
    spacing = last - float(epochs[-2]) if len(epochs) > 1 else 0.0
    return last + spacing > float(planned) * (1 + 1e-9) or last >= float(planned) * (1 - 1e-9)
