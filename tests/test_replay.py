"""Offline replay: real curves, malformed input, MLflow runs."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from lightning_green.offline import (
    Curve,
    CurveFormatError,
    read_curves_csv,
    read_mlflow_curves,
    replay,
    replay_curve,
    summarize,
    write_decisions_csv,
)
from lightning_green.policy import StoppingConfig, StoppingPolicy, StopReason

CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "curves"
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
        # review B4: a repeated epoch; an epoch beyond what a float counts exactly
        (
            HEADER + "s,a,g,0,1,loss,1.0,0,1,\ns,b,g,0,1,loss,1.0,0,1,\ns,a,g,1,1,loss,0.9,0,2,\n",
            4,
            5,
            "epoch",
        ),
        (HEADER + "s,a,g,0,1,loss,1.0,0,1,\ns,a,g,1,1e15,loss,0.9,0,2,\n", 3, 5, "epoch"),
        # review B5: a decreasing cumulative cost; the line after a quoted multi-line field
        (HEADER + "s,a,g,0,1,loss,1.0,0,10,\ns,a,g,1,2,loss,0.9,0,5,\n", 3, 9, "time_s"),
        (HEADER + "s,a,g,0,1,loss,1.0,0,1,100\ns,a,g,1,2,loss,0.9,0,2,90\n", 3, 10, "energy_J"),
        (HEADER + 's,a,"g\nh",0,1,loss,1.0,0,1,\ns,a,g,1,2,loss,oops,0,2,\n', 4, 7, "metric"),
        ("\n\ncurve_id,epoch,metric,higher_is_better,time_s\na,1,1.0,0,1\n", 3, 6, "energy_J"),
    ],
)
def test_malformed_input_names_file_line_and_column(text: str, line: int, column: int, name: str) -> None:
    with pytest.raises(CurveFormatError) as info:
        read_curves_csv(io.StringIO(text), name="bad.csv")
    err = info.value
    assert (err.path, err.line, err.column, err.column_name) == ("bad.csv", line, column, name)
    assert str(err).startswith(f"bad.csv:{line}:{column}: ")


def test_duplicate_rows_are_refused_not_replayed(nas_text: str) -> None:
    # Every row twice: refused, where it used to change the decisions silently.
    lines = nas_text.splitlines(keepends=True)
    doubled = lines[0] + "".join(line + line for line in lines[1:])
    with pytest.raises(
        CurveFormatError, match=r"duplicate row: curve .* already has epoch 1 \(line 2\)"
    ) as info:
        read_curves_csv(io.StringIO(doubled), name="twice.csv")
    assert (info.value.line, info.value.column) == (3, 5)


def test_whole_epochs_written_as_floats_are_accepted() -> None:
    text = HEADER + "s,a,g,0,1.0,loss,1.0,0,1,\ns,a,g,1,2.0,loss,0.9,0,2,\n"
    assert read_curves_csv(io.StringIO(text))[0].epochs.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("true", "false"), [("1.0", "0.0"), ("TRUE", "false"), ("tRuE", "FaLsE"), ("yes", "no")]
)
def test_higher_is_better_spellings(true: str, false: str) -> None:
    text = HEADER + f"s,a,g,0,1,acc,1.0,{true},1,\ns,b,g,0,1,loss,1.0,{false},1,\n"
    a, b = read_curves_csv(io.StringIO(text))
    assert a.higher_is_better and not b.higher_is_better


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    text = "curve_id,epoch,metric,higher_is_better,time_s,energy_J\n" + "".join(
        f"a,{e},{1 / e},0,{10 * e},\n" for e in range(1, 13)
    )
    path = tmp_path / "bom.csv"
    path.write_text(text, encoding="utf-8-sig")  # as Excel writes "CSV UTF-8"
    from_file = read_curves_csv(path)
    from_stream = read_curves_csv(io.StringIO("\ufeff" + text))
    plain = read_curves_csv(io.StringIO(text))
    assert [c.curve_id for c in from_file] == [c.curve_id for c in from_stream] == ["a"]
    assert np.array_equal(from_file[0].metrics, plain[0].metrics)


def test_bytes_that_are_not_utf8_are_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    rows = [HEADER, "s,a,g,0,1,loss,1.0,0,1,\n", "s,a,g\xe9,1,2,loss,0.9,0,2,\n"]
    path.write_bytes("".join(rows).encode("latin-1") + b"s,a,g,2,3,loss,0.8,0,3,\n" * 3000)
    with pytest.raises(CurveFormatError, match="not UTF-8") as info:
        read_curves_csv(path, name="latin1.csv")
    assert (info.value.line, info.value.column) == (3, 3)  # the line and the cell, not a buffer offset


def test_leading_blank_lines_are_skipped() -> None:
    text = "\n\n" + HEADER + "s,a,g,0,1,loss,1.0,0,1,\ns,a,g,1,x,loss,0.9,0,2,\n"
    with pytest.raises(CurveFormatError) as info:  # the lines are still counted
        read_curves_csv(io.StringIO(text), name="blank.csv")
    assert (info.value.line, info.value.column) == (5, 5)
    assert len(read_curves_csv(io.StringIO("\n\n" + HEADER + "s,a,g,0,1,loss,1.0,0,1,\n"))) == 1


def test_empty_input_is_an_error() -> None:
    with pytest.raises(CurveFormatError, match="empty"):
        read_curves_csv(io.StringIO(""), name="empty.csv")
    with pytest.raises(CurveFormatError, match="no data rows"):
        read_curves_csv(io.StringIO(HEADER), name="header_only.csv")
    with pytest.raises(CurveFormatError, match="empty"):
        read_curves_csv(io.StringIO("\n \n\n"), name="blank.csv")


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
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri).create_experiment("other")
    with pytest.raises(ValueError, match="not found"):
        read_mlflow_curves(uri, "nope", "val_loss")
    with pytest.raises(FileNotFoundError, match="no MLflow database at"):  # not created by reading
        read_mlflow_curves(f"sqlite:///{tmp_path}/typo.db", "nope", "val_loss")
    assert not (tmp_path / "typo.db").exists()


def test_costs_summary_matches_numpy(nas_text: str) -> None:
    results = replay(read_curves_csv(io.StringIO(nas_text)), StoppingConfig())
    s = summarize(results)
    assert s.mean_cost_saved == pytest.approx(np.mean([r.cost_saved for r in results]))


# --------------------------------------------------------------------------- callback's inputs (review B3)


def saturating(n: int) -> list[float]:
    return [2.0 + 3.0 * 0.85**i for i in range(n)]


def log_policy_run(client, exp: str, metrics, *, max_epochs: str | None, hints: dict[int, int]) -> str:
    """A run as the callback logs it: the metric, energy, epoch, the plan and the per-check hints."""
    from mlflow.entities import Metric, Param

    run = client.create_run(exp)
    logged = []
    for i, m in enumerate(metrics):
        step = 10 * (i + 1)
        logged += [
            Metric("val_loss", float(m), 1_000 + i, step),
            Metric("energy/total_kwh", 0.01 * (i + 1), 1_000 + i, step),
            Metric("epoch", float(i), 1_000 + i, step),
        ]
        if i in hints:
            logged.append(Metric("energy/epochs_until_lr_decay", float(hints[i]), 1_000 + i, step))
    params = [] if max_epochs is None else [Param("lightning_green.max_epochs", max_epochs)]
    client.log_batch(run.info.run_id, metrics=logged, params=params)
    return run.info.run_id


def by_hand(metrics, *, max_epochs, hints, patience: int = 30) -> tuple[int, StopReason | None]:
    policy = StoppingPolicy(StoppingConfig(mode="min", patience=patience), monitor="val_loss")
    for i, m in enumerate(metrics):
        hint = hints.get(i)
        d = policy.update(m, 0.01 * (i + 1), epoch=i, max_epochs=max_epochs, epochs_until_lr_decay=hint)
        if d.should_stop:
            return i + 1, d.reason
    return len(metrics), None


def test_mlflow_replay_uses_the_recorded_plan_and_lr_hints(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("plans")
    curve = [2.0 + 3.0 * 0.7**i for i in range(40)]
    flat = [1.0] * 20 + [0.8] * 20  # flat until the decay at epoch 20, announced from the start
    hints = {i: 19 - i for i in range(20)}
    ids = [
        log_policy_run(client, exp, curve, max_epochs="none", hints={}),
        log_policy_run(client, exp, curve, max_epochs="100", hints={}),
        log_policy_run(client, exp, curve, max_epochs=None, hints={}),  # logged without the callback
        log_policy_run(client, exp, flat, max_epochs="40", hints=hints),
    ]
    curves, skipped = read_mlflow_curves(uri, "plans", "val_loss", mode="min")
    assert [c.curve_id for c in curves] == ids and not skipped
    assert [(c.plan_recorded, c.planned_max_epochs) for c in curves] == [
        (True, None),
        (True, 100),
        (False, None),
        (True, 40),
    ]
    assert curves[3].lr_hints == tuple(hints.get(i) for i in range(40))
    expected = [
        by_hand(curve, max_epochs=None, hints={}),  # "none": no plan, not the last epoch
        by_hand(curve, max_epochs=100, hints={}),
        by_hand(curve, max_epochs=40, hints={}),  # nothing recorded: the last epoch
        by_hand(flat, max_epochs=40, hints=hints, patience=5),
    ]
    config = StoppingConfig()
    got = [(r.stop_epoch, r.stop_reason) for r in replay(curves[:3], config)]
    got.append(astuple(replay_curve(curves[3], replace(config, patience=5))))
    assert got == expected
    assert len({expected[0], expected[1], expected[2]}) == 3  # the plan matters on this curve
    blind = by_hand(flat, max_epochs=40, hints={}, patience=5)
    assert blind[0] < 20 < expected[3][0]  # and so do the hints on that one
    # An explicit horizon overrides the recorded one; ignoring the schedule drops the hints.
    assert replay_curve(curves[0], config, max_epochs=40).stop_epoch == expected[2][0]
    assert astuple(replay_curve(curves[3], replace(config, patience=5), use_lr_schedule=False)) == blind


def astuple(result) -> tuple[int, StopReason | None]:
    return result.stop_epoch, result.stop_reason


def test_mlflow_bad_recorded_plan(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bad")
    run_id = log_policy_run(client, exp, saturating(5), max_epochs="forty", hints={})
    with pytest.raises(ValueError, match=f"{run_id}.*lightning_green.max_epochs.*'forty'"):
        read_mlflow_curves(uri, "bad", "val_loss")


def test_a_step_logged_twice_reads_the_same_in_replay_and_report(tmp_path: Path, monkeypatch) -> None:
    """One rule for a step logged twice (the latest timestamp), whichever tool reads the run.

    A file store returns a history in the order it was logged, so the value logged last is not
    the latest one here: the report used to keep the value logged last, replay the latest.
    """
    pytest.importorskip("mlflow")
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from lightning_green.report import summary_from_mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("twice")).info.run_id
    logged = []
    for i in range(6):
        step, t = 10 * (i + 1), 1_000 * (i + 1)
        logged += [
            Metric("val_loss", 1.0 / (i + 1), t, step),
            Metric("energy/total_kwh", 0.01 * (i + 1), t, step),
            Metric("energy/epoch_kwh", 0.01, t, step),
            Metric("epoch", float(i), t, step),
        ]
    client.log_batch(run_id, metrics=logged, params=[Param("lightning_green.monitor", "val_loss")])
    # Step 30 again: the later timestamp first, then an earlier one logged last.
    client.log_batch(
        run_id, metrics=[Metric("val_loss", 0.25, 3_500, 30), Metric("energy/total_kwh", 0.035, 3_500, 30)]
    )
    client.log_batch(
        run_id, metrics=[Metric("val_loss", 9.0, 2_900, 30), Metric("energy/total_kwh", 0.9, 2_900, 30)]
    )
    # And a tie on the timestamp: the larger value is MLflow's latest.
    client.log_batch(run_id, metrics=[Metric("val_loss", 0.4, 4_000, 40)])
    client.log_batch(run_id, metrics=[Metric("val_loss", 0.3, 4_000, 40)])

    (curve,), _ = read_mlflow_curves(uri, "twice", "val_loss", mode="min")
    summary = summary_from_mlflow(uri, run_id)
    from_report = [e["total_kwh"] for e in summary["per_epoch"]], [e["metric"] for e in summary["per_epoch"]]
    from_replay = curve.costs.tolist(), curve.metrics.tolist()
    assert from_report[0] == pytest.approx(from_replay[0]) and from_report[1] == from_replay[1]
    assert (from_replay[0][2], from_replay[1][2], from_replay[1][3]) == (pytest.approx(0.035), 0.25, 0.4)


def _dense_hint(epochs: list[int], lrs: list[float], i: int) -> int | None:
    """The schedule hint the way replay derived it before: a learning rate for every epoch."""
    if min(epochs) < 1:
        return None
    per_epoch = np.empty(max(epochs))
    start = 0
    for epoch, lr in zip(epochs, lrs, strict=True):
        per_epoch[start:epoch] = lr
        start = epoch
    e = epochs[i] - 1
    if e + 1 >= len(per_epoch):
        return None
    later = np.nonzero(per_epoch[e + 1 :] < per_epoch[e])[0]
    return int(later[0]) if len(later) else None


def _in_step_stretch(lrs: list[float], i: int) -> bool:
    """Check ``i`` is in a stretch of two or more checks at one rate, and a lower rate follows it."""
    same = [j for j in range(len(lrs)) if all(lrs[m] == lrs[i] for m in range(min(i, j), max(i, j) + 1))]
    return len(same) >= 2 and max(same) + 1 < len(lrs) and lrs[max(same) + 1] < lrs[i]


def test_schedule_hints_from_sparse_checks_equal_the_per_epoch_rule() -> None:
    from lightning_green.offline import Curve, policy_inputs

    rng = np.random.default_rng(0)
    announced = 0
    for _ in range(300):
        n = int(rng.integers(1, 12))
        epochs = np.cumsum(rng.integers(1, 4, size=n)) - int(rng.integers(0, 2))
        lrs = rng.choice([0.1, 0.05, 0.01, 0.001], size=n, p=[0.4, 0.3, 0.2, 0.1])
        lrs = np.sort(lrs)[::-1] if rng.random() < 0.5 else lrs  # half of them step schedules
        curve = Curve("a", epochs, np.zeros(n), np.arange(1.0, n + 1), False, lrs=lrs)
        hints = policy_inputs(curve).lr_hints
        expected = [
            _dense_hint(epochs.tolist(), lrs.tolist(), i) if _in_step_stretch(lrs.tolist(), i) else None
            for i in range(n)
        ]
        assert hints == expected
        announced += sum(h is not None for h in hints)
    assert announced > 100  # the rule was exercised, not only its "none"


def test_schedules_that_decay_at_every_check_announce_no_decay_as_the_callback() -> None:
    """Cosine, one-cycle and warm-up rates in a CSV's ``lr`` column give the policy no hint (the
    callback gives none for those schedulers), so replay with them decides as without them; a
    step schedule's column does give hints."""
    import torch

    from lightning_green.offline import Curve, policy_inputs
    from lightning_green.training.learning_rates import epochs_until_lr_decay

    def rates(make: Any, epochs: int = 20) -> tuple[list[float], list[int | None]]:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        out, told = [], []
        for _ in range(epochs):
            out.append(opt.param_groups[0]["lr"])  # the rate this epoch trains at
            opt.step()
            sched.step()
            told.append(
                epochs_until_lr_decay([SimpleNamespace(scheduler=sched, interval="epoch", frequency=1)], 10)
            )
        return out, told

    lr_sched = torch.optim.lr_scheduler
    for make in (
        lambda o: lr_sched.CosineAnnealingLR(o, T_max=20),
        lambda o: lr_sched.OneCycleLR(o, max_lr=0.1, total_steps=20),
        lambda o: lr_sched.LinearLR(o, start_factor=0.1, total_iters=5),
        lambda o: lr_sched.ExponentialLR(o, gamma=0.9),
    ):
        lrs, told = rates(make)
        assert set(told) == {None}
        curve = Curve("a", np.arange(1, 21), np.zeros(20), np.arange(1.0, 21.0), False, lrs=np.array(lrs))
        assert policy_inputs(curve).lr_hints == [None] * 20
    lrs, told = rates(lambda o: lr_sched.MultiStepLR(o, milestones=[8, 14], gamma=0.1))
    curve = Curve("a", np.arange(1, 21), np.zeros(20), np.arange(1.0, 21.0), False, lrs=np.array(lrs))
    assert policy_inputs(curve).lr_hints == told
    assert sum(h is not None for h in told) == 14


