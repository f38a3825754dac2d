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
checkpoint is never shown twice; this does not rely on TensorBoard's purge of orphaned events.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LtbenchError
from ..files import atomic_write_bytes

if TYPE_CHECKING:
    from .store import RunDir

LOGGERS = ("tensorboard",)
CSV_NAME = "metrics.csv"
TB_FOLDER = "tensorboard"
INSTALL_HINT = "pip install 'ltbench[tensorboard]'"
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
    """One clear error when a logger's package is not installed."""
    if "tensorboard" in names and importlib.util.find_spec("tensorboard") is None:
        raise LtbenchError(f"--log tensorboard needs the tensorboard package, which is not installed here; "
                           f"install it with: {INSTALL_HINT}  (or: pip install tensorboard), or drop --log.")


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


# --- TensorBoard ----------------------------------------------------------------------------------

def norm_stats(norms: list[float]) -> dict[str, float]:
    """min, max and mean of the classifier's per-class weight norms ||w_c||_2."""
    return {"min": min(norms), "max": max(norms), "mean": sum(norms) / len(norms)}


class TensorBoardLog:
    """One stage's TensorBoard event files in ``folder``, written through torch's SummaryWriter."""

    def __init__(self, folder: Path, keep_until: int):
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        _compact(folder, keep_until)
        self.writer = SummaryWriter(str(folder))

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

    def close(self) -> None:
        self.writer.close()


def _compact(folder: Path, keep_until: int) -> None:
    """Rewrite the event files in ``folder`` as one file that holds only the events of steps
    <= ``keep_until`` (the epochs a resumed run's checkpoint holds). The new file is written in a
    sub-folder, then the old files are removed and it moves in."""
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
            if not event.HasField("file_version") and event.step <= keep_until:
                writer.add_event(event)
    writer.close()
    new = next(p for p in tmp.iterdir() if "tfevents" in p.name)
    for path in old:
        path.unlink()
    os.replace(new, folder / new.name)
    shutil.rmtree(tmp, ignore_errors=True)


def open_logs(names: Iterable[str], rd: RunDir, stage: str, epochs_done: int) -> TensorBoardLog | None:
    """The logger of a stage that has ``epochs_done`` epochs in its checkpoint (None without --log)."""
    names = tuple(names)
    if "tensorboard" not in names:
        return None
    check_available(names)
    folder = rd.path / TB_FOLDER / stage
    for path in (folder.parent, folder):
        if path.exists() and not path.is_dir():
            raise LtbenchError(_not_a_folder(path, folder))
    try:
        return TensorBoardLog(folder, epochs_done)
    except (FileExistsError, NotADirectoryError):  # made a file since the check above
        raise LtbenchError(_not_a_folder(folder.parent if folder.parent.is_file() else folder, folder)) from None


def _not_a_folder(path: Path, folder: Path) -> str:
    return (f"{path} is a file, not a folder; --log tensorboard writes this stage's event files in {folder}. "
            "Move or delete that file, then run the same command again (the run resumes), or drop --log.")
