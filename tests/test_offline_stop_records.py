"""``replay`` and ``report`` read a stopped run from the stopper's records of its checks.

Real fits of the digits task (several checks an epoch, an energy budget, a metric NaN from the
first validation) logged at once to a ``CSVLogger``, a ``TensorBoardLogger`` and a real sqlite
MLflow store, without ``energy_summary.json`` (``EnergyMonitor(summary=False)``, as after a killed
run), read back through the command line as users run it (``main(argv)``), under both Lightning
namespaces: against optimizer steps (``--cost-key step``) the checks are the stopper's, each at its
step, and a recorded energy budget is not compared with steps; the report of a Lightning log
finds the stop as the MLflow run's tags hold it; a metric NaN from the first check is not drawn;
damaged records get one refusal in both commands.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import one_error_line, replay_decision
from test_stopper_progress import BATCHES, EPOCH_KWH, check_curve_module, fit, flat_after

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor
from lightning_green.cli import main

pytest.importorskip("mlflow")


def _loggers(tmp_path: Path, sqlite_uri: str, ns, name: str) -> tuple[list, dict[str, list[str]]]:
    """A CSVLogger, a TensorBoardLogger and an MLFlowLogger, and each one's input to ``report``."""
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name=name, tracking_uri=sqlite_uri)
    loggers = [
        ns.loggers.CSVLogger(str(tmp_path), name="csv"),
        ns.loggers.TensorBoardLogger(str(tmp_path), name="tb"),
        mlflow_logger,
    ]

    def inputs() -> dict[str, list[str]]:
        (events,) = (tmp_path / "tb" / "version_0").glob("events.out.tfevents.*")
        return {
            "csv": [str(tmp_path / "csv" / "version_0" / "metrics.csv")],
            "tensorboard": [str(events)],
            "mlflow": ["--mlflow-uri", sqlite_uri, "--run-id", mlflow_logger.run_id],
        }

    return loggers, inputs  # type: ignore[return-value]


def _replay_input(source: str, report_input: list[str], name: str) -> list[str]:
    return report_input if source != "mlflow" else [*report_input[:2], "--experiment", name]


