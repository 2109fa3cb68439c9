"""Config-driven experiments: LightningCLI YAML and Hydra ``_target_`` configs of every callback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyAwareEarlyStopping, EnergyMonitor
from lightning_green.policy import StopReason

CONFIG = ROOT / "examples" / "configs" / "digits.yaml"
HYDRA_DIR = ROOT / "examples" / "hydra_config"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(
        f"lightning_green_example_{name}", ROOT / "examples" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def by_type(callbacks, cls):
    (found,) = [cb for cb in callbacks if isinstance(cb, cls)]
    return found


def lightning_cli(ns, args: list[str], tmp_path: Path):
    """``examples/cli.py`` under ``ns``: its LightningCLI, with the config's class paths in that namespace."""
    from lightning_green.callbacks.save_config import SaveConfigToLoggers

    config = tmp_path / "digits.yaml"
    config.write_text(CONFIG.read_text().replace("pytorch_lightning.", f"{ns.name}."))
    args = [str(config) if arg == str(CONFIG) else arg for arg in args]
    return ns.cli.LightningCLI(
        ns.DigitsClassifier, ns.DigitsDataModule, save_config_callback=SaveConfigToLoggers, args=args
    )


def test_lightning_cli_yaml_builds_every_callback_and_takes_command_line_overrides(tmp_path, sqlite_uri, ns):
    cli = lightning_cli(
        ns,
        [
            "fit",
            "--config",
            str(CONFIG),
            "--trainer.max_epochs",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger.init_args.tracking_uri",
            sqlite_uri,
            # Overrides the last callback of the list: the stopper.
            "--trainer.callbacks.init_args.energy_budget_kwh",
            "0.5",
        ],
        tmp_path,
    )
    assert isinstance(cli.trainer, ns.Trainer) and isinstance(cli.trainer.logger, ns.loggers.MLFlowLogger)
    callbacks = cli.trainer.callbacks
    monitor = by_type(callbacks, EnergyMonitor)
    assert (monitor.pue, monitor.carbon_intensity_g_per_kwh, monitor.meter) == (1.2, 240.0, "auto")
    assert by_type(callbacks, EnergyAwareEarlyStopping).energy_budget_kwh == 0.5  # from the command line
    assert by_type(callbacks, EnergyAwareEarlyStopping).min_relative_gain == 0.08  # from the YAML
    assert by_type(callbacks, AdaptiveBatchSize).lr_scaling == "sqrt"
    assert by_type(callbacks, AdaptivePrecision) is not None
    assert cli.trainer.current_epoch == 2 and len(monitor.history) == 2

    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    run_id = cli.trainer.logger.run_id
    artifacts = {a.path for a in client.list_artifacts(run_id, "config")}
    assert artifacts == {"config/config.yaml"}
    saved = yaml.safe_load(
        Path(client.download_artifacts(run_id, "config/config.yaml", str(tmp_path))).read_text()
    )
    budgets = [cb["init_args"].get("energy_budget_kwh") for cb in saved["trainer"]["callbacks"]]
    assert 0.5 in budgets  # the resolved config, overrides included
    assert len(client.get_metric_history(run_id, "energy/total_kwh")) == 2


