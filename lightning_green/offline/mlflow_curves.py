"""Curves from the runs of an MLflow experiment, with what each run's callback recorded.

MLflow runs carry what the callback told the policy beyond the curves: the run parameter
``lightning_green.max_epochs`` (the planned horizon, or ``none``) and the metric
``energy/epochs_until_lr_decay`` at each check where a decay was announced; replay passes both on.
They also carry the callback's own settings: the monitored metric and its direction
(``lightning_green.monitor``/``lightning_green.mode``) and every policy argument
(``lightning_green.<name>``, a :class:`StoppingConfig` field); :func:`read_mlflow_curves` takes
the metric and direction from them where not told otherwise, and
:func:`~lightning_green.offline.engine.config_for` builds each run's policy from the recorded
arguments, so a replay reproduces the callback's decision. Runs are read through
:class:`~lightning_green.offline.mlflow_runs.MlflowRun` (one rule for a step logged twice).
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

import numpy as np

from lightning_green import keys
from lightning_green.offline.check_places import epochs_at_checks
from lightning_green.offline.csv_curves import MAX_EPOCH, MAX_ROWS, parse_bool, parse_number
from lightning_green.offline.curve import Curve
from lightning_green.offline.errors import OfflineInputError, RecordedParamError
from lightning_green.offline.hf_trainer import epochs_completed, require_lightning_epochs
from lightning_green.offline.mlflow_runs import PREFIX_JOIN, STEP_KEY, experiment_runs
from lightning_green.policy import StoppingConfig
from lightning_green.policy.savings import project_savings

ENERGY_KEY = keys.TOTAL_KWH
"""MLflow metric holding cumulative energy in kWh (logged by the callbacks)."""
CHECK_KWH_KEY = keys.CHECK_KWH
"""MLflow metric: the cumulative kWh EnergyAwareEarlyStopping decided on, at each of its checks."""
CHECK_OUTSIDE_KEY = keys.CHECK_OUTSIDE_KWH
"""MLflow metric: the run's kWh outside its epochs at each check of the stopper (its budget counts it)."""
CHECK_EPOCHS_KEY = keys.CHECK_EPOCHS
"""MLflow metric: the epochs completed (fractional inside an epoch) at each check of the stopper."""
CHECK_METRIC_KEY = keys.CHECK_METRIC
"""MLflow metric: the monitored metric's value at each check of the stopper (what it decided on)."""
LR_HINT_KEY = keys.EPOCHS_UNTIL_LR_DECAY
"""MLflow metric: the ``epochs_until_lr_decay`` the callback passed to the policy at a check."""
MAX_EPOCHS_PARAM = keys.PARAM_MAX_EPOCHS
"""MLflow run parameter: the planned horizon the callback passed to the policy (``none``: no plan)."""
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_CHECKS = MAX_ROWS
"""Most checks read from one run (as many as rows from a curves CSV)."""


