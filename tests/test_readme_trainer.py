"""Acceptance: the README's "In a Trainer" snippet as written (``import lightning as L``) runs every callback.

The snippet is read from README.md and run with a real digits model and datamodule of
``lightning.pytorch``; only the run's length and the store's folder are changed. The MLflow run
it logs to must hold what the README promises.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT, Lightning

SECTION = "## In a Trainer"


def readme_snippet() -> str:
    """The first Python block of the README's "In a Trainer" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]


def test_the_readme_trainer_snippet_with_import_lightning_runs_every_callback(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    import lightning_green

    code = readme_snippet()
    assert "import lightning as L" in code and "from lightning.pytorch.loggers import MLFlowLogger" in code
    assert code.count("max_epochs=50,") == 1
    # Shorter (3 epochs of 20 batches, on the CPU, quiet) and the store in this test's folder
    # (MLflow caches stores by URI: a relative one would be another test's); the rest as written.
    assert code.count('tracking_uri="sqlite:///mlflow.db"') == 1
    code = code.replace(
        "max_epochs=50,",
        "max_epochs=3, limit_train_batches=20, accelerator='cpu', enable_progress_bar=False,",
    ).replace('tracking_uri="sqlite:///mlflow.db"', f'tracking_uri="sqlite:///{tmp_path / "mlflow.db"}"')
    monkeypatch.chdir(tmp_path)  # the trainer's root directory
    lightning = Lightning("lightning.pytorch")
    scope = {"model": lightning.DigitsClassifier(), "dm": lightning.DigitsDataModule(batch_size=32)}
    exec(compile(code, "README.md#in-a-trainer", "exec"), scope)
    trainer = scope["trainer"]

    assert isinstance(trainer, lightning.Trainer) and trainer.current_epoch >= 1
    kinds = {
        cls: [cb for cb in trainer.callbacks if isinstance(cb, cls)]
        for cls in (
            lightning_green.EnergyMonitor,
            lightning_green.AdaptivePrecision,
            lightning_green.AdaptiveBatchSize,
            lightning_green.EnergyAwareEarlyStopping,
        )
    }
    assert all(len(found) == 1 for found in kinds.values())  # the four, none added twice
    assert trainer.early_stopping_callback is kinds[lightning_green.EnergyAwareEarlyStopping][0]
    monitor = kinds[lightning_green.EnergyMonitor][0]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = trainer.logger.run_id
    run = client.get_run(run_id)
    assert run.data.params["lightning_green.energy_source"] == "estimate"
    assert run.data.tags["lightning_green.stop_reason"] == "none"  # 3 epochs: below min_epochs
    assert run.data.tags["lightning_green.precision"] == "32-true"
    assert run.data.tags["lightning_green.batch_size"].isdigit()
    artifacts = {a.path for a in client.list_artifacts(run_id, "lightning_green")}
    assert {
        "lightning_green/energy_summary.json",
        "lightning_green/energy_report.png",
        "lightning_green/adaptations.json",
    } <= artifacts
    assert len(client.get_metric_history(run_id, "energy/total_kwh")) == trainer.current_epoch
    # The local copy is in the run's own folder under the trainer's root directory.
    assert monitor.summary_path == tmp_path / "energy_reports" / run_id / "energy_summary.json"
    summary = json.loads(monitor.summary_path.read_text())
    assert summary["stop_reason"] == "none" and summary["epochs"] == trainer.current_epoch
    assert summary["pue"] == 1.2 and summary["carbon_intensity_g_per_kwh"] == pytest.approx(55.0)
