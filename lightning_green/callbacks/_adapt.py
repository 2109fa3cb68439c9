"""What AdaptiveBatchSize and AdaptivePrecision share: measured training windows, checks, coordination.

A *training window* is a run of optimizer steps between two boundaries that every DDP rank
reaches at the same global step. Its energy comes from the Trainer's shared
:class:`~lightning_green.callbacks.energy_monitor.EnergyMonitor` (a collective read at each
boundary), its duration from rank 0's clock, its samples and losses are summed (losses
averaged) over ranks - so every rank holds the same figures and its policy decides the same.
Validation, checkpointing and the other epoch-end work are excluded: the window pauses at
``on_validation_start``/``on_train_epoch_end`` and resumes at the next ``on_train_batch_start``,
so a window may span epochs at the same setting.

Every branch that leads to a collective depends only on what is identical on every rank: step
counts, the records summed over ranks, and the policies' decisions made from them. A rank's own
clock never decides whether a collective is called.

:class:`AdaptiveCallback` holds what both callbacks do alike: the shared monitor, window
pausing, step-boundary detection, history, publishing, the state-version check, and *pending*
switches.

A switch is decided where a window or an epoch ends, but it only takes effect - the setting
changed, the learning rate scaled, the switch recorded, logged and tagged - where training
goes on: AdaptivePrecision at the next ``on_train_batch_start``, AdaptiveBatchSize at the next
``on_train_epoch_start``. Whether the run goes on is only known after the decision
(``EarlyStopping`` runs its epoch-end hook after the plain callbacks', ``max_epochs`` and
``max_steps`` are checked after the hooks); a switch decided at the end of the last step or
epoch stays pending and is never reported as trained. It is saved with the state, so a resumed (or a
further) fit applies it where it trains, as an uninterrupted run would have.

Nothing here decides anything; the policies in :mod:`lightning_green.policy` do.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from lightning_green.callbacks import _compat, _loggers
from lightning_green.callbacks._compat import LightningModule, Trainer
from lightning_green.callbacks._distributed import _device, sum_across_ranks
from lightning_green.callbacks.energy_monitor import EnergyMonitor

ADAPTATIONS_FILENAME = "adaptations.json"
"""File written next to the energy summary with every adaptation and its reason."""

MAX_TAG_CHARS = 4900
"""MLflow tag values are limited to 5000 characters; the switch texts stay below."""

MAX_HISTORY = 500
"""Entries kept in an adaptation history (the most recent); a run switches a handful of times."""

PROBE_REASON = "probe"
"""The reason both policies give a switch that only measures (``BatchSizeReason.PROBE`` and
``PrecisionReason.PROBE``)."""


class AdaptationUnsupportedError(*_compat.MISCONFIGURATION_BASES):
    """The Trainer is set up in a way an adaptive callback cannot work with; raised at fit start."""


# --------------------------------------------------------------------------- checks


def check_strategy(trainer: Trainer, who: str) -> None:
    """Refuse strategies whose batch size or precision plugin cannot be changed in flight.

    Supported: one device (``SingleDeviceStrategy``) and data parallel (``DDPStrategy``:
    ``ddp``, ``ddp_spawn``, ``ddp_find_unused_parameters_true`` ...). DeepSpeed fixes the
    micro-batch size and precision in its engine config, FSDP and model parallelism shard
    gradients (so gradient norms and precision plugins are per shard), XLA has its own
    precision plugins.

    Args:
        trainer: The trainer.
        who: The callback's name, for the message.

    Raises:
        AdaptationUnsupportedError: For any other strategy.
    """
    strategy = trainer.strategy
    if _compat.strategy_kind(trainer) is None:
        raise AdaptationUnsupportedError(
            f"{who} supports a single device or DDP (strategy='auto', 'ddp', 'ddp_spawn', ...); "
            f"got {type(strategy).__name__}. DeepSpeed, FSDP, model-parallel and XLA strategies "
            f"fix or shard what {who} changes. Remove {who} or use a supported strategy."
        )


def check_window_s(name: str, value: object) -> float | None:
    """Validate a window length in seconds (None: chosen from the energy source).

    Args:
        name: Argument name, for the message.
        value: The value given.

    Returns:
        The value as a float, or None.

    Raises:
        ValueError: Unless None or a number in (0, 600].

    Example:
        >>> check_window_s("window_s", 0.5)
        0.5
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 600):
        raise ValueError(
            f"{name} must be None (chosen from the energy source) or seconds in (0, 600], got {value!r}"
        )
    return float(value)


