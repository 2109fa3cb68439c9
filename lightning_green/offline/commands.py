"""The work of ``lightning-green replay`` and ``lightning-green report``, behind the argument parser.

Each command checks everything it can before any work (inputs, outputs, options:
:mod:`~lightning_green.offline.checks`), then reads, computes, stages its outputs
(:class:`~lightning_green.offline.staging.StagedOutputs`) and renames them into place only when
all of them are complete. Refusals are :class:`~lightning_green.offline.errors.OfflineInputError`
(the command line reports them as one ``error:`` line, exit 2); each command prints what it did
and returns 0.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import itertools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightning_green import keys
from lightning_green.offline import checks
from lightning_green.offline.curve import Curve
from lightning_green.offline.engine import ReplayResult, config_for, replay_curve, summarize_per_metric
from lightning_green.offline.errors import OutputPathError, UsageError
from lightning_green.offline.lightning_csv import LogParts
from lightning_green.offline.lightning_logs import is_lightning_log, open_lightning_log
from lightning_green.offline.mlflow_curves import (
    ENERGY_KEY,
    MAX_EPOCHS_PARAM,
    NO_ENERGY,
    assumed_mode_note,
    curve_of_run,
    why_no_curve,
)
from lightning_green.offline.staging import StagedOutputs
from lightning_green.offline.tensorboard_logs import is_tensorboard_log
from lightning_green.policy import StoppingConfig

Printer = Callable[[str], None]

_STEP_HINT = " (logged without EnergyMonitor? --cost-key step replays them with optimizer steps as the cost)"
"""Said of the runs and logs skipped for lacking the energy series: every reader has a ``step`` series."""


def _skipped_lines(what: str, metric: str, cost_key: str, why: Mapping[str, str]) -> list[str]:
    """What replay says of the runs or logs it skipped: a line naming them all, then one for each.

    Args:
        what: What they are (``"Lightning log(s)"``, ``"run(s)"``).
        metric: The metric asked for, as shown (``'val_loss'``, ``the monitored metric``).
        cost_key: The cost asked for.
        why: Each one -> why it was skipped (:func:`~.mlflow_curves.why_no_curve`).

    Returns:
        The lines; the first gives the ``--cost-key step`` hint when the cost is the energy and
        one of them lacks it (a run logged without EnergyMonitor), and only then.
    """
    if not why:
        return []
    lacks_energy = cost_key == ENERGY_KEY and any(reason.startswith(NO_ENERGY) for reason in why.values())
    head = f"skipped {len(why)} {what} without both {metric} and {cost_key!r}"
    return [
        f"{head}{_STEP_HINT if lacks_energy else ''}:",
        *(f"  {name}: {reason}" for name, reason in why.items()),
    ]


def _written(echo: Printer) -> Printer:
    """``echo`` once the outputs are written: a reader that stopped reading (``| head``) is no failure.

    What is left to say goes nowhere (stdout is pointed at the null device, so Python does not
    complain on exit either).
    """
    closed = False

    def say(text: str) -> None:
        nonlocal closed
        if closed:
            return
        try:
            echo(text)
        except BrokenPipeError:
            closed = True
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    return say


def explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The policy options given on the command line (``mode`` excepted: curves carry it)."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(StoppingConfig)
        if f.name != "mode" and hasattr(args, f.name)
    }


def _check_options(options: Mapping[str, Any], mode: str | None) -> None:
    """Refuse policy options that are invalid whatever the curves (without ``--mode``: for both)."""
    errors: list[str] = []
    for candidate in (mode,) if mode else ("min", "max"):
        try:
            StoppingConfig.from_dict({**options, "mode": candidate})
            return
        except ValueError as e:
            errors.append(str(e))
    raise UsageError(errors[0])


def run_replay(args: argparse.Namespace, echo: Printer = print) -> int:
    """``lightning-green replay``: replay the policy over curves; write DECISIONS (and the plot).

    Args:
        args: The parsed ``replay`` command line: curves from a CSV or MLflow, the stopping
            options, ``--output`` and ``--plot`` (see :func:`lightning_green.cli.build_parser`).
        echo: Where the report lines go.

    Returns:
        0 (every refusal is raised).
    """
    from_mlflow = args.mlflow_uri is not None or args.experiment is not None
    if from_mlflow == bool(args.curves):
        raise UsageError("give either CURVES.csv or --mlflow-uri URI --experiment NAME")
    if from_mlflow and (args.mlflow_uri is None or args.experiment is None):
        raise UsageError("MLflow input needs --mlflow-uri and --experiment")
    if from_mlflow and not args.experiment.strip():
        raise UsageError("--experiment is empty: give the name of the MLflow experiment to replay")
    cost_key = checks.cost_key(args.cost_key)
    inputs: list[tuple[str, str]] = []
    logs: dict[str, Any] = {}
    if from_mlflow:
        checks.check_tracking_uri(args.mlflow_uri)
        database = checks.sqlite_file(args.mlflow_uri)
        inputs += [("MLflow database", database)] if database else []
    else:
        args.curves = checks.expand_inputs("curves file", args.curves)
        inputs += [("curves file", path) for path in args.curves]
        logs = _open_logs(args.curves)
        inputs += _log_inputs(logs)
        given = [f for f, v in (("--monitor", args.monitor), ("--cost-key", args.cost_key)) if v]
        if given and not any(is_lightning_log(path) for path in args.curves):
            raise UsageError(
                f"{' and '.join(given)} only apply to MLflow input (--mlflow-uri/--experiment) and to "
                "Lightning logs (CSVLogger metrics.csv, TensorBoard events.out.tfevents.*) and Hugging Face "
                "Trainer logs (a log_history CSV export); a curves CSV "
                "names its metric and cost in its columns"
            )
    if args.max_epochs is not None and args.max_epochs <= 0:
        raise UsageError(f"--max-epochs must be a positive integer, got {args.max_epochs}")
    outputs = [("-o/--output", args.output)] + ([("--plot", args.plot)] if args.plot is not None else [])
    targets = checks.check_outputs(outputs, inputs)
    _check_log_outputs(outputs, logs)
    image_format = checks.image_format("--plot", args.plot) if args.plot is not None else None
    options = explicit_options(args)
    _check_options(options, args.mode)

    if from_mlflow:
        curves, source = _mlflow_curves(args, cost_key, echo)
    else:
        curves, source = _file_curves(args, cost_key, echo, logs)
    if args.max_epochs is not None:
        longer = [c for c in curves if float(c.epochs[-1]) > args.max_epochs]
        if longer:
            raise UsageError(
                f"--max-epochs {args.max_epochs} is below the {longer[0].epoch_text(-1)} epochs curve "
                f"{longer[0].curve_id!r} ran: the planned length must be at least what was trained"
            )
    try:
        configs = [config_for(c, options) for c in curves]
    except ValueError as e:  # explicit options that the recorded ones make invalid together
        raise UsageError(str(e)) from None
    results = [
        replay_curve(
            c,
            config,
            max_epochs=args.max_epochs,
            monitor=c.metric_name or args.monitor or "metric",
            use_lr_schedule=not args.ignore_lr,
        )
        for c, config in zip(curves, configs, strict=True)
    ]
    _write_replay_outputs(results, targets, image_format, [f"{flag} {path}" for flag, path in outputs])
    _print_replay(args, curves, results, source, options, _written(echo))
    return 0


def _open_logs(paths: Sequence[str]) -> dict[str, Any]:
    """The run of each Lightning log among ``paths`` (one per folder of event files), read once.

    Read before the outputs are checked: what a log reads beside it (``hparams.yaml``,
    ``energy_summary.json``, the earlier part of a resumed run) is an input too.
    """
    runs: dict[str, Any] = {}
    parts: LogParts = {}  # each folder read once, however many logs look at it
    event_folders: set[str] = set()
    for path in paths:
        if is_tensorboard_log(path):
            folder = os.path.realpath(os.path.dirname(path) or ".")
            if folder in event_folders:
                continue  # another event file of a run already read
            event_folders.add(folder)
        run = open_lightning_log(path, parts=parts)
        if run is not None:
            runs[path] = run
    return runs


def _log_inputs(runs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(what, path)`` of every file the logs read beyond the given ones, for the output checks."""
    return [(f"log {path}'s input", f) for path, run in runs.items() for f in run.inputs if f != path]


