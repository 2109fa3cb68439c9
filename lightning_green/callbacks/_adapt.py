"""What AdaptiveBatchSize and AdaptivePrecision share: the session, windows, switches, records.

Each measures on a :class:`~lightning_green.training.windows.TrainingWindow` of the Trainer's
session (named by its :attr:`AdaptiveCallback.key`), summed over ranks, so every rank decides
the same. A switch is decided where a window or an epoch ends but *applied* where training goes
on (AdaptivePrecision at the next ``on_train_batch_start``, AdaptiveBatchSize at the next
``on_train_epoch_start``): a switch decided at the run's last step stays :attr:`pending`, is
never reported as trained, and is saved with the state so a resumed fit applies it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lightning_green.adaptations import (
    ADAPTATIONS_FILENAME,
    MAX_HISTORY,
    FitAdaptations,
    Pending,
    chosen_setting,
    switch_text,
    switches,
)
from lightning_green.callbacks import _compat, _loggers
from lightning_green.callbacks._compat import LightningModule, Trainer
from lightning_green.callbacks.energy_monitor import EnergyMonitor, session_for
from lightning_green.checks import check_range
from lightning_green.energy.session import EnergySession
from lightning_green.json_safe import json_safe
from lightning_green.state import load_attributes, save_attributes, to_state
from lightning_green.training.windows import OpenWindow, TrainingWindow, default_window_s


class AdaptationUnsupportedError(*_compat.MISCONFIGURATION_BASES):
    """The Trainer is set up in a way an adaptive callback cannot work with; raised at fit start."""


def _no_sync() -> None:
    """Wait for no device (a window's ``sync`` once the fit is over)."""


def check_strategy(trainer: Trainer, who: str) -> None:
    """Refuse strategies other than one device and data parallel (``AdaptationUnsupportedError``).

    DeepSpeed fixes the micro-batch size and precision in its config, FSDP and model
    parallelism shard gradients, XLA has its own precision plugins.
    """
    if _compat.strategy_kind(trainer) is None:
        raise AdaptationUnsupportedError(
            f"{who} supports a single device or DDP (strategy='auto', 'ddp', 'ddp_spawn', ...); "
            f"got {type(trainer.strategy).__name__}. DeepSpeed, FSDP, model-parallel and XLA strategies "
            f"fix or shard what {who} changes. Remove {who} or use a supported strategy."
        )


_FIT_ADAPTATIONS: weakref.WeakKeyDictionary[Trainer, FitAdaptations] = weakref.WeakKeyDictionary()
"""Per Trainer: what its adaptive callbacks recorded in ``adaptations.json`` in its latest fit."""


def write_adaptations(
    trainer: Trainer, key: str, payload: Mapping[str, Any], fit: str | None, failed: bool = False
) -> Path | None:
    """Record ``payload`` under ``key`` in this fit's ``adaptations.json`` and write it; log it to MLflow.

    The file holds what the adaptive callbacks of this fit recorded (:class:`FitAdaptations`):
    the first write of a fit replaces a file another run (or an earlier fit) left in the folder;
    a failed fit is marked in it, a fit that ends is not. It goes into every logger's folder, one
    that cannot be written warned about and left out
    (:func:`~lightning_green.callbacks._loggers.write_in_output_dirs`), and to every MLflow run
    (from a temporary folder when no local one took it). Rank 0 only.

    Args:
        trainer: The fit's trainer.
        key: The callback's key (``"batch_size"``, ``"precision"``).
        payload: Its summary fields.
        fit: What names this fit (the session's ``fit_id``): a write of another fit starts anew.
        failed: The fit failed (written from ``on_exception``).

    Returns:
        The file in the first folder that took it (the one logged to MLflow); None on other ranks
        or when no folder did.
    """
    if trainer.global_rank != 0:
        return None
    record = _FIT_ADAPTATIONS.get(trainer)
    if record is None or record.fit != fit:
        record = _FIT_ADAPTATIONS[trainer] = FitAdaptations(fit)
    record.add(key, payload, failed)

    def write(folder: Path) -> tuple[Path]:
        return (record.write(folder / ADAPTATIONS_FILENAME),)

    written = _loggers.write_in_output_dirs(trainer, write, ADAPTATIONS_FILENAME)
    _loggers.log_written(trainer, written, write, ADAPTATIONS_FILENAME)
    return None if written is None else written[0]


@dataclass
class AdaptiveState:
    """What both adaptive callbacks save in checkpoints; each subclass adds its own fields."""

    version: int = field(default=1, metadata={"attr": "state_version"})
    policy: dict[str, Any] | None = field(default=None, metadata={"attr": "saved_policy"})
    history: list[dict[str, Any]] = field(default_factory=list)


class AdaptiveCallback(_compat.PicklesWithoutTheModule, _compat.WarnsWithoutState, *_compat.CALLBACK_BASES):
    """What AdaptiveBatchSize and AdaptivePrecision share; each adds its policy, setting and ``State``.

    Args:
        window_s: Seconds per measurement window; None: chosen from the energy source.
    """

    key: ClassVar[str] = ""
    """``"batch_size"`` or ``"precision"``: the window's name, the key in ``adaptations.json``."""
    display_name: ClassVar[str] = ""
    setting_label = ""
    state_version: ClassVar[int] = 1
    setting_attrs: ClassVar[tuple[str, str]] = ("", "")
    """The attributes holding the setting in use and the initial one."""
    State: ClassVar[type]

    def __init__(self, window_s: float | None = None) -> None:
        super().__init__()
        self.window_s = check_range(
            "window_s", window_s, 0.0, 600.0, low_open=True, high_open=False, what="seconds", allow_none=True
        )
        EnergyMonitor.check_environment()  # what the EnergyMonitor it may add at fit setup reads
        self.history: list[dict[str, Any]] = []
        self.pending: Pending | None = None
        self.policy: Any = None
        self._restored_policy: dict[str, Any] | None = None
        self._session: EnergySession | None = None
        self._window: TrainingWindow = None  # type: ignore[assignment] - made at setup, with the session
        self._window_s_used: float | None = None
        self._restored_window: OpenWindow | None = None  # to go on with at the next training start
        self._active = False
        self._last_global_step = -1
        self._in_fit = False  # set up for a fit in this process, until its teardown or failure

    @property
    def tag_setting(self) -> str:
        """MLflow tag of the setting chosen: ``lightning_green.<key>``."""
        return f"lightning_green.{self.key}"

    @property
    def tag_switches(self) -> str:
        """MLflow tag of the switches as compact text: ``lightning_green.<key>_switches``."""
        return f"lightning_green.{self.key}_switches"

    @property
    def state_key(self) -> str:
        """One callback of each kind per Trainer: the key does not depend on the arguments."""
        return f"lightning_green.{self.display_name}"

    def energy_summary_fields(self) -> dict[str, Any]:
        """What goes into the end-of-run summary."""
        raise NotImplementedError

    def setting(self) -> Any:
        """The setting in use now (batch size or precision name); None before fit."""
        return getattr(self, self.setting_attrs[0])

    def initial_setting(self) -> Any:
        """The setting the run started with (the user's batch size, the Trainer's precision)."""
        return getattr(self, self.setting_attrs[1])

    def fit_end_note(self) -> str:
        """What the end-of-fit line adds after the setting chosen (why nothing was probed, say), or ""."""
        return ""

    def release(self) -> None:
        """Undo what the callback attached to the module or trainer (at teardown and on failure)."""

    def chosen_setting(self) -> Any:
        """The setting the policy chose, probes aside (differs from :meth:`setting` only during a probe)."""
        return chosen_setting(self.history, self.initial_setting())

    def start_fit(self, trainer: Trainer) -> None:
        """At setup: forget an earlier run when this fit starts a new one (:func:`~._compat.starts_new_run`).

        A callback reused in a new Trainer then probes and decides afresh from the setting the new
        run starts with, as a new callback would; a resumed run takes the checkpoint's state after.
        From here until the fit's teardown or failure the callback is :attr:`in_fit`.
        """
        self._in_fit = True
        _compat.handle_failures_in_worker(trainer, self)  # ddp_spawn: Lightning calls on_exception elsewhere
        if _compat.starts_new_run(trainer):
            self._new_run()

    @property
    def in_fit(self) -> bool:
        """Whether a fit was set up with this callback in this process and has not ended or failed yet.

        Not in the launching process of ``ddp_spawn``/``ddp_fork`` workers: the fit is set up in the
        workers only.
        """
        return self._in_fit

    def _new_run(self) -> None:
        """The state of a run that has not started: every field of :attr:`State` at its default."""
        load_attributes(self, self.State, to_state(self.State(version=self.state_version)))

    def attach(self, trainer: Trainer) -> None:
        """Find (or add) the shared measurement session, at setup."""
        self._session = session_for(trainer, requester=self)
        self._window = TrainingWindow(self.key, self._session, lambda: _compat.synchronize(trainer))

    def begin_training(self, trainer: Trainer) -> None:
        """Pick the window length from the energy source and start with a fresh window (collective)."""
        assert self._session is not None
        reading, _ = self._session.read()
        self._window_s_used = self.window_s if self.window_s is not None else default_window_s(reading.source)
        self._window = TrainingWindow(self.key, self._session, lambda: _compat.synchronize(trainer))
        self._active = False
        self._last_global_step = trainer.global_step
        _compat.call_before_checkpoint_writes(trainer, self._before_checkpoint_write)

    def _before_checkpoint_write(self) -> None:
        """Writing a checkpoint is not training: pause the window (resumed at the next training batch).

        Called by ``trainer.save_checkpoint`` for every checkpoint, weights-only ones included (for
        which Lightning calls no callback's ``on_save_checkpoint``); a collective while the session runs,
        as every rank saves the checkpoint.
        """
        if self._session is not None and self._session.running:
            self._window.pause()

    @property
    def saved_window(self) -> OpenWindow | None:
        """A window to go on with at the next training start (saved as it is in checkpoints).

        A checkpoint's not continued yet, or one the callback set aside; the window open now is
        added by :meth:`_with_open_window`.

        (Its samples and losses are summed over ranks there, so the state is the same on every rank.)
        """
        return self._restored_window

    @saved_window.setter
    def saved_window(self, window: OpenWindow | None) -> None:
        self._restored_window = window  # continued in on_train_start

    def _with_open_window(self, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
        """This callback's entry of ``checkpoint`` with the window open now written in (collective).

        While the session runs (every rank saves the checkpoint) and no :attr:`saved_window` waits
        to be continued (that one is saved as it is). The window is paused already: writing a
        checkpoint is not training (:meth:`_before_checkpoint_write`), so a window closed after a
        resume measures what the uninterrupted one does.

        Returns:
            The entry written to, or ``None`` where nothing was written.
        """
        session = self._session
        saved = checkpoint.get("callbacks", {}).get(self.state_key)
        if session is None or not session.running or saved is None or self._restored_window is not None:
            return None
        saved["window"] = to_state(self._window.so_far())
        return saved

    def _let_go_of_trainer(self, trainer: Trainer) -> None:
        """After the fit, the window no longer waits on the trainer's device.

        It kept the trainer alive, and a callback holding a local function cannot be pickled. The
        trainer's ``save_checkpoint`` no longer pauses the window.
        """
        _compat.stop_calling_before_checkpoint_writes(trainer, self._before_checkpoint_write)
        if self._window is not None:
            self._window.sync = _no_sync

    def resume_window(self, trainer: Trainer) -> None:
        """At a batch start: note the step we are at when (re)activated, and resume the window."""
        assert self._session is not None
        if not self._active:
            self._last_global_step = trainer.global_step
            self._active = True
        self._window.resume()

    def optimizer_stepped(self, trainer: Trainer) -> bool:
        """At a batch end: whether an optimizer step completed (False inside gradient accumulation)."""
        if trainer.global_step == self._last_global_step:
            return False
        self._last_global_step = trainer.global_step
        return True

    def pause_window(self, trainer: Trainer) -> None:
        """Stop counting (a collective only while running, which every rank agrees on)."""
        if self._session is not None:
            self._window.pause()

    @staticmethod
    def decided(trainer: Trainer, to: int | str, reason: str, details: Mapping[str, Any]) -> Pending:
        """A switch decided now (at the trainer's epoch and global step)."""
        return Pending(int(trainer.current_epoch), int(trainer.global_step), to, reason, json_safe(details))

    def defer(self, trainer: Trainer, to: int | str, reason: str, details: Mapping[str, Any]) -> None:
        """Keep a decided switch pending until training goes on (see :meth:`take_pending`)."""
        self.pending = self.decided(trainer, to, reason, details)

    def take_pending(self) -> Pending | None:
        """The pending switch, now to be applied (None when there is none); it is no longer pending."""
        pending, self.pending = self.pending, None
        return pending

    def record(self, switch: Pending, previous: int | str, **extra: Any) -> None:
        """Append an adaptation from ``previous`` to the history (the last :data:`MAX_HISTORY` are kept)."""
        entry = {"epoch": switch.epoch, "step": switch.step, "from": previous, "to": switch.to}
        self.history.append({**entry, "reason": switch.reason, **extra, "details": json_safe(switch.details)})
        del self.history[:-MAX_HISTORY]

    def setting_fields(self, j_per_sample: Mapping[Any, float]) -> dict[str, Any]:
        """The summary fields both report, named after :attr:`key` (joules per sample with the PUE).

        The chosen, last and initial setting, the switches and the adaptation history.
        """
        k, pue = self.key, self.pue()
        return {
            k: self.chosen_setting(),
            f"{k}_last": self.setting(),
            f"{k}_initial": self.initial_setting(),
            f"{k}_switches": switch_text(switches(self.history)),
            f"{k}_adaptations": json_safe(self.history),
            f"{k}_j_per_sample": json_safe({s: j * pue for s, j in j_per_sample.items()}),
        }

    def _fit_id(self) -> str | None:
        """What names the fit under way (the shared session's ``fit_id``), None before setup."""
        return None if self._session is None else self._session.fit_id

    def pue(self) -> float:
        """The session's PUE (1.0 before setup): summary joules carry it like the summary totals."""
        return self._session.pue if self._session is not None else 1.0

    def publish_tags(self, trainer: Trainer) -> None:
        """MLflow tags with the chosen setting and the switches so far (rank 0; at each change)."""
        if trainer.global_rank == 0:
            text = switch_text(switches(self.history)) or "none"
            _loggers.set_tags(trainer, {self.tag_setting: self.chosen_setting(), self.tag_switches: text})

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Validation is not training: pause the window."""
        if not trainer.sanity_checking:
            self.pause_window(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the switches into ``adaptations.json`` and the MLflow tags, and say what was chosen."""
        self.publish_tags(trainer)
        write_adaptations(trainer, self.key, self.energy_summary_fields(), self._fit_id())
        chosen, last = self.chosen_setting(), self.setting()
        probing = "" if chosen == last else f" (ended while probing {last}; trained at {last} last)"
        _compat.info(
            trainer,
            f"lightning_green: {self.setting_label} {self.initial_setting()} -> {chosen}{probing}"
            f"{self.fit_end_note()}; "
            f"switches: {switch_text(switches(self.history)) or 'none'}",
        )
        pending = self.pending
        if pending is not None:
            _compat.info(
                trainer,
                f"lightning_green: {self.setting_label} {self.setting()} -> {pending.to} decided at epoch "
                f"{pending.epoch} step {pending.step} ({pending.reason}) was not applied: training ended "
                "first (a resumed fit applies it)",
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Undo what was attached to the module (see :meth:`release`)."""
        if stage == "fit":
            self._in_fit = False
            self.release()
            self._let_go_of_trainer(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Undo what was attached; write what was adapted until the failure, marked failed.

        Nothing when no fit was set up with the callback in this process (:attr:`in_fit`): the
        launching process of ``ddp_spawn`` workers, where the worker wrote the file already; asked
        for its folder or run there, a logger would start a new one.
        """
        if not self._in_fit:
            return
        self._in_fit = False
        self.release()
        self._let_go_of_trainer(trainer)
        write_adaptations(trainer, self.key, self.energy_summary_fields(), self._fit_id(), failed=True)

    def ensure_policy(self, build: Callable[[], Any]) -> None:
        """Build the policy (with the restored state) unless a previous fit of this callback left one."""
        if self.policy is None:
            self.policy = build()
            if self._restored_policy is not None:
                self.policy.load_state_dict(self._restored_policy)
        self._restored_policy = None

    @property
    def saved_policy(self) -> dict[str, Any] | None:
        """The policy's state to save: the live policy's, or the one restored and not rebuilt yet."""
        return self.policy.state_dict() if self.policy is not None else self._restored_policy

    @saved_policy.setter
    def saved_policy(self, state: dict[str, Any] | None) -> None:
        self.policy, self._restored_policy = None, state  # rebuilt at fit start around it

    def state_dict(self) -> dict[str, Any]:
        """The fields of :attr:`State`, as plain data."""
        return save_attributes(self, self.State)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the policy is rebuilt from it at fit start.

        Raises:
            ValueError: For a state of another version, naming the callback and both versions.
        """
        if state_dict.get("version") != self.state_version:
            raise ValueError(
                f"{self.display_name} state version must be {self.state_version}, "
                f"got {state_dict.get('version')!r}"
            )
        load_attributes(self, self.State, state_dict)

    def missing_state_note(self) -> str:
        """What restarts when a resumed checkpoint holds no state of this callback."""
        return f"its probing and history restart from the {self.setting_label} the resumed run starts with."