def read_mlflow_curves(
    tracking_uri: str,
    experiment: str,
    monitor: str | None = None,
    *,
    mode: str | None = None,
    cost_key: str = ENERGY_KEY,
    unfinished: list[str] | None = None,
    keep_unfinished: bool = False,
    autolog_copies: list[str] | None = None,
    why_skipped: dict[str, str] | None = None,
) -> tuple[list[Curve], list[str]]:
    """Curves from the runs of an MLflow experiment that logged the monitored metric and ``cost_key``.

    The metric histories are joined on their step: EnergyAwareEarlyStopping logs, at the step of
    each of its checks, the cumulative kWh and the epochs completed it decided on
    (``energy/check_kwh``, ``energy/check_epochs``: fractional for a check inside an epoch or a run
    planned in steps) and ``energy/epochs_until_lr_decay``; with the default ``cost_key`` these are
    the cost and the progress of each check, and the metric value each check read
    (``energy/check_metric``: the metric's own series need not hold it, logged every few steps or
    once an epoch under autolog; a run logged before it existed is read where the metric shares a
    step with the check). A run without them (logged without the stopper, or by an earlier
    version) is read from ``cost_key`` per epoch at the steps where the metric was logged too, the
    epoch of each check from the ``epoch`` metric Lightning logs at the same step (0-based, so
    epochs completed is one more; a fraction is refused, not Lightning's) when present, else from
    the check's position; several checks in one epoch (``val_check_interval < 1``) are placed
    within it by their steps, where the log determines the steps of an epoch, and refused where
    it does not (:func:`~lightning_green.offline.check_places.epochs_at_checks`). A run the
    Hugging Face Trainer logged (``MLflowCallback``, told by the Trainer's own metrics:
    :mod:`~lightning_green.offline.hf_trainer`) logs the epochs completed as ``epoch``
    (fractions inside an epoch) at its ``global_step``: read as they are.
    What the callback told the policy beyond the curves is passed on as it was: the run parameter
    ``lightning_green.max_epochs`` becomes the curve's planned horizon (``none``: no plan, so
    ``max_epochs=None``; absent, as in runs logged without the stopping callback: the last
    epoch), and ``energy/epochs_until_lr_decay`` at a step is that check's
    ``epochs_until_lr_decay`` (``None`` at a step without it).

    Each run's recorded settings are used where the caller gives none: the metric is ``monitor``,
    else the one the run recorded (``lightning_green.stopping_monitor``, written by
    EnergyAwareEarlyStopping when it watched another metric than the EnergyMonitor, else
    ``lightning_green.monitor``); the direction is the one the run recorded for that metric
    (``lightning_green.stopping_mode``/``lightning_green.mode``), else ``mode``, else ``"min"``
    (:func:`metric_direction`, the rule ``report`` follows too; :attr:`Curve.mode_assumed`).
    A ``mode`` contradicting the recorded direction of the same metric is an error. The policy
    arguments the run recorded (``lightning_green.<name>``) go into :attr:`Curve.recorded_config`
    when the curve is of the recorded metric; a run replayed on another metric than it recorded
    is replayed without recorded arguments.

    Where a step of a metric was logged more than once, the value kept is MLflow's "latest": the
    largest timestamp, ties broken by the largest value (so the result does not depend on the
    order the tracking server returns the history in), as in every reader of
    :class:`~lightning_green.offline.mlflow_runs.MlflowRun`.

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///mlflow.db``, ``http://...``, a directory).
        experiment: Experiment name.
        monitor: The monitored metric's key (default: each run's recorded one).
        mode: ``"min"`` or ``"max"``: direction of the metric (default: each run's recorded one,
            else ``"min"``).
        cost_key: Key of the cumulative cost: kWh (a key ending in ``kwh``), or ``"step"``, the
            optimizer steps done at each point (the step MLflow recorded with it plus one, for runs
            logged without energy; :meth:`~lightning_green.offline.mlflow_runs.MlflowRun.history`).
        unfinished: When a list, runs that did not finish (MLflow status ``FAILED``, ``KILLED``,
            ``RUNNING``: still training or killed) are left out and named here as ``"<id>
            (<STATUS>)"``: their curves end where the run broke off, not where it would have
            ended, so what a stop saves on them says nothing of the policy. ``None``: read them
            like the others.
        keep_unfinished: With ``unfinished``, still read those runs (named there all the same).
        autolog_copies: When a list and ``monitor`` is not given, runs that MLflow's autologging
            made (tag ``mlflow.autologging``) and that hold none of lightning_green's parameters
            are left out and named here: beside an ``MLFlowLogger``, autolog starts a run of its
            own with a copy of the Trainer's metrics (the energy ones included) but not the
            callbacks' records, a second copy of a fit the logger's run holds. ``None``: read them
            like the others (a run that records no metric is then refused).
        why_skipped: When a dict, each skipped run's id -> why it was (:func:`why_no_curve`).

    Returns:
        ``(curves, skipped)``: one curve per run (``curve_id`` is the run id, in start-time order)
        and the ids of runs skipped because they lack one of the metrics.

    Raises:
        RuntimeError: If mlflow is not installed.
        RecordedParamError: If ``mode`` contradicts the direction a run recorded for the metric,
            or ``monitor`` is not given and a run that logged ``cost_key`` recorded no metric.
        ValueError: If the experiment does not exist.
        OfflineInputError: If a run's records are invalid (``lightning_green.max_epochs``
            neither a positive integer nor ``none``, a policy argument of the wrong type or out of
            range, an ``epoch`` or ``energy/epochs_until_lr_decay`` that is not a whole number >= 0,
            more than :data:`MAX_CHECKS` checks, several checks in an epoch of a length the log
            does not determine).
    """
    if mode not in (None, "min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or None, got {mode!r}")
    curves, skipped = [], []
    for run in experiment_runs(tracking_uri, experiment):
        if unfinished is not None and run.status not in (None, "FINISHED"):
            unfinished.append(f"{run.run_id} ({run.status})")
            if not keep_unfinished:
                continue
        if autolog_copies is not None and monitor is None and _autolog_copy(run):
            autolog_copies.append(run.run_id)
            continue
        curve = curve_of_run(run, monitor, mode=mode, cost_key=cost_key)
        if curve is None:
            skipped.append(run.run_id)
            if why_skipped is not None:
                why_skipped[run.run_id] = why_no_curve(run, monitor, cost_key)
        else:
            curves.append(curve)
    return curves, skipped


