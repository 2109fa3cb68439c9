"""Replay outputs: the decisions CSV (one row per curve) and the trade-off plot."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lightning_green.offline.engine import NO_STOP, ReplayResult, summarize

DECISION_COLUMNS = (
    "curve_id",
    "stop_epoch",
    "stop_reason",
    "best_metric_at_stop",
    "cost_at_stop",
    "cost_total",
)
"""Columns of the decisions CSV."""


def decisions_rows(results: Sequence[ReplayResult]) -> list[list[str]]:
    """The decisions CSV as rows of strings (header first)."""
    rows = [list(DECISION_COLUMNS)]
    for r in results:
        rows.append(
            [
                r.curve_id,
                str(r.stop_epoch),
                r.stop_reason.value if r.stop_reason is not None else NO_STOP,
                repr(r.best_metric_at_stop),
                repr(r.cost_at_stop),
                repr(r.cost_total),
            ]
        )
    return rows


def write_decisions_csv(results: Sequence[ReplayResult], path: str | os.PathLike[str]) -> None:
    """Write the decisions CSV atomically (a temporary file renamed into place).

    Columns: ``curve_id, stop_epoch, stop_reason, best_metric_at_stop, cost_at_stop, cost_total``
    (``stop_reason`` is ``none`` for a curve the policy never stopped).
    """
    target = Path(path)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(decisions_rows(results))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(buffer.getvalue())
        make_readable(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_readable(path: str | os.PathLike[str]) -> None:
    """Give a temporary file the permissions a new file gets (``mkstemp`` makes it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


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
    saved = [100 * r.cost_saved for r in results]
    regret = [r.regret for r in results]
    ax.scatter(saved, regret, s=14, alpha=0.6, label="curves")
    s = summarize(results)
    ax.scatter([100 * s.mean_cost_saved], [s.mean_regret], s=80, marker="*", color="crimson", label="mean")
    ax.set_xlabel("cost saved (%)")
    ax.set_ylabel("regret (metric units, improving direction)")
    ax.set_title(
        title or f"{s.n_curves} curves: {100 * s.mean_cost_saved:.1f}% saved, regret {s.mean_regret:.4g}"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=image_format)
    return True