def test_a_stop_inside_an_epoch_against_steps_and_without_a_summary(tmp_path, sqlite_uri, monkeypatch, ns):
    """Four checks an epoch, stopped at a check inside an epoch: ``replay --cost-key step`` replays the
    stopper's checks (fractional epochs, each at its step) and stops where the run did, as in kWh;
    ``report --cost-key step`` projects the steps left to the plan from them; the report of each
    log without a summary gives the stop reason and stopped epoch the MLflow run's tags hold."""
    from doubles import install_scripted_meter

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1)
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    loggers, inputs = _loggers(tmp_path, sqlite_uri, ns, "inside")
    module = ns.module(check_curve_module)(flat_after(6, 80), steps_per_check=BATCHES // 4)
    fit(tmp_path, ns, [stopper, monitor], module, logger=loggers, max_epochs=20, val_check_interval=0.25)
    assert stopper.stop_reason is not None
    stopped_at = stopper.last_decision.progress  # epochs completed at the stopping check
    assert not float(stopped_at).is_integer()  # inside an epoch
    steps_left = (20 - stopped_at) * BATCHES  # to the planned end, one optimizer step a batch

    out, png, as_json = tmp_path / "d.csv", tmp_path / "r.png", tmp_path / "r.json"
    for source, report_input in inputs().items():
        replay_input = _replay_input(source, report_input, "inside")
        for cost_key in ("energy/total_kwh", "step"):
            assert main(["replay", *replay_input, "-o", str(out), "--cost-key", cost_key]) == 0, source
            row = replay_decision(out)
            assert row["stop_reason"] == stopper.stop_reason.value, (source, cost_key)
            assert float(row["stop_epoch"]) == pytest.approx(stopped_at, rel=1e-12), (source, cost_key)
        assert float(row["cost_not_run_projected"]) == pytest.approx(steps_left), source

        report = ["report", *report_input, "-o", str(png), "--json", str(as_json)]
        assert main([*report, "--cost-key", "step"]) == 0, source
        cost = json.loads(as_json.read_text())["cost"]
        assert [p["epochs"] for p in cost["points"]][-1] == pytest.approx(stopped_at, rel=1e-12)
        assert cost["not_run_projected"] == pytest.approx(steps_left), source
        # Against kWh, rebuilt from the metrics (no summary): the stop as the stopper made it.
        assert main(report) == 0, source
        summary = json.loads(as_json.read_text())
        assert summary["rebuilt_from_metrics"]
        assert (summary["stop_reason"], summary["stopped_epoch"]) == (
            stopper.stop_reason.value,
            stopper.stopped_epoch,
        ), source


def test_a_recorded_energy_budget_is_not_compared_with_steps(tmp_path, sqlite_uri, monkeypatch, capsys, ns):
    """A run its energy budget stopped: replayed against kWh it stops on the budget where it did;
    against steps the recorded budget (kWh) is not applied, with a note, rather than compared with
    step counts (a stop at the first check); the report of each log without a summary says
    energy_budget at the epoch it stopped in."""
    from doubles import install_scripted_meter

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", energy_budget_kwh=3.5 * EPOCH_KWH)
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    loggers, inputs = _loggers(tmp_path, sqlite_uri, ns, "budget")
    module = ns.module(check_curve_module)(flat_after(40, 40), steps_per_check=BATCHES)
    fit(tmp_path, ns, [stopper, monitor], module, logger=loggers, max_epochs=20)
    assert stopper.stop_reason is not None and stopper.stop_reason.value == "energy_budget"
    done = stopper.stopped_epoch + 1

    out, png, as_json = tmp_path / "d.csv", tmp_path / "r.png", tmp_path / "r.json"
    capsys.readouterr()
    for source, report_input in inputs().items():
        replay_input = _replay_input(source, report_input, "budget")
        assert main(["replay", *replay_input, "-o", str(out)]) == 0, source
        row = replay_decision(out)
        assert (row["stop_reason"], int(row["stop_epoch"])) == ("energy_budget", done), source
        assert "recorded an energy budget" not in capsys.readouterr().out
        assert main(["replay", *replay_input, "-o", str(out), "--cost-key", "step"]) == 0, source
        row = replay_decision(out)
        assert row["stop_reason"] != "energy_budget" and int(row["stop_epoch"]) == done, source
        printed = capsys.readouterr().out
        assert (
            "note: 1 run(s) recorded an energy budget (lightning_green.energy_budget_kwh): not applied"
            in (printed)
        )
        assert "the cost is in steps, not kWh" in printed
        assert main(["report", *report_input, "-o", str(png), "--json", str(as_json)]) == 0, source
        summary = json.loads(as_json.read_text())
        assert (summary["stop_reason"], summary["stopped_epoch"]) == ("energy_budget", done - 1), source
        assert "stop reason" in capsys.readouterr().out


def nan_module(base: type) -> type:
    """Trains the digits CNN for real; its validation loss is NaN from the first validation."""
    import torch

    class NanModule(base):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.tensor(math.nan), sync_dist=True)

    return NanModule


def test_a_metric_nan_from_the_first_check_is_not_drawn(tmp_path, sqlite_uri, monkeypatch, capsys, ns):
    """A run stopped on a NaN metric at its first check, reported from its metrics (no summary): the
    report is written (the NaN value is not drawn, as a summary file holds it as null) with the
    stop, for each logger."""
    from doubles import install_scripted_meter

    from lightning_green.report import summary_from_log
    from lightning_green.report_plot import draw_summary, metric_points

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    loggers, inputs = _loggers(tmp_path, sqlite_uri, ns, "nan")
    fit(tmp_path, ns, [stopper, monitor], ns.module(nan_module)(), logger=loggers, max_epochs=5)
    assert stopper.stop_reason is not None and stopper.stop_reason.value == "non_finite"

    png, as_json = tmp_path / "r.png", tmp_path / "r.json"
    for source, report_input in inputs().items():
        assert main(["report", *report_input, "-o", str(png), "--json", str(as_json)]) == 0, source
        assert png.stat().st_size > 0
        summary = json.loads(as_json.read_text())
        assert summary["rebuilt_from_metrics"] and summary["stop_reason"] == "non_finite", source
        png.unlink()
    rebuilt = summary_from_log(inputs()["csv"][0])
    assert math.isnan(rebuilt["per_epoch"][0]["metric"]) and metric_points(rebuilt) == []
    assert [ln for ln in draw_summary(rebuilt).axes[0].get_lines() if ln.get_label() == "val_loss"] == []


