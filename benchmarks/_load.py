"""Competing load for the benchmarks and tests: N busy processes outside the caller's process tree.

Each is a numpy matmul loop (on one thread, or numpy's default threads), started through a
shell that exits at once, so the loop is re-parented away from the caller: the CPU-time energy
estimate (which counts the caller's process tree) does not count it, as it would not count
another tenant's job. A busy child of the training process would be counted, and the estimate
would then follow wall time instead of the training's own CPU time.
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
    """``with BusyLoad(n):`` runs ``n`` busy processes for the block and kills them after it.

    Args:
        n: Number of busy processes.
        one_thread: Limit each to one BLAS/OpenMP thread (default); False: numpy's default
            threads, one per core.
    """

    def __init__(self, n: int, one_thread: bool = True) -> None:
        self.n = n
        self.one_thread = one_thread
        self.pids: list[int] = []

    def alive(self) -> bool:
        """Whether every busy process is still running."""
        try:
            for pid in self.pids:
                os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return bool(self.pids) or self.n == 0

    def __enter__(self) -> BusyLoad:
        env = dict(os.environ)
        if self.one_thread:
            env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
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
