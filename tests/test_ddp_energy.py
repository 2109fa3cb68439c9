"""EnergyMonitor under a real 2-process DDP run over gloo on the CPU."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_ddp_script

from lightning_green.energy.estimate import DEFAULT_CPU_POWER_PER_CORE_W
from lightning_green.energy.units import j_to_kwh

pytestmark = pytest.mark.slow


def run_ddp(out: Path, *args: str, timeout: int = 240, ranks: int = 2) -> list[dict]:
    run_ddp_script(out, *args, timeout=timeout)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


def test_ddp_scripted_meters_sum_every_rank_once(tmp_path):
    ranks = run_ddp(tmp_path, "--scripted", "--epochs", "3")
    assert [r["world_size"] for r in ranks] == [2, 2]
    # One read per epoch boundary: rank 0 GPU 1000 J + host 10 J, rank 1 GPU 2000 J, host not again.
    for rank in ranks:
        energies = [h["energy_j"] for h in rank["history"]]
        assert energies == pytest.approx([3010.0] * 3)
        assert [h["total_j"] for h in rank["history"]] == pytest.approx([3010.0, 6020.0, 9030.0])
        assert rank["source"] == "nvml+rapl"
    assert ranks[0]["history"] == ranks[1]["history"]  # identical on every rank


@pytest.mark.parametrize("lightning", ["pytorch_lightning", "lightning.pytorch"])
def test_ddp_a_read_failing_on_one_rank_marks_both_epochs_it_touched_partial_on_every_rank(
    tmp_path, lightning
):
    """Rank 1's read closing epoch 1 fails (it keeps its last figure): epoch 1 misses rank 1's
    2000 J, which epoch 2 holds once rank 1 answers again. Both epochs are partial, on every rank;
    the run's total is unchanged."""
    ranks = run_ddp(
        tmp_path, "--scripted", "--epochs", "4", "--rank1-failed-read", "3", "--lightning", lightning
    )
    history = ranks[0]["history"]
    assert ranks[1]["history"] == history
    assert [h["energy_j"] for h in history] == pytest.approx([3010.0, 1010.0, 5010.0, 3010.0])
    assert [h["partial"] for h in history] == [False, True, True, False]
    assert history[-1]["total_j"] == pytest.approx(4 * 3010.0)
    assert all(rank["summary"]["partial"] is True for rank in ranks)


def test_ddp_cpu_estimate_counts_each_rank_once(tmp_path):
    ranks = run_ddp(tmp_path, "--epochs", "2")
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["source"] == "estimate"
    # The estimate is CPU time x 10 W/core: rank 0 reads the tree of both local ranks. Compare
    # with each rank's own CPU time over the same span: a double count would give ~2x, a
    # missed rank ~0.5x.
    rows0, rows1 = ranks[0]["rows"], ranks[1]["rows"]
    own_cpu_s = rows0[-1]["cpu_s"] + rows1[-1]["cpu_s"]
    measured_cpu_s = ranks[0]["history"][-1]["total_j"] / DEFAULT_CPU_POWER_PER_CORE_W
    assert measured_cpu_s == pytest.approx(own_cpu_s, rel=0.2)
    # And the epoch metric is rank 0's, identical everywhere.
    assert all(h["metric"] is not None for h in ranks[0]["history"])


@pytest.mark.parametrize("lightning", ["pytorch_lightning", "lightning.pytorch"])
def test_ddp_cpu_estimate_without_proc_counts_every_rank(tmp_path, lightning):
    """Where the estimate cannot read other processes (macOS, Windows: no /proc), each rank
    estimates its own CPU time and the session sums them: rank 1 is counted, and only once."""
    ranks = run_ddp(tmp_path, "--epochs", "2", "--estimate-platform", "darwin", "--lightning", lightning)
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["source"] == "estimate"
    # The last epoch against each rank's own CPU time over it (the same span, epoch end to epoch
    # end): rank 0 alone would give about half of it, a double count about twice.
    own_s = [rank["rows"][-1]["cpu_s"] - rank["rows"][-2]["cpu_s"] for rank in ranks]
    measured_s = ranks[0]["history"][-1]["energy_j"] / DEFAULT_CPU_POWER_PER_CORE_W
    assert 0.8 < measured_s / sum(own_s) < 1.25, (measured_s, own_s)
    assert measured_s > own_s[0] + 0.5 * own_s[1], (measured_s, own_s)  # rank 1 is in it