class LoggedRun(Protocol):
    """A logged run as replay reads it: an MLflow run, or a Lightning ``CSVLogger`` folder.

    Attributes:
        run_id: Its id (the curve's ``curve_id``).
        label: How messages name it (``MLflow run <id>``).
        params: Its parameters, as text (``lightning_green.<name>``: what the callbacks recorded).
        tags: Its tags (``lightning_green.stop_reason``).

    A reader may also give ``hf_trainer`` (the run is a Hugging Face Trainer's:
    :mod:`~lightning_green.offline.hf_trainer`; ``False`` when absent) and ``metric_names`` (the
    series it holds, which messages list).
    """

    run_id: str
    label: str
    params: Mapping[str, str]
    tags: Mapping[str, str]

    def history(self, key: str) -> dict[int, float]:
        """``step -> value`` of the metric ``key`` (empty when the run never logged it)."""
        ...


AUTOLOGGING_TAG = "mlflow.autologging"
"""The tag MLflow's autologging sets on the runs it logs to (its flavour: ``pytorch``)."""


def _autolog_copy(run: LoggedRun) -> bool:
    """Whether ``run`` is MLflow autolog's copy of a fit's metrics, without the callbacks' records."""
    recorded = (keys.PARAM_MONITOR, keys.PARAM_STOPPING_MONITOR)
    return AUTOLOGGING_TAG in run.tags and not any(name in run.params for name in recorded)


