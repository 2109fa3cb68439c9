"""Names of what lightning_green logs: metrics, run parameters and MLflow tags.

The callbacks write them and ``replay``/``report`` read them back from MLflow runs, so they are
defined once, here (no Lightning import: the offline tools use them too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Metrics, per epoch unless noted.
EPOCH_KWH = "energy/epoch_kwh"
TOTAL_KWH = "energy/total_kwh"
AVG_POWER_W = "energy/avg_power_w"
CO2_KG = "energy/co2_kg"
SAMPLES_PER_J = "energy/samples_per_j"
STEP_J = "energy/step_j"  # every ``step_interval`` steps
STEP_POWER_W = "energy/step_power_w"  # every ``step_interval`` steps
GAIN_PER_KWH = "energy/gain_per_kwh"
PROJECTED_GAIN = "energy/projected_gain"
PROJECTED_GAIN_PER_KWH = "energy/projected_gain_per_kwh"
# Logged once, when the fit ends (or fails): the whole run, what followed the last epoch included
# (the per-epoch energy/total_kwh ends at the last epoch's close). The summary's total_kwh/co2_kg.
RUN_KWH = "energy/run_kwh"
RUN_CO2_KG = "energy/run_co2_kg"
# The part of energy/run_kwh measured before the first epoch of each fit (setup, sanity check,
# Lightning's batch-size and learning-rate finders): in no epoch, so in no energy/total_kwh.
RUN_BEFORE_EPOCHS_KWH = "energy/run_before_epochs_kwh"
# The fit's end records: logged after training, at the optimizer steps done (Lightning's logging step
# then), where every record of the training (its batches, checks and epochs) is one below them.
FIT_END_KEYS = (RUN_KWH, RUN_CO2_KG, RUN_BEFORE_EPOCHS_KWH)
EPOCHS_UNTIL_LR_DECAY = "energy/epochs_until_lr_decay"  # at checks where a drop was ahead
# Not logged: the offline readers' built-in cost series, the optimizer steps done at each point (the
# step it was logged at plus one; ``--cost-key step`` of replay and report, for runs logged without energy).
STEP = "step"
# EnergyAwareEarlyStopping, at every check (several an epoch, or one every few epochs): what the
# policy decided on, for replay to decide on the same. The per-epoch series above end at epochs.
CHECK_KWH = "energy/check_kwh"  # cumulative kWh of the training epochs at the check
# The run's kWh outside its epochs at the check (before the first epoch, earlier fits' end-of-fit
# work): the energy budget counts it, the projections of what the next check costs do not.
CHECK_OUTSIDE_KWH = "energy/check_outside_kwh"
CHECK_EPOCHS = "energy/check_epochs"  # epochs completed at the check (fractional inside an epoch)
# The monitored metric's value each check decided on (the metric's own series may not hold it:
# logged every few steps, or once an epoch under autolog): what replay decides on.
CHECK_METRIC = "energy/check_metric"
# The checks the stopper has decided on, this one included (a resumed run counts those its
# checkpoint held): where a resumed run's log joins its earlier part, the checks after it are cut.
CHECK_NUMBER = "energy/check_number"
BATCH_SIZE = "energy/batch_size"  # AdaptiveBatchSize: the batch size of the epoch
PRECISION = "energy/precision"  # AdaptivePrecision: bits of the compute type (32 or 16)
# Logged once, at a stop before the planned end: what the stop avoided up to it. Projections from
# the measured checks (cost per unit of progress, the learning-curve fit), never measurements.
NOT_RUN_KWH = "energy/not_run_kwh_projected"  # kWh the rest of the planned run would have taken
NOT_RUN_EPOCHS = "energy/not_run_epochs_projected"  # epochs left to the planned end
NOT_RUN_STEPS = "energy/not_run_steps_projected"  # optimizer steps left, in a run planned in steps
NOT_RUN_CHECKS = "energy/not_run_checks_projected"  # checks that would have come
NOT_RUN_GAIN = "energy/not_run_gain_projected"  # gain of the best metric (its units, improvement > 0)
NOT_RUN_KEYS = (NOT_RUN_KWH, NOT_RUN_EPOCHS, NOT_RUN_STEPS, NOT_RUN_CHECKS, NOT_RUN_GAIN)

# Summary fields.
PRECISION_PROBE_SHARE = "precision_probe_share"  # AdaptivePrecision: probing energy / the run's

# Summary fields (energy_summary.json): probing energy, PUE included, and its share of the run's.
BATCH_SIZE_PROBE_J = "batch_size_probe_j"  # AdaptiveBatchSize: training at candidate sizes
BATCH_SIZE_PROBE_SHARE = "batch_size_probe_share"

# Run parameters.
PARAM_ENERGY_SOURCE = "lightning_green.energy_source"
PARAM_PUE = "lightning_green.pue"
PARAM_CARBON_INTENSITY = "lightning_green.carbon_intensity_g_per_kwh"
PARAM_MONITOR = "lightning_green.monitor"
PARAM_MODE = "lightning_green.mode"
PARAM_MAX_EPOCHS = "lightning_green.max_epochs"  # the stopping policy's planned horizon in epochs, or "none"
# EnergyAwareEarlyStopping's metric and direction when they differ from the EnergyMonitor's (which
# holds ``lightning_green.monitor``/``.mode``); absent otherwise.
PARAM_STOPPING_MONITOR = "lightning_green.stopping_monitor"
PARAM_STOPPING_MODE = "lightning_green.stopping_mode"
# The Trainer's floor on a stop (``Trainer(min_epochs=..., min_steps=...)``), when it has one:
# Lightning holds a stop back until both are met; replay holds it back alike. Absent without one.
PARAM_TRAINER_MIN_EPOCHS = "lightning_green.trainer_min_epochs"
PARAM_TRAINER_MIN_STEPS = "lightning_green.trainer_min_steps"
PARAM_PREFIX = "lightning_green."  # + a StoppingConfig field: the stopping policy's arguments
# A Lightning log (CSVLogger, TensorBoardLogger) that a fit resumed from a checkpoint began in a new
# folder holds the run's earlier epochs and checks, copied from the checkpoint at the steps they
# were logged at, up to this step; the fit's own records follow. Its readers join the log to the
# folder of that earlier part when it is there, and read the copy where it is not.
PARAM_EARLIER_PART_UNTIL_STEP = "lightning_green.earlier_part_until_step"
TENSORBOARD_EVENTS_PREFIX = "events.out.tfevents."
"""How TensorBoard names its event files: the callbacks tell a log written by an earlier fit by them,
the offline readers find a log's files by them."""
RESUMED_SUFFIX = ".resumed"
"""A parameter an MLflow run already held with another value (a run resumed or continued with
another plan, energy source ...) is recorded as the tag ``<parameter>.resumed``: the latest value."""