@pytest.mark.parametrize("lightning", ["pytorch_lightning", "lightning.pytorch"])
def test_ddp_a_failed_fit_reports_the_energy_up_to_the_last_reading_of_all_ranks(tmp_path, lightning):
    """Both ranks raise in epoch 2: the failed-fit summary (no collective possible there) counts
    what the ranks read together inside that epoch (here each step, step_interval=1), not only
    the two closed epochs."""
    args = ["--scripted", "--epochs", "4", "--fail-in-epoch", "2", "--monitor-args", '{"step_interval": 1}']
    ranks = run_ddp(tmp_path, *args, "--lightning", lightning)
    for rank in ranks:
        summary = rank["summary"]
        assert summary["failed"] is True and summary["epochs"] == 2
        closed_j = rank["history"][-1]["total_j"]
        # At least the read after the epoch's first step: 1000 J + 2000 J from the GPUs, 10 J host.
        assert summary["total_kwh"] * 3.6e6 >= closed_j + 3010.0 - 1e-6
    assert ranks[0]["summary"]["total_kwh"] == ranks[1]["summary"]["total_kwh"]


@pytest.mark.parametrize("lightning", ["pytorch_lightning", "lightning.pytorch"])
def test_ddp_three_ranks_log_the_ledgers_figures_to_the_last_digit(tmp_path, lightning):
    """Every rank logs the same figures; the loggers get them exactly, whatever the number of ranks.

    Scripted meters make 100 J an epoch over 3 ranks (15 + 30 + 45 J of GPU, 10 J of host): 100 J
    and 200 J in kWh are among the values a mean over three ranks moves in the last digit.
    """
    ranks = run_ddp(
        tmp_path,
        *("--scripted", "--scripted-gpu-j", "15", "--devices", "3", "--csv", "--epochs", "2"),
        *("--lightning", lightning),
        ranks=3,
    )
    history = ranks[0]["history"]
    assert [h["energy_j"] for h in history] == [100.0, 100.0]
    assert all(r["history"] == history for r in ranks)
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    logged = [r for r in rows if r["energy/total_kwh"]]
    assert [float(r["energy/total_kwh"]) for r in logged] == [j_to_kwh(h["total_j"]) for h in history]
    assert [float(r["energy/epoch_kwh"]) for r in logged] == [j_to_kwh(h["energy_j"]) for h in history]


@pytest.mark.parametrize("lightning", ["pytorch_lightning", "lightning.pytorch"])
def test_ddp_a_run_resumed_into_a_new_csv_folder_holds_the_whole_run(tmp_path, lightning):
    """Two ranks, two epochs (a checkpoint each), then resumed from epoch=0.ckpt into a new CSVLogger
    folder to three epochs: rank 0 copies epoch 0 and its check into version_1 before the first epoch
    of the resumed fit begins (no collective in it: the ranks go on together), so version_1 holds
    every epoch once and its totals are the ledger's."""
    common = ("--scripted", "--csv", "--callbacks", "monitor,stopper", "--lightning", lightning)
    common += ("--stopper-args", json.dumps({"monitor": "val_acc", "mode": "max"}))
    run_ddp(tmp_path, *common, "--epochs", "2", "--ckpt-dir", str(tmp_path / "ckpt"))
    ranks = run_ddp(
        tmp_path, *common, "--epochs", "3", "--ckpt-path", str(tmp_path / "ckpt" / "epoch=0.ckpt")
    )
    history = ranks[0]["history"]
    assert ranks[1]["history"] == history and [h["epoch"] for h in history] == [0, 1, 2]
    rows = list(csv.DictReader((tmp_path / "csv" / "version_1" / "metrics.csv").open()))
    logged = [r for r in rows if r["energy/total_kwh"]]
    assert [float(r["epoch"]) for r in logged] == [0, 1, 2]
    assert [float(r["energy/total_kwh"]) for r in logged] == [j_to_kwh(h["total_j"]) for h in history]
    assert [float(r["energy/check_number"]) for r in rows if r["energy/check_number"]] == [1, 2, 3]
