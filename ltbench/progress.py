"""Progress of a training stage, and output that survives its reader going away (`ltbench run ... | head -1`).

Three displays (``display_mode``): on a terminal, rich bars that fit its width, with one plain line per
epoch left behind above them; in a Jupyter notebook, the same bars in a widget (ipywidgets); elsewhere
(SLURM logs, pipes, `> file`) plain lines: one per epoch with the stage's ETA, and within a long epoch a
line every LTBENCH_LOG_EVERY seconds (default 120) with the step, images/s, the share of the time spent
waiting for data, and the epoch's ETA."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TextIO

from rich.console import Console

from .errors import LtbenchError

console = Console(stderr=True)
LOG_EVERY_S = 120.0  # within an epoch, a log line at most this often (seconds; LTBENCH_LOG_EVERY)
_warned: set[str] = set()


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


def clock(seconds: float) -> str:
    """H:MM:SS, as an ETA reads."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _note_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        print(text, file=sys.stderr, flush=True)


def log_every() -> float:
    """Seconds between two log lines within an epoch: $LTBENCH_LOG_EVERY (0: every step), else 120."""
    text = os.environ.get("LTBENCH_LOG_EVERY", "").strip()
    if not text:
        return LOG_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        _note_once(f"warning: LTBENCH_LOG_EVERY={text!r} is not a number of seconds >= 0; using {LOG_EVERY_S:g}.")
        return LOG_EVERY_S
    return value


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel); imports nothing not loaded yet."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or half-imported: not a notebook we can draw in
        return False
    return getattr(shell, "kernel", None) is not None


def display_mode(live: bool | None, terminal: bool | None = None) -> str:
    """'notebook' (rich bars in an ipywidgets widget), 'live' (rich bars on a terminal) or 'log' (lines).
    ``live``: None chooses (a notebook, else bars when ``terminal``, default: stderr is a terminal); False:
    lines."""
    if live is False:
        return "log"
    if in_notebook():
        if importlib.util.find_spec("ipywidgets") is not None:
            return "notebook"
        _note_once("note: install ipywidgets for a progress bar in notebooks (pip install 'ltbench[notebook]'); "
                   "printing a line per epoch.")
        return "log"
    if terminal is None:
        terminal = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return "live" if live or terminal else "log"


@dataclass
class _Count:
    """Steps, images and seconds spent waiting for batches, since ``t`` (perf_counter)."""

    t: float
    steps: int = 0
    images: int = 0
    data_s: float = 0.0

    def rates(self, now: _Count) -> tuple[float, float]:
        """images/s and the fraction of the time spent waiting for data, from self to ``now``."""
        dt = max(now.t - self.t, 1e-9)
        return (now.images - self.images) / dt, min(1.0, (now.data_s - self.data_s) / dt)



def _bars(out: Console, title: str) -> Any:
    """Two rich bars (the stage's epochs, the epoch's steps) under the run's title, as wide as ``out``."""
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Column
    from rich.text import Text

    class Bars(Progress):
        def get_renderables(self) -> Iterable[Any]:
            yield Text(title, no_wrap=True, overflow="ellipsis")
            yield self.make_tasks_table(self.tasks)

    return Bars(TextColumn("{task.description}", table_column=Column(no_wrap=True)),
                BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=4)),
                TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
                console=out, transient=True, expand=True, refresh_per_second=4)