def check_fraction(name: str, value: object, upper: float = 1.0) -> float:
    """Validate a number in ``[0, upper)``.

    Raises:
        ValueError: Naming the argument, the value and what is allowed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < upper):
        raise ValueError(f"{name} must be a number in [0, {upper:g}), got {value!r}")
    return float(value)


def default_window_s(source: str) -> float:
    """Window length suited to an energy source's resolution.

    NVML's energy counter updates every few tens of milliseconds (and some GPUs are only
    sampled at 10 Hz): 1 s windows resolve a window to a few percent. RAPL counters update
    every millisecond and the CPU-time estimate every clock tick (10 ms): 0.25 s holds 25 ticks
    of one busy core, about 4 % per window, well inside the margins the policies use.

    Args:
        source: The source label (``nvml``, ``nvml-sampled``, ``rapl``, ``estimate``, ``+``-joined).

    Returns:
        Seconds.

    Example:
        >>> default_window_s("nvml+rapl"), default_window_s("estimate")
        (1.0, 0.25)
    """
    return 1.0 if "nvml" in source else 0.25


# --------------------------------------------------------------------------- coordination


def find_callback(trainer: Trainer, role: str) -> Any | None:
    """The Trainer's lightning_green adaptive callback of ``role`` (``"batch_size"``/``"precision"``)."""
    return next((cb for cb in trainer.callbacks if getattr(cb, "adapt_role", None) == role), None)


# --------------------------------------------------------------------------- windows


@dataclass
class WindowRecord:
    """What a closed training window measured, identical on every rank.

    Attributes:
        energy_j: Energy of the window, all ranks and devices summed, before PUE.
        duration_s: Rank 0's wall time in training during the window.
        samples: Training samples of all ranks.
        steps: Optimizer steps.
        losses: Per-step training losses, averaged over ranks.
        extras: The caller's extra values, summed over ranks.
        source: The energy source label.
    """

    energy_j: float
    duration_s: float
    samples: int
    steps: int
    losses: list[float] = field(default_factory=list)
    extras: list[float] = field(default_factory=list)
    source: str = "estimate"


def _synchronize(trainer: Trainer) -> None:
    # Kernels are queued asynchronously: wait for them, so that the energy counter read now
    # covers the steps counted so far (one sync per window boundary, about once a second).
    try:
        device = trainer.strategy.root_device
    except Exception:  # pragma: no cover - strategies without a root device
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainingWindow:
    """Energy, time, samples and losses of training steps, paused outside training.

    Every method that reads the meters is a collective under DDP: callers use it at points
    every rank reaches at the same global step, with the same window state on every rank. On a
    GPU each read first waits for the queued kernels.
    """

    def __init__(self) -> None:
        self.paused = True
        self.target_steps = 1
        self._mark_j = 0.0
        self._mark_t = 0.0
        self.reset()

    def reset(self) -> None:
        """Drop what was accumulated (no collective; the next resume or close starts afresh)."""
        self.energy_j = 0.0
        self.duration_s = 0.0
        self.samples_local = 0
        self.steps = 0
        self._losses: list[torch.Tensor | None] = []
        self._step_loss: torch.Tensor | None = None

    def resume(self, trainer: Trainer, monitor: EnergyMonitor) -> None:
        """Start counting again (collective when paused)."""
        if not self.paused:
            return
        _synchronize(trainer)
        self._mark_j = monitor.measure(trainer)[0]
        self._mark_t = time.monotonic()
        self.paused = False

    def pause(self, trainer: Trainer, monitor: EnergyMonitor) -> None:
        """Stop counting, adding what passed since the last mark (collective when running)."""
        if self.paused:
            return
        _synchronize(trainer)
        now_j = monitor.measure(trainer)[0]
        self.energy_j += now_j - self._mark_j
        self.duration_s += time.monotonic() - self._mark_t
        self.paused = True

    def add_batch(self, samples: int, loss: torch.Tensor | None) -> None:
        """Count one (micro-)batch: its samples and its loss (already divided by accumulation)."""
        self.samples_local += int(samples)
        if loss is not None:
            value = loss.detach()  # cast and shaped at close: one op per window, not per step
            self._step_loss = value if self._step_loss is None else self._step_loss + value

    def end_step(self, with_loss: bool = True) -> None:
        """Close one optimizer step (after the last micro-batch of an accumulation cycle)."""
        self.steps += 1
        if with_loss:
            self._losses.append(self._step_loss)  # None: the step had no loss (training_step returned None)
        self._step_loss = None

    @property
    def due(self) -> bool:
        """Whether the window has its target number of steps."""
        return self.steps >= self.target_steps

    @property
    def half_due(self) -> bool:
        """Whether the window has at least half its target steps (a step count: the same on every rank)."""
        return self.steps > 0 and 2 * self.steps >= self.target_steps

    def close(self, trainer: Trainer, monitor: EnergyMonitor, extras: Sequence[float] = ()) -> WindowRecord:
        """Read the meters, sum over ranks and start the next window right here (collective).

        Args:
            trainer: The trainer.
            monitor: The shared energy monitor.
            extras: Values of this rank to sum over ranks with the record (same length everywhere).

        Returns:
            The record, identical on every rank.
        """
        _synchronize(trainer)
        measured_j, _, _, source = monitor.measure(trainer)
        now = time.monotonic()
        energy_j, duration_s = self.energy_j, self.duration_s
        if not self.paused:
            energy_j += measured_j - self._mark_j
            duration_s += now - self._mark_t
            self._mark_j, self._mark_t = measured_j, now
        present = [v.reshape(()) for v in self._losses if v is not None]
        if len({v.dtype for v in present}) > 1:  # a module returning losses of several dtypes
            present = [v.double() for v in present]
        values = iter(torch.stack(present).double().cpu().tolist() if present else [])
        # Per step: (loss, 1) or (0, 0) - the same length on every rank, one sync for all steps.
        pairs: list[float] = []
        for v in self._losses:
            pairs += [0.0, 0.0] if v is None else [float(next(values)), 1.0]
        rank0 = trainer.global_rank == 0
        vector = [duration_s if rank0 else 0.0, float(self.samples_local), *extras, *pairs]
        summed = sum_across_ranks(trainer, vector)
        n_extra = len(extras)
        tail = summed[2 + n_extra :]
        record = WindowRecord(
            energy_j=max(energy_j, 0.0),
            duration_s=max(summed[0], 0.0),
            samples=round(summed[1]),
            steps=self.steps,
            extras=summed[2 : 2 + n_extra],
            losses=[tail[i] / tail[i + 1] for i in range(0, len(tail), 2) if tail[i + 1] > 0],
            source=source,
        )
        self.reset()
        return record


