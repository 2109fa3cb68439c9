"""The ``lightning-green`` command.

``lightning-green report --mlflow-uri URI --run-id ID [-o PLOT.png] [--json SUMMARY.json]`` prints
the summary of a past run and draws its end-of-run plot (the monitored metric against cumulative
kWh, epoch energy, the stop and the learning-curve fit); ``lightning-green report LOG`` does the
same for a run logged with ``CSVLogger`` (its ``metrics.csv``) or ``TensorBoardLogger`` (an event
file). ``--cost-key`` is replay's (one option, one check, :func:`add_cost_key_option`): ``step``
draws the run, and gives its figures, against the optimizer steps, as replay replays it.

``lightning-green replay CURVES.csv -o DECISIONS.csv [policy options]`` replays the stopping policy
over logged learning curves (the long format of ``benchmarks/data/curves``) and writes one decision
per curve; ``lightning-green replay --mlflow-uri URI --experiment NAME -o DECISIONS.csv`` does the
same over MLflow runs that logged the monitored metric and ``energy/total_kwh``, and
``lightning-green replay 'lightning_logs/version_*/metrics.csv' -o DECISIONS.csv`` over runs
logged with Lightning's ``CSVLogger`` (read as MLflow runs are, with their ``hparams.yaml``);
likewise ``'lightning_logs/version_*/events.out.tfevents.*'`` for ``TensorBoardLogger`` logs.
The policy options are the :class:`~lightning_green.policy.StoppingConfig` fields (the policy
arguments of ``EnergyAwareEarlyStopping``) in kebab case, with the same defaults; ``none``
switches an optional threshold off (``--min-relative-gain none``).

MLflow runs (and Lightning logs) of ``EnergyAwareEarlyStopping`` recorded its settings as run parameters, and
replay uses them per run for everything not given on the command line: the monitored metric and
its direction (``lightning_green.monitor``/``lightning_green.mode``, so ``--monitor`` and ``--mode``
may be left out) and every policy argument (``lightning_green.<name>``), so the replayed decision
is the callback's. Options given explicitly override the recorded arguments; a ``--mode`` that
contradicts the direction a run recorded for the same metric is an error (exit 2). A ``--monitor``
other than the run's recorded metric replays that metric with the command-line options and
defaults, as for runs that recorded nothing.

The replay tells the policy what the callback told it: where a CSV curve has an ``lr`` column
(the learning rate of each epoch), ``epochs_until_lr_decay`` follows from its step drops (rates
that change at every check, as cosine schedules write them, announce none); MLflow runs carry
the callback's own ``energy/epochs_until_lr_decay`` and planned horizon
(``lightning_green.max_epochs``). ``--ignore-lr`` replays without schedule information;
``--max-epochs`` overrides the planned horizon (default: the run's recorded plan, else each
curve's last epoch).

Nothing is written unless the whole command succeeded: every output is written to a temporary
file beside it and renamed into place once all of them are complete. An output that would
replace an input (the curves file, the MLflow sqlite database, the other output; however the
path is spelled) or that is not a regular file (a directory, a device, a FIFO) is refused before
any work. Inputs are bounded (:data:`~lightning_green.offline.csv_curves.MAX_LINE_CHARS`
characters a CSV line, :data:`~lightning_green.offline.csv_curves.MAX_ROWS` rows a CSV file,
:data:`~lightning_green.offline.summary_artifact.MAX_PER_EPOCH` epochs a summary).

Exit codes: 0 success; 2 bad arguments or bad input, reported as one ``error:`` line (malformed
CSV as ``file:line:column``, a malformed ``energy_summary.json`` artifact naming the field, an
output that must not be written, arguments that contradict what an MLflow run recorded); 1 any
other failure (no such experiment or run, a run without energy metrics, an MLflow server error,
the outputs could not be written). No traceback is shown (set ``LIGHTNING_GREEN_TRACEBACK=1`` to
see one for a failure that is not about the input).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lightning_green import __version__, keys
from lightning_green.offline.errors import OfflineInputError
from lightning_green.policy import StoppingConfig

ENERGY_KEY = keys.TOTAL_KWH

_HELP = {
    "mode": "min: lower is better; max: higher is better (MLflow input and Lightning logs, default: the "
    "direction each run "
    "recorded for the metric, lightning_green.mode, else min; CSV curves carry higher_is_better)",
    "min_delta": "minimum change that counts as improvement for the plateau rule",
    "patience": "checks without improvement before the plateau rule stops",
    "check_finite": "stop when the metric becomes NaN or infinite",
    "stopping_threshold": "stop once the metric is better than this",
    "divergence_threshold": "stop once the metric is worse than this",
    "min_epochs": "no plateau or marginal-gain stop before this many epochs",
    "energy_budget_kwh": "stop before the next check would take the cumulative cost over this",
    "min_gain_per_kwh": "stop when the rest of the run is projected to buy less than this per kWh",
    "min_relative_gain": "stop when a further kWh is projected to buy less than this fraction of "
    "what the average kWh bought so far",
    "min_horizon_fraction": "no marginal-gain stop until more than this fraction of max epochs has run",
    "patience_rest_fraction": "near the planned end, a plateau also stops after this fraction of the "
    "checks still planned without improvement (at least 10, at most patience; none: patience alone)",
}


COST_KEY_HELP = (
    "the cost each point of the curve is put against (replay's cost, report's x-axis and figures): a "
    f"running total the run logged (default: {ENERGY_KEY}, the cumulative kWh; it must never decrease), or "
    f"{keys.STEP}: the optimizer steps done at each point (the step it was logged at plus one), for runs "
    "logged without energy"
)
"""The help of ``--cost-key``, one text for ``replay`` and ``report``."""

_URI_HELP = "MLflow tracking URI (sqlite:///PATH: the database file must exist; http://HOST:PORT)"


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def add_cost_key_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--cost-key``, as ``replay`` and ``report`` take it: one option, one help, one check.

    Absent from the command line it is ``None``; the commands resolve it (the energy key by
    default) and refuse a blank one with :func:`lightning_green.offline.checks.cost_key`.

    Args:
        parser: The subcommand's parser, or one of its argument groups.
    """
    parser.add_argument("--cost-key", default=None, metavar="KEY", help=COST_KEY_HELP)


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    """The StoppingConfig fields as options; one not given is absent from the parsed namespace.

    (``argparse.SUPPRESS`` as the default: that is how replay tells an explicit option, which
    overrides what an MLflow run recorded, from a default, which does not.)
    """
    group = parser.add_argument_group(
        "policy options (EnergyAwareEarlyStopping arguments)",
        "Defaults are the callback's. For MLflow input and Lightning logs, an option not given takes the "
        "value each run "
        "recorded (run parameter lightning_green.<name>, logged by EnergyAwareEarlyStopping), so the "
        "replay reproduces the callback's decision; an option given overrides it. A --monitor other "
        "than the metric the run's stopper watched replays with the options given and these defaults.",
    )
    for f in dataclasses.fields(StoppingConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{_HELP.get(f.name, '')} (default: {f.default})"
        kind = str(f.type)
        if f.name == "mode":
            group.add_argument(flag, choices=("min", "max"), default=None, help=_HELP["mode"])
        elif kind == "bool":
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            parse: Callable[[str], Any] = int if kind.startswith("int") else float
            if "None" in kind:
                parse = _optional(parse)
            group.add_argument(
                flag,
                type=parse,
                default=argparse.SUPPRESS,
                metavar="N" if parse is int else "X",
                help=help_text,
            )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lightning-green``."""
    parser = argparse.ArgumentParser(
        prog="lightning-green", description="Energy-aware training: offline tools."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser(
        "replay",
        help="replay the stopping policy over logged learning curves",
        description="Replay the stopping policy over logged learning curves (CSV or MLflow) and report "
        "what it would have saved.",
    )
    rp.add_argument(
        "curves",
        nargs="*",
        metavar="CURVES.csv",
        help="curves CSV files or quoted glob patterns ('runs/*.csv'; long format: curve_id, epoch, "
        "metric, higher_is_better, time_s, energy_J; epoch may be fractional progress). From several "
        "files, each curve_id is written FILE:curve_id. A Lightning CSVLogger metrics.csv "
        "('lightning_logs/version_*/metrics.csv') or a TensorBoard events.out.tfevents.* file is one "
        "run, named by its folder, read as an MLflow run (--monitor, --cost-key and the recorded "
        "hyperparameters apply)",
    )
    rp.add_argument(
        "-o", "--output", required=True, help="decisions CSV to write (never an input; replaced atomically)"
    )
    rp.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="planned length of the runs in epochs (default: the horizon an MLflow run recorded, "
        "else each curve's last epoch)",
    )
    rp.add_argument(
        "--ignore-lr",
        action="store_true",
        help="give the policy no learning-rate schedule information (by default it gets what the "
        "callback got: epochs_until_lr_decay from a CSV 'lr' column or the MLflow runs)",
    )
    rp.add_argument(
        "--plot", default=None, help="also draw cost saved against regret to this image (matplotlib)"
    )
    mlf = rp.add_argument_group(
        "MLflow input (--include-unfinished, --monitor and --cost-key also for Lightning logs)"
    )
    mlf.add_argument("--mlflow-uri", default=None, help=_URI_HELP)
    mlf.add_argument("--experiment", default=None, help="MLflow experiment name")
    mlf.add_argument(
        "--include-unfinished",
        action="store_true",
        help="also replay runs that did not finish (MLflow status FAILED, KILLED or RUNNING; a Lightning "
        "log whose energy_summary.json says failed), as far as they ran (by default they are skipped "
        "and named)",
    )
    mlf.add_argument(
        "--monitor",
        default=None,
        help="monitored metric key (MLflow input, Lightning logs; e.g. val_loss; default: the metric each "
        "run recorded, "
        "lightning_green.monitor)",
    )
    add_cost_key_option(mlf)
    _add_policy_options(rp)

    rep = sub.add_parser(
        "report",
        help="draw the energy report of a past run (MLflow, or a Lightning log)",
        description="Draw the monitored metric against cumulative kWh (epoch energy as bars, the stop and "
        "its reason, the learning-curve fit and its projection) for a run logged with lightning_green; "
        "with --cost-key, against replay's cost instead (step: the optimizer steps, also for a run "
        "logged without energy).",
    )
    rep.add_argument(
        "log",
        nargs="?",
        default=None,
        metavar="LOG",
        help="a Lightning log instead of an MLflow run: a CSVLogger metrics.csv or a TensorBoard "
        "events.out.tfevents.* file (the summary EnergyMonitor wrote beside it, else rebuilt)",
    )
    rep.add_argument("--mlflow-uri", default=None, help=_URI_HELP)
    rep.add_argument("--run-id", default=None, help="the MLflow run")
    rep.add_argument("--monitor", default=None, help="metric to draw (default: the run's monitored metric)")
    rep.add_argument(
        "--mode",
        choices=("min", "max"),
        default=None,
        help="direction of a --monitor the run recorded none for (default: min, with a note; a metric the "
        "run recorded keeps its recorded direction, and a --mode that contradicts it is an error, as in "
        "replay; so is --mode for a run with no metric to draw, one recorded without a monitored metric, "
        "unless --monitor names one)",
    )
    add_cost_key_option(rep)
    rep.add_argument(
        "-o",
        "--output",
        default=None,
        help="PNG to write (default: energy_report_<run_id>.png, or the log's folder name)",
    )
    rep.add_argument("--json", default=None, help="also write the summary as JSON to this file")
    parser.epilog = (
        "Exit status: 0 success, 2 bad arguments or input (one 'error:' line; nothing written), "
        "1 any other failure."
    )
    return parser


def _one_line(error: BaseException) -> str:
    """The error on one line: an HTML page an HTTP server answered with cut to its title."""
    text = " ".join(str(error).split()) or type(error).__name__
    page = re.search(r"<!doctype html|<html", text, re.IGNORECASE)
    if page is not None:  # e.g. a 404 page of a server that is no MLflow tracking server
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        shown = f"(an HTML page: {title.group(1).strip()})" if title else "(an HTML page)"
        head = text[: page.start()].rstrip(" '\"")
        text = f"{head} {shown}"
    return text if len(text) <= 2000 else text[:1997] + "..."


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _run(argv: Sequence[str] | None) -> int:
    from lightning_green.offline import commands

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return commands.run_replay(args) if args.command == "replay" else commands.run_report(args)
    except OfflineInputError as e:  # bad arguments or input, found before anything was written
        _fail(_one_line(e))
        return 2
    except (OSError, LookupError, ValueError, RuntimeError, ImportError) as e:
        _fail(f"nothing written: {_one_line(e)}")
        return 1
    except Exception as e:
        origin = type(e).__module__.split(".")[0]
        if origin == "alembic":  # an older mlflow's schema migration, on a store a newer one wrote
            _fail(
                "nothing written: the MLflow store's database schema is unknown to the installed mlflow "
                f"{_installed('mlflow')} (written by a newer MLflow? upgrade mlflow to read it): "
                f"{_one_line(e)}"
            )
            return 2
        if origin != "mlflow":
            raise
        _fail(f"nothing written: MLflow: {_one_line(e)}")  # unknown run, server error
        return 1


def _installed(distribution: str) -> str:
    """The installed version of ``distribution`` (``"?"`` when its metadata cannot be read)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


@contextlib.contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Keep alembic's messages below WARNING off the output for the duration (its level then restored).

    mlflow 2 opening an SQLite store runs alembic, whose ``INFO [alembic.runtime.migration] ...``
    lines reach stderr once logging is configured as mlflow 2's migration configures it (a store
    created in the process): they would come before the command's own output and errors.
    """
    logger = logging.getLogger("alembic")
    level = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (no traceback reaches the user).

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on bad arguments or bad input, 1 on any other failure.
    """
    try:
        with _alembic_quiet():
            return _run(argv)
    except KeyboardInterrupt:
        _fail("interrupted; nothing written")
        return 130
    except Exception as e:  # the last resort: a failure nothing above foresaw
        if os.environ.get("LIGHTNING_GREEN_TRACEBACK"):
            raise
        _fail(
            f"nothing written: unexpected {type(e).__name__}: {_one_line(e)} "
            "(set LIGHTNING_GREEN_TRACEBACK=1 to see where; please report it)"
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