def curve_of_run(
    run: LoggedRun, monitor: str | None = None, *, mode: str | None = None, cost_key: str = ENERGY_KEY
) -> Curve | None:
    """The curve of one logged run, read as :func:`read_mlflow_curves` reads each run.

    ``None`` when the run lacks the metric or ``cost_key``, or they share no step.

    Raises:
        ValueError: If ``mode`` is not ``"min"``, ``"max"`` or ``None``.
        RecordedParamError, OfflineInputError: As :func:`read_mlflow_curves`.
    """
    if mode not in (None, "min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or None, got {mode!r}")
    run_id, params, where = run.run_id, run.params, run.label
    cost = run.history(cost_key)
    if not cost:
        return None
    require_sound_energy_records(run)
    target = _recorded_target(where, params)
    key = monitor or target.monitor
    if key is None:
        raise RecordedParamError(
            f"{where} recorded no {keys.PARAM_MONITOR}: name the monitored metric (--monitor)"
        )
    prefix = getattr(run, "metric_prefix", None)  # MLFlowLogger(prefix=...): fold1-val_acc is val_acc
    if prefix and target.monitor is not None and key == f"{prefix}{PREFIX_JOIN}{target.monitor}":
        key = target.monitor
    own = key == target.monitor
    direction = metric_direction(where, params, key, mode)
    metric = run.history(key)
    # The stopper's own record of each check (several an epoch, one every few epochs) where it
    # logged one; the per-epoch series otherwise (runs logged without the stopper, or before).
    # Against another cost the checks are the same, each at that cost where it was logged at the
    # check's step (``step``: at every step logged).
    energy = cost_key == ENERGY_KEY
    at_checks = run.history(CHECK_KWH_KEY)
    if not energy:
        at_checks = {s: cost[s] for s in at_checks if s in cost}
    # The value each check decided on, logged beside its cost (runs logged since it was): exact
    # whatever the metric's own logging (every few steps, or once an epoch under autolog).
    decided = run.history(CHECK_METRIC_KEY) if own and at_checks else {}
    if decided and set(decided) <= set(at_checks):
        cost = at_checks
        steps = sorted(decided)
        values = [decided[s] for s in steps]
    else:
        if at_checks and set(metric) & set(at_checks):
            cost = at_checks
        steps = sorted(set(metric) & set(cost))
        values = [metric[s] for s in steps]
    if not steps:
        return None
    if len(steps) > MAX_CHECKS:
        raise OfflineInputError(
            f"{where}: {len(steps):,} checks of {key!r}; replay reads at most {MAX_CHECKS:,}"
        )
    check_epochs = run.history(CHECK_EPOCHS_KEY) if cost is at_checks else {}
    epoch_hist = run.history("epoch")
    hf = bool(getattr(run, "hf_trainer", False))  # its epoch: the epochs completed, at its global_step
    if not hf:
        require_lightning_epochs(where, epoch_hist)  # another trainer's epoch is refused, not misread
    if check_epochs and all(s in check_epochs for s in steps):
        epochs = _check_epochs(where, [check_epochs[s] for s in steps])
    elif hf and all(s in epoch_hist for s in steps):
        epochs = epochs_completed(where, steps, epoch_hist)
    elif all(s in epoch_hist for s in steps):  # Lightning's epochs; several checks in one: by their steps
        checks = [(s, _epoch(where, epoch_hist[s])) for s in steps]
        epochs = epochs_at_checks(where, key, checks, epoch_hist)
    else:
        epochs = np.arange(1, len(steps) + 1)
    hint_hist = run.history(LR_HINT_KEY)
    plan_recorded, planned = _planned_max_epochs(where, params.get(MAX_EPOCHS_PARAM))
    costs = cumulative_costs(where, CHECK_KWH_KEY if energy and cost is at_checks else cost_key, steps, cost)
    outside = run.history(CHECK_OUTSIDE_KEY) if energy and cost is at_checks else {}
    config = _recorded_config(where, params) if own else None
    unit = cost_unit(cost_key)
    budget = None if config is None or unit == "kWh" else config.get("energy_budget_kwh")
    if budget is not None:  # a budget in kWh is not a number of steps: not judged against them
        config = {**config, "energy_budget_kwh": None}
    # The stopper checked this run (its records of the checks, a stop tag of its own) but the run
    # holds none of the parameters it logs at its first check: a log that lost them.
    checked = bool(at_checks) or run.tags.get(keys.TAG_STOP_REASON, keys.NO_STOP) != keys.NO_STOP
    return Curve(
        curve_id=run_id,
        epochs=epochs,
        metrics=np.array(values, dtype=float),
        costs=costs,
        higher_is_better=direction.mode == "max",
        cost_unit=unit,
        metric_name=key,
        planned_max_epochs=planned,
        plan_recorded=plan_recorded,
        lr_hints=tuple(_hint(where, hint_hist[s]) if s in hint_hist else None for s in steps),
        recorded_monitor=target.monitor,
        recorded_config=config,
        cost_not_run=_cost_not_run(run, cost_key, costs, epochs, planned),
        outside_costs=_outside_costs(where, steps, outside) if outside else None,
        mode_assumed=direction.assumed,
        arguments_missing=(own or target.monitor is None) and checked and not config and not plan_recorded,
        budget_not_applied=budget,
        trainer_min_epochs=_trainer_floor(where, params, keys.PARAM_TRAINER_MIN_EPOCHS),
        trainer_min_steps=_trainer_floor(where, params, keys.PARAM_TRAINER_MIN_STEPS),
        check_steps=np.array(steps, dtype=np.int64) + (0 if hf else 1),
        hf_trainer=hf,
    )


NO_ENERGY = f"no {ENERGY_KEY!r}"
"""How :func:`why_no_curve` begins for a run without the energy cost (commands add ``--cost-key step``)."""
SHOWN_NAMES = 20
"""Most series :func:`why_no_curve` names of what a run logged (the rest counted)."""


