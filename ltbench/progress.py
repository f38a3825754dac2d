"""Progress: rich bars on a terminal, plain log lines otherwise (SLURM logs, pipes, CI); and output
that survives its reader going away (`ltbench run ... | head -1`)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from rich.console import Console

from .errors import LtbenchError

console = Console(stderr=True)


class ClosedSafe:
    """A text stream (sys.stdout, sys.stderr) whose reader may go away: the first write or flush that
    finds the pipe closed (EPIPE) points the stream's file descriptor at /dev/null, and it and every later
    write succeed there. So a closed pipe silences the output (as SIGPIPE silences `yes | head -1`)
    while the command goes on and finishes its records; nothing is raised, nothing printed about it.
    Any other write error (a full disk under `> file`) is silenced the same way; on standard output
    it is then one LtbenchError (the command's output is lost, so it must not look successful)."""

    def __init__(self, stream: TextIO, name: str = "stdout"):
        self._stream, self._name = stream, name
        self.closed_by_reader = False

    def _silence(self, exc: OSError) -> None:
        self.closed_by_reader = isinstance(exc, BrokenPipeError)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        try:
            self._stream.flush()  # what was buffered for the gone reader goes to /dev/null
        except (OSError, ValueError):
            pass
        if not self.closed_by_reader and self._name == "stdout":
            raise LtbenchError(f"cannot write to standard output ({exc.strerror or exc}); free space where it "
                               "goes, or send it elsewhere.") from None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._silence(exc)
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._silence(exc)

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...: the stream's own
        return getattr(self._stream, name)


def survive_closed_output() -> None:
    """Make sys.stdout and sys.stderr ClosedSafe and line-buffered (once; the CLI's entry point calls
    it): a reader that closes the pipe early never fails a run nor prints a BrokenPipeError traceback,
    and a write error shows while the command runs, not at exit."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ClosedSafe):
            try:
                stream.fileno()
                stream.reconfigure(line_buffering=True)
            except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): left alone
                continue
            setattr(sys, name, ClosedSafe(stream, name))


class EpochProgress:
    def __init__(self, title: str, epochs: int, steps: int, start_epoch: int = 0, live: bool | None = None,
                 enabled: bool = True):
        self.title, self.epochs, self.steps = title, epochs, steps
        self.enabled = enabled  # False: silent (ranks other than 0 of a distributed run)
        self.live = enabled and (sys.stderr.isatty() if live is None else live)
        self._t0 = time.time()
        self._bar: Progress | None = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                                 transient=True)
            self._bar.start()
            self._epochs_task = self._bar.add_task(f"{title} epochs", total=epochs, completed=start_epoch, info="")
            self._steps_task = self._bar.add_task("  steps", total=steps, info="")

    def start_epoch(self, epoch: int) -> None:
        if self._bar:
            self._bar.reset(self._steps_task, total=self.steps)

    def step(self) -> None:
        if self._bar:
            self._bar.advance(self._steps_task)

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        parts = [f"loss {row['loss']:.4f}", f"lr {row['lr']:.4g}"]
        for key, name in (("val_class_mean", "val"), ("test_top1", "test")):
            if row.get(key) is not None:
                parts.append(f"{name} {row[key]:.2f}")
        parts.append(f"{row['time_s']:.1f}s")
        text = " ".join(parts)
        if self._bar:
            self._bar.update(self._epochs_task, completed=epoch + 1, info=text)
        elif self.enabled and (epoch == 0 or epoch + 1 == self.epochs or (epoch + 1) % max(1, self.epochs // 10) == 0
                               or row["time_s"] > 10):
            print(f"[{self.title}] epoch {epoch + 1}/{self.epochs} {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar:
            self._bar.stop()
            self._bar = None