def _check_log_outputs(outputs: Sequence[tuple[str, str]], runs: Mapping[str, Any]) -> None:
    """Refuse an output where a log's reader would read it as part of the log, existing or not.

    A decisions CSV written as ``energy_summary.json`` (or ``hparams.yaml``, an event file) in a
    log's folder would make the log unreadable the next time (:meth:`.LightningCsvRun.reads`).

    Raises:
        OutputPathError: Naming the output, the log and what the file would be read as.
    """
    for flag, path in outputs:
        for log, run in runs.items():
            role = run.reads(path)
            if role is not None:
                raise OutputPathError(
                    f"{flag} {path}: the log {log} would read {os.path.realpath(path)} as {role}: "
                    "refusing to write into the log; give a file outside its folder"
                )


def _file_curves(
    args: argparse.Namespace, cost_key: str, echo: Printer, logs: Mapping[str, Any]
) -> tuple[list[Curve], str]:
    """The curves of every file, in order.

    A curves CSV (long format) gives its curves; from several files each ``curve_id`` is
    ``FILE:curve_id``. A Lightning log (a ``TensorBoardLogger`` event file, a ``CSVLogger``
    ``metrics.csv``) gives the curve of its run, named by its folder, read as an MLflow run is
    (``--monitor``, ``--mode`` and ``--cost-key`` as there); a folder's event files make one run.
    """
    from lightning_green.offline.csv_curves import read_curves_csv

    curves: list[Curve] = []
    skipped: dict[str, str] = {}  # a log without the metric or the cost -> why
    failed: dict[str, tuple[str, Curve]] = {}  # realpath -> (path, curve) of a log whose summary says failed
    several = len(args.curves) > 1
    log_curves: dict[str, Curve] = {}  # realpath of a log -> its curve
    log_paths: dict[str, str] = {}  # realpath of a log -> the log, as given
    # realpath of an earlier part of a resumed run -> the logs that continue it (two branches
    # resumed from one checkpoint continue the same earlier part: it is part of each)
    joined: dict[str, list[str]] = {}
    # realpath of a folder of a resumed run's chain -> the logs given that read it as an earlier
    # part, and the folders of the parts resumed from it directly (the next in each chain)
    read_in: dict[str, list[str]] = {}
    resumed_into: dict[str, list[str]] = {}
    given_in: dict[str, str] = {}  # realpath of a given log's folder -> the log, as given
    for path in args.curves:
        if is_tensorboard_log(path) and path not in logs:
            continue  # another event file of a run already read
        run = logs.get(path)
        if run is not None:
            given_in.setdefault(os.path.dirname(os.path.realpath(path)), path)
            for earlier in getattr(run, "continues", ()):
                joined.setdefault(os.path.realpath(earlier), []).append(path)
            chain = [os.path.realpath(folder) for folder in getattr(run, "folders", ())]
            for later, folder in itertools.pairwise(chain):
                read_in.setdefault(folder, []).append(path)
                if later not in resumed_into.setdefault(folder, []):
                    resumed_into[folder].append(later)
            curve = curve_of_run(run, args.monitor, mode=args.mode, cost_key=cost_key)
            if curve is None:
                skipped[path] = why_no_curve(run, args.monitor, cost_key)
            else:
                curves.append(curve)
                log_curves[os.path.realpath(path)] = curve
                log_paths[os.path.realpath(path)] = path
                if run.failed:
                    failed[os.path.realpath(path)] = (path, curve)
            continue
        table = read_curves_csv(path)
        if args.mode is not None:
            wrong = [c.curve_id for c in table if c.mode != args.mode]
            if wrong:
                raise UsageError(
                    f"--mode {args.mode} contradicts higher_is_better of curve {wrong[0]!r} in {path}"
                )
        curves += [dataclasses.replace(c, curve_id=f"{path}:{c.curve_id}") if several else c for c in table]
    parts = [(p, joined[p]) for p in log_curves if p in joined]
    if parts:  # the earlier part of a resumed run is in the run that continues it (in each of them)
        dropped = {id(log_curves[p]) for p, _ in parts}
        dropped_folders = {os.path.dirname(p) for p, _ in parts}
        curves = [c for c in curves if id(c) not in dropped]
        echo(
            "read as part of the run that continues it (resumed from a checkpoint into a new folder): "
            + ", ".join(
                _read_in_note(log_paths[p], read_in, resumed_into, given_in, dropped_folders)
                for p, _ in parts
            )
        )
    metric = repr(args.monitor) if args.monitor else "the monitored metric"
    for line in _skipped_lines("Lightning log(s)", metric, cost_key, skipped):
        echo(line)
    # A failed run that a given log continues (resumed into a new folder) is part of that run.
    broke_off = [(path, curve) for real, (path, curve) in failed.items() if real not in joined]
    if broke_off and getattr(args, "include_unfinished", False):
        echo(
            f"included {len(broke_off)} run(s) that did not finish, as far as they ran: "
            + ", ".join(f"{path} (FAILED)" for path, _ in broke_off)
        )
    elif broke_off:
        left_out = {id(curve) for _, curve in broke_off}
        curves = [c for c in curves if id(c) not in left_out]
        echo(
            f"skipped {len(broke_off)} Lightning log(s) of runs that did not finish (--include-unfinished "
            "to replay them as far as they ran): " + ", ".join(f"{path} (FAILED)" for path, _ in broke_off)
        )
    if not curves:
        raise LookupError(
            f"no curve in {', '.join(args.curves)}: "
            + _why_none(len(skipped), len(broke_off), f"log has both {metric} and {cost_key!r}", "log(s)")
        )
    seen: dict[str, Curve] = {}
    for c in curves:
        if c.curve_id in seen:
            raise UsageError(f"two curves read as {c.curve_id!r}: rename one (curve ids must be distinct)")
        seen[c.curve_id] = c
    files = args.curves
    source = ", ".join(files) if len(files) <= 3 else f"{len(files)} files ({files[0]}, ..., {files[-1]})"
    return curves, source


