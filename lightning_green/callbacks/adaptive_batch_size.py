"""AdaptiveBatchSize: train at the batch size that reaches the target for the fewest joules.

:class:`~lightning_green.policy.batch_size.BatchSizePolicy` decides (a candidate trained in whole
epochs interleaved with the size in use, adopted only on a resolved saving, probing within 5 % of
the run's projected energy); this callback measures (training windows of the session; gradient
pairs for ``B_noise``), switches between epochs as Lightning's ``BatchSizeFinder`` does
(``attr_name`` on the model, its ``hparams`` and the datamodule, then the train dataloader
rebuilt), scales every learning rate, guards against out-of-memory on one device, logs and saves
state. A switch decided at an epoch end is applied at the next ``on_train_epoch_start``. Under
DDP every rank sums the same windows and decides the same, checked exactly at each decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from lightning_green import keys
from lightning_green.adaptations import Pending
from lightning_green.callbacks import _compat, _loggers
from lightning_green.callbacks._adapt import (
    AdaptationUnsupportedError,
    AdaptiveCallback,
    AdaptiveState,
    check_strategy,
)
from lightning_green.callbacks._compat import LightningModule, Trainer, lightning_attr
from lightning_green.checks import as_plain, check_bool, check_choice, check_fraction_below_1, check_int
from lightning_green.energy.units import J_PER_KWH
from lightning_green.json_safe import json_safe
from lightning_green.policy.batch_size import BatchSizePolicy, BatchSizeReason, scale_learning_rate
from lightning_green.policy.batch_size_model import batch_size_range
from lightning_green.policy.batch_size_trial import fraction_done, no_probe_message, probing_off_message
from lightning_green.state import to_state
from lightning_green.training.batch_size_limits import (
    check_bounds,
    could_be_partial_last,
    loader_ignored_message,
    loader_ignored_switch,
    loader_problem,
    switch_problem,
)
from lightning_green.training.check_progress import FitPosition
from lightning_green.training.gradient_pairs import GradientPairs, PairsSoFar
from lightning_green.training.learning_rates import first_lr, resolve_lr_rule, scale_learning_rates
from lightning_green.training.oom import OutOfMemoryGuard
from lightning_green.training.windows import OpenWindow, count_samples, steps_for_window

LR_RULES: tuple[str, ...] = ("auto", "linear", "sqrt", "none")
"""Values of ``lr_scaling``."""

NOISE_EVERY = 4
"""A gradient-noise pair starts every this many optimizer steps."""


@dataclass
class BatchSizeState(AdaptiveState):
    """What AdaptiveBatchSize saves in checkpoints (the keys of its ``state_dict``)."""

    initial_batch_size: int | None = None
    current_batch_size: int | None = None
    lr_rule: str | None = None
    step_s: dict[int, float] = field(default_factory=dict, metadata={"attr": "_step_s"})
    decided_at: tuple[int, int] | None = field(default=None, metadata={"attr": "_decided_at"})
    pending: Pending | None = None
    window: OpenWindow | None = field(default=None, metadata={"attr": "saved_window"})
    """The window a checkpoint caught open (its steps and energy so far): a resume continues it."""
    window_precision: str | None = field(default=None, metadata={"attr": "_window_precision"})
    """The precision the last window closed at: the window a resume continues is compared with it."""
    noise_pairs: PairsSoFar | None = field(default=None, metadata={"attr": "saved_pairs"})
    """The gradient pairs a checkpoint caught: sums not taken yet, and a pair's first gradients
    (tensors, added by ``on_save_checkpoint``), which a resume pairs with the next step's."""
    open_epoch: int | None = field(default=None, metadata={"attr": "_open_epoch"})
    """The epoch a checkpoint caught before its end (None: saved after it). Lightning resumes a
    checkpoint of an epoch's last batch at the next epoch: the caught epoch's end is made first."""


