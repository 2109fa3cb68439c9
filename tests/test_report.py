"""The end-of-run report: summary, PNG plot, matplotlib as an optional extra, past runs from MLflow."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
import pytorch_lightning as pl
from conftest import make_trainer
from digits import DigitsClassifier, DigitsDataModule
from doubles import CurveModule, curve_module, install_scripted_meter, saturating_curve
from pytorch_lightning.loggers import MLFlowLogger

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor
from lightning_green import cli as green_cli
from lightning_green.report import format_summary, plot_summary

PNG = b"\x89PNG\r\n\x1a\n"
FAST = dict(limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0)


def test_stopped_run_report_has_the_fit_the_projection_and_the_stop(tmp_path, monkeypatch):
    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    pl.seed_everything(0)
    make_trainer(tmp_path, [stopper], max_epochs=40, **FAST).fit(
        CurveModule(saturating_curve(40)), datamodule=DigitsDataModule()
    )
    monitor = stopper.energy_monitor
    summary = json.loads(monitor.summary_path.read_text())
    assert summary["stop_reason"] == "marginal_gain"
    fit = summary["stopping_policy"]["fit"]
    # The fit is drawn over the epochs it used and projected to the planned end of the run.
    assert fit["curve_kwh"][0] >= summary["per_epoch"][0]["total_kwh"] - 1e-12
    assert fit["curve_kwh"][-1] > summary["per_epoch"][-1]["total_kwh"]
    assert len(fit["curve_metric"]) == len(fit["curve_kwh"])
    assert monitor.plot_path.read_bytes()[:8] == PNG
    text = format_summary(summary)
    assert "stop reason" in text and "marginal_gain" in text and "ESTIMATE" not in text  # scripted: nvml


def test_without_matplotlib_the_plot_is_skipped_with_one_info_line(tmp_path, monkeypatch, caplog):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    # Lightning's loggers stop propagating to the root logger when it had no handler at import
    # time, and other tests may have raised their level: listen on them directly, at INFO.
    names = [
        f"{ns}{suffix}"
        for ns in ("pytorch_lightning", "lightning.pytorch")
        for suffix in ("", ".utilities.rank_zero")
    ]
    lightning_loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in lightning_loggers]
    for lg in lightning_loggers:
        lg.addHandler(caplog.handler)
        lg.setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO):
            make_trainer(tmp_path, [monitor], max_epochs=1, **FAST).fit(
                DigitsClassifier(), datamodule=DigitsDataModule()
            )
    finally:
        for lg, level in zip(lightning_loggers, levels, strict=True):
            lg.removeHandler(caplog.handler)
            lg.setLevel(level)
    assert monitor.plot_path is None
    assert monitor.summary_path.exists()  # the JSON summary does not need matplotlib
    notes = {id(r) for r in caplog.records if "matplotlib is not installed" in r.getMessage()}
    assert len(notes) == 1  # one record (seen once or twice by the handler, as propagation has it)
    with pytest.raises(ImportError):
        plot_summary(monitor.last_summary, tmp_path / "x.png")


def test_report_command_rebuilds_a_past_run_from_its_metrics(tmp_path, sqlite_uri, capsys):
    logger = MLFlowLogger(experiment_name="past", tracking_uri=sqlite_uri)
    pl.seed_everything(0)
    make_trainer(
        tmp_path,
        [EnergyMonitor(monitor="val_acc", mode="max", summary=False)],
        logger=logger,
        max_epochs=3,
        **FAST,
    ).fit(DigitsClassifier(), datamodule=DigitsDataModule())
    out, as_json = tmp_path / "past.png", tmp_path / "past.json"
    argv = [
        "report",
        "--mlflow-uri",
        sqlite_uri,
        "--run-id",
        logger.run_id,
        "-o",
        str(out),
        "--json",
        str(as_json),
    ]
    assert green_cli.main(argv) == 0
    assert out.read_bytes()[:8] == PNG
    summary = json.loads(as_json.read_text())
    assert summary["monitor"] == "val_acc" and summary["epochs"] == 3
    assert [e["metric"] is not None for e in summary["per_epoch"]] == [True] * 3
    assert summary["energy_source"] == "estimate" and summary["is_estimate"] is True
    # Another metric than the run's (val_acc, max): lower is better unless --mode says otherwise.
    for extra, pick in (([], min), (["--mode", "max"], max)):
        other_png = str(tmp_path / "other.png")
        assert (
            green_cli.main(
                [*argv[:5], "-o", other_png, "--monitor", "val_loss", *extra, "--json", str(as_json)]
            )
            == 0
        )
        other = json.loads(as_json.read_text())
        assert other["mode"] == pick.__name__
        assert other["best_metric"] == pick(e["metric"] for e in other["per_epoch"])
    # A metric the run never logged is an error naming it, not a report of nothing.
    capsys.readouterr()
    assert green_cli.main([*argv[:5], "-o", str(tmp_path / "x.png"), "--monitor", "val_acc_typo"]) == 2
    err = capsys.readouterr().err
    assert "val_acc_typo" in err and "'val_acc'" in err
    assert not (tmp_path / "x.png").exists()


def test_report_command_on_a_run_without_energy_says_so(tmp_path, sqlite_uri, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    run = client.create_run(client.create_experiment("plain"))
    assert green_cli.main(["report", "--mlflow-uri", sqlite_uri, "--run-id", run.info.run_id]) == 1
    assert "energy/total_kwh" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_report_command_on_a_lightning_log(tmp_path, monkeypatch, capsys, ns, kind):
    """``lightning-green report LOG``: the summary EnergyMonitor wrote beside the log, else rebuilt
    from the logged metrics and hyperparameters, as for an MLflow run without the artifact."""
    install_scripted_meter(monkeypatch)
    if kind == "csv":
        logger = ns.loggers.CSVLogger(str(tmp_path), name="log")
    else:
        logger = ns.loggers.TensorBoardLogger(str(tmp_path), name="log")
    monitor = EnergyMonitor(monitor="val_loss")
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", min_epochs=1)
    module = ns.module(curve_module)(saturating_curve(40))
    trainer = make_trainer(tmp_path, [monitor, stopper], logger=logger, max_epochs=40, lightning=ns, **FAST)
    trainer.fit(module, datamodule=ns.DigitsDataModule())
    assert stopper.stop_reason is not None
    folder = tmp_path / "log" / "version_0"
    (log,) = folder.glob("metrics.csv" if kind == "csv" else "events.out.tfevents.*")
    written = json.loads((folder / "energy_summary.json").read_text())

    as_json = tmp_path / "from_file.json"
    assert green_cli.main(["report", str(log), "-o", str(tmp_path / "a.png"), "--json", str(as_json)]) == 0
    assert json.loads(as_json.read_text()) == written
    assert "stop reason" in capsys.readouterr().out

    (folder / "energy_summary.json").unlink()
    rebuilt_json = tmp_path / "rebuilt.json"
    assert (
        green_cli.main(["report", str(log), "-o", str(tmp_path / "b.png"), "--json", str(rebuilt_json)]) == 0
    )
    rebuilt = json.loads(rebuilt_json.read_text())
    assert rebuilt["rebuilt_from_metrics"] is True and rebuilt["monitor"] == "val_loss"
    assert rebuilt["epochs"] == written["epochs"]
    # The whole run's energy (energy/run_kwh: what followed the last epoch too), as the run printed it.
    assert written["kwh_after_last_epoch"] > 0
    assert rebuilt["total_kwh"] == pytest.approx(written["total_kwh"], rel=1e-6)
    assert rebuilt["kwh_after_last_epoch"] == pytest.approx(written["kwh_after_last_epoch"], rel=1e-5)
    assert rebuilt["best_metric"] == pytest.approx(written["best_metric"], rel=1e-6)
    assert rebuilt["stop_savings"]["kwh_not_spent"] == pytest.approx(
        written["stop_savings"]["kwh_not_spent"], rel=1e-6
    )
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG
    # Another metric drawn: the projected gain stays labelled with the stopper's metric.
    other_json = tmp_path / "other.json"
    argv = [
        "report",
        str(log),
        "--monitor",
        "train_loss",
        "-o",
        str(tmp_path / "c.png"),
        "--json",
        str(other_json),
    ]
    assert green_cli.main(argv) == 0
    other = json.loads(other_json.read_text())
    assert other["monitor"] == "train_loss" and other["stop_savings"]["metric"] == "val_loss"
    assert "val_loss gain forgone" in capsys.readouterr().out


def test_an_output_where_the_log_reader_would_read_it_is_refused_even_when_missing(
    tmp_path, monkeypatch, capsys, ns
):
    """A log folder without its energy_summary.json (removed, or a second logger's from before
    every logger's folder got one): replay or report writing one there (or an event file into a
    TensorBoard log's folder) would make the log unreadable from then on. Refused, naming the path
    and what the log reads it as; the logs still replay and report afterwards."""
    from pathlib import Path

    install_scripted_meter(monkeypatch)
    loggers = [
        ns.loggers.TensorBoardLogger(str(tmp_path), name="tb"),
        ns.loggers.CSVLogger(str(tmp_path), name="csv"),
    ]
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", min_epochs=1)
    module = ns.module(curve_module)(saturating_curve(40))
    make_trainer(tmp_path, [stopper], logger=loggers, max_epochs=6, lightning=ns, **FAST).fit(
        module, datamodule=ns.DigitsDataModule()
    )
    csv_log = tmp_path / "csv" / "version_0" / "metrics.csv"
    (tb_log,) = (tmp_path / "tb" / "version_0").glob("events.out.tfevents.*")
    summary = csv_log.parent / "energy_summary.json"
    assert summary.exists()  # every logger's folder gets the summary
    summary.unlink()  # now missing: the path is still the one the log reader reads
    new_events = tb_log.parent / "events.out.tfevents.decisions"
    for argv, target, role in (
        (["replay", str(csv_log), "-o", str(summary)], summary, "its energy summary"),
        (["report", str(csv_log), "-o", str(tmp_path / "r.png"), "--json", str(summary)], summary, "summary"),
        (
            ["replay", str(tb_log), "-o", str(tmp_path / "d.csv"), "--plot", str(new_events)],
            new_events,
            "event",
        ),
    ):
        capsys.readouterr()
        assert green_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert str(Path(target).resolve()) in err and role in err and "refusing to write into the log" in err
        assert not target.exists() and not (tmp_path / "d.csv").exists() and not (tmp_path / "r.png").exists()
    for log in (csv_log, tb_log):
        assert green_cli.main(["replay", str(log), "-o", str(tmp_path / "d.csv")]) == 0
        assert green_cli.main(["report", str(log), "-o", str(tmp_path / "r.png")]) == 0


def test_report_plot_draws_every_validation_inside_epochs(tmp_path, capsys, ns):
    """With val_check_interval=0.5 the run validates twice an epoch: the report (of its CSVLogger
    log, from the energy_summary.json beside it) draws the metric at every one of those checks,
    in order of the energy up to them, not one point an epoch."""
    from lightning_green.report_plot import draw_summary

    epochs = 3
    logger = ns.loggers.CSVLogger(str(tmp_path), name="log")
    monitor = EnergyMonitor(monitor="val_loss")
    ns.pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path, [monitor], logger=logger, max_epochs=epochs, lightning=ns, val_check_interval=0.5, **FAST
    )
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    log = tmp_path / "log" / "version_0" / "metrics.csv"
    as_json = tmp_path / "report.json"
    assert green_cli.main(["report", str(log), "-o", str(tmp_path / "r.png"), "--json", str(as_json)]) == 0
    summary = json.loads(as_json.read_text())
    (line,) = [ln for ln in draw_summary(summary).axes[0].get_lines() if ln.get_label() == "val_loss"]
    kwh, metric = list(line.get_xdata()), list(line.get_ydata())
    assert len(kwh) == 2 * epochs  # two validations an epoch, each drawn
    assert kwh == sorted(kwh) and len(set(kwh)) == len(kwh)
    ends = [e["total_kwh"] for e in summary["per_epoch"]]
    assert kwh[1::2] == ends  # every second point is an epoch's end; the others lie inside epochs
    assert all(a < k < b for k, a, b in zip(kwh[0::2], [0.0, *ends[:-1]], ends, strict=True))
    assert metric[1::2] == [e["metric"] for e in summary["per_epoch"]]
    assert summary["best_metric"] == min(metric)


def test_a_report_rebuilt_from_the_metrics_draws_every_validation_inside_epochs(tmp_path, sqlite_uri, ns):
    """A run validating twice an epoch, its summary written nowhere: the report of its CSVLogger
    log and of its MLflow run (no summary artifact) rebuilds the validations inside epochs from
    the stopper's check records (energy/check_kwh, check_epochs, check_metric), as the run's own
    summary holds them, and draws every one; it used to keep only the epochs' ends."""
    from lightning_green.report_plot import draw_summary

    epochs = 3
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name="checks", tracking_uri=sqlite_uri)
    loggers = [ns.loggers.CSVLogger(str(tmp_path), name="log"), mlflow_logger]
    ns.pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path,
        [monitor, EnergyAwareEarlyStopping(monitor="val_loss")],
        logger=loggers,
        max_epochs=epochs,
        lightning=ns,
        val_check_interval=0.5,
        **FAST,
    )
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    own = monitor.last_summary
    assert len(own["checks"]) == epochs  # one validation inside each epoch, the other at its end
    log = tmp_path / "log" / "version_0" / "metrics.csv"
    assert not (log.parent / "energy_summary.json").exists()
    for source in (
        [str(log)],
        ["--mlflow-uri", sqlite_uri, "--run-id", mlflow_logger.run_id],
    ):
        as_json = tmp_path / "report.json"
        assert green_cli.main(["report", *source, "-o", str(tmp_path / "r.png"), "--json", str(as_json)]) == 0
        rebuilt = json.loads(as_json.read_text())
        assert rebuilt["rebuilt_from_metrics"] is True
        assert [c["epoch"] for c in rebuilt["checks"]] == [c["epoch"] for c in own["checks"]]
        for key in ("total_kwh", "metric"):
            assert [c[key] for c in rebuilt["checks"]] == pytest.approx(
                [c[key] for c in own["checks"]], rel=1e-6
            )
        assert rebuilt["best_metric"] == pytest.approx(own["best_metric"], rel=1e-6)
        assert rebuilt["kwh_to_best"] == pytest.approx(own["kwh_to_best"], rel=1e-6)
        (line,) = [ln for ln in draw_summary(rebuilt).axes[0].get_lines() if ln.get_label() == "val_loss"]
        assert len(line.get_xdata()) == 2 * epochs  # every validation drawn, in order of the energy
        assert list(line.get_xdata()) == sorted(line.get_xdata())


