"""The loggers of ``--log`` (tensorboard, wandb, mlflow) behind one interface, as the engine calls them.

Every logger is a ``StageLog``: it is opened as a stage starts, with the stage's hyperparameters
(``logs.stage_hparams``), takes each epoch's row (``logs.epoch_metrics``), the final record once
result.json is written (``logs.final_metrics``), and is closed. ``Logs`` holds the loggers of ``--log
a,b``: one that raises prints one warning line and is dropped, the others and the run go on; ``log_final``
runs after the record is published, so a logger never costs a result. TensorBoard is in ``logs``, wandb in
``log_wandb``, MLflow in ``log_mlflow``; their packages are imported only when a logger opens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import LtbenchError
from .logs import TB_FOLDER, TensorBoardLog, check_available, stage_hparams

if TYPE_CHECKING:
    from .store import RunDir


class StageLog(Protocol):
    """A logger of one stage, opened as the stage starts with its hyperparameters (``stage_hparams``)."""

    def epoch(self, row: dict[str, Any], norms: list[float] | None) -> None:
        """One line of metrics.jsonl (step: row["epoch"]) and the classifier's per-class norms."""

    def final(self, record: dict[str, Any]) -> None:
        """The published result.json: its ``final_metrics``."""

    def close(self) -> None: ...


class Logs:
    """The loggers of one stage (``--log a,b``) behind the calls of one: a logger that raises prints one
    warning line (which logger, at what, the error) and is dropped; the others and the run go on."""

    def __init__(self, loggers: dict[str, StageLog]):
        self.loggers = loggers

    def epoch(self, row: dict[str, Any], norms: list[float] | None) -> None:
        self._each(lambda lg: lg.epoch(row, norms), f"epoch {row.get('epoch')}")

    def final(self, record: dict[str, Any]) -> None:
        self._each(lambda lg: lg.final(record), "the final record")

    def close(self) -> None:
        self._each(lambda lg: lg.close(), "closing")
        self.loggers = {}

    def _each(self, call: Callable[[StageLog], None], what: str) -> None:
        for name, logger in list(self.loggers.items()):
            try:
                call(logger)
            except Exception as exc:  # a logger never stops a run: its files or server are a copy
                del self.loggers[name]
                warn(name, what, exc)
                if what != "closing":
                    with contextlib.suppress(Exception):
                        logger.close()


def warn(name: str, what: str, exc: BaseException) -> None:
    """One line on stderr: a logger failed and is left out of the rest of this stage."""
    from rich.markup import escape

    from ..progress import console

    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    console.print(f"[yellow]warning:[/yellow] --log {escape(name)} failed at {escape(what)} ({escape(text)}); it logs "
                  "nothing more of this stage. metrics.jsonl and result.json are kept as always.",
                  highlight=False, soft_wrap=True)


def open_logs(names: Iterable[str], rd: RunDir, stage: str, epochs_done: int | None) -> Logs | None:
    """The loggers of a stage that has ``epochs_done`` epochs in its checkpoint (None without --log;
    ``epochs_done`` None: the final record of a finished stage). TensorBoard that cannot start a stage
    (a file where its folder goes) is an error before the stage trains; any other logger that cannot
    start, and any at the final record, is a warning."""
    names = tuple(names)
    if not names:
        return None
    check_available(names)
    hparams = stage_hparams(rd, stage)
    opened: dict[str, StageLog] = {}
    what = "the start of the stage" if epochs_done is not None else "the final record"
    for name in sorted(names, key=lambda n: n != "tensorboard"):  # TensorBoard's folder is checked first
        try:
            opened[name] = (_open_tensorboard(rd, stage, epochs_done, hparams) if name == "tensorboard"
                            else _open_remote(name, rd, stage, hparams))
        except Exception as exc:
            if name == "tensorboard" and epochs_done is not None:
                raise  # before the stage trains: the user's to fix (a file where its folder goes, a full disk)
            warn(name, what, exc)  # a server or store that cannot be reached; after the record: never in its way
    return Logs({n: opened[n] for n in names if n in opened})


def _open_remote(name: str, rd: RunDir, stage: str, hparams: dict[str, Any]) -> StageLog:
    if name == "wandb":
        from .log_wandb import WandbLog

        return WandbLog(rd, stage, hparams)
    from .log_mlflow import MlflowLog

    return MlflowLog(rd, stage, hparams)


def _open_tensorboard(rd: RunDir, stage: str, epochs_done: int | None, hparams: dict[str, Any]) -> TensorBoardLog:
    folder = rd.path / TB_FOLDER / stage
    for path in (folder.parent, folder):
        if path.exists() and not path.is_dir():
            raise LtbenchError(_not_a_folder(path, folder))
    try:
        return TensorBoardLog(folder, epochs_done, hparams)
    except (FileExistsError, NotADirectoryError):  # made a file since the check above
        raise LtbenchError(_not_a_folder(folder.parent if folder.parent.is_file() else folder, folder)) from None


def log_final(names: Iterable[str], rd: RunDir, stage: str, record: dict[str, Any]) -> None:
    """After result.json is written: the final record to the loggers of the run's last stage, opened
    again (wandb and MLflow continue the stage's run). Never raises for a logger: one warning line."""
    names = tuple(names)
    if not names:
        return
    try:
        logs = open_logs(names, rd, stage, None)
    except Exception as exc:  # spec.json unreadable since the run started, a package gone
        warn(",".join(names), "the final record", exc)
        return
    if logs is not None:
        logs.final(record)
        logs.close()


def _not_a_folder(path: Path, folder: Path) -> str:
    return (f"{path} is a file, not a folder; --log tensorboard writes this stage's event files in {folder}. "
            "Move or delete that file, then run the same command again (the run resumes), or drop --log.")