def _read_in_note(
    path: str,
    read_in: Mapping[str, Sequence[str]],
    resumed_into: Mapping[str, Sequence[str]],
    given_in: Mapping[str, str],
    dropped_folders: set[str],
) -> str:
    """Where replay reads the log ``path`` (the earlier part of resumed runs), for its note.

    Names the replayed runs that read it (not a run itself read in a later one), and, where those
    did not resume from it directly (a chain of resumes), the runs that did.

    Args:
        path: The log, as given.
        read_in: Realpath of a folder -> the given logs that read it as an earlier part.
        resumed_into: Realpath of a folder -> the folders of the runs resumed from it directly.
        given_in: Realpath of a given log's folder -> the log, as given.
        dropped_folders: The realpaths of the folders of the logs read as parts of other runs.

    Returns:
        ``"<path> in <run>"``, ``"<path> in each of N runs resumed from it: <runs>"``, or, in a
        chain, ``"<path> in <run> (<direct> resumed from it)"``.
    """
    folder = os.path.dirname(os.path.realpath(path))
    replayed = [r for r in read_in[folder] if os.path.dirname(os.path.realpath(r)) not in dropped_folders]
    direct = [given_in.get(f, f) for f in resumed_into[folder]]
    if replayed == direct:
        if len(replayed) == 1:
            return f"{path} in {replayed[0]}"
        return f"{path} in each of {len(replayed)} runs resumed from it: {', '.join(replayed)}"
    runs = replayed[0] if len(replayed) == 1 else f"each of {len(replayed)} runs: {', '.join(replayed)}"
    return f"{path} in {runs} ({', '.join(direct)} resumed from it)"


