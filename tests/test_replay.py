"""Offline replay: real curves, malformed input, MLflow runs."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lightning_green.policy import StoppingConfig, StoppingPolicy, StopReason
from lightning_green.replay import (
    CurveFormatError,
    read_curves_csv,
    read_mlflow_curves,
    replay,
    replay_curve,
    summarize,
    write_decisions_csv,
)

CURVES = Path(__file__).resolve().parents[2] / "shared" / "data" / "curves"
HEADER = "source,curve_id,group,step,epoch,metric_name,metric,higher_is_better,time_s,energy_J\n"


def real_slice(name: str, n_curves: int) -> str:
    """The first ``n_curves`` curves of a shared file, as CSV text."""
    with open(CURVES / name, newline="") as f:
        rows = list(csv.reader(f))
    keep, ids = [rows[0]], []
    for row in rows[1:]:
        if row[1] not in ids:
            if len(ids) == n_curves:
                break
            ids.append(row[1])
        keep.append(row)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(keep)
    return out.getvalue()


@pytest.fixture(scope="module")
def nas_text() -> str:
    return real_slice("nasbench_nlp_wt2_dev.csv", 12)


def test_replay_real_slice_matches_the_policy_driven_by_hand(nas_text: str) -> None:
    curves = read_curves_csv(io.StringIO(nas_text), name="nas.csv")
    assert len(curves) == 12 and all(c.cost_unit == "s" and c.metric_name == "val_loss" for c in curves)
    results = replay(curves, StoppingConfig())
    for curve, result in zip(curves, results, strict=True):
        policy = StoppingPolicy(StoppingConfig(mode="min"))
        stop, reason = len(curve.metrics) - 1, None
        for i in range(len(curve.metrics)):
            d = policy.update(curve.metrics[i], curve.costs[i], epoch=int(curve.epochs[i]) - 1, max_epochs=50)
            if d.should_stop:
                stop, reason = i, d.reason
                break
        assert (result.stop_epoch, result.stop_reason) == (int(curve.epochs[stop]), reason)
        assert result.cost_at_stop == curve.costs[stop] and result.cost_total == curve.costs[-1]
        assert result.best_metric_at_stop == curve.metrics[: stop + 1].min()
        assert result.regret >= 0 and 0 <= result.cost_saved < 1
    summary = summarize(results)
    assert summary.n_curves == 12 and sum(summary.stops.values()) == 12
    assert summary.stops.get("marginal_gain", 0) > 0


def test_energy_column_is_used_when_present() -> None:
    curves = read_curves_csv(io.StringIO(real_slice("mlperf_v4_power_dev.csv", 2)), name="mlperf.csv")
    assert all(c.cost_unit == "kWh" and c.higher_is_better for c in curves)
    assert curves[0].costs[0] == pytest.approx(2140226.5 / 3.6e6)
    result = replay_curve(curves[0], StoppingConfig())
    assert result.regret >= 0


def test_max_epochs_sets_the_planned_horizon(nas_text: str) -> None:
    curve = read_curves_csv(io.StringIO(nas_text))[0]
    short = replace(curve, epochs=curve.epochs[:30], metrics=curve.metrics[:30], costs=curve.costs[:30])
    # Planned for 50 epochs, logged 30: past the halfway point the marginal rule may act.
    assert replay_curve(short, StoppingConfig(), max_epochs=50).decision.hold != "horizon_fraction"
    assert replay_curve(short, StoppingConfig(), max_epochs=200).stop_reason is not StopReason.MARGINAL_GAIN


@pytest.mark.parametrize(
    ("text", "line", "column", "name"),
    [
        ("curve_id,epoch,metric,higher_is_better,time_s\na,1,1.0,0,1\n", 1, 6, "energy_J"),
        (HEADER + "s,a,g,0,1,loss,1.0,0,1,\ns,a,g,1,2,loss,oops,0,2,\n", 3, 7, "metric"),
        (HEADER + "s,a,g,0,1,loss,1.0,0,1,\ns,a,g,1,x,loss,0.9,0,2,\n", 3, 5, "epoch"),
        (
            HEADER + "s,a,g,0,2,loss,1.0,0,1,\ns,b,g,0,1,loss,1.0,0,1,\ns,a,g,1,1,loss,0.9,0,2,\n",
            4,
            5,
            "epoch",
        ),
        (HEADER + "s,a,g,0,1,loss,1.0,maybe,1,\n", 2, 8, "higher_is_better"),
        (HEADER + "s,a,g,0,1,loss,1.0,0,1,\ns,a,g,1,2,loss,0.9,1,2,\n", 3, 8, "higher_is_better"),
        (HEADER + "s,a,g,0,1,loss,1.0,0,-5,\n", 2, 9, "time_s"),
        (HEADER + "s,a,g,0,1,loss,1.0,0,1,\ns,a,g,1,2,loss,0.9,0,,\n", 3, 9, "time_s"),
        (HEADER + "s,a,g,0,1,loss,1.0,0,1,1e3x\n", 2, 10, "energy_J"),
    ],
)
def test_malformed_input_names_file_line_and_column(text: str, line: int, column: int, name: str) -> None:
    with pytest.raises(CurveFormatError) as info:
        read_curves_csv(io.StringIO(text), name="bad.csv")
    err = info.value
    assert (err.path, err.line, err.column, err.column_name) == ("bad.csv", line, column, name)
    assert str(err).startswith(f"bad.csv:{line}:{column}: ")


def test_empty_input_is_an_error() -> None:
    with pytest.raises(CurveFormatError, match="empty"):
        read_curves_csv(io.StringIO(""), name="empty.csv")
    with pytest.raises(CurveFormatError, match="no data rows"):
        read_curves_csv(io.StringIO(HEADER), name="header_only.csv")


def test_decisions_csv_columns(tmp_path: Path, nas_text: str) -> None:
    results = replay(read_curves_csv(io.StringIO(nas_text))[:3], StoppingConfig())
    out = tmp_path / "decisions.csv"
    write_decisions_csv(results, out)
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [
        "curve_id",
        "stop_epoch",
        "stop_reason",
        "best_metric_at_stop",
        "cost_at_stop",
        "cost_total",
    ]
    for row, r in zip(rows, results, strict=True):
        assert row["stop_reason"] == (r.stop_reason.value if r.stop_reason else "none")
        assert float(row["best_metric_at_stop"]) == r.best_metric_at_stop
    assert [p.name for p in tmp_path.iterdir()] == ["decisions.csv"]  # no temporary left behind


# --------------------------------------------------------------------------- MLflow


def log_runs(uri: str, curves) -> list[str]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("replay-test")
    ids = []
    for k, curve in enumerate(curves):
        run = client.create_run(exp, run_name=f"run{k}", start_time=1_000 + k)
        metrics = []
        for i, (m, kwh, e) in enumerate(zip(curve.metrics, curve.costs, curve.epochs, strict=True)):
            step = 100 * (i + 1)  # the global step, as Lightning logs it
            metrics += [
                Metric("val_loss", float(m), 1_000 + i, step),
                Metric("energy/total_kwh", float(kwh), 1_000 + i, step),
                Metric("epoch", float(e - 1), 1_000 + i, step),
            ]
        for i in range(0, len(metrics), 900):
            client.log_batch(run.info.run_id, metrics=metrics[i : i + 900])
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    other = client.create_run(exp, run_name="no-energy", start_time=5_000)
    client.log_metric(other.info.run_id, "val_loss", 1.0, step=1)
    return ids


def test_mlflow_replay_equals_csv_replay(tmp_path: Path, nas_text: str) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    pytest.importorskip("mlflow")
    curves = read_curves_csv(io.StringIO(nas_text))[:4]
    # The same numbers as energy: call the seconds kWh.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ids = log_runs(uri, curves)
    from_mlflow, skipped = read_mlflow_curves(uri, "replay-test", "val_loss", mode="min")
    assert [c.curve_id for c in from_mlflow] == ids and len(skipped) == 1
    expected = replay(curves, StoppingConfig())
    got = replay(from_mlflow, StoppingConfig())
    for a, b in zip(expected, got, strict=True):
        assert (a.stop_epoch, a.stop_reason, a.best_metric_at_stop, a.cost_at_stop) == (
            b.stop_epoch,
            b.stop_reason,
            b.best_metric_at_stop,
            b.cost_at_stop,
        )
    assert any(r.stop_reason is not None for r in got)


def test_mlflow_unknown_experiment(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    with pytest.raises(ValueError, match="not found"):
        read_mlflow_curves(f"sqlite:///{tmp_path}/mlflow.db", "nope", "val_loss")


def test_costs_summary_matches_numpy(nas_text: str) -> None:
    results = replay(read_curves_csv(io.StringIO(nas_text)), StoppingConfig())
    s = summarize(results)
    assert s.mean_cost_saved == pytest.approx(np.mean([r.cost_saved for r in results]))