def why_no_curve(run: LoggedRun, monitor: str | None = None, cost_key: str = ENERGY_KEY) -> str:
    """Why :func:`curve_of_run` made no curve of ``run``: what it lacks, and the series it holds.

    Args:
        run: The run (its ``metric_names`` are listed where it has them).
        monitor: The metric asked for (``--monitor``), else the one the run recorded.
        cost_key: The cost asked for (``--cost-key``).

    Returns:
        ``"nothing logged"``; else each series missing (a misspelt one with its close matches:
        ``"no 'val_los' (--monitor; did you mean 'val_loss'?)"``) and what the run logged; or, with
        both there, that they share no step.

    Example:
        >>> from types import SimpleNamespace as Run
        >>> series = {"val_loss": {9: 0.5}, "epoch": {9: 0.0}, "step": {9: 9.0}}
        >>> run = Run(label="log", params={}, metric_names=("epoch", "val_loss"),
        ...           history=lambda key: series.get(key, {}))
        >>> why_no_curve(run, "val_los", "step")
        "no 'val_los' (--monitor; did you mean 'val_loss'?); it logged epoch, val_loss"
    """
    listed = getattr(run, "metric_names", None)  # None: a reader that does not list them
    names: tuple[str, ...] = () if listed is None else tuple(listed)
    if listed is not None and not names:
        return "nothing logged"
    recorded = (
        keys.PARAM_STOPPING_MONITOR if keys.PARAM_STOPPING_MONITOR in run.params else keys.PARAM_MONITOR
    )
    key = monitor or run.params.get(recorded) or None
    missing: list[str] = []
    for name, flag in ((key, "--monitor" if monitor else "the metric it recorded"), (cost_key, "--cost-key")):
        if name is None or run.history(name):
            continue
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
        if name == ENERGY_KEY and cost_key == ENERGY_KEY:
            missing.insert(0, NO_ENERGY)  # the commands add the hint: --cost-key step
        elif close:
            missing.append(f"no {name!r} ({flag}; did you mean {' or '.join(map(repr, close))}?)")
        else:
            missing.append(f"no {name!r} ({flag})")
    if not missing:
        return f"{key!r} and {cost_key!r} logged at no common step"
    if not names:
        return "; ".join(missing)
    shown = ", ".join(names[:SHOWN_NAMES])
    if len(names) > SHOWN_NAMES:
        shown += f" and {len(names) - SHOWN_NAMES} more"
    return f"{'; '.join(missing)}; it logged {shown}"


def cost_unit(cost_key: str) -> str:
    """The unit of the cost ``cost_key`` names: ``kWh`` (a key ending in ``kwh``), ``steps``, else the key.

    Example:
        >>> cost_unit("energy/total_kwh"), cost_unit("step"), cost_unit("tokens_seen")
        ('kWh', 'steps', 'tokens_seen')
    """
    if cost_key.lower().endswith("kwh"):
        return "kWh"
    return "steps" if cost_key == STEP_KEY else cost_key


DEFAULT_MODE = "min"
"""The direction of a metric the run recorded none for, when none is given (``--mode``)."""


@dataclass(frozen=True)
class Direction:
    """The direction a run's metric is read in, by the rule ``replay`` and ``report`` share.

    Attributes:
        metric: The metric.
        mode: ``"min"`` (lower is better) or ``"max"``.
        source: ``"recorded"``: the direction the run recorded for the metric; ``"option"``: the
            ``mode`` given, for a metric the run recorded none for; ``"default"``: neither, so
            :data:`DEFAULT_MODE` (assumed: the commands say so, :func:`assumed_mode_note`).
        recorded_param: The run parameter that holds the recorded direction (``None`` unless
            ``source`` is ``"recorded"``).
    """

    metric: str
    mode: str
    source: Literal["recorded", "option", "default"]
    recorded_param: str | None = None

    @property
    def assumed(self) -> bool:
        """Whether the direction is the default, neither recorded by the run nor given."""
        return self.source == "default"