def _mlflow_curves(args: argparse.Namespace, cost_key: str, echo: Printer) -> tuple[list[Curve], str]:
    from lightning_green.offline.mlflow_curves import read_mlflow_curves

    include = bool(getattr(args, "include_unfinished", False))
    unfinished: list[str] = []
    copies: list[str] = []
    why: dict[str, str] = {}
    curves, skipped = read_mlflow_curves(
        args.mlflow_uri,
        args.experiment,
        args.monitor,
        mode=args.mode,
        cost_key=cost_key,
        unfinished=unfinished,
        keep_unfinished=include,
        autolog_copies=copies,
        why_skipped=why,
    )
    source = f"{args.mlflow_uri} experiment {args.experiment!r}"
    metric = repr(args.monitor) if args.monitor else "the monitored metric"
    if copies:
        echo(
            f"skipped {len(copies)} MLflow autolog run(s) holding a copy of a fit's metrics but none of "
            "lightning_green's parameters (beside an MLFlowLogger, whose run is replayed; --monitor to "
            "replay them too): " + ", ".join(copies)
        )
    for line in _skipped_lines("run(s)", metric, cost_key, {r: why[r] for r in skipped}):
        echo(line)
    if unfinished and include:  # their curves end where the run broke off: say which they are
        echo(
            f"included {len(unfinished)} run(s) that did not finish, as far as they ran: "
            + ", ".join(unfinished)
        )
    elif unfinished:
        echo(
            f"skipped {len(unfinished)} run(s) that did not finish (--include-unfinished to replay "
            "them as far as they ran): " + ", ".join(unfinished)
        )
    if not curves:
        if not unfinished or include:
            raise LookupError(f"no run in {source} logged both {metric} and {cost_key!r}")
        raise LookupError(
            f"no curve from {source}: "
            + _why_none(len(skipped), len(unfinished), f"run logged both {metric} and {cost_key!r}", "run(s)")
        )
    return curves, source


