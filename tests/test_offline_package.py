"""The offline package as a library: no global state changed by plotting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_plots_leave_the_users_matplotlib_backend_and_pyplot_alone(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    script = textwrap.dedent(
        f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        import numpy as np
        from lightning_green.offline import Curve, plot_tradeoff, result_at
        from lightning_green.report import plot_summary

        curve = Curve("a", np.array([1, 2, 3]), np.array([3.0, 2.0, 2.5]), np.array([1.0, 2.0, 3.0]), False)
        assert plot_tradeoff([result_at(curve, 1)], {str(tmp_path / "t.png")!r})
        summary = {{"per_epoch": [{{"epoch": 0, "total_kwh": 0.1, "energy_kwh": 0.1, "metric": 1.0}}],
                    "monitor": "val_loss", "total_kwh": 0.1, "energy_source": "estimate"}}
        plot_summary(summary, {str(tmp_path / "s.png")!r})
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, "torch" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    assert out == ["svg", "False", "False"]  # own canvases: no matplotlib.use, no pyplot, no torch
    assert (tmp_path / "t.png").read_bytes()[:4] == (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
