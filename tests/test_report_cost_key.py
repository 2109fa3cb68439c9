"""``lightning-green report`` and ``replay`` agree: ``--cost-key`` (one option, one check) and ``--mode``.

Real fits of the digits task, logged to a real sqlite MLflow store and a ``CSVLogger``, read back
through the command line as users run it (``main(argv)``), under both Lightning namespaces.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import make_trainer, one_error_line, replay_decision
from doubles import curve_module, install_scripted_meter, saturating_curve

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor
from lightning_green.cli import main

pytest.importorskip("mlflow")

FAST = dict(limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0)
STEPS_PER_EPOCH = 4  # limit_train_batches: one optimizer step a batch


def _val_steps(log: Path, metric: str = "val_loss") -> list[int]:
    """The optimizer steps done at each point of ``metric`` in a CSVLogger log: its step plus one
    (Lightning logs a point of the training at the steps done, minus one)."""
    return [int(r["step"]) + 1 for r in csv.DictReader(log.open()) if r[metric]]


def test_report_cost_key_step_draws_the_curve_replay_replays(tmp_path, sqlite_uri, capsys, monkeypatch, ns):
    """A run its stopper stopped, reported with ``--cost-key step`` as it is replayed: the curve drawn
    is replay's (its points at the steps the metric was logged at), the best and the cost after it
    are in steps, and the rest of the run the stop left unrun is replay's projection, in steps (it
    used to be the kWh the stopper recorded, in replay too). Bad values get the same refusals as in
    replay: a blank key, a key the run never logged, a series that decreases."""
    from lightning_green.report_plot import draw_summary

    install_scripted_meter(monkeypatch)
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name="stopped", tracking_uri=sqlite_uri)
    loggers = [ns.loggers.CSVLogger(str(tmp_path), name="csv"), mlflow_logger]
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", min_epochs=1)
    ns.pl.seed_everything(0)
    make_trainer(tmp_path, [stopper], logger=loggers, max_epochs=16, lightning=ns, **FAST).fit(
        ns.module(curve_module)(saturating_curve(16, tau=1.5)), datamodule=ns.DigitsDataModule()
    )
    assert stopper.stop_reason is not None
    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    val_steps = _val_steps(log)
    assert val_steps[:2] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]  # the steps done, not the logged step
    sources = {  # name: (report's input, replay's input)
        "mlflow": (
            ["--mlflow-uri", sqlite_uri, "--run-id", mlflow_logger.run_id],
            ["--mlflow-uri", sqlite_uri, "--experiment", "stopped"],
        ),
        "csv": ([str(log)], [str(log)]),
    }
    out, png, as_json = tmp_path / "d.csv", tmp_path / "r.png", tmp_path / "r.json"
    for name, (report_input, replay_input) in sources.items():
        assert main(["replay", *replay_input, "-o", str(out), "--cost-key", "step"]) == 0, name
        assert "(cost in steps)" in capsys.readouterr().out
        decision = replay_decision(out)
        report = ["report", *report_input, "-o", str(png), "--json", str(as_json)]
        assert main([*report, "--cost-key", "step"]) == 0, name
        printed = capsys.readouterr().out
        summary = json.loads(as_json.read_text())
        cost = summary["cost"]
        assert cost["key"] == "step" and cost["unit"] == "steps"
        # The curve drawn is replay's: a point at every step the metric was logged at (the optimizer
        # steps done there), to the stop.
        assert [p["cost"] for p in cost["points"]] == val_steps
        assert cost["points"][-1]["cost"] == float(decision["cost_at_stop"]) == float(decision["cost_total"])
        (line,) = [ln for ln in draw_summary(summary).axes[0].get_lines() if ln.get_label() == "val_loss"]
        assert list(line.get_xdata()) == val_steps
        # Each epoch's energy is a bar over the steps it took (its end: the step its energy was logged at).
        assert [e["cost"] for e in summary["per_epoch"]] == val_steps
        # The figures are in steps.
        values = [p["metric"] for p in cost["points"]]
        best = values.index(min(values))
        assert cost["best_metric"] == min(values) and cost["to_best"] == val_steps[best]
        assert cost["after_best"] == cost["total"] - val_steps[best] >= 0
        # The run ended at its last check: its end records (energy/run_kwh, logged after training at
        # the steps done) add no step.
        assert cost["total"] == val_steps[-1]
        assert f"after {val_steps[best]:g} steps" in printed and "steps spent after best" in printed
        # What the stop left unrun, in steps: replay's projection, the same in both commands.
        epochs_not_run = summary["stop_savings"]["epochs_not_run"]
        assert epochs_not_run > 0
        projected = float(decision["cost_not_run_projected"])
        assert projected == pytest.approx(STEPS_PER_EPOCH * epochs_not_run)  # steps, not kWh
        assert cost["not_run_projected"] == pytest.approx(projected) and cost["at_stop"] == val_steps[-1]
        assert f"({projected:.4g} steps)" in printed
        assert "to draw against 'step'" in printed  # the summary beside the run is against kWh
        # Without --cost-key the report is unchanged: the run's own summary, against kWh.
        assert main(report) == 0
        assert "cost" not in json.loads(as_json.read_text())
        capsys.readouterr()

        # Bad values: refused as replay refuses them, one error line, exit 2, nothing written.
        for written in (png, as_json, out):
            written.unlink(missing_ok=True)
        if name == "mlflow":  # checked before the run is read: the same for every input
            assert main([*report, "--cost-key", " "]) == 2
            err = one_error_line(capsys)
            assert "--cost-key ' ' is empty" in err and "'energy/total_kwh'" in err and "'step'" in err
            assert main(["replay", *replay_input, "-o", str(out), "--cost-key", " "]) == 2
            assert one_error_line(capsys) == err  # one check for both commands
            # The per-epoch energy is the same every epoch here, so it never decreases: refused by name.
            assert main([*report, "--cost-key", "energy/epoch_kwh"]) == 2
            err = one_error_line(capsys)
            assert "'energy/epoch_kwh' is logged per epoch or per check, not as a running total" in err
            assert main(["replay", *replay_input, "-o", str(out), "--cost-key", "energy/epoch_kwh"]) == 2
            assert one_error_line(capsys) == err
        assert main([*report, "--cost-key", "tokens_seen"]) == 2
        err = one_error_line(capsys)
        assert "logged no 'tokens_seen' (--cost-key)" in err and "'step' (optimizer steps)" in err
        # A series that is no running total: replay's refusal, word for word.
        assert main(["replay", *replay_input, "-o", str(out), "--cost-key", "val_loss"]) == 2
        replay_err = one_error_line(capsys)
        assert "cumulative cost 'val_loss' decreases at step" in replay_err
        assert main([*report, "--cost-key", "val_loss"]) == 2
        assert one_error_line(capsys) == replay_err
        assert not png.exists() and not as_json.exists() and not out.exists()


def test_report_cost_key_step_draws_a_run_logged_without_energy(tmp_path, sqlite_uri, capsys, ns):
    """A fit logged without lightning_green: the report points to ``--cost-key step`` as replay does,
    and with it draws the metric against the optimizer steps, from MLflow as from the CSVLogger
    log, saying the energy was not logged (not zero)."""
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name="plain", tracking_uri=sqlite_uri)
    loggers = [ns.loggers.CSVLogger(str(tmp_path), name="csv"), mlflow_logger]
    ns.pl.seed_everything(0)
    make_trainer(tmp_path, [], logger=loggers, max_epochs=3, lightning=ns, **FAST).fit(
        ns.DigitsClassifier(), datamodule=ns.DigitsDataModule()
    )
    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    val_steps = _val_steps(log, "val_acc")
    assert val_steps == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH]
    accuracies = [float(r["val_acc"]) for r in csv.DictReader(log.open()) if r["val_acc"]]
    png, as_json, out = tmp_path / "r.png", tmp_path / "r.json", tmp_path / "d.csv"
    mlflow_input = ["--mlflow-uri", sqlite_uri]
    for report_input, replay_input in (
        ([*mlflow_input, "--run-id", mlflow_logger.run_id], [*mlflow_input, "--experiment", "plain"]),
        ([str(log)], [str(log)]),
    ):
        for written in (png, as_json):
            written.unlink(missing_ok=True)
        report = ["report", *report_input, "-o", str(png), "--json", str(as_json)]
        assert main(report) == 1
        assert "--cost-key step" in one_error_line(capsys)
        assert not png.exists() and not as_json.exists()
        options = ["--monitor", "val_acc", "--mode", "max", "--cost-key", "step"]
        assert main(["replay", *replay_input, "-o", str(out), *options]) == 0
        decision = replay_decision(out)
        assert main([*report, *options]) == 0
        printed = capsys.readouterr().out
        summary = json.loads(as_json.read_text())
        assert summary["total_kwh"] is None and summary["energy_logged"] is False
        assert summary["monitor"] == "val_acc" and summary["mode"] == "max" and summary["epochs"] == 3
        cost = summary["cost"]
        assert [p["cost"] for p in cost["points"]] == val_steps
        assert [p["metric"] for p in cost["points"]] == pytest.approx(accuracies)
        assert cost["points"][-1]["cost"] == float(decision["cost_total"])
        assert cost["best_metric"] == pytest.approx(max(accuracies))
        assert "energy" in printed and "not logged" in printed and "kWh" not in printed
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_refuses_mode_for_a_run_with_no_metric_to_draw(tmp_path, sqlite_uri, capsys, monkeypatch, ns):
    """A run logged with ``EnergyMonitor()`` alone (no monitored metric): ``report --mode max`` used to
    be accepted and change nothing. It is refused as replay refuses the run without ``--monitor``:
    one error line naming --mode and how to name a metric, exit 2, nothing written; with
    ``--monitor`` it draws that metric in that direction."""
    install_scripted_meter(monkeypatch)
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name="energy-only", tracking_uri=sqlite_uri)
    loggers = [ns.loggers.CSVLogger(str(tmp_path), name="csv"), mlflow_logger]
    ns.pl.seed_everything(0)
    make_trainer(tmp_path, [EnergyMonitor()], logger=loggers, max_epochs=2, lightning=ns, **FAST).fit(
        ns.DigitsClassifier(), datamodule=ns.DigitsDataModule()
    )
    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    png, as_json, out = tmp_path / "r.png", tmp_path / "r.json", tmp_path / "d.csv"
    mlflow_input = ["--mlflow-uri", sqlite_uri]
    for report_input, replay_input in (
        ([*mlflow_input, "--run-id", mlflow_logger.run_id], [*mlflow_input, "--experiment", "energy-only"]),
        ([str(log)], [str(log)]),
    ):
        report = ["report", *report_input, "-o", str(png), "--json", str(as_json)]
        assert main(report) == 0  # energy only: no metric drawn
        assert json.loads(as_json.read_text())["monitor"] is None
        capsys.readouterr()
        for written in (png, as_json):
            written.unlink()
        # replay refuses the run without a metric; report refuses --mode without one, the same way
        assert main(["replay", *replay_input, "-o", str(out), "--mode", "max"]) == 2
        assert "recorded no lightning_green.monitor: name the monitored metric (--monitor)" in (
            one_error_line(capsys)
        )
        for cost_key in ([], ["--cost-key", "step"]):
            assert main([*report, "--mode", "max", *cost_key]) == 2
            err = one_error_line(capsys)
            assert "--mode max" in err and "no metric to draw" in err and "--monitor" in err
            assert "recorded no lightning_green.monitor" in err
            assert not png.exists() and not as_json.exists() and not out.exists()
        assert main([*report, "--monitor", "val_acc", "--mode", "max"]) == 0
        summary = json.loads(as_json.read_text())
        assert summary["monitor"] == "val_acc" and summary["mode"] == "max"
        capsys.readouterr()