def _why_none(n_without: int, n_unfinished: int, has_both: str, what: str) -> str:
    """Why no curve was read: the inputs without the metric and the cost, those left unfinished."""
    if not n_unfinished:
        return f"no {has_both}"
    of_runs = "of runs " if what != "run(s)" else ""
    why = (
        f"{n_unfinished} {what} {of_runs}that did not finish skipped (--include-unfinished to replay "
        "them as far as they ran)"
    )
    if n_without:
        why += f"; {n_without} {what} without both the metric and the cost"
    return why


def _write_replay_outputs(
    results: Sequence[ReplayResult], targets: Sequence[Any], image_format: str | None, names: Sequence[str]
) -> None:
    from lightning_green.offline.outputs import decisions_text, plot_tradeoff

    with StagedOutputs() as out:
        out.write_text(targets[0], decisions_text(results), names[0])
        if image_format is not None:
            plot_tradeoff(results, out.stage(targets[1], names[1]), image_format=image_format)
        out.commit()


def _print_replay(
    args: argparse.Namespace,
    curves: Sequence[Curve],
    results: Sequence[ReplayResult],
    source: str,
    options: Mapping[str, Any],
    echo: Printer,
) -> None:
    units = sorted({r.cost_unit for r in results})
    with_lr = sum(1 for c in curves if any(h is not None for h in c.lr_hints or ()) or c.lrs is not None)
    lr_note = ""
    if with_lr:
        lr_note = f"; learning-rate schedule {'ignored' if args.ignore_lr else 'used'} for {with_lr}"
    echo(f"replayed {len(results)} curves from {source} (cost in {' and '.join(units)}{lr_note})")
    hf = [c.curve_id for c in curves if c.hf_trainer]
    if hf:
        echo(
            f"read {len(hf)} Hugging Face Trainer log(s) (their epoch as the epochs completed, their step as "
            "the Trainer's global step): " + ", ".join(hf)
        )
    recorded = [c for c in curves if c.recorded_config]
    if recorded:
        given = f" (given on the command line: {', '.join(sorted(options))})" if options else ""
        echo(f"policy arguments as recorded by {len(recorded)} run(s){given}")
    elsewhere = [c for c in curves if c.recorded_monitor and c.recorded_monitor != c.metric_name]
    if elsewhere:
        other = ", ".join(sorted({str(c.recorded_monitor) for c in elsewhere}))
        echo(
            f"note: {len(elsewhere)} run(s) recorded another monitored metric ({other}): replayed "
            f"{args.monitor!r} with the command-line options and defaults"
        )
    lost = [c.curve_id for c in curves if c.arguments_missing]
    if lost:
        echo(
            f"note: {len(lost)} run(s) checked by EnergyAwareEarlyStopping hold none of its parameters "
            f"({MAX_EPOCHS_PARAM}, the policy arguments; lost by the logger): replayed with the "
            "command-line options and defaults, not the arguments it ran with: " + ", ".join(lost)
        )
    unbudgeted = [c for c in curves if c.budget_not_applied is not None]
    if unbudgeted and "energy_budget_kwh" not in options:
        units = " and ".join(sorted({c.cost_unit for c in unbudgeted}))
        budget = keys.policy_param("energy_budget_kwh")
        echo(
            f"note: {len(unbudgeted)} run(s) recorded an energy budget ({budget}): not applied, the cost "
            f"is in {units}, not kWh (their stops on energy_budget are not replayed; replay with the "
            f"default cost, {keys.TOTAL_KWH}, to apply it)"
        )
    assumed = [c for c in curves if c.mode_assumed]
    if assumed:  # the rule report follows too (metric_direction)
        echo(assumed_mode_note(f"{len(assumed)} run(s)", [str(c.metric_name) for c in assumed]))
    per_metric = summarize_per_metric(results)  # a mean regret is in its metric's units
    names = {m.metric_name for m in per_metric}
    directions = {m.higher_is_better for m in per_metric}
    for m in per_metric:
        s = m.summary
        label = [m.metric_name or "unnamed metric"] if len(names) > 1 else []
        label += (
            ["higher is better" if m.higher_is_better else "lower is better"] if len(directions) > 1 else []
        )
        prefix = "" if len(per_metric) == 1 else f"[{', '.join(label)}, {s.n_curves} curves] "
        stops = ", ".join(f"{k} {v}" for k, v in sorted(s.stops.items(), key=lambda kv: -kv[1]))
        projected = ""
        if s.n_projected:
            projected = (
                f"; projected for {s.n_projected} run(s) their own stopper stopped: the cost of the rest "
                "of their planned run, from their measured epochs, not run"
            )
        echo(f"{prefix}mean cost saved: {s.mean_cost_saved:.3f} ({100 * s.mean_cost_saved:.1f}%{projected})")
        undefined = ""
        if s.n_regret_undefined:
            undefined = (
                f"; {s.n_regret_undefined} run(s) left out, stopped before any finite value: regret undefined"
            )
        echo(
            f"{prefix}mean regret: {s.mean_regret:.4g} (metric units, best of the whole curve minus best "
            f"up to the stop{undefined})"
        )
        echo(f"{prefix}stops: {stops}")
    echo(f"wrote {args.output}")
    if args.plot:
        echo(f"wrote {args.plot}")