# MLflow tags.
TAG_STOP_REASON = "lightning_green.stop_reason"
NO_STOP = "none"  # its value (and replay's stop_reason) when EnergyAwareEarlyStopping did not stop the run
TAG_STOPPED_EPOCH = "lightning_green.stopped_epoch"
TAG_PARTIAL = "lightning_green.partial"
TAG_BATCH_SIZE = "lightning_green.batch_size"  # the batch size chosen (probes aside)
TAG_BATCH_SIZE_SWITCHES = "lightning_green.batch_size_switches"  # the switches as compact text
TAG_PRECISION = "lightning_green.precision"  # the precision chosen (probes aside)
TAG_PRECISION_SWITCHES = "lightning_green.precision_switches"  # the switches as compact text


def policy_param(name: str) -> str:
    """The run parameter recording the stopping policy argument ``name`` (``None`` as ``none``).

    Example:
        >>> policy_param("energy_budget_kwh")
        'lightning_green.energy_budget_kwh'
    """
    return PARAM_PREFIX + name


def stopping_params(config: Mapping[str, Any], monitor: str, mode: str, *, separate: bool) -> dict[str, Any]:
    """The run parameters that record a stopping policy, for replay to reproduce it.

    Args:
        config: The policy's arguments (``StoppingConfig.to_dict()``); each but ``mode`` becomes
            :func:`policy_param` of its name (``None`` as ``none``).
        monitor: The metric the stopper watches.
        mode: ``"min"`` or ``"max"``.
        separate: Whether the run's EnergyMonitor watches another metric or direction: then the
            stopper's are :data:`PARAM_STOPPING_MONITOR`/:data:`PARAM_STOPPING_MODE`, so neither
            overwrites the other; else :data:`PARAM_MONITOR`/:data:`PARAM_MODE`.

    Example:
        >>> stopping_params({"mode": "min", "patience": 3}, "val_loss", "min", separate=False)
        {'lightning_green.patience': 3, 'lightning_green.monitor': 'val_loss', 'lightning_green.mode': 'min'}
    """
    params = {
        policy_param(name): "none" if value is None else value
        for name, value in config.items()
        if name != "mode"
    }
    names = (PARAM_STOPPING_MONITOR, PARAM_STOPPING_MODE) if separate else (PARAM_MONITOR, PARAM_MODE)
    params[names[0]], params[names[1]] = monitor, mode
    return params


def marginal_key(monitor: str) -> str:
    """The logged name of the marginal gain of ``monitor`` per kWh.

    Example:
        >>> marginal_key("val_acc")
        'energy/marginal_val_acc_per_kwh'
    """
    return f"energy/marginal_{monitor}_per_kwh"
