"""Replay of checks that are not whole epochs, and of several curve files in one call."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from lightning_green.cli import main
from lightning_green.offline import read_curves_csv, replay_curve
from lightning_green.policy import StoppingConfig, StoppingPolicy

NAS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "curves" / "nasbench_nlp_wt2_dev.csv"
HEADER = ["curve_id", "epoch", "metric", "higher_is_better", "time_s", "energy_J"]


def real_losses(n_curves: int) -> list[tuple[str, list[float], list[float]]]:
    """``(curve_id, val_loss, cumulative seconds)`` of the first NAS-Bench-NLP curves."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    with NAS.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["curve_id"] not in curves and len(curves) == n_curves:
                break
            losses, seconds = curves.setdefault(row["curve_id"], ([], []))
            losses.append(float(row["metric"]))
            seconds.append(float(row["time_s"]))
    return [(k, *v) for k, v in curves.items()]


def write_curves(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    return path


def progress_rows(epoch_text, n_curves: int = 4) -> list[list[object]]:
    """Real losses, at the fractional progress ``epoch_text(k)`` of check ``k`` (1-based)."""
    return [
        [cid, epoch_text(k), loss, 0, t, ""]
        for cid, losses, seconds in real_losses(n_curves)
        for k, (loss, t) in enumerate(zip(losses, seconds, strict=True), start=1)
    ]


def decisions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "epoch_text",
    [lambda k: f"{0.0499809 * k:.7f}", lambda k: f"{1.00096 * k:.5f}"],
    ids=["mlperf-progress", "dawnbench-epochs"],
)
def test_fractional_progress_is_replayed_and_written_as_logged(tmp_path: Path, epoch_text) -> None:
    src = write_curves(tmp_path / "c.csv", progress_rows(epoch_text))
    out = tmp_path / "d.csv"
    # min_epochs counts epochs of progress: 1 of the 2.5 epochs the MLPerf-like curves run.
    assert main(["replay", str(src), "-o", str(out), "--min-epochs", "1"]) == 0
    rows = decisions(out)
    assert len(rows) == 4
    for row, (cid, losses, seconds) in zip(rows, real_losses(4), strict=True):
        # The policy is told the progress as logged (epochs, fractional), planned to the last one.
        policy = StoppingPolicy(StoppingConfig(mode="min", min_epochs=1))
        stop, planned = len(losses), float(epoch_text(len(losses)))
        for i, (loss, t) in enumerate(zip(losses, seconds, strict=True)):
            decision = policy.update(loss, t, progress=float(epoch_text(i + 1)), horizon=planned)
            if decision.should_stop:
                stop = i + 1
                assert decision.progress == float(epoch_text(stop)) and decision.horizon == planned
                break
        assert row["curve_id"] == cid
        assert row["stop_epoch"] == epoch_text(stop)  # the epoch of the last check run, as written
        assert float(row["cost_at_stop"]) == seconds[stop - 1]
    assert any(r["stop_reason"] != "none" for r in rows)


def test_whole_epochs_keep_their_spelling(tmp_path: Path) -> None:
    (cid, losses, seconds), *_ = real_losses(1)
    src = write_curves(
        tmp_path / "c.csv",
        [[cid, f"{k}.0", m, 0, t, ""] for k, (m, t) in enumerate(zip(losses, seconds, strict=True), 1)],
    )
    out = tmp_path / "d.csv"
    assert main(["replay", str(src), "-o", str(out)]) == 0
    (row,) = decisions(out)
    curve = read_curves_csv(src)[0]
    assert curve.epochs.dtype.kind == "i"  # whole numbers: replayed as epochs, as before
    assert row["stop_epoch"] == f"{replay_curve(curve, StoppingConfig()).stop_epoch}.0"


def test_progress_that_rounds_to_one_value_is_still_one_check() -> None:
    text = "curve_id,epoch,metric,higher_is_better,time_s,energy_J\na,1.00096,1.0,0,1,\na,1.000960,0.9,0,2,\n"
    with pytest.raises(ValueError, match=r"c.csv:3:2: duplicate row: curve 'a' already has epoch 1.000960"):
        read_curves_csv(io.StringIO(text), name="c.csv")


def test_several_files_and_a_glob_in_one_call(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    rows = progress_rows(lambda k: str(k), n_curves=4)
    first = [r for r in rows if r[0] in {c for c, *_ in real_losses(2)}]
    a = write_curves(runs / "a.csv", first)
    b = write_curves(runs / "b.csv", [r for r in rows if r not in first])
    # The same curve id in two files stays two curves.
    c = write_curves(runs / "c.csv", [[first[0][0], *r[1:]] for r in rows if r not in first][:30])
    (runs / "notes.txt").write_text("not a curve file\n")

    single = {}
    for path in (a, b, c):
        out = tmp_path / f"{path.stem}.out.csv"
        assert main(["replay", str(path), "-o", str(out)]) == 0
        single.update(
            {f"{path}:{r['curve_id']}": {**r, "curve_id": f"{path}:{r['curve_id']}"} for r in decisions(out)}
        )

    listed, globbed = tmp_path / "listed.csv", tmp_path / "globbed.csv"
    assert main(["replay", str(a), str(b), str(c), "-o", str(listed)]) == 0
    assert main(["replay", str(runs / "*.csv"), "-o", str(globbed)]) == 0
    assert decisions(listed) == decisions(globbed) == list(single.values())
    ids = [r["curve_id"] for r in decisions(listed)]
    assert len(ids) == len(set(ids)) == 5 and sum(i.endswith(":" + str(first[0][0])) for i in ids) == 2
    assert "replayed 5 curves from" in capsys.readouterr().out

    capsys.readouterr()
    assert main(["replay", str(runs / "*.parquet"), "-o", str(tmp_path / "x.csv")]) == 2
    assert "no file matches" in capsys.readouterr().err
    assert main(["replay", str(a), str(runs / ".." / "runs" / "a.csv"), "-o", str(tmp_path / "x.csv")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["replay", str(runs / "*.csv"), "-o", str(b)]) == 2  # the glob includes the output
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