def _bad_config(tmp_path, section: str, key: str, value) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith(section):
            callback["init_args"][key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("EnergyMonitor", "pue", 0.5, r"pue must be a number >= 1\.0"),
        ("EnergyMonitor", "meter", "gpu", r"meter.*'gpu'"),
        ("EnergyAwareEarlyStopping", "energy_budget_kwh", "lots", r"energy_budget_kwh"),
        ("AdaptiveBatchSize", "lr_scaling", "cubic", r"lr_scaling"),
    ],
)
def test_lightning_cli_bad_yaml_values_name_the_field(tmp_path, capsys, section, key, value, expected):
    import re

    path = _bad_config(tmp_path, section, key, value)
    # A wrong type fails parsing (usage error, exit 2); a wrong value fails when jsonargparse
    # instantiates the callback (its ValueError lists ours). Either way the field is named.
    with pytest.raises((SystemExit, ValueError)) as failure:
        load_example("cli").main(["fit", "--config", str(path), "--trainer.max_epochs", "1"])
    if failure.type is SystemExit:
        assert failure.value.code != 0
    assert re.search(expected, f"{failure.value}\n{capsys.readouterr().err}")


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(HYDRA_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


def test_hydra_config_instantiates_every_callback(tmp_path, sqlite_uri):
    cfg = _compose(
        [
            "trainer.max_epochs=2",
            "+trainer.enable_progress_bar=false",
            f"+trainer.default_root_dir={tmp_path}",
            f"logger.tracking_uri={sqlite_uri}",
            "callbacks.energy.pue=1.4",
            "+callbacks.stopping.patience=7",
        ]
    )
    trainer = load_example("train_hydra").run(cfg)
    monitor = by_type(trainer.callbacks, EnergyMonitor)
    assert monitor.pue == 1.4 and monitor.carbon_intensity_g_per_kwh == 300.0
    stopper = by_type(trainer.callbacks, EnergyAwareEarlyStopping)
    assert stopper.patience == 7 and stopper.energy_budget_kwh == 0.001
    assert by_type(trainer.callbacks, AdaptiveBatchSize).max_batch_size == 256
    assert by_type(trainer.callbacks, AdaptivePrecision) is not None
    assert len(monitor.history) == 2 and monitor.history[-1].co2_kg > 0


def test_a_hydra_multirun_sweep_keeps_each_jobs_report(tmp_path):
    """``--multirun`` without a logger: each job's energy report lands in its own Hydra output
    folder (both jobs wrote ``./energy_reports/energy_summary.json``, the second over the first)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    argv = [sys.executable, str(ROOT / "examples" / "train_hydra.py"), "--multirun", "~logger",
            "callbacks.energy.pue=1.0,1.5", "trainer.max_epochs=1", "+trainer.limit_train_batches=3",
            "+trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = sorted((tmp_path / "sweep").glob("*/energy_reports/energy_summary.json"))
    assert [p.parent.parent.name for p in summaries] == ["0", "1"]
    assert [json.loads(p.read_text())["pue"] for p in summaries] == [1.0, 1.5]
    assert not (tmp_path / "energy_reports").exists()


def test_hydra_bad_value_is_reported_with_its_name():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cfg = _compose(["callbacks.stopping.min_relative_gain=-1"])
    with pytest.raises(InstantiationException, match=r"min_relative_gain.*-1"):
        instantiate(cfg.callbacks.stopping)


@pytest.mark.parametrize("written", ["NO", "no", "off", "yes"])
def test_an_unquoted_yaml_region_read_as_a_boolean_says_to_quote_it(written):
    # YAML 1.1 (OmegaConf, LightningCLI) reads Norway's code NO as False: the message said that
    # False is not a known code while listing NO among the allowed ones.
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(f"energy:\n  _target_: lightning_green.EnergyMonitor\n  region: {written}\n")
    with pytest.raises(
        InstantiationException, match=r"region=(False|True) is a boolean.*YAML 1\.1.*quote.*'NO'"
    ):
        instantiate(cfg.energy)
    quoted = OmegaConf.create("energy:\n  _target_: lightning_green.EnergyMonitor\n  region: 'NO'\n")
    assert instantiate(quoted.energy).carbon_intensity_g_per_kwh == 30.0


def test_the_readme_example_trains_logs_to_mlflow_and_prints_how_to_open_it(tmp_path):
    """README command 1's script, as a user runs it (from a directory of their own, default store)."""
    import os
    import re
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    script = ROOT / "examples" / "train_digits.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quiet", "--max-epochs", "4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    logged = proc.stderr  # the summary goes through Lightning's logging
    assert "lightning_green energy summary" in logged and "estimate (ESTIMATE, not measured)" in logged
    run_id = re.search(
        r"MLflow run ([0-9a-f]{32}) in experiment 'lightning_green-digits' at sqlite:///mlflow.db", out
    )[1]
    summary_path, plot_path = re.search(r"Summary and plot: (\S+) and (\S+) \(also artifacts", out).groups()
    assert (tmp_path / summary_path).is_file() and (tmp_path / plot_path).is_file()
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in out
    assert f"lightning-green report --mlflow-uri sqlite:///mlflow.db --run-id {run_id}" in out

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)
    totals = client.get_metric_history(run_id, "energy/total_kwh")
    assert len(totals) == 4 and run.data.params["lightning_green.energy_source"] == "estimate"
    assert run.data.tags["lightning_green.stop_reason"] in {"none", *(r.value for r in StopReason)}
    artifacts = {a.path for a in client.list_artifacts(run_id, "lightning_green")}
    assert {"lightning_green/energy_summary.json", "lightning_green/energy_report.png"} <= artifacts
