"""Timing of the stopping policy for ``benchmarks/stopping.py``: one decision, and replay against length.

- :func:`time_per_decision`: median and p99 of one ``update`` with 50 checks of history, the
  learning-curve fit active (the expensive case);
- :func:`scaling`: the replay time of never-stopping 2,000- and 20,000-check curves (linear in the
  length, about 2 ms per check or less).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from lightning_green.offline import Curve
from lightning_green.policy import StoppingConfig, StoppingPolicy


def time_per_decision(
    curves: Sequence[Curve], history: int = 50, repeats: int = 3
) -> tuple[tuple[float, float], tuple[float, float], int]:
    """Median and p99 (ms) of one ``update`` with ``history`` checks, the marginal rule active.

    The run is planned for 1.5 times the history, so the 50th check is past the first half of the
    run (``min_horizon_fraction``) and the learning curve is fitted: the expensive case. Returns
    wall-clock and CPU (thread) time: on a shared machine the wall clock also counts the time other
    processes held the core.
    """
    wall, cpu = [], []
    planned = history + history // 2
    config = StoppingConfig(patience=10_000)
    gc.collect()
    gc.disable()
    try:
        for c in curves:
            if len(c.metrics) < history:
                continue
            for _ in range(repeats):
                policy = StoppingPolicy(replace(config, mode=c.mode))
                for i in range(history - 1):
                    policy.update(float(c.metrics[i]), float(c.costs[i]), epoch=i, max_epochs=planned)
                t0, c0 = time.perf_counter(), time.thread_time()
                policy.update(
                    float(c.metrics[history - 1]),
                    float(c.costs[history - 1]),
                    epoch=history - 1,
                    max_epochs=planned,
                )
                cpu.append(time.thread_time() - c0)
                wall.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    if not wall:
        return (math.nan, math.nan), (math.nan, math.nan), 0
    w, c = np.array(wall) * 1e3, np.array(cpu) * 1e3
    return (
        (float(np.median(w)), float(np.percentile(w, 99))),
        (float(np.median(c)), float(np.percentile(c, 99))),
        len(w),
    )


def never_stopping_curve(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A loss that falls steadily to the end (a straight line in cost, with noise): nothing stops it.

    The per-check noise is a fifth of the per-check improvement, so a new best comes every few
    checks (the plateau rule never fires) and the recent slope is surely positive (the marginal rule
    never fires): every check is decided in full, the learning-curve fit included once the run is
    past ``min_horizon_fraction`` of its plan.
    """
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=float)
    return 3.0 - i / n + rng.normal(0.0, 0.2 / n, n), (i + 1) * 0.01


def time_replay(n: int) -> tuple[float, float, int]:
    """Wall and CPU seconds to replay the default policy over :func:`never_stopping_curve` ``(n)``,
    and the number of stops (0 expected)."""
    metrics, costs = never_stopping_curve(n)
    policy = StoppingPolicy(StoppingConfig())
    stops = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        stops += policy.update(float(metrics[i]), float(costs[i]), epoch=i, max_epochs=n).should_stop
    return time.perf_counter() - t0, time.process_time() - c0, stops


def scaling(sizes: Sequence[int] = (2_000, 20_000)) -> list[str]:
    """Replay time of never-stopping curves of the given lengths: linear in the length, about
    2 ms per check or less. Prints a table and returns the verdict lines."""
    print("\n== Replay time against curve length (never-stopping curve, default policy) ==")
    rows = []
    for n in sizes:
        wall, cpu, stops = time_replay(n)
        rows.append((n, wall, cpu))
        print(
            f"  {n:7d} checks: {wall:7.2f} s wall ({cpu:7.2f} s CPU), {1e3 * wall / n:5.2f} ms per check,"
            f" stops {stops}"
        )
    (n0, w0, c0), (n1, w1, c1) = rows[0], rows[-1]
    ratio, cpu_ratio = w1 / w0, c1 / c0
    per_check = 1e3 * c1 / n1
    print(f"  {n1} vs {n0} checks: {ratio:.1f}x the time (CPU {cpu_ratio:.1f}x; {n1 / n0:.0f}x is linear)")
    return [
        f"replay time {n1} vs {n0} checks: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU (<= 20):"
        f" {'PASS' if min(ratio, cpu_ratio) <= 20 else 'FAIL'}",
        f"CPU time per check over {n1} checks: {per_check:.2f} ms (about 2 or less):"
        f" {'PASS' if per_check <= 2.5 else 'FAIL'}",
    ]