def metric_direction(where: str, params: Mapping[str, str], metric: str, mode: str | None) -> Direction:
    """The direction of ``metric`` in a logged run: the one rule of ``replay`` and ``report``.

    The direction the run recorded for the metric wins: the stopper's own
    (``lightning_green.stopping_mode``, where ``lightning_green.stopping_monitor`` is the metric),
    else the EnergyMonitor's (``lightning_green.mode``, where ``lightning_green.monitor`` is); a
    ``mode`` that contradicts it is refused. A metric the run recorded no direction for is read
    in ``mode``, else in :data:`DEFAULT_MODE` (an assumption: :attr:`Direction.assumed`).

    Args:
        where: How messages name the run (``MLflow run <id>``, ``Lightning CSV log <path>``).
        params: The run's parameters (``lightning_green.<name>``).
        metric: The metric read (without an ``MLFlowLogger`` prefix).
        mode: The direction given (``--mode``), or ``None``.

    Returns:
        The direction, and where it came from.

    Raises:
        ValueError: If ``mode`` is not ``"min"``, ``"max"`` or ``None``.
        RecordedParamError: If ``mode`` contradicts the direction the run recorded for ``metric``.
        OfflineInputError: If the recorded direction is neither ``min`` nor ``max``.

    Example:
        >>> params = {"lightning_green.monitor": "val_loss", "lightning_green.mode": "min"}
        >>> metric_direction("run a", params, "val_loss", None).source
        'recorded'
        >>> metric_direction("run a", params, "val_acc", None)
        Direction(metric='val_acc', mode='min', source='default', recorded_param=None)
        >>> try:
        ...     metric_direction("run a", params, "val_loss", "max")
        ... except RecordedParamError as e:
        ...     print(e)
        run a recorded lightning_green.mode=min for 'val_loss'; mode 'max' (--mode) contradicts it
    """
    if mode not in (None, "min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or None, got {mode!r}")
    pairs = (
        (keys.PARAM_STOPPING_MONITOR, keys.PARAM_STOPPING_MODE),
        (keys.PARAM_MONITOR, keys.PARAM_MODE),
    )
    for monitor_param, mode_param in pairs:
        recorded = params.get(mode_param)
        if (params.get(monitor_param) or None) != metric or recorded is None:
            continue
        if recorded not in ("min", "max"):
            raise OfflineInputError(
                f"{where}: parameter {mode_param} must be 'min' or 'max', got {recorded!r}"
            )
        if mode is not None and mode != recorded:
            raise RecordedParamError(
                f"{where} recorded {mode_param}={recorded} for {metric!r}; "
                f"mode {mode!r} (--mode) contradicts it"
            )
        return Direction(metric, recorded, "recorded", mode_param)
    if mode is not None:
        return Direction(metric, mode, "option")
    return Direction(metric, DEFAULT_MODE, "default")


def assumed_mode_note(runs: str, metrics: Iterable[str]) -> str:
    """The note ``replay`` and ``report`` print for metrics read in the assumed direction.

    Args:
        runs: Which runs (``"the run"``, ``"2 run(s)"``).
        metrics: The metrics read in :data:`DEFAULT_MODE` (:attr:`Direction.assumed`).

    Example:
        >>> note = assumed_mode_note("the run", ["val_acc"])
        >>> note.split(": read")[0]
        "note: the run recorded no direction for 'val_acc'"
        >>> note.endswith("read as lower is better (mode min, the default; --mode max if higher is better)")
        True
    """
    names = " or ".join(repr(m) for m in sorted(set(metrics)))
    return (
        f"note: {runs} recorded no direction for {names}: read as lower is better (mode {DEFAULT_MODE}, "
        "the default; --mode max if higher is better)"
    )


def require_finite_non_negative(where: str, what: str, step: int, value: float) -> float:
    """``value``, refused where it is not finite or is negative (no record lightning_green logs is).

    Args:
        where: How the message names the run.
        what: How it names the record (``"metric 'energy/epoch_kwh'"``).
        step: The step the value was logged at.
        value: The value.

    Returns:
        ``value``.

    Raises:
        OfflineInputError: Naming the run, the record, the value and the step.
    """
    if not (math.isfinite(value) and value >= 0):
        raise OfflineInputError(f"{where}: {what} must be finite and >= 0, got {value!r} at step {step}")
    return value


ENERGY_RECORD_KEYS = (keys.TOTAL_KWH, keys.EPOCH_KWH, keys.AVG_POWER_W, keys.SAMPLES_PER_J)
"""The per-epoch energy records EnergyMonitor logs: each finite and >= 0 in a sound log."""


def require_sound_energy_records(run: LoggedRun) -> None:
    """Refuse a run whose per-epoch energy records hold a value EnergyMonitor never logs.

    ``replay`` and ``report`` read the same log alike: a NaN, infinite or negative value in any of
    :data:`ENERGY_RECORD_KEYS` (a damaged or hand-edited log) is refused by both, whether or not the
    command at hand reads that record.

    Raises:
        OfflineInputError: Naming the run, the metric, the step and the value.
    """
    for key in ENERGY_RECORD_KEYS:
        for step, value in sorted(run.history(key).items()):
            require_finite_non_negative(run.label, f"metric {key!r}", step, value)


