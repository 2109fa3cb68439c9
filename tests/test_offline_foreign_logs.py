"""What ``replay`` and ``report`` make of logs lightning_green did not write.

Hugging Face Trainer logs (an MLflow run its ``MLflowCallback`` logged, a CSV export of
``trainer_state.json``'s ``log_history``) are read with their ``epoch`` as the epochs completed; a
log of steps that is neither Lightning's nor the Trainer's is refused rather than misread; a log
skipped for lacking the metric or the cost is named with what it lacks and what it holds; curves
of different metrics are summarised apart.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import one_error_line, replay_decision

from lightning_green.cli import main
from lightning_green.offline import read_curves_csv, read_log_curve, replay, summarize
from lightning_green.policy import StoppingConfig

HF_DATA = Path(__file__).resolve().parent / "data" / "hf_trainer"
"""A Trainer's ``trainer_state.json`` (6 epochs of 20 steps, evaluated each epoch, logged every 10
steps) and its ``log_history`` exported with ``pandas.DataFrame(log_history).to_csv(index=False)``."""
HF_STATE = json.loads((HF_DATA / "trainer_state.json").read_text())
EVAL_STEPS = [20, 40, 60, 80, 100, 120]
# eval_loss rises at 4 epochs completed: with patience 1 and at least 5 epochs, no stop is allowed
# there (read one epoch late, the rise is at 5 epochs and the run stops).
BUMP = ["--patience", "1", "--min-epochs", "5"]
HF_OPTIONS = ["--monitor", "eval_loss", "--cost-key", "step"]


def hf_mlflow_run(uri: str) -> str:
    """A run logged as transformers' ``MLflowCallback`` logs a Trainer: the training arguments as
    parameters, the numbers of every ``log_history`` entry at ``step=global_step`` (``epoch`` among
    them, the epochs completed as a float)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("hf"), run_name="distilbert-sst2")
    args = {
        "num_train_epochs": 6,
        "learning_rate": 5e-05,
        "per_device_train_batch_size": 8,
        "logging_steps": 10,
    }
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in args.items()])
    for i, entry in enumerate(HF_STATE["log_history"]):
        step = entry["step"]
        numbers = [
            Metric(k, float(v), 1_700_000_000_000 + 1000 * i, step) for k, v in entry.items() if k != "step"
        ]
        client.log_batch(run.info.run_id, metrics=numbers)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def true_epochs_csv(path: Path) -> Path:
    """The Trainer's evaluations as a curves CSV: the epochs completed, the step as the cost."""
    rows = [e for e in HF_STATE["log_history"] if "eval_loss" in e]
    lines = [f"hf,{e['epoch']:g},{e['eval_loss']!r},0,{e['step']},\n" for e in rows]
    path.write_text("curve_id,epoch,metric,higher_is_better,time_s,energy_J\n" + "".join(lines))
    return path


def decision(row: dict[str, str]) -> tuple[str, ...]:
    return (
        row["stop_epoch"],
        row["stop_reason"],
        row["best_metric_at_stop"],
        row["cost_at_stop"],
        row["cost_total"],
    )


def test_a_hugging_face_trainer_csv_export_is_read_with_its_epochs_completed(tmp_path: Path, capsys) -> None:
    """HF writes ``epoch`` as the epochs completed (1.0 after the first): replay and report read them
    so, not as Lightning's 0-based index (one epoch too many, and a stop one epoch early)."""
    log = HF_DATA / "log_history.csv"
    curve = read_log_curve(log, "eval_loss", cost_key="step")
    assert curve is not None and curve.epochs.tolist() == [1, 2, 3, 4, 5, 6]
    assert curve.check_steps.tolist() == EVAL_STEPS and curve.hf_trainer and curve.curve_id == str(log)
    out, expected = tmp_path / "d.csv", tmp_path / "e.csv"
    long = true_epochs_csv(tmp_path / "long.csv")
    for options in ([], BUMP):
        assert main(["replay", str(log), *HF_OPTIONS, *options, "-o", str(out)]) == 0
        printed = capsys.readouterr().out
        assert main(["replay", str(long), *options, "-o", str(expected)]) == 0
        assert decision(replay_decision(out)) == decision(replay_decision(expected))
        assert "read 1 Hugging Face Trainer log(s) (their epoch as the epochs completed" in printed
    assert decision(replay_decision(out))[:2] == ("6", "none")  # the rise came at 4 epochs, below 5

    summary = tmp_path / "s.json"
    report = ["report", str(log), *HF_OPTIONS, "--json", str(summary), "-o", str(tmp_path / "r.png")]
    assert main(report) == 0
    printed = capsys.readouterr().out
    assert re.search(r"epochs +6\n", printed) and "Hugging Face Trainer" in printed
    drawn = json.loads(summary.read_text())
    assert drawn["epochs"] == 6 and [p["epochs"] for p in drawn["cost"]["points"]] == [1, 2, 3, 4, 5, 6]
    assert drawn["cost"]["best_epoch"] == 5  # 0-based: the sixth epoch, after 120 steps


