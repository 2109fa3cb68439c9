"""The one module of lightning_green that imports Lightning: both namespaces and its internals.

Lightning ships the same code twice, ``pytorch_lightning`` and ``lightning.pytorch`` (``import
lightning as L``); an object of one is no instance of the other's classes. The public callbacks
inherit from ``Callback`` (``EarlyStopping``) of *every* installed namespace
(:data:`CALLBACK_BASES`, :data:`EARLY_STOPPING_BASES`), so either Trainer and either
LightningCLI accepts them. What depends on the trainer's namespace (enums, precision plugins,
``is_overridden``, ``lightning_getattr``, message loggers) is resolved per trainer with
:func:`namespace_of`; isinstance checks accept every namespace's classes. The fit loop's private
attributes, the DDP collectives and the device sync are behind the small functions here. On import
it wraps, once, each namespace's ``_parse_loop_limits`` (calling it unchanged) to record on the
Trainer whether ``max_epochs`` is the user's or the 1000 Lightning puts in place of an unset one
(:func:`record_max_epochs_origin`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from lightning_green.energy.session import Fields, Reduce, local_reduce
from lightning_green.training.check_progress import FitPosition

if TYPE_CHECKING:  # for annotations only: every namespace's Trainer and LightningModule are accepted
    from pytorch_lightning import LightningModule, Trainer
else:
    Trainer = LightningModule = Any


@dataclass(frozen=True)
class Namespace:
    """One installed namespace: ``name`` (``pytorch_lightning``, ``lightning.pytorch``) and its ``fabric``."""

    name: str
    fabric: str

    def attr(self, module: str, name: str) -> Any:
        """``<namespace>.<module>.<name>``, e.g. ``attr("loggers", "MLFlowLogger")`` (imported when used)."""
        return _lookup(self.name if not module else f"{self.name}.{module}", name)

    def fabric_attr(self, module: str, name: str) -> Any:
        """``<fabric>.<module>.<name>`` of this namespace's fabric package."""
        return _lookup(f"{self.fabric}.{module}", name)


