"""End-of-run summary: what the run cost, where the energy came from, what each kWh bought."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_green import keys
from lightning_green.energy.accounting import CheckValue, EpochEnergy
from lightning_green.energy.session import EnergySession
from lightning_green.energy.units import J_PER_KWH, j_to_kwh
from lightning_green.json_safe import json_safe
from lightning_green.policy import StopDecision
from lightning_green.policy.marginal import MarginalAssessment
from lightning_green.report_plot import PLOT_FILENAME, plot_summary
from lightning_green.stop_record import savings_from_metrics, savings_text

if TYPE_CHECKING:
    from lightning_green.offline.mlflow_curves import Direction

SUMMARY_FILENAME = "energy_summary.json"
"""Name of the JSON summary written next to the logs and logged as an MLflow artifact."""

_FIT_POINTS = 50  # points of a fitted learning curve drawn in the plot

RESIDUE = 1e-9
"""A difference of energies no larger than this fraction of the energy it is taken from is the
floating-point residue of the subtraction (``5.3e-23`` kWh of a run's ``5e-7``), not energy: zero."""


def energy_left(whole_kwh: float, *parts_kwh: float) -> float:
    """What ``whole_kwh`` holds beyond ``parts_kwh``: ``0.0`` when that is residue (:data:`RESIDUE`).

    Example:
        >>> energy_left(5e-07, 1.1111111111111121e-07, 3.88888888888888e-07)
        0.0
        >>> round(energy_left(5e-07, 1e-07, 3e-07) * 1e7, 9)  # 1e-07 kWh left: energy, kept
        1.0
    """
    left = whole_kwh - sum(parts_kwh)
    return 0.0 if left <= RESIDUE * abs(whole_kwh) else left


def session_summary(
    session: EnergySession, measured_j: float, faults: int, source: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """:func:`build_summary` of what ``session`` measured, up to a final reading of ``measured_j``.

    Args:
        session: The run's measurement session.
        measured_j: The meters' final reading (J, before PUE; 0 when none could be taken).
        faults: Measurement faults in that reading (any makes the summary partial).
        source: Energy source label of the reading.
        extra: More fields (the callbacks' ``energy_summary_fields``, failure marks).

    Returns:
        The summary, as :func:`build_summary`.
    """
    ledger = session.ledger
    total_j = ledger.run_total_j(measured_j)
    before_j = ledger.before_epochs_j
    if session.running and not session.epochs_begun:  # a fit that failed before its first epoch began:
        before_j += ledger.unbooked_j(measured_j)  # what it measured is its setup, in no epoch
    return build_summary(
        ledger.history,
        total_j=total_j,
        source=source,
        partial=ledger.partial or faults > 0,
        pue=session.pue,
        carbon_intensity_g_per_kwh=ledger.carbon_intensity_g_per_kwh,
        monitor=session.monitor,
        mode=session.mode,
        extra=extra,
        best_check=ledger.best_check,
        co2_kg=ledger.run_co2_kg(measured_j),
        checks=ledger.checks,
        before_epochs_j=before_j,
        fit_duration_s=session.fit_elapsed_s,
    )


def build_summary(
    history: Sequence[EpochEnergy],
    *,
    total_j: float,
    source: str,
    partial: bool,
    pue: float,
    carbon_intensity_g_per_kwh: float | None,
    monitor: str | None = None,
    mode: str = "min",
    extra: dict[str, Any] | None = None,
    best_check: CheckValue | None = None,
    co2_kg: float | None = None,
    checks: Sequence[CheckValue] = (),
    before_epochs_j: float = 0.0,
    fit_duration_s: float | None = None,
) -> dict[str, Any]:
    """The end-of-run summary as plain data.

    Its energy is in three parts that add up to ``total_kwh``: before the first epoch of each fit
    (``kwh_before_first_epoch``; all a fit that trained no epoch measured up to the end of its
    training loop), the epochs (the last epoch's cumulative ``total_kwh``) and after the last
    epoch (``kwh_after_last_epoch``). A part that is only the residue of the subtraction is 0.

    Args:
        history: Epoch records of the whole run (resumes included).
        total_j: Energy of the whole run, including what followed the last epoch, in J.
        source: Energy source label (``estimate`` means nothing was measured).
        partial: Whether any reading of the run was partial.
        pue: The PUE factor applied.
        carbon_intensity_g_per_kwh: Grid intensity used for CO2, or None.
        monitor: Name of the monitored metric, if any.
        mode: ``"min"`` or ``"max"``.
        extra: More fields to include (stop reason, adapted settings ...).
        best_check: The best validation of the run, when validations were recorded one by one
            (with several an epoch, the best need not be an epoch's last): the best metric and
            the energy up to it come from it when it beats every epoch's value.
        co2_kg: The run's CO2 as its ledger priced it (a run resumed in another region keeps
            the earlier part's figure), or ``None``: the total at ``carbon_intensity_g_per_kwh``.
        checks: Every validation inside an epoch (``val_check_interval < 1``), in order: the
            summary's ``checks`` (``epoch``, ``total_kwh``, ``metric``), which the plot draws
            with the epochs' values; absent when there were none.
        before_epochs_j: The part of ``total_j`` measured before the first epoch of each fit
            (setup, sanity check, a batch-size or learning-rate search), in no epoch, in J.
        fit_duration_s: The wall time of the fit (its measurement), the ``duration_s`` of a run
            that trained no epoch; a run's epochs give theirs (``None``: 0 without epochs).

    Returns:
        A JSON-able dictionary.
    """
    total_kwh = j_to_kwh(total_j)
    before_kwh = j_to_kwh(max(0.0, before_epochs_j))
    epochs = len(history)
    if carbon_intensity_g_per_kwh is None:
        co2_kg = None
    elif co2_kg is None:
        co2_kg = total_kwh * carbon_intensity_g_per_kwh / 1000.0
    summary: dict[str, Any] = {
        "total_kwh": total_kwh,
        "co2_kg": co2_kg,
        "energy_source": source,
        "is_estimate": "estimate" in source.split("+"),
        "partial": bool(partial),
        "pue": pue,
        "carbon_intensity_g_per_kwh": carbon_intensity_g_per_kwh,
        "epochs": epochs,
        "kwh_per_epoch": (sum(r.energy_j for r in history) / epochs / J_PER_KWH) if epochs else None,
        # Outside epochs, in total_kwh and in no epoch: before each fit's first epoch (setup, the
        # sanity check, Lightning's finders), and the rest (end-of-fit work, of every fit).
        "kwh_before_first_epoch": before_kwh,
        "kwh_after_last_epoch": energy_left(total_kwh, before_kwh, history[-1].total_kwh if epochs else 0.0),
        "duration_s": sum(r.duration_s for r in history) if epochs else float(fit_duration_s or 0.0),
        "monitor": monitor,
        "mode": mode,
    }
    if monitor is not None:
        # The energy after the best: of the epochs after it, and what followed the last (not the setup).
        summary.update(_metric_fields(history, mode, total_kwh - before_kwh, best_check))
    summary["per_epoch"] = [
        {
            "epoch": r.epoch,
            "energy_kwh": r.energy_kwh,
            "total_kwh": r.total_kwh,
            "avg_power_w": r.avg_power_w,
            "samples_per_j": r.samples_per_j,
            "metric": r.metric,
            "marginal_per_kwh": r.marginal_per_kwh,
            "partial": r.partial,
        }
        for r in history
    ]
    if checks and monitor is not None:
        summary["checks"] = [{"epoch": c.epoch, "total_kwh": c.total_kwh, "metric": c.metric} for c in checks]
    if extra:
        summary.update(extra)
    return summary


def _metric_fields(
    history: Sequence[EpochEnergy], mode: str, from_epochs_kwh: float, best_check: CheckValue | None
) -> dict[str, Any]:
    # from_epochs_kwh: the run's energy from the first epoch on (its total less the setup)
    candidates: list[EpochEnergy | CheckValue] = [
        r for r in history if r.metric is not None and math.isfinite(r.metric)
    ]
    candidates += [] if best_check is None else [best_check]
    if not candidates:
        return {"best_metric": None}
    sign = -1.0 if mode == "max" else 1.0
    # The best value; of equal ones, where it first came (the energy up to the best is up to
    # there): an epoch's record carries the value of its last validation, which may lie inside it.
    best = min(candidates, key=lambda r: (sign * r.metric, r.total_j))  # type: ignore[operator]
    assert best.metric is not None
    marginals = [r.marginal_per_kwh for r in history if r.marginal_per_kwh is not None]
    return {
        "best_metric": best.metric,
        "best_epoch": best.epoch,
        "kwh_to_best": best.total_kwh,
        "kwh_after_best": energy_left(from_epochs_kwh, best.total_kwh),
        "best_marginal_per_kwh": max(marginals) if marginals else None,
        "last_marginal_per_kwh": marginals[-1] if marginals else None,
    }


def decision_summary(decision: StopDecision, fitted_from_kwh: float | None = None) -> dict[str, Any]:
    """The numbers behind a decision as plain data, with the fitted curve sampled for plotting.

    Args:
        decision: A decision of the stopping policy.
        fitted_from_kwh: Cumulative energy of the first check the fit used (the curve is drawn
            from there; the fitted families are singular at the start of their window).

    Returns:
        A JSON-able dictionary: the decision's diagnostics and, when a learning curve was
        fitted, ``fit`` with its family and ``curve_kwh``/``curve_metric``: the fit drawn from
        the start of its window to the end of the projected run, in the metric's own units.
    """
    out: dict[str, Any] = {
        "epoch": decision.epoch,
        "should_stop": decision.should_stop,
        "reason": None if decision.reason is None else decision.reason.value,
        "message": decision.message,
        "best_metric": json_safe(decision.best_metric),
        "wait_count": decision.wait_count,
        "hold": decision.hold,
    }
    for key in (*MarginalAssessment.RATES, "next_epoch_kwh"):
        out[key] = json_safe(getattr(decision, key))
    fit = decision.fit
    if fit is not None:
        fitted_until = fit.cost_ref_kwh + fit.cost_scale_kwh
        end_kwh = fitted_until + (decision.projected_cost_kwh or 0.0)
        start_kwh = fit.cost_ref_kwh if fitted_from_kwh is None else max(fit.cost_ref_kwh, fitted_from_kwh)
        grid = np.linspace(start_kwh, end_kwh, _FIT_POINTS)
        grid = grid[grid > fit.cost_ref_kwh]
        out["fit"] = {
            "family": fit.family,
            "params": [float(p) for p in fit.params],
            "rmse": float(fit.rmse),
            "n_points": fit.n_points,
            "fitted_until_kwh": fitted_until,
            "curve_kwh": [float(x) for x in grid],
            "curve_metric": [float(y) for y in fit.predict(grid)],
        }
    return out


def error_text(err: BaseException) -> str:
    """An error in words, as the summary's ``error`` holds it: its type, and its text where it has one.

    Example:
        >>> error_text(RuntimeError("the data went bad")), error_text(KeyboardInterrupt())
        ('RuntimeError: the data went bad', 'KeyboardInterrupt')
    """
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable table of a summary.

    Args:
        summary: What :func:`build_summary` returned.

    Returns:
        Multi-line text.
    """
    cost = summary.get("cost") or {}  # drawn against another cost than kWh (report --cost-key)
    if summary.get("total_kwh") is None:  # a run logged without energy, drawn against another cost
        rows = [("energy", f"not logged (no {keys.TOTAL_KWH}: the run was logged without EnergyMonitor)")]
    else:
        label = summary["energy_source"] + (" (ESTIMATE, not measured)" if summary["is_estimate"] else "")
        if summary["partial"]:
            label += " [partial: some readings failed]"
        rows = [
            ("energy", f"{summary['total_kwh']:.6g} kWh"),
            (
                "CO2",
                "unknown (no carbon intensity given)"
                if summary["co2_kg"] is None
                else f"{summary['co2_kg']:.6g} kg CO2e at {summary['carbon_intensity_g_per_kwh']:g} g/kWh",
            ),
            ("source", label),
        ]
    rows.append(("epochs", "unknown" if summary.get("epochs") is None else str(summary["epochs"])))
    if cost:
        rows.append(("cost (x-axis)", f"{cost['key']}: {cost['total']:.6g} {cost['unit']} in all"))
    if summary.get("kwh_per_epoch") is not None:
        rows.append(("kWh per epoch", f"{summary['kwh_per_epoch']:.6g}"))
    if summary.get("kwh_before_first_epoch"):
        rows.append(
            (
                "before the first epoch",
                f"{summary['kwh_before_first_epoch']:.6g} kWh (setup, sanity check, batch-size or "
                "learning-rate search; in no epoch)",
            )
        )
    if summary.get("kwh_after_last_epoch"):
        rows.append(
            ("after the last epoch", f"{summary['kwh_after_last_epoch']:.6g} kWh (end of fit, in no epoch)")
        )
    if cost and summary.get("monitor") and cost.get("best_metric") is not None:  # the figures in that cost
        rows.append(
            (
                f"best {summary['monitor']}",
                f"{cost['best_metric']:.6g} at epoch {cost['best_epoch']} "
                f"after {cost['to_best']:.6g} {cost['unit']}",
            )
        )
        if summary.get("best_marginal_per_kwh") is not None:
            rows.append(
                (f"best {summary['monitor']} gain per kWh", f"{summary['best_marginal_per_kwh']:.6g}")
            )
        rows.append((f"{cost['unit']} spent after best", f"{cost['after_best']:.6g}"))
    elif summary.get("monitor") and summary.get("best_metric") is not None:
        rows.append(
            (
                f"best {summary['monitor']}",
                f"{summary['best_metric']:.6g} at epoch {summary['best_epoch']} "
                f"after {summary['kwh_to_best']:.6g} kWh",
            )
        )
        if summary.get("best_marginal_per_kwh") is not None:
            rows.append(
                (f"best {summary['monitor']} gain per kWh", f"{summary['best_marginal_per_kwh']:.6g}")
            )
        rows.append(("kWh spent after best", f"{summary['kwh_after_best']:.6g}"))
    if summary.get(keys.PRECISION_PROBE_SHARE) is not None:
        share = summary[keys.PRECISION_PROBE_SHARE]
        rows.append(
            ("precision probing", f"{share:.1%} of the energy ({summary['precision_probe_j']:.3g} J)")
        )
    reason = summary.get("stop_reason")
    if reason == keys.NO_STOP:  # the stopper was there and did not stop the run
        end = summary.get("training_end")
        rows.append(("stop reason", f"{reason} ({end})" if end else reason))
    else:
        if summary.get("stop_reason") is not None:
            how = " (the stopper's decision at its last check, replayed from its records)"
            how = how if summary.get("stop_replayed") else ""  # a log without a stop record of its own
            rows.append(("stop reason", str(summary["stop_reason"]) + how))
        if summary.get("stopped_epoch") is not None:  # 0-based, as Lightning's stopped_epoch
            epoch = int(summary["stopped_epoch"])
            saved = summary.get("stop_savings") or {}
            at, unit = saved.get("stopped_at"), saved.get("unit")
            if unit == "steps" and at is not None:
                text = f"{epoch} (0-based; stopped at step {float(at):g})"
            elif at is not None and float(at) != epoch + 1:  # a check inside the epoch
                text = f"{epoch} (0-based; stopped at {float(at):.4g} epochs)"
            else:
                text = f"{epoch} (0-based: {epoch + 1} epochs trained)"
            rows.append(("stopped epoch", text))
    not_run = cost.get("not_run_projected")
    in_cost = None if not_run is None else f"{not_run:.4g} {cost['unit']}"
    if in_cost is not None and cost["unit"] == "kWh":  # another kWh series than the run's energy
        in_cost += f" of {cost['key']}"
    if summary.get("stop_savings"):  # what the stop avoided up to the planned end: a projection
        rows.append(("not run (projected)", savings_text(summary["stop_savings"], in_cost=in_cost)))
    elif in_cost is not None:  # projected from the run's checks to its plan, as replay projects it
        rows.append(("not run (projected)", f"{in_cost} to the planned end (projected, not run)"))
    if summary.get("failed"):  # written by a fit that raised: what was measured until then
        error = str(summary.get("error") or "").removesuffix(": ")  # an error without text, as written before
        rows.insert(0, ("status", f"FAILED ({error or 'the fit raised'})"))
    elif summary.get("run_status"):  # read back from MLflow: a run that had not ended
        rows.insert(0, ("status", f"{summary['run_status']} (the run did not finish: what it logged so far)"))
    if summary.get("hf_trainer_log"):
        rows.append(("log", "Hugging Face Trainer (epoch read as the epochs completed)"))
    if summary.get("rebuilt_from_metrics"):
        unreadable = summary.get("artifacts_unreadable")
        if summary.get("rebuilt_for_monitor"):
            why = f" (to draw {summary.get('monitor')!r}: the run's {SUMMARY_FILENAME} is of its own metric)"
        elif summary.get("rebuilt_for_cost"):
            why = f" (to draw against {cost.get('key')!r}: the run's {SUMMARY_FILENAME} is against kWh)"
        elif unreadable:
            why = (
                f" (its artifacts could not be read: {unreadable}; read the run through the tracking "
                "server's address, --mlflow-uri http://HOST:PORT)"
            )
        else:
            why = f" (the run has no {SUMMARY_FILENAME})"
        rows.append(("summary", "rebuilt from the logged metrics" + why))
    width = max(len(k) for k, _ in rows)
    lines = ["lightning_green energy summary", *(f"  {k.ljust(width)}  {v}" for k, v in rows)]
    return "\n".join(lines)


def write_summary_json(summary: dict[str, Any], path: str | Path) -> Path:
    """Write a summary as JSON (non-finite numbers as null).

    Args:
        summary: What :func:`build_summary` returned.
        path: Destination file; parent directories are created.

    Returns:
        The path written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(summary_json_text(summary))
    return out


def summary_json_text(summary: dict[str, Any]) -> str:
    """A summary as the JSON text :func:`write_summary_json` writes (non-finite numbers as null)."""
    return json.dumps(json_safe(summary), indent=2, sort_keys=False) + "\n"


def write_report(summary: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path | None]:
    """Write :data:`SUMMARY_FILENAME` and, when matplotlib is installed, :data:`PLOT_FILENAME` in ``out_dir``.

    Returns:
        The JSON path and the plot path (None without matplotlib).
    """
    json_path = write_summary_json(summary, Path(out_dir) / SUMMARY_FILENAME)
    try:
        return json_path, plot_summary(summary, Path(out_dir) / PLOT_FILENAME)
    except ImportError:
        return json_path, None


def summary_from_mlflow(
    tracking_uri: str,
    run_id: str,
    monitor: str | None = None,
    mode: str | None = None,
    cost_key: str = keys.TOTAL_KWH,
) -> dict[str, Any]:
    """The summary of a past run, read back from MLflow.

    Uses the run's ``lightning_green/energy_summary.json`` artifact when it has one (it holds the
    stopping policy's fit) and the metric and cost asked for are the run's own; otherwise rebuilds
    the summary from the logged metric histories (``energy/epoch_kwh``, ``energy/total_kwh``, the
    monitored metric), the params and the tags.
    The run is read with the offline tools' one MLflow reader
    (:class:`~lightning_green.offline.mlflow_runs.MlflowRun`: a step logged twice keeps the value
    with the latest timestamp, as in replay).

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///mlflow.db``, ``http://127.0.0.1:5000`` ...).
        run_id: The run.
        monitor: Metric to draw; default: the run's ``lightning_green.monitor`` param.
        mode: Its direction, for a metric the run recorded none for (``"min"`` when not given:
            the summary says ``mode_assumed``); a metric the run recorded has the direction it
            recorded, and a ``mode`` that contradicts it is refused (replay's rule,
            :func:`~lightning_green.offline.mlflow_curves.metric_direction`), as is a ``mode``
            with no metric to draw (no ``monitor``, and the run recorded none).
        cost_key: What the metric is drawn against (``--cost-key``, replay's cost): the
            cumulative kWh by default; ``step`` or another running total the run logged adds the
            summary's ``cost`` (:func:`~lightning_green.offline.cost_axis.cost_fields`), from the
            metrics (a run logged without energy too).

    Returns:
        A summary as :func:`build_summary` makes it.

    Raises:
        ValueError: When the run logged no energy metrics (and, with another ``cost_key``, no
            metric to draw either).
        lightning_green.offline.RecordedParamError: When ``mode`` contradicts the direction the
            run recorded for the metric, or is given with no metric to draw.
        lightning_green.offline.OfflineInputError: When the summary artifact is malformed or too
            large (:func:`~lightning_green.offline.summary_artifact.load_summary`), or the run
            recorded values of the wrong type or more epochs than the report draws.
    """
    import tempfile

    from lightning_green.offline.mlflow_runs import MlflowRun
    from lightning_green.offline.summary_artifact import load_summary

    run = MlflowRun.open(tracking_uri, run_id)
    direction = _direction(run, monitor, mode)
    artifact = f"lightning_green/{SUMMARY_FILENAME}"
    has_summary = artifact in run.artifact_names("lightning_green")
    own_metric = monitor in (None, run.params.get(keys.PARAM_MONITOR))
    if has_summary and own_metric and cost_key == keys.TOTAL_KWH:
        with tempfile.TemporaryDirectory() as tmp:
            summary = load_summary(run.download_artifact(artifact, tmp), f"{artifact} of run {run_id}")
        if run.status not in (None, "FINISHED") and not summary.get("failed"):
            summary["run_status"] = run.status  # ended, or was killed, after its summary was logged
        return summary
    summary = _summary_from_metrics(run, direction, cost_key)
    if has_summary:  # of the run's own metric against kWh: another is drawn from the metrics
        summary["rebuilt_for_monitor" if not own_metric else "rebuilt_for_cost"] = True
    if run.artifacts_error is not None:
        summary["artifacts_unreadable"] = run.artifacts_error
    return summary


def summary_from_log(
    path: str,
    monitor: str | None = None,
    mode: str | None = None,
    run: Any | None = None,
    cost_key: str = keys.TOTAL_KWH,
) -> dict[str, Any]:
    """The summary of a past run read back from its Lightning log (``CSVLogger``, ``TensorBoardLogger``).

    Uses the ``energy_summary.json`` EnergyMonitor wrote in the log's folder when there is one (and
    the metric and cost asked for are the run's); otherwise rebuilds the summary from the logged
    metrics and hyperparameters, as :func:`summary_from_mlflow` does for a run without the artifact.

    Args:
        path: The log's ``metrics.csv`` or one of its ``events.out.tfevents.*`` files.
        monitor: Metric to draw; default: the run's ``lightning_green.monitor``.
        mode: Its direction, for a metric the run recorded none for (as
            :func:`summary_from_mlflow`: one contradicting the recorded direction is refused, as
            is one with no metric to draw).
        run: The log already opened (``open_lightning_log(path)``), so that it is read once.
        cost_key: What the metric is drawn against (as :func:`summary_from_mlflow`).

    Returns:
        A summary as :func:`build_summary` makes it.

    Raises:
        ValueError: When the log logged no energy metrics.
        lightning_green.offline.OfflineInputError: When the file is neither kind of log, the
            summary file or a record is malformed, or ``mode`` contradicts the direction the run
            recorded for the metric (``RecordedParamError``).
    """
    from lightning_green.offline.errors import UsageError
    from lightning_green.offline.lightning_logs import open_lightning_log
    from lightning_green.offline.summary_artifact import load_summary

    run = open_lightning_log(path) if run is None else run
    if run is None:
        raise UsageError(
            f"log {path}: not a Lightning log (a CSVLogger metrics.csv or a TensorBoard "
            "events.out.tfevents.* file)"
        )
    direction = _direction(run, monitor, mode)
    summary_file = Path(path).parent / SUMMARY_FILENAME
    own_metric = monitor in (None, run.params.get(keys.PARAM_MONITOR))
    if summary_file.is_file() and own_metric and cost_key == keys.TOTAL_KWH:
        return load_summary(str(summary_file), str(summary_file))
    summary = _summary_from_metrics(run, direction, cost_key)
    if summary_file.is_file():  # of the run's own metric against kWh: another is drawn from the metrics
        summary["rebuilt_for_monitor" if not own_metric else "rebuilt_for_cost"] = True
    return summary


def _direction(run: Any, monitor: str | None, mode: str | None) -> Direction | None:
    """The metric a report draws (``monitor``, else the run's) and its direction; ``None``: no metric.

    Replay's rule (:func:`~lightning_green.offline.mlflow_curves.metric_direction`): the direction
    the run recorded for the metric, a ``mode`` contradicting it refused; else ``mode``, else
    ``"min"`` (assumed). A ``mode`` with no metric to draw (none given, none recorded: an
    energy-only run) is refused as replay refuses a run without a metric (``--monitor``).

    Raises:
        RecordedParamError: When ``mode`` contradicts the record, or there is no metric for it.
    """
    from lightning_green.offline.errors import RecordedParamError
    from lightning_green.offline.mlflow_curves import metric_direction

    metric = monitor or run.params.get(keys.PARAM_MONITOR) or None
    if metric is None and mode is not None:
        stopper = run.params.get(keys.PARAM_STOPPING_MONITOR)
        example = stopper or "METRIC"
        raise RecordedParamError(
            f"--mode {mode}: {run.label} has no metric to draw (it recorded no {keys.PARAM_MONITOR}: "
            f"energy only); name one with --monitor (--monitor {example} --mode {mode})"
        )
    return None if metric is None else metric_direction(run.label, run.params, metric, mode)


def _summary_from_metrics(
    run: Any, direction: Direction | None, cost_key: str = keys.TOTAL_KWH
) -> dict[str, Any]:
    """Rebuild a run's summary from its logged metrics, params and tags (no summary artifact).

    Args:
        run: The run (:class:`~lightning_green.offline.mlflow_runs.MlflowRun`, a Lightning log).
        direction: The metric drawn and its direction (:func:`_direction`), or ``None``: energy only.
        cost_key: What the metric is drawn against: another cost than the cumulative kWh adds the
            summary's ``cost`` and each epoch's ``cost``
            (:func:`~lightning_green.offline.cost_axis.cost_fields`); then a run that logged no
            energy is summarised without it (``energy_logged`` false).

    Raises:
        ValueError: When the run logged no energy (and, with another cost, no metric to draw).
    """
    against = cost_key != keys.TOTAL_KWH
    totals = run.history(keys.TOTAL_KWH)
    if totals or not against or direction is None:
        if not totals:
            hint = (
                f" and recorded no monitored metric to draw against {cost_key!r}: name one with --monitor"
                if against
                else ": was EnergyMonitor attached? (a run logged without it: --monitor METRIC --cost-key "
                f"{keys.STEP} draws the metric against its optimizer steps)"
            )
            raise ValueError(f"run {run.run_id} logged no {keys.TOTAL_KWH}{hint}")
        summary = _energy_summary_from_metrics(run, direction, totals)
    else:
        summary = _summary_without_energy(run, direction)
    if against:
        from lightning_green.offline.cost_axis import cost_fields

        cost, epoch_costs = cost_fields(run, direction, cost_key, sorted(totals))
        for record, at in zip(summary["per_epoch"], epoch_costs, strict=True):
            record["cost"] = at
        summary["cost"] = cost
    return summary


def _run_marks(run: Any, direction: Direction | None) -> dict[str, Any]:
    """What a rebuilt summary says of how the run ended (its stop, its status) and how it was read."""
    tags = run.tags
    stopped = tags.get(keys.TAG_STOPPED_EPOCH)
    stopped_epoch = None if stopped is None else _whole(run.run_id, f"tag {keys.TAG_STOPPED_EPOCH}", stopped)
    marks: dict[str, Any] = {
        "stop_reason": tags.get(keys.TAG_STOP_REASON),
        "stopped_epoch": stopped_epoch,
        "rebuilt_from_metrics": True,
    }
    if marks["stop_reason"] is None:  # no tag (a Lightning log without its summary): the stopper's records
        from lightning_green.offline.stop_marks import replayed_stop

        stop = replayed_stop(run)
        if stop is not None:
            marks.update(stop_reason=stop.reason, stopped_epoch=stop.stopped_epoch, stop_replayed=True)
    if direction is not None and direction.assumed:  # neither recorded for the metric nor given
        marks["mode_assumed"] = True
    if getattr(run, "hf_trainer", False):  # read by the Trainer's rule (offline.hf_trainer)
        marks["hf_trainer_log"] = True
    status = getattr(run, "status", None)  # MLflow's; a Lightning log has none
    if status == "FAILED":
        marks.update(failed=True, error=f"the MLflow run's status is {status}")
    elif status not in (None, "FINISHED"):
        marks["run_status"] = status
    return marks


def _summary_without_energy(run: Any, direction: Direction) -> dict[str, Any]:
    """The summary of a run that logged no energy (drawn against another cost): its metric, no kWh.

    The keys of :func:`build_summary`, the energy ones ``None``; ``epochs`` from Lightning's
    ``epoch`` metric (a Hugging Face Trainer log's: the epochs completed as logged; ``None``
    without it).
    """
    epochs = run.history("epoch")
    last = max(epochs.values()) if epochs else None
    trained: int | float | None = None
    if last is not None and getattr(run, "hf_trainer", False):  # the epochs completed, as logged
        trained = int(last) if float(last).is_integer() else float(last)
    elif last is not None:  # Lightning's 0-based index of the last epoch
        trained = _whole(run.run_id, "metric epoch", repr(last)) + 1
    summary: dict[str, Any] = {
        "total_kwh": None,
        "co2_kg": None,
        "energy_source": None,
        "energy_logged": False,
        "is_estimate": False,
        "partial": False,
        "pue": None,
        "carbon_intensity_g_per_kwh": None,
        "epochs": trained,
        "kwh_per_epoch": None,
        "kwh_before_first_epoch": None,
        "kwh_after_last_epoch": None,
        "duration_s": None,
        "monitor": direction.metric,
        "mode": direction.mode,
        "per_epoch": [],
    }
    summary.update(_run_marks(run, direction))
    return summary


def _energy_summary_from_metrics(
    run: Any, direction: Direction | None, totals: dict[int, float]
) -> dict[str, Any]:
    """:func:`_summary_from_metrics` of a run that logged ``energy/total_kwh`` (``totals``)."""
    run_id, params, tags, history = run.run_id, run.params, run.tags, run.history
    recorded = params.get(keys.PARAM_MONITOR)
    monitor = None if direction is None else direction.metric
    mode = "min" if direction is None else direction.mode
    from lightning_green.offline.csv_curves import parse_number
    from lightning_green.offline.errors import OfflineInputError
    from lightning_green.offline.mlflow_curves import recorded_not_run, require_sound_energy_records
    from lightning_green.offline.summary_artifact import MAX_PER_EPOCH

    def number(text: str | None, name: str, default: float | None) -> float | None:
        value = default if text is None else parse_number(text.strip())
        if value is None and text is not None:
            raise OfflineInputError(f"run {run_id}: {name} must be a number, got {text!r}")
        return value

    if len(totals) > MAX_PER_EPOCH:
        raise OfflineInputError(
            f"run {run_id} logged {len(totals):,} epochs of {keys.TOTAL_KWH}; the report draws at most "
            f"{MAX_PER_EPOCH:,}"
        )
    epoch_kwh, power_w, per_j = (
        history(keys.EPOCH_KWH),
        history(keys.AVG_POWER_W),
        history(keys.SAMPLES_PER_J),
    )
    require_sound_energy_records(run)  # as replay refuses a damaged log
    metric = history(monitor) if monitor else {}
    if monitor and monitor != recorded and not metric:
        shown = f"; the run monitored {recorded!r}" if recorded else ""
        raise OfflineInputError(f"run {run_id} logged no metric {monitor!r} (--monitor){shown}")
    marginal = history(keys.marginal_key(monitor)) if monitor else {}
    epochs = history("epoch")
    source = params.get(keys.PARAM_ENERGY_SOURCE, "unknown")
    intensity = params.get(keys.PARAM_CARBON_INTENSITY)
    intensity_g_per_kwh = number(intensity, f"parameter {keys.PARAM_CARBON_INTENSITY}", None)
    partial = tags.get(keys.TAG_PARTIAL) == "true"
    records = []
    for i, step in enumerate(sorted(totals)):
        energy_j = epoch_kwh.get(step, 0.0) * J_PER_KWH
        power = power_w.get(step, 0.0)
        records.append(
            EpochEnergy(
                epoch=_whole(run_id, "metric epoch", repr(epochs[step])) if step in epochs else i,
                energy_j=energy_j,
                total_j=totals[step] * J_PER_KWH,
                duration_s=energy_j / power if power > 0 else 0.0,
                samples=round(per_j.get(step, 0.0) * energy_j),
                source=source,
                partial=partial,
                metric=metric.get(step),
                marginal_per_kwh=marginal.get(step),
            )
        )
    extra = _run_marks(run, direction)
    not_run = recorded_not_run(run)  # as replay reads (and refuses) them
    # The projected gain is of the metric the stopper watched, whichever metric is drawn.
    stopper_metric = params.get(keys.PARAM_STOPPING_MONITOR) or recorded or monitor
    savings = savings_from_metrics(not_run, kwh_at_stop=records[-1].total_kwh, monitor=stopper_metric)
    extra.update({"stop_savings": savings} if savings else {})
    if extra["stop_reason"] == keys.NO_STOP:
        extra["training_end"] = _training_end(records, params.get(keys.PARAM_MAX_EPOCHS))
    checks = _checks_from_metrics(run, monitor, monitor == stopper_metric, metric)
    sign = -1.0 if mode == "max" else 1.0
    best_check = min(checks, key=lambda c: (sign * c.metric, c.total_j)) if checks else None
    # The whole run (what preceded the first epoch and followed the last included), as the summary
    # the run printed; the part before the first epoch as the run logged it (older runs: none).
    run_kwh = history(keys.RUN_KWH)
    total_j = max(records[-1].total_j, run_kwh[max(run_kwh)] * J_PER_KWH) if run_kwh else records[-1].total_j
    before_kwh = history(keys.RUN_BEFORE_EPOCHS_KWH)
    before_j = before_kwh[max(before_kwh)] * J_PER_KWH if before_kwh else 0.0
    return build_summary(
        records,
        total_j=total_j,
        source=source,
        partial=partial,
        pue=number(params.get(keys.PARAM_PUE), f"parameter {keys.PARAM_PUE}", 1.0),  # type: ignore[arg-type]
        carbon_intensity_g_per_kwh=intensity_g_per_kwh,
        monitor=monitor,
        mode=mode,
        extra=extra,
        before_epochs_j=before_j,
        best_check=best_check,
        checks=checks,
    )


def _checks_from_metrics(
    run: Any,
    monitor: str | None,
    stoppers_metric: bool,
    metric: dict[int, float],
) -> list[CheckValue]:
    """The validations inside epochs a run logged (the summary's ``checks``), from its metrics.

    The stopper logs each of its checks (``energy/check_kwh``, the kWh up to it, with
    ``energy/check_epochs``, the epochs completed, and ``energy/check_metric``, the value it
    decided on); those at a fractional number of epochs are inside an epoch, as
    :class:`~lightning_green.EnergyMonitor` records them (an epoch's last validation is in its
    ``per_epoch`` record). A run logged without ``energy/check_epochs`` has its checks at steps
    where no epoch ended (no ``energy/total_kwh``) taken as inside.

    Args:
        run: The run (its ``history``: ``key -> {step: value}`` of its metrics).
        monitor: The metric drawn (``None``: no checks).
        stoppers_metric: Whether it is the metric the stopper decided on: then its
            ``energy/check_metric`` is the value, else the metric's own value at the check's step.
        metric: ``step -> value`` of ``monitor``.

    Returns:
        The checks with a finite value of the metric, in order.

    Raises:
        OfflineInputError: If there are more than the report draws (``MAX_CHECKS``), or the
            cumulative kWh of the checks is not finite, negative or decreases (as replay refuses it).
    """
    from lightning_green.offline.errors import OfflineInputError
    from lightning_green.offline.mlflow_curves import cumulative_costs
    from lightning_green.offline.summary_artifact import MAX_CHECKS

    history = run.history
    at_checks = history(keys.CHECK_KWH) if monitor else {}
    if not at_checks:
        return []
    cumulative_costs(run.label, keys.CHECK_KWH, sorted(at_checks), at_checks)
    completed = history(keys.CHECK_EPOCHS)
    decided = history(keys.CHECK_METRIC) if stoppers_metric else {}
    epoch_ends, epochs = set(history(keys.TOTAL_KWH)), history("epoch")
    checks: list[CheckValue] = []
    for step in sorted(at_checks):
        done = completed.get(step)
        if completed:  # an epoch's end (its per_epoch record has it) or a run without epochs
            if done is None or not math.isfinite(done) or done.is_integer():
                continue
            epoch: float | None = math.floor(done)
        else:
            epoch = None if step in epoch_ends else epochs.get(step)
        value = decided.get(step, metric.get(step))
        if epoch is None or value is None or not math.isfinite(value):
            continue
        checks.append(CheckValue(int(epoch), float(value), at_checks[step] * J_PER_KWH))
    if len(checks) > MAX_CHECKS:
        raise OfflineInputError(
            f"run {run.run_id} logged {len(checks):,} checks inside epochs ({keys.CHECK_KWH}); the report "
            f"draws at most {MAX_CHECKS:,}"
        )
    return checks


def _whole(run_id: str, name: str, text: str) -> int:
    from lightning_green.offline.errors import OfflineInputError

    text = text.strip()
    if text.endswith(".0"):  # a metric: a float
        text = text[:-2]
    if not re.fullmatch(r"[0-9]{1,15}", text):
        raise OfflineInputError(f"run {run_id}: {name} must be a whole number >= 0, got {text!r}")
    return int(text)


def _training_end(records: Sequence[EpochEnergy], planned: str | None) -> str:
    """How a run the stopper did not stop ended, from its epochs and planned horizon.

    The recorded horizon (``lightning_green.max_epochs``) is ``max_epochs`` unless ``max_steps``
    cut the plan shorter, so a run whose epochs reach it "ran to" it.
    """
    epochs_done = records[-1].epoch + 1
    if planned is not None and planned.strip().isdigit() and epochs_done >= int(planned):
        return f"ran to max_epochs={int(planned)}"
    from lightning_green.offline.csv_curves import parse_number

    fraction = None if planned is None else parse_number(planned.strip())
    if fraction is not None and fraction > 0 and epochs_done >= math.ceil(fraction):  # planned in steps
        return f"ran to its planned end ({fraction:.4g} epochs: max_steps)"
    return f"ended after {epochs_done} epochs"