def _edited(log: Path, to: Path, column: str, value: str, nth: int = 0) -> Path:
    """A copy of the CSVLogger folder of ``log``, the ``nth`` logged cell of ``column`` set to ``value``."""
    shutil.copytree(log.parent, to)
    rows = list(csv.reader(log.open()))
    at = rows[0].index(column)
    filled = [r for r in rows[1:] if r[at] != ""]
    filled[nth][at] = value
    with (to / "metrics.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return to / "metrics.csv"


def test_damaged_stop_records_get_one_refusal_in_both_commands(tmp_path, sqlite_uri, monkeypatch, capsys, ns):
    """A value the callbacks never log (NaN, negative) in the energy of an epoch, in the running
    total, in what the stop left unrun or in the kWh of a check: ``report`` refuses it with one
    error line naming the metric, the value and the step, and ``replay`` refuses it with the same
    line (whether or not it reads that record) instead of reading a NaN or -1 as none, or the
    report printing "nan kWh not spent" or failing on a NaN as an integer."""
    from doubles import install_scripted_meter
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=2, min_epochs=1)
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    loggers, inputs = _loggers(tmp_path, sqlite_uri, ns, "damaged")
    module = ns.module(check_curve_module)(flat_after(3, 20), steps_per_check=BATCHES)
    fit(tmp_path, ns, [stopper, monitor], module, logger=loggers, max_epochs=20)
    assert stopper.stop_reason is not None
    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    out, png = tmp_path / "d.csv", tmp_path / "r.png"
    capsys.readouterr()
    cases = [
        ("energy/not_run_kwh_projected", "nan"),
        ("energy/not_run_kwh_projected", "-1"),
        ("energy/check_kwh", "nan"),
        ("energy/epoch_kwh", "nan"),
        ("energy/total_kwh", "nan"),
        ("energy/avg_power_w", "-3"),
    ]
    for k, (column, value) in enumerate(cases):
        edited = _edited(log, tmp_path / f"case{k}", column, value, nth=-1 if "not_run" in column else 1)
        assert main(["report", str(edited), "-o", str(png)]) == 2, (column, value)
        err = one_error_line(capsys)
        assert f"metric {column!r} must be finite and >= 0, got {float(value)!r}" in err or (
            f"cumulative cost {column!r} must be finite and >= 0, got {float(value)!r}" in err
        ), err
        assert main(["replay", str(edited), "-o", str(out)]) == 2, (column, value)
        assert one_error_line(capsys) == err and not out.exists()
        assert not png.exists()

    # A tagged MLflow run (its stop from the tag, not replayed): the kWh of a check refused all the same.
    run_id = inputs()["mlflow"][-1]
    client = MlflowClient(sqlite_uri)
    (check,) = [m for m in client.get_metric_history(run_id, "energy/check_kwh")][1:2]
    client.log_metric(run_id, "energy/check_kwh", math.nan, step=check.step, timestamp=check.timestamp + 1)
    assert main(["report", *inputs()["mlflow"], "-o", str(png)]) == 2
    err = one_error_line(capsys)
    assert f"cumulative cost 'energy/check_kwh' must be finite and >= 0, got nan at step {check.step}" in err
    assert main(["replay", "--mlflow-uri", sqlite_uri, "--experiment", "damaged", "-o", str(out)]) == 2
    assert one_error_line(capsys) == err


def test_a_log_without_a_summary_of_a_run_to_its_end_says_none(tmp_path, sqlite_uri, monkeypatch, ns):
    """A run the stopper never stopped, its last check inside the last epoch (every third batch of
    eight): the report of each log without a summary says ``none`` and "ran to max_epochs", as the
    summary it printed; the same log cut after an earlier epoch (a killed run) gives no reason, as
    the log cannot tell a killed run from one that ended."""
    from doubles import install_scripted_meter

    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=50, min_relative_gain=None)
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    loggers, inputs = _loggers(tmp_path, sqlite_uri, ns, "to_end")
    module = ns.module(check_curve_module)(flat_after(100, 100), steps_per_check=3)
    fit(tmp_path, ns, [stopper, monitor], module, logger=loggers, max_epochs=4, val_check_interval=3)
    assert stopper.stop_reason is None and not float(stopper.last_decision.progress).is_integer()

    png, as_json = tmp_path / "r.png", tmp_path / "r.json"
    for source, report_input in inputs().items():
        assert main(["report", *report_input, "-o", str(png), "--json", str(as_json)]) == 0, source
        summary = json.loads(as_json.read_text())
        assert summary["rebuilt_from_metrics"], source
        assert (summary["stop_reason"], summary["training_end"]) == ("none", "ran to max_epochs=4"), source

    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    rows = list(csv.reader(log.open()))
    at = rows[0].index("step")
    cut = tmp_path / "cut"  # the first two epochs' rows
    shutil.copytree(log.parent, cut)
    with (cut / "metrics.csv").open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if int(r[at]) < 2 * BATCHES)])
    assert main(["report", str(cut / "metrics.csv"), "-o", str(png), "--json", str(as_json)]) == 0
    assert json.loads(as_json.read_text())["stop_reason"] is None
