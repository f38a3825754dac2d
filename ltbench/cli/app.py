"""The `ltbench` command line. torch is imported only by the commands that train."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from .. import __version__
from ..errors import LtbenchError
from .common import (
    DEFAULT_RESULTS,
    EXTRA_ARGS,
    RESUME_HINT,
    Account,
    ArrayParallelism,
    BackboneSel,
    Compile,
    ConfigFile,
    Constraint,
    Cpus,
    DataRoot,
    DatasetSel,
    Device,
    Download,
    DryRun,
    Epochs,
    Gpus,
    ImbalanceSel,
    InitWeights,
    JobsPerGpu,
    KeepFeatures,
    Launcher,
    Log,
    MaxJobs,
    Mem,
    MethodSel,
    Nodes,
    Partition,
    Qos,
    RecipeSel,
    Results,
    Sbatch,
    SeedSel,
    Sets,
    Setup,
    SplitRoot,
    Stage1,
    SyncBn,
    TasksPerNode,
    TestEveryEpoch,
    TimeLimit,
    Where,
    err,
    request_from_options,
    stray_words,
    user_errors,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="ltbench: long-tailed recognition benchmarks (weight balancing and its baselines). "
                  "--dataset names a benchmark: a dataset with its long-tailed protocol (`ltbench list benchmarks`).")
def _version(value: bool) -> None:
    if value:
        print(f"ltbench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    pass


@user_errors
def list_(kind: str = typer.Argument("all", help="methods, benchmarks, backbones, configs, settings or all"),
          wide: bool = typer.Option(False, "--wide", help="one line per row, however wide (default: fit the "
                                    "terminal, 80 columns in a pipe)")) -> None:
    """Show the registered methods, benchmarks and backbones, where each comes from, and its defaults;
    `list settings`: every engine setting of a stage (--set STAGE.KEY=VALUE) with its default, allowed
    values and help."""
    from .listing import print_listing

    print_listing(kind, wide)


@user_errors
def run(
    ctx: typer.Context, method: MethodSel = None, benchmark: DatasetSel = None, backbone: BackboneSel = None,
    imbalance: ImbalanceSel = None, recipe: RecipeSel = None, set_: Sets = [],  # noqa: B006 (typer copies it)
    seed: SeedSel = None,
    epochs: Epochs = None, config: ConfigFile = None,
    data_root: DataRoot = Path("data"), results: Results = DEFAULT_RESULTS, device: Device = "auto",
    download: Download = True,
    force: bool = typer.Option(False, "--force", help="rerun runs that are already done"), dry_run: DryRun = False,
    stage1: Stage1 = None, split_root: SplitRoot = None, init_weights: InitWeights = None,
    sync_bn: SyncBn = False, compile_: Compile = False, keep_features: KeepFeatures = True,
    test_every_epoch: TestEveryEpoch = False, log: Log = None, launcher: Launcher = "inline",
    max_jobs: MaxJobs = None, jobs_per_gpu: JobsPerGpu = None, time_min: TimeLimit = None, gpus: Gpus = None, nodes: Nodes = 1,
    tasks_per_node: TasksPerNode = None, cpus: Cpus = None, mem_gb: Mem = None, partition: Partition = None,
    account: Account = None, qos: Qos = None, constraint: Constraint = None,
    array_parallelism: ArrayParallelism = None, sbatch: Sbatch = "", setup: Setup = None
) -> None:
    """Train and evaluate, then print the comparison table. With no selectors: the built-in methods
    on the embedded digits-LT benchmark (CPU, no download). --launcher local|slurm submits the runs
    as jobs and waits for them."""
    from ..api import execute_request

    stray_words(ctx.args, "run")
    request = request_from_options(locals(), method=method, dataset=benchmark, seed=seed, sets=set_,
                                   compile=compile_)
    _, done = execute_request(request, dry_run)
    if dry_run:
        return
    from ..results.tables import build_table, render

    table = build_table(done, columns=sorted({r["label"] for r in done}))
    print(f"\n{table['title']}  (records in {results})")
    print(render(table, "github"))


@user_errors
def status(
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
    sweep: str = typer.Option("all", "--sweep", help="all | latest | a sweep id (`ltbench sweep` prints it)"),
    where: Where = None,
    wide: bool = typer.Option(False, "--wide", help="one line per run, however wide (default: fit the terminal, "
                              "80 columns in a pipe)"),
) -> None:
    """done / running / queued / failed / unfinished runs, from the store and the scheduler (SLURM's
    squeue/sacct for launched jobs); failed runs with the last lines of their error."""
    from .sweep import show_status

    show_status(results, sweep, where, wide)


@user_errors
def show(
    run_id: str = typer.Argument(..., help="a run id, or its first characters (`ltbench status` lists them)"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
) -> None:
    """One record: its spec (every value with its origin), its stage-1 run, its result (top-1, many /
    medium / few, the selection) and its files with their sizes."""
    from ..results.store import Store
    from .show import show_text

    text, damage = show_text(Store(results), run_id)
    print(text)
    if damage is not None:
        raise damage


@user_errors
def table(
    benchmark: str | None = typer.Option(None, "--dataset", "-d", help="benchmark(s), comma-separated (default: the WB paper's five + any with records)"),
    method: str | None = typer.Option(None, "--method", "-m", help="method(s), comma-separated"),
    fmt: str = typer.Option("github", "--format", help="github | markdown | latex (best in bold) | csv | csv-wide "
                            "(one line per row) | json"),
    reference: bool = typer.Option(False, "--reference", help="put the published numbers beside ours"),
    select: str = typer.Option("val", "--select", help="val: hyperparameters chosen on validation | last: every configuration, last epoch"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
    where: Where = None,
    evals: bool = typer.Option(False, "--evals", help="the table of the `ltbench eval` records (kept out of the runs' table)"),
    mix_protocols: bool = typer.Option(False, "--mix-protocols", help="choose on validation across epoch counts, recipes "
                                       "and backbones too (by default each is a row of its own)"),
) -> None:
    """Comparison table of the finished runs: test top-1, mean ± std (seeds) per method and benchmark."""
    from ..api import format_table, table_data
    from ..results.tables import FORMATS

    if fmt not in FORMATS:
        raise LtbenchError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}.")
    t = table_data(results, benchmark, method, select, reference, where, evals=evals, mix_protocols=mix_protocols)
    print(format_table(t, fmt))
    if fmt in ("csv", "csv-wide"):  # formats without footnotes: they go to stderr
        for note in t["record_notes"]:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)


@user_errors
def plot(
    kind: str = typer.Argument(..., help="norms | accuracy | wd | confusion | tune"),
    run_ids: list[str] = typer.Argument(None, help="run ids (prefixes); wd: default all done runs that match the filters; "
                                        "tune: a study's name"),
    output: Path | None = typer.Option(None, "-o", "--output", help="PNG file (default: ltbench-KIND.png)"),
    benchmark: str | None = typer.Option(None, "--dataset", "-d", help="wd: benchmark(s) to include"),
    method: str | None = typer.Option(None, "--method", "-m", help="wd: method(s) to include"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
    where: Where = None,
) -> None:
    """Figures from records: classifier weight norms, per-class accuracy, accuracy against weight decay, one run's
    test confusion matrix (`plot confusion RUN_ID`)."""
    from ..results.plots import KINDS, PLOTTERS

    if kind not in KINDS:
        raise LtbenchError(f"`ltbench plot {kind}`: expected one of {', '.join(KINDS)}.")
    if kind == "tune":  # a study of `ltbench tune`, not runs (ltbench.tune.plots)
        from ..tune.plots import plot_study

        print(f"wrote {plot_study(results, run_ids, output)}")
        return
    from ..api import plot_records

    chosen = plot_records(kind, run_ids, results, benchmark, method, where)
    path = PLOTTERS[kind](chosen, output or Path(f"ltbench-{kind}.png"))
    print(f"wrote {path}")


# Every command, registered in one place, in the order `ltbench --help` lists them.
from .curate import clean, rm  # noqa: E402  (`ltbench rm`, `ltbench clean`)
from .data import data_app  # noqa: E402  (`ltbench data check|prepare`)
from .eval import eval_, export  # noqa: E402  (`ltbench eval`, `ltbench export`)
from .report import report  # noqa: E402  (`ltbench report`)
from .sweep import sweep  # noqa: E402  (`ltbench sweep`)
from .tune import tune  # noqa: E402  (`ltbench tune`)

COMMANDS = {"list": list_, "run": run, "status": status, "show": show, "table": table, "plot": plot,
            "sweep": sweep, "tune": tune, "eval": eval_, "export": export, "report": report, "rm": rm, "clean": clean}
for _name, _command in COMMANDS.items():
    app.command(_name, context_settings=EXTRA_ARGS if _name in ("run", "sweep", "tune") else None)(_command)
app.add_typer(data_app, name="data")

__all__ = ["RESUME_HINT", "app", "main"]


def main() -> None:
    from ..progress import survive_closed_output

    survive_closed_output()  # `ltbench run ... | head -1`: a closed pipe silences the output, never fails a run
    app()


if __name__ == "__main__":
    main()
