"""A Trainer with several loggers: every logger's folder gets the report files, and the offline
tools read the same run from each logger's logs (a failed run skipped, the stop reason shown)."""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import pytest
from conftest import make_trainer

from lightning_green import AdaptiveBatchSize, EnergyAwareEarlyStopping, EnergyMonitor, cli

FAST = dict(limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0)
REPORT_FILES = ("energy_summary.json", "energy_report.png", "adaptations.json")
EXPERIMENT = "several loggers"
ERROR = "TrainingStepError: the data went bad"


class TrainingStepError(RuntimeError):
    pass


def _fails_at_epoch_2(base: type) -> type:
    class FailsAtEpoch2(base):
        """Trains for real, then its training_step raises at the start of epoch 2."""

        def training_step(self, batch, batch_idx):
            if self.current_epoch == 2:
                raise TrainingStepError("the data went bad")
            return super().training_step(batch, batch_idx)

    return FailsAtEpoch2


def _logger(ns, kind: str, root, run: str, sqlite_uri: str):
    if kind == "csv":
        return ns.loggers.CSVLogger(str(root), name=f"csv_{run}")
    if kind == "tb":
        return ns.loggers.TensorBoardLogger(str(root), name=f"tb_{run}")
    return ns.loggers.MLFlowLogger(experiment_name=EXPERIMENT, tracking_uri=sqlite_uri, run_name=run)


def _fit(ns, root, loggers, run: str) -> None:
    """The run ``stopped`` (by its energy budget) or ``failed`` (its training_step raised)."""
    ns.pl.seed_everything(0)
    callbacks = [
        EnergyMonitor(monitor="val_acc", mode="max"),
        AdaptiveBatchSize(min_batch_size=16, max_batch_size=64, window_s=0.001, probe_windows=1),
        EnergyAwareEarlyStopping(
            monitor="val_acc", mode="max", energy_budget_kwh=1e-12 if run == "stopped" else None
        ),
    ]
    trainer = make_trainer(root, callbacks, logger=loggers, max_epochs=5, lightning=ns, **FAST)
    module = ns.module(_fails_at_epoch_2)() if run == "failed" else ns.DigitsClassifier()
    if run == "failed":
        with pytest.raises(TrainingStepError):
            trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=32))
    else:
        trainer.fit(module, datamodule=ns.DigitsDataModule(batch_size=32))


def _log(root, kind: str, run: str) -> str:
    folder = root / f"{kind}_{run}" / "version_0"
    return str(folder / "metrics.csv") if kind == "csv" else str(next(folder.glob("events.out.tfevents.*")))


def _replay(root, kind: str, sqlite_uri: str, capsys) -> tuple[str, list[dict[str, str]]]:
    """Replay both runs from ``kind``'s logs: what it printed, and the decisions without the run's name."""
    out = root / f"decisions_{kind}.csv"
    if kind == "mlflow":
        source = ["--mlflow-uri", sqlite_uri, "--experiment", EXPERIMENT]
    else:
        name = "metrics.csv" if kind == "csv" else "events.out.tfevents.*"
        source = [str(root / f"{kind}_*" / "version_0" / name)]
    capsys.readouterr()
    assert cli.main(["replay", *source, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.read_text().splitlines()))
    return printed, [{k: v for k, v in row.items() if k != "curve_id"} for row in rows]


