"""GPU check in one prepared script: NVML counter vs power samples, AdaptivePrecision, adapt_gpu.

What it measures, in one table (also written to ``--out``: ``.json`` as JSON, else markdown):

(a) **NVML energy counter vs integrated power samples** over a steady bf16 matmul load (8192^3,
    ``--matmul-seconds``, default 25 s, after 3 s of warm-up): the project's two NVML meters read
    side by side over the same window - :class:`~lightning_green.energy.nvml.NvmlMeter` on the
    energy counter (``nvmlDeviceGetTotalEnergyConsumption`` deltas) and the same meter on its
    power-sampling path (``nvmlDeviceGetPowerUsage`` at 10 Hz, trapezoid rule; the counter hidden
    from it, as on a pre-Volta GPU). Both figures in J and their difference. Target: within 5 %.
    (Recent drivers average ``nvmlDeviceGetPowerUsage`` over about a second on Ampere and newer,
    hence a steady load, both meters started after the warm-up and read while it still runs.)
(b) **AdaptivePrecision on a GPU transformer**: a real Lightning fit of a 6-layer transformer
    encoder (d_model 1024, sequences of 256 tokens, batch 32, synthetic token data) with
    ``AdaptivePrecision`` and ``EnergyMonitor(meter="nvml")``, stopped once the first probe plan
    is decided. Reports the chosen precision and the measured J/sample per precision from the
    adaptations record. Target: ``bf16-mixed`` on a GPU with bf16 (Ampere and newer). Every
    precision the GPU has is probed, ``16-mixed`` included, as in a user's run; ``--precisions
    32-true,bf16-mixed`` narrows the choice.
(c) **adapt_gpu**: ``benchmarks/adapt_gpu.py``'s digits CNN to 99 % validation accuracy, fixed
    (batch 32 / 32-true) vs AdaptiveBatchSize + AdaptivePrecision, one seed (``--seed``); the
    fixed/adaptive energy ratio. Target: >= 1.5x.
(d) **the real-NVML tests**: ``python -m pytest -q tests/test_nvml_meter.py`` in a subprocess
    (the test ``test_real_pynvml_meter_measures_gpu_0`` skips where NVML is missing). Target: all
    passed, none skipped.

Each part runs under its own time limit (a share of ``--seconds``, default 400 s; Trainer
``max_time`` for the fits, a subprocess timeout for pytest) and a part that fails is reported as
a FAILED row; the other parts still run. A watchdog prints the table so far and exits if the whole
script overruns ``--seconds`` by 45 s. Fits to 8 minutes on one H100/H200.

Run on the GPU machine, from the repository root (no install needed):

    PYTHONPATH=. python3 benchmarks/gpu_check.py [--out gpu_check.md] [--parts a,b,c,d]

Without a GPU or without NVML (or with ``--fake-nvml``) every part runs against the NVML double
of the tests (``tests/nvml_double.py``: a scripted GPU drawing ~300 W) on small CPU workloads:
the figures then only show that the code paths run - the output says so on every line that
carries a reading. ``tests/test_gpu_check.py`` runs that mode.

Lightning namespace: ``--namespace auto`` (default) uses ``lightning.pytorch`` where it is
installed and the lightning_green callbacks are its callbacks, else ``pytorch_lightning``; part
(c) always runs adapt_gpu's own (``pytorch_lightning``) code. No MLflow needed (``logger=False``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "examples", ROOT / "benchmarks", ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import logging  # noqa: E402

import torch  # noqa: E402

from lightning_green import AdaptivePrecision, EnergyMonitor  # noqa: E402
from lightning_green.callbacks.adaptive_precision import hardware_precisions  # noqa: E402
from lightning_green.energy import selection  # noqa: E402
from lightning_green.energy.nvml import NvmlMeter, nvml_available  # noqa: E402

for _name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
warnings.filterwarnings("ignore", message=".*Tensor Cores.*")

PART_NAMES = {
    "a": "NVML counter vs power samples",
    "b": "AdaptivePrecision on a transformer",
    "c": "adapt_gpu energy to accuracy",
    "d": "real-NVML tests",
}
PART_WEIGHTS = {"a": 45.0, "b": 100.0, "c": 215.0, "d": 60.0}
"""Relative shares of ``--seconds`` per part (time a part leaves unused goes to the next)."""

AGREEMENT_TARGET_PCT = 5.0
RATIO_TARGET = 1.5
DOUBLE_POWER_W = 300.0


@dataclass
class Row:
    """One line of the table."""

    part: str
    quantity: str
    value: str
    target: str = ""
    verdict: str = ""


@dataclass
class Context:
    """What every part needs: where it runs, which NVML, which Lightning."""

    fake: bool
    device: str  # "cuda" or "cpu"
    nvml: Any  # the pynvml module or the double
    namespace: str
    pl: Any  # the Lightning module (lightning.pytorch or pytorch_lightning)
    work_dir: Path

    @property
    def reading_note(self) -> str:
        return " [NVML DOUBLE: scripted, not a measurement]" if self.fake else ""


ROWS: list[Row] = []
SCRIPTED = {"on": False}
"""Set when the NVML double is in use: every verdict is then marked as one on scripted readings."""
_PRINT_LOCK = threading.Lock()


def say(text: str) -> None:
    """Print and flush (the output is read live from a remote machine)."""
    with _PRINT_LOCK:
        print(text, flush=True)


def add(part: str, quantity: str, value: str, target: str = "", verdict: str = "") -> None:
    """Add a row and print it at once."""
    if verdict and SCRIPTED["on"] and verdict != "FAILED":
        verdict += " (double)"
    row = Row(part, quantity, value, target, verdict)
    ROWS.append(row)
    say(f"  [{part}] {quantity}: {value}" + (f"  (target {target}: {verdict})" if target else ""))


# -- NVML views -------------------------------------------------------------------------------------
class CounterHidden(types.ModuleType):
    """An NVML module (real or double) whose energy counter answers "not supported".

    :class:`NvmlMeter` then measures the GPU the way it does on a GPU without a counter: a
    background thread samples ``nvmlDeviceGetPowerUsage`` and integrates it (trapezoid rule).
    Everything else goes to the wrapped module.
    """

    def __init__(self, base: types.ModuleType) -> None:
        super().__init__(f"{base.__name__}_counter_hidden")
        self._base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:  # noqa: N802 - pynvml's name
        raise self._base.NVMLError(self._base.NVML_ERROR_NOT_SUPPORTED)


def make_double(power_w: Callable[[float], float], energy_j: Callable[[float], float]) -> types.ModuleType:
    """The tests' NVML double: one GPU, counter ``energy_j`` and power ``power_w`` (of monotonic time)."""
    from nvml_double import FakeGpu, FakeNvml

    gpu = FakeGpu(
        uuid="GPU-00000000-double-0000-0000-000000000000",
        energy_mj_fn=lambda t: 1000.0 * energy_j(t),
        power_mw=lambda t: 1000.0 * power_w(t),
    )
    return FakeNvml([gpu])