def run_report(args: argparse.Namespace, echo: Printer = print) -> int:
    """``lightning-green report``: print a past run's summary; write its plot (and ``--json``).

    Args:
        args: The parsed ``report`` command line: the MLflow URI and run id, or a Lightning log
            file, ``--monitor``, ``--mode``, ``--cost-key`` (as replay's), ``--output`` and ``--json``.
        echo: Where the summary lines go.

    Returns:
        0; a refusal raises.
    """
    from lightning_green.report import (
        format_summary,
        plot_summary,
        summary_from_log,
        summary_from_mlflow,
        summary_json_text,
    )

    from_mlflow = args.mlflow_uri is not None or args.run_id is not None
    cost_key = checks.cost_key(args.cost_key)
    if from_mlflow == (args.log is not None):
        raise UsageError("give either --mlflow-uri URI --run-id ID or LOG (a Lightning log file)")
    if from_mlflow:
        if args.mlflow_uri is None or args.run_id is None:
            raise UsageError("MLflow input needs --mlflow-uri and --run-id")
        if not args.run_id.strip():
            raise UsageError("--run-id is empty: give the id of the MLflow run to report")
        checks.check_tracking_uri(args.mlflow_uri)
        database = checks.sqlite_file(args.mlflow_uri)
        inputs = [("MLflow database", database)] if database else []
        name = args.run_id
    else:
        checks.check_input_file("log", args.log)
        inputs = [("log", args.log)]
        run = open_lightning_log(args.log)
        inputs += _log_inputs({args.log: run}) if run is not None else []
        name = os.path.basename(os.path.dirname(os.path.abspath(args.log)))
    plot: str | None = f"energy_report_{name}.png" if args.output is None else args.output
    if args.output is None and importlib.util.find_spec("matplotlib") is None:
        plot = None  # the default plot, without matplotlib: skipped with a note
    outputs = [("-o/--output", plot)] if plot is not None else []
    outputs += [("--json", args.json)] if args.json is not None else []
    targets = dict(zip((flag for flag, _ in outputs), checks.check_outputs(outputs, inputs), strict=True))
    _check_log_outputs(outputs, {args.log: run} if not from_mlflow and run is not None else {})
    image_format = checks.image_format("-o/--output", plot) if plot is not None else None

    if from_mlflow:
        summary = summary_from_mlflow(
            args.mlflow_uri, args.run_id, monitor=args.monitor, mode=args.mode, cost_key=cost_key
        )
    else:
        summary = summary_from_log(args.log, monitor=args.monitor, mode=args.mode, run=run, cost_key=cost_key)
    text = format_summary(summary)
    with StagedOutputs() as out:
        if "--json" in targets:
            out.write_text(targets["--json"], summary_json_text(summary), f"--json {args.json}")
        if plot is not None:
            staged = out.stage(targets["-o/--output"], f"-o/--output {plot}")
            plot_summary(summary, staged, image_format=image_format)
        out.commit()
    echo = _written(echo)
    echo(text)
    if summary.get("mode_assumed"):  # as replay says it (metric_direction: one rule for both)
        echo(assumed_mode_note("the run", [str(summary.get("monitor"))]))
    if args.json is not None:
        echo(f"wrote {args.json}")
    if plot is None:
        echo("matplotlib is not installed: no plot drawn (pip install 'lightning_green[plot]')")
    else:
        echo(f"wrote {plot}")
    return 0
