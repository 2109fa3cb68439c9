"""A real 2-process DDP fit over gloo on the CPU, run by the tests as a standalone script.

Lightning's ``ddp`` strategy re-runs this script for rank 1, so it must be importable as a
script. Each rank writes what it saw to ``OUT/rank<N>.json``.

    python tests/ddp_fit.py OUT [--scripted] [--epochs N] [--callbacks monitor,stopper,batch,precision,...]
        [--lightning pytorch_lightning|lightning.pytorch] [--csv] [--mlflow] [--ckpt-dir DIR]
        [--ckpt-path CKPT] [--strategy ddp|ddp_spawn|ddp_fork] [--limit-batches N]

``--scripted`` replaces the hardware by a scripted meter per rank (an NVML-like GPU counter on
every rank, a host counter on local rank 0 only, as ``build_meter`` would arrange on a GPU box).
``--rank1-failed-read N`` makes rank 1's scripted meter fail its N-th read (1-based; the energy it
missed comes with its next read, as a counter that answers again gives it).
``--rank1-clock-rate R`` makes rank 1's clock, as its measurement session reads it, run R times as
fast as rank 0's: each rank's own time must never decide a collective.
``--estimate-platform P`` makes the CPU-time estimate see ``sys.platform`` as ``P`` on every rank
(``darwin``: the path of machines without ``/proc``); the launcher re-runs this script with the
same arguments, so rank 1 gets it too.
``--strategy ddp_spawn`` (or ``ddp_fork``) runs the fit in workers this process starts: ``--scripted``,
``--rank1-*`` and ``--estimate-platform`` do not reach spawned workers, and the ranks' records are
written only where the fit succeeds (Lightning calls no callback's ``on_exception`` in a worker).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import torch  # noqa: E402
from digits import for_lightning  # noqa: E402

import lightning_green  # noqa: E402
from lightning_green.callbacks import energy_monitor as energy_monitor_module  # noqa: E402
from lightning_green.energy.meter import EnergyMeter  # noqa: E402

# The Lightning namespace to train under (read before argparse: the classes below depend on it).
NAMESPACE = sys.argv[sys.argv.index("--lightning") + 1] if "--lightning" in sys.argv else "pytorch_lightning"
pl = importlib.import_module(NAMESPACE)
_DigitsDataModule, _DigitsClassifier = for_lightning(pl)


class DigitsDataModule(_DigitsDataModule):
    """The digits data, as a module-level class: ``ddp_spawn`` pickles it for its workers."""


class DigitsClassifier(_DigitsClassifier):
    """The digits classifier, as a module-level class (picklable for ``ddp_spawn``)."""


GPU_J_PER_READ = 1000.0  # rank r's scripted GPU adds (r + 1) * this per read
HOST_J_PER_READ = 10.0


class RankScriptedMeter(EnergyMeter):
    """A counter that grows by a fixed amount per read: exact expectations under DDP."""

    def __init__(
        self, rank: int, host: bool, gpu_j_per_read: float = GPU_J_PER_READ, failed_read: int | None = None
    ) -> None:
        super().__init__()
        self.rank, self.host, self.reads, self.gpu_j_per_read = rank, host, 0, gpu_j_per_read
        self.failed_read = failed_read
        self.source = "nvml+rapl" if host else "nvml"

    def _start(self) -> None:
        self.reads = 0

    def _read_j(self) -> dict[str, float]:
        self.reads += 1
        if self.reads == self.failed_read:
            raise RuntimeError("scripted read failure")
        out = {f"gpu:{self.rank}": self.reads * self.gpu_j_per_read * (self.rank + 1)}
        if self.host:
            out["rapl:package-0"] = self.reads * HOST_J_PER_READ
        return out


class FailingDigits(DigitsClassifier):
    """Raises in the second training step of epoch ``epoch``, on every rank."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.fail_epoch = epoch

    def training_step(self, batch, batch_idx):
        if self.current_epoch == self.fail_epoch and batch_idx == 1:
            raise RuntimeError("scripted failure")
        return super().training_step(batch, batch_idx)


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