class AdaptiveBatchSize(AdaptiveCallback):
    r"""Try batch sizes on interleaved epochs; switch only on a saving measurement resolves.

    Candidates: the user's batch size times powers of two within ``[min_batch_size,
    max_batch_size]``, nearest first. A candidate trains whole epochs alternating with the size
    in use (``R C R C R``), each epoch split into ``probe_windows`` + 1 windows; it is adopted
    when the paired interval of joules per sample lies below ``1 - switch_margin`` and the
    model ``j_per_sample(B) · (1 + B / B_noise)`` agrees; otherwise the size stays. Probing
    takes at most 5 % of the run's projected energy (from ``max_epochs``/``max_steps``); a run
    too short for two candidate epochs, or without a planned length (the 1000 epochs Lightning puts
    in place of an unset ``max_epochs`` is none), does not probe and warns once. Logs ``energy/batch_size``
    per epoch, the MLflow tags ``lightning_green.batch_size[_switches]``, each decision with its
    figures in the summary and ``adaptations.json``, and ``batch_size_probe_share``.

    What a switch cannot work with is refused at fit start (``AdaptationUnsupportedError``, see
    :mod:`lightning_green.training.batch_size_limits`).

    Args:
        min_batch_size: Smallest per-device batch size to try; None: the user's // 8.
        max_batch_size: Largest per-device batch size to try; None: the user's × 8.
        lr_scaling: How the learning rate follows the batch size: ``"linear"``, ``"sqrt"``,
            ``"none"``, or ``"auto"`` (linear for SGD, sqrt for adaptive optimisers such as Adam).
        attr_name: The attribute the dataloader reads its batch size from.
        switch_margin: Fraction of energy a candidate must save beyond the measured noise.
        probe_windows: Compared windows per epoch (one more is measured, the first discarded).
        window_s: Longest window in seconds; None: 1.0 s with NVML, else 0.25 s.
        grow: Go on to further candidates after a trial; False tries one candidate at most.
        probe_fraction: Share of the run's energy probing may take: of its projection, and at
            every epoch end of what it has spent so far (0: never probe, said once as ``probing_off``).

    Raises:
        ValueError: For an argument out of range, naming it.

    Example:
        >>> cb = AdaptiveBatchSize(min_batch_size=16, max_batch_size=256, lr_scaling="sqrt")
        >>> cb.lr_scaling, cb.grow
        ('sqrt', True)
    """

    key = "batch_size"
    display_name = "AdaptiveBatchSize"
    setting_attrs = ("current_batch_size", "initial_batch_size")
    State = BatchSizeState

    def __init__(
        self,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        lr_scaling: Literal["auto", "linear", "sqrt", "none"] = "auto",
        attr_name: str = "batch_size",
        switch_margin: float = 0.1,
        probe_windows: int = 3,
        window_s: float | None = None,
        grow: bool = True,
        probe_fraction: float = 0.05,
    ) -> None:
        super().__init__(window_s)
        check_bounds(min_batch_size, max_batch_size)
        check_choice("lr_scaling", lr_scaling, LR_RULES)
        if not isinstance(attr_name, str) or not attr_name.isidentifier():
            raise ValueError(f"attr_name must be an attribute name such as 'batch_size', got {attr_name!r}")
        # Every argument kept as a plain Python value (NumPy and tensor scalars are accepted).
        self.min_batch_size = as_plain(min_batch_size)
        self.max_batch_size = as_plain(max_batch_size)
        self.lr_scaling = as_plain(lr_scaling)
        self.attr_name = as_plain(attr_name)
        self.setting_label = self.attr_name
        self.switch_margin = check_fraction_below_1("switch_margin", switch_margin)
        self.probe_windows = check_int("probe_windows", probe_windows, 1)
        self.grow = check_bool("grow", grow)
        self.probe_fraction = check_fraction_below_1("probe_fraction", probe_fraction)

        self.policy: BatchSizePolicy | None = None
        self.initial_batch_size: int | None = None
        self.current_batch_size: int | None = None
        self.lr_rule: str | None = None
        self._decided_at: tuple[int, int] | None = None  # (epoch, global_step) of the last epoch-end decision
        self._no_probe_said: str | None = None  # the fit (its measurement's id) told it does not probe
        self._step_s: dict[int, float] = {}
        self._window_precision: str | None = None  # the precision the last window closed at
        self._step_batch = 0
        self._epoch_steps: int | None = None
        self._pairs = GradientPairs(NOISE_EVERY)
        self._restored_pairs: PairsSoFar | None = None  # a checkpoint's, continued in on_train_start
        self._open_epoch: int | None = None  # a checkpoint's caught epoch, ended in on_train_start
        self._ended_epoch: int | None = None  # the last epoch whose on_train_epoch_end ran in this fit
        self._oom_epoch = False
        self._guard: OutOfMemoryGuard | None = None
        # (previous size, new size) of a switch or resume whose first batch is still to be checked
        self._unchecked_switch: tuple[int, int] | None = None
        self._lr_rescale: float | None = None  # for restored learning rates scaled by another rule

    @property
    def probing(self) -> bool:
        """Whether the epoch in progress (or the next) trains at a candidate on trial."""
        return self.policy is not None and self.policy.probing

    @property
    def b_noise(self) -> float | None:
        """The current gradient noise scale estimate, in samples per optimizer step (all ranks)."""
        return self.policy.noise_scale.b_noise if self.policy is not None else None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check what can be done (raising clearly when not), attach the monitor and the OOM guard."""
        if stage != "fit":
            return
        check_strategy(trainer, self.display_name)
        self.start_fit(trainer)
        has = lightning_attr("lightning_hasattr", pl_module, self.attr_name)
        value = self._size(pl_module) if has else None
        read_only = _compat.read_only_holder(pl_module, self.attr_name) if has else None
        from_module = _compat.train_dataloader_from_module(trainer)
        problem = loader_problem(self.attr_name, from_module, has, value, read_only)
        if problem is not None:
            raise AdaptationUnsupportedError(problem)
        self.attach(trainer)
        if trainer.world_size <= 1:
            self._install_oom_guard(pl_module)

    def _size(self, pl_module: LightningModule, new: int | None = None) -> Any:
        """The batch size attribute's value (Lightning's ``lightning_getattr``), or set it everywhere."""
        if new is not None:
            return lightning_attr("lightning_setattr", pl_module, self.attr_name, new)
        return lightning_attr("lightning_getattr", pl_module, self.attr_name)

    def _build_policy(self, trainer: Trainer, initial: int) -> BatchSizePolicy:
        low, high, factor = batch_size_range(initial, self.min_batch_size, self.max_batch_size)
        if not low <= initial <= high:
            raise AdaptationUnsupportedError(
                f"AdaptiveBatchSize(min_batch_size={self.min_batch_size!r}, "
                f"max_batch_size={self.max_batch_size!r}): the range must contain the batch size the "
                f"run starts with, {self.attr_name}={initial}."
            )
        return BatchSizePolicy(
            initial,
            low,
            high,
            switch_margin=self.switch_margin,
            min_windows=self.probe_windows,
            history_windows=max(16, self.probe_windows),
            max_factor=factor,
            grow=self.grow,
            probe_fraction=self.probe_fraction,
            global_batch_factor=max(int(trainer.world_size), 1)
            * max(int(trainer.accumulate_grad_batches), 1),
        )

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Build the policy (with a restored state), refuse what a switch would crash, apply the size.

        Runs after Lightning restored the callbacks' states and before the first dataloader is built.
        """
        if not pl_module.automatic_optimization and len(trainer.optimizers) > 1:
            raise AdaptationUnsupportedError(
                f"AdaptiveBatchSize works with manual optimization of one optimizer; this module has "
                f"{len(trainer.optimizers)}: the gradient-noise pairs of consecutive optimizer steps "
                "would compare different parameters, and one learning-rate rule would scale them all. "
                "Remove AdaptiveBatchSize or train with one optimizer."
            )
        self._unchecked_switch = None  # a switch applied in an earlier, interrupted fit is not checked here
        if self.initial_batch_size is None:  # a first fit, nothing restored
            self.initial_batch_size = self.current_batch_size = self._size(pl_module)
        assert self.initial_batch_size is not None and self.current_batch_size is not None
        self._check_restored_sizes(trainer)
        per_epoch_validation = trainer.check_val_every_n_epoch is not None and trainer.limit_val_batches > 0
        stepped = [c.scheduler for c in trainer.lr_scheduler_configs if c.interval == "step"]
        problem = switch_problem(
            _compat.val_check_interval(trainer),
            per_epoch_validation,
            stepped,
            self.policy.grid,
            self.initial_batch_size,
        )
        if problem is not None:
            raise AdaptationUnsupportedError(problem)
        before = self._size(pl_module)
        if before != self.current_batch_size:
            self._size(pl_module, self.current_batch_size)
            _compat.info(
                trainer,
                f"lightning_green: AdaptiveBatchSize resumed at {self.attr_name}={self.current_batch_size}",
            )
        if self.current_batch_size != self.initial_batch_size:
            # A run going on at a size it adopted (learning rates scaled for it): a train dataloader
            # built in setup() from the attribute's earlier value would ignore it, as after a switch.
            built_with = before if isinstance(before, int) and before != self.current_batch_size else None
            self._unchecked_switch = (built_with or self.initial_batch_size, self.current_batch_size)
        self._follow_lr_rule(trainer)
        if (
            not _compat.starts_new_run(trainer)
            and getattr(trainer, "ckpt_path", None) is None
            and self.current_batch_size != self.initial_batch_size
        ):
            # `fit` again on this Trainer: Lightning built the optimizers and schedulers afresh from
            # configure_optimizers, for the user's size (a checkpoint restores its scaled ones).
            factor = self._scale_learning_rates(trainer, self.initial_batch_size, self.current_batch_size)
            _compat.info(
                trainer,
                f"lightning_green: AdaptiveBatchSize continues at {self.attr_name}={self.current_batch_size}"
                f" (learning rates x{factor:.3g} for it)",
            )
        if stepped:
            _compat.warn(
                trainer,
                "AdaptiveBatchSize: an LR scheduler is stepped per optimizer step; the number of steps per "
                "epoch changes with the batch size, so a schedule sized in steps ends early or late.",
            )

    def _check_restored_sizes(self, trainer: Trainer) -> None:
        """Build the policy (with a restored state); refuse a resume at a size outside the range.

        A size the restored run trains at or adopted, or a switch to one it decided before the
        checkpoint, outside ``[min_batch_size, max_batch_size]`` is refused (its learning rates are
        scaled for it). A trial of a size outside the range that the run is not training at is
        dropped, with its switch to the candidate if one is pending: one warning names it.

        Raises:
            AdaptationUnsupportedError: For such a size, naming it and the range.
        """
        assert self.initial_batch_size is not None and self.current_batch_size is not None
        low, high, _ = batch_size_range(self.initial_batch_size, self.min_batch_size, self.max_batch_size)

        def refuse_outside(size: int | None, how: str) -> None:
            if size is not None and size != self.initial_batch_size and not low <= size <= high:
                raise AdaptationUnsupportedError(
                    f"AdaptiveBatchSize(min_batch_size={self.min_batch_size!r}, "
                    f"max_batch_size={self.max_batch_size!r}): the checkpoint's run {how} "
                    f"{self.attr_name}={size} (a size AdaptiveBatchSize adopted or tried; learning rates "
                    f"are scaled for the size trained at), outside this range [{low}, {high}]. Resume with "
                    f"a range that contains {size}, or start a new run from the checkpoint's weights "
                    "(LightningModule.load_from_checkpoint) to adapt within the new range."
                )

        refuse_outside(self.current_batch_size, "trains at")
        loading = self.policy is None and self._restored_policy is not None
        self.ensure_policy(lambda: self._build_policy(trainer, self.initial_batch_size))
        assert self.policy is not None
        dropped = self.policy.dropped_trial if loading else None
        pending = self.pending
        dropped_switch = dropped is not None and pending is not None and int(pending.to) == dropped
        if dropped_switch:
            self.pending = None  # the switch to the trial's candidate goes with the trial
        pending_size = None if self.pending is None else int(self.pending.to)
        refuse_outside(pending_size, "switches at its next epoch to")
        refuse_outside(self.policy.adopted_batch_size, "adopted (and goes back to after its trial)")
        if dropped is not None:
            switch = " and the switch to it decided for the next epoch" if dropped_switch else ""
            verb = "are" if dropped_switch else "is"
            _compat.warn(
                trainer,
                f"AdaptiveBatchSize(min_batch_size={self.min_batch_size!r}, "
                f"max_batch_size={self.max_batch_size!r}): the checkpoint's trial of {self.attr_name}="
                f"{dropped} is outside this range [{low}, {high}]: the trial{switch} {verb} dropped; the run "
                f"goes on at {self.attr_name}={self.current_batch_size}.",
            )

    def _follow_lr_rule(self, trainer: Trainer) -> None:
        """Use ``lr_scaling`` from this fit on, also where the restored run used another rule.

        The learning rates of a resumed run at a size other than the user's were scaled by the
        checkpoint's rule: they are rescaled after Lightning restores the optimizers (at train start)
        so that they are the user's rates scaled by this rule. One warning names both rules.
        """
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        rule = resolve_lr_rule(self.lr_scaling, optimizer)
        restored, self.lr_rule = self.lr_rule, rule
        self._lr_rescale = None
        if restored is None or restored == rule:
            return
        assert self.initial_batch_size is not None and self.current_batch_size is not None
        initial, size = self.initial_batch_size, self.current_batch_size
        before = scale_learning_rate(1.0, initial, size, restored)
        factor = scale_learning_rate(1.0, initial, size, rule) / before
        restoring = getattr(trainer, "ckpt_path", None) is not None  # else scaled afresh for the size below
        if restoring and factor != 1.0:
            self._lr_rescale = factor
        rescaled = f" (learning rates x{factor:.3g} at {self.attr_name}={size})" if factor != 1.0 else ""
        _compat.warn(
            trainer,
            f"AdaptiveBatchSize(lr_scaling={self.lr_scaling!r}): the checkpoint's run scaled learning "
            f"rates with {restored!r}; from here on they follow {rule!r}, from the rates for "
            f"{self.attr_name}={initial}{rescaled}.",
        )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Pick the window length from the energy source; go on from a checkpoint (collective).

        Learning rates a checkpoint restored, scaled by another rule, follow this fit's now. The
        window and the gradient pairs a checkpoint caught open go on, so the resumed fit closes
        its windows and counts its noise pairs as the uninterrupted one does. A checkpoint saved
        at an epoch's last batch, before the epoch's end, resumes at the next epoch, with neither
        the caught epoch's end nor the next one's start (Lightning calls neither): that end's
        decision is made here, and a switch it decides is applied before the first batch.
        """
        if self._lr_rescale is not None:
            scale_learning_rates(trainer.optimizers, trainer.lr_scheduler_configs, self._lr_rescale)
            self._lr_rescale = None
        self.begin_training(trainer)
        window, self._restored_window = self._restored_window, None
        pairs, self._restored_pairs = self._restored_pairs, None
        caught, self._open_epoch = self._open_epoch, None
        self._ended_epoch = None
        # A fit resumed inside an epoch gets no on_train_epoch_start for it.
        self._epoch_steps = _compat.fit_position(trainer).steps_per_epoch
        if window is not None:
            self._window.restore(window)  # its target steps too
        else:
            self._window_precision = None
            self._window.target_steps = self._target_steps()
        if pairs is not None:
            self._pairs.restore(pairs)
        self._hold_others_while_in_trial()  # a trial restored from a checkpoint
        if caught is not None and int(trainer.current_epoch) > caught:
            self._end_caught_epoch(trainer, pl_module, caught)
        self.publish_tags(trainer)

    def _end_caught_epoch(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> None:
        """End ``epoch``, which the checkpoint caught at its last batch, and start the one training now.

        As its ``on_train_epoch_end`` and the next ``on_train_epoch_start`` would have: the size
        logged straight to the loggers (rank 0, at the step Lightning logged the epoch's last
        batches at), the window closed, the decision made (at the epoch and step it was due) and
        a switch applied (the train dataloader rebuilt).
        """
        if self.policy is None or self._session is None or self.current_batch_size is None:
            return
        if trainer.global_rank == 0 and _loggers.any_logger(trainer):
            step = max(0, int(trainer.global_step) - 1)
            _loggers.log_metrics(trainer, {keys.BATCH_SIZE: float(self.current_batch_size)}, step, epoch)
        self._end_epoch(trainer, epoch)
        self.on_train_epoch_start(trainer, pl_module)

    def _install_oom_guard(self, pl_module: LightningModule) -> None:
        if self._guard is None or self._guard.module is not pl_module:
            self._guard = OutOfMemoryGuard(
                pl_module, lambda: self._oom_epoch, lambda: self._out_of_memory(pl_module)
            )

    def release(self) -> None:
        """Remove the out-of-memory guard from the module and drop the noise buffers."""
        if self._guard is not None:
            self._guard.remove()
            self._guard = None
        self._pairs.reset()

    def _out_of_memory(self, pl_module: LightningModule) -> None:
        if not self._oom_epoch:
            _compat.warn(
                pl_module.trainer,
                f"AdaptiveBatchSize: out of memory at {self.attr_name}={self.current_batch_size}; "
                "skipping the rest of the epoch and ruling this size and larger ones out.",
            )
        self._oom_epoch = True
        self._pairs.drop()

    def _held(self) -> bool:
        """Whether another setting (the precision) is being probed: the same on every rank."""
        return self._session is not None and self._session.probing_other_than(self.key)

    def _target_steps(self) -> int:
        """Steps per window: at most ``window_s``, and ``probe_windows`` + 1 windows per epoch."""
        steps = steps_for_window(self._window_s_used, self._step_s, self.current_batch_size, NOISE_EVERY)
        per_epoch = self._epoch_steps // (self.probe_windows + 1) if self._epoch_steps else steps
        return max(1, min(steps, per_epoch))

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Check that the loader followed a switch; resume the window unless the precision is being probed."""
        self._step_batch = count_samples(batch)
        if self._unchecked_switch is not None and self._step_batch > 0 and not self._maybe_last(trainer):
            self._check_loader_followed(trainer, pl_module)
        if self._session is None or not (self.policy is not None and self.policy.active) or self._oom_epoch:
            self._active = False
            return
        if self._held():
            self.pause_window(trainer)
            self._window.reset()
            self._pairs.reset()
            self._active = False
            return
        self.resume_window(trainer)

    def _hold_others_while_in_trial(self) -> None:
        """Other adaptations hold still while a trial runs: its epochs must differ by the size alone."""
        if self._session is not None and self.policy is not None:
            self._session.set_probing(self.key, self.policy.in_trial)

    def _maybe_last(self, trainer: Trainer) -> bool:
        """Whether the batch to check, after a resume inside an epoch, may be its last, partial one.

        Then the check waits for the next batch (the next epoch's first).
        """
        assert self._unchecked_switch is not None
        position = _compat.fit_position(trainer)
        new = self._unchecked_switch[1]
        return could_be_partial_last(self._step_batch, new, position.batches_done, position.batches_per_epoch)

    def _check_loader_followed(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """At the first batch after a switch or a resume at an adopted size: a loader ignoring it stops it.

        The attribute goes back to the size the loader yields, the learning rates to the rate for
        it (before any optimizer step at the other size), the policy stops and the history records
        the size training goes on at (the state's); one warning.
        """
        assert self._unchecked_switch is not None and self.policy is not None and self.lr_rule is not None
        previous, new = self._unchecked_switch
        self._unchecked_switch = None
        first = self._step_batch
        ignored = loader_ignored_switch(first, new, previous, _compat.train_loader_batches(trainer))
        _compat.agree_across_ranks(
            trainer, [float(ignored)], "whether the train dataloader follows the batch size"
        )
        if not ignored:
            return
        # The size the loader yields (the one it was built with): training goes on at it.
        lr_factor = scale_learning_rate(1.0, first, new, self.lr_rule)
        _compat.warn(
            trainer,
            loader_ignored_message(self.attr_name, first, new, first, trainer.current_epoch, lr_factor),
        )
        undo = self._scale_learning_rates(trainer, new, first)
        self._size(pl_module, first)
        self.current_batch_size = first
        self.policy.stop(first)
        self._hold_others_while_in_trial()  # no trial holds the precision now
        self.pending = None
        self._window.reset()
        self._pairs.reset()
        details = {"first_batch": first, "expected": new}
        entry = self.decided(trainer, first, BatchSizeReason.LOADER_IGNORED_SIZE.value, details)
        self._record(trainer, new, entry, undo)
        self.publish_tags(trainer)

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Gradient-noise pairs: every fourth step's gradients are kept and compared with the next step's."""
        if not self._active or self._step_batch != self.current_batch_size:
            self._pairs.drop()
        else:
            self._pairs.offer(trainer.global_step, optimizer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count the batch; after an optimizer step, close a due window."""
        if not self._active:
            return
        self._window.add_batch(self._step_batch, None)
        if not self.optimizer_stepped(trainer):
            return  # inside a gradient-accumulation cycle
        self._window.end_step(with_loss=False)
        if self._window.due:
            self._close_window(trainer)

    def _close_window(self, trainer: Trainer) -> None:
        policy, session = self.policy, self._session
        assert policy is not None and session is not None and self.current_batch_size is not None
        count, small, big = self._pairs.take()
        record = self._window.close({"noise_pairs": count, "noise_small": small, "noise_big": big})
        world = max(int(trainer.world_size), 1)
        pairs = record.extras["noise_pairs"] / world
        size = self.current_batch_size
        if record.steps >= 1 and record.duration_s > 0:
            self._step_s[size] = record.duration_s / record.steps
        precision = str(trainer.precision)
        changed = self._window_precision is not None and precision != self._window_precision
        self._window_precision = precision
        if changed:  # AdaptivePrecision switched (a rollback, say): earlier windows are not comparable
            policy.forget_measurements()
        if record.samples >= 1:
            # a short tail, a measurement fault inside the window, no energy measured at all, or a
            # window the precision changed in: its energy counts, its cost per sample is not compared
            whole = not record.partial and record.energy_j > 0 and not changed
            full = whole and 2 * record.steps >= self._window.target_steps
            policy.record_probe(size, record.energy_j, record.samples, record.duration_s, full=full)
        policy.record_noise(
            size, pairs, record.extras["noise_small"] / world, record.extras["noise_big"] / world
        )
        self._window.target_steps = self._target_steps()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log ``energy/batch_size``; close the epoch's last window and decide, once per (epoch, step)."""
        self._ended_epoch = int(trainer.current_epoch)
        if self.policy is None or self._session is None or self.current_batch_size is None:
            return
        size = float(self.current_batch_size)
        pl_module.log(
            keys.BATCH_SIZE, size, on_step=False, on_epoch=True, logger=bool(trainer.loggers), sync_dist=True
        )
        self._end_epoch(trainer, int(trainer.current_epoch))

    def _end_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Close ``epoch``'s last window and decide (collective), unless this (epoch, step) was decided."""
        policy = self.policy
        assert policy is not None and self._session is not None and self.current_batch_size is not None
        self.pause_window(trainer)
        self._pairs.drop()
        self._active = False
        key = (epoch, int(trainer.global_step))
        if key == self._decided_at:
            return  # this epoch end was decided already
        self._decided_at = key
        if self._oom_epoch:  # rank-local, but only ever set on one device (no guard under DDP)
            policy.record_oom(self.current_batch_size)
            self._window.reset()
            self._pairs.reset()
        elif policy.active and self._window.steps > 0:
            # Visits are whole epochs: the epoch's last window ends here (its energy counts; a
            # short one is not compared). Steps, not seconds: every rank makes the same call.
            self._close_window(trainer)
        self._oom_epoch = False
        if not policy.active and not policy.waiting_for_longer_plan:
            return
        position = _compat.fit_position(trainer)
        epochs = _epochs_done(position, epoch)
        # the user's plan, as the stopper sees it: Lightning's stand-in for an unset max_epochs is none
        done = fraction_done(epochs, int(trainer.global_step), position.planned_epochs, trainer.max_steps)
        run_j = self._session.total_kwh_now() * J_PER_KWH / self.pue()  # a collective: every rank is here
        decision = policy.decide(run_energy_j=run_j, epochs_done=epochs, fraction_done=done)
        self._hold_others_while_in_trial()
        if decision is None:
            return
        _compat.agree_across_ranks(trainer, [decision.batch_size], "the batch size")
        if decision.reason is BatchSizeReason.OUT_OF_MEMORY and not policy.candidates:
            raise RuntimeError(
                f"AdaptiveBatchSize: every candidate batch size ran out of memory (smallest failing: "
                f"{policy.oom_batch_size}); lower min_batch_size."
            )
        if decision.reason is BatchSizeReason.NO_PROBE_BUDGET:
            if self._no_probe_said == self._session.fit_id:
                return  # said once this fit (a plan estimated again at its end is no new plan)
            self._no_probe_said = self._session.fit_id
            _compat.warn(trainer, no_probe_message(decision.details, self.current_batch_size))
        elif decision.reason is BatchSizeReason.PROBING_OFF:  # the user's choice: no warning
            _compat.info(trainer, f"lightning_green: {probing_off_message(self.current_batch_size)}")
        entry = self.decided(trainer, decision.batch_size, decision.reason.value, decision.details)
        entry = replace(entry, epoch=epoch)  # the epoch ended: a caught one's, when resumed after it
        if decision.batch_size != self.current_batch_size:
            self.pending = entry  # applied at the next epoch's start
        else:  # nothing changes: the verdict is recorded now
            self._record(trainer, decision.batch_size, entry, 1.0, applied_epoch=epoch)
            self.publish_tags(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Apply a pending switch: this epoch trains at the new size (its dataloader rebuilt here)."""
        pending = self.take_pending()
        if pending is not None and self.current_batch_size not in (None, int(pending.to)):
            previous, new = self.current_batch_size, int(pending.to)
            lr_factor = self._scale_learning_rates(trainer, previous, new)
            self._size(pl_module, new)
            self.current_batch_size = new
            _compat.rebuild_train_dataloader(trainer)
            self._unchecked_switch = (previous, new)
            self._window.reset()
            self._pairs.reset()
            self._record(trainer, previous, pending, lr_factor)
            _compat.info(
                trainer,
                f"lightning_green: {self.attr_name} {previous} -> {new} from epoch {trainer.current_epoch} "
                f"(decided at the end of epoch {pending.epoch}: {pending.reason}; lr x{lr_factor:.3g})",
            )
            self.publish_tags(trainer)
        self._epoch_steps = _compat.fit_position(trainer).steps_per_epoch
        if self._window is not None:
            self._window.target_steps = self._target_steps()

    def _record(
        self,
        trainer: Trainer,
        previous: int,
        switch: Pending,
        lr_factor: float,
        applied_epoch: int | None = None,
    ) -> None:
        noise = switch.details.get("b_noise")
        applied = trainer.current_epoch if applied_epoch is None else applied_epoch
        extra = dict(lr_factor=lr_factor, lr=first_lr(trainer.optimizers), applied_epoch=applied)
        self.record(switch, previous, b_noise=json_safe(None if noise is None else float(noise)), **extra)

    def _scale_learning_rates(self, trainer: Trainer, old: int, new: int) -> float:
        assert self.lr_rule is not None, "the learning-rate rule is resolved at fit start"
        factor = scale_learning_rate(1.0, old, new, self.lr_rule)
        if factor != 1.0:
            scale_learning_rates(trainer.optimizers, trainer.lr_scheduler_configs, factor)
        return factor

    @property
    def saved_pairs(self) -> PairsSoFar | None:
        """Restored gradient pairs not continued yet (plain data: :meth:`on_save_checkpoint` adds tensors)."""
        return None if self._restored_pairs is None else replace(self._restored_pairs, first=None)

    @saved_pairs.setter
    def saved_pairs(self, pairs: PairsSoFar | None) -> None:
        self._restored_pairs = pairs  # continued in on_train_start

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the open window, the gradient pairs and whether the epoch has ended in the checkpoint.

        A collective while the session runs (every rank saves the checkpoint); the window is paused
        already (:meth:`AdaptiveCallback._before_checkpoint_write`). A state restored and not
        continued yet (a save before training starts) is kept as it was restored.
        """
        saved = checkpoint.get("callbacks", {}).get(self.state_key)
        if saved is None:
            return
        if self._restored_window is not None or self._restored_pairs is not None:
            first = None if self._restored_pairs is None else self._restored_pairs.first
            if first is not None and saved.get("noise_pairs") is not None:
                saved["noise_pairs"]["first"] = list(first)
            return
        if self._with_open_window(checkpoint) is None:
            return
        epoch = int(trainer.current_epoch)
        pairs = self._pairs.so_far()
        saved["noise_pairs"] = {**to_state(replace(pairs, first=None)), "first": pairs.first}
        saved["open_epoch"] = None if self._ended_epoch == epoch else epoch

    def energy_summary_fields(self) -> dict[str, Any]:
        """The batch size, switches and measurements (``batch_size_j_per_sample`` with the PUE)."""
        policy = self.policy
        measured = policy.measured() if policy is not None else {}
        probe_j = self.pue() * policy.probe_j if policy is not None else 0.0
        run_j = self._session.ledger.total_j if self._session is not None else 0.0
        return {
            **self.setting_fields(measured),
            keys.BATCH_SIZE_PROBE_J: probe_j,
            keys.BATCH_SIZE_PROBE_SHARE: probe_j / run_j if run_j > 0 else None,
            "batch_size_trials": {str(b): v for b, v in (policy.tried if policy is not None else {}).items()},
            "b_noise": json_safe(self.b_noise),
            "lr_scaling": self.lr_rule or self.lr_scaling,
        }


def _epochs_done(position: FitPosition, epoch: int) -> float:
    """Epochs trained when ``epoch`` (0-based) ends: fractional when the run ended inside it.

    A plan in ``max_steps`` that ends inside an epoch ends it at the last step: that epoch counts
    the fraction of its batches trained (:attr:`FitPosition.epoch_fraction`), not as a whole one,
    so the planned length projected from it is the plan's.

    Example:
        >>> inside = FitPosition(2, 120, 30, 45, 1, max_epochs=-1, max_steps=120, epoch_done=False)
        >>> round(_epochs_done(inside, 2), 4), _epochs_done(inside, 1)  # the epoch ended at its end
        (2.6667, 2.0)
    """
    if epoch == position.current_epoch and not position.epoch_done and position.batches_done > 0:
        return epoch + position.epoch_fraction
    return float(epoch + 1)
