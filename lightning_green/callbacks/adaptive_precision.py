"""AdaptivePrecision: train in the precision that measurement shows is cheapest and still tracks fp32.

Mixed precision is not cheaper everywhere (bf16 costs a fraction of fp32 on an H100, more on a
CPU without bf16 units): the callback measures joules per sample under each precision the
hardware supports on training windows, keeps the cheapest whose loss stays on the fp32 trajectory
and rolls back when one misbehaves; :class:`~lightning_green.policy.precision.PrecisionPolicy`
decides. The Trainer's precision plugin is swapped between optimizer steps (weights stay fp32
under every supported precision); a switch decided when a window closes applies at the next
``on_train_batch_start``. A probe changes training steps only: validation runs in the precision
the policy chose, and a fit that ends, fails or is interrupted mid-probe leaves the Trainer in it.
While it probes, the session says so and AdaptiveBatchSize holds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_green import keys
from lightning_green.adaptations import Pending
from lightning_green.callbacks import _compat
from lightning_green.callbacks._adapt import (
    AdaptationUnsupportedError,
    AdaptiveCallback,
    AdaptiveState,
    check_strategy,
)
from lightning_green.callbacks._compat import LightningModule, Trainer
from lightning_green.policy.precision import (
    PRECISIONS,
    REFERENCE_PRECISION,
    PrecisionDecision,
    PrecisionPolicy,
    PrecisionReason,
    no_budget_text,
    probe_cost,
    probing_off_text,
    too_short_text,
)
from lightning_green.training.planned import planned_steps
from lightning_green.training.precision import (
    PRECISION_BITS,
    gradient_overflows,
    hardware_precisions,
    parse_precisions,
    skip_non_finite_step,
)
from lightning_green.training.windows import OpenWindow, count_samples, loss_of

_NOTABLE = {
    PrecisionReason.TOO_EXPENSIVE,
    PrecisionReason.UNRESOLVED,
    PrecisionReason.TO_CONFIRM,
    PrecisionReason.NO_BUDGET,
    PrecisionReason.TOO_SHORT,
    PrecisionReason.PROBING_OFF,
    PrecisionReason.LOSS_DEVIATION,
    PrecisionReason.COOLDOWN_OVER,
}


@dataclass
class PrecisionState(AdaptiveState):
    """What AdaptivePrecision saves in checkpoints (the keys of its ``state_dict``)."""

    baseline: str | None = None
    current: str | None = None
    scaler: dict[str, Any] | None = field(default=None, metadata={"attr": "saved_scaler"})
    skipped_steps: int = 0
    first_plan_done: bool = field(default=False, metadata={"attr": "_first_plan_done"})
    pending: Pending | None = None
    window: OpenWindow | None = field(default=None, metadata={"attr": "saved_window"})
    """The window a checkpoint caught open (a probe's steps and energy so far): a resume continues it."""
    window_scale_start: float | None = field(default=None, metadata={"attr": "_window_scale_start"})
    """The GradScaler's scale when that window began (``16-mixed``), for its overflow count."""
    step_s: float | None = field(default=None, metadata={"attr": "_step_s"})
    """Seconds per optimizer step of the last window closed: the length of the next windows."""


class AdaptivePrecision(AdaptiveCallback):
    r"""Switch to the cheapest precision, by measured joules per sample, whose loss tracks fp32.

    After ``start_step`` optimizer steps it probes each precision the hardware supports in
    windows alternating with the Trainer's own (the baseline), within ``probe_budget`` of the
    run's projected energy and, at every step, of the energy spent so far; it adopts one only
    when resolved cheaper by over ``switch_margin`` (a paired confidence bound) with a loss
    within ``loss_tolerance`` of the baseline's trend, and rolls back on a non-finite loss, a
    loss jump or repeated GradScaler overflows (banned for ``cooldown_epochs``). Logs
    ``energy/precision`` (bits: 32 or 16) per epoch, the MLflow tags
    ``lightning_green.precision[_switches]``, and each switch in the summary and
    ``adaptations.json``. Needs one device or DDP on CPU or CUDA, automatic optimization and a
    Trainer precision of ``32-true``, ``bf16-mixed`` or ``16-mixed`` (refused at fit start).

    Args:
        precisions: Comma-separated precisions to consider, or None for all the hardware supports.
        loss_tolerance: Relative excess of the training loss over the baseline's trend that counts
            as harm (working mixed precision stays within about 1 %).
        switch_margin: Fraction of joules per sample a precision must save, beyond the measured
            noise (a paired confidence bound over interleaved windows), to be adopted.
        cooldown_epochs: Epochs a precision stays banned after a rollback or failed loss check.
        max_overflows: GradScaler overflows within one window that roll ``16-mixed`` back.
        window_s: Seconds of training per window; None: 1.0 s with NVML, else 0.25 s.
        start_step: Optimizer steps before probing begins.
        probe_budget: Share of the run's energy the probed steps may take: of its projection,
            and at every step of what it has spent so far (probing is paid as it goes; 0: never
            probe, said once as ``probing_off``).

    Raises:
        ValueError: For an argument out of range, naming it.

    Example:
        >>> cb = AdaptivePrecision(precisions="32-true,bf16-mixed", cooldown_epochs=3)
        >>> cb.precisions, cb.cooldown_epochs
        (('32-true', 'bf16-mixed'), 3)
    """

    key = "precision"
    display_name = "AdaptivePrecision"
    setting_attrs = ("current", "baseline")
    setting_label = "precision"
    State = PrecisionState

    def __init__(
        self,
        precisions: str | None = None,
        loss_tolerance: float = 0.05,
        switch_margin: float = 0.1,
        cooldown_epochs: int = 2,
        max_overflows: int = 3,
        window_s: float | None = None,
        start_step: int = 20,
        probe_budget: float = 0.05,
    ) -> None:
        super().__init__(window_s)
        self.precisions = parse_precisions(precisions)
        self.loss_tolerance = loss_tolerance
        self.switch_margin = switch_margin
        self.cooldown_epochs = cooldown_epochs
        self.max_overflows = max_overflows
        self.start_step, self.probe_budget = start_step, probe_budget
        checked = self._new_policy(PRECISIONS, REFERENCE_PRECISION)  # validates the arguments, naming them
        # The checked values are plain Python numbers (NumPy and tensor scalars are accepted).
        self.loss_tolerance, self.switch_margin = checked.loss_tolerance, checked.switch_margin
        self.cooldown_epochs, self.max_overflows = checked.cooldown_epochs, checked.max_overflows
        self.start_step, self.probe_budget = checked.start_step, checked.probe_budget

        self.policy: PrecisionPolicy | None = None
        self.baseline: str | None = None
        self.current: str | None = None
        self.skipped_steps = 0
        self._supported: tuple[str, ...] = ()
        self._trainer_precision: str | None = None  # the Trainer's precision at setup
        self._fallen_back_from: str | None = None  # a resumed precision not allowed, left at fit start
        self._device_type = "cpu"
        self._original_plugin: Any = None
        self._scaler: Any = None
        self._restored_scaler: dict[str, Any] | None = None
        self._scale_start: float | None = None  # GradScaler scale when the window began (16-mixed)
        self._step_s: float | None = None
        self._planned_steps: float | None = None
        self._first_plan_done = False
        self._window_scale_start: float | None = None
        self._probe_plugin: Any = None  # the candidate's plugin, set aside while a validation runs

    def _new_run(self) -> None:
        """As :meth:`AdaptiveCallback._new_run`, and no GradScaler or step time of the earlier run."""
        super()._new_run()
        self._scaler = None
        self._step_s = None
        self._planned_steps = None

    def _new_policy(self, supported: tuple[str, ...], initial: str) -> PrecisionPolicy:
        # The callback sizes each record to window_s from the measured step time, and each
        # record is one policy window: a duration floor in the policy would merge a record
        # that came out slightly short with the next one and double a probe's cost.
        return PrecisionPolicy(
            supported,
            initial_precision=initial,
            loss_tolerance=self.loss_tolerance,
            switch_margin=self.switch_margin,
            cooldown_epochs=self.cooldown_epochs,
            max_overflows=self.max_overflows,
            start_step=self.start_step,
            probe_budget=self.probe_budget,
            min_window_s=0.0,
        )

    @property
    def busy(self) -> bool:
        """Whether precisions are (about to be) probed: until the first plan is over, and in later plans."""
        policy = self.policy
        if policy is None:
            return False
        if policy.probing:  # cheap: read every batch
            return True
        return not self._first_plan_done and any(p != policy.current_precision for p in policy.supported)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check what can be done (raising clearly when not) and attach the shared EnergyMonitor."""
        if stage != "fit":
            return
        check_strategy(trainer, self.display_name)
        self.start_fit(trainer)
        if not pl_module.automatic_optimization:
            raise AdaptationUnsupportedError(
                "AdaptivePrecision needs automatic optimization: with manual optimization the callback "
                "sees no loss to check and cannot keep a GradScaler consistent. Remove AdaptivePrecision "
                "or use automatic optimization."
            )
        plugin = trainer.strategy.precision_plugin
        name = getattr(plugin, "precision", None)
        if not _compat.is_swappable_precision_plugin(plugin) or name not in PRECISIONS:
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
        self._trainer_precision = name
        self._original_plugin = plugin
        if self.baseline is None:
            self.baseline = name
        if self.current is None:
            self.current = name
        if _compat.mixed_precision_scaler(plugin) is not None:
            self._scaler = _compat.mixed_precision_scaler(plugin)
        self.attach(trainer)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Build the policy (with a restored state), apply the precision and GradScaler state.

        Both before Lightning restores the plugin's. A resumed run trains only in the precisions
        this fit allows (``precisions`` and the Trainer's): see :meth:`_keep_allowed`.

        Raises:
            AdaptationUnsupportedError: For precisions of the checkpoint this device lacks.
        """
        hardware = hardware_precisions(trainer.strategy.root_device)
        pending = self.pending.to if self.pending is not None else None
        foreign = [p for p in (self.baseline, self.current, pending) if p is not None and p not in hardware]
        if foreign:
            raise AdaptationUnsupportedError(
                f"AdaptivePrecision resumed a run that trained in (or was switching to) {foreign}, which "
                f"this {trainer.strategy.root_device.type} device does not support ({list(hardware)}). "
                "Resume on such a device, or without the checkpoint's AdaptivePrecision state."
            )
        if self.policy is None:  # a first fit, or a resumed one: not a fit again of this callback
            self._keep_allowed(trainer)
        if self._restored_scaler is not None:
            self._get_scaler().load_state_dict(self._restored_scaler)
            self._restored_scaler = None
        if self.current is not None and self.current != trainer.strategy.precision_plugin.precision:
            self._swap(trainer, self.current)
            _compat.info(trainer, f"lightning_green: AdaptivePrecision resumed in {self.current}")

    def _keep_allowed(self, trainer: Trainer) -> None:
        """Build the policy around the restored state, keeping only the precisions this fit allows.

        A resumed run whose precision is no longer allowed goes on in the one it chose where still
        allowed, else in the Trainer's (a ``not_allowed`` record); a pending switch, candidates or a
        probe of precisions no longer allowed are dropped (the policy's
        :meth:`~lightning_green.policy.precision.PrecisionPolicy.load_state_dict`). One warning
        names what was dropped and the precision the run goes on in.
        """
        # As the policy's: the precisions argument (or the hardware's), the Trainer's and fp32, the reference.
        allowed = tuple(p for p in PRECISIONS if p in self._supported or p == REFERENCE_PRECISION)
        assert self.current is not None and self._trainer_precision is not None
        self._fallen_back_from = None
        chosen = self.chosen_setting()
        fallback = chosen if chosen in allowed else self._trainer_precision
        restored = self._restored_policy is not None
        initial = fallback if restored or self.current not in allowed else self.current
        self.ensure_policy(lambda: self._new_policy(self._supported, initial))
        policy = self.policy
        assert policy is not None
        decided, previous, pending = policy.current_precision, self.current, self.pending
        dropped = list(policy.dropped_candidates)
        if pending is not None and str(pending.to) != decided:  # its target (or its probe) is not allowed
            self.pending = None
            if pending.to not in allowed:
                dropped.append(str(pending.to))
        if self.pending is not None and previous not in allowed:  # the switch decided goes on from here
            applied = self.take_pending()
            assert applied is not None
            self.current = str(applied.to)
            self.record(applied, previous)
        elif self.pending is None and decided != previous:
            self._fallen_back_from = previous  # recorded at train start, at the checkpoint's step
            self.current = decided
        if self.current != previous and self._restored_window is not None:  # its steps are not comparable
            self._restored_window = dataclasses.replace(self._restored_window, partial=True)
        told = [f"the checkpoint's run trains in {previous}: it goes on in {self.current}"]
        told = told if self.current != previous else []
        lost = [p for p in PRECISIONS if p in dropped and p != previous]  # in PRECISIONS order, once
        if lost:
            told.append(f"{lost} dropped (not probed, not switched to)")
        if told:
            wanted = ",".join(self.precisions) if self.precisions is not None else None
            _compat.warn(
                trainer,
                f"AdaptivePrecision(precisions={wanted!r}) resumed allowing {list(allowed)} (with the "
                f"Trainer's precision {self._trainer_precision}): {'; '.join(told)}.",
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """After a fit that ended while probing: leave the Trainer in the precision the policy chose.

        ``trainer.validate()``/``test()`` after the fit then evaluate in it, not in the candidate
        the last steps were probing; the callback keeps its own state (:attr:`current`), so a
        further ``fit`` of the run goes on from where this one stopped.
        """
        if stage == "fit":
            self._leave_in_chosen(trainer)
        super().teardown(trainer, pl_module, stage)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """A fit that failed or was interrupted mid-probe is left in the chosen precision too.

        Lightning calls no ``teardown`` when a fit raises (or is interrupted), so this leaves the
        Trainer as :meth:`teardown` does, then writes what was adapted, marked failed.
        """
        if self.in_fit and _compat.is_fitting(trainer):
            self._leave_in_chosen(trainer)
        super().on_exception(trainer, pl_module, exception)

    def _leave_in_chosen(self, trainer: Trainer) -> None:
        """Put the policy's chosen precision in the Trainer where it holds a probed candidate's plugin."""
        self._probe_plugin = None  # a validation interrupted in the chosen precision stays in it
        if self.current is None:
            return
        chosen = self.chosen_setting()
        if chosen != self.current and trainer.strategy.precision_plugin.precision == self.current:
            trainer.strategy.precision_plugin = self._plugin_for(trainer, chosen)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start measuring once the energy source is known (collective); the policy is built at fit start.

        The window a checkpoint caught open, or the one the last fit's training ended in (``fit``
        called again on the same Trainer), goes on: the policy counts every step the Trainer
        trained, so its step is the Trainer's global step and a probe starts only where the plan
        leaves room for it.
        """
        self.begin_training(trainer)
        assert self.baseline is not None and self.current is not None
        self.ensure_policy(lambda: self._new_policy(self._supported, self.current))
        self._window.target_steps = max(self.policy.window_steps, 1)
        self._planned_steps = planned_steps(trainer, _compat.fit_position(trainer))
        self._scale_start = self._read_scale()
        if self._restored_window is not None:  # the window the checkpoint caught open goes on
            self._window.restore(self._restored_window)
            if self._window_scale_start is not None and self._scale_start is not None:
                self._scale_start = self._window_scale_start
        self._restored_window, self._window_scale_start = None, None
        if self._fallen_back_from is not None:
            details = {"allowed": list(self.policy.supported), "trained_in": self._fallen_back_from}
            entry = self.decided(trainer, self.current, PrecisionReason.NOT_ALLOWED.value, details)
            self.record(entry, self._fallen_back_from)
            self._fallen_back_from = None
        self._session.set_probing(self.key, self.busy)
        self.publish_tags(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep the window training ended in, whole (collective): a further ``fit`` of the run continues it.

        It is also what a checkpoint saved after the fit holds, so a run resumed from that
        checkpoint continues it too (see :attr:`saved_window`).
        """
        session = self._session
        if self.policy is None or session is None or not session.running or self._restored_window is not None:
            return
        self.pause_window(trainer)
        self._restored_window, self._window_scale_start = self._window.so_far(), self._scale_start

    def _get_scaler(self) -> Any:
        if self._scaler is None:
            self._scaler = torch.amp.GradScaler(device=self._device_type)
        return self._scaler

    def _read_scale(self) -> float | None:
        """The GradScaler's scale under ``16-mixed`` (a device sync: window boundaries only), else None."""
        if self.current != "16-mixed" or self._scaler is None:
            return None
        return float(self._scaler.get_scale())

    def _plugin_for(self, trainer: Trainer, precision: str) -> Any:
        original = self._original_plugin
        if original is not None and getattr(original, "precision", None) == precision:
            return original
        scaler = self._get_scaler() if precision == "16-mixed" else None
        return _compat.precision_plugin(trainer, precision, self._device_type, scaler)

    def _swap(self, trainer: Trainer, precision: str) -> None:
        trainer.strategy.precision_plugin = self._plugin_for(trainer, precision)
        self.current = precision
        self._scale_start = self._read_scale()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Pause the window and validate in the chosen precision: a probe changes training steps only.

        Inside a probe window (a mid-epoch validation, or a window spanning the epoch end) the
        Trainer holds the candidate's plugin, which validation would use too: a candidate that
        fails numerically would log a non-finite metric that stops the run, and a metric compared
        across epochs would change with the probing. The candidate's plugin is set aside until
        :meth:`on_validation_end` (the sanity check of a fit resumed mid-probe included).
        """
        super().on_validation_start(trainer, pl_module)
        if self.current is None or self._probe_plugin is not None or not _compat.is_fitting(trainer):
            return
        chosen = self.chosen_setting()
        plugin = trainer.strategy.precision_plugin
        if chosen is not None and plugin.precision != chosen:
            self._probe_plugin = plugin
            trainer.strategy.precision_plugin = self._plugin_for(trainer, chosen)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Give the probe window back its candidate's plugin, set aside while validating."""
        if self._probe_plugin is not None:
            trainer.strategy.precision_plugin, self._probe_plugin = self._probe_plugin, None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Apply a pending switch (this batch trains in the new precision); resume the window."""
        if self.policy is not None and self._session is not None:
            if self.pending is not None:
                self._switch(trainer)
            self.resume_window(trainer)

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Under a non-baseline precision without GradScaler, skip steps with non-finite gradients."""
        if not self._active or self.current != "bf16-mixed" or self.current == self.baseline:
            return
        if skip_non_finite_step(optimizer):  # the same on every rank: gradients are all-reduced by now
            self.skipped_steps += 1

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count the batch; after an optimizer step, close a due window and apply the decision."""
        if not self._active or self.policy is None:
            return
        self._window.add_batch(count_samples(batch), loss_of(outputs))
        if not self.optimizer_stepped(trainer):
            return  # inside a gradient-accumulation cycle: never switch here
        self._window.end_step()
        if self._window.due:
            self._close_window(trainer)

    def _overflows_since_window_start(self) -> int:
        """GradScaler overflows in the window now closing, from its scale at both ends (one sync)."""
        start, end = self._scale_start, self._read_scale()
        self._scale_start = end
        return gradient_overflows(self._scaler, start, end)

    def _close_window(self, trainer: Trainer) -> None:
        policy = self.policy
        session = self._session
        assert policy is not None and session is not None and self.current is not None
        world = max(int(trainer.world_size), 1)
        overflows_local = self._overflows_since_window_start()
        record = self._window.close({"overflows": float(overflows_local)})
        overflows = round(record.extras["overflows"] / world)
        if record.samples >= 1 and record.steps >= 1:
            policy.record(
                self.current,
                energy_j=record.energy_j,
                samples=record.samples,
                duration_s=record.duration_s,
                losses=record.losses,
                overflows=overflows,
                steps=record.steps,
                estimated="estimate" in record.source.split("+"),
                partial=record.partial,
            )
            self._step_s = record.duration_s / record.steps
        # While a batch-size trial runs, no precision probe starts: its epochs must compare like with like.
        held = session.probing_other_than(self.key)
        decision = policy.decide(trainer.current_epoch, self._planned_steps, hold=held)
        _compat.agree_across_ranks(trainer, [PRECISIONS.index(decision.precision)], "the precision")
        if policy.step >= policy.start_step and not policy.probing:
            self._first_plan_done = True
        session.set_probing(self.key, self.busy)
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

    def _apply(self, trainer: Trainer, decision: PrecisionDecision) -> None:
        """Keep a switch pending until the next step starts; record a notable keep right away."""
        if decision.precision != self.current:
            self.defer(trainer, decision.precision, decision.reason.value, decision.details)
            return
        if decision.reason in _NOTABLE or (
            decision.reason is PrecisionReason.KEEP and "outcomes" in decision.details
        ):
            keep = self.decided(trainer, decision.precision, decision.reason.value, decision.details)
            self.record(keep, self.current)
            self.publish_tags(trainer)
            if decision.reason is PrecisionReason.NO_BUDGET:  # the policy says so once
                _compat.info(
                    trainer, f"lightning_green: AdaptivePrecision does not probe: {no_budget_text(decision)}"
                )
            elif decision.reason is PrecisionReason.TOO_SHORT:  # the policy says so once per plan
                _compat.info(
                    trainer, f"lightning_green: AdaptivePrecision does not probe: {too_short_text(decision)}"
                )
            elif decision.reason is PrecisionReason.PROBING_OFF:  # the policy says so once
                _compat.info(
                    trainer,
                    f"lightning_green: AdaptivePrecision does not probe: {probing_off_text(decision)}",
                )

    def _switch(self, trainer: Trainer) -> None:
        """Apply the pending switch, recorded at the step it was decided after."""
        pending = self.take_pending()
        assert pending is not None
        previous, new = self.current, str(pending.to)
        if new == previous:
            return
        self._swap(trainer, new)
        self.record(pending, previous)
        _compat.info(
            trainer,
            f"lightning_green: precision {previous} -> {new} at epoch {pending.epoch} "
            f"step {pending.step} ({pending.reason})",
        )
        self.publish_tags(trainer)

    def fit_end_note(self) -> str:
        """Candidates the planned run ended too soon to probe (a longer plan probes them), else ""."""
        waiting = self.policy.too_short_for_probing if self.policy is not None else ()
        if not waiting:
            return ""
        return (
            f" (not probed: {', '.join(waiting)}; the planned run ended before two windows of each: "
            "a fit continued to a longer plan probes them)"
        )

    def energy_summary_fields(self) -> dict[str, Any]:
        """The precision, switches and probing cost (joules with the PUE, like the summary's totals).

        ``precision_probe_j``: the energy of the steps trained at a candidate while probing;
        ``precision_probe_extra_j``: what they cost beyond the same samples at the baseline;
        ``precision_probe_share``: ``precision_probe_j`` over the run's energy so far.
        """
        pue = self.pue()
        policy = self.policy
        j_per_sample = policy.j_per_sample() if policy is not None else {}
        run_j = self._session.ledger.total_j if self._session is not None else 0.0
        return {
            **self.setting_fields(j_per_sample),
            **probe_cost(policy, j_per_sample.get(self.baseline or ""), run_j / pue, pue),
            "precision_skipped_steps": self.skipped_steps,
        }

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log ``energy/precision`` (the chosen precision) and pause the window over the epoch-end work.

        An epoch ending inside a probe logs the precision the policy is on, as the tag
        ``lightning_green.precision`` does, not the candidate its last steps tried.
        """
        chosen = self.chosen_setting()
        if self.current is not None and chosen in PRECISION_BITS:
            bits = float(PRECISION_BITS[chosen])
            pl_module.log(
                keys.PRECISION,
                bits,
                on_step=False,
                on_epoch=True,
                logger=bool(trainer.loggers),
                sync_dist=True,
            )
        self.pause_window(trainer)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the window whole in the checkpoint, with the GradScaler's scale it began at.

        Its energy so far and all ranks' samples and losses (:meth:`AdaptiveCallback._with_open_window`).
        """
        saved = self._with_open_window(checkpoint)
        if saved is not None:
            saved["window_scale_start"] = self._scale_start

    @property
    def saved_scaler(self) -> dict[str, Any] | None:
        """The GradScaler's state to save: the live scaler's, or the one restored and not applied yet."""
        return self._scaler.state_dict() if self._scaler is not None else self._restored_scaler

    @saved_scaler.setter
    def saved_scaler(self, state: dict[str, Any] | None) -> None:
        self._restored_scaler = state  # applied in on_fit_start