def _report(root, kind: str, run: str, run_id: str | None, sqlite_uri: str, capsys) -> str:
    source = ["--mlflow-uri", sqlite_uri, "--run-id", run_id] if kind == "mlflow" else [_log(root, kind, run)]
    capsys.readouterr()
    assert cli.main(["report", *source, "-o", str(root / f"report_{kind}_{run}.png")]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("kinds", [("tb", "csv"), ("mlflow", "csv")], ids=["tensorboard+csv", "mlflow+csv"])
def test_every_loggers_folder_gets_the_reports_and_reads_as_the_same_run(
    tmp_path, sqlite_uri, ns, kinds, capsys
):
    from mlflow.tracking import MlflowClient

    runs = {}
    for run in ("stopped", "failed"):
        loggers = [_logger(ns, kind, tmp_path, run, sqlite_uri) for kind in kinds]
        _fit(ns, tmp_path, loggers, run)
        runs[run] = dict(zip(kinds, loggers, strict=True))
        # Every logger's folder holds the same files, written once (the same bytes, the plot's too).
        folders = [
            tmp_path / "energy_reports" / lg.run_id if kind == "mlflow" else Path(lg.log_dir)
            for kind, lg in runs[run].items()
        ]
        for name in REPORT_FILES:
            contents = {
                folder: (folder / name).read_bytes() for folder in folders if (folder / name).is_file()
            }
            assert list(contents) == folders, f"{name} of the {run} run is missing beside a logger"
            assert len(set(contents.values())) == 1, f"{name} of the {run} run differs between folders"
        failed = b'"failed": true' in (folders[0] / "energy_summary.json").read_bytes()
        assert failed is (run == "failed")
        assert failed is (b'"failed": true' in (folders[0] / "adaptations.json").read_bytes())
        if "mlflow" in kinds:  # logged once to the run, the same file
            run_id = runs[run]["mlflow"].run_id
            client = MlflowClient(sqlite_uri)
            artifacts = {a.path for a in client.list_artifacts(run_id, "lightning_green")}
            assert {f"lightning_green/{name}" for name in REPORT_FILES} == artifacts
            local = client.download_artifacts(run_id, "lightning_green/energy_summary.json", str(tmp_path))
            assert Path(local).read_bytes() == (folders[0] / "energy_summary.json").read_bytes()

    # Replay over each logger's logs: the failed run is skipped and named, the stopped one replayed,
    # the same decisions from each.
    replayed = {}
    for kind in kinds:
        printed, replayed[kind] = _replay(tmp_path, kind, sqlite_uri, capsys)
        failed = runs["failed"]["mlflow"].run_id if kind == "mlflow" else _log(tmp_path, kind, "failed")
        assert re.search(
            rf"did not finish \(--include-unfinished .*\): {re.escape(failed)} \(FAILED\)", printed
        )
        assert "replayed 1 curves" in printed, printed
        assert "stops: energy_budget 1" in printed, printed
    first, *others = kinds
    for kind in others:
        assert len(replayed[kind]) == len(replayed[first])
        for theirs, ours in zip(replayed[kind], replayed[first], strict=True):
            assert theirs.keys() == ours.keys()
            for key, value in ours.items():
                if _number(value):  # TensorBoard keeps float32
                    assert float(theirs[key]) == pytest.approx(float(value), rel=1e-5), key
                else:
                    assert theirs[key] == value, key

    # Report over each logger's logs: the stop reason of the stopped run, FAILED for the other.
    for kind in kinds:
        run_ids = {run: runs[run]["mlflow"].run_id if kind == "mlflow" else None for run in runs}
        stopped = _report(tmp_path, kind, "stopped", run_ids["stopped"], sqlite_uri, capsys)
        assert re.search(r"\n  stop reason +energy_budget\n", stopped), stopped
        assert "FAILED" not in stopped
        failed = _report(tmp_path, kind, "failed", run_ids["failed"], sqlite_uri, capsys)
        assert re.search(rf"\n  status +FAILED \({ERROR}\)", failed), failed


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _trainer(ns, root, loggers):
    return make_trainer(root, [], logger=loggers, lightning=ns)


def _no_folder_logger(ns):
    class NoFolder(ns.pl.loggers.Logger):
        """A logger whose folder cannot be told (its log_dir raises)."""

        name, version = "no_folder", 0

        @property
        def log_dir(self):
            raise OSError("the disk went away")

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            pass

    return NoFolder()


def test_the_output_folders_are_each_loggers_own_once_each_in_the_trainers_order(tmp_path, ns):
    # (An MLflow logger's folder, energy_reports/<run_id>, is in the test above: its store is slow to make.)
    from lightning_green.callbacks import _loggers

    tb = ns.loggers.TensorBoardLogger(str(tmp_path), name="run", version=0)
    same = ns.loggers.CSVLogger(str(tmp_path), name="run", version=0)  # tb's folder: once
    csv_logger = ns.loggers.CSVLogger(str(tmp_path), name="csv")
    later = ns.loggers.CSVLogger(str(tmp_path), name="later")
    trainer = _trainer(ns, tmp_path, [tb, same, _no_folder_logger(ns), csv_logger, later])
    expected = [
        tmp_path / "run" / "version_0",
        tmp_path / "csv" / "version_0",
        tmp_path / "later" / "version_0",
    ]
    with pytest.warns(UserWarning, match="NoFolder has no folder for the reports: the disk went away"):
        assert _loggers.output_dirs(trainer) == expected
    # Without a logger: energy_reports under the trainer's root.
    assert _loggers.output_dirs(_trainer(ns, tmp_path, False)) == [tmp_path / "energy_reports"]

    # Written in the first, copied into the others (the same bytes); a folder that cannot take
    # them gets one warning naming it and the error, and the others still get them.
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "version_0").write_text("a file where the folder would go")
    written_in = []

    def write(folder):
        written_in.append(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "a.json").write_text('{"a": 1}')
        (folder / "b.json").write_text('{"b": 2}')
        return folder / "a.json", None, folder / "b.json"

    files = (expected[0] / "a.json", None, expected[0] / "b.json")
    with pytest.warns(
        UserWarning, match=r"could not write the files into \S*csv.version_0: \w+Error: "
    ) as said:
        assert _loggers.write_in_output_dirs(trainer, write, "the files") == files
    assert len([w for w in said if "could not write" in str(w.message)]) == 1  # one for the folder
    assert written_in == expected[:1]
    assert [(folder / "a.json").is_file() for folder in expected] == [True, False, True]
    assert (expected[2] / "b.json").read_text() == '{"b": 2}'

    # A first folder that cannot take them: written into the next one that can, copied on from there.
    blocked = ns.loggers.CSVLogger(str(tmp_path / "csv"), name="", version=0)  # csv/version_0: a file
    trainer = _trainer(ns, tmp_path, [blocked, same, later])
    written_in.clear()
    with pytest.warns(UserWarning, match=r"could not write the files into \S*csv.version_0: ") as said:
        assert _loggers.write_in_output_dirs(trainer, write, "the files") == (
            expected[0] / "a.json",
            None,
            expected[0] / "b.json",
        )
    assert len([w for w in said if "could not write" in str(w.message)]) == 1
    assert written_in == [tmp_path / "csv" / "version_0", expected[0]]
    # None of them: nothing written (each folder warned), None returned.
    trainer = _trainer(ns, tmp_path, [blocked])
    with pytest.warns(UserWarning, match="could not write the files into"):
        assert _loggers.write_in_output_dirs(trainer, write, "the files") is None


