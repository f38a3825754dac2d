"""Where people look at a run's epochs: ``metrics.csv`` beside ``metrics.jsonl`` (every run), and
TensorBoard event files (``--log tensorboard``, the optional ``tensorboard`` package).

metrics.csv holds the columns ``CSV_COLUMNS`` of every line of metrics.jsonl, in its order (an empty
cell where a line has no value: the test set when it was not evaluated that epoch, val many/medium/few
in records of an older ltbench); floats are written as Python's ``repr``, so they read back equal.
The engine rewrites it after every epoch and after a resumed run trims metrics.jsonl;
``ltbench export RUN_ID`` writes the same text for any run.

TensorBoard: ``<run>/tensorboard/<stage>/`` holds one stage's event files, so that ``tensorboard
--logdir results`` lists every run as ``runs/<benchmark>/<method>/<run_id>/tensorboard/<stage>``. The
step is the epoch (1-based). A resumed run first rewrites the stage's event files keeping only the
epochs its checkpoint holds (``_compact``), so an epoch that a killed process logged after its last
checkpoint is never shown twice; this does not rely on TensorBoard's purge of orphaned events. The
stage's hyperparameters go to TensorBoard's HParams plugin (a session-start summary in the stage's own
folder, so the HParams dashboard lists the stage's run beside its scalars) and, once the record is
published, the final metrics (``final_metrics``) are scalars of that folder, which HParams shows as
metrics.

What every logger logs is named here (``stage_hparams``, ``epoch_metrics``, ``final_metrics``); the
loggers' interface and how the engine opens them is ``ltbench.results.loggers``; wandb is
``log_wandb``, MLflow ``log_mlflow``.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LtbenchError
from ..files import atomic_write_bytes

if TYPE_CHECKING:
    from .store import RunDir

LOGGERS = ("tensorboard", "wandb", "mlflow")
# logger -> the modules it imports (the first is its own package) and what `pip install` takes for them
PACKAGES = {"tensorboard": (("tensorboard",), "tensorboard"), "wandb": (("wandb",), "wandb"),
            "mlflow": (("mlflow", "sqlalchemy", "alembic"), "mlflow-skinny sqlalchemy alembic")}
CSV_NAME = "metrics.csv"
LOG_ID_FILE = "log_id"
TB_FOLDER = "tensorboard"
SESSION_START_TAG = "_hparams_/session_start_info"  # tensorboard.plugins.hparams.metadata.SESSION_START_INFO_TAG
INSTALL_HINT = "pip install 'ltbench[{name}]'"
CSV_COLUMNS = ("epoch", "stage", "loss", "lr", "train_acc", "val_class_mean", "val_many", "val_medium",
               "val_few", "test_top1", "time_s")
# metrics.jsonl key -> TensorBoard scalar tag
TB_SCALARS = {"loss": "loss", "lr": "lr", "train_acc": "train_acc", "val_class_mean": "val/class_mean",
              "val_many": "val/many", "val_medium": "val/medium", "val_few": "val/few", "test_top1": "test/top1"}


def parse_log(text: str | None) -> tuple[str, ...]:
    """--log NAME[,NAME..] -> the loggers (``LOGGERS``; "none" or nothing: none), checked to be
    installed, so that a missing package stops the command before anything runs."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip() and n.strip() != "none"))
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise LtbenchError(f"--log {text}: unknown logger {unknown[0]!r}; expected one of {', '.join(LOGGERS)} "
                           "(comma-separated) or none.")
    check_available(names)
    return names


def check_available(names: Iterable[str]) -> None:
    """One clear error when a logger's package is not installed (MLflow's own store, an SQLite file
    under the results folder, also needs sqlalchemy and alembic; another MLFLOW_TRACKING_URI does not)."""
    for name in names:
        modules, pip = PACKAGES[name]
        if name == "mlflow" and os.environ.get("MLFLOW_TRACKING_URI"):
            modules = modules[:1]
        missing = next((m for m in modules if importlib.util.find_spec(m) is None), None)
        if missing is not None:
            raise LtbenchError(f"--log {name} needs the {missing} package, which is not installed here; install it "
                               f"with: {INSTALL_HINT.format(name=name)}  (or: pip install {pip}), or drop --log.")


