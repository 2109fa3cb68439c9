"""The report plot marks probes and switches of both adaptive callbacks, read from the summary."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
from conftest import make_trainer
from digits import DigitsDataModule
from test_adaptive_doubles import CostedDigits, install_step_cost, one_thread  # noqa: F401

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyMonitor
from lightning_green.report_marks import adaptation_marks

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"


def test_probe_epochs_and_switches_of_a_real_run_are_marked_where_they_trained(tmp_path, monkeypatch):
    install_step_cost(monkeypatch, overhead_j=0.2, per_sample_j=0.001)  # 64 is cheaper per sample
    batch = AdaptiveBatchSize(min_batch_size=32, max_batch_size=64, window_s=0.001, probe_fraction=0.9)
    precision = AdaptivePrecision(window_s=0.001, start_step=4, probe_budget=0.9)  # bf16 3x dearer: dropped
    monitor = EnergyMonitor(monitor="val_acc", mode="max")
    pl.seed_everything(0, verbose=False)
    trainer = make_trainer(tmp_path, [monitor, precision, batch], max_epochs=9, limit_train_batches=20)
    trainer.fit(CostedDigits(), datamodule=DigitsDataModule(batch_size=32))
    summary = json.loads(monitor.summary_path.read_text())  # the summary the plot is drawn from
    assert monitor.plot_path.read_bytes()[:8] == PNG
    marks = adaptation_marks(summary)
    by_setting = {s: [m for m in marks if m.setting == s] for s in ("batch_size", "precision")}
    # Batch size: the epochs that trained at 64 while probing, then the switch adopting it.
    trained = {r["epoch"]: r for r in summary["per_epoch"]}
    switches = [h for h in summary["batch_size_adaptations"] if h["from"] != h["to"]]
    probe_epochs = [h["applied_epoch"] for h in switches if h["reason"] == "probe"]
    assert [(m.kind, m.first_epoch, m.last_epoch) for m in by_setting["batch_size"]] == [
        *[("probe", e, e) for e in probe_epochs],
        ("switch", switches[-1]["applied_epoch"], switches[-1]["applied_epoch"]),
    ]
    assert switches[-1]["reason"] == "cheaper" and len(probe_epochs) == 2
    for m in by_setting["batch_size"]:
        assert m.start_kwh == pytest.approx(trained[m.first_epoch - 1]["total_kwh"])  # where the epoch began
        assert m.end_kwh == pytest.approx(
            trained[m.last_epoch]["total_kwh"] if m.kind == "probe" else m.start_kwh
        )
    assert by_setting["batch_size"][-1].label == "32->64 cheaper"
    # Precision: bf16 probed in alternating step windows from the first epoch, never adopted: one
    # span over the epochs those windows trained in, no line.
    windows = [h for h in summary["precision_adaptations"] if h["from"] != h["to"]]
    assert [(m.kind, m.first_epoch, m.last_epoch, m.label) for m in by_setting["precision"]] == [
        ("probe", 0, windows[-1]["epoch"], "32-true->bf16-mixed probe")
    ]
    assert by_setting["precision"][0].start_kwh == 0.0


def test_marks_of_a_run_that_ended_while_probing_reach_its_last_epoch():
    per_epoch = [{"epoch": e, "total_kwh": 0.5 * (e + 1), "energy_kwh": 0.5} for e in range(4)]
    history = [{"epoch": 2, "step": 30, "from": 32, "to": 16, "reason": "probe", "applied_epoch": 3}]
    (mark,) = adaptation_marks({"per_epoch": per_epoch, "batch_size_adaptations": history})
    assert (mark.kind, mark.first_epoch, mark.last_epoch, mark.start_kwh, mark.end_kwh) == (
        "probe",
        3,
        3,
        1.5,
        2.0,
    )
    # A switch decided at the last epoch end never trained: nothing to mark.
    pending = [{"epoch": 3, "step": 40, "from": 32, "to": 64, "reason": "cheaper", "applied_epoch": 4}]
    assert adaptation_marks({"per_epoch": per_epoch, "batch_size_adaptations": pending}) == []
    assert adaptation_marks({"per_epoch": []}) == []


def test_two_rounds_of_precision_probes_are_two_spans():
    """Probe windows interleave within epochs 7-8; after a verdict and a cooldown a second round at
    22-23: two spans, not one over the epochs between that never probed."""
    per_epoch = [{"epoch": e, "total_kwh": float(e + 1), "energy_kwh": 1.0} for e in range(30)]

    def round_at(epoch: int) -> list[dict]:
        out = []
        for e in (epoch, epoch, epoch + 1, epoch + 1):
            out += [
                {"epoch": e, "from": "32-true", "to": "bf16-mixed", "reason": "probe"},
                {"epoch": e, "from": "bf16-mixed", "to": "32-true", "reason": "probe"},
            ]
        return [*out, {"epoch": epoch + 1, "from": "32-true", "to": "32-true", "reason": "unresolved"}]

    marks = adaptation_marks({"per_epoch": per_epoch, "precision_adaptations": round_at(7) + round_at(22)})
    assert [(m.kind, m.first_epoch, m.last_epoch) for m in marks] == [("probe", 7, 8), ("probe", 22, 23)]