def test_a_report_folder_that_cannot_be_written_loses_its_own_copy_only(tmp_path, sqlite_uri, ns):
    """``default_root_dir`` under a regular file: the MLflow logger's report folder
    (``energy_reports/<run_id>`` under it) cannot be made, whatever the loggers' order. It gets one
    warning for the energy report and one for ``adaptations.json``, each naming it and the error; the
    CSV logger's folder still gets the summary, the plot and ``adaptations.json``, and the MLflow run
    the same files as artifacts. With no folder that can be written, the run still gets them."""
    from mlflow.tracking import MlflowClient

    blocker = tmp_path / "a_file"
    blocker.write_text("where the root's folder would go")
    root = blocker / "root"

    def fit(loggers) -> list[str]:
        callbacks = [
            EnergyMonitor(monitor="val_acc", mode="max"),
            AdaptiveBatchSize(min_batch_size=16, max_batch_size=64, window_s=0.001, probe_windows=1),
        ]
        trainer = make_trainer(root, callbacks, logger=loggers, max_epochs=2, lightning=ns, **FAST)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32))
        return [str(w.message) for w in caught if "could not write" in str(w.message)]

    def artifacts(run_id: str) -> dict[str, bytes]:
        out = tmp_path / "downloaded" / run_id
        out.mkdir(parents=True)  # MlflowClient.download_artifacts needs it (mlflow < 3 refuses otherwise)
        client.download_artifacts(run_id, "lightning_green", str(out))
        return {p.name: p.read_bytes() for p in (out / "lightning_green").iterdir()}

    client = MlflowClient(sqlite_uri)
    mlflow_logger = ns.loggers.MLFlowLogger(experiment_name=EXPERIMENT, tracking_uri=sqlite_uri)
    csv_logger = ns.loggers.CSVLogger(str(tmp_path / "csv"))
    said = fit([mlflow_logger, csv_logger])  # MLflow's folder first: the one written first
    lost = root / "energy_reports" / mlflow_logger.run_id
    assert len(said) == 2, said
    what = sorted(m.partition(f" into {lost}: ")[0] for m in said)  # named, with the error after it
    assert what == [
        f"lightning_green: could not write {w}" for w in ("adaptations.json", "the energy report")
    ]
    assert all("NotADirectoryError" in m for m in said)
    folder = Path(csv_logger.log_dir)
    kept = {name: (folder / name).read_bytes() for name in REPORT_FILES}
    assert artifacts(mlflow_logger.run_id) == kept
    assert b'"failed"' not in kept["adaptations.json"] + kept["energy_summary.json"]

    alone = ns.loggers.MLFlowLogger(experiment_name=EXPERIMENT, tracking_uri=sqlite_uri)
    assert len(fit([alone])) == 2  # no folder: from a temporary one, which is gone again
    logged = artifacts(alone.run_id)
    assert sorted(logged) == sorted(REPORT_FILES)
    assert json.loads(logged["energy_summary.json"])["epochs"] == 2
    assert list(json.loads(logged["adaptations.json"])) == ["batch_size"]
    assert (
        not blocker.with_name("root").exists() and blocker.read_text() == "where the root's folder would go"
    )


