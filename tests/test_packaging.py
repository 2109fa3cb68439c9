"""What a user installs: a quick command without torch, lazy callbacks, licence, typing marker."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import lightning_green

if TYPE_CHECKING:
    from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CURVES = ROOT / "benchmarks" / "data" / "curves" / "mlperf_v4_power_dev.csv"
HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "matplotlib")


def python(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *(["-c", textwrap.dedent(code)] if code else []), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_help_and_a_csv_replay_never_import_torch_or_lightning(tmp_path: Path) -> None:
    done = python(
        f"""
        import json, sys
        from lightning_green.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        after_help = [m for m in {HEAVY!r} if m in sys.modules]
        rc = main(["replay", {str(CURVES)!r}, "-o", {str(tmp_path / "d.csv")!r}])
        print(json.dumps([after_help, rc, [m for m in {HEAVY!r} if m in sys.modules]]))
        """
    )
    assert done.returncode == 0, done.stderr
    after_help, rc, after_replay = json.loads(done.stdout.splitlines()[-1])
    assert after_help == [] and rc == 0 and after_replay == []
    assert (tmp_path / "d.csv").exists()


def test_callbacks_are_imported_on_first_use() -> None:
    done = python(
        """
        import sys
        import lightning_green
        before = "torch" in sys.modules or "pytorch_lightning" in sys.modules
        from lightning_green import EnergyMonitor, EnergyAwareEarlyStopping
        from lightning_green.callbacks import EnergyMonitor as Same
        print(before, EnergyMonitor is Same, "torch" in sys.modules, lightning_green.__version__)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True", lightning_green.__version__]


def test_public_names_stay_listed() -> None:
    assert set(lightning_green.__all__) == {
        "AdaptationUnsupportedError",
        "AdaptiveBatchSize",
        "AdaptivePrecision",
        "EnergyAwareEarlyStopping",
        "EnergyMonitor",
        "__version__",
    }
    assert set(lightning_green.__all__) - {"__version__"} <= set(dir(lightning_green))
    with pytest.raises(AttributeError, match="no attribute 'EnergyMeter'"):
        lightning_green.EnergyMeter  # noqa: B018
    from lightning_green import AdaptiveBatchSize  # the attribute hook, as `from ... import` uses it

    assert AdaptiveBatchSize.__module__.startswith("lightning_green.callbacks")


def test_version_and_python_dash_m(tmp_path: Path) -> None:
    done = python("", "-m", "lightning_green", "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"lightning-green {lightning_green.__version__}"
    out = tmp_path / "d.csv"
    done = python("", "-m", "lightning_green", "replay", str(CURVES), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "mean cost saved" in done.stdout
    with out.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 45  # every MLPerf curve of the file
    done = python("", "-m", "lightning_green", "replay", str(tmp_path / "missing.csv"), "-o", str(out))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_licence_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    reference = (ROOT / "benchmarks" / "data" / "curves" / "LICENSE-nas-bench-nlp.txt").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "Copyright 2026 lightning_green developers" in text
    ours = text.replace(
        "Copyright 2026 lightning_green developers", "Copyright [yyyy] [name of copyright owner]"
    )
    assert ours.strip() == reference.strip()  # the licence text itself, unchanged


def test_wheel_ships_py_typed_the_licence_and_the_offline_package(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    import shutil

    # A clean tree with what a wheel is built from, nothing left behind (no venv, no build outputs).
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "lightning_green", src / "lightning_green", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("lightning_green-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "lightning_green/py.typed",
        "lightning_green/__main__.py",
        "lightning_green/offline/engine.py",
    } <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_lightning_requirements_admit_only_releases_the_callbacks_run_on() -> None:
    """The stopper uses ``EarlyStoppingReason`` (Lightning 2.6+): a pip resolution must not keep an
    older 2.4/2.5 install it crashes on, nor the malicious 2.6.2 and 2.6.3; the installed ones fit."""
    import re
    from importlib.metadata import version

    from packaging.requirements import Requirement

    quoted = re.findall(r'"((?:pytorch-)?lightning[<>=!~][^"]*)"', (ROOT / "pyproject.toml").read_text())
    specs = {r.name: r.specifier for r in map(Requirement, quoted)}
    assert set(specs) == {"pytorch-lightning", "lightning"} and len(quoted) == 2, quoted
    for name, spec in specs.items():
        releases = ("2.4.0", "2.5.6", "2.6.0", "2.6.1", "2.6.2", "2.6.3", "2.6.6")
        assert [v for v in releases if spec.contains(v)] == ["2.6.0", "2.6.1", "2.6.6"], (name, str(spec))
        assert spec.contains(version(name)), (name, version(name))
    for module in ("lightning.pytorch", "pytorch_lightning"):  # what the floor stands for
        early_stopping = __import__(f"{module}.callbacks.early_stopping", fromlist=["EarlyStoppingReason"])
        assert hasattr(early_stopping, "EarlyStoppingReason"), module


def _pins(path: Path) -> dict[str, Version]:
    """``name -> version`` of every ``name==version`` line of a constraints file."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec, *more) = requirement.specifier
            if spec.operator == "==" and not more:
                pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_constraints_floor_pins_every_declared_floor() -> None:
    """``constraints-floor.txt`` (README: checking the oldest releases allowed) pins the floor of every
    requirement of ``pyproject.toml`` and its extras (torch: constraints.txt's CPU build)."""
    import re

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    text = (ROOT / "pyproject.toml").read_text()
    project = text[text.index("\n[project]") : text.index("\n[project.scripts]")]
    declared: dict[str, Version] = {}
    for requirement in map(Requirement, re.findall(r'"([A-Za-z][^"\s]*>=[^"]*)"', project)):
        (floor,) = (Version(s.version) for s in requirement.specifier if s.operator == ">=")
        declared[canonicalize_name(requirement.name)] = floor
    assert {"numpy", "mlflow", "jsonargparse", "pyyaml", "lightning", "pytorch-lightning"} <= set(declared)
    pins = _pins(ROOT / "constraints-floor.txt")
    tools = {"pytest", "pytest-timeout", "ruff"}  # the test tools: any release
    assert set(pins) == set(declared) - tools, (sorted(pins), sorted(declared))
    for name, pin in pins.items():
        if name == "torch":
            assert pin == _pins(ROOT / "constraints.txt")["torch"]
        else:
            assert pin.release[: len(declared[name].release)] == declared[name].release, (name, pin)