def test_a_huge_epoch_with_a_learning_rate_needs_no_per_epoch_array() -> None:
    text = "curve_id,epoch,metric,higher_is_better,time_s,energy_J,lr\n" + "".join(
        f"a,{e * 10**12},{1 / e},0,{e},,{0.1 if e < 5 else 0.01}\n" for e in range(1, 9)
    )
    (curve,) = read_curves_csv(io.StringIO(text))
    result = replay_curve(curve, StoppingConfig())  # used to allocate a float per epoch: 8e12 of them
    assert result.stop_epoch >= 10**12


def test_a_curve_of_checks_before_any_training_replays_without_a_plan() -> None:
    """A curve whose last (or only) check is at epoch 0 has no planned horizon; it replays."""
    curve = Curve("a", np.array([0]), np.array([0.5]), np.array([1.0]), False)
    assert curve.default_max_epochs is None
    result = replay_curve(curve, StoppingConfig())
    assert result.stop_reason is None and result.stop_epoch == 0


def test_an_empty_curve_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="at least one check"):
        Curve("a", np.array([]), np.array([]), np.array([]), False)


def test_an_mlflow_run_has_the_step_series_of_a_lightning_log(tmp_path: Path) -> None:
    """``step`` is the optimizer steps done (the logged step plus one) at every step the run logged
    anything of its training at, as the CSVLogger and TensorBoard readers give it: the run's end
    records, logged after training at the steps done, add none; a metric the run itself named
    ``step`` is read as logged."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from lightning_green.offline import LightningCsvRun, MlflowRun

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("steps")
    plain = client.create_run(experiment).info.run_id
    rows = ["epoch,step,train_loss,val_loss,energy/run_kwh"]
    for e in range(3):
        client.log_metric(plain, "train_loss", 1.0, step=10 * e + 4)
        client.log_metric(plain, "val_loss", 1 / (e + 1), step=10 * e + 9)
        client.log_metric(plain, "epoch", e, step=10 * e + 9)
        rows += [f"{e},{10 * e + 4},1.0,,", f"{e},{10 * e + 9},,{1 / (e + 1)},"]
    client.log_metric(plain, "energy/run_kwh", 1e-3, step=30)  # EnergyMonitor's, at the fit's end
    rows.append(",30,,,0.001")
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    steps = MlflowRun.open(uri, plain).history("step")
    assert steps == {s: float(s + 1) for s in (4, 9, 14, 19, 24, 29)}
    assert steps == LightningCsvRun(tmp_path / "metrics.csv").history("step")
    own = client.create_run(experiment).info.run_id
    client.log_metric(own, "step", 7.0, step=0)
    assert MlflowRun.open(uri, own).history("step") == {0: 7.0}


def test_the_direction_of_a_metric_is_the_one_the_run_recorded_for_it() -> None:
    """The rule replay and report share: the stopper's direction for its metric, the
    EnergyMonitor's for its own, a contradicting mode refused; else the mode given, else min."""
    from lightning_green.offline import RecordedParamError
    from lightning_green.offline.mlflow_curves import metric_direction

    params = {
        "lightning_green.monitor": "val_acc",
        "lightning_green.mode": "max",
        "lightning_green.stopping_monitor": "val_loss",
        "lightning_green.stopping_mode": "min",
    }
    acc = metric_direction("run a", params, "val_acc", None)
    assert (acc.mode, acc.source, acc.recorded_param) == ("max", "recorded", "lightning_green.mode")
    loss = metric_direction("run a", params, "val_loss", "min")
    assert (loss.mode, loss.recorded_param) == ("min", "lightning_green.stopping_mode")
    for metric, mode, param in (("val_acc", "min", "mode=max"), ("val_loss", "max", "stopping_mode=min")):
        with pytest.raises(RecordedParamError, match=f"recorded lightning_green.{param} for '{metric}'"):
            metric_direction("run a", params, metric, mode)
    other = metric_direction("run a", params, "train_loss", None)
    assert (other.mode, other.assumed) == ("min", True)
    given = metric_direction("run a", {}, "train_acc", "max")
    assert (given.mode, given.source, given.assumed) == ("max", "option", False)


