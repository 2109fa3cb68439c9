"""Competing load for the benchmarks: N busy processes outside the benchmark's process tree.

Each is a numpy matmul loop on one thread, started through a shell that exits at once, so the
loop is re-parented away from the benchmark: the CPU-time energy estimate (which counts the
benchmark's process tree) does not count it, as it would not count another tenant's job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

_LOOP = (
    "import numpy as np\na = np.random.default_rng({seed}).random((256, 256))\n"
    "while True:\n    a = np.tanh(a @ a)\n"
)


class BusyLoad:
    """``with BusyLoad(n):`` runs ``n`` busy processes for the block and kills them after it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pids: list[int] = []

    def __enter__(self) -> BusyLoad:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for i in range(self.n):
            code = _LOOP.format(seed=i)
            out = subprocess.run(
                ["sh", "-c", '"$0" -c "$1" >/dev/null 2>&1 & echo $!', sys.executable, code],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            self.pids.append(int(out.stdout.strip()))
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.pids = []
