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
def list_(kind: str = typer.Argument("all", help="methods, benchmarks, backbones, configs, settings or all")) -> None:
    """Show the registered methods, benchmarks and backbones, where each comes from, and its defaults;
    `list settings`: every engine setting of a stage (--set STAGE.KEY=VALUE) with its default, allowed
    values and help."""
    from tabulate import tabulate

    if kind in ("settings", "setting"):  # the schema (ltbench.spec.schema), then each method's own keys
        from ..registry import methods
        from ..spec.schema import all_engine_settings, settings_table

        sections = [("every training stage (the engine's)", all_engine_settings())]
        sections += [(f"method {e.name} (its own keys)", e.obj.settings) for e in methods.entries() if e.obj.settings]
        for title, settings in sections:
            print(f"{title}:")
            print(tabulate(settings_table(settings), headers=["key", "default", "allowed", "group", "what"],
                           tablefmt="simple", maxcolwidths=[None, None, 24, None, 60]))
            print()
        return
    if kind in ("configs", "config"):  # the shipped config files (`ltbench run --config NAME`)
        from ..spec.config import shipped_summaries

        print(tabulate(shipped_summaries(), headers=["config", "what"], tablefmt="simple"))
        return
    from ..registry import backbones, benchmarks, methods

    kinds = {"methods": methods, "benchmarks": benchmarks, "backbones": backbones}
    kind = kind if kind in kinds or kind == "all" or f"{kind}s" not in kinds else f"{kind}s"  # `list method`
    if kind != "all" and kind not in kinds:
        raise LtbenchError(f"`ltbench list {kind}`: expected one of methods, benchmarks, backbones, configs, settings, all.")
    for name in ([kind] if kind != "all" else list(kinds)):
        rows = []
        for e in kinds[name].entries():
            obj = e.obj
            if name == "methods":
                desc = getattr(obj, "description", "")
                defaults = f"stages: {', '.join(obj.stages)}; recipe: {obj.default_recipe}" + \
                    ("" if obj.presentation.in_default_run else "; only with -m NAME|all")
            elif name == "benchmarks":
                desc = f"{obj.title}, {obj.num_classes or 'its own'} classes"
                defaults = ", ".join(f"{k}={v}" for k, v in obj.params.items()) + f"; backbone: {obj.default_backbone}"
            else:
                desc = " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())
                defaults = ""
            rows.append([e.name, desc, defaults, e.origin])
        print(f"{name}:")
        print(tabulate(rows, headers=["name", "what", "defaults", "origin"], tablefmt="simple"))
        print()


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
) -> None:
    """done / running / queued / failed / unfinished runs, from the store and the scheduler (SLURM's
    squeue/sacct for launched jobs); failed runs with the last lines of their error."""
    from .sweep import show_status

    show_status(results, sweep, where)


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
    fmt: str = typer.Option("github", "--format", help="github | latex | csv | json"),
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
    if fmt == "csv":  # a format without footnotes: they go to stderr
        for note in t["record_notes"]:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)


@user_errors
def plot(
    kind: str = typer.Argument(..., help="norms | accuracy | wd | confusion"),
    run_ids: list[str] = typer.Argument(None, help="run ids (prefixes); wd: default all done runs that match the filters"),
    output: Path | None = typer.Option(None, "-o", "--output", help="PNG file (default: ltbench-KIND.png)"),
    benchmark: str | None = typer.Option(None, "--dataset", "-d", help="wd: benchmark(s) to include"),
    method: str | None = typer.Option(None, "--method", "-m", help="wd: method(s) to include"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
    where: Where = None,
) -> None:
    """Figures from records: classifier weight norms, per-class accuracy, accuracy against weight decay, one run's
    test confusion matrix (`plot confusion RUN_ID`)."""
    from ..results.plots import KINDS, PLOTTERS
    from ..results.store import Store
    from ..results.tables import read_records

    if kind not in KINDS:
        raise LtbenchError(f"`ltbench plot {kind}`: expected one of {', '.join(KINDS)}.")
    store = Store(results)
    if run_ids:
        dirs = [store.find(r) for r in run_ids]
        unfinished = [d.run_id for d in dirs if not d.is_done()]
        if unfinished:
            raise LtbenchError(f"run(s) {', '.join(unfinished)} are not finished; `ltbench status` shows them.")
        damaged = [str(p) for p in (d.record_damage() for d in dirs) if p is not None]
        if damaged:
            raise LtbenchError(" ".join(damaged))
        chosen = [d.result() for d in dirs]
    elif kind == "wd":
        from ..spec.request import known_names

        benchmark_names, method_names = known_names(benchmark, method)
        records = read_records(store, benchmark_names)
        chosen = [r for r in records.results if not method_names or r["method"] in method_names]
        for d in [d for d in records.damaged if not method_names or d.path.parent.parent.name in method_names]:
            err.print(f"warning: left out as damaged: {escape(str(d))}", highlight=False, soft_wrap=True)
    else:
        raise LtbenchError(f"`ltbench plot {kind}` needs run ids (see `ltbench status`).")
    from ..results import where as where_

    chosen = where_.select(chosen, where_.parse_where(where))
    if not chosen:
        raise LtbenchError(f"no finished runs in {results} match.")
    if kind != "wd" and len({r["label"] for r in chosen}) > 1:
        raise LtbenchError(f"`ltbench plot {kind}` compares runs of one benchmark; these come from "
                           f"{', '.join(sorted({r['label'] for r in chosen}))}.")
    path = PLOTTERS[kind](chosen, output or Path(f"ltbench-{kind}.png"))
    print(f"wrote {path}")


# Every command, registered in one place, in the order `ltbench --help` lists them.
from .curate import clean, rm  # noqa: E402  (`ltbench rm`, `ltbench clean`)
from .data import data_app  # noqa: E402  (`ltbench data check|prepare`)
from .eval import eval_, export  # noqa: E402  (`ltbench eval`, `ltbench export`)
from .sweep import sweep  # noqa: E402  (`ltbench sweep`)

COMMANDS = {"list": list_, "run": run, "status": status, "show": show, "table": table, "plot": plot,
            "sweep": sweep, "eval": eval_, "export": export, "rm": rm, "clean": clean}
for _name, _command in COMMANDS.items():
    app.command(_name, context_settings=EXTRA_ARGS if _name in ("run", "sweep") else None)(_command)
app.add_typer(data_app, name="data")

__all__ = ["RESUME_HINT", "app", "main"]


def main() -> None:
    from ..progress import survive_closed_output

    survive_closed_output()  # `ltbench run ... | head -1`: a closed pipe silences the output, never fails a run
    app()


if __name__ == "__main__":
    main()