def loss_of(outputs: Any) -> torch.Tensor | None:
    """The training loss in ``on_train_batch_end``'s ``outputs`` (automatic optimization)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


def agree_across_ranks(trainer: Trainer, values: Sequence[float], what: str) -> None:
    """Check that every rank holds exactly the same values (an all-gather under DDP).

    Decisions are made on every rank from identical (summed) inputs, so that every rank's
    policy state stays the same; this verifies it at every decision, so a divergence fails
    loudly on every rank at once instead of training ranks with different settings.

    Raises:
        RuntimeError: On every rank, when the ranks disagree.
    """
    world = int(trainer.world_size)
    if world <= 1:
        return
    local = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device(trainer))
    rows = trainer.strategy.all_gather(local).reshape(world, -1).cpu().tolist()
    if any(row != rows[0] for row in rows):
        raise RuntimeError(f"lightning_green: DDP ranks disagree on {what}: {rows} (one row per rank)")


# --------------------------------------------------------------------------- reporting


def jsonable(value: Any) -> Any:
    """Plain JSON data: mappings to dicts, tuples to lists, enums to values, non-finite to None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def switch_text(history: Sequence[Mapping[str, Any]], limit: int = MAX_TAG_CHARS) -> str:
    """A compact one-line text of switches, e.g. ``"e0 s45 32->64 probe; e2 s90 64->128 cheaper"``.

    The most recent entries are kept when it would exceed ``limit`` characters.

    Example:
        >>> switch_text([{"epoch": 0, "step": 45, "from": 32, "to": 64, "reason": "probe"}])
        'e0 s45 32->64 probe'
    """
    parts = [f"e{h['epoch']} s{h['step']} {h['from']}->{h['to']} {h['reason']}" for h in history]
    text = "; ".join(parts)
    while len(text) > limit and parts:
        parts.pop(0)
        text = "...; " + "; ".join(parts)
    return text


