"""Progress: rich bars on a terminal, plain log lines otherwise (SLURM logs, pipes, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)


class EpochProgress:
    def __init__(self, title: str, epochs: int, steps: int, start_epoch: int = 0, live: bool | None = None,
                 enabled: bool = True):
        self.title, self.epochs, self.steps = title, epochs, steps
        self.enabled = enabled  # False: silent (ranks other than 0 of a distributed run)
        self.live = enabled and (sys.stderr.isatty() if live is None else live)
        self._t0 = time.time()
        self._bar: Progress | None = None
        if self.live:
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
