"""Replay outputs: the decisions CSV (one row per curve, spreadsheet-safe) and the trade-off plot."""

from __future__ import annotations

import os
from collections.abc import Sequence

from lightning_green.offline.engine import NO_STOP, ReplayResult, metric_label, summarize_per_metric
from lightning_green.offline.staging import StagedOutputs

DECISION_COLUMNS = (
    "curve_id",
    "stop_epoch",
    "stop_reason",
    "best_metric_at_stop",
    "cost_at_stop",
    "cost_total",
)
"""Columns of the decisions CSV."""
PROJECTED_COLUMN = "cost_not_run_projected"
"""Column added after :data:`DECISION_COLUMNS` when some run was stopped by its own stopper: the
cost of the rest of its planned run, projected from its measured epochs (not run; empty for the
other curves). The run's cost saved counts it (:attr:`ReplayResult.cost_saved`)."""


_FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula.

    A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
    Excel, LibreOffice and Google Sheets (CSV formula injection); the ``'`` makes it text.

    Example:
        >>> spreadsheet_safe("=HYPERLINK(1)"), spreadsheet_safe("run-1")
        ("'=HYPERLINK(1)", 'run-1')
    """
    return "'" + text if text.startswith(_FORMULA_LEAD) else text


def decisions_rows(results: Sequence[ReplayResult]) -> list[list[str]]:
    """The decisions CSV as rows of strings (header first).

    With runs stopped by their own stopper, a last column :data:`PROJECTED_COLUMN` holds the
    projected cost of the rest of their planned run. ``stop_epoch`` is written as the input
    wrote it (:attr:`ReplayResult.stop_epoch_text`). Text taken from the input (``curve_id``,
    ``stop_epoch``) is made spreadsheet-safe (:func:`spreadsheet_safe`); the other numbers are
    written with :func:`repr`, so they read back exactly.
    """
    projected = any(r.cost_not_run > 0 for r in results)
    rows = [list(DECISION_COLUMNS) + ([PROJECTED_COLUMN] if projected else [])]
    for r in results:
        rows.append(
            [
                spreadsheet_safe(r.curve_id),
                spreadsheet_safe(r.stop_epoch_text or str(r.stop_epoch)),
                r.stop_reason.value if r.stop_reason is not None else NO_STOP,
                repr(r.best_metric_at_stop),
                repr(r.cost_at_stop),
                repr(r.cost_total),
            ]
            + ([repr(r.cost_not_run) if r.cost_not_run > 0 else ""] if projected else [])
        )
    return rows


def _csv_cell(text: str) -> str:
    """One CSV cell: quoted (quotes doubled) where it holds a comma, a quote or a line break."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def decisions_text(results: Sequence[ReplayResult]) -> str:
    """The decisions CSV as text: one newline-terminated line per row.

    A cell holding a comma, a double quote, a carriage return or a newline is quoted, so every
    row reads back as one record.
    """
    return "".join(",".join(_csv_cell(c) for c in row) + "\n" for row in decisions_rows(results))


def write_decisions_csv(results: Sequence[ReplayResult], path: str | os.PathLike[str]) -> None:
    """Write the decisions CSV atomically (a temporary file renamed into place).

    Columns: ``curve_id, stop_epoch, stop_reason, best_metric_at_stop, cost_at_stop, cost_total``
    (``stop_reason`` is ``none`` for a curve the policy never stopped). The file gets the
    permissions of any new file (the process umask applies; it is not changed).
    """
    with StagedOutputs() as out:
        out.write_text(path, decisions_text(results))
        out.commit()


def plot_tradeoff(
    results: Sequence[ReplayResult],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    image_format: str | None = None,
) -> bool:
    """Scatter of cost saved against regret, one point per curve; ``False`` if matplotlib is missing.

    ``image_format`` (``"png"``, ``"svg"``, ...) defaults to the extension of ``path``. The figure
    is drawn on its own canvas (no pyplot, no global backend change).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for projected, label in ((False, "curves"), (True, "runs stopped before their plan (saving projected)")):
        group = [r for r in results if (r.cost_not_run > 0) is projected]
        if group or not projected:
            ax.scatter(
                [100 * r.cost_saved for r in group],
                [r.regret for r in group],
                s=14 if not projected else 30,
                alpha=0.6,
                label=label,
                facecolors="none" if projected else None,
                edgecolors="tab:orange" if projected else None,
            )
    per_metric = summarize_per_metric(results)  # a mean regret is in its metric's units: one each
    for m in per_metric:
        s = m.summary
        named = "" if len(per_metric) == 1 else f" of {metric_label(m.metric_name, m.higher_is_better)}"
        color = "crimson" if len(per_metric) == 1 else None
        ax.scatter(
            [100 * s.mean_cost_saved], [s.mean_regret], s=80, marker="*", color=color, label=f"mean{named}"
        )
    ax.set_xlabel(
        "cost saved (%)" + (", partly projected" if any(r.cost_not_run > 0 for r in results) else "")
    )
    ax.set_ylabel("regret (metric units, improving direction)")
    if not title and len(per_metric) == 1:
        s = per_metric[0].summary
        title = f"{s.n_curves} curves: {100 * s.mean_cost_saved:.1f}% saved, regret {s.mean_regret:.4g}"
    elif not title:
        title = f"{len(results)} curves of {len(per_metric)} metrics (regret in each metric's units)"
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=image_format)
    return True