# --- metrics.csv -----------------------------------------------------------------------------------

def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


def metrics_csv(rows: Iterable[dict[str, Any]]) -> str:
    """The CSV text of metrics.jsonl lines: a header of ``CSV_COLUMNS``, then one line per row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in rows:
        w.writerow([_csv_cell(row.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_metrics_csv(rd: RunDir) -> None:
    """Rewrite ``<run>/metrics.csv`` from metrics.jsonl, atomically."""
    atomic_write_bytes(rd.path / CSV_NAME, metrics_csv(rd.metrics()).encode())


# --- what every logger logs -----------------------------------------------------------------------

def norm_stats(norms: list[float]) -> dict[str, float]:
    """min, max and mean of the classifier's per-class weight norms ||w_c||_2."""
    return {"min": min(norms), "max": max(norms), "mean": sum(norms) / len(norms)}


def epoch_metrics(row: dict[str, Any], norms: list[float] | None) -> dict[str, float]:
    """An epoch's metrics by their logged name (``TB_SCALARS``, ``classifier_norm/min|max|mean``)."""
    out = {tag: float(row[key]) for key, tag in TB_SCALARS.items() if row.get(key) is not None}
    if norms:
        out.update({f"classifier_norm/{k}": v for k, v in norm_stats(norms).items()})
    return out


FINAL_KEYS = ("top1", "top5", "class_mean", "many", "medium", "few")


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """What a finished run's record says, by logged name: ``final/<split>_<key>`` of the test, val and
    (where the benchmark flips images) flip-averaged test reports (``FINAL_KEYS`` they have), the epoch
    selected, and the classifier norms' max and min."""
    out: dict[str, float] = {}
    for split in ("test", "val", "test_flip_avg"):
        report = record.get(split)
        if isinstance(report, dict):
            out.update({f"final/{split}_{k}": float(report[k]) for k in FINAL_KEYS
                        if isinstance(report.get(k), (int, float))})
    selected = (record.get("selected") or {}).get("epoch")
    if isinstance(selected, int):
        out["final/selected_epoch"] = float(selected)
    norms = record.get("classifier_norms")
    if norms:
        out["final/classifier_norm_max"], out["final/classifier_norm_min"] = float(max(norms)), float(min(norms))
    return out


def _plain(value: Any) -> int | float | str | bool:
    """A setting as a logger takes it: a number, text or bool as it is, anything else as JSON text."""
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value, sort_keys=True)


def stage_hparams(rd: RunDir, stage: str) -> dict[str, int | float | str | bool]:
    """The hyperparameters of a run's stage: its resolved settings (spec.json) by their keys, the
    benchmark's as ``data.<key>``, then method, benchmark, backbone, recipe, seed, stage and run_id."""
    spec = rd.spec()
    hp: dict[str, Any] = {k: _plain(v) for k, v in spec["stages"].get(stage, {}).items()}
    hp.update({f"data.{k}": _plain(v) for k, v in spec.get("data", {}).items()})
    hp.update({k: _plain(spec.get(k)) for k in ("method", "benchmark", "backbone", "recipe", "seed")})
    hp.update(stage=stage, run_id=rd.run_id)
    return hp


def log_id(rd: RunDir) -> str:
    """A random id of this run directory's logging (``<run>/log_id``, written at its first --log wandb or
    mlflow): with the run id and the stage it names the run's wandb and MLflow runs, so that a resumed
    run (the same directory) continues them, while another store's run of the same run id, or this run
    trained anew after `ltbench rm` or --force (a new directory), never does."""
    path = rd.path / LOG_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{8}", text):
            return text
    new = secrets.token_hex(4)
    atomic_write_bytes(path, f"{new}\n".encode())
    return new


