"""benchmarks/gpu_check.py in its CPU mode: every part runs against the NVML double and says so."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run_script(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "table.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--work-dir", str(tmp_path / "work"), "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,  # past the watchdog of --seconds 300 (345 s)
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_cpu_mode_runs_every_part_against_the_double_and_prints_one_table(tmp_path):
    # The parts end when done (about 40 s in all); the budget is for a loaded machine, where part
    # (b)'s fit got too little of 150 s to measure one window (seen in a CI run at 2.5x slowdown).
    proc, table = run_script(tmp_path, "--fake-nvml", "--seconds", "300", "--matmul-seconds", "1")
    rows = table["rows"]
    assert {r["part"] for r in rows} == {"a", "b", "c", "d"}
    assert not [r for r in rows if r["verdict"] == "FAILED"], rows
    # The readings are labelled as the double's, in the table and in the header.
    assert "DOUBLE" in table["meta"]["nvml"] and "NOT a measurement" in table["meta"]["nvml"]
    energy_rows = [r for r in rows if (" J" in r["value"] or " W" in r["value"]) and r["part"] in "abc"]
    assert energy_rows and all("NVML DOUBLE" in r["value"] for r in energy_rows)
    assert all(r["verdict"].endswith("(double)") for r in rows if r["verdict"])
    # (a) the counter meter and the sampled meter integrate the same scripted GPU.
    by_quantity = {(r["part"], r["quantity"]): r for r in rows}
    counter_j = float(
        by_quantity["a", "energy, counter (nvmlDeviceGetTotalEnergyConsumption)"]["value"].split()[0]
    )
    sampled_j = float(by_quantity["a", "energy, power samples at 10 Hz (trapezoid)"]["value"].split()[0])
    assert counter_j > 100.0  # ~300 W for over a second
    assert sampled_j == pytest.approx(counter_j, rel=0.05)
    assert by_quantity["a", "sampled vs counter"]["verdict"] == "ok (double)"
    # (b) a real fit chose a precision and measured joules per sample per precision.
    chosen = by_quantity["b", "chosen precision"]["value"].split()[0]
    assert chosen in ("32-true", "bf16-mixed")
    per_sample = by_quantity["b", "J/sample by precision (adaptations record)"]["value"]
    if "none measured" in per_sample:
        # Only on a machine so loaded (a CI run at 7x its usual time) that the probe plan ran out of
        # its time limit or its budget before one window: the table must say which, at 32-true.
        decision = by_quantity.get(("b", "decision"), {}).get("value", "")
        unfinished = "NOT finished" in by_quantity["b", "chosen precision"]["value"]
        assert chosen == "32-true" and (unfinished or "no_budget" in decision or "insufficient" in decision)
    else:
        assert "32-true" in per_sample
    # (c) adapt_gpu's fixed and adaptive fits ran; (d) the NVML tests ran, the real one skipped.
    assert "fixed/adaptive energy to the target" in {r["quantity"] for r in rows if r["part"] == "c"}
    d_row = by_quantity["d", "pytest tests/test_nvml_meter.py"]
    assert "passed" in d_row["value"] and "1 skipped" in d_row["value"]
    # One table on stdout, then the total wall time.
    assert proc.stdout.count("part | quantity") == 1
    assert "total wall time:" in proc.stdout.splitlines()[-1]


def test_a_failing_part_is_a_failed_row_and_the_next_part_still_runs(tmp_path):
    # 16-mixed needs CUDA: AdaptivePrecision refuses it at fit start on this CPU.
    _, table = run_script(
        tmp_path, "--fake-nvml", "--parts", "b,a", "--precisions", "16-mixed", "--matmul-seconds", "1"
    )
    rows = table["rows"]
    failed = [r for r in rows if r["part"] == "b"]
    assert len(failed) == 1 and failed[0]["verdict"] == "FAILED"
    assert "16-mixed" in failed[0]["value"] and "not supported" in failed[0]["value"]
    assert [r["verdict"] for r in rows if r["quantity"] == "sampled vs counter"] == ["ok (double)"]


def test_bad_parts_are_refused(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script adds benchmarks/ and tests/
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as info:
        module.parse_args(["--parts", "a,e"])
    assert info.value.code == 2
    assert module.parse_args(["--parts", "d, a"]).parts == ["d", "a"]