def _outside_costs(where: str, steps: list[int], outside: Mapping[int, float]) -> np.ndarray:
    """The run's cost outside its epochs at each check (0 where a check has none), refused when negative.

    Raises:
        OfflineInputError: Naming the run, the key, the step and the value.
    """
    values = [outside.get(s, 0.0) for s in steps]
    for step, value in zip(steps, values, strict=True):
        require_finite_non_negative(where, repr(CHECK_OUTSIDE_KEY), step, value)
    return np.array(values, dtype=float)


def cumulative_costs(where: str, key: str, steps: list[int], cost: Mapping[int, float]) -> np.ndarray:
    """The cumulative cost at ``steps``, refused where it is negative, not finite or decreases.

    As a curves CSV's cumulative cost is checked (exactly: a total logged in 32-bit floats still
    never decreases), so that a per-epoch series given as ``--cost-key`` is not replayed (or drawn,
    by ``report``) as a total.

    Args:
        where: How messages name the run.
        key: The cost's key (``--cost-key``), as messages name it.
        steps: The steps read, in order.
        cost: ``step -> value`` of the cost (every one of ``steps`` present).

    Returns:
        The values at ``steps``.

    Raises:
        OfflineInputError: Naming the run, the key, the step and the values.
    """
    values = [cost[s] for s in steps]
    for k, (step, value) in enumerate(zip(steps, values, strict=True)):
        require_finite_non_negative(where, f"cumulative cost {key!r}", step, value)
        if k and value < values[k - 1]:
            raise OfflineInputError(
                f"{where}: cumulative cost {key!r} decreases at step {step}: {value!r} after "
                f"{values[k - 1]!r} at step {steps[k - 1]} (the cost must be a running total, such as "
                f"{ENERGY_KEY!r} or 'step')"
            )
    return np.array(values, dtype=float)


def _cost_not_run(
    run: LoggedRun, cost_key: str, costs: np.ndarray, epochs: np.ndarray, planned: int | float | None
) -> float | None:
    """The projected cost of the rest of the planned run, when the run's own stopper stopped it.

    In the cost of the curve (``cost_key``): the kWh the stopper recorded at the stop
    (``energy/not_run_kwh_projected``) for the energy cost, the steps it recorded
    (``energy/not_run_steps_projected``, a run planned in steps) for ``step``; else, for a run
    tagged as stopped (or with that record), projected from the curve's costs up to the recorded
    plan (:func:`~lightning_green.policy.savings.project_savings`). ``None`` for a run that was
    not stopped, or without a plan.
    """
    reason = run.tags.get(keys.TAG_STOP_REASON)
    if reason == keys.NO_STOP:
        return None
    not_run = recorded_not_run(run)  # logged at a stop only (a log without tags has this)
    if keys.NOT_RUN_KWH in not_run and cost_key == ENERGY_KEY:
        return not_run[keys.NOT_RUN_KWH]
    if keys.NOT_RUN_STEPS in not_run and cost_key == STEP_KEY:
        return not_run[keys.NOT_RUN_STEPS]
    if reason is None and keys.NOT_RUN_KWH not in not_run:
        return None
    savings = project_savings(costs, epochs.astype(float), planned)
    return None if savings is None else savings.kwh_not_spent


def recorded_not_run(run: LoggedRun) -> dict[str, float]:
    """What the run's stopper recorded, at its stop, of the rest of the planned run (projected).

    The last value of each ``energy/not_run_*_projected`` metric the run logged
    (:data:`~lightning_green.keys.NOT_RUN_KEYS`), as ``replay`` and ``report`` read them both:
    each must be finite and >= 0 (the stopper logs no other: the kWh, epochs, steps and checks not
    run, the metric gain forgone as an improvement).

    Raises:
        OfflineInputError: Naming the run, the metric, the step and the value.
    """
    out: dict[str, float] = {}
    for key in keys.NOT_RUN_KEYS:
        history = run.history(key)
        if not history:
            continue
        step = max(history)
        out[key] = require_finite_non_negative(run.label, f"metric {key!r}", step, history[step])
    return out


@dataclass(frozen=True)
class _Target:
    """The metric and direction a run recorded, and the parameters that hold them."""

    monitor: str | None
    mode: str | None
    mode_param: str


