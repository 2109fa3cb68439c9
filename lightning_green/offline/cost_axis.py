"""A past run against another cost than cumulative kWh: ``lightning-green report --cost-key``.

``replay --cost-key KEY`` puts each check of a run against the cost ``KEY`` (``step``: the
optimizer steps, for a run logged without energy; another running total the run logged); the
report draws the same curve, read by the same reader
(:func:`~lightning_green.offline.mlflow_curves.curve_of_run`, so the same refusals: a cost that
decreases, a ``--mode`` that contradicts the recorded direction), and gives its figures in that
cost: the best value and the cost up to it and after it, and what a stop left unrun (replay's
projection, :attr:`~lightning_green.offline.curve.Curve.cost_not_run`). The energy the run logged
stays energy (kWh, per epoch and in total). Plain data; no drawing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning_green import keys
from lightning_green.offline.checks import COST_KEYS_ALLOWED
from lightning_green.offline.errors import OfflineInputError
from lightning_green.offline.mlflow_curves import (
    Direction,
    LoggedRun,
    cost_unit,
    cumulative_costs,
    curve_of_run,
)


def cost_fields(
    run: LoggedRun, direction: Direction | None, cost_key: str, epoch_steps: Sequence[int]
) -> tuple[dict[str, Any], list[float | None]]:
    """The summary's ``cost`` (the curve drawn against ``cost_key`` and its figures), and each epoch's cost.

    Args:
        run: The run (an MLflow run, a Lightning log).
        direction: The metric drawn and its direction (``None``: energy only, no curve).
        cost_key: The cost (``--cost-key``): ``step``, or a running total the run logged.
        epoch_steps: The steps of the run's epoch records (its ``energy/total_kwh``), in order.

    Returns:
        ``(cost, epoch_costs)``. ``cost`` holds ``key``, ``unit`` (``steps``, ``kWh``, else the
        key) and ``total`` (the cost's last value), and with a metric drawn ``points`` (replay's
        curve: ``epochs`` completed, ``cost``, ``metric`` at each check), ``best_metric``,
        ``best_epoch`` (0-based, as the summary's), ``to_best`` and ``after_best``, and for a run
        its own stopper stopped before its planned end ``at_stop`` and ``not_run_projected``
        (replay's projection of the rest of the planned run), all in ``unit``. ``epoch_costs``
        is the cost at each of ``epoch_steps`` (``None`` where the cost was not logged there).

    Raises:
        OfflineInputError: When the run logged no ``cost_key`` (naming what the option may
            name), the cost decreases (replay's refusal), the metric is not logged, or the metric
            and the cost share no step.
        RecordedParamError: When the direction contradicts the run's record (as replay).
    """
    where = run.label
    series = run.history(cost_key)
    if not series:
        raise OfflineInputError(f"{where} logged no {cost_key!r} (--cost-key): give {COST_KEYS_ALLOWED}")
    out: dict[str, Any] = {"key": cost_key, "unit": cost_unit(cost_key)}
    if direction is not None:
        out.update(_curve_fields(run, direction, cost_key))
    steps = sorted(series)
    cumulative_costs(where, cost_key, steps, series)  # the whole series: it is the x-axis
    out["total"] = float(series[steps[-1]])
    if out.get("to_best") is not None:
        out["after_best"] = max(0.0, out["total"] - out["to_best"])
    return out, [series.get(step) for step in epoch_steps]


def _curve_fields(run: LoggedRun, direction: Direction, cost_key: str) -> dict[str, Any]:
    """Replay's curve of the drawn metric against ``cost_key``, its best and its projected rest."""
    metric = direction.metric
    curve = curve_of_run(run, metric, mode=None if direction.assumed else direction.mode, cost_key=cost_key)
    if curve is None:
        if not run.history(metric):
            recorded = run.params.get(keys.PARAM_MONITOR)
            shown = f"; the run monitored {recorded!r}" if recorded and recorded != metric else ""
            raise OfflineInputError(f"{run.label} logged no metric {metric!r} (--monitor){shown}")
        raise OfflineInputError(
            f"{run.label} logged {metric!r} at no step where it logged {cost_key!r} (--cost-key): "
            f"give {COST_KEYS_ALLOWED} that is logged with the metric"
        )
    points = [
        {"epochs": float(e), "cost": float(c), "metric": float(m)}
        for e, c, m in zip(curve.epochs, curve.costs, curve.metrics, strict=True)
    ]
    out: dict[str, Any] = {"points": points}
    finite = [i for i, p in enumerate(points) if math.isfinite(p["metric"])]
    if finite:
        sign = -1.0 if curve.higher_is_better else 1.0
        best = min(finite, key=lambda i: (sign * points[i]["metric"], i))  # the first of equal bests
        out.update(
            best_metric=points[best]["metric"],
            best_epoch=max(0, math.ceil(points[best]["epochs"]) - 1),  # the epoch it came in, 0-based
            to_best=points[best]["cost"],
        )
    if curve.cost_not_run:
        out.update(at_stop=float(curve.costs[-1]), not_run_projected=float(curve.cost_not_run))
    return out
