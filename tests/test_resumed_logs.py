"""Lightning logs of runs resumed from a checkpoint into a new folder, joined to their earlier part."""

from __future__ import annotations

import collections
import csv
import shutil

import pytest
from conftest import make_trainer
from doubles import install_scripted_meter

from lightning_green import EnergyAwareEarlyStopping, cli
from lightning_green.offline import lightning_csv, open_lightning_log, read_log_curve
from lightning_green.offline.mlflow_curves import curve_of_run
from lightning_green.offline.mlflow_runs import MlflowRun

FAST = dict(limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0)


def _logger(ns, kind, root, name):
    if kind == "csv":
        return ns.loggers.CSVLogger(str(root), name=name)
    return ns.loggers.TensorBoardLogger(str(root), name=name)


def _log_file(folder, kind):
    if kind == "csv":
        return folder / "metrics.csv"
    (events,) = folder.glob("events.out.tfevents.*")
    return events


def _is_the_history(curve, history, what: str = "") -> None:
    """A read curve holds the stopper's checks: their metric values and cumulative costs."""
    assert list(curve.metrics) == pytest.approx(list(history.metrics), rel=1e-6), what
    assert list(curve.costs) == pytest.approx(list(history.costs_kwh), rel=1e-6), what


def _replay_every_version(root, kind) -> list[dict[str, str]]:
    """Replay every ``root/logs/version_*`` log of ``kind`` in one call; the decisions' rows."""
    out = root / "d.csv"
    name = "metrics.csv" if kind == "csv" else "events.out.tfevents.*"
    assert cli.main(["replay", str(root / "logs" / "version_*" / name), "-o", str(out)]) == 0
    return list(csv.DictReader(out.read_text().splitlines()))


def _fit(ns, root, logger, max_epochs, ckpt_path=None, ckpt_dir=None, seed=0, **kwargs):
    ns.pl.seed_everything(seed)
    stopper = EnergyAwareEarlyStopping(monitor="val_loss")
    callbacks = [stopper]
    if ckpt_dir is not None:
        every = ns.callbacks.ModelCheckpoint(
            dirpath=ckpt_dir, save_top_k=-1, every_n_epochs=1, filename="{epoch}"
        )
        callbacks.append(every)
    trainer = make_trainer(
        root,
        callbacks,
        logger=logger,
        max_epochs=max_epochs,
        lightning=ns,
        enable_checkpointing=ckpt_dir is not None,
        **{**FAST, **kwargs},
    )
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return stopper


@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_two_runs_resumed_from_one_checkpoint_each_continue_the_first_run_only(
    tmp_path, monkeypatch, capsys, ns, kind
):
    """version_1 and version_2 both resume from version_0's epoch=1.ckpt (two branches): each is
    joined to version_0 alone (not to the other branch, whose rows hold no total of its own before
    it), both are replayed, each with every check of its run, and version_0 (the earlier part of
    both) is not replayed on its own: replay says it is read in each of them."""
    install_scripted_meter(monkeypatch)  # equal totals in both branches: only the rows tell them apart
    ckpt = tmp_path / "ckpt"
    _fit(ns, tmp_path, _logger(ns, kind, tmp_path, "logs"), 4, ckpt_dir=ckpt)
    branches = [
        _fit(ns, tmp_path, _logger(ns, kind, tmp_path, "logs"), 5, ckpt_path=ckpt / "epoch=1.ckpt", seed=seed)
        for seed in (1, 2)
    ]
    first, *resumed = (_log_file(tmp_path / "logs" / f"version_{v}", kind) for v in range(3))
    for log, stopper in zip(resumed, branches, strict=True):
        run = open_lightning_log(log)
        assert run.folders == (str(log.parent), str(first.parent))
        _is_the_history(read_log_curve(log), stopper.policy.history)

    rows = _replay_every_version(tmp_path, kind)
    assert [row["curve_id"] for row in rows] == [str(log.parent) for log in resumed]
    for row, stopper in zip(rows, branches, strict=True):
        assert float(row["best_metric_at_stop"]) == pytest.approx(stopper.policy.best_score, rel=1e-6)
    said = capsys.readouterr().out
    assert f"{first} in each of 2 runs resumed from it: {resumed[0]}, {resumed[1]}" in said


