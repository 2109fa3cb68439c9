"""The ``lightning-green replay`` command."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from lightning_green.cli import main

CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "curves"


@pytest.fixture(scope="module")
def curves_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real curves: four NAS-Bench-NLP losses and two MLPerf Dice accuracies."""
    out = tmp_path_factory.mktemp("curves") / "curves.csv"
    rows: list[list[str]] = []
    for name, n in (("nasbench_nlp_wt2_dev.csv", 4), ("mlperf_v4_power_dev.csv", 2)):
        with open(CURVES / name, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            ids: list[str] = []
            for row in reader:
                if row[1] not in ids:
                    if len(ids) == n:
                        break
                    ids.append(row[1])
                rows.append(row)
    with out.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return out


def test_replay_writes_decisions_and_prints_summary(curves_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "decisions.csv"
    assert main(["replay", str(curves_csv), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    assert set(rows[0]) == {
        "curve_id",
        "stop_epoch",
        "stop_reason",
        "best_metric_at_stop",
        "cost_at_stop",
        "cost_total",
    }
    assert {r["stop_reason"] for r in rows} <= {"none", "plateau", "marginal_gain"}
    printed = capsys.readouterr().out
    assert "mean cost saved" in printed and "mean regret" in printed
    assert "[val_loss, lower is better, 4 curves]" in printed
    assert "[eval_accuracy_x100, higher is better, 2 curves]" in printed


def test_policy_options_change_decisions(curves_csv: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert (
        main(["replay", str(curves_csv), "-o", str(a), "--min-relative-gain", "none", "--patience", "2"]) == 0
    )
    assert (
        main(
            [
                "replay",
                str(curves_csv),
                "-o",
                str(b),
                "--min-relative-gain",
                "0.5",
                "--min-horizon-fraction",
                "0",
                "--patience",
                "1000",
                "--no-check-finite",
            ]
        )
        == 0
    )
    reasons_a = {r["stop_reason"] for r in csv.DictReader(a.open())}
    reasons_b = {r["stop_reason"] for r in csv.DictReader(b.open())}
    assert "plateau" in reasons_a and "marginal_gain" not in reasons_a
    assert "marginal_gain" in reasons_b and "plateau" not in reasons_b


def test_budget_option(curves_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.csv"
    assert main(["replay", str(curves_csv), "-o", str(out), "--energy-budget-kwh", "1.0"]) == 0
    rows = list(csv.DictReader(out.open()))
    mlperf = [r for r in rows if "unet3d" in r["curve_id"]]
    assert all(r["stop_reason"] == "energy_budget" and float(r["cost_at_stop"]) <= 1.0 for r in mlperf)


def test_malformed_csv_reports_location_and_writes_nothing(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "curve_id,epoch,metric,higher_is_better,time_s,energy_J\n"
        "a,1,1.0,0,10,\n"
        "a,2,0.9,0,20,\n"
        "a,3,n/a,0,30,\n"
    )
    out = tmp_path / "decisions.csv"
    assert main(["replay", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:3:" in err and "metric" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_bad_option_names_the_argument(curves_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "d.csv"
    rc = main(["replay", str(curves_csv), "-o", str(out), "--min-relative-gain", "2"])
    assert rc == 2
    assert "min_relative_gain" in capsys.readouterr().err
    assert not out.exists()
    assert main(["replay", str(curves_csv), "-o", str(out), "--mode", "max"]) == 2  # contradicts the losses
    assert main(["replay", "-o", str(out)]) == 2  # no input at all
    assert not out.exists()


def test_plot(curves_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    fig = tmp_path / "tradeoff.png"
    assert main(["replay", str(curves_csv), "-o", str(tmp_path / "d.csv"), "--plot", str(fig)]) == 0
    assert fig.stat().st_size > 1000


def test_mlflow_input(tmp_path: Path, capsys) -> None:
    pytest.importorskip("mlflow")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cli")
    run = client.create_run(exp)
    for i in range(40):
        client.log_metric(run.info.run_id, "val_loss", 2.0 + 3.0 * 0.85**i, step=i)
        client.log_metric(run.info.run_id, "energy/total_kwh", 0.01 * (i + 1), step=i)
    out = tmp_path / "d.csv"
    # Not ended yet (RUNNING: still training, or killed): skipped, named, unless asked for.
    argv = ["replay", "--mlflow-uri", uri, "--experiment", "cli", "--monitor", "val_loss", "-o", str(out)]
    assert main(argv) == 1
    named = f"(--include-unfinished to replay them as far as they ran): {run.info.run_id} (RUNNING)"
    assert f"skipped 1 run(s) that did not finish {named}" in capsys.readouterr().out
    assert main([*argv, "--include-unfinished"]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["curve_id"] == run.info.run_id
    client.set_terminated(run.info.run_id)
    assert (
        main(["replay", "--mlflow-uri", uri, "--experiment", "cli", "--monitor", "val_loss", "-o", str(out)])
        == 0
    )
    (row,) = list(csv.DictReader(out.open()))
    assert row["curve_id"] == run.info.run_id and row["stop_reason"] == "marginal_gain"
    assert (
        main(
            [
                "replay",
                "--mlflow-uri",
                uri,
                "--experiment",
                "missing",
                "--monitor",
                "val_loss",
                "-o",
                str(tmp_path / "e.csv"),
            ]
        )
        == 1
    )
    assert "not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- review B3 (a), B6

STEP_CURVES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "step_schedule_curves.csv"


@pytest.fixture(scope="module")
def lr_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight real curves with learning-rate step schedules and their ``lr`` column."""
    out = tmp_path_factory.mktemp("lr") / "lr.csv"
    with open(STEP_CURVES, newline="") as f:
        rows = list(csv.reader(f))
    ids: list[str] = []
    keep = [rows[0]]
    for row in rows[1:]:
        if row[1] not in ids:
            if len(ids) == 8:
                break
            ids.append(row[1])
        keep.append(row)
    with out.open("w", newline="") as f:
        csv.writer(f).writerows(keep)
    return out


def test_lr_column_is_used_unless_ignored(lr_csv: Path, tmp_path: Path, capsys) -> None:
    from lightning_green.offline import read_curves_csv, replay
    from lightning_green.policy import StoppingConfig

    curves = read_curves_csv(lr_csv)
    assert all(c.lrs is not None for c in curves)
    used, ignored = tmp_path / "used.csv", tmp_path / "ignored.csv"
    assert main(["replay", str(lr_csv), "-o", str(used)]) == 0
    assert "learning-rate schedule used for 8" in capsys.readouterr().out
    assert main(["replay", str(lr_csv), "-o", str(ignored), "--ignore-lr"]) == 0

    def stops(path: Path) -> list[tuple[str, str]]:
        return [(r["stop_epoch"], r["stop_reason"]) for r in csv.DictReader(path.open())]

    def expected(use: bool) -> list[tuple[str, str]]:
        results = replay(curves, StoppingConfig(), use_lr_schedule=use)
        return [(str(r.stop_epoch), r.stop_reason.value if r.stop_reason else "none") for r in results]

    assert stops(used) == expected(True) and stops(ignored) == expected(False)
    assert stops(used) != stops(ignored)  # the schedule changes decisions on these curves


def test_plot_into_a_missing_directory_writes_nothing(curves_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "d.csv"
    rc = main(["replay", str(curves_csv), "-o", str(out), "--plot", str(tmp_path / "missing" / "p.png")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    assert main(["replay", str(curves_csv), "-o", str(tmp_path / "missing" / "d.csv")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_plot_format_matplotlib_cannot_write_is_refused_before_replaying(
    curves_csv: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "d.csv"
    out.write_text("previous\n")
    rc = main(["replay", str(curves_csv), "-o", str(out), "--plot", str(tmp_path / "p.notaformat")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "p.notaformat" in err and "'notaformat'" in err and "png" in err  # names value and choices
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]  # no temporary left behind
    assert out.read_text() == "previous\n"  # the old DECISIONS untouched


def test_outputs_are_readable_like_any_new_file(curves_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out, fig = tmp_path / "d.csv", tmp_path / "p.svg"
    assert main(["replay", str(curves_csv), "-o", str(out), "--plot", str(fig)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == fig.stat().st_mode & 0o777 == 0o666 & ~umask
    assert fig.read_text().lstrip().startswith("<?xml")  # the format the name asks for


# --------------------------------------------------------------------------- what MLflow runs recorded


@pytest.fixture
def accuracy_run(tmp_path: Path, sqlite_uri: str) -> tuple[str, list[float]]:
    """A real digits fit that monitored ``val_acc`` (higher is better), logged to MLflow."""
    import pytorch_lightning as pl
    from conftest import make_trainer
    from digits import DigitsClassifier, DigitsDataModule
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    from lightning_green import EnergyMonitor

    logger = MLFlowLogger(experiment_name="digits", tracking_uri=sqlite_uri)
    pl.seed_everything(0)
    trainer = make_trainer(
        tmp_path,
        [EnergyMonitor(monitor="val_acc", mode="max", summary=False)],
        logger=logger,
        max_epochs=4,
        limit_train_batches=4,
        limit_val_batches=2,
        num_sanity_val_steps=0,
    )
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(batch_size=32))
    history = MlflowClient(sqlite_uri).get_metric_history(logger.run_id, "val_acc")
    accuracies = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert max(accuracies) != min(accuracies)
    return logger.run_id, accuracies


def test_mlflow_replay_takes_the_recorded_direction(
    accuracy_run: tuple[str, list[float]], sqlite_uri: str, tmp_path: Path, capsys
) -> None:
    run_id, accuracies = accuracy_run
    out = tmp_path / "d.csv"
    base = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "digits", "-o", str(out)]
    for monitor in (["--monitor", "val_acc"], []):  # the metric too comes from the run
        assert main([*base, *monitor]) == 0
        (row,) = list(csv.DictReader(out.open()))
        assert float(row["best_metric_at_stop"]) == pytest.approx(max(accuracies))  # an accuracy, not a loss
    out.unlink()

    capsys.readouterr()
    rc = main([*base, "--mode", "min"])
    assert rc == 2
    err = capsys.readouterr().err
    assert run_id in err and "lightning_green.mode=max" in err and "'min'" in err
    assert not out.exists()

    # Another metric than the recorded one is a what-if: the command line decides its direction.
    assert main([*base, "--monitor", "val_loss"]) == 0
    assert "recorded another monitored metric (val_acc)" in capsys.readouterr().out


def _finished_run(client, experiment_id: str, checks: int, scale: float = 1.0) -> str:
    """A finished MLflow run with ``val_loss`` and ``energy/total_kwh`` at ``checks`` steps; its id."""
    run_id = client.create_run(experiment_id).info.run_id
    for i in range(checks):
        client.log_metric(run_id, "val_loss", scale / (i + 1), step=i)
        client.log_metric(run_id, "energy/total_kwh", 0.01 * scale * (i + 1), step=i)
    client.set_terminated(run_id)
    return run_id


def test_mlflow_replay_without_monitor_of_a_run_that_recorded_none(tmp_path: Path, sqlite_uri: str, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri)
    run_id = _finished_run(client, client.create_experiment("bare"), 5)
    out = tmp_path / "d.csv"
    rc = main(["replay", "--mlflow-uri", sqlite_uri, "--experiment", "bare", "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert run_id in err and "lightning_green.monitor" in err and "--monitor" in err
    assert not out.exists()


def test_mlflow_replay_says_which_runs_lost_the_stoppers_parameters(tmp_path: Path, sqlite_uri: str, capsys):
    """A run the stopper checked and stopped whose parameters did not reach the store (MLflow's
    async logging refused their batch): replayed with the defaults, and replay names it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri)
    experiment_id = client.create_experiment("lost")
    kept = _finished_run(client, experiment_id, 5)
    lost = _finished_run(client, experiment_id, 5)
    for run_id in (kept, lost):
        for i in range(5):  # the stopper's record of each check
            client.log_metric(run_id, "energy/check_kwh", 0.01 * (i + 1), step=i)
        client.set_tag(run_id, "lightning_green.stop_reason", "energy_budget")
    client.log_param(kept, "lightning_green.max_epochs", "5")
    client.log_param(kept, "lightning_green.energy_budget_kwh", "0.03")
    out = tmp_path / "d.csv"
    argv = [
        "replay",
        "--mlflow-uri",
        sqlite_uri,
        "--experiment",
        "lost",
        "--monitor",
        "val_loss",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "hold none of its parameters" in line]
    assert len(notes) == 1 and "1 run(s)" in notes[0] and lost in notes[0] and kept not in notes[0], notes


def _store_argv(command: str, uri: str, output: str) -> list[str]:
    """``report`` or ``replay`` reading the store at ``uri`` (replay writing ``output``)."""
    if command == "report":
        return ["report", "--mlflow-uri", uri, "--run-id", "0123abcd"]
    return ["replay", "--mlflow-uri", uri, "--experiment", "x", "-o", output]


@pytest.mark.parametrize("command", ["report", "replay"])
def test_missing_sqlite_store_is_refused_not_created(tmp_path: Path, capsys, command: str) -> None:
    typo = tmp_path / "typo.db"
    uri = f"sqlite:///{typo}"
    argv = _store_argv(command, uri, str(tmp_path / "d.csv"))
    rc = main(argv)
    assert rc == 2
    assert f"no MLflow database at {str(typo)!r}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # typo.db not created, nothing written


@pytest.mark.parametrize("command", ["report", "replay"])
@pytest.mark.parametrize("content", [b"", b"curve_id,epoch\n"], ids=["empty-file", "csv-file"])
def test_a_file_that_is_no_sqlite_database_is_refused_untouched(
    tmp_path: Path, capsys, command: str, content: bytes
) -> None:
    store = tmp_path / "not_a_store.csv"
    store.write_bytes(content)
    uri = f"sqlite:///{store}"
    argv = _store_argv(command, uri, str(tmp_path / "d.csv"))
    rc = main(argv)
    assert rc == 2
    assert "is not an SQLite database" in capsys.readouterr().err
    assert store.read_bytes() == content  # MLflow did not turn it into a database
    assert [p.name for p in tmp_path.iterdir()] == ["not_a_store.csv"]


@pytest.mark.parametrize("command", ["report", "replay"])
def test_an_sqlite_database_that_is_no_mlflow_store_is_refused_untouched(
    tmp_path: Path, capsys, command: str
) -> None:
    """MLflow would create its 60-odd tables in it before saying the experiment is missing."""
    import sqlite3

    store = tmp_path / "trials.db"
    db = sqlite3.connect(store)
    db.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, loss REAL)")
    db.execute("INSERT INTO trials (loss) VALUES (0.5)")
    db.commit()
    db.close()
    before = store.read_bytes()
    rc = main(_store_argv(command, f"sqlite:///{store}", str(tmp_path / "d.csv")))
    assert rc == 2
    err = capsys.readouterr().err
    assert "is an SQLite database but not an MLflow tracking store" in err and "runs" in err
    assert store.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["trials.db"]


def test_reading_a_store_never_writes_to_it(tmp_path: Path, sqlite_uri: str, capsys) -> None:
    """replay and report read an sqlite store through a snapshot: the file stays byte for byte."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri)
    experiment = client.create_experiment("kept")
    run_id = _finished_run(client, experiment, 6)
    store = Path(sqlite_uri.removeprefix("sqlite:///"))
    before = store.read_bytes()
    replay = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "kept", "--monitor", "val_loss"]
    assert main([*replay, "-o", str(tmp_path / "d.csv")]) == 0
    report = ["report", "--mlflow-uri", sqlite_uri, "--run-id", run_id, "--monitor", "val_loss"]
    assert main([*report, "-o", str(tmp_path / "r.png")]) == 0
    assert store.read_bytes() == before
    assert run_id in (tmp_path / "d.csv").read_text()
    # A later run in the same process reads the store as it is then, not the first snapshot.
    later = _finished_run(client, experiment, 4, scale=2.0)
    assert main([*replay, "-o", str(tmp_path / "e.csv")]) == 0
    assert later in (tmp_path / "e.csv").read_text()


@pytest.mark.parametrize("command", ["report", "replay"])
@pytest.mark.parametrize("scheme", ["", "file:"], ids=["path", "file-uri"])
def test_a_missing_file_store_is_refused_not_created(
    tmp_path: Path, capsys, command: str, scheme: str, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # as README says, to read ./mlruns
    typo = tmp_path / "mlrnus"
    rc = main(_store_argv(command, f"{scheme}{typo}", str(tmp_path / "d.csv")))
    assert rc == 2
    assert f"no MLflow file store at {str(typo)!r}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no store created at the typo


@pytest.mark.parametrize("command", ["report", "replay"])
def test_empty_tracking_uri_is_refused(tmp_path: Path, capsys, command: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = _store_argv(command, "", "d.csv")
    rc = main(argv)
    assert rc == 2 and "--mlflow-uri is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no default ./mlflow.db created


@pytest.mark.parametrize("flag", ["--monitor", "--cost-key"])
def test_mlflow_only_options_with_a_csv_are_refused(curves_csv: Path, tmp_path: Path, capsys, flag) -> None:
    rc = main(["replay", str(curves_csv), "-o", str(tmp_path / "d.csv"), flag, "val_acc"])
    assert rc == 2 and f"{flag} only apply to MLflow input" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_max_epochs_below_what_a_curve_trained_is_refused(curves_csv: Path, tmp_path: Path, capsys) -> None:
    rc = main(["replay", str(curves_csv), "-o", str(tmp_path / "d.csv"), "--max-epochs", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and "--max-epochs 5 is below the" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lr", ["-0.1", "nan", "inf"])
def test_a_bad_learning_rate_is_located(tmp_path: Path, capsys, lr: str) -> None:
    src = tmp_path / "c.csv"
    src.write_text(
        f"curve_id,epoch,metric,higher_is_better,time_s,energy_J,lr\na,1,2.0,0,1,1,0.1\na,2,1.5,0,2,2,{lr}\n"
    )
    assert main(["replay", str(src), "-o", str(tmp_path / "d.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{src}:3:7" in err and "learning rate must be finite and >= 0" in err and repr(lr) in err
    assert not (tmp_path / "d.csv").exists()


def test_threshold_order_is_checked_against_each_curves_direction(tmp_path: Path, capsys) -> None:
    def curve(path: Path, higher_is_better: int) -> Path:
        rows = "".join(f"a,{e},{50 + 10 * e},{higher_is_better},{e},{e}\n" for e in range(1, 6))
        path.write_text("curve_id,epoch,metric,higher_is_better,time_s,energy_J\n" + rows)
        return path

    out = tmp_path / "d.csv"
    thresholds = ["--stopping-threshold", "75", "--divergence-threshold", "10"]
    # Right for an accuracy (stop above 75, diverged below 10): replayed, stopped by the threshold.
    assert main(["replay", str(curve(tmp_path / "acc.csv", 1)), "-o", str(out), *thresholds]) == 0
    with out.open() as f:
        assert next(csv.DictReader(f))["stop_reason"] == "threshold_reached"
    # The same order for a loss would stop every run at once: refused, naming both values.
    out.unlink()
    rc = main(["replay", str(curve(tmp_path / "loss.csv", 0)), "-o", str(out), *thresholds])
    assert rc == 2
    assert "stopping_threshold=75.0 must be below divergence_threshold=10.0" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", ["report", "replay"])
def test_an_address_where_no_server_answers_fails_fast(tmp_path: Path, capsys, command: str) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    argv = _store_argv(command, uri, str(tmp_path / "d.csv"))
    rc = main(argv)
    assert rc == 2 and f"--mlflow-uri {uri}: no MLflow server answers there" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _csvlogger_log(folder: Path, rows: list[str], hparams: str | None = None) -> Path:
    """A CSVLogger folder: ``metrics.csv`` as Lightning writes it (one row per logging call)."""
    folder.mkdir(parents=True)
    header = "energy/check_epochs,energy/check_kwh,energy/total_kwh,epoch,step,val_acc,val_loss"
    (folder / "metrics.csv").write_text("\n".join([header, *rows]) + "\n")
    if hparams is not None:
        (folder / "hparams.yaml").write_text(hparams)
    return folder / "metrics.csv"


ROWS = [
    f"{e + 1},{1e-6 * (e + 1)},{1e-6 * (e + 1)},{e},{10 * e + 9},{90 + e},{1 / (e + 1)}" for e in range(6)
]


def test_csvlogger_logs_with_and_without_a_recorded_metric(tmp_path: Path, capsys) -> None:
    """The metric and its direction come from hparams.yaml, else from --monitor/--mode; several logs
    in one call, a log without the metric is skipped and named."""
    recorded = _csvlogger_log(
        tmp_path / "a" / "version_0",
        ROWS,
        "lr: 0.001\nlightning_green.monitor: val_acc\nlightning_green.mode: max\n"
        "lightning_green.patience: 2\n",
    )
    bare = _csvlogger_log(tmp_path / "b" / "version_0", ROWS)
    out = tmp_path / "d.csv"
    rc = main(["replay", str(recorded), str(bare), "-o", str(out)])
    assert (
        rc == 2
        and "recorded no lightning_green.monitor: name the monitored metric" in capsys.readouterr().err
    )

    assert (
        main(
            [
                "replay",
                str(tmp_path / "*" / "version_0" / "metrics.csv"),
                "-o",
                str(out),
                "--monitor",
                "val_loss",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    rows = {r["curve_id"]: r for r in csv.DictReader(out.read_text().splitlines())}
    assert set(rows) == {str(recorded.parent), str(bare.parent)}
    assert "recorded another monitored metric (val_acc)" in printed  # replayed val_loss, not its own
    # Its own metric with its recorded direction and arguments (patience 2 of a rising accuracy: no stop).
    assert main(["replay", str(recorded), "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert (
        float(row["best_metric_at_stop"]) == 95
        and "policy arguments as recorded by 1 run(s)" in capsys.readouterr().out
    )
    assert main(["replay", str(recorded), "-o", str(out), "--mode", "min"]) == 2
    assert "contradicts it" in capsys.readouterr().err

    assert main(["replay", str(bare), "-o", str(out), "--monitor", "train_loss"]) == 1
    assert "skipped 1 Lightning log(s) without both 'train_loss'" in capsys.readouterr().out


RECORDED = "lightning_green.monitor: val_acc\nlightning_green.mode: max\nlightning_green.patience: 2\n"
NUMPY_LR = """lr: !!python/object/apply:numpy._core.multiarray.scalar
- !!python/object/apply:numpy.dtype
  args:
  - f8
  - false
  - true
  state: !!python/tuple
  - 3
  - <
  - null
  - null
  - null
  - -1
  - -1
  - 0
- !!binary |
  exSuR+F6hD8=
"""  # np.float64(0.01) as Lightning's hparams.yaml holds it


def test_a_models_python_object_hyperparameters_are_not_built_and_do_not_block_the_log(
    tmp_path: Path, capsys
) -> None:
    """Lightning dumps a model's hyperparameters that are Python objects (a NumPy scalar, a
    ``pathlib.Path``) under ``!!python/...`` tags; replay and report read the log's
    ``lightning_green.*`` entries and build none of them (an ``apply`` of ``os.system`` would run)."""
    marker = tmp_path / "ran"
    hparams = (
        NUMPY_LR
        + "data_dir: !!python/object/apply:pathlib.PosixPath\n- /\n- data\n"
        + f"hook: !!python/object/apply:os.system [touch {marker}]\n"
        + "odd: !!float not-a-number\n"
        + RECORDED
    )
    log = _csvlogger_log(tmp_path / "a" / "version_0", ROWS, hparams)
    out = tmp_path / "d.csv"
    assert main(["replay", str(log), "-o", str(out)]) == 0, capsys.readouterr().err
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert float(row["best_metric_at_stop"]) == 95  # its recorded metric, direction and patience
    assert "policy arguments as recorded by 1 run(s)" in capsys.readouterr().out
    assert main(["report", str(log), "-o", str(tmp_path / "r.png")]) == 0, capsys.readouterr().err
    assert not marker.exists()

    from lightning_green.offline.lightning_csv import read_hparams

    params = read_hparams(log.parent / "hparams.yaml")
    assert params["lr"] == "<!!python/object/apply:numpy._core.multiarray.scalar>"
    assert params["data_dir"] == "<!!python/object/apply:pathlib.PosixPath>"
    assert params["odd"] == "<!!float unreadable at line 22>"
    assert params["lightning_green.patience"] == "2"


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        (RECORDED + "lr: [0.1\n", "hparams.yaml: not readable as YAML: while parsing a flow sequence"),
        (RECORDED + "---\nlr: 0.1\n", "hparams.yaml: not readable as YAML: expected a single document"),
        ("- lr\n- 0.1\n", "hparams.yaml: expected a mapping of run parameters, got a list"),
        (
            NUMPY_LR.replace("lr:", "lightning_green.min_delta:") + RECORDED,
            "hparams.yaml: parameter lightning_green.min_delta (line 1) is not a plain value: "
            "<!!python/object/apply:numpy._core.multiarray.scalar>",
        ),
        (
            RECORDED + "lightning_green.min_epochs: !!int two\n",
            "parameter lightning_green.min_epochs (line 4) is not a plain value: "
            "<!!int unreadable at line 4>",
        ),
    ],
    ids=["unclosed", "two-documents", "a-list", "own-entry-an-object", "own-entry-malformed"],
)
@pytest.mark.parametrize("command", ["replay", "report"])
def test_a_malformed_hparams_yaml_or_lightning_green_entry_is_refused_clearly(
    tmp_path: Path, capsys, hparams: str, message: str, command: str
) -> None:
    log = _csvlogger_log(tmp_path / "a" / "version_0", ROWS, hparams)
    out = tmp_path / ("d.csv" if command == "replay" else "r.png")
    assert main([command, str(log), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{log.parent / 'hparams.yaml'}: " in err and message in err
    assert not out.exists()


def test_csvlogger_log_with_a_bad_cell_names_where(tmp_path: Path, capsys) -> None:
    bad_step = _csvlogger_log(tmp_path / "s" / "version_0", [*ROWS[:2], "3,3e-6,3e-6,2,x,92,0.3"])
    out = tmp_path / "d.csv"
    assert main(["replay", str(bad_step), "-o", str(out), "--monitor", "val_loss"]) == 2
    assert f"{bad_step}:4:5: not a whole number >= 0: 'x' (column 'step')" in capsys.readouterr().err
    bad_metric = _csvlogger_log(tmp_path / "m" / "version_0", [*ROWS[:2], "3,3e-6,3e-6,2,29,92,lots"])
    assert main(["replay", str(bad_metric), "-o", str(out), "--monitor", "val_loss"]) == 2
    assert f"{bad_metric}:4:7: not a number: 'lots' (column 'val_loss')" in capsys.readouterr().err
    assert not out.exists()


def test_monitor_option_needs_mlflow_or_a_csvlogger_log(curves_csv: Path, tmp_path: Path, capsys) -> None:
    assert main(["replay", str(curves_csv), "-o", str(tmp_path / "d.csv"), "--monitor", "val_loss"]) == 2
    assert "only apply to MLflow input" in capsys.readouterr().err


def test_a_tensorboard_run_resumed_into_its_folder_is_one_curve(tmp_path: Path, capsys) -> None:
    """Two event files in one folder (a run resumed into it): one run, all checks, in step order."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    folder = tmp_path / "lightning_logs" / "version_0"
    (tmp_path / "lightning_logs").mkdir()
    for part in (range(0, 3), range(3, 6)):
        writer = SummaryWriter(str(folder), filename_suffix=f".part{part.start}")
        for e in part:
            writer.add_scalar("val_loss", 1.0 / (e + 1), e)
            writer.add_scalar("energy/total_kwh", 1e-6 * (e + 1), e)
        writer.close()
    events = sorted(folder.glob("events.out.tfevents.*"))
    assert len(events) == 2
    out = tmp_path / "d.csv"
    pattern = str(folder / "events.out.tfevents.*")
    assert main(["replay", pattern, "-o", str(out), "--monitor", "val_loss", "--min-epochs", "0"]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    assert row["curve_id"] == str(folder)
    assert float(row["cost_total"]) == pytest.approx(6e-6, rel=1e-6) and row["stop_reason"] == "none"
    kept = events[1].read_bytes()  # the folder's other event file is read too: never an output
    assert main(["replay", str(events[0]), "-o", str(events[1]), "--monitor", "val_loss"]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err and events[1].read_bytes() == kept


def test_a_lightning_log_without_energy_replays_with_optimizer_steps_as_the_cost(
    tmp_path: Path, capsys
) -> None:
    """A run logged before lightning_green was used: what the policy would have saved, in steps."""
    folder = tmp_path / "plain" / "version_0"
    folder.mkdir(parents=True)
    rows = ["epoch,step,train_loss,val_loss"]
    for e in range(20):  # 45 optimizer steps an epoch; the loss flattens after epoch 6
        rows += [f"{e},{45 * e + 44},,{max(0.1, 1.0 / (e + 1)) + 1e-4 * e}", f"{e},{45 * e + 44},0.5,"]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "d.csv"
    base = ["replay", str(folder / "metrics.csv"), "-o", str(out), "--monitor", "val_loss"]
    assert main(base) == 1
    assert "--cost-key step replays them with optimizer steps as the cost" in capsys.readouterr().out
    assert main([*base, "--cost-key", "step", "--patience", "3"]) == 0
    assert "cost in steps" in capsys.readouterr().out
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    # The optimizer steps done: 45 an epoch (Lightning logged each epoch's end at its last step, 44)
    assert row["stop_reason"] in ("plateau", "marginal_gain") and float(row["cost_total"]) == 45 * 20
    stop = int(row["stop_epoch"])  # epochs completed; its check was logged at step 45 * stop - 1
    assert float(row["cost_at_stop"]) == 45 * stop and stop < 20


@pytest.mark.parametrize("command", ["replay", "report"])
def test_a_reader_that_stops_reading_is_no_failure(curves_csv: Path, tmp_path: Path, command: str) -> None:
    """``lightning-green replay ... | head -1``: the outputs are written, the closed pipe is no error."""
    import subprocess
    import sys

    if command == "replay":
        out = tmp_path / "d.csv"
        argv = ["replay", str(curves_csv), "-o", str(out)]
    else:
        log = tmp_path / "log" / "metrics.csv"
        log.parent.mkdir()
        log.write_text(
            "epoch,step,val_loss,energy/total_kwh,energy/epoch_kwh\n0,9,0.5,1e-6,1e-6\n1,19,0.4,2e-6,1e-6\n"
        )
        out = tmp_path / "s.json"
        argv = [
            "report",
            str(log),
            "--monitor",
            "val_loss",
            "--json",
            str(out),
            "-o",
            str(tmp_path / "p.png"),
        ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_green", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # the reader is gone before anything is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "nothing written" not in err and "Broken pipe" not in err
    assert out.is_file() and out.stat().st_size > 0


def test_a_deleted_experiment_is_named_as_deleted(tmp_path: Path, sqlite_uri: str, capsys) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri)
    experiment = client.create_experiment("gone")
    _finished_run(client, experiment, 1)
    client.delete_experiment(experiment)
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "gone", "--monitor", "val_loss"]
    assert main([*argv, "-o", str(tmp_path / "d.csv")]) != 0
    err = capsys.readouterr().err
    assert "'gone'" in err and "is deleted" in err
    assert f"MLFLOW_TRACKING_URI={sqlite_uri} mlflow experiments restore --experiment-id {experiment}" in err
    assert not (tmp_path / "d.csv").exists()


def test_a_server_that_answers_with_an_html_page_is_one_short_line(tmp_path: Path, capsys) -> None:
    """Not an MLflow server (a web server's 404 page): the error is one line, the page cut to its title."""
    import http.server
    import threading

    page = (
        b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>"
        + b"x" * 5000
        + b"</body></html>"
    )

    class NotMlflow(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        do_GET = do_POST = _answer  # noqa: N815 (http.server names)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        rc = main(["replay", "--mlflow-uri", uri, "--experiment", "x", "-o", str(tmp_path / "d.csv")])
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1
    assert "(an HTML page: 404 Not Found)" in err and "<html" not in err.lower() and len(err) < 600
    assert "' (an HTML page" not in err  # no stray quote of the cut body


def test_a_cost_key_that_is_not_a_running_total_is_refused(tmp_path: Path, sqlite_uri: str, capsys) -> None:
    """``--cost-key energy/epoch_kwh`` (per epoch, not cumulative) is refused by name, and a user's
    own per-epoch series as a curves CSV's decreasing cost is, naming the key and the step, from
    MLflow and a CSVLogger log alike: it is not replayed on a made-up running maximum."""
    pytest.importorskip("mlflow")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    epoch_kwh = [5.0] + [1.0] * 9
    totals = [sum(epoch_kwh[: e + 1]) for e in range(10)]
    client = MlflowClient(tracking_uri=sqlite_uri)
    run = client.create_run(client.create_experiment("per-epoch"))
    metrics = []
    for e, (kwh, total) in enumerate(zip(epoch_kwh, totals, strict=True)):
        step = 8 * e + 7
        for key, value in (
            ("val_loss", 1 / (e + 1)),
            ("energy/epoch_kwh", kwh),
            ("my/epoch_cost", kwh),
            ("energy/total_kwh", total),
        ):
            metrics.append(Metric(key, value, 1_000 + e, step))
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id)
    folder = tmp_path / "csv" / "version_0"
    folder.mkdir(parents=True)
    rows = [
        f"{kwh},{t},{e},{kwh},{8 * e + 7},{1 / (e + 1)}"
        for e, (kwh, t) in enumerate(zip(epoch_kwh, totals, strict=True))
    ]
    header = "energy/epoch_kwh,energy/total_kwh,epoch,my/epoch_cost,step,val_loss"
    (folder / "metrics.csv").write_text("\n".join([header, *rows]) + "\n")

    out = tmp_path / "d.csv"
    for source in (["--mlflow-uri", sqlite_uri, "--experiment", "per-epoch"], [str(folder / "metrics.csv")]):
        base = ["replay", *source, "-o", str(out), "--monitor", "val_loss"]
        assert main([*base, "--cost-key", "energy/epoch_kwh"]) == 2  # known per epoch: by name
        err = capsys.readouterr().err
        assert "'energy/epoch_kwh' is logged per epoch or per check, not as a running total" in err
        assert main([*base, "--cost-key", "my/epoch_cost"]) == 2  # the user's own: by its values
        err = capsys.readouterr().err
        assert "cumulative cost 'my/epoch_cost' decreases at step 15: 1.0 after 5.0 at step 7" in err
        assert not out.exists()
        assert main(base) == 0  # the running total is replayed, to its true total
        (row,) = list(csv.DictReader(out.read_text().splitlines()))
        assert float(row["cost_total"]) == 14.0
        out.unlink()


def test_a_stop_before_any_finite_value_has_no_regret_and_is_left_out_of_the_mean(
    tmp_path: Path, capsys
) -> None:
    """A curve that starts with NaN stops there (non_finite): its regret is undefined (NaN), not 0 (no
    loss), and the mean regret is that of the other curves, saying how many were left out."""
    import math

    from lightning_green.offline import read_curves_csv, replay_curve
    from lightning_green.policy import StoppingConfig

    rows = ["a,1,nan,0,1,", "a,2,0.4,0,2,", "a,3,0.1,0,3,", "b,1,0.5,0,1,", "b,2,0.3,0,2,", "b,3,0.2,0,3,"]
    c = tmp_path / "c.csv"
    c.write_text("curve_id,epoch,metric,higher_is_better,time_s,energy_J\n" + "\n".join(rows) + "\n")
    a, b = (replay_curve(curve, StoppingConfig()) for curve in read_curves_csv(c))
    assert a.stop_reason is not None and a.stop_reason.value == "non_finite" and a.stop_epoch == 1
    assert math.isnan(a.regret) and b.regret == 0.0
    assert main(["replay", str(c), "-o", str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert "mean regret: 0 (" in out and "1 run(s) left out, stopped before any finite value" in out


@pytest.mark.parametrize("flag", ["-o", "--plot"])
def test_an_output_that_cannot_be_created_is_named_as_given(
    curves_csv: Path, tmp_path: Path, capsys, flag
) -> None:
    """A destination where no file can be created is named by its option and the path given, not by
    the temporary file staged beside it."""
    if not os.path.isdir("/sys"):
        pytest.skip("needs a read-only /sys")
    argv = ["replay", str(curves_csv), "-o", str(tmp_path / "d.csv")]
    argv += ["--plot", "/sys/x.png"] if flag == "--plot" else []
    if flag == "-o":
        argv[3] = "/sys/x.csv"
    assert main(argv) != 0
    err = capsys.readouterr().err
    name = "-o/--output /sys/x.csv" if flag == "-o" else "--plot /sys/x.png"
    assert name in err and ".tmp" not in err
    assert not (tmp_path / "d.csv").exists()


def test_logs_all_skipped_as_unfinished_say_so(tmp_path: Path, sqlite_uri: str, capsys) -> None:
    """The only log (or MLflow run) is of a run that failed: the final error says it was skipped as
    unfinished and names --include-unfinished, not that a metric is missing."""
    log = _csvlogger_log(tmp_path / "a" / "version_0", ROWS, "lightning_green.monitor: val_loss\n")
    (log.parent / "energy_summary.json").write_text('{"failed": true, "error": "RuntimeError: boom"}')
    out = tmp_path / "d.csv"
    assert main(["replay", str(log), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 log(s) of runs that did not finish skipped (--include-unfinished" in err
    assert "no log has both" not in err and not out.exists()
    assert main(["replay", str(log), "-o", str(out), "--include-unfinished"]) == 0

    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri)
    run = client.create_run(client.create_experiment("failed"))
    for e in range(3):
        client.log_metric(run.info.run_id, "val_loss", 1 / (e + 1), step=e)
        client.log_metric(run.info.run_id, "energy/total_kwh", e + 1.0, step=e)
    client.set_terminated(run.info.run_id, status="FAILED")
    argv = [
        "replay",
        "--mlflow-uri",
        sqlite_uri,
        "--experiment",
        "failed",
        "-o",
        str(out),
        "--monitor",
        "val_loss",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 run(s) that did not finish skipped (--include-unfinished" in err and "logged both" not in err


def test_an_mlflow_run_without_energy_replays_in_steps_as_its_csv_log_does(
    tmp_path: Path, sqlite_uri: str, capsys, ns
) -> None:
    """A real fit logged without lightning_green to MLflow and to a CSVLogger: ``--cost-key step``
    (which the message for a run without energy suggests) replays it from MLflow as from its CSV
    log: the step MLflow recorded with each point is the CSV's step column, the same decisions, each
    point at the optimizer steps done there (the logged step plus one)."""
    pytest.importorskip("mlflow")
    from conftest import make_trainer

    loggers = [
        ns.loggers.MLFlowLogger(experiment_name="old", tracking_uri=sqlite_uri),
        ns.loggers.CSVLogger(str(tmp_path), name="csv"),
    ]
    ns.pl.seed_everything(0)
    make_trainer(
        tmp_path,
        [],
        logger=loggers,
        max_epochs=4,
        lightning=ns,
        limit_train_batches=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    ).fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    val_steps = [int(r["step"]) + 1 for r in csv.DictReader(log.open()) if r["val_loss"]]
    assert val_steps == [4, 8, 12, 16]  # the optimizer steps done at each validation

    out = tmp_path / "d.csv"
    mlflow_input = ["--mlflow-uri", sqlite_uri, "--experiment", "old"]
    assert main(["replay", *mlflow_input, "-o", str(out), "--monitor", "val_loss"]) == 1
    assert "--cost-key step replays them with optimizer steps as the cost" in capsys.readouterr().out
    threshold = ["--min-epochs", "1", "--stopping-threshold", "1000"]  # met by the first validation
    for options in (
        ["--monitor", "val_loss"],
        ["--monitor", "val_loss", *threshold],
        ["--monitor", "val_acc", "--mode", "max", "--patience", "1", "--min-epochs", "1"],
    ):
        decisions = []
        for source in (mlflow_input, [str(log)]):
            assert main(["replay", *source, "-o", str(out), "--cost-key", "step", *options]) == 0
            assert "(cost in steps)" in capsys.readouterr().out
            (row,) = list(csv.DictReader(out.read_text().splitlines()))
            assert float(row["cost_total"]) == val_steps[-1]  # the steps done at the last validation
            assert float(row["cost_at_stop"]) in val_steps
            decisions.append({k: v for k, v in row.items() if k != "curve_id"})
        assert decisions[0] == decisions[1], options
        if threshold[-1] in options:  # a stop, at the first validation's steps, from both
            assert decisions[0]["stop_reason"] != "none"
            assert float(decisions[0]["cost_at_stop"]) == val_steps[0]
