"""A stop held back by ``Trainer(min_epochs=...)`` or ``Trainer(min_steps=...)`` replays as it ran.

Lightning keeps a stop (``trainer.should_stop``) it holds back below the Trainer's floor and ends
the fit at the first moment the floor is met; EnergyAwareEarlyStopping renews its stop (reason,
``stopped_epoch``) at each later check that decides to stop. Real fits of the digits task with the
scripted meter, logged at once to a ``CSVLogger``, a ``TensorBoardLogger`` and a real sqlite MLflow
store, under both Lightning namespaces: ``replay`` of each log stops where the run did, for the
reason it did, with the saving the live summary reports; ``report`` (no summary file) gives the
stopped epoch Lightning's ``stopped_epoch`` holds.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from doubles import install_scripted_meter
from test_offline_stop_records import _loggers, _replay_input
from test_stopper_progress import BATCHES, check_curve_module, fit, flat_after

from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor, keys
from lightning_green.cli import main

pytest.importorskip("mlflow")

FLOOR = 8  # epochs: the stop, decided at the 6th check, is held back to here
# Improves for 3 checks, then none: a plateau stop (patience 3) at the 6th check, renewed at every
# later one.
RENEWED = flat_after(3, 40)
# As RENEWED, but the 7th check improves: the policy no longer says stop there, nor at the 8th;
# Lightning still ends the fit at the floor (it keeps should_stop), the stop stays the 6th check's,
# and what it left unrun is projected from the last check, as for a renewed stop.
RELEASED = [*RENEWED[:6], 0.1, *[0.1 + 1e-3 * k for k in range(1, 34)]]

CASES = {
    "min_epochs-renewed": (RENEWED, {"min_epochs": FLOOR}, FLOOR - 1),
    "min_steps-renewed": (RENEWED, {"min_steps": FLOOR * BATCHES}, FLOOR - 1),
    "min_epochs-released": (RELEASED, {"min_epochs": FLOOR}, 5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_replay_and_report_of_a_held_stop_agree_with_the_live_run(
    tmp_path: Path, sqlite_uri: str, monkeypatch, capsys, ns, case: str
) -> None:
    curve, floor_kw, stopped_epoch = CASES[case]
    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1, min_relative_gain=None)
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    loggers, inputs = _loggers(tmp_path, sqlite_uri, ns, "floor")
    module = ns.module(check_curve_module)(curve, steps_per_check=BATCHES)
    trainer = fit(tmp_path, ns, [stopper, monitor], module, logger=loggers, max_epochs=12, **floor_kw)
    # The live run: held to the floor, stopped there; its stop is the last check that decided one.
    assert trainer.current_epoch == FLOOR
    assert stopper.stop_reason is not None and stopper.stop_reason.value == "plateau"
    assert stopper.stopped_epoch == stopped_epoch
    kwh_at_stop = float(stopper.policy.history.costs_kwh[-1])
    # What the stop left unrun, as the live summary says it: from the run's last check, whether
    # that check decided to stop or not (the held stop ended the run there all the same).
    saved = monitor.last_summary["stop_savings"]
    assert (saved["stopped_at"], saved["epochs_not_run"]) == (FLOOR, 12 - FLOOR)
    kwh_not_run = saved["kwh_not_spent"]
    assert kwh_not_run == pytest.approx(kwh_at_stop / FLOOR * (12 - FLOOR))  # the scripted meter

    out, png, as_json = tmp_path / "d.csv", tmp_path / "r.png", tmp_path / "r.json"
    for source, report_input in inputs().items():
        capsys.readouterr()
        assert main(["replay", *_replay_input(source, report_input, "floor"), "-o", str(out)]) == 0, source
        printed = capsys.readouterr().out
        (row,) = list(csv.DictReader(out.read_text().splitlines()))
        assert (row["stop_reason"], int(row["stop_epoch"])) == ("plateau", FLOOR), source
        assert float(row["cost_at_stop"]) == pytest.approx(kwh_at_stop, rel=1e-6), source
        assert float(row["cost_not_run_projected"]) == pytest.approx(kwh_not_run, rel=1e-6), source
        mean = float(re.search(r"mean cost saved: ([0-9.]+)", printed).group(1))
        assert mean == pytest.approx(kwh_not_run / (kwh_at_stop + kwh_not_run), abs=1e-3), source
        # The report of the log (no summary file): the stop as Lightning's fields hold it.
        assert main(["report", *report_input, "-o", str(png), "--json", str(as_json)]) == 0, source
        reported = json.loads(as_json.read_text())
        assert reported["rebuilt_from_metrics"], source
        assert (reported["stop_reason"], reported["stopped_epoch"]) == ("plateau", stopped_epoch), source


def test_a_held_stop_that_ends_the_run_inside_an_epoch_leaves_whole_checks_unrun(
    tmp_path: Path, monkeypatch, ns
) -> None:
    """``Trainer(min_steps=...)`` holds the plateau stop to half-way through epoch 8: the run's last
    check is at 8.5 epochs, and what the stop leaves unrun is the checks at 9, 10, 11, 12 - four,
    in the summary and the logged ``energy/not_run_checks_projected`` alike."""
    install_scripted_meter(monkeypatch)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=3, min_epochs=1, min_relative_gain=None)
    monitor = EnergyMonitor(monitor="val_loss", summary=False)
    module = ns.module(check_curve_module)(RENEWED, steps_per_check=BATCHES)
    logger = ns.loggers.CSVLogger(tmp_path, name="logs")
    floor = FLOOR * BATCHES + BATCHES // 2
    fit(tmp_path, ns, [stopper, monitor], module, logger=logger, max_epochs=12, min_steps=floor)
    assert stopper.stop_reason is not None and stopper.policy.history.progress.tolist()[-2:] == [8.0, 8.5]
    saved = monitor.last_summary["stop_savings"]
    assert (saved["stopped_at"], saved["epochs_not_run"], saved["checks_not_run"]) == (8.5, 3.5, 4)
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        logged = [row[keys.NOT_RUN_CHECKS] for row in csv.DictReader(f) if row.get(keys.NOT_RUN_CHECKS)]
    assert [float(value) for value in logged][-1] == 4


def test_the_floor_is_recorded_only_where_the_trainer_has_one(tmp_path: Path, monkeypatch, ns) -> None:
    """``lightning_green.trainer_min_epochs``/``_min_steps``: Lightning's fit-loop values; none without."""
    from lightning_green.callbacks.early_stopping import trainer_floor_params

    install_scripted_meter(monkeypatch)
    module = ns.module(check_curve_module)(RENEWED, steps_per_check=BATCHES)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    plain = fit(tmp_path, ns, [stopper], module, max_epochs=1, logger=False)
    assert trainer_floor_params(plain) == {}
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    held = fit(tmp_path, ns, [stopper], module, max_epochs=1, min_steps=3, logger=False)
    # min_steps alone: Lightning's fit loop holds min_epochs=1 too.
    assert trainer_floor_params(held) == {keys.PARAM_TRAINER_MIN_EPOCHS: 1, keys.PARAM_TRAINER_MIN_STEPS: 3}