@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_a_fresh_run_logged_after_a_resumed_run_is_not_its_earlier_part(
    tmp_path, monkeypatch, capsys, ns, kind
):
    """version_1 resumes from version_0's epoch=1.ckpt; version_2, a later fresh run (another seed)
    in the same folder, holds the same total at the same step (a meter that gives equal totals).
    version_1 is joined to version_0 (begun before it), not to version_2 (begun after it), so its
    curve is its callback's history, and replay replays version_1 and version_2 (version_0 read
    in version_1). It used to join version_1 to version_2 and replay version_0 as a whole run."""
    install_scripted_meter(monkeypatch)
    ckpt = tmp_path / "ckpt"
    _fit(ns, tmp_path, _logger(ns, kind, tmp_path, "logs"), 4, ckpt_dir=ckpt)
    resumed = _fit(ns, tmp_path, _logger(ns, kind, tmp_path, "logs"), 6, ckpt_path=ckpt / "epoch=1.ckpt")
    _fit(ns, tmp_path, _logger(ns, kind, tmp_path, "logs"), 3, ckpt_dir=tmp_path / "later", seed=7)
    first, middle, last = (_log_file(tmp_path / "logs" / f"version_{v}", kind) for v in range(3))

    run = open_lightning_log(middle)
    assert run.folders == (str(middle.parent), str(first.parent))
    _is_the_history(read_log_curve(middle), resumed.policy.history)
    rows = _replay_every_version(tmp_path, kind)
    assert [row["curve_id"] for row in rows] == [str(middle.parent), str(last.parent)]
    assert f"{first} in {middle}" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_replay_of_a_chain_of_resumes_names_the_run_each_part_is_read_in(
    tmp_path, monkeypatch, capsys, ns, kind
):
    """version_0 -> version_1 (resumed from its epoch=1.ckpt) -> version_2 (resumed from version_1's
    epoch=3.ckpt): replay of the three replays version_2 only, with every check of its run, and
    says version_0 is read in version_2, version_1 having resumed from it, and version_1 in
    version_2. It used to say version_0 was read 'in each of 2 runs resumed from it: version_1,
    version_2' (version_1 is no replayed run, version_2 did not resume from version_0)."""
    install_scripted_meter(monkeypatch)
    _fit(ns, tmp_path, _logger(ns, kind, tmp_path, "logs"), 4, ckpt_dir=tmp_path / "c0")
    _fit(
        ns,
        tmp_path,
        _logger(ns, kind, tmp_path, "logs"),
        6,
        tmp_path / "c0" / "epoch=1.ckpt",
        tmp_path / "c1",
    )
    last = _fit(
        ns,
        tmp_path,
        _logger(ns, kind, tmp_path, "logs"),
        8,
        tmp_path / "c1" / "epoch=3.ckpt",
        tmp_path / "c2",
    )
    first, middle, latest = (_log_file(tmp_path / "logs" / f"version_{v}", kind) for v in range(3))
    assert open_lightning_log(latest).folders == tuple(str(log.parent) for log in (latest, middle, first))
    curve = read_log_curve(latest)
    assert list(curve.metrics) == pytest.approx(list(last.policy.history.metrics), rel=1e-6)

    out = tmp_path / "d.csv"
    assert cli.main(["replay", *map(str, (first, middle, latest)), "-o", str(out)]) == 0
    assert [row["curve_id"] for row in csv.DictReader(out.read_text().splitlines())] == [str(latest.parent)]
    said = capsys.readouterr().out
    assert f"{first} in {latest} ({middle} resumed from it), {middle} in {latest}\n" in said
    assert "each of" not in said


