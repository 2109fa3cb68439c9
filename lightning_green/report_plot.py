"""The report plot: the monitored metric against cumulative kWh, epoch energy, the stop and the fit."""

from __future__ import annotations

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


def metric_points(summary: dict[str, Any]) -> list[tuple[float, float]]:
    """``(cumulative kWh, metric)`` of every check the summary records, in the order they came.

    Each epoch's value (``per_epoch``, at the epoch's end) and each validation inside an epoch
    (``checks``, with ``val_check_interval < 1``), ordered by the energy up to them (a check
    inside an epoch before the epoch's end at the same energy).

    Example:
        >>> epochs = [{"total_kwh": 2.0, "metric": 0.4}, {"total_kwh": 4.0, "metric": None}]
        >>> inside = [{"total_kwh": 1.0, "metric": 0.5}, {"total_kwh": 3.0, "metric": 0.3}]
        >>> metric_points({"per_epoch": epochs, "checks": inside})
        [(1.0, 0.5), (2.0, 0.4), (3.0, 0.3)]
    """
    inside = [(float(c["total_kwh"]), 0, float(c["metric"])) for c in summary.get("checks") or []]
    ends = [
        (float(e["total_kwh"]), 1, float(e["metric"]))
        for e in summary.get("per_epoch", [])
        if e.get("metric") is not None
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
    totals = [e["total_kwh"] for e in epochs]
    energies = [e["energy_kwh"] for e in epochs]
    points = metric_points(summary)
    monitor = summary.get("monitor") or "metric"

    fig = Figure(figsize=(8, 4.8), dpi=110)  # its own canvas: no pyplot, no global backend change
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.twinx()
    bars.bar(
        [t - e for t, e in zip(totals, energies, strict=True)],
        energies,
        width=energies,
        align="edge",
        color="#9ecae1",
        alpha=0.45,
        edgecolor="#6baed6",
        linewidth=0.5,
        label="epoch energy",
    )
    bars.set_ylabel("energy per epoch (kWh)")
    bars.set_ylim(0, max(energies, default=1.0) * 3.0 or 1.0)
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)

    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, "o-", color="#08519c", markersize=3.5, linewidth=1.5, label=monitor)
        low, high = min(ys), max(ys)
        pad = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
        ax.set_ylim(low - pad, high + pad)  # a wild extrapolation must not squash the data
    best, best_kwh = summary.get("best_metric"), summary.get("kwh_to_best")
    if best is not None and best_kwh is not None:  # also a best inside an epoch (not among the points)
        ax.plot([best_kwh], [best], "*", color="#08519c", markersize=10, label=f"best: {best:.4g}")
        ax.set_ylim(*expanded(*ax.get_ylim(), float(best)))
    fit = (summary.get("stopping_policy") or {}).get("fit")
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
    at_kwh = None if at is None else at["total_kwh"]
    # The stopping check's kWh where the summary records it, else the end of the epoch it fell in.
    stop_kwh = at_kwh if savings.get("kwh_at_stop") is None else float(savings["kwh_at_stop"])
    _draw_not_run(
        ax, savings, stop_kwh, summary.get("best_metric"), summary.get("mode"), summary.get("monitor")
    )
    at_kwh = stop_kwh if stopped else at_kwh
    if at_kwh is not None:
        ax.axvline(at_kwh, color="#a50f15", linestyle=":", linewidth=1.5)
        low, high = ax.get_xlim()
        # In the left half the label goes right of the line: it must not spill past the axis.
        left = at_kwh - low < 0.5 * (high - low)
        ax.annotate(
            marker,
            xy=(at_kwh, 0.5),
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
    label = f"cumulative energy, kWh - source: {source}{estimate}"
    ax.set_xlabel(label)
    ax.set_ylabel(monitor)
    total = summary.get("total_kwh", 0.0)
    co2 = summary.get("co2_kg")
    title = f"{monitor} against energy: {total:.4g} kWh" + (f", {co2:.3g} kg CO2e" if co2 is not None else "")
    ended = _how_it_ended(summary)
    ax.set_title(title + (f"\n{ended}" if ended else ""), fontsize=10, color="#a50f15" if ended else "black")
    handles, labels = ax.get_legend_handles_labels()
    bar_handles, bar_labels = bars.get_legend_handles_labels()
    # Where the curve is not: a falling metric ends at the lower right, a rising one at the upper right.
    corner = "lower right" if summary.get("mode") == "max" else "upper right"
    ax.legend(handles + bar_handles, labels + bar_labels, fontsize=8, loc=corner)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def _draw_not_run(
    ax: Any, savings: dict[str, Any], start: float | None, best: float | None, mode: Any, metric: str | None
) -> None:
    """Shade what the stop avoided, from the stop to the planned end: "projected, not run".

    The span is the projected energy of the rest of the planned run; where the fit projected a
    gain of the best metric for it, a dashed line runs from the best value at the stop to the best
    value the fit projected at the planned end (only when the drawn ``metric`` is the one the
    stopper watched: the gain is of that metric).
    """
    if not savings.get("kwh_not_spent") or start is None:
        return
    end = start + savings["kwh_not_spent"]
    amount = savings.get("progress_not_run")
    what = f"{amount:.3g} {savings.get('unit') or 'epochs'}, " if amount is not None else ""
    label = f"projected, not run: {what}{savings['kwh_not_spent']:.3g} kWh"
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
