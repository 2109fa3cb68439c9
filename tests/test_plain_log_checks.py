"""Lightning logs without the stopper's records of its checks, replayed and reported by their steps.

A fit validated several times an epoch (``val_check_interval=0.5``) logs no ``energy/check_epochs``:
its checks are placed within their epochs by their steps (not repeated whole epochs), the same from
its ``CSVLogger``, ``TensorBoardLogger`` and ``MLFlowLogger`` logs, and refused where the log does
not tell the length of an epoch. ``--cost-key step`` counts the optimizer steps done at each point
(the logged step plus one), and a TensorBoard folder holding a fit restarted into it counts the
latest fit's steps only. Real fits of the digits task, under both Lightning namespaces.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import make_trainer, one_error_line, replay_decision

from lightning_green import EnergyMonitor
from lightning_green.cli import main
from lightning_green.offline import read_log_curve, read_mlflow_curves
from lightning_green.offline.check_places import steps_per_epoch

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

BATCHES = 9  # optimizer steps an epoch (one a batch)
HALF = dict(limit_train_batches=BATCHES, limit_val_batches=1, num_sanity_val_steps=0, val_check_interval=0.5)
# val_check_interval=0.5 of 9 batches: a validation after batches 4 and 8 of each epoch (not at its end)
PLACES = [e + done / BATCHES for e in range(3) for done in (4, 8)]
STEPS_DONE = [e * BATCHES + done for e in range(3) for done in (4, 8)]


def _event_file(folder: Path) -> str:
    (events,) = folder.glob("events.out.tfevents.*")
    return str(events)


def test_several_checks_an_epoch_of_a_plain_log_are_placed_by_their_steps(tmp_path, sqlite_uri, capsys, ns):
    """Two validations an epoch, logged to the three loggers without the stopper: each reading
    places the checks at the training completed (4/9 and 8/9 of each epoch), against the optimizer
    steps done, and replays and reports them as the same checks written with their progress in a
    curves CSV (they used to be replayed as epochs 1, 1, 2, 2, 3, 3)."""
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name="plain", tracking_uri=sqlite_uri)
    loggers = [
        ns.loggers.CSVLogger(str(tmp_path), name="csv"),
        ns.loggers.TensorBoardLogger(str(tmp_path), name="tb"),
        mlflow_logger,
    ]
    ns.pl.seed_everything(0)
    # EnergyMonitor alone logs energy but no record of the checks; its end records (energy/run_kwh,
    # logged after training at the optimizer steps done) add no step to the run's.
    make_trainer(tmp_path, [EnergyMonitor()], logger=loggers, max_epochs=3, lightning=ns, **HALF).fit(
        ns.DigitsClassifier(), datamodule=ns.DigitsDataModule()
    )
    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    assert any(r["energy/run_kwh"] for r in csv.DictReader(log.open()))
    rows = [r for r in csv.DictReader(log.open()) if r["val_loss"]]
    assert [int(r["step"]) + 1 for r in rows] == STEPS_DONE  # as Lightning logs them
    losses = [float(r["val_loss"]) for r in rows]

    events = _event_file(tmp_path / "tb" / "version_0")
    (from_mlflow,), _ = read_mlflow_curves(sqlite_uri, "plain", "val_loss", cost_key="step")
    readings = {
        "csv": read_log_curve(log, "val_loss", cost_key="step"),
        "tensorboard": read_log_curve(events, "val_loss", cost_key="step"),
        "mlflow": from_mlflow,
    }
    for name, curve in readings.items():
        assert curve.epochs.tolist() == pytest.approx(PLACES), name
        assert curve.fractional, name
        assert curve.costs.tolist() == STEPS_DONE, name
        assert curve.metrics.tolist() == pytest.approx(losses, rel=1e-6), name  # TensorBoard: float32
        assert curve.default_max_epochs == pytest.approx(PLACES[-1]), name

    # The same checks written with their progress in a curves CSV: the same decisions.
    progress = tmp_path / "progress.csv"
    with progress.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["curve_id", "epoch", "metric", "higher_is_better", "time_s", "energy_J"])
        w.writerows(
            ["half", repr(p), loss, 0, s, ""] for p, loss, s in zip(PLACES, losses, STEPS_DONE, strict=True)
        )
    threshold = sorted(losses)[2]  # passed at some check after the first
    options = ["--stopping-threshold", repr(threshold), "--min-epochs", "0"]
    out = tmp_path / "d.csv"
    assert main(["replay", str(progress), "-o", str(out), *options]) == 0
    expected = replay_decision(out)
    at = losses.index(next(x for x in losses if x < threshold))  # strictly below, as EarlyStopping
    assert float(expected["stop_epoch"]) == pytest.approx(PLACES[at])
    inputs = {
        "csv": [str(log)],
        "tensorboard": [events],
        "mlflow": ["--mlflow-uri", sqlite_uri, "--experiment", "plain"],
    }
    for name, replay_input in inputs.items():
        argv = ["replay", *replay_input, "-o", str(out), "--monitor", "val_loss", "--cost-key", "step"]
        assert main([*argv, *options]) == 0, name
        decision = replay_decision(out)
        assert float(decision["stop_epoch"]) == pytest.approx(PLACES[at]), name
        assert decision["stop_reason"] == expected["stop_reason"] == "threshold_reached", name
        assert float(decision["cost_at_stop"]) == STEPS_DONE[at], name
        assert float(decision["cost_total"]) == STEPS_DONE[-1], name  # at the last check
    capsys.readouterr()

    # report draws replay's curve: the checks inside their epochs, the run's optimizer steps in all.
    as_json, png = tmp_path / "r.json", tmp_path / "r.png"
    report_inputs = {**inputs, "mlflow": ["--mlflow-uri", sqlite_uri, "--run-id", mlflow_logger.run_id]}
    for name, report_input in report_inputs.items():
        argv = ["report", *report_input, "-o", str(png), "--json", str(as_json)]
        assert main([*argv, "--monitor", "val_loss", "--cost-key", "step"]) == 0, name
        printed = capsys.readouterr().out
        cost = json.loads(as_json.read_text())["cost"]
        assert [p["epochs"] for p in cost["points"]] == pytest.approx(PLACES), name
        assert [p["cost"] for p in cost["points"]] == STEPS_DONE, name
        assert cost["total"] == 3 * BATCHES, name
        assert f"step: {3 * BATCHES} steps in all" in printed, name


def test_several_checks_in_an_epoch_of_unknown_length_are_refused(tmp_path, sqlite_uri, capsys, ns):
    """One epoch validated twice: nothing in the log tells how many steps the epoch has (its last
    row may be anywhere before its end), so replay and report refuse it, naming the log, the epoch
    and what to do, rather than replay both checks as epoch 1."""
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name="one", tracking_uri=sqlite_uri)
    loggers = [ns.loggers.CSVLogger(str(tmp_path), name="csv"), mlflow_logger]
    make_trainer(tmp_path, [], logger=loggers, max_epochs=1, lightning=ns, **HALF).fit(
        ns.DigitsClassifier(), datamodule=ns.DigitsDataModule()
    )
    log = tmp_path / "csv" / "version_0" / "metrics.csv"
    options = ["--monitor", "val_loss", "--cost-key", "step"]
    out, png = tmp_path / "d.csv", tmp_path / "r.png"
    for where, replay_input, report_input in (
        (str(log), [str(log)], [str(log)]),
        (
            mlflow_logger.run_id,
            ["--mlflow-uri", sqlite_uri, "--experiment", "one"],
            ["--mlflow-uri", sqlite_uri, "--run-id", mlflow_logger.run_id],
        ),
    ):
        assert main(["replay", *replay_input, "-o", str(out), *options]) == 2
        err = one_error_line(capsys)
        assert where in err and "2 checks of 'val_loss' in epoch 0 (0-based)" in err, err
        assert "optimizer steps of an epoch" in err and "curves CSV" in err, err
        assert main(["report", *report_input, "-o", str(png), *options]) == 2
        assert one_error_line(capsys) == err
        assert not out.exists() and not png.exists()


def test_a_tensorboard_folder_with_a_restarted_fit_counts_the_latest_fit_s_steps(tmp_path, capsys, ns):
    """Two fits into one ``TensorBoardLogger(version=0)`` folder, the second a fresh restart: replay
    and report read the latest fit alone, steps included (report used to count the abandoned fit's
    steps: the steps in all, and those spent after the best)."""
    for epochs in (3, 1):
        ns.pl.seed_everything(0)
        logger = ns.loggers.TensorBoardLogger(str(tmp_path), name="tb", version=0)
        fast = dict(limit_train_batches=BATCHES, limit_val_batches=1, num_sanity_val_steps=0)
        make_trainer(tmp_path, [], logger=logger, max_epochs=epochs, lightning=ns, **fast).fit(
            ns.DigitsClassifier(), datamodule=ns.DigitsDataModule()
        )
    folder = tmp_path / "tb" / "version_0"
    events = str(sorted(folder.glob("events.out.tfevents.*"))[0])
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    options = ["--monitor", "val_loss", "--cost-key", "step"]
    out, as_json = tmp_path / "d.csv", tmp_path / "r.json"
    assert main(["replay", events, "-o", str(out), *options]) == 0
    decision = replay_decision(out)
    assert float(decision["cost_total"]) == float(decision["cost_at_stop"]) == BATCHES
    assert main(["report", events, "-o", str(tmp_path / "r.png"), "--json", str(as_json), *options]) == 0
    printed = capsys.readouterr().out
    cost = json.loads(as_json.read_text())["cost"]
    assert cost["total"] == BATCHES and cost["after_best"] == 0.0
    assert f"step: {BATCHES} steps in all" in printed


@pytest.mark.parametrize(
    ("checks", "rows", "expected"),
    [
        # Validations at batches 22 and 44 of 45, and the epochs' ends (on_epoch metrics) at 44.
        ([(21, 0), (43, 0), (66, 1), (88, 1)], {44: 0, 89: 1}, 45),
        # The same without epoch-end rows: the checks come at the same steps of every epoch.
        ([(21, 0), (43, 0), (66, 1), (88, 1)], {}, 45),
        # Stopped after the first check of the last epoch; every other epoch validated.
        ([(66, 1), (88, 1), (156, 3), (178, 3), (246, 5)], {}, 45),
        # One epoch: its last row may be anywhere before its end.
        ([(21, 0), (43, 0)], {44: 0}, None),
        # Not at the same steps of every epoch (every 30 batches of 45): the checks say nothing,
        # and the rows leave 45 to 59.
        ([(29, 0), (59, 1), (89, 1)], {44: 0, 89: 1}, None),
        # ... unless the rows leave one length: an epoch's last step and another's first.
        ([(29, 0), (59, 1), (89, 1)], {44: 0, 89: 1, 135: 3}, 45),
        # Rows that no length fits.
        ([(21, 0), (43, 0)], {44: 0, 50: 2}, None),
    ],
)
def test_steps_per_epoch_only_where_the_log_determines_it(checks, rows, expected) -> None:
    assert steps_per_epoch(checks, {**dict(checks), **rows}) == expected
