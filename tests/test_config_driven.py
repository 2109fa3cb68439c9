"""Config-driven experiments: LightningCLI YAML and Hydra ``_target_`` configs of every callback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from lightning_green import AdaptiveBatchSize, AdaptivePrecision, EnergyAwareEarlyStopping, EnergyMonitor

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


def test_lightning_cli_yaml_builds_every_callback_and_takes_command_line_overrides(tmp_path, sqlite_uri):
    cli = load_example("cli").main(
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
        ]
    )
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


def test_hydra_bad_value_is_reported_with_its_name():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cfg = _compose(["callbacks.stopping.min_relative_gain=-1"])
    with pytest.raises(InstantiationException, match=r"min_relative_gain.*-1"):
        instantiate(cfg.callbacks.stopping)
