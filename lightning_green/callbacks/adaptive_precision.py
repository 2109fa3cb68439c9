"""AdaptivePrecision: train in the precision that measurement shows is cheapest and still tracks fp32.

Mixed precision is not cheaper everywhere: on an H100 ``bf16-mixed`` costs a fraction of the
joules per sample of ``32-true``, on a CPU without bf16 matrix units it costs more. The callback
assumes nothing: it measures joules per sample under each precision the hardware supports on
real training steps, keeps the cheapest whose training loss stays on the fp32 trajectory, and
rolls back when a precision misbehaves. The deciding is :class:`~lightning_green.policy.precision.
PrecisionPolicy`'s; this module only measures, swaps plugins, logs and saves state.

How it works in Lightning terms:

- The Trainer's precision plugin is swapped between optimizer steps
  (``trainer.strategy.precision_plugin = MixedPrecision(...)``). The strategy reads the plugin
  at call time for the autocast context (``train_step_context``), backward and the optimizer
  step, so the swap takes effect from the next step on. Weights stay in fp32 under every
  supported precision (mixed precision only autocasts), so nothing has to be converted.
- Measurement windows close at optimizer-step boundaries (``on_train_batch_end`` after the
  global step advanced, never inside a gradient-accumulation cycle) that every DDP rank reaches
  together: energy from the shared :class:`~lightning_green.callbacks.energy_monitor.EnergyMonitor`
  (a collective), losses averaged and samples summed over ranks, wall time from rank 0 - so the
  policy on every rank sees the same numbers and decides the same; each decision is checked for
  agreement across ranks. Validation and epoch-end work are excluded from windows. A window
  holds as many steps as take ``window_s`` (from the measured step time, at least the policy's
  4); the first one after a switch is exactly the policy's warm-up steps, which it discards.
- One GradScaler serves every visit to ``16-mixed``; overflows are counted by the scale going
  down. Under ``bf16-mixed`` (no scaler) a step with non-finite gradients is skipped (gradients
  set to None, so the optimizer leaves the weights alone) before the policy rolls back, so a
  failing probe cannot poison the fp32 weights. That check costs one norm pass over the
  gradients and a host sync per step, only while a non-baseline precision without scaler runs.
- With :class:`~lightning_green.callbacks.adaptive_batch_size.AdaptiveBatchSize` in the same
  Trainer the precision is probed first (see :attr:`AdaptivePrecision.busy`); the batch size
  holds still meanwhile.
- State (policy, current and baseline precision, GradScaler state, switch history) is saved in
  checkpoints; a resumed run swaps to the saved precision in ``on_fit_start``, before Lightning
  restores the precision plugin's own state.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from pytorch_lightning.utilities import rank_zero_info

from lightning_green.callbacks._adapt import (
    AdaptationUnsupportedError,
    TrainingWindow,
    agree_across_ranks,
    batch_size_of,
    check_strategy,
    check_window_s,
    default_window_s,
    jsonable,
    loss_of,
    publish,
    switch_text,
    switches,
    write_adaptations,
)
from lightning_green.callbacks.energy_monitor import EnergyMonitor
from lightning_green.policy.precision import (
    PRECISIONS,
    REFERENCE_PRECISION,
    PrecisionDecision,
    PrecisionPolicy,
    PrecisionReason,
)

TAG_PRECISION = "lightning_green.precision"
"""MLflow tag holding the precision in use (updated at every switch and at fit end)."""

TAG_PRECISION_SWITCHES = "lightning_green.precision_switches"
"""MLflow tag holding the switches so far as compact text (< 5000 characters)."""

PRECISION_BITS: dict[str, int] = {"32-true": 32, "bf16-mixed": 16, "16-mixed": 16}
"""``energy/precision`` as logged: the bits of the compute type (the name is in the tag and summary)."""

_STATE_VERSION = 1
_NOTABLE = {
    PrecisionReason.TOO_EXPENSIVE,
    PrecisionReason.LOSS_DEVIATION,
    PrecisionReason.COOLDOWN_OVER,
}


def hardware_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions this device can train in with a swappable plugin, in policy order.

    CPU: ``32-true`` and ``bf16-mixed`` (CPU autocast). CUDA: ``32-true``, ``bf16-mixed`` where
    the GPU has native bf16 (Ampere and newer), and ``16-mixed`` with a GradScaler.

    Args:
        device: The strategy's root device.

    Returns:
        Precision names, ``32-true`` first; empty for device types not supported.

    Example:
        >>> hardware_precisions(torch.device("cpu"))
        ('32-true', 'bf16-mixed')
    """
    if device.type == "cpu":
        return ("32-true", "bf16-mixed")
    if device.type == "cuda":
        try:
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch
            bf16 = torch.cuda.is_bf16_supported()
        return ("32-true", "bf16-mixed", "16-mixed") if bf16 else ("32-true", "16-mixed")
    return ()