def test_a_recorded_trainer_floor_holds_the_stop_back_as_lightning_does() -> None:
    """``Trainer(min_epochs)`` recorded: the stop ends the run at the first check at the floor, with
    the reason of the last check that decided to stop (its ``stop_check``); a stop the policy no
    longer makes at the floor still ends the run there (Lightning keeps ``should_stop``); without
    the record, replay stops where the policy first says so."""
    metrics = np.array([2.0, 1.0, 0.5, *[0.6] * 7])  # a plateau stop (patience 3) at the 6th check
    curve = Curve("a", np.arange(1, 11), metrics, np.arange(1.0, 11.0), False)
    config = StoppingConfig(patience=3, min_epochs=1, min_relative_gain=None)
    plain = replay_curve(curve, config)
    assert (plain.stop_epoch, plain.stop_reason, plain.stop_check) == (6, StopReason.PLATEAU, 5)
    held = replay_curve(replace(curve, trainer_min_epochs=8), config)
    assert (held.stop_epoch, held.stop_reason, held.stop_check, held.cost_at_stop) == (
        8,
        StopReason.PLATEAU,
        7,
        8.0,
    )
    released = replace(curve, metrics=np.array([2.0, 1.0, 0.5, 0.6, 0.6, 0.6, 0.1, 0.2, 0.2, 0.2]))
    again = replay_curve(replace(released, trainer_min_epochs=8), config)
    assert (again.stop_epoch, again.stop_reason, again.stop_check) == (8, StopReason.PLATEAU, 5)
    by_steps = replay_curve(replace(curve, trainer_min_steps=90, check_steps=np.arange(1, 11) * 10), config)
    assert (by_steps.stop_epoch, by_steps.stop_check) == (9, 8)
    beyond = replay_curve(replace(curve, trainer_min_epochs=20), config)  # the log ends first
    assert (beyond.stop_epoch, beyond.stop_reason, beyond.stop_check) == (10, StopReason.PLATEAU, 9)
