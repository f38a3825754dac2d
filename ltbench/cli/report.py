"""`ltbench report`: one self-contained HTML page of the results store (ltbench.cli.report_page)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import DEFAULT_RESULTS, Where, user_errors


@user_errors
def report(
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="the HTML file to write"),
    benchmark: str | None = typer.Option(None, "--dataset", "-d", help="benchmark(s), comma-separated (default: all "
                                         "with finished runs)"),
    method: str | None = typer.Option(None, "--method", "-m", help="method(s), comma-separated (default: all)"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
    where: Where = None,
) -> None:
    """One self-contained HTML page (figures embedded, nothing loaded from the network): the comparison tables
    and, for each finished run, per-class accuracy with class names, classifier norms, the test confusion
    matrix, learning curves, and its settings with their origins and provenance."""
    from .report_page import write_report

    runs, figures = write_report(results, output, benchmark, method, where)
    print(f"wrote {output} ({runs} run{'s' if runs != 1 else ''}, {figures} figures)")