def test_float_residue_of_the_energy_parts_is_no_energy():
    """The parts of a run's energy are differences of floats: the residue of a subtraction
    (``2.6e-23`` kWh of a run's ``2.8e-7``) is no energy, neither a line of the printed summary nor
    energy spent after the best; energy that is there still is."""
    from lightning_green.energy.accounting import EpochEnergy
    from lightning_green.energy.units import J_PER_KWH
    from lightning_green.report import build_summary

    def summary(total_j, before_j, last_j):
        epoch = EpochEnergy(
            0, last_j, last_j, duration_s=1.0, samples=10, source="rapl", partial=False, metric=0.5
        )
        options = dict(source="rapl", partial=False, pue=1.0, carbon_intensity_g_per_kwh=None)
        return build_summary(
            [epoch], total_j=total_j, monitor="val_loss", before_epochs_j=before_j, **options
        )

    assert 1.0 / J_PER_KWH - 0.3 / J_PER_KWH - 0.7 / J_PER_KWH > 0  # the residue this summary must not show
    exact = summary(total_j=1.0, before_j=0.3, last_j=0.7)
    assert exact["kwh_after_last_epoch"] == 0.0 and exact["kwh_after_best"] == 0.0
    text = format_summary(exact)
    assert "after the last epoch" not in text and re.search(r"kWh spent after best +0$", text, re.MULTILINE)
    real = summary(total_j=1.0, before_j=0.3, last_j=0.6)  # 0.1 J at the end of the fit
    assert real["kwh_after_last_epoch"] * J_PER_KWH == pytest.approx(0.1)
    assert "after the last epoch" in format_summary(real)