def steady_double() -> types.ModuleType:
    """A double drawing a constant ``DOUBLE_POWER_W``: energy proportional to wall time."""
    t0 = time.monotonic()
    return make_double(lambda t: DOUBLE_POWER_W, lambda t: 5e6 + DOUBLE_POWER_W * (t - t0))


def wavy_double(period_s: float = 1.7, swing_w: float = 40.0) -> types.ModuleType:
    """A double whose power swings +-``swing_w`` around ``DOUBLE_POWER_W`` (sine, ``period_s``)."""
    t0 = time.monotonic()
    omega = 2 * math.pi / period_s

    def power(t: float) -> float:
        return DOUBLE_POWER_W + swing_w * math.sin(omega * (t - t0))

    def energy(t: float) -> float:  # the antiderivative of power, from an arbitrary counter offset
        return 5e6 + DOUBLE_POWER_W * (t - t0) - swing_w / omega * math.cos(omega * (t - t0))

    return make_double(power, energy)


def install_double_in_callbacks(double: types.ModuleType) -> None:
    """Make every EnergyMonitor measure "GPU 0" of ``double`` with NVML only (patches ``build_meter``).

    Replaced wherever lightning_green imported ``build_meter``, so it holds whichever module builds
    the meter.
    """
    real = selection.build_meter

    def build(spec: str = "auto", **kwargs: Any) -> Any:
        kwargs.update(cuda_indices=[0], cuda_uuids=[], host_reader=False, nvml=double, environ={})
        return real("nvml" if spec == "auto" else spec, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("lightning_green") and getattr(module, "build_meter", None) is real:
            module.build_meter = build  # type: ignore[attr-defined]


# -- Lightning namespace ------------------------------------------------------------------------------
def choose_namespace(wanted: str) -> tuple[str, Any]:
    """The Lightning package to build Trainers from.

    ``auto``: ``lightning.pytorch`` when importable and the lightning_green callbacks are its
    callbacks, else ``pytorch_lightning``.
    """
    if wanted in ("lightning", "lightning.pytorch"):
        return "lightning.pytorch", importlib.import_module("lightning.pytorch")
    if wanted == "pytorch_lightning":
        return "pytorch_lightning", importlib.import_module("pytorch_lightning")
    try:
        lp = importlib.import_module("lightning.pytorch")
    except ImportError:
        lp = None
    if lp is not None and isinstance(AdaptivePrecision(), lp.Callback):
        return "lightning.pytorch", lp
    return "pytorch_lightning", importlib.import_module("pytorch_lightning")


# -- (a) counter vs samples -----------------------------------------------------------------------
def part_a(ctx: Context, budget_s: float, matmul_seconds: float) -> None:
    """NVML counter meter and sampled meter read side by side over a steady matmul load."""
    if ctx.fake:
        counter_nvml = wavy_double()
        side, dtype = 256, torch.float32
        kwargs: dict[str, Any] = {"environ": {}}
    else:
        counter_nvml = ctx.nvml
        side, dtype = 8192, torch.bfloat16
        kwargs = {"cuda_uuids": [str(torch.cuda.get_device_properties(0).uuid)]}
    load_s = max(1.0, min(matmul_seconds, budget_s - 12.0))
    warmup_s = 0.5 if ctx.fake else 3.0
    device = torch.device(ctx.device)
    x = torch.randn(side, side, device=device, dtype=dtype)
    y = torch.randn(side, side, device=device, dtype=dtype)
    burst = 1 if ctx.fake else 25

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_for(seconds: float) -> int:
        done, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(burst):
                torch.mm(x, y)
            done += burst
            sync()
        return done

    counter = NvmlMeter([0], nvml=counter_nvml, **kwargs)
    sampled = NvmlMeter([0], nvml=CounterHidden(counter_nvml), sampling_interval_s=0.1, **kwargs)
    if counter.source != "nvml" or sampled.source != "nvml-sampled":
        raise RuntimeError(
            f"meters are {counter.source!r} and {sampled.source!r}, not 'nvml' and 'nvml-sampled'"
        )
    say(
        f"  [a] {side}^3 {str(dtype).removeprefix('torch.')} matmuls: {warmup_s:g} s warm-up, "
        f"{load_s:g} s measured"
    )
    run_for(warmup_s)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counter.start()
        sampled.start()
        t0 = time.monotonic()
        matmuls = run_for(load_s)
        for _ in range(burst):  # keep the GPU busy while both are read
            torch.mm(x, y)
        end_c, end_s = counter.read(), sampled.read()
        seconds = time.monotonic() - t0
        sync()
        counter.close()
        sampled.close()
    counter_j, sampled_j = end_c.energy_j, end_s.energy_j
    diff_pct = 100.0 * (sampled_j - counter_j) / counter_j if counter_j > 0 else float("nan")
    ok = abs(diff_pct) <= AGREEMENT_TARGET_PCT
    note = ctx.reading_note
    add("a", "energy, counter (nvmlDeviceGetTotalEnergyConsumption)", f"{counter_j:.1f} J{note}")
    add("a", "energy, power samples at 10 Hz (trapezoid)", f"{sampled_j:.1f} J{note}")
    add(
        "a",
        "sampled vs counter",
        f"{diff_pct:+.2f} % (agreement {100.0 - abs(diff_pct):.2f} %){note}",
        f"|diff| <= {AGREEMENT_TARGET_PCT:g} %",
        "ok" if ok else "OFF TARGET",
    )
    flops = 2.0 * side**3 * matmuls / seconds
    add(
        "a",
        "load",
        f"{seconds:.1f} s, mean power {counter_j / seconds:.0f} W (counter), {flops / 1e12:.1f} TFLOP/s; "
        f"faults {end_c.faults}+{end_s.faults}"
        + (f"; warnings: {'; '.join(str(w.message)[:120] for w in caught)}" if caught else "")
        + note,
    )


# -- (b) AdaptivePrecision on a transformer -------------------------------------------------------
def make_transformer_module(pl: Any, d_model: int, layers: int, heads: int, lr: float) -> Any:
    """A transformer encoder classifier over token sequences (mean-pooled), as a LightningModule."""
    from torch import nn
    from torch.nn import functional

    class TokenClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, d_model)
            layer = nn.TransformerEncoderLayer(
                d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(d_model, CLASSES)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(self.embed(tokens)).mean(dim=1))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            tokens, labels = batch
            loss = functional.cross_entropy(self(tokens), labels)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=lr)

    return TokenClassifier()


