"""The composite stopping policy: plateau, marginal gain per kWh and energy budget.

:func:`~lightning_green.policy.rules.decide` is the pure function: given the history of
checks (metric, cumulative cost, progress), Lightning's plateau state and the config, it returns
the :class:`StopDecision` and the new plateau state. :class:`StoppingPolicy` is the small state
object around it that the callback (online) and :mod:`lightning_green.offline` (offline) both
drive, one :meth:`StoppingPolicy.update` per check, so a decision replayed on a logged curve is
the decision the callback would have made.

Order of the checks at every update:

1. Lightning ``EarlyStopping``'s chain (:mod:`.plateau`): non-finite, stopping threshold and
   divergence threshold stop at once, whatever the epoch; otherwise the improvement/patience
   bookkeeping is updated exactly as Lightning does.
2. Energy budget: stop if the next check interval, projected from the recent ones, would take
   the run's cost - the cumulative cost of the checks plus what the run spent outside them
   (``outside_epochs_kwh``: before its first epoch, after an earlier fit's last) - over
   ``energy_budget_kwh`` (at once, whatever the epoch; not at the planned end, where no further
   interval runs).
3. Holds of both the plateau and the marginal rule: before ``min_epochs`` epochs; while a known
   learning-rate decay is ahead within the horizon (``lr_decay_in``) and for
   ``DECAY_WINDOW`` checks after it, as long as decays keep paying (once one bought no new best
   within those checks, later ones are not waited for); after the curve made a step-jump, for as
   long again as the stretch before it (:mod:`.schedule`).
4. Plateau: ``patience`` checks without improvement (Lightning's rule), counted from the later of
   the last improvement and the latest learning-rate decay (known, or seen as a step-jump); near
   the planned end, fewer: at most ``patience_rest_fraction`` of the checks still planned, at
   least ``REST_PATIENCE_MIN`` (:func:`~lightning_green.policy.plateau.rest_patience`). With no
   schedule information, no step-jump and ``patience_rest_fraction=None`` (or no planned horizon,
   or ``patience`` at most ``REST_PATIENCE_MIN``) this is exactly Lightning ``EarlyStopping``.
5. Marginal gain, only once more than ``min_horizon_fraction`` of the planned run has run: the
   gain the learning curve still projects up to the planned horizon, per unit of projected cost,
   is below ``min_relative_gain`` times the average rate so far (or below ``min_gain_per_kwh``),
   unless the recent slope shows, beyond its noise, that the run still improves at least at the
   threshold rate (a steadily improving run is never stopped by this rule alone).

Progress: a check is placed by the training completed at it (:meth:`StoppingPolicy.update`'s
``progress``): epochs, fractional when checks fall inside epochs (``val_check_interval < 1``,
MLPerf-style logs), spaced when checks skip epochs (``check_val_every_n_epoch > 1``), or optimizer
steps for a run planned in steps; the horizon and the distance to a known learning-rate decay are
in the same unit. Counts of checks (``patience``, the hold after a decay) stay counts of checks.

Deterministic: the same history gives the same decision, bit for bit, on every DDP rank; the
learning-curve fit is skipped while the marginal rule is held, which changes no decision.

Bounded work: :class:`StoppingPolicy` keeps the history in append-only arrays
(:class:`~lightning_green.policy.history.History`) and finds step-jumps incrementally
(:class:`~lightning_green.policy.schedule.StepDetector`); the fit sees at most
:data:`~lightning_green.policy.marginal.MAX_FIT_POINTS` checks and every other rule a few recent
ones. An update costs the same at check 300 and at check 300,000, so replaying a curve takes time
linear in its length (``python benchmarks/stopping.py --scaling``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import numpy as np

from lightning_green.policy.config import StoppingConfig
from lightning_green.policy.decision import StopDecision
from lightning_green.policy.history import History
from lightning_green.policy.plateau import PlateauState
from lightning_green.policy.rules import decide
from lightning_green.policy.schedule import DecayTracker, StepDetector

STATE_VERSION = 3
"""Version of :meth:`StoppingPolicy.state_dict` (2: the learning-rate decay tracker; 3: progress,
possibly fractional, instead of 0-based epoch indices; version 2 is still read)."""


class StoppingPolicy:
    """The stopping policy as a small state object: one :meth:`update` per check.

    Args:
        config: Policy arguments (defaults: :class:`StoppingConfig`).
        monitor: The monitored metric's name, used in messages only.

    Example:
        >>> policy = StoppingPolicy(StoppingConfig(patience=2, min_epochs=0))
        >>> [policy.update(m, 0.1 * (e + 1), epoch=e).should_stop for e, m in enumerate([3.0, 2.0, 2.5, 2.4])]
        [False, False, False, True]
        >>> policy.update(1.0, 0.5, epoch=4).reason is None
        True
    """

    def __init__(self, config: StoppingConfig | None = None, *, monitor: str = "metric") -> None:
        self.config = config if config is not None else StoppingConfig()
        self.monitor = monitor
        self._history = History(sign=self.config.sign)
        self._steps = StepDetector()
        self._plateau = PlateauState.initial(self.config.mode)
        self._decays = DecayTracker()
        self.last_decision: StopDecision | None = None

    @property
    def best_score(self) -> float:
        """Best value of the metric so far (Lightning's ``best_score``)."""
        return self._plateau.best_score

    @property
    def wait_count(self) -> int:
        """Checks since the last improvement (Lightning's ``wait_count``)."""
        return self._plateau.wait_count

    @property
    def n_checks(self) -> int:
        """Number of updates so far."""
        return len(self._history)

    @property
    def history(self) -> History:
        """The checks so far (read-only arrays: ``history.costs_kwh`` and so on)."""
        return self._history

    def update(
        self,
        metric: float,
        cost_kwh: float,
        *,
        progress: float | None = None,
        horizon: float | None = None,
        lr_decay_in: float | None = None,
        progress_per_epoch: float | None = 1.0,
        epoch: int | None = None,
        max_epochs: int | None = None,
        epochs_until_lr_decay: int | None = None,
        outside_epochs_kwh: float = 0.0,
    ) -> StopDecision:
        """Record one check and decide.

        Where the run is at a check is given in one of two ways:

        - ``progress`` (with ``horizon`` and ``lr_decay_in`` in the same unit): how much training
          has completed, in epochs, fractional where checks fall inside epochs
          (``val_check_interval < 1``: 0.25, 0.5, ...; logs such as MLPerf's 0.0499), or in
          optimizer steps for a run planned in steps (``max_steps`` without an epoch plan, with
          ``progress_per_epoch`` the steps in an epoch, or ``None`` when there are no epochs);
        - ``epoch`` (with ``max_epochs`` and ``epochs_until_lr_decay``), as before: the 0-based
          index of the epoch just completed, which is ``progress = epoch + 1`` epochs.

        What counts what: ``patience`` and the hold after a learning-rate decay count *checks*,
        as Lightning's ``EarlyStopping`` does (with four checks an epoch, patience 8 is two
        epochs); ``min_epochs`` counts epochs of progress (``progress >= min_epochs *
        progress_per_epoch``; checks when the run has no epochs); ``min_horizon_fraction``, the
        horizon of the projections and the cost per unit of progress use progress, so checks
        every few epochs (``check_val_every_n_epoch > 1``), several an epoch, or steps mean the
        same.

        Args:
            metric: The monitored metric at this check.
            cost_kwh: *Cumulative* cost since the start of the run (kWh; in replay, energy in kWh or
                seconds). A value below the previous one (a meter glitch) is taken as the previous.
            progress: Training completed at this check, ``>= 0`` and non-decreasing across updates:
                epochs (possibly fractional) or steps.
            horizon: Planned end of the run in the unit of ``progress`` (``max_epochs``, or
                ``max_steps`` for a run planned in steps), or ``None`` when there is no plan.
            lr_decay_in: Training still to run at the current learning rate before the next
                scheduled decay, in the unit of ``progress`` (0: what follows runs at the lower
                rate), or ``None`` when no decay is known to be coming.
            progress_per_epoch: Units of ``progress`` in one epoch: 1 (the default) when progress
                counts epochs, the optimizer steps of an epoch when it counts steps, ``None`` when
                the run has no epochs (an iterable dataset of unknown length).
            epoch: Instead of ``progress``: index of the epoch just completed, 0-based, as
                ``trainer.current_epoch``; non-decreasing across updates.
            max_epochs: With ``epoch``: planned number of epochs (``trainer.max_epochs``), or
                ``None`` if unbounded.
            epochs_until_lr_decay: With ``epoch``: epochs that still run at the current learning
                rate before the next scheduled decay (0: the next epoch is the first at the lower
                rate), or ``None``.
            outside_epochs_kwh: What the run spent so far outside the check intervals ``cost_kwh``
                counts (kWh): before its first epoch (setup, the sanity check, a batch-size or
                learning-rate search) and after an earlier fit's last. The energy budget counts it
                (the budget is the whole run's); the projections of the next interval's cost, the
                cost per epoch and the gain per kWh do not.

        Returns:
            The decision.

        Raises:
            ValueError: If ``cost_kwh`` or ``outside_epochs_kwh`` is negative or not finite;
                neither or both of ``progress`` and ``epoch`` are given, or keywords of the other
                form are mixed in;
                ``progress``/``epoch`` is negative, not a number or goes backwards; ``horizon``,
                ``max_epochs`` or ``progress_per_epoch`` is not positive.

        Example:
            >>> policy = StoppingPolicy(StoppingConfig(patience=3, min_epochs=1))
            >>> for i, m in enumerate([3.0, 2.0, 2.1, 2.2, 2.3]):  # four checks an epoch
            ...     d = policy.update(m, 0.1 * (i + 1), progress=0.25 * (i + 1), horizon=10)
            >>> d.should_stop, d.reason.value, d.progress, d.epoch
            (True, 'plateau', 1.25, 1)
        """
        if not _is_real(metric):
            raise ValueError(
                f"StoppingPolicy.update: `metric` must be a number (NaN allowed), got {metric!r}"
            )
        metric = float(metric)  # type: ignore[arg-type]
        cost = _number("cost_kwh", cost_kwh, minimum=0.0)
        outside_kwh = _number("outside_epochs_kwh", outside_epochs_kwh, minimum=0.0)
        if epoch is not None:
            if progress is not None or horizon is not None or lr_decay_in is not None:
                raise ValueError(
                    "StoppingPolicy.update: give either `epoch` (with `max_epochs`, `epochs_until_lr_decay`)"
                    " or `progress` (with `horizon`, `lr_decay_in`), not both"
                )
            if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
                raise ValueError(f"StoppingPolicy.update: `epoch` must be an integer >= 0, got {epoch!r}")
            if max_epochs is not None and (
                isinstance(max_epochs, bool)
                or not _is_real(max_epochs)
                or not math.isfinite(float(max_epochs))  # type: ignore[arg-type]
                or float(max_epochs) <= 0  # type: ignore[arg-type]
                or not float(max_epochs).is_integer()  # type: ignore[arg-type]
            ):
                raise ValueError(
                    "StoppingPolicy.update: `max_epochs` must be a positive integer or None,"
                    f" got {max_epochs!r}"
                )
            at, plan, decay_in, per_epoch = float(epoch) + 1.0, max_epochs, epochs_until_lr_decay, 1.0
            name = "epoch"
        else:
            if progress is None:
                raise ValueError(
                    "StoppingPolicy.update: `progress` (training completed: epochs or steps) or `epoch`"
                    " (the 0-based index of the epoch just completed) is required"
                )
            if max_epochs is not None or epochs_until_lr_decay is not None:
                raise ValueError(
                    "StoppingPolicy.update: with `progress`, give the plan as `horizon` and the next decay"
                    " as `lr_decay_in` (same unit as progress), not `max_epochs`/`epochs_until_lr_decay`"
                )
            at = _number("progress", progress, minimum=0.0)
            plan, decay_in, per_epoch, name = horizon, lr_decay_in, progress_per_epoch, "progress"
            if plan is not None:
                _number("horizon", plan, minimum=0.0, strict=True)
            if per_epoch is not None:
                per_epoch = _number("progress_per_epoch", per_epoch, minimum=0.0, strict=True)
        if decay_in is not None:
            decay_in = _number("lr_decay_in" if epoch is None else "epochs_until_lr_decay", decay_in)
        history = self._history
        if len(history) and at < history.progress[-1]:
            previous = float(history.progress[-1])
            shown = (int(previous) - 1, int(at) - 1) if epoch is not None else (previous, at)
            raise ValueError(f"StoppingPolicy.update: `{name}` went backwards: {shown[1]} after {shown[0]}")
        if len(history):
            cost = max(cost, float(history.costs_kwh[-1]))
        history.append(metric, cost, at)
        if math.isfinite(metric):
            self._steps.push(self.config.sign * metric)
        decision, self._plateau, self._decays = decide(
            history,
            self._plateau,
            self.config,
            horizon=None if plan is None else float(plan),
            lr_decay_in=None if decay_in is None else float(decay_in),
            progress_per_epoch=per_epoch,
            decays=self._decays,
            monitor=self.monitor,
            steps=self._steps.steps,
            outside_kwh=outside_kwh,
        )
        if epoch is not None and decision.epoch != epoch:  # the index as given
            decision = replace(decision, epoch=int(epoch))
        self.last_decision = decision
        return decision

    def state_dict(self) -> dict[str, Any]:
        """Everything the policy remembers, as plain JSON-able Python types.

        Example:
            >>> import json
            >>> p = StoppingPolicy()
            >>> _ = p.update(1.0, 0.1, epoch=0)
            >>> sorted(json.loads(json.dumps(p.state_dict())))[:3]
            ['best_score', 'config', 'costs_kwh']
        """
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "metrics": [_json_float(m) for m in self._history.metrics.tolist()],
            "costs_kwh": self._history.costs_kwh.tolist(),
            "progress": self._history.progress.tolist(),
            "best_score": _json_float(self._plateau.best_score),
            "wait_count": self._plateau.wait_count,
            "decays": self._decays.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; later decisions equal the uninterrupted policy's.

        The config stored in ``state`` is informational: the policy keeps its own (so a resumed run
        may change, for instance, ``patience``, as with Lightning's ``EarlyStopping``). A state of
        version 2 (0-based epoch indices, before progress) is read too.

        Raises:
            ValueError: If ``state`` was written by another version of the policy (its ``version``
                is neither :data:`STATE_VERSION` nor 2), or is malformed (a key missing, a value
                not a number, progress or costs decreasing), naming what is wrong.
        """
        if not isinstance(state, dict):
            raise ValueError(
                f"StoppingPolicy state must be a dict (from state_dict()), got {type(state).__name__}"
            )
        version = state.get("version")
        if version not in (2, STATE_VERSION):
            raise ValueError(
                f"StoppingPolicy state version must be {STATE_VERSION} (or 2), got {version!r}"
                " (a checkpoint from another version of lightning_green)"
            )
        try:
            if version == 2:
                progress = [float(e) + 1.0 for e in state["epochs"]]
            else:
                progress = [float(p) for p in state["progress"]]
            metrics = [_from_json_float(m) for m in state["metrics"]]
            costs = [float(c) for c in state["costs_kwh"]]
            plateau = PlateauState(_from_json_float(state["best_score"]), int(state["wait_count"]))
            decays = DecayTracker.from_dict(state["decays"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"StoppingPolicy state is malformed: {type(err).__name__}: {err}") from None
        if not len(metrics) == len(costs) == len(progress):
            raise ValueError(
                f"StoppingPolicy state is malformed: {len(metrics)} metrics, {len(costs)} costs and "
                f"{len(progress)} progress values (one of each per check)"
            )
        if any(not math.isfinite(c) or c < 0 for c in costs) or any(
            not math.isfinite(x) or x < 0 for x in progress
        ):
            raise ValueError(
                "StoppingPolicy state is malformed: costs and progress must be finite numbers >= 0"
            )
        if any(b < a for a, b in itertools.pairwise(progress)) or any(
            b < a for a, b in itertools.pairwise(costs)
        ):
            raise ValueError("StoppingPolicy state is malformed: progress and costs must not decrease")
        self._history = History(metrics, costs, progress, sign=self.config.sign)
        self._steps = StepDetector()
        for value in self._history.finite_values.tolist():
            self._steps.push(value)
        self._plateau, self._decays = plateau, decays


def _is_real(value: object) -> bool:
    """A real number (Python, numpy or a one-element tensor), not a bool or a string."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return False
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _number(name: str, value: object, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float (``> minimum`` if ``strict``, else ``>= minimum``), or a ValueError."""
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    if not _is_real(value):
        raise ValueError(f"StoppingPolicy.update: `{name}` must be a finite number{bound}, got {value!r}")
    number = float(value)  # type: ignore[arg-type]
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (strict and minimum is not None and number == minimum)
    ):
        raise ValueError(f"StoppingPolicy.update: `{name}` must be a finite number{bound}, got {value!r}")
    return number


def _json_float(x: float) -> float | str:
    """Floats as JSON allows: non-finite ones as strings."""
    return x if math.isfinite(x) else repr(x)


def _from_json_float(x: float | str) -> float:
    return float(x)
