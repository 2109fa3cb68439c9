r"""The replay engine: the stopping policy fed a logged curve one check at a time.

The policy is the one the callback runs (:class:`lightning_green.policy.StoppingPolicy`), fed
what the callback fed it, so a decision replayed here is the decision the callback would have
made on the same numbers.

Example:
    >>> import io
    >>> from lightning_green.offline.csv_curves import read_curves_csv
    >>> text = "curve_id,epoch,metric,higher_is_better,time_s,energy_J\n" + "".join(
    ...     f"a,{e},{1 / e},0,{10 * e},\n" for e in range(1, 21))
    >>> curves = read_curves_csv(io.StringIO(text), name="demo.csv")
    >>> result = replay_curve(curves[0], StoppingConfig())
    >>> result.stop_reason.value, result.stop_epoch, round(result.cost_saved, 2)
    ('marginal_gain', 16, 0.2)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lightning_green import keys
from lightning_green.offline.curve import Curve
from lightning_green.policy import StopDecision, StoppingConfig, StoppingPolicy, StopReason
from lightning_green.policy.savings import project_savings

NO_STOP = keys.NO_STOP
"""``stop_reason`` of a curve the policy never stopped (also the MLflow tag of such a run)."""


@dataclass(frozen=True)
class ReplayResult:
    """What the policy did on one curve.

    Attributes:
        curve_id: The curve.
        stop_epoch: The ``epoch`` of the last check the run completed: where it stopped, or its
            last check when it never stopped (a whole number, or a fraction for fractional
            progress).
        stop_reason: Why, or ``None`` when it ran to the end.
        best_metric_at_stop: Best metric up to and including the stop.
        cost_at_stop: Cumulative cost at the stop.
        cost_total: Cumulative cost of the whole logged curve.
        best_metric_total: Best metric of the whole curve.
        higher_is_better: Direction of the metric.
        cost_unit: ``"kWh"`` or ``"s"``.
        decision: The policy's last decision (the stop, or the final check).
        stop_epoch_text: ``stop_epoch`` as the input wrote it (what the decisions CSV writes);
            empty when unknown, and then ``stop_epoch`` is written.
        cost_not_run: Cost of the planned run beyond the logged curve, a projection
            (:attr:`Curve.cost_not_run`: the run was stopped by its own stopper); 0 when the
            curve is the whole run.
        stop_check: The check (0-based) whose decision the stop is: the stop's own, or for a
            stop the Trainer's floor held back (:func:`floor_reached`), the last check that
            decided to stop before the run ended (the callback's ``stopped_epoch``). ``None``
            without a stop.
        metric_name: The curve's metric (:attr:`Curve.metric_name`), when known: regrets of
            different metrics are in different units (:func:`summarize_per_metric`).
    """

    curve_id: str
    stop_epoch: int | float
    stop_reason: StopReason | None
    best_metric_at_stop: float
    cost_at_stop: float
    cost_total: float
    best_metric_total: float
    higher_is_better: bool
    cost_unit: str
    decision: StopDecision | None = field(default=None, repr=False, compare=False)
    stop_epoch_text: str = field(default="", repr=False)
    cost_not_run: float = field(default=0.0, repr=False)
    stop_check: int | None = field(default=None, repr=False, compare=False)
    metric_name: str | None = field(default=None, repr=False, compare=False)

    @property
    def cost_saved(self) -> float:
        """Fraction of the run's total cost not spent because of the stop.

        For a run stopped by its own stopper (:attr:`cost_not_run` > 0) the total is the planned
        run's, the logged cost plus the projected rest: the fraction is then partly projected.
        """
        total = self.cost_total + self.cost_not_run if self.cost_not_run > 0 else self.cost_total
        return (total - self.cost_at_stop) / total if total > 0 else 0.0

    @property
    def regret(self) -> float:
        """Best metric of the whole curve minus best up to the stop, improving direction (>= 0).

        NaN when the stop came before any finite value of a curve that has one later (a stop on a
        non-finite metric): nothing kept at the stop to measure the loss from, so the regret is
        undefined rather than 0 (no loss) or a made-up number; :func:`summarize` leaves such
        curves out of the mean regret and counts them. 0 for a curve without any finite value.
        """
        if math.isnan(self.best_metric_at_stop):
            return 0.0 if math.isnan(self.best_metric_total) else math.nan
        sign = 1.0 if self.higher_is_better else -1.0
        lost = sign * (self.best_metric_total - self.best_metric_at_stop)
        return lost if lost > 0 else 0.0


def _best(values: np.ndarray, higher_is_better: bool) -> float:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return math.nan
    return float(finite.max() if higher_is_better else finite.min())


def result_at(
    curve: Curve, index: int, reason: StopReason | None = None, decision: StopDecision | None = None
) -> ReplayResult:
    """The outcome of stopping ``curve`` at check ``index`` (0-based) for ``reason``.

    Example:
        >>> c = Curve("a", np.array([1, 2, 3]), np.array([3.0, 2.0, 2.5]), np.array([1.0, 2.0, 3.0]), False)
        >>> r = result_at(c, 1)
        >>> r.stop_epoch, r.best_metric_at_stop, round(r.cost_saved, 3), r.regret
        (2, 2.0, 0.333, 0.0)
    """
    epoch = float(curve.epochs[index])
    return ReplayResult(
        curve_id=curve.curve_id,
        stop_epoch=int(epoch) if epoch.is_integer() else epoch,
        stop_reason=reason,
        best_metric_at_stop=_best(curve.metrics[: index + 1], curve.higher_is_better),
        cost_at_stop=float(curve.costs[index]),
        cost_total=float(curve.costs[-1]),
        best_metric_total=_best(curve.metrics, curve.higher_is_better),
        higher_is_better=curve.higher_is_better,
        cost_unit=curve.cost_unit,
        decision=decision,
        stop_epoch_text=curve.epoch_text(index),
        cost_not_run=curve.cost_not_run or 0.0,
        stop_check=None if reason is None else index,
        metric_name=curve.metric_name,
    )


@dataclass(frozen=True)
class PolicyInputs:
    """What the policy is told at each check of a curve, beyond the metric and the cost.

    Attributes:
        epochs: The ``epoch`` argument of each check (0-based epoch index) of a whole-number
            curve; ``None`` for fractional progress (then :attr:`progress`).
        max_epochs: The planned horizon in epochs (``max_epochs``, or ``horizon`` with
            ``progress``; ``None``: no plan).
        lr_hints: Each check's distance to the next learning-rate decay (``None`` where none is
            known): ``epochs_until_lr_decay`` (epochs after the current one), or with
            ``progress`` the epochs of training left at the check's rate (``lr_decay_in``).
        progress: The ``progress`` of each check (epochs completed, fractional) of a curve with
            fractional progress; ``None`` for a whole-number curve.
    """

    epochs: list[int] | None
    max_epochs: int | float | None
    lr_hints: list[int | None] | list[float | None]
    progress: list[float] | None = None

    def update_args(self, index: int) -> dict[str, Any]:
        """The keywords of :meth:`StoppingPolicy.update` for check ``index``.

        Example:
            >>> PolicyInputs(None, 2.0, [0.5], [1.5]).update_args(0)
            {'progress': 1.5, 'horizon': 2.0, 'lr_decay_in': 0.5}
        """
        if self.progress is not None:
            return dict(
                progress=self.progress[index], horizon=self.max_epochs, lr_decay_in=self.lr_hints[index]
            )
        assert self.epochs is not None
        return dict(
            epoch=self.epochs[index], max_epochs=self.max_epochs, epochs_until_lr_decay=self.lr_hints[index]
        )


def policy_inputs(
    curve: Curve, max_epochs: int | float | None = None, use_lr_schedule: bool = True
) -> PolicyInputs:
    """The policy's progress, horizon and schedule hint at each check of ``curve``: their one source.

    Whole-number epochs: the epoch index is ``epoch - 1`` (epochs completed minus one; a check
    at ``epoch`` 0 counts as one in the first epoch) and the horizon is ``max_epochs``, else
    :attr:`Curve.default_max_epochs`.

    Fractional progress (:attr:`Curve.fractional`): each check's ``progress`` is its ``epoch``
    as logged (epochs completed, ``0.0499809``, ``1.00096``), the horizon ``max_epochs`` in
    epochs, else the recorded plan, else the curve's last epoch. Counts of checks (``patience``)
    stay counts of checks.

    The hint is the recorded one (MLflow), else derived from the learning rate at each check
    (CSV ``lr``) where the rates show a *step* schedule, as the callback reads only step
    schedules (``StepLR``, ``MultiStepLR``, ``ReduceLROnPlateau``) from the trainer: at a check
    whose rate was held for at least two checks and holds until a later check at a lower rate,
    the epochs still at that rate before the lower one begins (:func:`step_drops`). A rate that
    changes at every check (cosine, one-cycle, linear or exponential decay, warm-up) announces
    nothing, as the callback announces nothing for those schedulers; neither does a whole-number
    curve with a check at ``epoch`` 0.

    Args:
        curve: The curve.
        max_epochs: Planned length of the run in epochs (default: the curve's own).
        use_lr_schedule: ``False`` gives no hints.

    Returns:
        The inputs, one per check.

    Example:
        >>> c = Curve("a", np.array([1, 2, 4, 5]), np.zeros(4), np.arange(1.0, 5.0), False,
        ...           lrs=np.array([0.1, 0.1, 0.01, 0.01]))
        >>> policy_inputs(c)
        PolicyInputs(epochs=[0, 1, 3, 4], max_epochs=5, lr_hints=[1, 0, None, None], progress=None)
        >>> cosine = 0.05 * (1 + np.cos(np.pi * np.arange(4) / 4)) / 2
        >>> policy_inputs(Curve("c", np.arange(1, 5), np.zeros(4), np.ones(4), False, lrs=cosine)).lr_hints
        [None, None, None, None]
        >>> policy_inputs(Curve("b", np.array([0.25, 0.5, 0.75]), np.zeros(3), np.ones(3), False,
        ...                     lrs=np.array([0.1, 0.1, 0.01])), 1.5)
        PolicyInputs(epochs=None, max_epochs=1.5, lr_hints=[0.25, 0.0, None], progress=[0.25, 0.5, 0.75])
    """
    n = len(curve.epochs)
    clock: list[int] | list[float]
    epochs: list[int] | None = None
    progress: list[float] | None = None
    planned = curve.default_max_epochs if max_epochs is None else max_epochs
    if curve.fractional or (planned is not None and not float(planned).is_integer()):
        clock = progress = [float(e) for e in curve.epochs.tolist()]
        horizon: int | float | None = None if planned is None else float(planned)
        with_hints = True
    else:
        clock = curve.epochs.tolist()
        epochs = [max(int(e) - 1, 0) for e in clock]
        horizon = None if planned is None else int(planned)
        with_hints = n > 0 and clock[0] >= 1
    hints: list[Any] = [None] * n
    if use_lr_schedule and curve.lr_hints is not None:
        hints = list(curve.lr_hints)
        if progress is not None:
            # Recorded hints count epochs after the check's epoch (it ends at ceil(progress)); as
            # progress, the training left at the check's rate, computed as the callback does.
            hints = [
                None if h is None else math.ceil(p) + h - p for h, p in zip(hints, progress, strict=True)
            ]
    elif use_lr_schedule and curve.lrs is not None and with_hints:
        # The epochs of check j are (clock[j-1], clock[j]]: the first epoch at a lower rate than
        # check i's is the first of check k, the first later check at a lower rate.
        for i, k in enumerate(step_drops(curve.lrs.tolist())):
            if k is not None:
                gap = clock[k - 1] - clock[i]
                hints[i] = gap if progress is not None else int(gap)
    return PolicyInputs(epochs, horizon, hints, progress)


def step_drops(rates: Sequence[float]) -> list[int | None]:
    """For each check, the first later check of a step drop of the learning rate (``None``: none).

    A check ``i`` has one when its rate stays the same up to the check before some check ``k`` at a
    lower rate, and was held for at least two checks (the check before ``i`` or the one after had
    the same rate): the shape of ``StepLR``, ``MultiStepLR`` and ``ReduceLROnPlateau``. Rates
    that change at every check (cosine, one-cycle, linear or exponential decay, a warm-up) have
    none, as the callback reports no decay ahead for those schedulers; so does a step schedule
    that changes the rate at every check (checks every 25 epochs of a ``StepLR(step_size=25)``),
    for which the callback does announce the decays. Rates are compared with a relative
    tolerance of 1e-9 (a rate written to text and read back). Linear in the checks.

    Args:
        rates: The learning rate at each check, in order.

    Returns:
        ``k`` (the first check at the lower rate) for each check, or ``None``.

    Example:
        >>> step_drops([0.1, 0.1, 0.1, 0.01, 0.01, 0.001])
        [3, 3, 3, 5, 5, None]
        >>> step_drops([0.1, 0.09, 0.07, 0.04, 0.01])  # a smooth decay
        [None, None, None, None, None]
        >>> step_drops([0.01, 0.05, 0.1, 0.1, 0.01])  # a warm-up, then a step
        [None, None, 4, 4, None]
    """
    n = len(rates)
    out: list[int | None] = [None] * n
    start = 0
    while start < n:
        end = start  # the stretch of checks at one rate: start .. end
        while end + 1 < n and math.isclose(rates[end + 1], rates[start], rel_tol=1e-9, abs_tol=0.0):
            end += 1
        if end > start and end + 1 < n and rates[end + 1] < rates[start]:
            for i in range(start, end + 1):
                out[i] = end + 1
        start = end + 1
    return out


def replay_curve(
    curve: Curve,
    config: StoppingConfig,
    *,
    max_epochs: int | float | None = None,
    monitor: str = "metric",
    use_lr_schedule: bool = True,
) -> ReplayResult:
    """Run the policy over one curve, one check at a time, until it stops.

    The policy is fed what the callback fed it: the metric, the cumulative cost, the cost outside
    the epochs where recorded (:attr:`Curve.outside_costs`, for the budget), the epoch index (or
    the fractional progress), the planned horizon and, where known, the distance to the next
    learning-rate decay (:func:`policy_inputs`).

    Args:
        curve: The curve.
        config: Policy arguments; its ``mode`` is replaced by the curve's direction. For the
            arguments an MLflow run recorded, pass :func:`config_for` ``(curve)``.
        max_epochs: Planned length of the run in epochs (default: :attr:`Curve.default_max_epochs`,
            the recorded plan, else the curve's last epoch). For a run its own stopper stopped,
            another plan than the recorded one also sets the cost of the rest of the run
            (:func:`cost_not_run_to`), which the recorded projection no longer is.
        monitor: Metric name for the messages.
        use_lr_schedule: Pass ``epochs_until_lr_decay`` where the curve knows it (recorded hints, or
            learning rates); ``False`` gives the policy no schedule information.

    Returns:
        The result.
    """
    if max_epochs is not None and curve.cost_not_run is not None and max_epochs != curve.default_max_epochs:
        curve = replace(curve, cost_not_run=cost_not_run_to(curve, max_epochs))
    config = replace(config, mode=curve.mode)
    policy = StoppingPolicy(config, monitor=monitor)
    inputs = policy_inputs(curve, max_epochs, use_lr_schedule)
    metrics, costs = curve.metrics.tolist(), curve.costs.tolist()
    # What the run spent outside its epochs at each check: the budget counts it (as the callback's).
    outside = [0.0] * len(costs) if curve.outside_costs is None else curve.outside_costs.tolist()
    decision: StopDecision | None = None
    # A stop the Trainer's floor holds back (Trainer(min_epochs/min_steps)): Lightning keeps its
    # should_stop and ends the fit once the floor is met; the callback renews the stop (its reason,
    # its stopped_epoch) at every later check whose decision is a stop.
    held: tuple[int, StopReason | None] | None = None
    for i in range(len(metrics)):
        decision = policy.update(metrics[i], costs[i], outside_epochs_kwh=outside[i], **inputs.update_args(i))
        if decision.should_stop:
            held = (i, decision.reason)
        if held is not None and floor_reached(curve, i):
            return replace(result_at(curve, i, held[1], decision), stop_check=held[0])
    last = len(metrics) - 1
    if held is not None:  # held to the end of the log: the run ended before its floor, stopped
        return replace(result_at(curve, last, held[1], decision), stop_check=held[0])
    return result_at(curve, last, None, decision)


def floor_reached(curve: Curve, index: int) -> bool:
    """Whether Lightning lets a stop end the run at check ``index``: the Trainer's floor is met.

    Lightning holds a stop back (``Trainer(min_epochs=..., min_steps=...)``) until the epochs
    completed reach ``min_epochs`` and the optimizer steps ``min_steps``
    (:attr:`Curve.trainer_min_epochs`, :attr:`Curve.trainer_min_steps`, as the run recorded
    them); a check inside an epoch counts the epochs completed before it. A floor of steps with
    no step known at the check is taken as met. True when the run recorded no floor.

    Example:
        >>> c = Curve("a", np.array([1, 2, 3]), np.zeros(3), np.ones(3), False, trainer_min_epochs=2)
        >>> [floor_reached(c, i) for i in range(3)]
        [False, True, True]
    """
    min_epochs = curve.trainer_min_epochs
    if min_epochs is not None and math.floor(float(curve.epochs[index])) < min_epochs:
        return False
    steps = curve.check_steps
    return curve.trainer_min_steps is None or steps is None or int(steps[index]) >= curve.trainer_min_steps


def cost_not_run_to(curve: Curve, max_epochs: int | float) -> float:
    """The cost the rest of a run stopped before its plan would have taken, planned ``max_epochs``.

    Projected from the curve's checks (:func:`~lightning_green.policy.savings.project_savings`:
    the cost of its epochs, continued to ``max_epochs``); 0 when the curve reached that plan.

    Example:
        >>> c = Curve("a", np.array([1, 2, 3, 4]), np.ones(4), np.array([1.0, 2.0, 3.0, 4.0]), False)
        >>> cost_not_run_to(c, 10), cost_not_run_to(c, 4)
        (6.0, 0.0)
    """
    savings = project_savings(curve.costs, curve.epochs.astype(float), max_epochs)
    return 0.0 if savings is None else float(savings.kwh_not_spent)


def config_for(curve: Curve, options: Mapping[str, Any] | None = None) -> StoppingConfig:
    """The policy arguments to replay ``curve`` with, as the run's callback had them.

    Each argument is taken from ``options`` where given there (explicit choices win), else from
    what the run recorded (:attr:`Curve.recorded_config`, MLflow runs), else the default;
    ``mode`` is always the curve's direction.

    Args:
        curve: The curve.
        options: :class:`StoppingConfig` fields given explicitly (e.g. on the command line).

    Returns:
        The validated config.

    Raises:
        ValueError: On an unknown field or an invalid value.

    Example:
        >>> c = Curve("a", np.array([1]), np.array([1.0]), np.array([1.0]), True,
        ...           recorded_config={"patience": 5, "energy_budget_kwh": 2.0})
        >>> cfg = config_for(c, {"patience": 7})
        >>> cfg.mode, cfg.patience, cfg.energy_budget_kwh, cfg.min_epochs
        ('max', 7, 2.0, 5)
    """
    values = {**(curve.recorded_config or {}), **(options or {})}
    values["mode"] = curve.mode
    return StoppingConfig.from_dict(values)


def replay(
    curves: Iterable[Curve],
    config: StoppingConfig,
    *,
    max_epochs: int | None = None,
    monitor: str = "metric",
    use_lr_schedule: bool = True,
) -> list[ReplayResult]:
    """:func:`replay_curve` over several curves."""
    return [
        replay_curve(c, config, max_epochs=max_epochs, monitor=monitor, use_lr_schedule=use_lr_schedule)
        for c in curves
    ]


@dataclass(frozen=True)
class Summary:
    """Aggregate of replay results.

    Attributes:
        n_curves: Number of curves.
        mean_cost_saved: Mean fraction of cost saved.
        mean_regret: Mean regret (metric units) of the curves whose regret is defined (NaN when
            none is).
        stops: Number of curves per stop reason (``"none"`` for curves run to the end).
        n_projected: Curves whose saving includes a projected part (:attr:`ReplayResult.cost_not_run`).
        n_regret_undefined: Curves left out of :attr:`mean_regret`: stopped before any finite
            value (:attr:`ReplayResult.regret` is NaN).
    """

    n_curves: int
    mean_cost_saved: float
    mean_regret: float
    stops: dict[str, int]
    n_projected: int = 0
    n_regret_undefined: int = 0


def summarize(results: Sequence[ReplayResult]) -> Summary:
    """Mean cost saved, mean regret and the count of each stop reason, of curves of one metric.

    Example:
        >>> r = ReplayResult("a", 5, StopReason.PLATEAU, 1.0, 5.0, 10.0, 0.9, False, "s")
        >>> s = summarize([r])
        >>> s.mean_cost_saved, round(s.mean_regret, 3), s.stops
        (0.5, 0.1, {'plateau': 1})

    Raises:
        ValueError: If the results are of more than one metric (another ``metric_name``, or
            another direction): a mean regret of several metrics mixes their units;
            :func:`summarize_per_metric` gives one summary for each.
    """
    metrics = list(dict.fromkeys(metric_of(r) for r in results))
    if len(metrics) > 1:
        raise ValueError(
            f"results of {len(metrics)} metrics ({', '.join(metric_label(*m) for m in metrics)}): a mean "
            "regret mixes their units; summarize_per_metric gives one summary for each"
        )
    stops: dict[str, int] = {}
    for r in results:
        key = r.stop_reason.value if r.stop_reason is not None else NO_STOP
        stops[key] = stops.get(key, 0) + 1
    n = len(results)
    regrets = [r.regret for r in results if not math.isnan(r.regret)]
    return Summary(
        n_curves=n,
        mean_cost_saved=float(np.mean([r.cost_saved for r in results])) if n else 0.0,
        mean_regret=float(np.mean(regrets)) if regrets else (math.nan if n else 0.0),
        stops=stops,
        n_projected=sum(1 for r in results if r.cost_not_run > 0),
        n_regret_undefined=n - len(regrets),
    )


def metric_of(result: ReplayResult) -> tuple[str | None, bool]:
    """``(metric_name, higher_is_better)``: the metric a result is of (its regret's unit)."""
    return result.metric_name, result.higher_is_better


def metric_label(metric_name: str | None, higher_is_better: bool) -> str:
    """A metric as messages name it: ``'val_loss' (lower is better)``.

    Example:
        >>> metric_label("val_acc", True), metric_label(None, False)
        ("'val_acc' (higher is better)", 'an unnamed metric (lower is better)')
    """
    name = "an unnamed metric" if metric_name is None else repr(metric_name)
    return f"{name} ({'higher' if higher_is_better else 'lower'} is better)"


@dataclass(frozen=True)
class MetricSummary:
    """The summary of the curves of one metric.

    Attributes:
        metric_name: The metric (``None``: curves that name none, such as a curves CSV without
            ``metric_name``).
        higher_is_better: Its direction.
        summary: Their :class:`Summary`.
    """

    metric_name: str | None
    higher_is_better: bool
    summary: Summary


def summarize_per_metric(results: Sequence[ReplayResult]) -> list[MetricSummary]:
    """One :func:`summarize` for each metric of ``results`` (name and direction), first seen first.

    A mean regret is in the units of its metric: curves of ``val_loss`` and of ``perplexity`` are
    summarised apart, and so are curves of unnamed metrics of each direction.

    Example:
        >>> a = ReplayResult("a", 5, StopReason.PLATEAU, 1.0, 5.0, 10.0, 0.9, False, "s", metric_name="loss")
        >>> b = replace(a, curve_id="b", best_metric_at_stop=20.0, best_metric_total=19.0, metric_name="ppl")
        >>> [(m.metric_name, round(m.summary.mean_regret, 3)) for m in summarize_per_metric([a, b])]
        [('loss', 0.1), ('ppl', 1.0)]
    """
    groups: dict[tuple[str | None, bool], list[ReplayResult]] = {}
    for r in results:
        groups.setdefault(metric_of(r), []).append(r)
    return [MetricSummary(name, hib, summarize(group)) for (name, hib), group in groups.items()]