def test_report_command_needs_one_source(tmp_path, capsys):
    assert green_cli.main(["report"]) == 2
    assert "give either --mlflow-uri URI --run-id ID or LOG" in capsys.readouterr().err
    other = tmp_path / "notes.csv"
    other.write_text("curve_id,epoch\n")
    assert green_cli.main(["report", str(other)]) == 2
    assert "not a Lightning log" in capsys.readouterr().err


def test_report_resolves_the_direction_as_replay_does(tmp_path, monkeypatch, capsys, ns):
    """One rule for ``--mode`` in report and replay: a ``--mode`` that contradicts the direction
    the run recorded for the metric is refused with replay's message and exit 2 (from the summary
    beside the log or the MLflow artifact, and from a summary rebuilt from the metrics), nothing
    written; a metric the run recorded no direction for is read as lower is better, and report says
    so as replay does."""
    import csv

    install_scripted_meter(monkeypatch)
    loggers = [
        ns.loggers.CSVLogger(str(tmp_path), name="csv"),  # first: energy_summary.json goes beside it
        ns.loggers.MLFlowLogger(experiment_name="dir", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"),
    ]
    ns.pl.seed_everything(0)
    make_trainer(
        tmp_path, [EnergyMonitor(monitor="val_loss")], logger=loggers, max_epochs=4, lightning=ns, **FAST
    ).fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    assert (log.parent / "energy_summary.json").is_file()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    accuracies = [float(r["val_acc"]) for r in csv.DictReader(log.open()) if r["val_acc"]]
    assert max(accuracies) != min(accuracies)
    png, as_json, out = tmp_path / "r.png", tmp_path / "r.json", tmp_path / "d.csv"
    sources = {
        "csv": ([str(log)], [str(log)]),
        "mlflow": (
            ["--mlflow-uri", uri, "--run-id", loggers[1].run_id],
            ["--mlflow-uri", uri, "--experiment", "dir"],
        ),
    }
    for name, (report_input, replay_input) in sources.items():
        for rebuilt in (False, True):
            if rebuilt and name == "csv":
                (log.parent / "energy_summary.json").unlink()  # rebuilt from the metrics
            elif rebuilt:
                continue  # the MLflow run keeps its summary artifact
            for written in (png, as_json, out):
                written.unlink(missing_ok=True)
            capsys.readouterr()
            assert green_cli.main(["replay", *replay_input, "-o", str(out), "--mode", "max"]) == 2
            replay_err = capsys.readouterr().err
            assert "recorded lightning_green.mode=min for 'val_loss'; mode 'max' (--mode) contradicts it" in (
                replay_err
            )
            report = ["report", *report_input, "-o", str(png), "--json", str(as_json)]
            assert green_cli.main([*report, "--mode", "max"]) == 2, (name, rebuilt)
            assert capsys.readouterr().err == replay_err
            assert not png.exists() and not as_json.exists() and not out.exists()
            assert green_cli.main([*report, "--monitor", "val_loss", "--mode", "max"]) == 2
            assert capsys.readouterr().err == replay_err
            assert green_cli.main([*report, "--mode", "min"]) == 0  # agrees with the record
            assert json.loads(as_json.read_text())["mode"] == "min"
            assert "note:" not in capsys.readouterr().out

        # A metric the run recorded no direction for: lower is better, and both commands say so.
        assert green_cli.main(["replay", *replay_input, "-o", str(out), "--monitor", "val_acc"]) == 0
        (note,) = [line for line in capsys.readouterr().out.splitlines() if "recorded no direction" in line]
        assert note.startswith("note: 1 run(s) recorded no direction for 'val_acc': read as lower is better")
        assert green_cli.main([*report, "--monitor", "val_acc"]) == 0
        printed = capsys.readouterr().out
        assert note.replace("1 run(s)", "the run") in printed.splitlines()
        summary = json.loads(as_json.read_text())
        assert summary["mode"] == "min" and summary["mode_assumed"] is True
        assert summary["best_metric"] == min(accuracies)
        assert green_cli.main([*report, "--monitor", "val_acc", "--mode", "max"]) == 0
        assert "note:" not in capsys.readouterr().out
        summary = json.loads(as_json.read_text())
        assert summary["best_metric"] == max(accuracies) and "mode_assumed" not in summary
