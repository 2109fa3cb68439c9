"""Stability: the README example run N times under load, and how many runs decide the same.

Runs ``examples/train_digits.py`` (the README's command, with its default arguments: 30 epochs at
most, seed 0, every callback) ``--runs`` times, each in a fresh working directory with its own
MLflow store, while ``--load`` busy processes compete for the CPU (outside the runs' process
tree, see ``benchmarks/_load.py``). From each run's ``energy_summary.json`` it prints the
decision sequence - batch-size decisions (switches and verdicts), precision switches, and where
and why training stopped - and how many runs share the most common sequence (target: at least
9 of 10). Energy is the CPU-time estimate, which under load swings between runs of the same work:
decisions that follow the swings show up here as different sequences.

    python benchmarks/stability.py [--runs 10] [--load 1] [--extra-args "--max-epochs 30"]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _load import BusyLoad  # noqa: E402

from lightning_green.report_marks import SETTINGS, adaptation_marks  # noqa: E402


def decisions(summary: dict) -> str:
    """One run's decision sequence as text: batch size, precision, stop."""
    batch = "; ".join(
        f"e{h['epoch']} {h['from']}->{h['to']} {h['reason']}"
        for h in summary.get("batch_size_adaptations") or []
    )
    # The step of a precision switch follows window lengths timed in seconds: the epoch and the
    # switch are the decision, the step within the epoch is left out.
    precision = re.sub(r" s\d+ ", " ", summary.get("precision_switches") or "none")
    stop = f"stop {summary.get('stop_reason')} at epoch {summary.get('stopped_epoch')}"
    return f"batch: {batch or 'none'} | precision: {precision} | {stop} after {summary['epochs']} epochs"


def adopted(summary: dict) -> str:
    """One run's adaptation decisions: the switches it adopted (the plot's switch marks), per setting."""
    marks = [m for m in adaptation_marks(summary) if m.kind == "switch"]
    parts = []
    for setting in SETTINGS:
        adopted_here = [f"e{m.first_epoch} {m.label}" for m in marks if m.setting == setting]
        parts.append(f"{setting}: {'; '.join(adopted_here) or 'none'}")
    return " | ".join(parts)


def run_once(index: int, extra: list[str]) -> tuple[str, str, float, float]:
    """Run the example once in a fresh directory: its decision sequence, its adopted switches, energy
    (kWh) and seconds."""
    with tempfile.TemporaryDirectory(prefix=f"stability{index}-") as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONWARNINGS": "ignore",
        }
        cmd = [sys.executable, str(ROOT / "examples" / "train_digits.py"), "--quiet", "--tracking-uri"]
        cmd += [f"sqlite:///{tmp}/mlflow.db", *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            failed = f"FAILED (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
            return failed, failed, 0.0, seconds
        match = re.search(r"Summary and plot: (\S+energy_summary\.json)", proc.stdout)
        if match is None:
            return "FAILED: no summary path printed", "FAILED", 0.0, seconds
        summary = json.loads(Path(tmp, match.group(1)).read_text())
        return decisions(summary), adopted(summary), summary["total_kwh"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--load", type=int, default=1, help="busy background processes during the runs")
    parser.add_argument("--extra-args", default="", help="more arguments for train_digits.py (default: none)")
    args = parser.parse_args()
    extra = shlex.split(args.extra_args)
    print(
        f"examples/train_digits.py --quiet --tracking-uri <fresh sqlite> {' '.join(extra)}".rstrip()
        + f" x {args.runs}, {args.load} busy background process(es); energy: CPU-time ESTIMATE"
    )
    sequences, switches = [], []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # kill the load on the way out
    with BusyLoad(args.load):
        for i in range(args.runs):
            seq, adopted_switches, kwh, seconds = run_once(i, extra)
            sequences.append(seq)
            switches.append(adopted_switches)
            print(f"run {i}: {seq}  ({kwh * 3.6e6:.0f} J, {seconds:.0f} s)", flush=True)
    print(agreement(sequences, switches))


def agreement(sequences: list[str], switches: list[str]) -> str:
    """How many runs share the most common whole sequence, the same adopted switches, and each part."""
    common, count = collections.Counter(sequences).most_common(1)[0]
    lines = [f"\nmost common sequence ({count} of {len(sequences)} runs):\n  {common}"]
    decided, n_decided = collections.Counter(switches).most_common(1)[0]
    lines.append(
        f"adopted switches (probe windows left out): {n_decided} of {len(sequences)} runs share"
        f" `{decided}` (target >= 9 of 10)"
    )
    for i, part in enumerate(("batch size", "precision", "stop")):
        parts = [seq.split(" | ")[i] if " | " in seq else seq for seq in sequences]
        value, n = collections.Counter(parts).most_common(1)[0]
        lines.append(f"  {part:10s}: {n} of {len(sequences)} runs share `{value}`")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