class Recorder(pl.Callback):
    """Records, after every lightning_green callback, what this rank saw."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.cpu0_s = 0.0
        self.rows: list[dict] = []

    def setup(self, trainer, pl_module, stage):
        self.cpu0_s = _cpu_s()
        self.set_up = True  # in this process (not in the launching process of ddp_spawn workers)

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_batch_size = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if getattr(self, "epoch_batch_size", None) is None:
            self.epoch_batch_size = len(batch[0])  # what the dataloader really yields

    def on_train_epoch_end(self, trainer, pl_module):
        monitor = lightning_green.EnergyMonitor.for_trainer(trainer)
        self.rows.append(
            {
                "epoch": trainer.current_epoch,
                "cpu_s": _cpu_s() - self.cpu0_s,
                "total_j": monitor.ledger.total_j,
                "batch_size": getattr(self, "epoch_batch_size", None),
                "precision": trainer.precision,
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
            }
        )

    def on_exception(self, trainer, pl_module, exception):
        if getattr(self, "set_up", False):
            self.on_fit_end(trainer, pl_module)  # after EnergyMonitor's: its failed-fit summary is there

    def on_fit_end(self, trainer, pl_module):
        monitor = lightning_green.EnergyMonitor.for_trainer(trainer)
        stopper = next((c for c in trainer.callbacks if type(c).__name__ == "EnergyAwareEarlyStopping"), None)
        payload = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "pid": os.getpid(),
            "rows": self.rows,
            "history": [r.__dict__ for r in monitor.history],
            "source": monitor.energy_source,
            "summary": monitor.last_summary,
            "monitors": sum(isinstance(c, lightning_green.EnergyMonitor) for c in trainer.callbacks),
            "epochs_run": trainer.current_epoch,
            "trainer_class": f"{type(trainer).__module__}.{type(trainer).__name__}",
            "adapt": {
                c.key: {"history": c.history, "state": c.state_dict()}
                for c in trainer.callbacks
                if isinstance(c, (lightning_green.AdaptiveBatchSize, lightning_green.AdaptivePrecision))
            },
            "stopper": None
            if stopper is None
            else {
                "stopped_epoch": stopper.stopped_epoch,
                "stop_reason": None if stopper.stop_reason is None else stopper.stop_reason.value,
            },
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(payload))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--scripted", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--callbacks", default="monitor")
    parser.add_argument("--stopper-args", default="{}", help="JSON kwargs of EnergyAwareEarlyStopping")
    parser.add_argument("--batch-args", default="{}", help="JSON kwargs of AdaptiveBatchSize")
    parser.add_argument("--precision-args", default="{}", help="JSON kwargs of AdaptivePrecision")
    parser.add_argument("--lightning", default="pytorch_lightning", help="the Lightning namespace")
    parser.add_argument("--rank1-clock-rate", type=float, default=1.0, help="rank 1's window clock rate")
    parser.add_argument("--monitor-args", default="{}", help="JSON kwargs of EnergyMonitor")
    parser.add_argument("--estimate-platform", default=None, help="sys.platform as the estimate sees it")
    parser.add_argument("--devices", type=int, default=2, help="the number of ranks")
    parser.add_argument("--csv", action="store_true", help="log to a CSVLogger in OUT/csv")
    parser.add_argument("--mlflow", action="store_true", help="log to an MLFlowLogger, store OUT/mlflow.db")
    parser.add_argument("--strategy", default="ddp", help="ddp, or ddp_spawn/ddp_fork (workers)")
    parser.add_argument(
        "--limit-batches", type=int, default=None, help="train batches an epoch (and 1 of validation)"
    )
    parser.add_argument(
        "--scripted-gpu-j",
        type=float,
        default=GPU_J_PER_READ,
        help="rank r's scripted GPU J per read / (r+1)",
    )
    parser.add_argument("--rank1-failed-read", type=int, default=None, help="rank 1's meter fails this read")
    parser.add_argument(
        "--fail-in-epoch", type=int, default=None, help="training_step raises there, every rank"
    )
    parser.add_argument("--ckpt-dir", type=Path, default=None, help="save DIR/epoch=N.ckpt every epoch")
    parser.add_argument("--ckpt-path", type=Path, default=None, help="resume the fit from this checkpoint")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.rank1_clock_rate != 1.0 and os.environ.get("LOCAL_RANK") == "1":
        import time
        from types import SimpleNamespace

        from lightning_green.energy import session

        rate, origin = args.rank1_clock_rate, time.monotonic()
        session.time = SimpleNamespace(monotonic=lambda: origin + rate * (time.monotonic() - origin))

    if args.estimate_platform is not None:
        from types import SimpleNamespace

        from lightning_green.energy import estimate

        estimate.sys = SimpleNamespace(platform=args.estimate_platform)

    if args.scripted:

        def scripted_build_meter(spec, *, cuda_indices=(), host_reader=True, **_):
            rank = int(os.environ.get("LOCAL_RANK", "0"))
            failed_read = args.rank1_failed_read if rank == 1 else None
            return RankScriptedMeter(
                rank, host_reader, gpu_j_per_read=args.scripted_gpu_j, failed_read=failed_read
            )

        energy_monitor_module.build_meter = scripted_build_meter

    callbacks: list[pl.Callback] = []
    for name in args.callbacks.split(","):
        if name == "monitor":
            kwargs = {"monitor": "val_acc", "mode": "max", **json.loads(args.monitor_args)}
            callbacks.append(lightning_green.EnergyMonitor(**kwargs))
        elif name == "stopper":
            callbacks.append(lightning_green.EnergyAwareEarlyStopping(**json.loads(args.stopper_args)))
        elif name == "batch":
            callbacks.append(lightning_green.AdaptiveBatchSize(**json.loads(args.batch_args)))
        elif name == "precision":
            callbacks.append(lightning_green.AdaptivePrecision(**json.loads(args.precision_args)))
    callbacks.append(Recorder(args.out))
    if args.ckpt_dir is not None:
        checkpoint = importlib.import_module(f"{NAMESPACE}.callbacks").ModelCheckpoint
        callbacks.append(checkpoint(dirpath=args.ckpt_dir, save_top_k=-1, filename="{epoch}"))
    loggers_module = importlib.import_module(f"{NAMESPACE}.loggers")
    loggers = [loggers_module.CSVLogger(str(args.out), name="csv")] if args.csv else []
    if args.mlflow:
        uri = f"sqlite:///{args.out / 'mlflow.db'}"
        loggers.append(loggers_module.MLFlowLogger(experiment_name="ddp", tracking_uri=uri))
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=args.devices,
        strategy=args.strategy,
        logger=loggers or False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=args.ckpt_dir is not None,
        default_root_dir=str(args.out),
        **(
            {}
            if args.limit_batches is None
            else {"limit_train_batches": args.limit_batches, "limit_val_batches": 1, "log_every_n_steps": 1}
        ),
    )
    model = DigitsClassifier() if args.fail_in_epoch is None else FailingDigits(args.fail_in_epoch)
    try:
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=32), ckpt_path=args.ckpt_path)
    except Exception as err:  # ddp_spawn's launching process gets the worker's traceback as text
        if "scripted failure" not in str(err):
            raise
    # Leave the process group before the interpreter exits: gloo's threads torn down at exit can
    # abort a rank ("terminate called without an active exception") after a successful fit.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