@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_reading_a_resumed_log_reads_each_sibling_folder_once(tmp_path, monkeypatch, ns, kind):
    """Eight fine-tunes resumed from one checkpoint (whose log is in another folder): reading one
    of them reads each sibling folder once (they resumed from the same point: none is its earlier
    part), and a replay of all eight reads each folder once in all; it used to re-open every
    sibling recursively, for each candidate (8 folders: tens of seconds)."""
    install_scripted_meter(monkeypatch)
    ckpt = tmp_path / "ckpt"
    _fit(ns, tmp_path, _logger(ns, kind, tmp_path, "pretrain"), 2, ckpt_dir=ckpt)
    for seed in (0, 1):
        _fit(
            ns,
            tmp_path,
            _logger(ns, kind, tmp_path, "finetune"),
            3,
            ckpt_path=ckpt / "epoch=1.ckpt",
            seed=seed,
        )
    for v in range(2, 8):  # a sweep: copies of the real fine-tunes
        shutil.copytree(tmp_path / "finetune" / f"version_{v % 2}", tmp_path / "finetune" / f"version_{v}")
    logs = [_log_file(tmp_path / "finetune" / f"version_{v}", kind) for v in range(8)]

    reads: collections.Counter[str] = collections.Counter()
    if kind == "csv":
        opened = lightning_csv._open

        def counting_open(path):
            reads[str(path)] += 1
            return opened(path)

        monkeypatch.setattr(lightning_csv, "_open", counting_open)
        per_file = 3  # to tell a CSVLogger log by its header (as given, as a sibling), and to read it
    else:
        from tensorboard.backend.event_processing import event_file_loader

        class CountingLoader(event_file_loader.EventFileLoader):
            def __init__(self, path, *args, **kwargs):
                reads[str(path)] += 1
                super().__init__(path, *args, **kwargs)

        monkeypatch.setattr(event_file_loader, "EventFileLoader", CountingLoader)
        per_file = 1

    run = open_lightning_log(logs[0])
    assert run.continues == () and run.folders == (str(logs[0].parent),)
    assert sorted(reads) == sorted(map(str, logs)) and max(reads.values()) <= per_file
    reads.clear()
    out = tmp_path / "d.csv"
    assert cli.main(["replay", *map(str, logs), "-o", str(out)]) == 0
    assert len(list(csv.DictReader(out.read_text().splitlines()))) == 8
    assert sorted(reads) == sorted(map(str, logs)) and max(reads.values()) <= per_file


@pytest.mark.parametrize("val_check_interval", [0.5, 1.0])
def test_a_run_resumed_from_a_checkpoint_saved_at_a_validation_replays_every_check(
    tmp_path, monkeypatch, capsys, ns, val_check_interval
):
    """Two validations an epoch, a checkpoint every epoch (saved at its last validation, the epoch
    still open): resumed from epoch=1.ckpt into version_1, the resumed log closes epoch 1 itself.
    Its joined log keeps the checks the checkpoint held (1.5 and 2.0 epochs were cut, at epoch 0's
    total), so its curve is the callback's history exactly and replay makes the callback's decision,
    from the CSV log and the TensorBoard log alike; so with one validation an epoch."""
    install_scripted_meter(monkeypatch)
    ckpt = tmp_path / "ckpt"
    kwargs = dict(val_check_interval=val_check_interval, limit_train_batches=6, limit_val_batches=2)

    def loggers():
        return [_logger(ns, "csv", tmp_path, "csv"), _logger(ns, "tensorboard", tmp_path, "tb")]

    _fit(ns, tmp_path, loggers(), 4, ckpt_dir=ckpt, **kwargs)
    stopper = _fit(ns, tmp_path, loggers(), 6, ckpt_path=ckpt / "epoch=1.ckpt", **kwargs)
    history = stopper.policy.history
    assert len(history) == 6 / val_check_interval
    for log in (
        _log_file(tmp_path / "csv" / "version_1", "csv"),
        _log_file(tmp_path / "tb" / "version_1", "tb"),
    ):
        curve = read_log_curve(log)
        _is_the_history(curve, history)
        assert [float(e) for e in curve.epochs] == pytest.approx(
            [val_check_interval * (i + 1) for i in range(len(history))]
        )
        out = tmp_path / f"{log.parent.parent.name}.csv"
        assert cli.main(["replay", str(log), "-o", str(out)]) == 0
        (row,) = list(csv.DictReader(out.read_text().splitlines()))
        reason = stopper.stop_reason.value if stopper.stop_reason is not None else "none"
        assert row["stop_reason"] == reason
        assert float(row["best_metric_at_stop"]) == pytest.approx(stopper.policy.best_score, rel=1e-6)
        assert float(row["cost_at_stop"]) == pytest.approx(float(history.costs_kwh[-1]), rel=1e-6)