def switches(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The entries of an adaptation history that changed the setting.

    Example:
        >>> switches([{"from": 32, "to": 32}, {"from": 32, "to": 64}])
        [{'from': 32, 'to': 64}]
    """
    return [h for h in history if h["from"] != h["to"]]


def publish(
    trainer: Trainer,
    monitor: Any | None,
    summary_fields: Mapping[str, Any],
    current_tag: tuple[str, Any],
    switches_tag: tuple[str, Sequence[Mapping[str, Any]]],
) -> None:
    """Show an adaptive callback's state now: summary fields, and MLflow tags on rank 0.

    Args:
        trainer: The trainer.
        monitor: The shared EnergyMonitor (None before setup).
        summary_fields: Fields for the end-of-run summary.
        current_tag: ``(tag name, current setting)``.
        switches_tag: ``(tag name, history)``; the switches in it become a compact text.
    """
    if monitor is not None:
        monitor.add_summary_fields(**summary_fields)
    if trainer.global_rank == 0:
        name, history = switches_tag
        _loggers.set_tags(
            trainer, {current_tag[0]: current_tag[1], name: switch_text(switches(history)) or "none"}
        )


def write_adaptations(trainer: Trainer, key: str, payload: Mapping[str, Any]) -> Path | None:
    """Merge ``payload`` under ``key`` into ``adaptations.json`` next to the summary; log it to MLflow.

    Rank 0 only; both adaptive callbacks write their own key into the same file.

    Args:
        trainer: The trainer.
        key: ``"batch_size"`` or ``"precision"``.
        payload: JSON-able data.

    Returns:
        The path written, or None on other ranks or when writing failed.
    """
    if trainer.global_rank != 0:
        return None
    path = _loggers.output_dir(trainer) / ADAPTATIONS_FILENAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(data, dict):
            data = {}
        data[key] = jsonable(payload)
        path.write_text(json.dumps(data, indent=2) + "\n")
    except (OSError, ValueError) as err:
        import warnings

        warnings.warn(f"lightning_green: could not write {path}: {err}", stacklevel=2)
        return None
    _loggers.log_artifact(trainer, path)
    return path


# --------------------------------------------------------------------------- the shared callback base


class AdaptiveCallback(*_compat.CALLBACK_BASES):
    """What AdaptiveBatchSize and AdaptivePrecision share; each adds its policy and its setting.

    Subclasses set the class attributes, implement :meth:`summary_fields`, :meth:`setting` and
    :meth:`initial_setting`, and call :meth:`attach` from ``setup``, :meth:`begin_training` from
    ``on_train_start``, :meth:`resume_window` from ``on_train_batch_start`` and
    :meth:`optimizer_stepped` from ``on_train_batch_end``. A switch decided is kept with
    :meth:`defer` and applied, once training goes on, from :meth:`take_pending`; subclasses save
    :attr:`pending` with their state.

    Args:
        window_s: Seconds per measurement window; None: chosen from the energy source.
    """

    adapt_role: ClassVar[str] = ""
    """``"batch_size"`` or ``"precision"``: the key in ``adaptations.json``; the sibling finds it by it."""
    sibling_role: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    setting_label = ""
    """What the setting is called in messages."""
    tag_setting: ClassVar[str] = ""
    tag_switches: ClassVar[str] = ""
    state_version: ClassVar[int] = 1

    def __init__(self, window_s: float | None = None) -> None:
        super().__init__()
        self.window_s = check_window_s("window_s", window_s)
        self.history: list[dict[str, Any]] = []
        self._monitor: EnergyMonitor | None = None
        self._sibling: Any | None = None
        self._window = TrainingWindow()
        self._window_s_used: float | None = None
        self._active = False
        self._last_global_step = -1
        self.pending: dict[str, Any] | None = None
        """A decided switch not applied yet (``epoch``, ``step``, ``to``, ``reason``, ``details``)."""

    @property
    def state_key(self) -> str:
        """One callback of each kind per Trainer: the key does not depend on the arguments."""
        return f"lightning_green.{self.display_name}"

    # -- to implement --------------------------------------------------------------------------------
    def summary_fields(self) -> dict[str, Any]:
        """What goes into the end-of-run summary."""
        raise NotImplementedError

    def setting(self) -> Any:
        """The setting in use now (batch size or precision name)."""
        raise NotImplementedError

    def initial_setting(self) -> Any:
        """The setting the run started with."""
        raise NotImplementedError

    def chosen_setting(self) -> Any:
        """The setting the policy chose, probes aside (what the MLflow tag and the summary report).

        The target of the last applied switch that was not a probe, else the initial setting.
        Differs from :meth:`setting` only while a probe runs: a run that ends then trained its
        last steps at the probed setting, but did not choose it.
        """
        chosen = self.initial_setting()
        for entry in self.history:
            if entry.get("reason") != PROBE_REASON:
                chosen = entry["to"]
        return chosen

    def release(self) -> None:
        """Undo what the callback attached to the module or trainer (at teardown and on failure)."""

    # -- shared steps of the hooks -------------------------------------------------------------------
    def attach(self, trainer: Trainer) -> None:
        """Find the shared EnergyMonitor (adding one) and the sibling adaptive callback, once, at setup."""
        self._monitor = EnergyMonitor.for_trainer(trainer, requester=self)
        self._sibling = find_callback(trainer, self.sibling_role) if self.sibling_role else None

    def begin_training(self, trainer: Trainer) -> None:
        """Pick the window length from the energy source and start with a fresh window (collective)."""
        assert self._monitor is not None
        _, _, _, source = self._monitor.measure(trainer)
        self._window_s_used = self.window_s if self.window_s is not None else default_window_s(source)
        self._window = TrainingWindow()
        self._active = False
        self._last_global_step = trainer.global_step

    def resume_window(self, trainer: Trainer) -> None:
        """At a batch start: note the step we are at when (re)activated, and resume the window."""
        assert self._monitor is not None
        if not self._active:
            self._last_global_step = trainer.global_step
            self._active = True
        self._window.resume(trainer, self._monitor)

    def optimizer_stepped(self, trainer: Trainer) -> bool:
        """At a batch end: whether an optimizer step completed (False inside gradient accumulation)."""
        if trainer.global_step == self._last_global_step:
            return False
        self._last_global_step = trainer.global_step
        return True

    def pause_window(self, trainer: Trainer) -> None:
        """Stop counting (a collective only while running, which every rank agrees on)."""
        if self._monitor is not None:
            self._window.pause(trainer, self._monitor)

    def defer(self, trainer: Trainer, to: Any, reason: str, details: Mapping[str, Any]) -> None:
        """Keep a decided switch pending until training goes on (see :meth:`take_pending`).

        Args:
            trainer: The trainer (the decision's epoch and global step are kept with it).
            to: The new setting.
            reason: The decision's reason (its value).
            details: The decision's details.
        """
        self.pending = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "to": to,
            "reason": reason,
            "details": jsonable(details),
        }

    def pending_state(self) -> dict[str, Any] | None:
        """A copy of :attr:`pending` for the subclass's ``state_dict`` (key ``"pending"``)."""
        return dict(self.pending) if self.pending is not None else None

    def load_pending(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :attr:`pending` from a ``state_dict`` (absent in older states: none)."""
        pending = state_dict.get("pending")
        self.pending = dict(pending) if pending is not None else None

    def take_pending(self) -> dict[str, Any] | None:
        """The pending switch, now to be applied (None when there is none); it is no longer pending."""
        pending, self.pending = self.pending, None
        return pending

    def record(self, entry: dict[str, Any]) -> None:
        """Append an adaptation to the history (the most recent :data:`MAX_HISTORY` are kept)."""
        self.history.append(entry)
        del self.history[:-MAX_HISTORY]

    def pue(self) -> float:
        """The shared monitor's PUE (1.0 before setup): summary joules carry it like the summary totals."""
        return float(getattr(self._monitor, "pue", 1.0))

    def publish_state(self, trainer: Trainer) -> None:
        """Summary fields and MLflow tags reflecting the state now (cheap; called at each change)."""
        publish(
            trainer,
            self._monitor,
            self.summary_fields(),
            (self.tag_setting, self.chosen_setting()),
            (self.tag_switches, self.history),
        )

    def check_state_version(self, state_dict: Mapping[str, Any]) -> None:
        """Refuse a saved state of another version.

        Raises:
            ValueError: Naming the callback, the expected and the given version.
        """
        if state_dict.get("version") != self.state_version:
            raise ValueError(
                f"{self.display_name} state version must be {self.state_version}, "
                f"got {state_dict.get('version')!r}"
            )

    # -- hooks ---------------------------------------------------------------------------------------
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Validation is not training: pause the window."""
        if not trainer.sanity_checking:
            self.pause_window(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the switches into the summary, ``adaptations.json`` and the MLflow tags."""
        self.publish_state(trainer)
        fields = self.summary_fields()
        write_adaptations(trainer, self.adapt_role, fields)
        chosen, last = self.chosen_setting(), self.setting()
        probing = "" if chosen == last else f" (ended while probing {last}; trained at {last} last)"
        _compat.info(
            trainer,
            f"lightning_green: {self.setting_label} {self.initial_setting()} -> {chosen}{probing}; "
            f"switches: {switch_text(switches(self.history)) or 'none'}",
        )
        pending = self.pending
        if pending is not None:
            _compat.info(
                trainer,
                f"lightning_green: {self.setting_label} {self.setting()} -> {pending['to']} decided at "
                f"epoch {pending['epoch']} step {pending['step']} ({pending['reason']}) was not applied: "
                "training ended first (a resumed fit applies it)",
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Undo what was attached to the module (see :meth:`release`)."""
        if stage == "fit":
            self.release()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Undo what was attached to the module when the fit fails."""
        self.release()