def test_the_lightning_cli_config_is_saved_beside_every_loggers_reports(tmp_path, ns):
    from jsonargparse import ArgumentParser

    from lightning_green.callbacks.save_config import SaveConfigToLoggers

    parser = ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    saver = SaveConfigToLoggers(parser, parser.parse_args(["--lr", "0.5"]))
    loggers = [
        ns.loggers.TensorBoardLogger(str(tmp_path), name="tb"),
        ns.loggers.CSVLogger(str(tmp_path), name="csv"),
    ]
    saver.save_config(_trainer(ns, tmp_path, loggers), None, "fit")
    assert saver.saved_path == tmp_path / "tb" / "version_0" / "config.yaml"
    for name in ("tb", "csv"):
        assert (tmp_path / name / "version_0" / "config.yaml").read_text() == "lr: 0.5\n"

    # A folder that cannot be written (first here) gets one warning naming it; the others the config.
    (tmp_path / "blocked").write_text("a file where the folder would go")
    blocked = ns.loggers.CSVLogger(str(tmp_path / "blocked"), name="", version=0)
    loggers = [blocked, ns.loggers.CSVLogger(str(tmp_path), name="after")]
    with pytest.warns(UserWarning, match=r"could not write config\.yaml into \S*blocked.version_0: ") as said:
        saver.save_config(_trainer(ns, tmp_path, loggers), None, "fit")
    assert len([w for w in said if "could not write" in str(w.message)]) == 1
    assert saver.saved_path == tmp_path / "after" / "version_0" / "config.yaml"
    assert saver.saved_path.read_text() == "lr: 0.5\n"


def test_the_config_keeps_its_none_values_with_jsonargparse_before_skip_unset(tmp_path, ns):
    # jsonargparse 4.39 to 4.49 (Lightning 2.6 needs 4.39) call the option skip_none and refuse
    # skip_unset with a ValueError: the config was never saved there. Any other error still shows.
    import yaml
    from jsonargparse import ArgumentParser

    from lightning_green.callbacks.save_config import SaveConfigToLoggers

    class SkipNoneParser(ArgumentParser):
        """``save`` as jsonargparse 4.39 to 4.49 have it: ``skip_none``, unknown keywords refused."""

        refuse: str | None = None
        calls = 0

        def save(
            self, cfg, path, format="parser_mode", skip_none=True, overwrite=False, multifile=True, **kw
        ):
            self.calls += 1
            if self.refuse:
                raise ValueError(self.refuse)
            if kw:
                raise ValueError(f"Unexpected keyword parameters: {set(kw)}")
            values = {k: v for k, v in cfg.as_dict().items() if not (skip_none and v is None)}
            Path(path).write_text(yaml.safe_dump(values, sort_keys=True))

    parser = SkipNoneParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--note", type=str | None, default=None)
    saver = SaveConfigToLoggers(parser, parser.parse_args(["--lr", "0.5"]))
    saver.save_config(_trainer(ns, tmp_path, [ns.loggers.CSVLogger(str(tmp_path), name="csv")]), None, "fit")
    assert saver.saved_path == tmp_path / "csv" / "version_0" / "config.yaml"
    assert saver.saved_path.read_text() == "lr: 0.5\nnote: null\n"  # the None kept: the run rebuilds

    parser.refuse, parser.calls = "Refusing to overwrite existing file", 0
    with pytest.raises(ValueError, match=r"^Refusing to overwrite existing file$"):
        saver._save(tmp_path / "again.yaml")
    assert parser.calls == 1  # not taken for the option's name: not tried again with skip_none
