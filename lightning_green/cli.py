"""The ``lightning-green`` command.

``lightning-green report --mlflow-uri URI --run-id ID [-o PLOT.png]`` draws the end-of-run plot
(the monitored metric against cumulative kWh, epoch energy, the stop and the learning-curve fit)
for a past run.

``lightning-green replay CURVES.csv -o DECISIONS.csv [policy options]`` replays the stopping policy
over logged learning curves (the long format of ``shared/data/curves``) and writes one decision per
curve; ``lightning-green replay --mlflow-uri URI --experiment NAME -o DECISIONS.csv`` does the same
over MLflow runs that logged the monitored metric and ``energy/total_kwh``.
The policy options are the :class:`~lightning_green.policy.StoppingConfig` fields (the policy
arguments of ``EnergyAwareEarlyStopping``) in kebab case, with the same defaults; ``none``
switches an optional threshold off (``--min-relative-gain none``).

MLflow runs logged with ``EnergyAwareEarlyStopping`` recorded its settings as run parameters, and
replay uses them per run for everything not given on the command line: the monitored metric and
its direction (``lightning_green.monitor``/``lightning_green.mode``, so ``--monitor`` and ``--mode``
may be left out) and every policy argument (``lightning_green.<name>``), so the replayed decision
is the callback's. Options given explicitly override the recorded arguments; a ``--mode`` that
contradicts the direction a run recorded for the same metric is an error (exit 2). A ``--monitor``
other than the run's recorded metric replays that metric with the command-line options and
defaults, as for runs that recorded nothing.

The replay tells the policy what the callback told it: where a CSV curve has an ``lr`` column
(the learning rate of each epoch), ``epochs_until_lr_decay`` follows from it; MLflow runs carry
the callback's own ``energy/epochs_until_lr_decay`` and planned horizon
(``lightning_green.max_epochs``). ``--ignore-lr`` replays without schedule information;
``--max-epochs`` overrides the planned horizon (default: the run's recorded plan, else each
curve's last epoch).

Exit codes: 0 success, 1 bad input data (reported as ``file:line:column``) or a failure to write
the outputs, 2 bad arguments (including an output or ``--plot`` destination in a directory that
does not exist, ``--plot`` without matplotlib, a ``sqlite:///PATH`` tracking URI whose database
file does not exist (checked before MLflow would create an empty one), or arguments that
contradict what an MLflow run recorded). Nothing is written unless everything
succeeded: DECISIONS and the plot are written to temporary files beside their targets and renamed
into place only once both exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning_green.offline import (
    ENERGY_KEY,
    RecordedParamError,
    config_for,
    plot_tradeoff,
    read_curves_csv,
    read_mlflow_curves,
    replay_curve,
    summarize,
    write_decisions_csv,
)
from lightning_green.offline.outputs import make_readable
from lightning_green.policy import StoppingConfig

_HELP = {
    "mode": "min: lower is better; max: higher is better (MLflow input, default: the direction each run "
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
}


_URI_HELP = "MLflow tracking URI (sqlite:///PATH: the database file must exist; http://HOST:PORT)"


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    """The StoppingConfig fields as options; one not given is absent from the parsed namespace.

    (``argparse.SUPPRESS`` as the default: that is how replay tells an explicit option, which
    overrides what an MLflow run recorded, from a default, which does not.)
    """
    group = parser.add_argument_group(
        "policy options (EnergyAwareEarlyStopping arguments)",
        "Defaults are the callback's. For MLflow input, an option not given takes the value each run "
        "recorded (run parameter lightning_green.<name>, logged by EnergyAwareEarlyStopping), so the "
        "replay reproduces the callback's decision; an option given overrides it.",
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
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser(
        "replay",
        help="replay the stopping policy over logged learning curves",
        description="Replay the stopping policy over logged learning curves (CSV or MLflow) and report "
        "what it would have saved.",
    )
    rp.add_argument(
        "curves",
        nargs="?",
        help="curves CSV (long format: curve_id, epoch, metric, higher_is_better, time_s, energy_J)",
    )
    rp.add_argument("-o", "--output", required=True, help="decisions CSV to write")
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
    mlf = rp.add_argument_group("MLflow input")
    mlf.add_argument("--mlflow-uri", default=None, help=_URI_HELP)
    mlf.add_argument("--experiment", default=None, help="MLflow experiment name")
    mlf.add_argument(
        "--monitor",
        default=None,
        help="monitored metric key (MLflow input; e.g. val_loss; default: the metric each run recorded, "
        "lightning_green.monitor)",
    )
    mlf.add_argument(
        "--cost-key", default=None, help=f"cumulative kWh metric (MLflow input; default: {ENERGY_KEY})"
    )
    _add_policy_options(rp)

    rep = sub.add_parser(
        "report",
        help="draw the energy report of a past MLflow run",
        description="Draw the monitored metric against cumulative kWh (epoch energy as bars, the stop and "
        "its reason, the learning-curve fit and its projection) for a run logged with lightning_green.",
    )
    rep.add_argument("--mlflow-uri", required=True, help=_URI_HELP)
    rep.add_argument("--run-id", required=True, help="the MLflow run")
    rep.add_argument("--monitor", default=None, help="metric to draw (default: the run's monitored metric)")
    rep.add_argument(
        "-o", "--output", default=None, help="PNG to write (default: energy_report_<run_id>.png)"
    )
    rep.add_argument("--json", default=None, help="also write the summary as JSON to this file")
    return parser


def _explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The policy options given on the command line (``mode`` excepted: curves carry it)."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(StoppingConfig)
        if f.name != "mode" and hasattr(args, f.name)
    }


def _check_tracking_uri(parser: argparse.ArgumentParser, uri: str) -> None:
    """Refuse a tracking URI that would make MLflow create a store instead of reading one.

    An empty URI (MLflow would fall back to its default store in the working directory) and a
    ``sqlite:///PATH`` whose file does not exist, or is not an SQLite database (an empty file
    included), are refused, and so is an ``http(s)://`` address where no server answers within
    a few seconds (MLflow itself retries for minutes before it says so).
    """
    if not uri.strip():
        parser.error("--mlflow-uri is empty: give the store to read (sqlite:///PATH or http://HOST:PORT)")
    if uri.startswith(("http://", "https://")):
        problem = _unreachable(uri)
        if problem is not None:
            parser.error(f"--mlflow-uri {uri}: no MLflow server answers there ({problem})")
        return
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    path = uri[len(prefix) :].split("?", 1)[0]
    if not path or path == ":memory:":
        return
    if not Path(path).is_file():
        parser.error(
            f"--mlflow-uri {uri}: no MLflow database at {path!r} (the file does not exist; "
            "give the path of an existing store)"
        )
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as e:
        parser.error(f"--mlflow-uri {uri}: cannot read {path!r}: {e}")
    if header != b"SQLite format 3\x00":
        parser.error(
            f"--mlflow-uri {uri}: {path!r} is not an SQLite database ("
            f"{'an empty file' if not header else 'another kind of file'}); give the path of an MLflow store"
        )


def _unreachable(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why no server answers at ``uri`` (its ``/health`` endpoint), or None when one does.

    Any HTTP answer counts, an error status included (a proxy or an authenticating server).
    """
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, "reason", e))


