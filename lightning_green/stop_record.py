"""What the stopper records of its decisions: per-check metrics and what a stop avoided.

At every check the stopper logs the policy's view (:func:`decision_metrics`); when it stops a run
before its planned end it also logs what the stop avoided
(:class:`~lightning_green.policy.savings.StopSavings`: epochs or steps and kWh not spent up to the
planned end, the metric gain the fit projected for them) as ``energy/not_run_*_projected``
metrics and as the summary's ``stop_savings`` (:func:`stop_savings_fields`). All of it is a
projection from the measured checks, labelled as one. The offline tools read it back
(:func:`savings_from_metrics`). No Lightning here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_green import keys
from lightning_green.json_safe import finite_or_none
from lightning_green.policy import StopDecision
from lightning_green.policy.history import History
from lightning_green.policy.savings import StopSavings

PROJECTION_NOTE = "projected from the measured cost of recent checks and the learning-curve fit; not run"
"""How every saving figure is labelled: a projection, never a measurement."""


def decision_metrics(decision: StopDecision, unit: str = "epochs") -> dict[str, float]:
    """The metrics a check logs: the policy's gain rates and, at a stop, what it avoided (projected).

    What a stop avoided is logged wherever the decision carries it: a stop's, or the projection
    the callback attaches at a check while the Trainer holds its earlier stop back
    (``Trainer(min_epochs)``), which ends the run at the floor whatever that check decides.

    Args:
        decision: The policy's decision at the check.
        unit: Unit of the policy's progress, ``"epochs"`` or ``"steps"``.

    Example:
        >>> from lightning_green.policy import StopReason
        >>> d = StopDecision(True, StopReason.PLATEAU, "", 4, 0.5, 3, gain_per_kwh=0.1,
        ...                  savings=StopSavings(5.0, 5.0, 5.0, 0.25, None))
        >>> sorted(decision_metrics(d))  # doctest: +NORMALIZE_WHITESPACE
        ['energy/gain_per_kwh', 'energy/not_run_checks_projected', 'energy/not_run_epochs_projected',
         'energy/not_run_kwh_projected']
    """
    values: list[tuple[str, float | None]] = [
        (keys.GAIN_PER_KWH, decision.gain_per_kwh),
        (keys.PROJECTED_GAIN, decision.projected_gain),
        (keys.PROJECTED_GAIN_PER_KWH, decision.projected_gain_per_kwh),
    ]
    s = decision.savings
    if s is not None:
        values += [
            (keys.NOT_RUN_KWH, s.kwh_not_spent),
            (keys.NOT_RUN_EPOCHS, s.epochs_not_run),
            (keys.NOT_RUN_STEPS, s.progress_not_run if unit == "steps" else None),
            (keys.NOT_RUN_CHECKS, s.checks_not_run),
            (keys.NOT_RUN_GAIN, s.metric_gain_forgone),
        ]
    return {key: v for key, value in values if (v := finite_or_none(value)) is not None}


def check_metrics(
    history: History, inputs: Sequence[tuple[float, int | None]] | None, epochs: Sequence[float | None]
) -> list[dict[str, float]]:
    """What each check of a stopper's history logged for replay to decide on the same, one dict a check.

    The cumulative kWh, the metric value and the check's number; the epochs completed where the
    run has epochs; the kWh outside the epochs and the epochs until the next learning-rate drop
    where ``inputs`` holds them (``None``: not kept).

    Args:
        history: The policy's checks.
        inputs: ``(outside_kwh, epochs_until_lr_decay)`` of each check, or ``None``.
        epochs: Epochs completed at each check (``None`` where there are no epochs).

    Example:
        >>> h = History([0.5, 0.4], [0.1, 0.2], [1.0, 2.0])
        >>> check_metrics(h, [(0.01, None), (0.01, 3)], [1.0, 2.0])[1]  # doctest: +NORMALIZE_WHITESPACE
        {'energy/check_kwh': 0.2, 'energy/check_metric': 0.4, 'energy/check_number': 2.0,
         'energy/check_epochs': 2.0, 'energy/check_outside_kwh': 0.01, 'energy/epochs_until_lr_decay': 3.0}
    """
    rows = []
    costs, values = history.costs_kwh.tolist(), history.metrics.tolist()
    for i, (cost, metric, done) in enumerate(zip(costs, values, epochs, strict=True)):
        row = {keys.CHECK_KWH: float(cost), keys.CHECK_METRIC: float(metric), keys.CHECK_NUMBER: float(i + 1)}
        if done is not None:
            row[keys.CHECK_EPOCHS] = float(done)
        if inputs is not None:
            outside_kwh, lr_hint = inputs[i]
            row[keys.CHECK_OUTSIDE_KWH] = float(outside_kwh)
            if lr_hint is not None:
                row[keys.EPOCHS_UNTIL_LR_DECAY] = float(lr_hint)
        rows.append(row)
    return rows


def savings_fields(
    savings: StopSavings,
    *,
    unit: str,
    stopped_at: float | None,
    planned_end: float | None,
    kwh_at_stop: float | None,
    monitor: str | None,
) -> dict[str, Any]:
    """The summary's ``stop_savings``: what a stop avoided up to the planned end, labelled a projection.

    Args:
        savings: The stop's projection.
        unit: Unit of ``stopped_at``/``planned_end``/``progress_not_run`` (``"epochs"``, ``"steps"``).
        stopped_at: Progress at the stop.
        planned_end: The planned end (horizon).
        kwh_at_stop: Cumulative energy at the stop (where the avoided part starts, in a plot).
        monitor: The metric whose gain ``metric_gain_forgone`` is (its units; improvement positive).

    Example:
        >>> f = savings_fields(StopSavings(5.0, 5.0, 5.0, 0.25, 0.01), unit="epochs", stopped_at=5.0,
        ...                    planned_end=10.0, kwh_at_stop=0.3, monitor="val_loss")
        >>> f["projected"], f["kwh_not_spent"], f["metric_gain_forgone"]
        (True, 0.25, 0.01)
    """
    return {
        "projected": True,
        "note": PROJECTION_NOTE,
        "unit": unit,
        "stopped_at": stopped_at,
        "planned_end": planned_end,
        **savings.to_dict(),
        "kwh_at_stop": kwh_at_stop,
        "metric": monitor,
    }


def stop_savings_fields(
    decision: StopDecision | None, *, unit: str, kwh_at_stop: float, monitor: str | None
) -> dict[str, Any]:
    """``{"stop_savings": ...}`` for a stopping decision that carries savings, else ``{}``."""
    if decision is None or decision.savings is None:
        return {}
    return {
        "stop_savings": savings_fields(
            decision.savings,
            unit=unit,
            stopped_at=decision.progress,
            planned_end=decision.horizon,
            kwh_at_stop=kwh_at_stop,
            monitor=monitor,
        )
    }


def savings_from_metrics(
    values: Mapping[str, float], *, kwh_at_stop: float | None, monitor: str | None
) -> dict[str, Any] | None:
    """``stop_savings`` rebuilt from the ``energy/not_run_*_projected`` metrics a run logged (``None``: none).

    Args:
        values: The last value of each metric the run logged, by key.
        kwh_at_stop: Cumulative energy at the stop.
        monitor: The monitored metric.
    """
    if keys.NOT_RUN_KWH not in values:
        return None
    steps = values.get(keys.NOT_RUN_STEPS)
    epochs = values.get(keys.NOT_RUN_EPOCHS)
    progress = steps if steps is not None else epochs
    savings = StopSavings(
        progress_not_run=float("nan") if progress is None else progress,
        epochs_not_run=epochs,
        checks_not_run=values.get(keys.NOT_RUN_CHECKS, float("nan")),
        kwh_not_spent=values[keys.NOT_RUN_KWH],
        metric_gain_forgone=values.get(keys.NOT_RUN_GAIN),
    )
    unit = "steps" if steps is not None else "epochs"
    return savings_fields(
        savings, unit=unit, stopped_at=None, planned_end=None, kwh_at_stop=kwh_at_stop, monitor=monitor
    )


def savings_text(fields: Mapping[str, Any], *, in_cost: str | None = None) -> str:
    r"""One line saying what a stop avoided (from :func:`savings_fields`), labelled a projection.

    Args:
        fields: The summary's ``stop_savings``.
        in_cost: The same rest of the run in another cost (``"1200 steps"``: a report drawn
            against it, ``--cost-key``), said after the kWh; ``None``: not said.

    Example:
        >>> f = savings_fields(StopSavings(2.5, 2.5, 10.0, 0.004, 0.012), unit="epochs", stopped_at=7.5,
        ...                    planned_end=10.0, kwh_at_stop=0.01, monitor="val_loss")
        >>> print(savings_text(f).replace("; ", ";\n"))
        2.5 epochs (10 checks) to the planned end at 10 epochs, 0.004 kWh not spent;
        val_loss gain forgone 0.012 (projected, not run)
    """
    unit = fields.get("unit") or "epochs"
    amount = fields.get("progress_not_run")
    parts = [f"{amount:.4g} {unit}" if amount is not None and math.isfinite(amount) else "the rest"]
    if unit == "steps" and fields.get("epochs_not_run") is not None:
        parts[0] += f" ({fields['epochs_not_run']:.3g} epochs)"
    checks = fields.get("checks_not_run")
    if checks is not None and math.isfinite(checks):
        parts[0] += f" ({checks:.3g} checks)"
    if fields.get("planned_end") is not None:
        parts[0] += f" to the planned end at {fields['planned_end']:.6g} {unit}"
    text = f"{parts[0]}, {fields['kwh_not_spent']:.4g} kWh not spent"
    text += "" if in_cost is None else f" ({in_cost})"
    gain, metric = fields.get("metric_gain_forgone"), fields.get("metric") or "metric"
    text += f"; {metric} gain forgone " + ("unknown (no fit)" if gain is None else f"{gain:.4g}")
    return text + " (projected, not run)"