def run_name(hparams: dict[str, Any]) -> str:
    """A stage's name in wandb and MLflow: method/benchmark/run id."""
    return f"{hparams['method']}/{hparams['benchmark']}/{hparams['run_id']}"


def results_root(rd: RunDir) -> Path:
    """The results folder of a run directory (``<results>/runs/<benchmark>/<method>/<run_id>``)."""
    return rd.path.parents[3]


# --- TensorBoard ----------------------------------------------------------------------------------

class TensorBoardLog:
    """One stage's TensorBoard event files in ``folder``, written through torch's SummaryWriter.
    ``keep_until``: the epochs the stage's checkpoint holds (events of later steps are dropped first);
    None: keep every event (the final record of a finished stage)."""

    def __init__(self, folder: Path, keep_until: int | None, hparams: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        folder.mkdir(parents=True, exist_ok=True)
        if keep_until is not None:
            _compact(folder, keep_until)
        fresh = not any("tfevents" in p.name for p in folder.iterdir())
        self.writer = SummaryWriter(str(folder))
        self.step = int(hparams["epochs"]) if isinstance(hparams.get("epochs"), int) else 0
        _, session_start, self.session_end = hparams_summaries(hparams, {})
        if keep_until is not None or fresh:  # a (re)started stage: _compact dropped the session start it had
            self.writer.file_writer.add_summary(session_start, 0)
            self.writer.flush()

    def epoch(self, row: dict[str, Any], norms: list[float] | None) -> None:
        """One epoch (step = row["epoch"]): the scalars of ``TB_SCALARS`` that the row has, the
        classifier norms' min/max/mean and their histogram; flushed at once."""
        import numpy as np

        step = int(row["epoch"])
        for key, tag in TB_SCALARS.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, float(row[key]), step)
        if norms:
            for name, value in norm_stats(norms).items():
                self.writer.add_scalar(f"classifier_norm/{name}", value, step)
            self.writer.add_histogram("classifier_norms", np.asarray(norms, dtype=np.float64), step)
        self.writer.flush()

    def final(self, record: dict[str, Any]) -> None:
        """The final metrics as scalars at the stage's last epoch (HParams shows them as its metrics),
        and the session's end."""
        for tag, value in final_metrics(record).items():
            self.writer.add_scalar(tag, value, self.step)
        self.writer.file_writer.add_summary(self.session_end, self.step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _compact(folder: Path, keep_until: int) -> None:
    """Rewrite the event files in ``folder`` as one file that holds only the events of steps
    <= ``keep_until`` (the epochs a resumed run's checkpoint holds), less the HParams session start
    (written again as the stage starts). The new file is written in a sub-folder, then the old files
    are removed and it moves in."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    tmp = folder / ".compact"
    if tmp.exists() and not tmp.is_dir():
        tmp.unlink()  # our own scratch name: never a user's event file
    old = sorted(p for p in folder.iterdir() if p.is_file() and "tfevents" in p.name)
    if not old and tmp.is_dir():  # a compaction cut short after removing the old files: its file moves in
        for p in tmp.iterdir():
            os.replace(p, folder / p.name)
        old = sorted(p for p in folder.iterdir() if p.is_file() and "tfevents" in p.name)
    shutil.rmtree(tmp, ignore_errors=True)
    if not old:
        return
    writer = EventFileWriter(str(tmp))
    for path in old:
        for event in LegacyEventFileLoader(str(path)).Load():
            if not event.HasField("file_version") and event.step <= keep_until and not _session_start(event):
                writer.add_event(event)
    writer.close()
    new = next(p for p in tmp.iterdir() if "tfevents" in p.name)
    for path in old:
        path.unlink()
    os.replace(new, folder / new.name)
    shutil.rmtree(tmp, ignore_errors=True)


def _session_start(event: Any) -> bool:
    return event.HasField("summary") and any(v.tag == SESSION_START_TAG for v in event.summary.value)
