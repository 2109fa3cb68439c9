"""Lightning logs of runs resumed from a checkpoint into a new folder, joined to their earlier part."""

from __future__ import annotations

import collections
import csv
import shutil

import pytest
from conftest import make_trainer
from doubles import install_scripted_meter

from lightning_green import EnergyAwareEarlyStopping, cli, keys
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


def _epochs_of(run, what: str) -> list[float]:
    """The epochs a read log's ``energy/total_kwh`` points are of, in step order; its totals add up."""
    totals, epochs = run.history(keys.TOTAL_KWH), run.history("epoch")
    added = sum(run.history(keys.EPOCH_KWH).values())
    assert added == pytest.approx(totals[max(totals)], rel=1e-6), what
    return [epochs[step] for step in sorted(totals)]


def _replayed(root, log, out_name: str) -> dict[str, str]:
    """Replay one log; its decisions' row."""
    out = root / out_name
    assert cli.main(["replay", str(log), "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    return row


def _decides_as(row, stopper, what: str) -> None:
    """A replayed decision is the callback's on its whole run."""
    history = stopper.policy.history
    reason = stopper.stop_reason.value if stopper.stop_reason is not None else "none"
    assert row["stop_reason"] == reason, what
    assert float(row["best_metric_at_stop"]) == pytest.approx(stopper.policy.best_score, rel=1e-6), what
    assert float(row["cost_at_stop"]) == pytest.approx(float(history.costs_kwh[-1]), rel=1e-6), what


def test_a_run_resumed_into_new_logs_gives_each_the_whole_run(tmp_path, monkeypatch, capsys, sqlite_uri, ns):
    """Three epochs (a checkpoint each), then resumed from epoch=1.ckpt into a new MLflow run and new
    CSVLogger and TensorBoardLogger folders (version_1) to five: each new log holds every epoch 0..4
    once - epochs 0 and 1 copied from the checkpoint at the steps the first fit logged them at, then
    its own -, its energy/epoch_kwh add up to its last energy/total_kwh, which are the summary's, and
    replay over it alone (the CSV and TensorBoard folders with no version_0 beside them) makes the
    callback's decision on every check of the run. Given version_0 too, replay reads it in version_1.
    The new logs used to start at epoch 2 (replay over one alone saw three of the five epochs)."""
    import shutil

    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    ckpt = tmp_path / "ckpt"

    def loggers(experiment):
        mlflow = ns.loggers.MLFlowLogger(
            experiment_name=experiment, tracking_uri=sqlite_uri, artifact_location=str(tmp_path / "art")
        )
        files = [_logger(ns, kind, tmp_path / kind, "logs") for kind in ("csv", "tensorboard")]
        return [*files, mlflow]

    first = loggers("first")
    _fit(ns, tmp_path, first, 3, ckpt_dir=ckpt)
    new = loggers("resumed")
    stopper = _fit(ns, tmp_path, new, 5, ckpt_path=ckpt / "epoch=1.ckpt")
    history, summary = stopper.policy.history, stopper.energy_monitor.last_summary
    assert len(history) == 5
    totals = [epoch["total_kwh"] for epoch in summary["per_epoch"]]

    client = MlflowClient(sqlite_uri)

    def points(run_id, key):
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    run_id = new[2].run_id
    logged = points(run_id, keys.TOTAL_KWH)
    assert [value for _, value in logged] == pytest.approx(totals, rel=1e-9)  # each epoch once
    assert logged[:2] == points(first[2].run_id, keys.TOTAL_KWH)[:2]  # at the first fit's steps
    run = MlflowRun.open(sqlite_uri, run_id)
    assert _epochs_of(run, "mlflow") == [0, 1, 2, 3, 4]
    assert run.history(keys.RUN_KWH) and min(run.history(keys.RUN_KWH).values()) == pytest.approx(
        summary["total_kwh"], rel=1e-9
    )
    assert [value for _, value in points(run_id, keys.CHECK_NUMBER)] == [1, 2, 3, 4, 5]
    _is_the_history(curve_of_run(run, "val_loss"), history, "mlflow")
    out = tmp_path / "mlflow.csv"
    assert cli.main(["replay", "--mlflow-uri", sqlite_uri, "--experiment", "resumed", "-o", str(out)]) == 0
    (row,) = list(csv.DictReader(out.read_text().splitlines()))
    _decides_as(row, stopper, "mlflow")

    for kind in ("csv", "tensorboard"):
        root = tmp_path / kind
        log = _log_file(root / "logs" / "version_1", kind)
        capsys.readouterr()
        (joined,) = _replay_every_version(root, kind)  # version_0 read in version_1
        assert joined["curve_id"] == str(log.parent), kind
        assert f"in {log.parent}" in capsys.readouterr().out, kind
        _decides_as(joined, stopper, kind)

        shutil.move(str(root / "logs" / "version_0"), str(tmp_path / f"{kind}-version_0"))
        alone = open_lightning_log(log)
        assert alone.continues == (), kind
        assert _epochs_of(alone, kind) == [0, 1, 2, 3, 4]
        assert list(alone.history(keys.TOTAL_KWH).values()) == pytest.approx(totals, rel=1e-6), kind
        _is_the_history(read_log_curve(log), history, kind)
        assert _replayed(tmp_path, log, f"{kind}-alone.csv") == {**joined, "curve_id": str(log.parent)}
    rows = list(csv.DictReader((tmp_path / "csv" / "logs" / "version_1" / "metrics.csv").open()))
    assert len([r for r in rows if r[keys.TOTAL_KWH]]) == 5  # each epoch's total in one row


def test_a_run_resumed_into_its_own_logs_gets_no_copy(tmp_path, monkeypatch, sqlite_uri, ns):
    """Three epochs, then resumed from the last checkpoint into the same MLflow run (``run_id``) and
    the same TensorBoard folder (``version=0``) to five: both hold the run's series, so none is
    copied into them: each epoch's energy/total_kwh and each check is logged once, at its own step."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    install_scripted_meter(monkeypatch)
    ckpt = tmp_path / "ckpt"

    def loggers(run_id=None):
        mlflow = ns.loggers.MLFlowLogger(
            experiment_name="e",
            tracking_uri=sqlite_uri,
            run_id=run_id,
            artifact_location=str(tmp_path / "art"),
        )
        return [ns.loggers.TensorBoardLogger(str(tmp_path), name="tb", version=0), mlflow]

    first = loggers()
    _fit(ns, tmp_path, first, 3, ckpt_dir=ckpt)
    again = loggers(first[1].run_id)
    stopper = _fit(ns, tmp_path, again, 5, ckpt_path=ckpt / "epoch=2.ckpt")
    assert again[1].run_id == first[1].run_id

    client = MlflowClient(sqlite_uri)
    for key in (keys.TOTAL_KWH, keys.CHECK_NUMBER):
        steps = [m.step for m in client.get_metric_history(first[1].run_id, key)]
        assert len(steps) == len(set(steps)) == 5, key

    folder = tmp_path / "tb" / "version_0"
    events = sorted(folder.glob("events.out.tfevents.*"))
    assert len(events) == 2  # one per fit
    steps = [
        event.step
        for path in events
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.tag == keys.TOTAL_KWH
    ]
    assert len(steps) == len(set(steps)) == 5
    _is_the_history(read_log_curve(events[0]), stopper.policy.history)


def test_a_log_whose_copy_of_its_earlier_part_ends_at_no_step_is_refused(tmp_path, capsys):
    """``lightning_green.earlier_part_until_step`` says where a copy of the run's earlier part ends:
    a value that is no step is an input error naming the folder (exit 2), not a log read wrongly."""
    folder = tmp_path / "logs" / "version_1"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(
        "epoch,step,val_loss,energy/epoch_kwh,energy/total_kwh\n0,3,0.5,0.1,0.1\n1,7,0.4,0.1,0.2\n"
    )
    (folder / "hparams.yaml").write_text(f"{keys.PARAM_EARLIER_PART_UNTIL_STEP}: 2.5\n")
    assert cli.main(["replay", str(folder / "metrics.csv"), "-o", str(tmp_path / "d.csv")]) == 2
    said = capsys.readouterr().err
    assert f"{folder}: run parameter {keys.PARAM_EARLIER_PART_UNTIL_STEP} is not a whole number" in said
