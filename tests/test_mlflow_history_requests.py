"""A resumed run's earlier part reaches a new MLflow run in a few requests, as the per-step path wrote it.

A fit resumed from a checkpoint into a new log copies the run's earlier records into it
(``_loggers.log_history``). Into MLflow that used to be one request (one SQLite transaction) a
step, and the active run's ``log_metrics`` one a metric: an 894-epoch run's copy took seconds before
its first epoch, on every resume, counted as the run's energy. The copy now goes in ``log_batch``
requests of at most 1000 metrics: the counts here are of the store's requests, never of time.
"""

from __future__ import annotations

import math
import types

import pytest
from conftest import make_trainer
from doubles import install_scripted_meter

from lightning_green import EnergyAwareEarlyStopping, keys
from lightning_green.callbacks import _loggers
from lightning_green.offline import latest_per_step

mlflow = pytest.importorskip("mlflow")

STEPS = 210
"""Steps of the copied history: 6 points each (5 under autolog, without ``epoch``): two requests."""

ODD_KEY = "val_loss(ema)"
"""A key ``MLFlowLogger`` cleans up (to ``val_lossema``): the copy keeps the logger's own clean-up."""


def _rows(odd_key: str = ODD_KEY, steps: int = STEPS) -> list[tuple[int, int | None, dict[str, float]]]:
    """A run's earlier records as the monitor and the stopper give them: an epoch's and its check's."""
    rows: list[tuple[int, int | None, dict[str, float]]] = []
    for epoch in range(steps):
        step = 4 * epoch + 3
        total = 0.001 * (epoch + 1) + 1e-9 * epoch**2
        rows.append((step, epoch, {keys.TOTAL_KWH: total, keys.EPOCH_KWH: 0.001, "epoch": float(epoch)}))
        rows.append(
            (step, epoch, {keys.CHECK_NUMBER: epoch + 1.0, keys.CHECK_KWH: total, odd_key: 1 / (epoch + 1)})
        )
    return rows


@pytest.fixture
def requests(monkeypatch) -> list[tuple[str, int]]:
    """The requests every SQLite store of the process gets from here on: ``(method, metrics)``."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    sent: list[tuple[str, int]] = []
    log_batch, log_metric = SqlAlchemyStore.log_batch, SqlAlchemyStore.log_metric

    def counted_batch(self, run_id, metrics, params, tags):
        sent.append(("log_batch", len(metrics)))
        return log_batch(self, run_id, metrics, params, tags)

    def counted_metric(self, run_id, metric):
        sent.append(("log_metric", 1))
        return log_metric(self, run_id, metric)

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", counted_batch)
    monkeypatch.setattr(SqlAlchemyStore, "log_metric", counted_metric)
    return sent


def _requests_of(points: int) -> list[tuple[str, int]]:
    """The requests a copy of ``points`` metrics takes: ``log_batch`` of 1000, then the rest."""
    assert 1000 < points < 2000
    return [("log_batch", 1000), ("log_batch", points - 1000)]


def _series(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every series of a run: ``key -> [(step, value), ...]`` (each step once, checked)."""
    out = {}
    for key in client.get_run(run_id).data.metrics:
        history = client.get_metric_history(run_id, key)
        points = sorted((m.step, m.value) for m in history)
        assert len({step for step, _ in points}) == len(points), key
        # What the readers keep (the latest point of a step; none dropped as an abandoned fit's):
        # the copy's timestamps do not decrease from one step to the next.
        assert sorted(latest_per_step(history).items()) == points, key
        out[key] = points
    return out


@pytest.mark.filterwarnings("ignore:MLFlow only allows")
def test_an_mlflowloggers_copy_is_few_requests_of_what_one_a_step_wrote(sqlite_uri, requests, ns):
    """A history of 170 steps (1020 points) copied into a new ``MLFlowLogger`` run: two requests, and
    the run holds what one ``log_metrics`` call a step (the path it replaces) wrote into another:
    the same keys (the logger's prefix and clean-up), steps and values."""
    prefix = "fold1"
    from mlflow.tracking import MlflowClient

    def logger():
        made = ns.loggers.MLFlowLogger(experiment_name="e", tracking_uri=sqlite_uri, prefix=prefix)
        assert made.experiment is not None  # the run, created before the requests are counted
        return made

    batched, per_step = logger(), logger()
    requests.clear()
    _loggers.log_history([batched], _rows())
    assert requests == _requests_of(6 * STEPS)

    by_step: dict[int, dict[str, float]] = {}
    for step, _, metrics in _rows():
        by_step.setdefault(step, {}).update(metrics)
    for step in sorted(by_step):
        per_step.log_metrics(by_step[step], step=step)

    client = MlflowClient(sqlite_uri)
    copied = _series(client, batched.run_id)
    assert copied == _series(client, per_step.run_id)
    joined = f"{prefix}{ns.loggers.MLFlowLogger.LOGGER_JOIN_CHAR}"
    assert f"{joined}val_lossema" in copied and f"{joined}{keys.TOTAL_KWH}" in copied
    assert len(copied[f"{joined}{keys.CHECK_NUMBER}"]) == STEPS