class EpochProgress:
    """A stage's progress: ``start_epoch``, ``timed`` (wraps the batch iterator: measures the wait for
    each batch and counts its images), ``step`` after each optimizer step, ``end_epoch`` with the epoch's
    metrics row, ``close``. Only rank 0 shows anything (``enabled``)."""

    def __init__(self, title: str, epochs: int, steps: int, start_epoch: int = 0, live: bool | None = None,
                 enabled: bool = True, out: Console | None = None):
        self.title, self.epochs, self.steps = title, epochs, max(steps, 1)
        self.mode = display_mode(live, out.is_terminal if out is not None else None) if enabled else "off"
        self.every = log_every() if self.mode == "log" else math.inf
        now = perf_counter()
        self._epoch, self._epochs_run, self._epochs_s = start_epoch, 0, 0.0
        self._now, self._epoch_start, self._last = _Count(now), _Count(now), _Count(now)
        self._shown = now  # when the bars were last updated
        self._bar = None
        if self.mode in ("live", "notebook"):
            out = out or (Console(stderr=True, force_jupyter=True) if self.mode == "notebook" else console)
            self._bar = _bars(out, f"[{title}]")
            self._bar.start()
            self._epochs_task = self._bar.add_task("", total=epochs, completed=start_epoch, info="")
            self._steps_task = self._bar.add_task("", total=self.steps, info="")
            self._show(now)
            resumed = f", from epoch {start_epoch + 1}" if start_epoch else ""
            self._print(f"[{title}] {epochs} epochs of {steps} steps{resumed}")  # the epoch lines below are its

    @property
    def console(self) -> Console | None:
        return self._bar.console if self._bar is not None else None

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        now = perf_counter()
        self._now, self._epoch_start, self._last = _Count(now), _Count(now), _Count(now)
        if self._bar is not None:
            self._bar.reset(self._steps_task, total=self.steps)
            self._show(now)

    def timed(self, batches: Iterable[Any]) -> Iterator[Any]:
        """The batches of ``batches``; the time spent in each ``next`` counts as data time (no GPU sync)."""
        it = iter(batches)
        while True:
            t = perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self._now.data_s += perf_counter() - t
            self._now.images += len(batch[1]) if isinstance(batch, (tuple, list)) and len(batch) > 1 else 0
            yield batch

    def step(self) -> None:
        self._now.steps += 1
        if self.mode == "off":
            return
        now = perf_counter()
        if self._bar is not None and (now - self._shown >= 0.2 or self._now.steps >= self.steps):
            self._show(now)
        elif self.mode == "log" and now - self._last.t >= self.every and self._now.steps < self.steps:
            self._log_step(now)

    def _state(self, now: float) -> tuple[float, float, float | None, float | None]:
        """images/s and data fraction over the epoch so far, the epoch's ETA and the stage's."""
        current = _Count(now, self._now.steps, self._now.images, self._now.data_s)
        speed, data = self._epoch_start.rates(current)
        if not current.steps:
            return speed, data, None, None
        spent = now - self._epoch_start.t
        epoch_left = spent / current.steps * (self.steps - current.steps)
        per_epoch = self._epochs_s / self._epochs_run if self._epochs_run else spent + epoch_left
        return speed, data, epoch_left, epoch_left + per_epoch * (self.epochs - self._epoch - 1)

    def _show(self, now: float) -> None:
        self._shown = now
        speed, data, epoch_eta, stage_eta = self._state(now)
        eta = "" if stage_eta is None else f"eta {clock(stage_eta)}"
        self._bar.update(self._epochs_task, description=f"epoch {self._epoch + 1}/{self.epochs}", info=eta)
        info = "" if epoch_eta is None else f"{speed:.0f} img/s  data {100 * data:.0f}%  eta {clock(epoch_eta)}"
        self._bar.update(self._steps_task, completed=self._now.steps,
                         description=f"step {self._now.steps}/{self.steps}", info=info)

    def _log_step(self, now: float) -> None:
        current = _Count(now, self._now.steps, self._now.images, self._now.data_s)
        speed, data = self._last.rates(current)  # since the last line: what the loader and the GPU do now
        _, _, epoch_eta, stage_eta = self._state(now)
        self._last = current
        self._print(f"[{self.title}] epoch {self._epoch + 1}/{self.epochs} step {current.steps}/{self.steps} "
                    f"{speed:.0f} img/s data {100 * data:.0f}% eta {clock(epoch_eta or 0)} "
                    f"(stage {clock(stage_eta or 0)})")

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        now = perf_counter()
        self._epochs_run += 1
        self._epochs_s += now - self._epoch_start.t
        self._last = _Count(now)
        if self.mode == "off":
            return
        parts = [f"loss {row['loss']:.4f}", f"lr {row['lr']:.4g}"]
        for key, name in (("val_class_mean", "val"), ("test_top1", "test")):
            if row.get(key) is not None:
                parts.append(f"{name} {row[key]:.2f}")
        parts.append(f"{row['time_s']:.1f}s")
        if epoch + 1 < self.epochs:
            parts.append(f"eta {clock(self._epochs_s / self._epochs_run * (self.epochs - epoch - 1))}")
        if self._bar is not None:
            self._bar.update(self._epochs_task, completed=epoch + 1)
        lead = "  " if self._bar is not None else f"[{self.title}] "  # bars: under the title line that they left
        self._print(f"{lead}epoch {epoch + 1}/{self.epochs} {' '.join(parts)}")

    def _print(self, line: str) -> None:
        """One line: above the bars (it stays when they go), else on stderr, flushed (a log file)."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
