"""MLflow end to end: a LightningCLI run logged to a real ``mlflow server`` and to the embedded store.

The server runs on 127.0.0.1 with a sqlite backend and a local artifact root on a free port;
everything is read back through MLflow's REST client, as a user looking at the run would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT
from test_config_driven import load_example

from lightning_green import cli as green_cli

pytestmark = pytest.mark.slow
CONFIG = ROOT / "examples" / "configs" / "digits.yaml"
EPOCH_KEYS = [
    "energy/epoch_kwh",
    "energy/total_kwh",
    "energy/avg_power_w",
    "energy/samples_per_j",
    "energy/co2_kg",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend, local artifacts), started at once.

    Args:
        root: Folder for its database, artifacts and log.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.log_path = root / "server.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'backend.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mlflow server did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self, kill: bool = False) -> None:
        """Stop the server and its workers (``kill``: at once, as a crash would; safe to repeat)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server.uri
    server.stop()


@pytest.fixture(params=["server", "embedded"])
def tracking_uri(request, tmp_path):
    if request.param == "server":
        return request.getfixturevalue("mlflow_server")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_cli_run_reads_back_through_mlflow(tracking_uri, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    cli = load_example("cli").main(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--trainer.max_epochs",
            "12",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger.init_args.tracking_uri",
            tracking_uri,
            "--trainer.callbacks.init_args.stopping_threshold",
            "88",  # the goal: stop once val_acc > 88
        ]
    )
    trainer = cli.trainer
    run_id = trainer.logger.run_id
    epochs = trainer.current_epoch
    assert 1 <= epochs < 12  # stopped early

    client = MlflowClient(tracking_uri)  # REST for the server
    run = client.get_run(run_id)
    assert run.data.params["lightning_green.energy_source"] == "estimate"
    assert run.data.params["lightning_green.monitor"] == "val_acc"
    assert run.data.tags["lightning_green.stop_reason"] == "threshold_reached"
    assert run.data.tags["lightning_green.precision"] in ("32-true", "bf16-mixed")
    for key in [*EPOCH_KEYS, "energy/batch_size", "energy/precision"]:
        history = client.get_metric_history(run_id, key)
        assert len(history) == epochs, key
    totals = [
        m.value for m in sorted(client.get_metric_history(run_id, "energy/total_kwh"), key=lambda m: m.step)
    ]
    assert totals == sorted(totals) and totals[0] > 0

    artifacts = {a.path for a in client.list_artifacts(run_id, "lightning_green")}
    assert {
        "lightning_green/energy_summary.json",
        "lightning_green/energy_report.png",
        "lightning_green/adaptations.json",
    } <= artifacts
    assert {a.path for a in client.list_artifacts(run_id, "config")} == {"config/config.yaml"}
    (tmp_path / "dl").mkdir()  # MlflowClient.download_artifacts needs it (mlflow < 3 refuses otherwise)
    local = Path(client.download_artifacts(run_id, "lightning_green", str(tmp_path / "dl")))
    summary = json.loads((local / "energy_summary.json").read_text())
    assert summary["stop_reason"] == "threshold_reached" and summary["epochs"] == epochs
    assert summary["total_kwh"] >= totals[-1]
    assert (local / "energy_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The same plot for the past run, from the command line.
    capsys.readouterr()
    out = tmp_path / "again.png"
    assert green_cli.main(["report", "--mlflow-uri", tracking_uri, "--run-id", run_id, "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "stop reason" in capsys.readouterr().out


def test_report_says_when_it_rebuilt_a_run_and_how_the_run_ended(tmp_path, capsys, monkeypatch):
    """A run logged through a server keeps its artifacts there (``mlflow-artifacts:/``): read from
    the server's database, the report says it was rebuilt from the metrics and why; a FAILED run
    says FAILED, a run that never ended (killed) says RUNNING. Through the server the artifacts are
    read, whatever the process-wide tracking URI (mlflow 2 resolves them against that one)."""
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils as process_wide

    from lightning_green.cli import main

    server = MlflowServer(tmp_path / "server")
    try:
        # mlflow 2 logs to a server's artifacts only through the process-wide URI, and keeps the
        # repository it made for each run: the server's for this setup, then forgotten and another
        # URI set (as in a process that trained elsewhere), so what the report reads it reads itself.
        monkeypatch.setattr(process_wide, "_tracking_uri", server.uri)
        client = MlflowClient(tracking_uri=server.uri)
        experiment = client.create_experiment("ended")
        ids = {}
        for status in ("FAILED", "RUNNING"):
            run_id = ids[status] = client.create_run(experiment).info.run_id
            for i in range(4):
                client.log_metric(run_id, "val_loss", 1.0 / (i + 1), step=i)
                client.log_metric(run_id, "energy/epoch_kwh", 0.01, step=i)
                client.log_metric(run_id, "energy/total_kwh", 0.01 * (i + 1), step=i)
            client.log_param(run_id, "lightning_green.monitor", "val_loss")
            client.log_text(run_id, "{}", "notes/kept.json")  # artifacts live on the server
            if status == "FAILED":
                client.set_terminated(run_id, status="FAILED")
        process_wide._artifact_repos_cache.clear()
        elsewhere = (tmp_path / "mlruns").as_uri()
        monkeypatch.setattr(process_wide, "_tracking_uri", elsewhere)
        database = f"sqlite:///{tmp_path / 'server' / 'backend.db'}"
        for status, run_id in ids.items():
            assert (
                main(["report", "--mlflow-uri", database, "--run-id", run_id, "-o", str(tmp_path / "r.png")])
                == 0
            )
            out = capsys.readouterr().out
            assert re.search(rf"energy summary\n  status +{status} \(", out)  # the first row
            assert "rebuilt from the logged metrics (its artifacts could not be read" in out
        # Through the server, the artifacts are readable: only the missing summary is said.
        assert (
            main(
                [
                    "report",
                    "--mlflow-uri",
                    server.uri,
                    "--run-id",
                    ids["FAILED"],
                    "-o",
                    str(tmp_path / "s.png"),
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "FAILED (the MLflow run's status is FAILED)" in out
        assert "rebuilt from the logged metrics (the run has no energy_summary.json)" in out
        assert process_wide.get_tracking_uri() == elsewhere  # as it was
    finally:
        server.stop()


def test_energy_logged_to_mlflow_is_the_summarys_to_the_last_digit(tmp_path, sqlite_uri, ns):
    # Lightning logs a plain float through self.log as float32 (7 digits): the run's logged
    # total would differ from its summary's (and replay's costs from the stopper's) in the 8th.
    import numpy as np
    from conftest import make_trainer
    from mlflow.tracking import MlflowClient

    from lightning_green import EnergyAwareEarlyStopping, EnergyMonitor

    logger = ns.loggers.MLFlowLogger(experiment_name="exact", tracking_uri=sqlite_uri)
    monitor = EnergyMonitor(monitor="val_loss")
    stopper = EnergyAwareEarlyStopping(monitor="val_loss", patience=50, check_on_train_epoch_end=True)
    trainer = make_trainer(tmp_path, [monitor, stopper], logger=logger, max_epochs=3, lightning=ns)
    trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule())

    client = MlflowClient(sqlite_uri)

    def series(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(logger.run_id, key), key=lambda m: m.step)]

    totals, epochs = series("energy/total_kwh"), series("energy/epoch_kwh")
    checks = series("energy/check_kwh")
    assert totals == [r.total_kwh for r in monitor.history]
    assert epochs == [r.energy_kwh for r in monitor.history]
    assert checks == [float(c) for c in stopper.policy.history.costs_kwh]
    # Not values that float32 holds exactly (the comparison above would then prove nothing).
    assert any(float(np.float32(v)) != v for v in totals + checks)
