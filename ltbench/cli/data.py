"""`ltbench data check|prepare BENCHMARK`: verify a copy of a benchmark's data, or explain (and where
possible perform) the steps to get it. Registered on the main app as the `data` sub-command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..data.benchmark import DATA_ENV
from .common import user_errors

data_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="Check a copy of a benchmark's data, or see how to get it.")

MARKS = {"ok": "[green]  ok [/green]", "info": "[blue]  >> [/blue]", "warn": "[yellow]warn [/yellow]",
         "error": "[red]FAIL [/red]"}


def _print(report: Any) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]{escape(report.title)}[/bold]")
    for finding in report.findings:
        console.print(f"{MARKS[finding.level]}{escape(finding.text)}")


@data_app.command("check")
@user_errors
def check(
    benchmark: str = typer.Argument(..., help="benchmark name, e.g. imagenet_lt"),
    root: Path = typer.Option(Path("data"), "--root", "--data-root", envvar=DATA_ENV,
                              help="where the images live (ltbench run --data-root)"),
    split_root: Path | None = typer.Option(None, "--split-root", help="folder of the split lists (default: --root)"),
    full: bool = typer.Option(False, "--full", help="check and decode every listed image, not a sample"),
    sample: int = typer.Option(500, "--sample", help="images per split to look for and decode"),
    expect_real: bool = typer.Option(True, "--expect-real/--no-expect-real",
                                     help="compare the split lists with the published ones (line, class and group counts)"),
    imbalance: float | None = typer.Option(None, "--imbalance", help="imagefolder: the counts after making the "
                                           "training images long-tailed with this ratio (as ltbench run --imbalance)"),
) -> None:
    """Verify a copy: split lists present and as published, listed images present, images decode.
    imagefolder (your own images): classes, per-class counts after the split, imbalance ratio,
    many/medium/few sizes, classes without val/test images, unreadable files. Exits 1 when it finds a
    problem."""
    from ..data.check import check as run_check

    report = run_check(benchmark, root, split_root, full=full, sample=sample, expect_real=expect_real,
                       imbalance=imbalance)
    _print(report)
    if report.errors:
        typer.echo(f"{report.errors} problem{'s' if report.errors > 1 else ''} found.")
        raise typer.Exit(1)
    typer.echo("all checks passed.")


@data_app.command("prepare")
@user_errors
def prepare(
    benchmark: str = typer.Argument(..., help="benchmark name, e.g. inat2018"),
    root: Path = typer.Option(Path("data"), "--root", "--data-root", envvar=DATA_ENV,
                              help="where the images go (ltbench run --data-root)"),
    split_root: Path | None = typer.Option(None, "--split-root", help="where the split lists go (default: --root)"),
    download: bool = typer.Option(True, "--download/--no-download", help="download the published split lists that are public"),
) -> None:
    """Explain where the data comes from and where each file goes; do the steps that need no login
    and no large archive. Exits 1 while something is still missing."""
    from ..data.check import prepare as run_prepare

    report = run_prepare(benchmark, root, split_root, download=download)
    _print(report)
    if report.errors:
        raise typer.Exit(1)