def test_a_hugging_face_trainer_mlflow_run_is_read_with_its_epochs_completed(
    tmp_path: Path, sqlite_uri: str, capsys
) -> None:
    """A run logged by the Trainer's MLflowCallback makes the decisions of its true epochs."""
    pytest.importorskip("mlflow")
    run_id = hf_mlflow_run(sqlite_uri)
    out, expected = tmp_path / "d.csv", tmp_path / "e.csv"
    long = true_epochs_csv(tmp_path / "long.csv")
    source = ["--mlflow-uri", sqlite_uri, "--experiment", "hf"]
    for options in ([], BUMP):
        assert main(["replay", *source, *HF_OPTIONS, *options, "-o", str(out)]) == 0
        printed = capsys.readouterr().out
        assert main(["replay", str(long), *options, "-o", str(expected)]) == 0
        assert decision(replay_decision(out)) == decision(replay_decision(expected))
        assert "read 1 Hugging Face Trainer log(s) (their epoch as the epochs completed" in printed
    summary = tmp_path / "s.json"
    report = ["report", "--mlflow-uri", sqlite_uri, "--run-id", run_id, *HF_OPTIONS, "--json", str(summary)]
    assert main([*report, "-o", str(tmp_path / "r.png")]) == 0
    drawn = json.loads(summary.read_text())
    assert drawn["epochs"] == 6 and drawn["cost"]["best_epoch"] == 5 and drawn["hf_trainer_log"]


