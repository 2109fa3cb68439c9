"""The report plot: the monitored metric against cumulative kWh, epoch energy, the stop and the fit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning_green import keys
from lightning_green.report_marks import adaptation_marks, draw_adaptation_marks

PLOT_FILENAME = "energy_report.png"
"""Name of the PNG plot written next to the summary and logged as an MLflow artifact."""


def stop_place(savings: dict[str, Any], stopped_epoch: int) -> str:
    """Where a stop was, in words.

    ``after epoch 3 (4 epochs trained)`` for a stop at an epoch's end (epochs are 0-based, as
    Lightning's ``stopped_epoch``; replay's ``stop_epoch`` counts epochs trained: 4);
    ``at 4.49 epochs (in epoch 4)`` for a check inside an epoch; ``at step 36 (in epoch 4)`` in a
    run planned in steps.

    Example:
        >>> stop_place({}, 3)
        'after epoch 3 (4 epochs trained)'
        >>> stop_place({"unit": "epochs", "stopped_at": 4.49}, 4)
        'at 4.49 epochs (in epoch 4)'
        >>> stop_place({"unit": "steps", "stopped_at": 36.0}, 4)
        'at step 36 (in epoch 4)'
    """
    stopped_at, unit = savings.get("stopped_at"), savings.get("unit")
    whole = f"after epoch {stopped_epoch} ({stopped_epoch + 1} epochs trained)"
    if stopped_at is None:
        return whole
    if unit == "steps":
        return f"at step {float(stopped_at):g} (in epoch {stopped_epoch})"
    if float(stopped_at) == stopped_epoch + 1:
        return whole
    return f"at {float(stopped_at):.4g} epochs (in epoch {stopped_epoch})"


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def metric_points(summary: dict[str, Any]) -> list[tuple[float, float]]:
    """``(cumulative kWh, metric)`` of every check the summary records, in the order they came.

    Each epoch's value (``per_epoch``, at the epoch's end) and each validation inside an epoch
    (``checks``, with ``val_check_interval < 1``), ordered by the energy up to them (a check
    inside an epoch before the epoch's end at the same energy); a value that is not finite (NaN,
    ``null`` in a summary file) is not drawn. A summary drawn against another
    cost (its ``cost``, ``report --cost-key``) gives ``(cost, metric)`` of the curve's finite points.

    Example:
        >>> epochs = [{"total_kwh": 2.0, "metric": 0.4}, {"total_kwh": 4.0, "metric": None}]
        >>> inside = [{"total_kwh": 1.0, "metric": 0.5}, {"total_kwh": 3.0, "metric": 0.3}]
        >>> metric_points({"per_epoch": epochs, "checks": inside})
        [(1.0, 0.5), (2.0, 0.4), (3.0, 0.3)]
        >>> metric_points({"per_epoch": [{"total_kwh": 1.0, "metric": float("nan")}]})
        []
    """
    cost = summary.get("cost")
    if cost:  # drawn against another cost (report --cost-key): replay's curve, its points in that cost
        points = cost.get("points") or []
        return [(float(p["cost"]), float(p["metric"])) for p in points if _finite(p["metric"])]
    checks = summary.get("checks") or []
    inside = [(float(c["total_kwh"]), 0, float(c["metric"])) for c in checks if _finite(c["metric"])]
    ends = [
        (float(e["total_kwh"]), 1, float(e["metric"]))
        for e in summary.get("per_epoch", [])
        if _finite(e.get("metric"))  # NaN where rebuilt from the metrics (null in a summary file)
    ]
    return [(kwh, metric) for kwh, _, metric in sorted(inside + ends, key=lambda p: p[:2])]


def plot_summary(summary: dict[str, Any], path: str | Path, *, image_format: str | None = None) -> Path:
    """Draw the monitored metric against cumulative kWh and write the image (:func:`draw_summary`).

    Args:
        summary: What :func:`build_summary` returned (with the stopper's fields when it ran).
        path: Destination PNG; parent directories are created.
        image_format: ``"png"``, ``"svg"``, ... (default: from the extension of ``path``, else PNG).

    Returns:
        The path written.

    Raises:
        ImportError: When matplotlib (the ``plot`` extra) is not installed.
    """
    fig = draw_summary(summary)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=image_format)
    return out


def draw_summary(summary: dict[str, Any]) -> Any:
    """The report figure: the monitored metric against cumulative kWh, epoch energy, the stop, the fit.

    The metric is a line over cumulative energy, one point per check the run recorded
    (:func:`metric_points`: every validation, several an epoch with ``val_check_interval < 1``);
    each epoch's energy is a
    bar spanning the energy it used (right axis); batch-size and precision probes are shaded
    and adopted switches drawn as lines (:mod:`lightning_green.report_marks`); the stop point
    is marked with its reason; where the stopping policy fitted a learning curve, the fit is
    drawn over the epochs it was fitted on and dashed over its projection to the planned end.

    A summary with a ``cost`` (``report --cost-key``: the run against optimizer steps or another
    running total) is drawn against that cost instead: replay's curve, the best, the stop and the
    projected rest of the run in that cost, and each epoch's energy as a bar over the cost it took
    (where the run logged the cost at each epoch's end); the fit and the adaptation marks, which
    are in kWh, are not drawn.

    Args:
        summary: What :func:`build_summary` returned (with the stopper's fields when it ran).

    Returns:
        The matplotlib ``Figure``, on its own Agg canvas (no pyplot, no backend change).

    Raises:
        ImportError: When matplotlib (the ``plot`` extra) is not installed.
    """
    # A Figure drawn by the Agg canvas directly: no pyplot, no backend change for the process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = summary.get("per_epoch", [])
    cost = summary.get("cost") or {}  # against another cost than kWh (report --cost-key)
    x_key = "cost" if cost else "total_kwh"
    lefts, widths, energies = _epoch_bars(epochs, x_key)
    points = metric_points(summary)
    monitor = summary.get("monitor") or "metric"

    fig = Figure(figsize=(8, 4.8), dpi=110)  # its own canvas: no pyplot, no global backend change
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.twinx()
    bars.bar(
        lefts,
        energies,
        width=widths,
        align="edge",
        color="#9ecae1",
        alpha=0.45,
        edgecolor="#6baed6",
        linewidth=0.5,
        label="epoch energy",
    )
    bars.set_ylabel("energy per epoch (kWh)")
    bars.set_ylim(0, max(energies, default=1.0) * 3.0 or 1.0)
    bars.set_visible(bool(energies))  # a run logged without energy has no bars
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)

    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, "o-", color="#08519c", markersize=3.5, linewidth=1.5, label=monitor)
        low, high = min(ys), max(ys)
        pad = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
        ax.set_ylim(low - pad, high + pad)  # a wild extrapolation must not squash the data
    if cost:
        best, best_x = cost.get("best_metric"), cost.get("to_best")
    else:
        best, best_x = summary.get("best_metric"), summary.get("kwh_to_best")
    if best is not None and best_x is not None:  # also a best inside an epoch (not among the points)
        ax.plot([best_x], [best], "*", color="#08519c", markersize=10, label=f"best: {best:.4g}")
        ax.set_ylim(*expanded(*ax.get_ylim(), float(best)))
    fit = None if cost else (summary.get("stopping_policy") or {}).get("fit")  # in kWh
    if fit:
        fitted_until = fit["fitted_until_kwh"]
        pts = list(zip(fit["curve_kwh"], fit["curve_metric"], strict=True))
        inside = [(x, y) for x, y in pts if x <= fitted_until]
        beyond = [(x, y) for x, y in pts if x >= fitted_until]
        if inside:
            ax.plot(
                *zip(*inside, strict=True),
                "-",
                color="#e6550d",
                linewidth=1.2,
                label=f"learning-curve fit ({fit['family']})",
            )
        if beyond:
            ax.plot(*zip(*beyond, strict=True), "--", color="#e6550d", linewidth=1.2, label="projection")
    if not cost:  # in kWh
        draw_adaptation_marks(ax, adaptation_marks(summary))  # probe spans, adopted switches
    stop_reason = summary.get("stop_reason")
    stopped_epoch = summary.get("stopped_epoch")
    savings = summary.get("stop_savings") or {}
    at, marker, stopped = None, None, False
    if stop_reason == keys.NO_STOP and epochs:  # the stopper held back: mark where training ended
        at = epochs[-1]
        marker = f"{summary.get('training_end') or 'training ended'}\nstop reason: {keys.NO_STOP}"
    elif stop_reason and stopped_epoch is not None:
        at = next((e for e in epochs if e["epoch"] == stopped_epoch), epochs[-1] if epochs else None)
        marker, stopped = f"stopped {stop_place(savings, stopped_epoch)}\n{stop_reason}", True
    at_x = None if at is None else at.get(x_key)
    # The stopping check's cost where the summary records it, else the end of the epoch it fell in.
    if cost:
        stop_x = cost.get("at_stop", at_x)
        not_run, unit = cost.get("not_run_projected"), cost["unit"]
    else:
        stop_x = at_x if savings.get("kwh_at_stop") is None else float(savings["kwh_at_stop"])
        not_run, unit = savings.get("kwh_not_spent"), "kWh"
    _draw_not_run(ax, savings, stop_x, not_run, unit, best, summary.get("mode"), summary.get("monitor"))
    at_x = stop_x if stopped else at_x
    if at_x is not None:
        ax.axvline(at_x, color="#a50f15", linestyle=":", linewidth=1.5)
        low, high = ax.get_xlim()
        # In the left half the label goes right of the line: it must not spill past the axis.
        left = at_x - low < 0.5 * (high - low)
        ax.annotate(
            marker,
            xy=(at_x, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(6 if left else -6, 0),
            textcoords="offset points",
            ha="left" if left else "right",
            va="center",
            fontsize=8,
            color="#a50f15",
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#a50f15", "alpha": 0.85},
        )
    source = summary.get("energy_source", "?")
    estimate = " (an estimate, not a measurement)" if summary.get("is_estimate") else ""
    total = summary.get("total_kwh", 0.0)
    co2 = summary.get("co2_kg")
    if cost:
        steps = cost["key"] == keys.STEP
        ax.set_xlabel("optimizer step" if steps else f"cumulative {cost['key']} ({cost['unit']})")
        title = f"{monitor} against {'optimizer steps' if steps else cost['key']}"
        if total is not None:  # the energy the run logged, all the same
            title += f"; energy {total:.4g} kWh ({source}{estimate})"
        else:
            title += "; energy not logged"
    else:
        ax.set_xlabel(f"cumulative energy, kWh - source: {source}{estimate}")
        title = f"{monitor} against energy: {total:.4g} kWh"
    title += f", {co2:.3g} kg CO2e" if co2 is not None else ""
    ax.set_ylabel(monitor)
    ended = _how_it_ended(summary)
    ax.set_title(title + (f"\n{ended}" if ended else ""), fontsize=10, color="#a50f15" if ended else "black")
    handles, labels = ax.get_legend_handles_labels()
    bar_handles, bar_labels = bars.get_legend_handles_labels() if energies else ([], [])
    # Where the curve is not: a falling metric ends at the lower right, a rising one at the upper right.
    corner = "lower right" if summary.get("mode") == "max" else "upper right"
    ax.legend(handles + bar_handles, labels + bar_labels, fontsize=8, loc=corner)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def _epoch_bars(epochs: list[dict[str, Any]], x_key: str) -> tuple[list[float], list[float], list[float]]:
    """``(left, width, energy)`` of each epoch's bar: the x-axis span of the epoch and its kWh.

    Against kWh (``x_key`` ``total_kwh``) an epoch spans the energy it used; against another cost
    (``cost``) it spans from the previous epoch's end (0 for the first) to its own; no bars when
    the cost was not logged at every epoch's end.
    """
    energies = [float(e["energy_kwh"]) for e in epochs]
    if x_key == "total_kwh":
        lefts = [float(e["total_kwh"]) - used for e, used in zip(epochs, energies, strict=True)]
        return lefts, energies, energies
    ends = [e.get(x_key) for e in epochs]
    if not ends or any(end is None for end in ends):
        return [], [], []
    starts = [0.0, *(float(end) for end in ends[:-1])]
    return starts, [float(end) - start for start, end in zip(starts, ends, strict=True)], energies


def _draw_not_run(
    ax: Any,
    savings: dict[str, Any],
    start: float | None,
    not_run: float | None,
    unit: str,
    best: float | None,
    mode: Any,
    metric: str | None,
) -> None:
    """Shade what the stop avoided, from the stop to the planned end: "projected, not run".

    The span is the projected cost (``not_run``, in ``unit``: the kWh, or the cost the plot is
    drawn against) of the rest of the planned run; where the fit projected a gain of the best
    metric for it, a dashed line runs from the best value at the stop to the best value the fit
    projected at the planned end (only when the drawn ``metric`` is the one the stopper watched:
    the gain is of that metric).
    """
    if not not_run or start is None:
        return
    end = start + not_run
    amount, progress = savings.get("progress_not_run"), savings.get("unit") or "epochs"
    what = f"{amount:.3g} {progress}, " if amount is not None and progress != unit else ""
    label = f"projected, not run: {what}{not_run:.3g} {unit}"
    ax.axvspan(start, end, facecolor="#bdbdbd", alpha=0.25, hatch="//", edgecolor="#969696", label=label)
    gain = savings.get("metric_gain_forgone")
    if gain is not None and best is not None and savings.get("metric") in (None, metric):
        sign = 1.0 if mode == "max" else -1.0
        ax.plot([start, end], [best, best + sign * gain], ":", color="#636363", linewidth=1.4,
                label=f"projected gain forgone: {gain:.3g} (not run)")  # fmt: skip
        ax.set_ylim(*expanded(*ax.get_ylim(), best + sign * gain))  # its end in view


def expanded(low: float, high: float, value: float, margin: float = 0.05) -> tuple[float, float]:
    """Axis limits ``(low, high)`` widened to show ``value`` with a margin (unchanged when in view).

    Example:
        >>> expanded(0.09, 0.5, 0.0844)
        (0.0639, 0.5)
        >>> expanded(0.0, 1.0, 0.5)
        (0.0, 1.0)
    """
    span = (high - low) or abs(value) or 1.0
    if value < low:
        return round(value - margin * span, 12), high
    if value > high:
        return low, round(value + margin * span, 12)
    return low, high


def _how_it_ended(summary: dict[str, Any]) -> str | None:
    """A line for a run that did not finish (failed, or read back unfinished), else ``None``."""
    if summary.get("failed"):
        return f"FAILED: {summary.get('error') or 'the fit raised'} (measured until then)"
    if summary.get("run_status"):
        return f"{summary['run_status']}: the run did not finish (logged until then)"
    return None