def test_a_validation_after_a_checkpoint_saved_at_a_training_step_is_not_in_the_resumed_run(
    tmp_path, monkeypatch, sqlite_uri, ns
):
    """Four validations an epoch (val_check_interval=0.25, logged at steps 2, 5, 8, ...) and a
    checkpoint every 6 training steps: step=18.ckpt is saved at the end of the training batch,
    before that batch's validation (logged at step 17), so the run resumed from it never has that
    check. Its logs (a new CSVLogger and TensorBoardLogger folder, the same MLflow run) read as
    the callback's history exactly: 15 checks, not 16 with the abandoned fit's val_loss at step 17,
    which every reader used to keep (rows up to the resumed log's first step, 20)."""
    install_scripted_meter(monkeypatch)
    ckpt = tmp_path / "ckpt"

    def fit(max_epochs, ckpt_path=None, run_id=None, prefix=""):
        ns.pl.seed_everything(0)
        stopper = EnergyAwareEarlyStopping(monitor="val_loss")
        every = ns.callbacks.ModelCheckpoint(
            dirpath=ckpt, save_top_k=-1, every_n_train_steps=6, filename=prefix + "{step}"
        )
        mlflow = ns.loggers.MLFlowLogger(
            experiment_name="e",
            tracking_uri=sqlite_uri,
            run_id=run_id,
            artifact_location=str(tmp_path / "art"),
        )
        loggers = [_logger(ns, "csv", tmp_path, "csv"), _logger(ns, "tensorboard", tmp_path, "tb"), mlflow]
        trainer = make_trainer(
            tmp_path,
            [stopper, every],
            logger=loggers,
            max_epochs=max_epochs,
            lightning=ns,
            enable_checkpointing=True,
            limit_train_batches=12,
            limit_val_batches=2,
            val_check_interval=0.25,
            num_sanity_val_steps=0,
        )
        datamodule = ns.DigitsDataModule(batch_size=32)
        trainer.fit(ns.DigitsClassifier(), datamodule=datamodule, ckpt_path=ckpt_path)
        return stopper, mlflow.run_id

    _, run_id = fit(3)
    stopper, again = fit(4, ckpt_path=ckpt / "step=18.ckpt", run_id=run_id, prefix="resumed-")
    assert again == run_id
    history = stopper.policy.history
    assert len(history) == 15  # 5 checks from the checkpoint (epochs 0.25 .. 1.25), then 1.75 .. 4.0
    curves = {
        "csv": read_log_curve(_log_file(tmp_path / "csv" / "version_1", "csv")),
        "tensorboard": read_log_curve(_log_file(tmp_path / "tb" / "version_1", "tb")),
        "mlflow": curve_of_run(MlflowRun.open(sqlite_uri, run_id), "val_loss"),
    }
    for kind, curve in curves.items():
        _is_the_history(curve, history, kind)
        assert [float(e) for e in curve.epochs] == pytest.approx(
            [*(0.25 * i for i in range(1, 6)), *(0.25 * i for i in range(7, 17))]
        ), kind