def test_a_log_of_steps_with_another_trainers_epochs_is_refused_not_misread(tmp_path: Path, capsys) -> None:
    """Without the Trainer's own columns the export is not recognised: its fractional epochs are not
    Lightning's 0-based index, and replay says so rather than read every check an epoch late."""
    with (HF_DATA / "log_history.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = ["epoch", "step", "loss", "learning_rate", "eval_loss", "eval_accuracy"]
    stripped = tmp_path / "log_history.csv"
    with stripped.open("w", newline="") as f:
        writer = csv.DictWriter(f, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert main(["replay", str(stripped), *HF_OPTIONS, "-o", str(tmp_path / "d.csv")]) == 2
    line = one_error_line(capsys)
    assert f"Lightning CSV log {stripped}: metric 'epoch' is 0.5 at step 10" in line
    assert "not read as a Lightning log" in line and not (tmp_path / "d.csv").exists()


def test_a_skipped_log_is_named_with_what_it_lacks_and_what_it_logged(
    tmp_path: Path, sqlite_uri: str, capsys
) -> None:
    """The --cost-key step hint only where it applies (the energy is what is missing); a misspelt
    --monitor is named as such, with the close match and the metrics the log has."""
    empty = tmp_path / "empty" / "version_0" / "metrics.csv"
    plain = tmp_path / "plain" / "version_0" / "metrics.csv"
    for log in (empty, plain):
        log.parent.mkdir(parents=True)
    empty.write_text("epoch,step,train_loss,val_loss\n")
    plain.write_text(
        "epoch,step,train_loss,val_loss\n"
        + "".join(f"{e},{10 * e + 9},0.5,{1 / (e + 1)}\n" for e in range(5))
    )
    out = str(tmp_path / "d.csv")
    hint = "--cost-key step replays them with optimizer steps as the cost"

    assert main(["replay", str(empty), "--monitor", "val_loss", "--cost-key", "step", "-o", out]) == 1
    printed = capsys.readouterr().out
    assert f"  {empty}: nothing logged" in printed and hint not in printed

    assert main(["replay", str(plain), "--monitor", "val_los", "--cost-key", "step", "-o", out]) == 1
    printed = capsys.readouterr().out
    assert (
        f"  {plain}: no 'val_los' (--monitor; did you mean 'val_loss'?); "
        "it logged epoch, train_loss, val_loss" in printed
    )
    assert hint not in printed

    assert main(["replay", str(plain), "--monitor", "val_loss", "-o", out]) == 1
    printed = capsys.readouterr().out
    assert (
        hint in printed
        and f"  {plain}: no 'energy/total_kwh'; it logged epoch, train_loss, val_loss" in printed
    )

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri)
    run = client.create_run(client.create_experiment("old"))
    points = [
        Metric(k, v, 1_700_000_000_000 + s, s)
        for s in (9, 19)
        for k, v in (("val_loss", 0.5), ("epoch", 0.0))
    ]
    client.log_batch(run.info.run_id, metrics=points)
    client.set_terminated(run.info.run_id)
    source = ["--mlflow-uri", sqlite_uri, "--experiment", "old"]
    assert main(["replay", *source, "--monitor", "val_los", "--cost-key", "step", "-o", out]) == 1
    printed = capsys.readouterr().out
    assert (
        f"  {run.info.run_id}: no 'val_los' (--monitor; did you mean 'val_loss'?); it logged epoch, val_loss"
        in (printed)
    )
    assert hint not in printed


HEADER = "curve_id,epoch,metric,higher_is_better,time_s,energy_J,metric_name\n"


def test_curves_of_different_metrics_are_summarised_apart(tmp_path: Path, capsys) -> None:
    """A mean regret is in its metric's units: a loss and a perplexity are summarised apart, never
    averaged into one figure."""
    loss, ppl = tmp_path / "loss.csv", tmp_path / "ppl.csv"
    loss.write_text(
        HEADER + "".join(f"r1,{k},{0.4 * 0.7**k + 0.1:.5f},0,{10 * k},,val_loss\n" for k in range(1, 21))
    )
    ppl.write_text(
        HEADER + "".join(f"r2,{k},{20 * (1 + 0.8**k):.4f},0,{12 * k},,perplexity\n" for k in range(1, 25))
    )
    results = replay([*read_curves_csv(loss), *read_curves_csv(ppl)], StoppingConfig())
    assert all(r.regret > 0 for r in results)  # each curve's own regret, in its own units
    assert main(["replay", str(loss), str(ppl), "-o", str(tmp_path / "d.csv")]) == 0
    regrets = [ln for ln in capsys.readouterr().out.splitlines() if "mean regret" in ln]
    assert [ln.split(" mean regret")[0] for ln in regrets] == [
        "[val_loss, 1 curves]",
        "[perplexity, 1 curves]",
    ]
    assert [float(ln.split("mean regret: ")[1].split()[0]) for ln in regrets] == pytest.approx(
        [r.regret for r in results], rel=1e-3
    )

    from lightning_green.offline import summarize_per_metric

    with pytest.raises(ValueError, match=r"results of 2 metrics .* a mean regret mixes their units"):
        summarize(results)
    per_metric = summarize_per_metric(results)
    assert [(m.metric_name, m.summary.n_curves) for m in per_metric] == [("val_loss", 1), ("perplexity", 1)]
    assert [m.summary.mean_regret for m in per_metric] == [r.regret for r in results]


def test_a_curve_whose_metric_name_changes_is_refused(tmp_path: Path, capsys) -> None:
    mixed = tmp_path / "mixed.csv"
    rows = [
        f"r1,{k},{0.5 / k:.4f},0,{10 * k},,{'val_loss' if k < 4 else 'perplexity'}\n" for k in range(1, 7)
    ]
    mixed.write_text(HEADER + "".join(rows))
    assert main(["replay", str(mixed), "-o", str(tmp_path / "d.csv")]) == 2
    assert one_error_line(capsys) == (
        f"error: {mixed}:5:7: curve 'r1' changes metric_name: 'perplexity' after 'val_loss' (line 2); "
        "a curve is of one metric (give each metric its own curve_id) (column 'metric_name')"
    )