def parse_precisions(precisions: str | None) -> tuple[str, ...] | None:
    """Parse the ``precisions`` argument: comma-separated names, or None for all the hardware supports.

    Raises:
        ValueError: For an unknown name or an empty list.

    Example:
        >>> parse_precisions("32-true, bf16-mixed")
        ('32-true', 'bf16-mixed')
    """
    if precisions is None:
        return None
    if not isinstance(precisions, str):
        raise ValueError(
            f"precisions must be None or a comma-separated string of {list(PRECISIONS)}, got {precisions!r}"
        )
    names = [p.strip() for p in precisions.split(",") if p.strip()]
    bad = [p for p in names if p not in PRECISIONS]
    if bad or not names:
        raise ValueError(
            f"precisions must be None (all the hardware supports) or a comma-separated list of "
            f"{list(PRECISIONS)}, got {precisions!r}"
        )
    return tuple(p for p in PRECISIONS if p in names)


class AdaptivePrecision(Callback):
    r"""Switch to the cheapest precision, by measured joules per sample, whose loss tracks fp32.

    Early in the run (after ``start_step`` optimizer steps) the callback probes each precision
    the hardware supports between windows of the Trainer's own precision (the baseline), keeps
    the cheapest that saves more than ``switch_margin`` and whose loss stays within
    ``loss_tolerance`` of the baseline's trend, and rolls back on a non-finite loss, a loss jump
    or repeated GradScaler overflows, banning the offender for ``cooldown_epochs``. On a CPU it
    ends on ``32-true`` (bf16 costs more there), on an H100 on ``bf16-mixed``.

    Logs ``energy/precision`` each epoch (32 or 16 - the bits of the compute type) to every
    logger, the MLflow tags ``lightning_green.precision`` and
    ``lightning_green.precision_switches``; each switch with its reason goes to the end-of-run
    summary and ``adaptations.json`` (also an MLflow artifact).

    Supported: one device or DDP on CPU or CUDA, automatic optimization, Trainer precision
    ``32-true``, ``bf16-mixed`` or ``16-mixed`` (the baseline). Anything else raises
    :class:`~lightning_green.callbacks._adapt.AdaptationUnsupportedError` at fit start.

    Args:
        precisions: Comma-separated precisions to consider (``"32-true,bf16-mixed"``), or None
            for all the hardware supports. The Trainer's precision is always the baseline.
        loss_tolerance: Relative excess of a precision's training loss over the baseline's trend
            that counts as harm (on top of a noise allowance). Default 0.05: working mixed
            precision stays within about 1 % of fp32, failing mixed precision drifts by several
            percent or diverges.
        switch_margin: Fraction of joules per sample a precision must save to be adopted.
            Default 0.1: window-to-window scatter of energy readings is a few percent.
        cooldown_epochs: Epochs a precision stays banned after a rollback or failed loss check.
            Default 2.
        max_overflows: GradScaler overflows within one window that trigger a rollback of
            ``16-mixed``. Default 3.
        window_s: Seconds of training per measurement window; None picks by energy source:
            1.0 s with NVML (its counter updates every few tens of ms), 0.25 s with RAPL or
            the CPU-time estimate (10 ms ticks).
        start_step: Optimizer steps before probing begins (first steps carry one-off costs and
            the steepest loss drop). Default 20.

    Raises:
        ValueError: For an argument out of range, naming it.

    Example:
        >>> cb = AdaptivePrecision(precisions="32-true,bf16-mixed", cooldown_epochs=3)
        >>> cb.precisions, cb.cooldown_epochs
        (('32-true', 'bf16-mixed'), 3)
    """

    adapt_role = "precision"

    def __init__(
        self,
        precisions: str | None = None,
        loss_tolerance: float = 0.05,
        switch_margin: float = 0.1,
        cooldown_epochs: int = 2,
        max_overflows: int = 3,
        window_s: float | None = None,
        start_step: int = 20,
    ) -> None:
        super().__init__()
        self.precisions = parse_precisions(precisions)
        self.window_s = check_window_s("window_s", window_s)
        self._policy_kwargs: dict[str, Any] = {
            "loss_tolerance": loss_tolerance,
            "switch_margin": switch_margin,
            "cooldown_epochs": cooldown_epochs,
            "max_overflows": max_overflows,
            "start_step": start_step,
        }
        PrecisionPolicy(PRECISIONS, min_window_s=0.0, **self._policy_kwargs)  # validates, naming the argument
        self.loss_tolerance = float(loss_tolerance)
        self.switch_margin = float(switch_margin)
        self.cooldown_epochs = int(cooldown_epochs)
        self.max_overflows = int(max_overflows)
        self.start_step = int(start_step)

        self.policy: PrecisionPolicy | None = None
        self.baseline: str | None = None
        self.current: str | None = None
        self.history: list[dict[str, Any]] = []
        self.probe_energy_j: dict[str, float] = {}
        self.probe_samples: dict[str, int] = {}
        self.skipped_steps = 0
        self._monitor: EnergyMonitor | None = None
        self._supported: tuple[str, ...] = ()
        self._device_type = "cpu"
        self._original_plugin: Precision | None = None
        self._scaler: Any = None
        self._pending_state: dict[str, Any] | None = None
        self._window = TrainingWindow()
        self._window_s_used: float | None = None
        self._active = False
        self._last_global_step = -1
        self._overflows = 0
        self._scale_before: float | None = None
        self._step_s: float | None = None
        self._first_plan_done = False

    @property
    def state_key(self) -> str:
        """One AdaptivePrecision per Trainer."""
        return "lightning_green.AdaptivePrecision"

    @property
    def busy(self) -> bool:
        """Whether precisions are being (or about to be) probed; AdaptiveBatchSize holds meanwhile.

        True from the start of the run until the first probe plan is over (when there is
        anything to probe), and during every later plan (after a cooling period).
        """
        policy = self.policy
        if policy is None:
            return False
        if policy.plan:
            return True
        candidates = [p for p in policy.supported if p != policy.current_precision]
        return bool(candidates) and not self._first_plan_done

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check what can be done (raising clearly when not) and attach the shared EnergyMonitor."""
        if stage != "fit":
            return
        check_strategy(trainer, "AdaptivePrecision")
        if not pl_module.automatic_optimization:
            raise AdaptationUnsupportedError(
                "AdaptivePrecision needs automatic optimization: with manual optimization the callback "
                "sees no loss to check and cannot keep a GradScaler consistent. Remove AdaptivePrecision "
                "or use automatic optimization."
            )
        plugin = trainer.strategy.precision_plugin
        name = getattr(plugin, "precision", None)
        if type(plugin) not in (Precision, MixedPrecision) or name not in PRECISIONS:
            raise AdaptationUnsupportedError(
                f"AdaptivePrecision can start from Trainer(precision=...) in {list(PRECISIONS)}; got "
                f"{name!r} ({type(plugin).__name__}). Precisions that cast the weights (64-true, "
                "16-true, bf16-true), transformer-engine and quantization plugins cannot be swapped "
                "between steps."
            )
        device = trainer.strategy.root_device
        supported = hardware_precisions(device)
        if not supported:
            raise AdaptationUnsupportedError(
                f"AdaptivePrecision supports CPU and CUDA devices; got {device.type!r}."
            )
        wanted = self.precisions if self.precisions is not None else supported
        missing = [p for p in wanted if p not in supported]
        if missing:
            raise AdaptationUnsupportedError(
                f"AdaptivePrecision(precisions={','.join(wanted)!r}): {missing} not supported on this "
                f"{device.type} device, which supports {list(supported)}."
            )
        self._device_type = device.type
        self._supported = tuple(p for p in PRECISIONS if p in wanted or p == name)
        self._original_plugin = plugin
        if self.baseline is None:
            self.baseline = name
        if self.current is None:
            self.current = name
        if isinstance(plugin, MixedPrecision) and plugin.scaler is not None:
            self._scaler = plugin.scaler
        self._monitor = EnergyMonitor.for_trainer(trainer, requester=self)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Apply a restored precision (and GradScaler state) before Lightning restores the plugin.

        Raises:
            AdaptationUnsupportedError: When the checkpoint's precisions are not available here.
        """
        hardware = hardware_precisions(trainer.strategy.root_device)
        foreign = [p for p in (self.baseline, self.current) if p is not None and p not in hardware]
        if foreign:
            raise AdaptationUnsupportedError(
                f"AdaptivePrecision resumed a run that trained in {foreign}, which this "
                f"{trainer.strategy.root_device.type} device does not support ({list(hardware)}). Resume on "
                "such a device, or without the checkpoint's AdaptivePrecision state."
            )
        self._supported = tuple(
            p for p in PRECISIONS if p in self._supported or p in (self.baseline, self.current)
        )
        state = self._pending_state
        if state is not None and state.get("scaler") is not None:
            self._get_scaler().load_state_dict(state["scaler"])
        if self.current is not None and self.current != trainer.strategy.precision_plugin.precision:
            self._swap(trainer, self.current)
            rank_zero_info(f"lightning_green: AdaptivePrecision resumed in {self.current}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the policy once the energy source is known (collective: every rank is here)."""
        assert self._monitor is not None
        _, _, _, source = self._monitor.measure(trainer)
        self._window_s_used = self.window_s if self.window_s is not None else default_window_s(source)
        assert self.baseline is not None and self.current is not None
        policy = PrecisionPolicy(
            self._supported,
            initial_precision=self.baseline,
            # The callback sizes each record to window_s from the measured step time, and each
            # record is one policy window: a duration floor in the policy would merge a record
            # that came out slightly short with the next one and double a probe's cost.
            min_window_s=0.0,
            **self._policy_kwargs,
        )
        if self._pending_state is not None and self._pending_state.get("policy") is not None:
            policy.load_state_dict(self._pending_state["policy"])
        elif self.policy is not None:  # a second fit with the same callback: carry on
            policy = self.policy
        self._pending_state = None
        self.policy = policy
        self._last_global_step = trainer.global_step
        self._window = TrainingWindow()
        self._window.target_steps = max(policy.window_steps, 1)
        self._publish(trainer)

    # -- the plugin ----------------------------------------------------------------------------------
    def _get_scaler(self) -> Any:
        if self._scaler is None:
            self._scaler = torch.amp.GradScaler(device=self._device_type)
        return self._scaler

    def _plugin_for(self, precision: str) -> Precision:
        original = self._original_plugin
        if original is not None and getattr(original, "precision", None) == precision:
            return original
        if precision == REFERENCE_PRECISION:
            return Precision()
        if precision == "16-mixed":
            return MixedPrecision("16-mixed", device=self._device_type, scaler=self._get_scaler())
        return MixedPrecision("bf16-mixed", device=self._device_type)

    def _swap(self, trainer: pl.Trainer, precision: str) -> None:
        trainer.strategy.precision_plugin = self._plugin_for(precision)
        self.current = precision
        self._scale_before = None

    # -- hooks ---------------------------------------------------------------------------------------
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Resume the measurement window."""
        if self.policy is None or self._monitor is None:
            return
        if not self._active:
            self._last_global_step = trainer.global_step
            self._active = True
        self._window.resume(trainer, self._monitor)
        if self.current == "16-mixed" and self._scaler is not None and self._scale_before is None:
            self._scale_before = float(self._scaler.get_scale())

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Under a non-baseline precision without GradScaler, skip steps with non-finite gradients."""
        if not self._active or self.current != "bf16-mixed" or self.current == self.baseline:
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        finite = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        if not finite:  # identical on every rank: gradients are all-reduced before this hook
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self.skipped_steps += 1

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count the batch; after an optimizer step, close a due window and apply the decision."""
        if not self._active or self.policy is None:
            return
        self._window.add_batch(batch_size_of(batch), loss_of(outputs))
        if trainer.global_step == self._last_global_step:
            return  # inside a gradient-accumulation cycle: never switch here
        self._last_global_step = trainer.global_step
        self._window.end_step()
        if self.current == "16-mixed" and self._scaler is not None:
            scale = float(self._scaler.get_scale())
            if self._scale_before is not None and scale < self._scale_before:
                self._overflows += 1
            self._scale_before = scale
        if self._window.due:
            self._close_window(trainer, pl_module)

    def _close_window(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        policy = self.policy
        assert policy is not None and self._monitor is not None and self.current is not None
        world = max(int(trainer.world_size), 1)
        record = self._window.close(trainer, self._monitor, extras=[float(self._overflows)])
        self._overflows = 0
        overflows = round(record.extras[0] / world)
        precision = self.current
        position = policy.plan_position
        if (
            position is not None
            and policy.plan[position].role == "probe"
            and precision == policy.plan[position].precision
        ):
            self.probe_energy_j[precision] = self.probe_energy_j.get(precision, 0.0) + record.energy_j
            self.probe_samples[precision] = self.probe_samples.get(precision, 0) + record.samples
        if record.samples >= 1 and record.steps >= 1:
            policy.record(
                precision,
                energy_j=record.energy_j,
                samples=record.samples,
                duration_s=record.duration_s,
                losses=record.losses,
                overflows=overflows,
                steps=record.steps,
            )
            self._step_s = record.duration_s / record.steps
        decision = policy.decide(trainer.current_epoch)
        # Every rank decided from the same numbers; check it (one tiny collective per window)
        # rather than train ranks in different precisions.
        agree_across_ranks(trainer, [PRECISIONS.index(decision.precision)], "the precision")
        if policy.step >= policy.start_step and not policy.plan:
            self._first_plan_done = True
        self._apply(trainer, decision)
        self._window.target_steps = self._next_target(decision.changed)

    def _next_target(self, switched: bool) -> int:
        policy = self.policy
        assert policy is not None
        if switched and policy.warmup_steps > 0:
            return policy.warmup_steps  # the policy discards exactly these steps
        steps = policy.window_steps
        if self._step_s and self._step_s > 0 and self._window_s_used:
            steps = max(steps, math.ceil(self._window_s_used / self._step_s))
        return steps

    def _apply(self, trainer: pl.Trainer, decision: PrecisionDecision) -> None:
        previous = self.current
        changed = decision.precision != previous
        notable = decision.reason in _NOTABLE or (
            decision.reason is PrecisionReason.KEEP and "outcomes" in decision.details
        )
        if not (changed or notable):
            return
        if changed:
            self._swap(trainer, decision.precision)
        entry = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "from": previous,
            "to": decision.precision,
            "reason": decision.reason.value,
            "details": jsonable(decision.details),
        }
        self.history.append(entry)
        del self.history[:-500]
        if changed:
            rank_zero_info(
                f"lightning_green: precision {previous} -> {decision.precision} at epoch {entry['epoch']} "
                f"step {entry['step']} ({decision.reason.value})"
            )
        self._publish(trainer)

    def _publish(self, trainer: pl.Trainer) -> None:
        """Summary fields and MLflow tags reflecting the state now (cheap; called at each change)."""
        publish(
            trainer,
            self._monitor,
            self.summary_fields(),
            (TAG_PRECISION, self.current),
            (TAG_PRECISION_SWITCHES, self.history),
        )

    def summary_fields(self) -> dict[str, Any]:
        """What goes into the end-of-run summary: the precision, switches, probing cost."""
        base_j = self.policy.j_per_sample().get(self.baseline or "") if self.policy is not None else None
        extra = None
        if base_j is not None:
            extra = sum(
                self.probe_energy_j[p] - self.probe_samples.get(p, 0) * base_j for p in self.probe_energy_j
            )
        return {
            "precision": self.current,
            "precision_initial": self.baseline,
            "precision_switches": switch_text(switches(self.history)),
            "precision_adaptations": jsonable(self.history),
            "precision_j_per_sample": jsonable(self.policy.j_per_sample()) if self.policy is not None else {},
            "precision_probe_j": sum(self.probe_energy_j.values()),
            "precision_probe_extra_j": extra,
            "precision_skipped_steps": self.skipped_steps,
        }

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validation is not training: pause the window."""
        if self._active and self._monitor is not None and not trainer.sanity_checking:
            self._window.pause(trainer, self._monitor)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log ``energy/precision`` and pause the window over the epoch-end work."""
        if self.current is not None:
            pl_module.log(
                "energy/precision",
                float(PRECISION_BITS[self.current]),
                on_step=False,
                on_epoch=True,
                logger=bool(trainer.loggers),
            )
        if self._monitor is not None:
            self._window.pause(trainer, self._monitor)  # a collective only when running: same on all ranks

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the switches into the summary, ``adaptations.json`` and the MLflow tags."""
        self._publish(trainer)
        fields = self.summary_fields()
        write_adaptations(trainer, "precision", fields)
        if trainer.global_rank == 0:
            rank_zero_info(
                f"lightning_green: precision {self.baseline} -> {self.current}; switches: "
                f"{fields['precision_switches'] or 'none'}"
            )

    # -- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Policy state, current and baseline precision, GradScaler state, history, probing cost."""
        policy_state = self.policy.state_dict() if self.policy is not None else None
        if policy_state is None and self._pending_state is not None:
            policy_state = self._pending_state.get("policy")
        return {
            "version": _STATE_VERSION,
            "policy": policy_state,
            "baseline": self.baseline,
            "current": self.current,
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "history": [dict(h) for h in self.history],
            "probe_energy_j": dict(self.probe_energy_j),
            "probe_samples": dict(self.probe_samples),
            "skipped_steps": self.skipped_steps,
            "first_plan_done": self._first_plan_done,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the precision is applied at fit start.

        Raises:
            ValueError: For a state of another version.
        """
        if state_dict.get("version") != _STATE_VERSION:
            raise ValueError(
                f"AdaptivePrecision state version must be {_STATE_VERSION}, got {state_dict.get('version')!r}"
            )
        self.baseline = state_dict["baseline"]
        self.current = state_dict["current"]
        self.history = [dict(h) for h in state_dict.get("history", [])]
        self.probe_energy_j = {str(k): float(v) for k, v in state_dict.get("probe_energy_j", {}).items()}
        self.probe_samples = {str(k): int(v) for k, v in state_dict.get("probe_samples", {}).items()}
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self._first_plan_done = bool(state_dict.get("first_plan_done", False))
        self._pending_state = dict(state_dict)
        if self.policy is not None and state_dict.get("policy") is not None:
            self.policy.load_state_dict(state_dict["policy"])
            self._pending_state.pop("policy")