def _check_image_format(parser: argparse.ArgumentParser, flag: str, path: str) -> None:
    """Refuse an image file name whose extension matplotlib cannot write (none means PNG)."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        parser.error(
            f"{flag} {path}: matplotlib cannot write {suffix!r} images; use one of {sorted(formats)}"
        )


def _check_destination(parser: argparse.ArgumentParser, flag: str, path: str) -> None:
    parent = Path(path).parent
    if not parent.is_dir():
        parser.error(f"{flag} {path}: directory {str(parent)!r} does not exist")
    if Path(path).is_dir():
        parser.error(f"{flag} {path}: is a directory")


def _replay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from_mlflow = args.mlflow_uri is not None or args.experiment is not None
    if from_mlflow == (args.curves is not None):
        parser.error("give either CURVES.csv or --mlflow-uri URI --experiment NAME")
    if from_mlflow and (args.mlflow_uri is None or args.experiment is None):
        parser.error("MLflow input needs --mlflow-uri and --experiment")
    if from_mlflow:
        _check_tracking_uri(parser, args.mlflow_uri)
    else:
        given = [
            flag for flag, value in (("--monitor", args.monitor), ("--cost-key", args.cost_key)) if value
        ]
        if given:
            parser.error(
                f"{' and '.join(given)} only apply to MLflow input (--mlflow-uri/--experiment); a CSV names "
                "its metric and cost in its columns"
            )
    cost_key = args.cost_key or ENERGY_KEY
    if args.max_epochs is not None and args.max_epochs <= 0:
        parser.error(f"--max-epochs must be a positive integer, got {args.max_epochs}")
    _check_destination(parser, "-o/--output", args.output)
    if args.plot:
        _check_destination(parser, "--plot", args.plot)
        if importlib.util.find_spec("matplotlib") is None:
            parser.error("--plot needs matplotlib: pip install 'lightning_green[plot]'")
        _check_image_format(parser, "--plot", args.plot)
    options = _explicit_options(args)
    # Checked up front; without --mode each curve's own direction decides (e.g. the thresholds' order).
    errors: list[str] = []
    for mode in (args.mode,) if args.mode else ("min", "max"):
        try:
            StoppingConfig.from_dict({**options, "mode": mode})
            break
        except ValueError as e:
            errors.append(str(e))
    else:
        parser.error(errors[0])

    source = args.curves
    try:
        if from_mlflow:
            curves, skipped = read_mlflow_curves(
                args.mlflow_uri, args.experiment, args.monitor, mode=args.mode, cost_key=cost_key
            )
            source = f"{args.mlflow_uri} experiment {args.experiment!r}"
            metric = repr(args.monitor) if args.monitor else "the monitored metric"
            if skipped:
                print(f"skipped {len(skipped)} run(s) without both {metric} and {cost_key!r}")
            if not curves:
                print(f"error: no run in {source} logged both {metric} and {cost_key!r}", file=sys.stderr)
                return 1
        else:
            curves = read_curves_csv(args.curves)
            if args.mode is not None:
                wrong = [c.curve_id for c in curves if c.mode != args.mode]
                if wrong:
                    parser.error(f"--mode {args.mode} contradicts higher_is_better of curve {wrong[0]!r}")
    except RecordedParamError as e:
        parser.error(str(e))
    except (OSError, ValueError, RuntimeError) as e:  # CurveFormatError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1

    if args.max_epochs is not None:
        longer = [c for c in curves if int(c.epochs[-1]) > args.max_epochs]
        if longer:
            parser.error(
                f"--max-epochs {args.max_epochs} is below the {int(longer[0].epochs[-1])} epochs curve "
                f"{longer[0].curve_id!r} ran: the planned length must be at least what was trained"
            )
    try:
        configs = [config_for(c, options) for c in curves]
    except ValueError as e:  # explicit options that the recorded ones make invalid together
        parser.error(str(e))
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
    try:
        _write_outputs(results, args.output, args.plot)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: nothing written: {e}", file=sys.stderr)
        return 1

    units = sorted({r.cost_unit for r in results})
    with_lr = sum(1 for c in curves if c.lr_hints is not None or c.lrs is not None)
    lr_note = ""
    if with_lr:
        lr_note = f"; learning-rate schedule {'ignored' if args.ignore_lr else 'used'} for {with_lr}"
    print(f"replayed {len(results)} curves from {source} (cost in {' and '.join(units)}{lr_note})")
    if from_mlflow:
        recorded = [c for c in curves if c.recorded_config]
        if recorded:
            given = f" (given on the command line: {', '.join(sorted(options))})" if options else ""
            print(f"policy arguments as recorded by {len(recorded)} run(s){given}")
        elsewhere = [c for c in curves if c.recorded_monitor and c.recorded_monitor != c.metric_name]
        if elsewhere:
            other = ", ".join(sorted({str(c.recorded_monitor) for c in elsewhere}))
            print(
                f"note: {len(elsewhere)} run(s) recorded another monitored metric ({other}): replayed "
                f"{args.monitor!r} with the command-line options and defaults"
            )
    groups = {"all": results}
    if len({r.higher_is_better for r in results}) > 1:
        groups = {
            "lower is better": [r for r in results if not r.higher_is_better],
            "higher is better": [r for r in results if r.higher_is_better],
        }
    for label, group in groups.items():
        s = summarize(group)
        prefix = "" if label == "all" else f"[{label}, {s.n_curves} curves] "
        stops = ", ".join(f"{k} {v}" for k, v in sorted(s.stops.items(), key=lambda kv: -kv[1]))
        print(f"{prefix}mean cost saved: {s.mean_cost_saved:.3f} ({100 * s.mean_cost_saved:.1f}%)")
        print(
            f"{prefix}mean regret: {s.mean_regret:.4g} (metric units, best of the whole curve minus best "
            "up to the stop)"
        )
        print(f"{prefix}stops: {stops}")
    print(f"wrote {args.output}")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def _write_outputs(results: Sequence[Any], output: str, plot: str | None) -> None:
    """Write DECISIONS (and the plot) all or nothing.

    Each is first written to a temporary file beside its target (the plot first: it is the one
    that can fail late, e.g. on an image format matplotlib does not know); only when both exist
    are they renamed into place. A rename within a directory is atomic, so a failure can only
    leave a half-done state if the file system fails between the two renames.
    """
    staged: list[tuple[str, str]] = []
    try:
        if plot:
            target = Path(plot)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            staged.append((tmp, plot))
            # The format from the target's extension (the temporary name has none of its own).
            if not plot_tradeoff(results, tmp, image_format=target.suffix.lstrip(".") or "png"):
                raise RuntimeError("matplotlib is not installed: pip install 'lightning_green[plot]'")
            make_readable(tmp)
        target = Path(output)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        staged.append((tmp, output))
        write_decisions_csv(results, tmp)
        for tmp, target_path in reversed(staged):  # DECISIONS first, the plot last
            os.replace(tmp, target_path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lightning_green.report import format_summary, plot_summary, summary_from_mlflow, write_summary_json

    _check_tracking_uri(parser, args.mlflow_uri)
    if args.output:
        _check_destination(parser, "-o/--output", args.output)
        if importlib.util.find_spec("matplotlib") is not None:
            _check_image_format(parser, "-o/--output", args.output)
    if args.json:
        _check_destination(parser, "--json", args.json)

    try:
        summary = summary_from_mlflow(args.mlflow_uri, args.run_id, monitor=args.monitor)
    except ImportError:
        print(
            "error: the report command needs mlflow (pip install 'lightning_green[mlflow]')", file=sys.stderr
        )
        return 1
    except Exception as e:  # unknown run, unreachable server, no energy metrics
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if args.json:
        print(f"wrote {write_summary_json(summary, args.json)}")
    output = args.output or f"energy_report_{args.run_id}.png"
    try:
        print(f"wrote {plot_summary(summary, output)}")
    except ImportError:
        print("matplotlib is not installed: no plot drawn (pip install 'lightning_green[plot]')")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 on bad input data, 2 on bad arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "replay":
        return _replay(args, parser)
    if args.command == "report":
        return _report(args, parser)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it first
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