VOCAB, CLASSES = 1000, 10


def token_data(n: int, seq: int, seed: int = 0) -> torch.utils.data.TensorDataset:
    """Sequences whose class is over-represented among their tokens (``token % CLASSES``): learnable."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    tokens = torch.randint(0, VOCAB, (n, seq), generator=gen)
    biased = torch.rand(n, seq, generator=gen) < 0.3
    shifted = (tokens - tokens % CLASSES + labels[:, None]) % VOCAB
    return torch.utils.data.TensorDataset(torch.where(biased, shifted, tokens), labels)


def part_b(ctx: Context, budget_s: float, precisions: str | None) -> None:
    """A real fit with AdaptivePrecision + EnergyMonitor(meter="nvml"), stopped once the plan decided."""
    pl = ctx.pl
    if ctx.fake:
        d_model, layers, heads, seq, batch, n = 32, 1, 4, 16, 16, 4096
        precision_cb = AdaptivePrecision(precisions=precisions, window_s=0.05, start_step=4)
    else:
        d_model, layers, heads, seq, batch, n = 1024, 6, 16, 256, 32, 32 * 400
        precision_cb = AdaptivePrecision(precisions=precisions)
    monitor = EnergyMonitor(meter="nvml", summary=False, prog_bar=False)

    def plan_over() -> bool:
        """Whether the first probe plan concluded (its outcomes recorded) or was refused (no budget).

        Probing is paid as it goes, so it starts only once the run has spent about 20x what
        two candidate windows cost: the first steps after ``start_step`` are not a decision.
        """
        return any(
            "outcomes" in (h.get("details") or {}) or h.get("reason") == "no_budget"
            for h in precision_cb.history
        )

    class StopWhenDecided(pl.Callback):
        """Stops once the first probe plan is over and its decision applied."""

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            cb = precision_cb
            if cb.policy is not None and plan_over() and not cb.busy and cb.pending is None:
                trainer.should_stop = True

    pl.seed_everything(0, verbose=False)
    model = make_transformer_module(pl, d_model, layers, heads, lr=1e-4)
    loader = torch.utils.data.DataLoader(token_data(n, seq), batch_size=batch, shuffle=True, drop_last=True)
    max_s = max(5, int(budget_s - 10))
    trainer = pl.Trainer(
        accelerator="gpu" if ctx.device == "cuda" else "cpu",
        devices=1,
        precision="32-true",
        max_epochs=50,
        max_time={"seconds": max_s},
        logger=False,
        callbacks=[monitor, precision_cb, StopWhenDecided()],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(ctx.work_dir / "part_b"),
    )
    say(
        f"  [b] transformer d_model {d_model} x {layers} layers, {seq} tokens, batch {batch}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters; at most {max_s} s"
    )
    start = time.monotonic()
    trainer.fit(model, train_dataloaders=loader)
    seconds = time.monotonic() - start
    fields = precision_cb.energy_summary_fields()
    decided = precision_cb.policy is not None and plan_over() and not precision_cb.busy
    chosen = fields["precision"]
    if ctx.device == "cuda":
        expected = (
            "bf16-mixed" if "bf16-mixed" in hardware_precisions(torch.device("cuda", 0)) else "16-mixed"
        )
        target = expected
    else:
        expected, target = "32-true", "32-true on this CPU (bf16-mixed on a GPU)"
    note = ctx.reading_note
    add(
        "b",
        "chosen precision",
        f"{chosen}" + ("" if decided else " (probe plan NOT finished within the time limit)") + note,
        target,
        "ok" if chosen == expected and decided else "OFF TARGET",
    )
    decisions = [h for h in precision_cb.history if h.get("reason") != "probe"]
    if decisions:
        last = decisions[-1]
        details = last.get("details") or {}
        outcomes = details.get("outcomes") or {}
        saving = details.get("saving")
        probes = ", ".join(
            f"{p} {o.get('status')}"
            + (
                f" (ratio {o['ratio']:.2f}, {o['confidence']:.0%} interval {o['ratio_low']:.2f}-"
                f"{o['ratio_high']:.2f}, {o['pairs']} pairs)"
                if o.get("ratio_low") is not None
                else ""
            )
            for p, o in outcomes.items()
        )
        text = f"{last['reason']} at step {last['step']}"
        if isinstance(saving, int | float):
            text += f", saving {saving:.0%}"
        add("b", "decision", text + (f"; probes: {probes}" if probes else ""))
    per_sample = fields["precision_j_per_sample"] or {}
    add(
        "b",
        "J/sample by precision (adaptations record)",
        (", ".join(f"{p} {j * 1e3:.3f} mJ" for p, j in per_sample.items()) or "none measured") + note,
    )
    base = per_sample.get("32-true")
    if base and per_sample.get("bf16-mixed"):
        add("b", "32-true / bf16-mixed J per sample", f"{base / per_sample['bf16-mixed']:.2f}x{note}")
    add(
        "b",
        "switches; energy source; run",
        f"{fields['precision_switches'] or 'none'}; {monitor.energy_source}; "
        f"{trainer.global_step} steps in {seconds:.1f} s; probe windows {fields['precision_probe_j']:.1f} J"
        + note,
    )


# -- (c) adapt_gpu --------------------------------------------------------------------------------
def part_c(ctx: Context, budget_s: float, seed: int) -> None:
    """adapt_gpu's fixed and adaptive fits of one seed, each under half the budget."""
    import adapt_gpu

    args = adapt_gpu.build_parser().parse_args([])
    if ctx.fake:
        adapt_gpu.apply_smoke(args)
    args.root = ctx.work_dir / "part_c"
    per_fit_s = max(5, int((budget_s - 10) / 2))
    say(
        f"  [c] digits CNN width {args.width} at {args.side}x{args.side} (x{args.repeat}) to val_acc >= "
        f"{args.target:g} %, seed {seed}: fixed then adaptive, each at most {per_fit_s} s"
    )
    fixed = adapt_gpu.run(seed, False, args, max_time={"seconds": per_fit_s})
    adaptive = adapt_gpu.run(seed, True, args, max_time={"seconds": per_fit_s})
    note = ctx.reading_note
    for name, out in (("fixed", fixed), ("adaptive", adaptive)):
        add(
            "c",
            f"{name} run",
            f"{out.energy_j:.1f} J to {out.accuracy:.2f} % in {out.epochs} epochs ({out.seconds:.1f} s)"
            + ("" if out.reached else " TARGET ACCURACY NOT REACHED")
            + f"; {out.source}{note}",
        )
    ratio = fixed.energy_j / adaptive.energy_j if adaptive.energy_j > 0 else float("nan")
    both = fixed.reached and adaptive.reached
    add(
        "c",
        "fixed/adaptive energy to the target",
        f"{ratio:.2f}x" + ("" if both else " (not both reached the target: not comparable)") + note,
        f">= {RATIO_TARGET:g}x",
        "ok" if both and ratio >= RATIO_TARGET else "OFF TARGET",
    )
    add(
        "c",
        "adaptive: final batch size, precision; switches",
        f"{adaptive.batch_size}, {adaptive.precision}; batch {adaptive.batch_switches or 'none'}; "
        f"precision {adaptive.precision_switches or 'none'}",
    )


