"""``--log mlflow``: each stage of a run is an MLflow run (the optional ``mlflow-skinny`` package).

- Store: MLFLOW_TRACKING_URI when it is set (a tracking server, a database, a file store); otherwise an
  SQLite file beside the runs, ``sqlite:///<results>/mlflow.db`` (MLflow's recommended local store: its
  ``./mlruns`` file store is deprecated and refused by recent MLflow unless MLFLOW_ALLOW_FILE_STORE=true).
  View it with `mlflow ui --backend-store-uri sqlite:///results/mlflow.db` (the full ``mlflow`` package).
  Processes that start at once (a sweep's jobs) take turns to open it (``<results>/.mlflow.lock``), so the
  first one alone creates its tables.
- Experiment: MLFLOW_EXPERIMENT_NAME, else "ltbench". Name: method/benchmark/run id; tags
  ``ltbench.run_id``, ``ltbench.stage``, ``ltbench.log_id`` (the run directory's, ``logs.log_id``),
  ``ltbench.method``, ``ltbench.benchmark``; params: the stage's hyperparameters (``logs.stage_hparams``;
  a value longer than MLflow takes is cut, ending in "...").
- Resumption: a stage finds its MLflow run by its first three tags and continues it (a resumed run, and
  its final record once result.json is written; an epoch already logged keeps its first values), while
  the same run id in another store, or trained anew after `ltbench rm`, is an MLflow run of its own.
- Per epoch: ``logs.epoch_metrics`` at step = the epoch; the final record: ``logs.final_metrics`` and the
  status FINISHED. A stage closed before its final record is KILLED until it goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .logs import epoch_metrics, final_metrics, log_id, results_root, run_name

if TYPE_CHECKING:
    from .store import RunDir

EXPERIMENT = "ltbench"
DB_NAME = "mlflow.db"
LOCK_NAME = ".mlflow.lock"
BATCH = 100  # MLflow takes at most 100 params in one log_batch


def tracking_uri(results: Path) -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store of ``results``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(results / DB_NAME).resolve()}"


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:  # where an MLflow moves it: the smallest limit any version had
        return 500
    return int(MAX_PARAM_VAL_LENGTH)


def _param(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _turn(results: Path) -> Iterator[None]:
    """One process at a time opens the store of ``results`` (an flock; unguarded where there is none)."""
    results.mkdir(parents=True, exist_ok=True)
    fd = os.open(results / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class MlflowLog:
    """One stage of a run as an MLflow run, through MlflowClient (no global active run)."""

    def __init__(self, rd: RunDir, stage: str, hparams: dict[str, Any]):
        from mlflow.tracking import MlflowClient

        results = results_root(rd)
        self.step = int(hparams["epochs"]) if isinstance(hparams.get("epochs"), int) else 0
        self.finished = False
        with _turn(results):
            self.client = MlflowClient(tracking_uri=tracking_uri(results))
            experiment = self._experiment(results)
            self.run_id = self._run(experiment, rd, stage, hparams)
        history = self.client.get_metric_history(self.run_id, "loss")
        self.logged = max((m.step for m in history), default=0)  # the epochs this run has already

    def _experiment(self, results: Path) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        where = None if os.environ.get("MLFLOW_TRACKING_URI") else (results / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=where)

    def _run(self, experiment: str, rd: RunDir, stage: str, hparams: dict[str, Any]) -> str:
        """The MLflow run of this stage: found by its tags (RUNNING again), else created with its params."""
        tags = {"ltbench.run_id": rd.run_id, "ltbench.stage": stage, "ltbench.log_id": log_id(rd)}
        found = self.client.search_runs(
            [experiment], filter_string=" and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()), max_results=1)
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        from mlflow.entities import Param

        tags.update({"ltbench.method": str(hparams["method"]), "ltbench.benchmark": str(hparams["benchmark"])})
        run = self.client.create_run(experiment, run_name=run_name(hparams), tags=tags)
        limit = _param_limit()
        params = [Param(k, _param(v, limit)) for k, v in hparams.items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(run.info.run_id, params=params[i:i + BATCH])
        return run.info.run_id

    def _log(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def epoch(self, row: dict[str, Any], norms: list[float] | None) -> None:
        step = int(row["epoch"])
        if step > self.logged:
            self._log(epoch_metrics(row, norms), step)
            self.logged = step

    def final(self, record: dict[str, Any]) -> None:
        self._log(final_metrics(record), self.step)
        self.client.set_terminated(self.run_id, status="FINISHED")
        self.finished = True

    def close(self) -> None:
        if not self.finished:
            self.client.set_terminated(self.run_id, status="KILLED")
