"""Benchmark: the stopping policy's arguments on a grid, per curve file, against the patience rules.

``benchmarks/stopping.py`` judges the defaults (and a small grid around them, leaving one source
out). This script replays a wider grid - ``patience`` x ``patience_rest_fraction`` x
``min_relative_gain`` x ``min_horizon_fraction`` - over every curve file of the repository
(without learning rates) and prints, per setting and file, the policy's cost saved as a multiple
of the best Lightning patience rule's of equal or lower mean regret (the ratio
``benchmarks/stopping.py`` prints; ``!`` where a no-harm target is missed), then the setting
with the largest smallest ratio over the files: how far any setting of these arguments gets
towards saving 1.5x the patience rules' on every file at once.

Usage::

    python benchmarks/stopping_grid.py [--jobs N]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stopping import (  # noqa: E402
    DEFAULT_CURVES,
    DEFAULT_SMOOTH_CURVES,
    DEFAULT_STEP_CURVES,
    RATIO_TARGET,
    harm_checks,
    load_datasets,
    replay_all,
)
from stopping_measures import patience_table, saved_ratio, stats  # noqa: E402

from lightning_green.policy import StoppingConfig  # noqa: E402

GRID = {
    "patience": (30, 60, 100),
    "patience_rest_fraction": (0.5, None),
    "min_relative_gain": (0.02, 0.04, 0.08),
    "min_horizon_fraction": (0.3, 0.5),
}
"""The arguments varied (every combination; the others at their defaults)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    datasets = [
        d for d in load_datasets(DEFAULT_CURVES, DEFAULT_STEP_CURVES, [DEFAULT_SMOOTH_CURVES]) if not d.use_lr
    ]
    tables = {d.key: patience_table(d.curves) for d in datasets}
    default = StoppingConfig()
    configs = {}
    for values in itertools.product(*GRID.values()):
        settings = dict(zip(GRID, values, strict=True))
        configs[", ".join(f"{k}={v}" for k, v in settings.items())] = replace(default, **settings)
    results = replay_all(datasets, configs, args.jobs)

    print("ratio of cost saved to the best patience rule of equal or lower regret ('!': no-harm missed)")
    for i, d in enumerate(datasets):
        print(f"  [{i}] {d.key}")
    width = max(len(name) for name in configs) + len("  (defaults)")
    print(f"{'setting':{width}s}" + "".join(f"{f'[{i}]':>8s}" for i in range(len(datasets))) + "     min")
    smallest: dict[str, float] = {}
    for name, config in configs.items():
        cells = []
        ratios = []
        for d in datasets:
            s = stats(d.curves, results[(name, d.key)])
            ratio, _ = saved_ratio(s, tables[d.key])
            ok = all(holds for _, holds in harm_checks(d, s, tables[d.key]))
            ratios.append(ratio)
            cells.append(f"{ratio:7.2f}{' ' if ok else '!'}")
        smallest[name] = min(ratios)
        marker = "  (defaults)" if config == default else ""
        print(f"{name + marker:{width}s}" + "".join(cells) + f"{smallest[name]:8.2f}")
    best = max(smallest, key=smallest.__getitem__)
    verdict = "PASS" if smallest[best] >= RATIO_TARGET else "FAIL"
    print(
        f"\nlargest smallest ratio: {smallest[best]:.2f} ({best}); target {RATIO_TARGET} on every file:"
        f" {verdict}\n(total {time.perf_counter() - start:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
