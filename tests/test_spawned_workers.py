"""Fits Lightning runs in worker processes (``ddp_spawn``, ``ddp_fork``): a failure is reported as under ddp.

Lightning calls ``on_exception`` (and the loggers' ``finalize("failed")``) only in the process that
called ``fit``; under the multiprocessing launcher that is the launching process, whose callbacks and
loggers took no part in the fit.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from conftest import NAMESPACES, Lightning, make_trainer, run_ddp_script

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyMonitor
from lightning_green.callbacks import _compat

REPORTS = {"energy_summary.json", "energy_report.png", "adaptations.json"}


def run_fit(out: Path, *args: str, timeout: int = 240) -> str:
    """Run ``ddp_fit.py`` (its fit failing is expected); its output."""
    return run_ddp_script(out, *args, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("lightning", NAMESPACES)
@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_a_fit_failing_in_every_worker_writes_its_reports_and_marks_its_run_failed(
    tmp_path, strategy, lightning
):
    """Both ranks raise in epoch 2: rank 0's worker writes the summary, the plot and adaptations.json
    marked failed, in the run's one CSV folder, and logs them (with energy/run_kwh) to the one MLflow
    run, marked FAILED. The launching process's callbacks, never set up, write nothing: no second
    CSV folder, no second MLflow run."""
    from mlflow.tracking import MlflowClient

    output = run_fit(
        tmp_path,
        *("--strategy", strategy, "--lightning", lightning, "--csv", "--mlflow"),
        *("--callbacks", "monitor,stopper,batch,precision"),
        *("--stopper-args", '{"monitor": "val_acc", "mode": "max"}'),
        *("--epochs", "3", "--fail-in-epoch", "2", "--limit-batches", "4"),
    )
    assert [p.name for p in (tmp_path / "csv").iterdir()] == ["version_0"]
    folder = tmp_path / "csv" / "version_0"
    assert {p.name for p in folder.iterdir()} >= REPORTS
    summary = json.loads((folder / "energy_summary.json").read_text())
    assert summary["failed"] is True and summary["error"] == "RuntimeError: scripted failure"
    assert summary["epochs"] == 2 and summary["total_kwh"] > 0
    adaptations = json.loads((folder / "adaptations.json").read_text())
    assert adaptations["failed"] is True
    assert adaptations["batch_size"]["batch_size_initial"] == 32
    assert adaptations["precision"]["precision_initial"] == "32-true"
    assert re.search(r"status +FAILED \(RuntimeError: scripted failure\)", output)  # the printed summary

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments)
    assert run.info.status == "FAILED"
    assert run.data.metrics["energy/run_kwh"] == pytest.approx(summary["total_kwh"], rel=1e-6)
    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "lightning_green")}
    assert artifacts == REPORTS
    # The copies for MLflow (the run's folder) are the same failed reports; nothing else was written.
    assert [p.name for p in (tmp_path / "energy_reports").iterdir()] == [run.info.run_id]


@pytest.mark.parametrize("lightning", NAMESPACES)
def test_adaptive_callbacks_never_set_up_in_this_process_write_nothing_on_failure(tmp_path, lightning):
    """A fit that fails before their setup (as in the launching process of ddp_spawn workers, where
    Lightning calls on_exception of callbacks the workers set up): no blank adaptations.json, no run
    folder of their own; Lightning's on_exception path is left as it is (no wrapper of the stage)."""
    ns = Lightning(lightning)

    class SetupFails(ns.pl.Callback):
        def setup(self, trainer, pl_module, stage):
            raise RuntimeError("setup failed")

    logger = ns.loggers.CSVLogger(str(tmp_path), name="csv", version="v")
    batch, precision = AdaptiveBatchSize(), AdaptivePrecision()
    trainer = make_trainer(tmp_path, [SetupFails(), batch, precision], logger=logger, lightning=ns)
    with pytest.raises(RuntimeError, match="setup failed"):
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    assert not [p for p in tmp_path.rglob("adaptations.json")]
    assert not (tmp_path / "energy_reports").exists()
    assert not batch.in_fit and not precision.in_fit

    # Set up, they do write it when the fit fails; the stage is Lightning's own (no worker here).
    batch = AdaptiveBatchSize()
    trainer = make_trainer(tmp_path, [batch, SetupFails()], logger=logger, lightning=ns)
    with pytest.raises(RuntimeError, match="setup failed"):
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())
    assert json.loads((tmp_path / "csv" / "v" / "adaptations.json").read_text())["failed"] is True
    assert not batch.in_fit and "_run_stage" not in vars(trainer)


def test_a_monitor_never_set_up_in_this_process_touches_no_logger_on_failure(tmp_path, sqlite_uri, ns):
    """Told of an MLflow server that went away, a monitor whose session does not run gives up on no
    run: asking the launching process's MLFlowLogger for its run would start a new one."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    logger = ns.loggers.MLFlowLogger(experiment_name="parent", tracking_uri=sqlite_uri)
    monitor = EnergyMonitor()
    trainer = make_trainer(tmp_path, [monitor], logger=logger, lightning=ns)
    try:
        raise MlflowException("API request failed: Max retries exceeded") from ConnectionRefusedError()
    except MlflowException as err:
        monitor.on_exception(trainer, None, err)
    assert logger._run_id is None  # not asked for its run
    assert MlflowClient(sqlite_uri).search_experiments(filter_string="name = 'parent'") == []


def test_a_sigterm_waits_while_a_worker_reports_its_failure():
    """Once a worker ended with its failure the launching process sends SIGTERM to the others: rank 0
    writing its reports is not interrupted (Lightning's SIGTERM handler would run a collective)."""
    received: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with _compat._sigterm_held():
            os.kill(os.getpid(), signal.SIGTERM)
            assert received == []
        assert received == []  # dropped: the worker ends with its failure right after
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]  # the handler before is back
    finally:
        signal.signal(signal.SIGTERM, before)
