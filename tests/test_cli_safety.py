"""The command never destroys an input, never shows a traceback, writes all or nothing, reads bounded."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lightning_green import cli
from lightning_green.cli import main
from lightning_green.offline import csv_curves

ROOT = Path(__file__).resolve().parents[1]
NAS = ROOT / "benchmarks" / "data" / "curves" / "nasbench_nlp_wt2_dev.csv"


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry of ``folder``: a file's bytes, a link's target, else its kind."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.iterdir()):
        if p.is_symlink():
            out[p.name] = "-> " + os.readlink(p)
        elif p.is_file():
            out[p.name] = p.read_bytes()
        else:
            out[p.name] = "dir" if p.is_dir() else "other"
    return out


@pytest.fixture
def curves(tmp_path: Path) -> Path:
    """Three real NAS-Bench-NLP curves."""
    with NAS.open(newline="") as f:
        rows = list(csv.reader(f))
    ids = list(dict.fromkeys(r[1] for r in rows[1:]))[:3]
    path = tmp_path / "in" / "curves.csv"
    path.parent.mkdir()
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if r[1] in ids)])
    return path


def refused(argv: list[str], capsys, folder: Path, *needles: str) -> str:
    """Run ``argv``: exit 2, one ``error:`` line naming ``needles``, ``folder`` untouched."""
    before = snapshot(folder)
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    for needle in needles:
        assert needle in lines[0]
    assert snapshot(folder) == before
    return lines[0]


# --------------------------------------------------------------------------- outputs that must not be written


def test_output_that_is_the_curves_file_however_spelled(curves: Path, tmp_path: Path, capsys, monkeypatch):
    folder = curves.parent
    monkeypatch.chdir(tmp_path)
    link = folder / "link.csv"
    link.symlink_to(curves.name)
    spellings = [
        str(curves),
        "in/curves.csv",
        "./in/../in/curves.csv",
        str(folder / "." / ".." / "in" / "curves.csv"),
        str(link),
    ]
    for spelling in spellings:
        refused(["replay", str(curves), "-o", spelling], capsys, folder, spelling, "curves file", "input")
    # The other way round: the input named through the link, the output by its own name.
    refused(["replay", str(link), "-o", str(curves)], capsys, folder, "input")


def test_output_that_is_the_mlflow_database(tmp_path: Path, sqlite_uri: str, capsys, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    run = client.create_run(client.create_experiment("db"))
    client.log_metric(run.info.run_id, "energy/total_kwh", 0.1, step=0)
    monkeypatch.chdir(tmp_path)
    db = "mlflow.db"
    replay = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "db", "--monitor", "x"]
    report = ["report", "--mlflow-uri", sqlite_uri, "--run-id", run.info.run_id]
    refused([*replay, "-o", db], capsys, tmp_path, "MLflow database")
    refused([*replay, "-o", "d.csv", "--plot", f"./{db}"], capsys, tmp_path, "MLflow database")
    refused([*report, "--json", db], capsys, tmp_path, "--json", "MLflow database")
    refused([*report, "-o", str(tmp_path / db)], capsys, tmp_path, "-o/--output", "MLflow database")


def test_two_outputs_that_are_one_file(curves: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "x.png")
    line = refused(["replay", str(curves), "-o", out, "--plot", out], capsys, tmp_path, "same file")
    assert "--plot" in line and "-o/--output" in line


@pytest.mark.parametrize("kind", ["directory", "fifo", "link to /dev/null"])
def test_output_that_is_not_a_regular_file(curves: Path, tmp_path: Path, capsys, kind: str) -> None:
    target = tmp_path / "target"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/null")
    expected = {"directory": "a directory", "fifo": "FIFO", "link to /dev/null": "character device"}[kind]
    refused(["replay", str(curves), "-o", str(target)], capsys, tmp_path, expected, "not a regular file")
    refused(["replay", str(curves), "-o", "d.csv", "--plot", str(target)], capsys, tmp_path, expected)
    assert Path("/dev/null").is_char_device()


def test_empty_output_says_it_is_empty(curves: Path, tmp_path: Path, capsys, sqlite_uri: str) -> None:
    line = refused(["replay", str(curves), "-o", ""], capsys, tmp_path, "-o/--output is empty")
    assert "directory" not in line
    refused(["replay", str(curves), "-o", "d.csv", "--plot", ""], capsys, tmp_path, "--plot is empty")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    report = ["report", "--mlflow-uri", sqlite_uri, "--run-id", run_id]
    refused([*report, "-o", ""], capsys, tmp_path, "-o/--output is empty")
    refused([*report, "--json", ""], capsys, tmp_path, "--json is empty")


def test_missing_curves_file(tmp_path: Path, capsys) -> None:
    refused(
        ["replay", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "d.csv")],
        capsys,
        tmp_path,
        "no such file",
    )


# ---------------------------------------------------------------- all or nothing, readable, safe


def test_outputs_get_the_umask_without_the_umask_being_changed(curves: Path, tmp_path: Path, monkeypatch):
    calls: list[int] = []
    real_umask = os.umask

    def spy(mask: int) -> int:
        calls.append(mask)
        return real_umask(mask)

    previous = real_umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", spy)
        out, fig = tmp_path / "d.csv", tmp_path / "p.png"
        assert main(["replay", str(curves), "-o", str(out), "--plot", str(fig)]) == 0
    finally:
        real_umask(previous)
    assert calls == []  # the process-wide umask was never touched (not thread-safe)
    assert out.stat().st_mode & 0o777 == fig.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("lead", ["=", "+", "-", "@"])
def test_decisions_csv_escapes_formula_cells(tmp_path: Path, lead: str) -> None:
    curve_id = f'{lead}HYPERLINK("http://example.invalid","x")'
    src = tmp_path / "c.csv"
    with src.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["curve_id", "epoch", "metric", "higher_is_better", "time_s", "energy_J"])
        w.writerows([[curve_id, e, -1.0 / e, 0, e, ""] for e in range(1, 6)] + [["plain", 1, 1.0, 0, 1, ""]])
    out = tmp_path / "d.csv"
    assert main(["replay", str(src), "-o", str(out)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["curve_id"] for r in rows] == ["'" + curve_id, "plain"]
    assert float(rows[0]["best_metric_at_stop"]) < 0  # numbers stay numbers


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_decisions_writer_escapes_every_formula_lead(tmp_path: Path, lead: str) -> None:
    import numpy as np

    from lightning_green.offline import Curve, result_at, write_decisions_csv

    curve = Curve(f"{lead}cmd", np.array([1, 2]), np.array([2.0, 1.0]), np.array([1.0, 2.0]), False)
    out = tmp_path / "d.csv"
    write_decisions_csv([result_at(curve, 1)], out)
    with out.open(newline="") as f:
        assert next(csv.DictReader(f))["curve_id"] == f"'{lead}cmd"


# ---------------------------------------------------------------- malformed CSV: where, no traceback

HEADER = "curve_id,epoch,metric,higher_is_better,time_s,energy_J"


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        (f"{HEADER},metric\na,1,1.0,0,1,,2.0\n", ":1:7:", "appears twice"),
        (f"{HEADER}\na,1,1.0,0,1,,surplus\n", ":2:7:", "7 cells where the header has 6"),
        (f"{HEADER}\na,1,1.0,0,1_000,\n", ":2:5:", "not a number: '1_000'"),
        (f"{HEADER}\na,1,1.0,0,\u0661,\n", ":2:5:", "not a number"),
        (f"{HEADER}\na,1e20,1.0,0,1,\n", ":2:2:", "below 1e+15"),
        (f"{HEADER}\na,2,1.0,0,20,\na,1,0.9,0,10,\n", ":3:2:", "not in increasing order: 1 after 2"),
    ],
    ids=["duplicate-column", "beyond-header", "digit-separator", "arabic-digit", "epoch-1e20", "unsorted"],
)
def test_strict_csv(tmp_path: Path, capsys, text: str, where: str, needle: str) -> None:
    src = tmp_path / "c.csv"
    src.write_text(text, encoding="utf-8")
    line = refused(
        ["replay", str(src), "-o", str(tmp_path / "d.csv")], capsys, tmp_path, f"{src}{where}", needle
    )
    assert "decreases" not in line


def _run_bounded(argv: list[str], limit_bytes: int = 2 * 1024**3) -> subprocess.CompletedProcess:
    """The command in a fresh process whose address space is capped (so a runaway read fails)."""
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit_bytes}, {limit_bytes}))
        from lightning_green.cli import main
        sys.exit(main({argv!r}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("source", ["/dev/zero", "one-long-line"])
def test_endless_or_newline_free_input_fails_fast_in_bounded_memory(tmp_path: Path, source: str) -> None:
    if source == "one-long-line":
        src = tmp_path / "long.csv"
        src.write_text(HEADER + "\n" + "a" * (csv_curves.MAX_LINE_CHARS + 10))
        source, line = str(src), 2
    else:
        line = 1
    start = time.perf_counter()
    done = _run_bounded(["replay", source, "-o", str(tmp_path / "d.csv")])
    assert time.perf_counter() - start < 60
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {source}:{line}:0: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and not (tmp_path / "d.csv").exists()


def test_row_limit(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(csv_curves, "MAX_ROWS", 50)
    src = tmp_path / "c.csv"
    src.write_text(HEADER + "\n" + "".join(f"a,{e},1.0,0,{e},\n" for e in range(1, 52)))
    refused(
        ["replay", str(src), "-o", str(tmp_path / "d.csv")], capsys, tmp_path, f"{src}:52:0", "more than 50"
    )


# --------------------------------------------------------------------------- malformed summary artifacts


def _run_with_summary(client, experiment: str, tmp_path: Path, summary) -> str:
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(run_id, "energy/total_kwh", 0.1, step=0)
    local = tmp_path / "artifact" / "energy_summary.json"
    local.parent.mkdir(exist_ok=True)
    local.write_text(summary if isinstance(summary, str) else json.dumps(summary))
    client.log_artifact(run_id, str(local), "lightning_green")
    return run_id


def _summary(**changes) -> dict:
    base = {
        "total_kwh": 0.3,
        "co2_kg": None,
        "energy_source": "estimate",
        "is_estimate": True,
        "partial": False,
        "pue": 1.0,
        "carbon_intensity_g_per_kwh": None,
        "epochs": 3,
        "monitor": "val_loss",
        "mode": "min",
        "best_metric": 0.5,
        "best_epoch": 2,
        "kwh_to_best": 0.3,
        "kwh_after_best": 0.0,
        "per_epoch": [
            {"epoch": e, "energy_kwh": 0.1, "total_kwh": 0.1 * (e + 1), "metric": 1.0 / (e + 1)}
            for e in range(3)
        ],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


BAD_SUMMARIES = {
    "a-list": ([1, 2, 3], "a summary is a JSON object, got a list"),
    "missing-keys": ({"total_kwh": 1.0}, "field 'co2_kg' is missing"),
    "total-text": (_summary(total_kwh="abc"), "field 'total_kwh' must be a finite number, got 'abc'"),
    "per-epoch-text": (_summary(per_epoch="x"), "field 'per_epoch' must be a list"),
    "per-epoch-entry": (_summary(per_epoch=[{"epoch": "one"}]), "field 'per_epoch[0].epoch'"),
    "bad-fit": (
        _summary(
            stopping_policy={"fit": {"family": "pow3", "fitted_until_kwh": 0.2, "curve_kwh": [0.1, 0.2]}}
        ),
        "field 'stopping_policy.fit.curve_metric' must be a list of numbers",
    ),
    "fit-not-object": (_summary(stopping_policy={"fit": [1]}), "'stopping_policy.fit' must be a JSON object"),
    "not-json": ("{'total_kwh': 1", "not valid JSON"),
    "co2-without-intensity": (_summary(co2_kg=0.1), "'carbon_intensity_g_per_kwh' must be a number where"),
}


def test_malformed_summary_artifacts_are_clear_errors(tmp_path: Path, sqlite_uri: str, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    experiment = client.create_experiment("bad", artifact_location=(tmp_path / "artifacts").as_uri())
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    for name, (summary, needle) in BAD_SUMMARIES.items():
        run_id = _run_with_summary(client, experiment, tmp_path, summary)
        argv = ["report", "--mlflow-uri", sqlite_uri, "--run-id", run_id, "--json", "s.json", "-o", "p.png"]
        line = refused(argv, capsys, out, needle)
        assert f"energy_summary.json of run {run_id}" in line, name
    # A well-formed one is drawn: the checks refuse only what is wrong.
    run_id = _run_with_summary(client, experiment, tmp_path, _summary())
    assert (
        main(["report", "--mlflow-uri", sqlite_uri, "--run-id", run_id, "--json", "s.json", "-o", "p.png"])
        == 0
    )
    assert json.loads((out / "s.json").read_text())["per_epoch"] == _summary()["per_epoch"]


def test_an_oversized_summary_is_refused_before_drawing(tmp_path: Path, sqlite_uri: str, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    experiment = client.create_experiment("big", artifact_location=(tmp_path / "artifacts").as_uri())
    entries = [
        {"epoch": e, "energy_kwh": 1e-3, "total_kwh": 1e-3 * (e + 1), "metric": 1.0} for e in range(300_000)
    ]
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    for n, needles in ((300_000, ["bytes; a summary is read up to"]), (12_000, ["12,000 entries", "10,000"])):
        run_id = _run_with_summary(client, experiment, tmp_path, _summary(per_epoch=entries[:n], epochs=n))
        start = time.perf_counter()
        refused(["report", "--mlflow-uri", sqlite_uri, "--run-id", run_id], capsys, out, *needles)
        assert time.perf_counter() - start < 30


def test_json_is_not_written_when_the_plot_fails(
    tmp_path: Path, sqlite_uri: str, capsys, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    experiment = client.create_experiment("huge", artifact_location=(tmp_path / "artifacts").as_uri())
    # Well-formed, but its metric spans more than a float: matplotlib cannot set such axis limits.
    per_epoch = [
        {"epoch": 0, "energy_kwh": 0.1, "total_kwh": 0.1, "metric": -1.7e308},
        {"epoch": 1, "energy_kwh": 0.1, "total_kwh": 0.2, "metric": 1.7e308},
    ]
    run_id = _run_with_summary(client, experiment, tmp_path, _summary(per_epoch=per_epoch, epochs=2))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    capsys.readouterr()
    assert (
        main(["report", "--mlflow-uri", sqlite_uri, "--run-id", run_id, "--json", "s.json", "-o", "p.png"])
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: nothing written") and err.count("\n") == 1
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- malformed MLflow records, last resort


def _five_check_run(client, experiment: str, params: dict[str, str]) -> str:
    """A finished run of five checks of ``val_loss`` with their energy, monitoring it, and ``params``."""
    run_id = client.create_run(client.create_experiment(experiment)).info.run_id
    for i in range(5):
        client.log_metric(run_id, "val_loss", 1.0 / (i + 1), step=i)
        client.log_metric(run_id, "energy/total_kwh", 0.01 * (i + 1), step=i)
    client.log_param(run_id, "lightning_green.monitor", "val_loss")
    for key, value in params.items():
        client.log_param(run_id, key, value)
    client.set_terminated(run_id)
    return run_id


def test_malformed_recorded_parameter_is_exit_2(tmp_path: Path, sqlite_uri: str, capsys) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    run_id = _five_check_run(client, "p", {"lightning_green.patience": "1_0"})
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "p", "--monitor", "val_loss"]
    refused(
        [*argv, "-o", str(tmp_path / "d.csv")], capsys, tmp_path, run_id, "lightning_green.patience", "'1_0'"
    )


def test_an_unforeseen_failure_is_one_line_not_a_traceback(curves: Path, tmp_path: Path, capsys, monkeypatch):
    from lightning_green.offline import commands

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(commands, "replay_curve", broken)
    monkeypatch.delenv("LIGHTNING_GREEN_TRACEBACK", raising=False)
    assert main(["replay", str(curves), "-o", str(tmp_path / "d.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: nothing written: unexpected TypeError: a bug") and err.count("\n") == 1
    assert not (tmp_path / "d.csv").exists()
    monkeypatch.setenv("LIGHTNING_GREEN_TRACEBACK", "1")
    with pytest.raises(TypeError):
        cli.main(["replay", str(curves), "-o", str(tmp_path / "d.csv")])


def test_a_store_from_a_newer_mlflow_is_a_clear_refusal(tmp_path: Path, sqlite_uri: str, capsys, monkeypatch):
    """An older mlflow (2.x) opening a store a newer one migrated fails in alembic, looking for a
    schema revision it does not know: both commands say so in one line, exit 2, naming the installed
    mlflow and what to do, rather than "unexpected CommandError ... please report it"."""
    import sqlite3

    import mlflow
    from mlflow.store.db.utils import _upgrade_db
    from sqlalchemy import create_engine

    from lightning_green.offline import mlflow_curves

    client = mlflow.tracking.MlflowClient(sqlite_uri)  # not the fluent API: no process-wide experiment
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    client.log_metric(run.info.run_id, "val_acc", 0.5, step=0)
    database = sqlite_uri.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:  # the revision a newer MLflow would have written
        connection.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")

    def older_mlflow(tracking_uri, experiment):  # what mlflow 2.x does on opening it: migrate it
        _upgrade_db(create_engine(sqlite_uri))

    monkeypatch.setattr(mlflow_curves, "experiment_runs", older_mlflow)
    argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "Default", "-o", str(tmp_path / "d.csv")]
    assert main(argv) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "unexpected" not in err and "Traceback" not in err, err
    assert f"unknown to the installed mlflow {mlflow.__version__}" in err and "upgrade mlflow" in err
    assert "ffffffffffff" in err and not (tmp_path / "d.csv").exists()


def test_alembics_info_lines_stay_off_the_output(tmp_path: Path, sqlite_uri: str, capsys, monkeypatch):
    """mlflow 2 runs alembic when it opens an SQLite store; once a store was created in the process,
    logging is configured as mlflow 2's migration configures it (alembic at INFO, the root logger to
    stderr), and alembic's INFO lines came before the command's own output and one-line errors."""
    import logging

    from mlflow.tracking import MlflowClient

    from lightning_green.offline import mlflow_runs

    client = MlflowClient(sqlite_uri)
    run_id = _five_check_run(client, "quiet", {"lightning_green.mode": "min"})
    opened = mlflow_runs._client

    def client_as_mlflow_2(tracking_uri: str):  # what mlflow 2 logs when it opens the store
        logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
        return opened(tracking_uri)

    monkeypatch.setattr(mlflow_runs, "_client", client_as_mlflow_2)
    alembic, root = logging.getLogger("alembic"), logging.getLogger()
    level, stderr = alembic.level, logging.StreamHandler(sys.stderr)
    alembic.setLevel(logging.INFO)
    root.addHandler(stderr)
    capsys.readouterr()  # what creating the store said
    try:
        argv = ["replay", "--mlflow-uri", sqlite_uri, "--experiment", "quiet", "-o", str(tmp_path / "d.csv")]
        assert main(argv) == 0
        assert capsys.readouterr().err == ""
        assert main([*argv, "--mode", "max"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: MLflow run {run_id} recorded lightning_green.mode=min")
        assert err.count("\n") == 1
        assert alembic.level == logging.INFO  # as it was: the process's logging is its own
        alembic.info("after the command")
        assert "after the command" in capsys.readouterr().err
    finally:
        root.removeHandler(stderr)
        alembic.setLevel(level)