def _recorded_target(where: str, params: Mapping[str, str]) -> _Target:
    """The stopper's metric and direction: its own parameters, else the shared ones."""
    if keys.PARAM_STOPPING_MONITOR in params:
        monitor_param, mode_param = keys.PARAM_STOPPING_MONITOR, keys.PARAM_STOPPING_MODE
    else:
        monitor_param, mode_param = keys.PARAM_MONITOR, keys.PARAM_MODE
    monitor = params.get(monitor_param) or None
    mode = params.get(mode_param)
    if mode is not None and mode not in ("min", "max"):
        raise OfflineInputError(f"{where}: parameter {mode_param} must be 'min' or 'max', got {mode!r}")
    return _Target(monitor, mode if monitor is not None else None, mode_param)


def _recorded_config(where: str, params: Mapping[str, str]) -> dict[str, Any]:
    """The :class:`StoppingConfig` fields a run recorded as ``lightning_green.<name>``, parsed.

    ``mode`` is left out (the curve's direction carries it). Values are validated as the callback
    validated them.
    """
    out: dict[str, Any] = {}
    for f in fields(StoppingConfig):
        name = keys.policy_param(f.name)
        if f.name == "mode" or name not in params:
            continue
        text = params[name].strip()
        kind = str(f.type)
        value: Any
        if "None" in kind and text.lower() == "none":
            value = None
        elif kind == "bool":
            value = parse_bool(text)
        elif kind.startswith("int"):
            value = int(text) if _INTEGER.fullmatch(text) else None
        else:
            value = parse_number(text)
        if value is None and not ("None" in kind and text.lower() == "none"):
            raise OfflineInputError(
                f"{where}: parameter {name} must be {kind.replace(' | None', ' or none')}, "
                f"got {params[name]!r}"
            )
        out[f.name] = value
    try:
        StoppingConfig.from_dict(out)
    except ValueError as e:
        raise OfflineInputError(f"{where}: recorded policy arguments: {e}") from None
    return out


def _planned_max_epochs(where: str, text: str | None) -> tuple[bool, int | float | None]:
    """``(recorded, horizon)`` from the run parameter ``lightning_green.max_epochs``.

    A whole number of epochs, or a fraction (a run planned in steps: ``max_steps`` over the steps
    of an epoch).
    """
    if text is None:
        return False, None
    if text.strip().lower() == "none":
        return True, None
    value = parse_number(text.strip())
    if value is None or not 0 < value < MAX_EPOCH:
        raise OfflineInputError(
            f"{where}: parameter {MAX_EPOCHS_PARAM} must be a positive number of epochs or"
            f" 'none', got {text!r}"
        )
    return True, int(value) if float(value).is_integer() else float(value)


def _trainer_floor(where: str, params: Mapping[str, str], name: str) -> int | None:
    """The Trainer's ``min_epochs``/``min_steps`` the run recorded as ``name`` (``None``: none recorded).

    Raises:
        OfflineInputError: When the value is not a whole number >= 0.
    """
    text = params.get(name)
    if text is None:
        return None
    text = text.strip()
    if not _INTEGER.fullmatch(text) or int(text) < 0:
        raise OfflineInputError(
            f"{where}: parameter {name} must be a whole number >= 0, got {params[name]!r}"
        )
    return int(text) or None


def _check_epochs(where: str, values: list[float]) -> np.ndarray:
    """The ``energy/check_epochs`` of a run's checks: an integer array when all are whole epochs."""
    for value in values:
        if not (0 <= value < MAX_EPOCH):
            raise OfflineInputError(
                f"{where}: metric {CHECK_EPOCHS_KEY} must be a number of epochs >= 0 below"
                f" {MAX_EPOCH:.0e}, got {value!r}"
            )
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise OfflineInputError(
            f"{where}: metric {CHECK_EPOCHS_KEY} must increase from check to check, got {values}"
        )
    epochs = np.array(values, dtype=float)
    return epochs.astype(int) if bool(np.all(epochs == np.floor(epochs))) else epochs


def _epoch(where: str, value: float) -> int:
    if not (0 <= value < MAX_EPOCH) or value != math.floor(value):
        raise OfflineInputError(
            f"{where}: metric 'epoch' must be a whole number >= 0 below {MAX_EPOCH:.0e}, got {value!r}"
        )
    return int(value)


def _hint(where: str, value: float) -> int:
    if not (0 <= value < MAX_EPOCH) or value != math.floor(value):
        raise OfflineInputError(f"{where}: metric {LR_HINT_KEY} must be a whole number >= 0, got {value!r}")
    return int(value)