@functools.cache
def _lookup(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _load(name: str, fabric: str) -> Namespace | None:
    try:
        importlib.import_module(name)
    except ImportError:
        return None
    return Namespace(name, fabric)


NAMESPACES: tuple[Namespace, ...] = tuple(
    ns
    for ns in (_load("pytorch_lightning", "lightning_fabric"), _load("lightning.pytorch", "lightning.fabric"))
    if ns is not None
)
"""The installed namespaces, ``pytorch_lightning`` first."""

if not NAMESPACES:  # pragma: no cover - pytorch-lightning is a dependency
    raise ImportError("lightning_green needs pytorch-lightning or lightning (pip install pytorch-lightning)")

DEFAULT: Namespace = NAMESPACES[0]
"""The namespace used where there is no trainer to ask (construction-time messages)."""

CALLBACK_BASES: tuple[type, ...] = tuple(ns.attr("callbacks", "Callback") for ns in NAMESPACES)
"""``Callback`` of every installed namespace: the bases of every lightning_green callback."""

MISCONFIGURATION_BASES: tuple[type, ...] = tuple(
    ns.attr("utilities.exceptions", "MisconfigurationException") for ns in NAMESPACES
)
"""``MisconfigurationException`` of every installed namespace (caught alike by either)."""


class _EndOfInit(CALLBACK_BASES[0]):  # type: ignore[misc,valid-type]
    """Ends the ``__init__`` chain: the first EarlyStopping's ``super().__init__()`` stops here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _early_stopping_bases() -> tuple[type, ...]:
    stoppers = [ns.attr("callbacks", "EarlyStopping") for ns in NAMESPACES]
    return (stoppers[0], _EndOfInit, *stoppers[1:]) if len(stoppers) > 1 else tuple(stoppers)


EARLY_STOPPING_BASES: tuple[type, ...] = _early_stopping_bases()
"""Bases of EnergyAwareEarlyStopping: ``EarlyStopping`` of every namespace, initialised once."""


def namespace_of(obj: Any) -> Namespace:
    """The Lightning namespace of an object (its classes' modules, then its ``strategy``, else DEFAULT).

    Example:
        >>> import lightning.pytorch as L
        >>> namespace_of(L.Trainer(logger=False, enable_progress_bar=False)).name
        'lightning.pytorch'
    """
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        for ns in NAMESPACES:
            if module == ns.name or module.startswith(ns.name + "."):
                return ns
    strategy = getattr(obj, "strategy", None)
    return namespace_of(strategy) if strategy is not None else DEFAULT


def classes(module: str, name: str) -> tuple[type, ...]:
    """The class ``<namespace>.<module>.<name>`` of every installed namespace, for isinstance checks."""
    return tuple(ns.attr(module, name) for ns in NAMESPACES)


def _device(trainer: Trainer) -> torch.device:
    # NCCL needs CUDA tensors, gloo takes CPU ones: the strategy's root device suits both.
    try:
        return trainer.strategy.root_device
    except Exception:  # pragma: no cover - strategies without a root device
        return torch.device("cpu")


_NO_FLOAT64 = ("mps", "xla")
"""Device types without float64 tensors: logged values stay as Lightning makes them (float32)."""


def exact_values(trainer: Trainer | None, metrics: dict[str, float]) -> dict[str, Any]:
    """``metrics`` as float64 tensors on the strategy's device, for ``LightningModule.log``.

    ``self.log`` turns a Python float into a float32 tensor: a kWh logged that way keeps 7
    significant digits, and the logged ``energy/total_kwh`` differs from the summary's (and replay's
    costs from the stopper's) in the 8th. A float64 tensor is logged as it is. On devices without
    float64 (``mps``, ``xla``) the values are returned unchanged.

    Example:
        >>> exact_values(None, {"energy/total_kwh": 1 / 3})["energy/total_kwh"].item() == 1 / 3
        True
    """
    device = _device(trainer) if trainer is not None else torch.device("cpu")
    if device.type in _NO_FLOAT64:
        return dict(metrics)
    return {k: torch.tensor(float(v), dtype=torch.float64, device=device) for k, v in metrics.items()}


def summing(trainer: Trainer) -> Reduce:
    """The reduce of an :class:`~lightning_green.energy.session.EnergySession` in ``trainer``.

    Packs the named fields (in key order, the same on every rank) into one float64 tensor,
    sums it with ``trainer.strategy.reduce`` and unpacks it: one collective per call.
    """
    if int(trainer.world_size) <= 1:
        return local_reduce

    def reduce(fields: Fields) -> Fields:
        keys = sorted(fields)
        flat: list[float] = []
        for key in keys:
            value = fields[key]
            flat += [float(v) for v in value] if isinstance(value, list) else [float(value)]
        tensor = torch.tensor(flat, dtype=torch.float64, device=_device(trainer))
        summed = iter(trainer.strategy.reduce(tensor, reduce_op="sum").cpu().tolist())
        out: Fields = {}
        for key in keys:
            value = fields[key]
            out[key] = [next(summed) for _ in value] if isinstance(value, list) else next(summed)
        return out

    return reduce


def local_rank_pids(trainer: Trainer) -> list[int]:
    """Pids of every rank on this node, this process first (collective under DDP)."""
    pid = os.getpid()
    if int(trainer.world_size) <= 1:
        return [pid]
    mine = torch.tensor([trainer.node_rank, pid], dtype=torch.int64, device=_device(trainer))
    gathered = trainer.strategy.all_gather(mine).reshape(-1, 2).cpu().tolist()
    others = [int(p) for node, p in gathered if int(node) == trainer.node_rank and int(p) != pid]
    return [pid, *others]


def agree_across_ranks(trainer: Trainer, values: Sequence[float], what: str) -> None:
    """Check that every rank holds exactly the same values (an all-gather under DDP).

    Raises:
        RuntimeError: On every rank, when the ranks disagree (a decision must never diverge).
    """
    world = int(trainer.world_size)
    if world <= 1:
        return
    local = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device(trainer))
    rows = trainer.strategy.all_gather(local).reshape(world, -1).cpu().tolist()
    if any(row != rows[0] for row in rows):
        raise RuntimeError(f"lightning_green: DDP ranks disagree on {what}: {rows} (one row per rank)")


def synchronize(trainer: Trainer) -> None:
    """Wait for the device's queued kernels, so an energy counter read now covers them (CUDA)."""
    device = _device(trainer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rank(trainer: Trainer | None) -> int:
    if trainer is not None:
        return int(getattr(trainer, "global_rank", 0))
    return int(getattr(DEFAULT.fabric_attr("utilities.rank_zero", "rank_zero_only"), "rank", 0))


def info(trainer: Trainer | None, message: str) -> None:
    """Log ``message`` on global rank 0, through the trainer's namespace's logger (as Lightning's own)."""
    if _rank(trainer) == 0:
        ns = namespace_of(trainer) if trainer is not None else DEFAULT
        logging.getLogger(f"{ns.name}.utilities.rank_zero").info(message)


def warn(trainer: Trainer | None, message: str, stacklevel: int = 3) -> None:
    """Warn (``UserWarning``) on global rank 0."""
    if _rank(trainer) == 0:
        warnings.warn(message, UserWarning, stacklevel=stacklevel)


FIT_BINDINGS = ("log", "log_dict")
"""What Lightning binds to every callback for a fit (the module's ``log``/``log_dict``, so a callback
that is pickled after a fit would carry the whole module along), bound again at the next fit."""


class PicklesWithoutTheModule:
    """Mixin: a pickled (or copied) callback leaves out :data:`FIT_BINDINGS`.

    Sweep tools (Ray Tune, multiprocessing) pickle callbacks between trials; after a fit Lightning
    has bound the module's ``log`` to each, and the pickle would carry the module (or fail when its
    class is local to a function).
    """

    def __getstate__(self) -> dict[str, Any]:
        """The instance's attributes without what Lightning bound for the last fit."""
        state = dict(self.__dict__)
        for name in FIT_BINDINGS:
            state.pop(name, None)
        return state


class WarnsWithoutState:
    """Mixin of the stateful callbacks: warn once when a resumed checkpoint holds none of their state.

    The callback names itself (``display_name``), its checkpoint key (``state_key``) and what
    restarts without its state (:meth:`missing_state_note`).
    """

    display_name: str
    state_key: str

    def missing_state_note(self) -> str:
        """What restarts when the checkpoint holds no state of this callback."""
        raise NotImplementedError

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Warn once when the checkpoint holds no state of this callback (it was added at resume)."""
        if self.state_key not in checkpoint.get("callbacks", {}):
            warn(
                trainer,
                f"lightning_green: the checkpoint (epoch {checkpoint.get('epoch', '?')}) holds no "
                f"{self.display_name} state (it was added at resume): {self.missing_state_note()}",
            )


def is_overridden(method: str, pl_module: LightningModule) -> bool:
    """Whether the LightningModule overrides hook ``method`` (of its own namespace's LightningModule)."""
    ns = namespace_of(pl_module)
    return bool(
        ns.attr("utilities.model_helpers", "is_overridden")(method, pl_module, ns.attr("", "LightningModule"))
    )


def lightning_attr(function: str, pl_module: LightningModule, *args: Any) -> Any:
    """Lightning's ``lightning_hasattr``/``lightning_getattr``/``lightning_setattr`` (``function``).

    They find an attribute on the module, its ``hparams`` or the datamodule.
    """
    return namespace_of(pl_module).attr("utilities.parsing", function)(pl_module, *args)


def read_only_holder(pl_module: LightningModule, attribute: str) -> str | None:
    """The class of a holder where ``attribute`` cannot be set (a property without a setter), or None.

    The holders are those ``lightning_setattr`` sets: the module, its ``hparams`` and the
    datamodule (and its ``hparams``). Nothing is set: the class attributes are inspected.
    """
    for holder in lightning_attr("_lightning_get_all_attr_holders", pl_module, attribute):
        if isinstance(holder, dict):  # hparams (AttributeDict)
            continue
        static = inspect.getattr_static(type(holder), attribute, None)
        if isinstance(static, property) and static.fset is None:
            return type(holder).__name__
    return None


def early_stopping_callbacks(trainer: Trainer) -> list[Any]:
    """The trainer's ``EarlyStopping`` callbacks (of any namespace)."""
    bases = classes("callbacks", "EarlyStopping")
    return [cb for cb in trainer.callbacks if isinstance(cb, bases)]


def logging_step(trainer: Trainer) -> int:
    """The step Lightning logs metrics at now (its ``_batches_that_stepped``, as its loggers use).

    A validation inside the training loop runs before the counter counts the batch that ended,
    so its metrics go to ``global_step - 1``: metrics logged at a check go here to share its step.
    """
    loop = getattr(trainer.fit_loop, "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(trainer.global_step if step is None else step)


def starts_new_run(trainer: Trainer) -> bool:
    """Whether the fit being set up starts a new run: its Trainer has trained nothing yet.

    Asked at ``setup``, before Lightning restores a checkpoint (it restores the callbacks' states
    after ``setup`` and the loops' counters after ``on_fit_start``). A new Trainer, with or without
    ``ckpt_path``, is at epoch 0, step 0: a callback reused from an earlier fit starts afresh and a
    resumed run then takes its state from the checkpoint. A Trainer that already trained (``fit``
    called again to continue it) is not: its callbacks continue.
    """
    return int(trainer.current_epoch) == 0 and int(trainer.global_step) == 0


def is_fitting(trainer: Trainer) -> bool:
    """Whether the Trainer runs ``fit`` (its validations included), not ``validate``/``test``/``predict``."""
    return getattr(trainer.state, "fn", None) == "fit"  # TrainerFn.FITTING, a str enum in both namespaces


def stopping_reason(trainer: Trainer, name: str) -> Any:
    """The member ``name`` (``"PATIENCE_EXHAUSTED"`` ...) of the trainer's ``EarlyStoppingReason``."""
    enum = namespace_of(trainer).attr("callbacks.early_stopping", "EarlyStoppingReason")
    return enum[name]


def is_mlflow_logger(logger: Any) -> bool:
    """Whether ``logger`` is an ``MLFlowLogger`` (of any namespace)."""
    return isinstance(logger, classes("loggers", "MLFlowLogger"))


def is_csv_logger(logger: Any) -> bool:
    """Whether ``logger`` is a ``CSVLogger`` (of any namespace)."""
    return isinstance(logger, classes("loggers", "CSVLogger"))


def is_tensorboard_logger(logger: Any) -> bool:
    """Whether ``logger`` is a ``TensorBoardLogger`` (of any namespace)."""
    return isinstance(logger, classes("loggers", "TensorBoardLogger"))


def strategy_kind(trainer: Trainer) -> str | None:
    """``"single"`` (one device), ``"ddp"`` (data parallel) or None (DeepSpeed, FSDP, XLA ...)."""
    strategy = trainer.strategy

    def of(name: str) -> tuple[type, ...]:
        return classes("strategies", name)

    if isinstance(strategy, of("SingleDeviceStrategy")) and not isinstance(
        strategy, of("SingleDeviceXLAStrategy")
    ):
        return "single"
    if isinstance(strategy, of("DDPStrategy")) and not isinstance(
        strategy, of("DeepSpeedStrategy") + of("XLAStrategy")
    ):
        return "ddp"
    return None


def is_swappable_precision_plugin(plugin: Any) -> bool:
    """Whether ``plugin`` is exactly ``Precision`` or ``MixedPrecision`` (nothing that casts weights)."""
    exact = classes("plugins.precision", "Precision") + classes("plugins.precision", "MixedPrecision")
    return type(plugin) in exact


def mixed_precision_scaler(plugin: Any) -> Any:
    """The GradScaler of a ``MixedPrecision`` plugin (None for other plugins or without one)."""
    if isinstance(plugin, classes("plugins.precision", "MixedPrecision")):
        return plugin.scaler
    return None


def precision_plugin(trainer: Trainer, precision: str, device_type: str, scaler: Any = None) -> Any:
    """A new precision plugin of the trainer's namespace (``Precision`` or ``MixedPrecision``)."""
    ns = namespace_of(trainer)
    if precision == "32-true":
        return ns.attr("plugins.precision", "Precision")()
    mixed = ns.attr("plugins.precision", "MixedPrecision")
    return mixed(precision, device=device_type, scaler=scaler if precision == "16-mixed" else None)


def train_dataloader_from_module(trainer: Trainer) -> bool:
    """Whether the train dataloader comes from the LightningModule or DataModule (not passed to ``fit``)."""
    return bool(trainer.fit_loop._data_source.is_module())


def val_check_interval(trainer: Trainer) -> int | float | None:
    """The Trainer's ``val_check_interval`` (batches or a fraction of an epoch); None when it is time-based.

    Lightning >= 2.6 takes a duration (``"DD:HH:MM:SS"``, a ``timedelta`` or a dict): it then
    validates by wall-clock time, anywhere in an epoch, and the Trainer has no ``val_check_interval``.
    """
    if getattr(trainer, "_val_check_time_interval", None) is not None:
        return None
    return trainer.val_check_interval


_LOOP_LIMITS = "_parse_loop_limits"
"""Lightning's function that fills in the fit's unset limits, as each Trainer module names it."""

_MAX_EPOCHS_ORIGIN = "_lightning_green_max_epochs_origin"
"""The Trainer instance attribute where :class:`_LoopLimitsRecorder` leaves a :class:`_MaxEpochsOrigin`."""


@dataclass(frozen=True)
class _MaxEpochsOrigin:
    """Who set a Trainer's ``max_epochs``, as its last fit's start found it.

    Attributes:
        stand_in: What Lightning put in place of an unset ``max_epochs`` (1000; -1 with ``max_steps``
            or a ``Timer``), or ``None`` when the value is the user's.
    """

    stand_in: int | None


class _LoopLimitsRecorder:
    """Lightning's ``_parse_loop_limits``, called unchanged, recording on the trainer who set ``max_epochs``.

    ``Trainer._run`` calls it at the start of every fit, before any callback hook, with the Trainer's
    ``max_epochs`` (``None`` when the user set none) and sets the fit loop's ``max_epochs`` to what
    it returns (1000 for an unset one): from then on the Trainer reads the same 1000 whether the
    user passed it or not. The record is sticky across fits of one Trainer: a later fit passes the
    1000 an earlier fit put in place, which stays Lightning's; any other value is the user's.
    """

    def __init__(self, original: Callable[..., Any], signature: inspect.Signature) -> None:
        self.original = original
        self.signature = signature
        functools.update_wrapper(self, original)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        limits = self.original(*args, **kwargs)
        try:
            arguments = self.signature.bind(*args, **kwargs).arguments
        except TypeError:  # pragma: no cover - the original took them: cannot happen
            return limits
        trainer = arguments.get("trainer")
        if trainer is not None:
            _record_max_epochs_origin(trainer, arguments.get("max_epochs"), limits)
        return limits


def _record_max_epochs_origin(trainer: Trainer, given: Any, limits: Any) -> None:
    """Record on ``trainer`` whether the ``max_epochs`` of the fit starting is Lightning's stand-in."""
    if not hasattr(trainer, "__dict__"):  # pragma: no cover - every Trainer has one
        return
    if not (isinstance(limits, tuple) and len(limits) == 2):  # another Lightning: not known
        vars(trainer).pop(_MAX_EPOCHS_ORIGIN, None)
        return
    earlier = vars(trainer).get(_MAX_EPOCHS_ORIGIN)
    if given is None:
        stand_in = limits[1]
    elif isinstance(earlier, _MaxEpochsOrigin) and earlier.stand_in is not None and given == earlier.stand_in:
        stand_in = earlier.stand_in  # an earlier fit's stand-in, read back: still no plan of the user's
    else:
        stand_in = None
    vars(trainer)[_MAX_EPOCHS_ORIGIN] = _MaxEpochsOrigin(stand_in)


def record_max_epochs_origin() -> None:
    """Have every installed namespace's Trainer record whether its fit's ``max_epochs`` is Lightning's.

    Lightning turns an unset ``max_epochs`` into 1000 when a fit starts (``_parse_loop_limits``, in
    ``<namespace>.trainer.trainer``); an explicit ``max_epochs=1000`` reads the same afterwards.
    Wraps that name, once (idempotent), with :class:`_LoopLimitsRecorder`; read with
    :func:`max_epochs_implicit`. Called when this module is imported, before any fit of a Trainer
    given lightning_green's callbacks (also in the workers ``ddp_spawn`` starts, which import it to
    unpickle them). A Lightning without the function, or with one that takes no ``max_epochs`` and
    ``trainer``, is left alone: :func:`max_epochs_implicit` then answers ``None``.
    """
    for ns in NAMESPACES:
        try:
            module = importlib.import_module(f"{ns.name}.trainer.trainer")
        except ImportError:  # pragma: no cover - every namespace has its Trainer module
            continue
        original = getattr(module, _LOOP_LIMITS, None)
        if original is None or isinstance(original, _LoopLimitsRecorder) or not callable(original):
            continue
        try:
            signature = inspect.signature(original)
        except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
            continue
        if {"max_epochs", "trainer"} <= set(signature.parameters):
            setattr(module, _LOOP_LIMITS, _LoopLimitsRecorder(original, signature))


def max_epochs_implicit(trainer: Trainer) -> bool | None:
    """Whether the Trainer's ``max_epochs`` is what Lightning put in place of an unset one.

    ``False`` when the user set it (``Trainer(max_epochs=1000)`` included), ``None`` when not known
    (no fit started since :func:`record_max_epochs_origin`, or a Lightning it could not wrap).
    """
    origin = vars(trainer).get(_MAX_EPOCHS_ORIGIN) if hasattr(trainer, "__dict__") else None
    if not isinstance(origin, _MaxEpochsOrigin):
        return None
    return origin.stand_in is not None and trainer.max_epochs == origin.stand_in


record_max_epochs_origin()


def fit_position(trainer: Trainer) -> FitPosition:
    """The fit loop's counters and plan now (batches done in the epoch from its batch progress).

    The batches of the epochs before the current one are the run's batches (the batch progress's
    total, restored with a checkpoint) less the current epoch's. Whether ``max_epochs`` is the
    user's comes from :func:`max_epochs_implicit`.
    """
    batches = trainer.fit_loop.epoch_loop.batch_progress
    interval = val_check_interval(trainer)
    done = int(batches.current.completed)
    return FitPosition(
        current_epoch=int(trainer.current_epoch),
        global_step=int(trainer.global_step),
        batches_done=done,
        batches_per_epoch=trainer.num_training_batches,
        accumulate_grad_batches=int(trainer.accumulate_grad_batches),
        max_epochs=trainer.max_epochs,
        max_steps=trainer.max_steps,
        epoch_done=bool(getattr(batches, "is_last_batch", True)),
        checks_inside_epochs=interval is None or isinstance(interval, int) or float(interval) < 1.0,
        batches_before_epoch=max(0, int(batches.total.completed) - done),
        max_epochs_implicit=max_epochs_implicit(trainer),
    )


def check_moment(position: FitPosition) -> tuple[str, int, int, int]:
    """A validation's place in the fit (epoch, step, batches done in the epoch).

    Callbacks that read the energy at the same validation pass it to share one reading
    (:meth:`~lightning_green.energy.session.EnergySession.total_j_now`).
    """
    return ("check", position.current_epoch, position.global_step, position.batches_done)


def rebuild_train_dataloader(trainer: Trainer) -> None:
    """Have the fit loop build the train dataloader again now (at an epoch start), its sampler's epoch set."""
    loop = trainer.fit_loop
    if loop._data_fetcher is not None:  # exhausted; release its workers as Lightning's teardown does
        loop._data_fetcher.teardown()
    loop._combined_loader = None
    loop.setup_data()
    if loop._combined_loader is not None:
        set_epoch = namespace_of(trainer).fabric_attr("utilities.data", "_set_sampler_epoch")
        for dataloader in loop._combined_loader.flattened:
            set_epoch(dataloader, loop.epoch_progress.current.processed)


_Wrapper = TypeVar("_Wrapper", bound="_TrainerMethodWrapper")


class _TrainerMethodWrapper:
    """A wrapper of one Trainer instance's method ``NAME``, set as an instance attribute over it.

    :meth:`installed` sets it once per Trainer (a later call finds it); :meth:`restore` puts back
    what was there before (the instance's own attribute, or none: the class's method again).
    """

    NAME: ClassVar[str]

    def __init__(self, trainer: Trainer) -> None:
        self.had_own = self.NAME in vars(trainer)  # an instance attribute set before ours
        self.original: Callable[..., Any] = getattr(trainer, self.NAME)
        functools.update_wrapper(self, self.original)

    @classmethod
    def installed(cls: type[_Wrapper], trainer: Trainer) -> _Wrapper:
        """The Trainer's wrapper of this kind, set now if it has none."""
        wrapper = vars(trainer).get(cls.NAME)
        if not isinstance(wrapper, cls):
            wrapper = cls(trainer)
            setattr(trainer, cls.NAME, wrapper)
        return wrapper

    def restore(self, trainer: Trainer) -> None:
        """Put back the Trainer's method as it was before this wrapper (if the wrapper is still set)."""
        if vars(trainer).get(self.NAME) is not self:
            return
        if self.had_own:
            setattr(trainer, self.NAME, self.original)
        else:
            delattr(trainer, self.NAME)


class _BeforeCheckpointWrites(_TrainerMethodWrapper):
    """``trainer.save_checkpoint`` calling each listener first (:func:`call_before_checkpoint_writes`)."""

    NAME = "save_checkpoint"

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        self.listeners: list[Callable[[], None]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for listener in tuple(self.listeners):
            listener()
        return self.original(*args, **kwargs)


def call_before_checkpoint_writes(trainer: Trainer, listener: Callable[[], None]) -> None:
    """Have ``trainer.save_checkpoint`` call ``listener`` first (until the fit's end undoes it).

    Lightning calls callbacks' ``on_save_checkpoint`` for full checkpoints only; every checkpoint
    (ModelCheckpoint's, ``save_weights_only`` or not, OnExceptionCheckpoint's, the user's) goes
    through ``trainer.save_checkpoint``, on every rank. The Trainer instance's method is wrapped
    once, whatever the number of listeners; a listener already there is not added twice.
    :func:`stop_calling_before_checkpoint_writes` removes it.
    """
    wrapper = _BeforeCheckpointWrites.installed(trainer)
    if listener not in wrapper.listeners:
        wrapper.listeners.append(listener)


def stop_calling_before_checkpoint_writes(trainer: Trainer, listener: Callable[[], None]) -> None:
    """Undo :func:`call_before_checkpoint_writes`; the Trainer's own method is back once none is left."""
    wrapper = vars(trainer).get("save_checkpoint")
    if not isinstance(wrapper, _BeforeCheckpointWrites):
        return
    if listener in wrapper.listeners:
        wrapper.listeners.remove(listener)
    if not wrapper.listeners:
        wrapper.restore(trainer)


def launched_worker(trainer: Trainer) -> bool:
    """Whether the fit runs in workers that Lightning's multiprocessing launcher started.

    ``ddp_spawn``, ``ddp_fork``, ``ddp_notebook`` (and XLA) start the fit in new processes
    (``_MultiProcessingLauncher``); the launching process never sets it up. Asked at ``setup``, a
    true answer means this process is such a worker.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    return isinstance(launcher, classes("strategies.launchers.multiprocessing", "_MultiProcessingLauncher"))


class _FailuresInWorker(_TrainerMethodWrapper):
    """A launched worker's ``trainer._run_stage`` that handles a failure as Lightning does under ``ddp``.

    Lightning calls ``on_exception`` and the loggers' ``finalize("failed")`` in the process that
    called ``fit`` (``_call_and_handle_interrupt``): under ``ddp`` every rank, under the
    multiprocessing launcher only the launching process, whose callbacks and loggers took no part
    in the fit. When the stage (sanity check and training) raises, this calls the registered
    callbacks' ``on_exception`` (in the Trainer's callback order, each guarded: one failing does not
    stop the others), then every logger's ``finalize("failed")`` (an MLflow run is marked
    ``FAILED``), and re-raises. The Trainer's own method is back once the stage is over.
    """

    NAME = "_run_stage"

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        self.trainer: Trainer | None = trainer
        self.callbacks: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trainer = self.trainer
        assert trainer is not None
        try:
            return self.original(*args, **kwargs)
        except BaseException as exception:
            with _sigterm_held():
                _interrupt_in_worker(trainer, self.callbacks, exception)
            raise
        finally:
            self.restore(trainer)
            self.trainer = None


def _interrupt_in_worker(trainer: Trainer, callbacks: Sequence[Any], exception: BaseException) -> None:
    """Lightning's ``_interrupt`` for ``callbacks`` and the loggers, in the worker the fit failed in."""
    pl_module = trainer.lightning_module
    for callback in [cb for cb in trainer.callbacks if any(cb is c for c in callbacks)]:
        try:
            callback.on_exception(trainer, pl_module, exception)
        except Exception as err:  # the others still get theirs
            warn(trainer, f"lightning_green: {type(callback).__name__}.on_exception failed: {err!r}")
    for logger in trainer.loggers:
        try:
            logger.finalize("failed")
        except Exception as err:
            warn(trainer, f"lightning_green: {type(logger).__name__}.finalize('failed') failed: {err!r}")


@contextlib.contextmanager
def _sigterm_held() -> Iterator[None]:
    """Keep SIGTERM from ending (or, through Lightning's handler, interrupting) this block.

    Once one worker ended with its failure, the launching process sends SIGTERM to the others (and
    SIGKILL 30 s later): rank 0 may still be writing its reports. A SIGTERM meanwhile is dropped: the
    worker ends with its failure right after. Main thread only (where signals are handled).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def handle_failures_in_worker(trainer: Trainer, callback: Any) -> None:
    """In a launched worker (:func:`launched_worker`), have the fit's failure call ``callback.on_exception``.

    Called at the callback's ``setup`` for a fit; the Trainer instance's ``_run_stage`` is wrapped
    once (:class:`_FailuresInWorker`), whatever the number of callbacks. Nothing is done in a single
    process or under ``ddp``, where Lightning calls ``on_exception`` in every rank itself.
    """
    if not launched_worker(trainer) or getattr(trainer, "_run_stage", None) is None:
        return
    wrapper = _FailuresInWorker.installed(trainer)
    if not any(cb is callback for cb in wrapper.callbacks):
        wrapper.callbacks.append(callback)


def train_loader_batches(trainer: Trainer) -> int | None:
    """Batches the (first) train dataloader yields per epoch (its ``len``); None when it has no length."""
    combined = trainer.fit_loop._combined_loader
    loaders = combined.flattened if combined is not None else []
    if not loaders:
        return None
    try:
        return len(loaders[0])
    except (TypeError, NotImplementedError):
        return None


def save_config_bases() -> tuple[type, ...]:
    """``cli.SaveConfigCallback`` of every installed namespace (imports ``cli``: needs jsonargparse)."""
    return classes("cli", "SaveConfigCallback")