@pytest.mark.parametrize("by_epoch", [False, True], ids=["by-step", "autolog"])
def test_the_active_runs_copy_and_its_log_metrics_are_few_requests(sqlite_uri, requests, by_epoch):
    """The same history (a key MLflow takes as it is) copied into the run active in the process: two
    requests, and the run holds the points its ``log_metrics`` logged one a request before (the
    values as floats) at Lightning's steps, or under autolog at the epochs' numbers without
    ``epoch``. Its ``log_metrics`` of a dozen metrics is one request (it was one a metric)."""
    rows = _rows(odd_key="val_loss_ema")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_uri)
    experiment = client.create_experiment("active")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        batched = _loggers.ActiveMlflowRun(client.create_run(experiment).info.run_id, by_epoch=by_epoch)
    finally:
        mlflow.set_tracking_uri(previous)
    one_by_one = client.create_run(experiment).info.run_id

    requests.clear()
    _loggers.log_history([batched], rows)
    assert requests == _requests_of(5 * STEPS if by_epoch else 6 * STEPS)

    for step, epoch, metrics in rows:  # the points the run's log_metrics sent, a request a step
        target = batched.step_of(step, epoch)
        kept = [(k, v) for k, v in metrics.items() if not (by_epoch and k == "epoch")]
        client.log_batch(one_by_one, metrics=[Metric(k, float(v), 0, target) for k, v in kept])
    assert _series(client, batched.run_id) == _series(client, one_by_one)

    requests.clear()
    batched.log_metrics({f"energy/k{i}": float(i) for i in range(12)}, step=7)
    assert requests == [("log_batch", 12)]  # one request a call, not one a metric


def test_recorded_batches_are_sent_joined_in_chunks_and_in_order():
    """Consecutive metrics-only calls to one run with the same arguments are joined (chunks of
    1000); a call of another run or arguments, or with params or tags, is sent as it came."""
    sent = []
    client = types.SimpleNamespace(log_batch=lambda run_id, **kw: sent.append((run_id, kw)))
    recorded = [
        ("a", list(range(600)), [], [], {}),
        ("a", list(range(600, 1500)), [], [], {}),
        ("a", [1500], [], [], {"synchronous": False}),
        ("b", [0], [], [], {"synchronous": False}),
        ("b", [1], ["param"], [], {}),
        ("b", [2], [], [], {}),
    ]
    _loggers._send_batches(client, recorded)
    assert sent == [
        ("a", {"metrics": list(range(1000))}),
        ("a", {"metrics": list(range(1000, 1500))}),
        ("a", {"metrics": [1500], "synchronous": False}),
        ("b", {"metrics": [0], "synchronous": False}),
        ("b", {"metrics": [1], "params": ["param"], "tags": []}),
        ("b", {"metrics": [2]}),
    ]


def test_a_client_that_cannot_hold_its_calls_back_sends_each_as_made():
    """A logger whose client takes no attribute of its own: the copy goes one call a step, whole."""

    class Client:
        __slots__ = ("sent",)

        def __init__(self):
            self.sent = []

        def log_batch(self, run_id, metrics=(), **kwargs):
            self.sent.append((run_id, list(metrics)))

    class Logger:
        run_id = "r"

        def __init__(self):
            self.experiment = Client()

        def log_metrics(self, metrics, step):
            self.experiment.log_batch(self.run_id, metrics=[(k, v, step) for k, v in metrics.items()])

    logger = Logger()
    _loggers._log_mlflow_history(logger, {2: {"a": 1.0}, 1: {"a": 0.5, "b": 2.0}})
    assert logger.experiment.sent == [("r", [("a", 0.5, 1), ("b", 2.0, 1)]), ("r", [("a", 1.0, 2)])]


def test_a_resumed_fit_copies_its_earlier_part_into_a_new_run_in_one_request(
    tmp_path, monkeypatch, sqlite_uri, requests, ns
):
    """Four one-batch epochs, then resumed from epoch=2.ckpt into a new ``MLFlowLogger`` run: the copy
    of the three epochs and their checks is one request (it was one a step, three), and the new run
    holds the first run's energy totals and checks at the first run's steps."""
    from mlflow.tracking import MlflowClient

    install_scripted_meter(monkeypatch)
    ckpt = tmp_path / "ckpt"
    copies: list[list[tuple[str, int]]] = []
    log_history = _loggers.log_history

    def counted(loggers, rows):
        start = len(requests)
        log_history(loggers, rows)
        copies.append(requests[start:])

    monkeypatch.setattr(_loggers, "log_history", counted)

    def fit(max_epochs, ckpt_path=None):
        logger = ns.loggers.MLFlowLogger(
            experiment_name="e", tracking_uri=sqlite_uri, artifact_location=str(tmp_path / "art")
        )
        saver = ns.callbacks.ModelCheckpoint(dirpath=str(ckpt), save_top_k=-1, filename="{epoch}")
        trainer = make_trainer(
            tmp_path,
            [
                EnergyAwareEarlyStopping(
                    monitor="val_loss", patience=100, min_epochs=100, min_relative_gain=None
                ),
                saver,
            ],
            logger=logger,
            max_epochs=max_epochs,
            lightning=ns,
            enable_checkpointing=True,
            limit_train_batches=1,
            limit_val_batches=1,
            num_sanity_val_steps=0,
        )
        ns.pl.seed_everything(0)
        trainer.fit(ns.DigitsClassifier(), datamodule=ns.DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
        return logger.run_id

    first = fit(4)
    assert copies == []
    resumed = fit(5, ckpt_path=str(ckpt / "epoch=2.ckpt"))
    (copy,) = copies
    assert [method for method, _ in copy] == ["log_batch"]

    client = MlflowClient(sqlite_uri)

    def points(run_id, key):
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    for key in (keys.TOTAL_KWH, keys.CHECK_KWH, keys.CHECK_NUMBER):
        assert points(resumed, key)[:3] == points(first, key)[:3], key
    assert [value for _, value in points(resumed, keys.CHECK_NUMBER)] == [1, 2, 3, 4, 5]
    assert not any(math.isnan(value) for _, value in points(resumed, keys.TOTAL_KWH))