# -- (d) real-NVML tests --------------------------------------------------------------------------
def part_d(ctx: Context, budget_s: float) -> None:
    """``pytest tests/test_nvml_meter.py`` in a subprocess: with a GPU, the real-NVML test must pass."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_nvml_meter.py"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(10.0, budget_s), check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else f"no output (rc {proc.returncode}): {proc.stderr.strip()[-300:]}"
    skips = [line for line in lines if line.startswith("SKIPPED")]
    real = "real NVML unavailable" not in proc.stdout
    ok = proc.returncode == 0 and not skips
    add(
        "d",
        "pytest tests/test_nvml_meter.py",
        summary + ("" if real else " (the real-NVML test skipped: no NVML here)"),
        "all passed, none skipped",
        "ok" if ok else ("skipped here" if proc.returncode == 0 and ctx.fake else "OFF TARGET"),
    )
    for line in skips:
        say(f"      {line}")


# -- table and main ---------------------------------------------------------------------------------
def table_text(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    head = Row("part", "quantity", "value", "target", "verdict")
    cells = [[r.part, r.quantity, r.value, r.target, r.verdict] for r in (head, *rows)]
    widths = [min(70, max(len(c[i]) for c in cells)) for i in range(5)]
    out = []
    for n, cell in enumerate(cells):
        out.append(" | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def table_markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    """The rows as a markdown table with the run's description above it."""
    lines = [f"# gpu_check: {meta['where']}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "where"]
    lines += ["", "| part | quantity | value | target | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [c.replace("|", "\\|") for c in (r.part, r.quantity, r.value, r.target, r.verdict)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def finish(meta: dict[str, Any], out: Path | None, start: float) -> None:
    """Print the table, write ``out``, print the total wall time."""
    meta["total_wall_s"] = round(time.monotonic() - start, 1)
    rows = list(ROWS)
    say("\n" + "=" * 100)
    say(f"gpu_check: {meta['where']}")
    say(f"NVML: {meta['nvml']}; Lightning: {meta['namespace']}")
    say(table_text(rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
        else:
            out.write_text(table_markdown(rows, meta))
        say(f"table written to {out}")
    say(f"total wall time: {meta['total_wall_s']:.1f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="a,b,c,d", help="comma-separated parts to run, from a,b,c,d")
    parser.add_argument("--seconds", type=float, default=400.0, help="time budget of all parts together (s)")
    parser.add_argument("--matmul-seconds", type=float, default=25.0, help="(a): measured matmul load (s)")
    parser.add_argument("--seed", type=int, default=0, help="(c): the adapt_gpu seed")
    parser.add_argument(
        "--precisions",
        default=None,
        help="(b): AdaptivePrecision's precisions (default: all the hardware has)",
    )
    parser.add_argument("--fake-nvml", action="store_true", help="use the NVML double even where NVML works")
    parser.add_argument(
        "--namespace", default="auto", choices=["auto", "lightning", "lightning.pytorch", "pytorch_lightning"]
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the table: .json as JSON, else markdown"
    )
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/lightning_green_gpu_check"))
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PART_NAMES]
    if bad or not parts:
        parser.error(f"--parts must be a comma-separated subset of a,b,c,d; got {args.parts!r}")
    if not (args.seconds > 0 and args.matmul_seconds > 0):
        parser.error("--seconds and --matmul-seconds must be positive")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    cuda = torch.cuda.is_available()
    real_ok, reason = nvml_available([0]) if cuda else (False, "no CUDA device")
    fake = args.fake_nvml or not real_ok
    SCRIPTED["on"] = fake
    if fake:
        nvml: Any = steady_double()
        install_double_in_callbacks(nvml)
        nvml_text = (
            "DOUBLE (tests/nvml_double.py, scripted ~300 W GPU): every energy figure below is scripted, "
            f"NOT a measurement ({'--fake-nvml' if args.fake_nvml else reason})"
        )
    else:
        import pynvml

        nvml, nvml_text = pynvml, f"real ({reason})"
    device = "cuda" if cuda and not fake else "cpu"
    if device == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    namespace, pl = choose_namespace(args.namespace)
    where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    meta: dict[str, Any] = {
        "where": f"{where}, torch {torch.__version__}, python {sys.version.split()[0]}",
        "nvml": nvml_text,
        "namespace": f"{namespace} {pl.__version__} (part c: adapt_gpu's pytorch_lightning)",
        "parts": ",".join(args.parts),
        "seconds": args.seconds,
    }
    say(f"gpu_check on {meta['where']}\nNVML: {nvml_text}\nLightning: {meta['namespace']}")
    work_dir = args.work_dir / time.strftime("%Y%m%d-%H%M%S")
    ctx = Context(fake=fake, device=device, nvml=nvml, namespace=namespace, pl=pl, work_dir=work_dir)

    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(args.seconds + 45.0):
            say(f"\nWATCHDOG: {args.seconds + 45.0:.0f} s passed; the table so far:")
            ROWS.append(Row("-", "watchdog", "the script overran its budget and was stopped", "", "FAILED"))
            finish(meta, args.out, start)
            os._exit(3)

    threading.Thread(target=watchdog, name="gpu-check-watchdog", daemon=True).start()

    total_weight = sum(PART_WEIGHTS[p] for p in args.parts)
    for index, part in enumerate(args.parts):
        remaining_s = args.seconds - (time.monotonic() - start)
        later = sum(PART_WEIGHTS[p] for p in args.parts[index + 1 :])
        # What is left, less the shares of the parts still to come: time a part did not use goes on.
        budget_s = max(10.0, remaining_s - args.seconds * later / total_weight)
        say(f"\n({part}) {PART_NAMES[part]}: budget {budget_s:.0f} s")
        part_start = time.monotonic()
        try:
            if part == "a":
                part_a(ctx, budget_s, args.matmul_seconds)
            elif part == "b":
                part_b(ctx, budget_s, args.precisions)
            elif part == "c":
                part_c(ctx, budget_s, args.seed)
            else:
                part_d(ctx, budget_s)
        except Exception as err:  # report the failure in the table, run the other parts
            detail = f"{type(err).__name__}: {err}".replace("\n", " ")[:300]
            add(part, PART_NAMES[part], f"FAILED: {detail}", "", "FAILED")
            say(traceback.format_exc(limit=6))
        say(f"({part}) took {time.monotonic() - part_start:.1f} s")
    done.set()
    finish(meta, args.out, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
