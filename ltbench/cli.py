"""The `ltbench` command line. torch is imported only by the commands that train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from . import __version__
from .cli_common import (
    DEFAULT_BENCHMARK,
    DEFAULT_RESULTS,
    RESUME_HINT,
    Account,
    ArrayParallelism,
    BackboneSel,
    Compile,
    Constraint,
    Cpus,
    DataRoot,
    DatasetSel,
    Device,
    Download,
    Epochs,
    Gpus,
    ImbalanceSel,
    InitWeights,
    JobsPerGpu,
    KeepFeatures,
    Launcher,
    MaxJobs,
    Mem,
    MethodSel,
    Nodes,
    Partition,
    Qos,
    RecipeSel,
    Results,
    Sbatch,
    Sets,
    Setup,
    SplitRoot,
    Stage1,
    SyncBn,
    TasksPerNode,
    TestEveryEpoch,
    TimeLimit,
    builtin_methods,
    check_device,
    check_writable,
    err,
    known_names,
    parse_seeds,
    split_names,
    stage1_spec,
    user_errors,
)
from .errors import LtbenchError

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


@app.command("list")
@user_errors
def list_(kind: str = typer.Argument("all", help="methods, benchmarks, backbones or all")) -> None:
    """Show the registered methods, benchmarks and backbones, where each comes from, and its defaults."""
    from tabulate import tabulate

    from .registry import backbones, benchmarks, methods

    kinds = {"methods": methods, "benchmarks": benchmarks, "backbones": backbones}
    kind = kind if kind in kinds or kind == "all" or f"{kind}s" not in kinds else f"{kind}s"  # `list method`
    if kind != "all" and kind not in kinds:
        raise LtbenchError(f"`ltbench list {kind}`: expected one of methods, benchmarks, backbones, all.")
    for name in ([kind] if kind != "all" else list(kinds)):
        rows = []
        for e in kinds[name].entries():
            obj = e.obj
            if name == "methods":
                desc = getattr(obj, "description", "")
                defaults = f"stages: {', '.join(obj.stages)}; recipe: {obj.default_recipe}"
            elif name == "benchmarks":
                desc = f"{obj.title}, {obj.num_classes} classes"
                defaults = ", ".join(f"{k}={v}" for k, v in obj.params.items()) + f"; backbone: {obj.default_backbone}"
            else:
                desc = " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())
                defaults = ""
            rows.append([e.name, desc, defaults, e.origin])
        print(f"{name}:")
        print(tabulate(rows, headers=["name", "what", "defaults", "origin"], tablefmt="simple"))
        print()


@app.command()
@user_errors
def run(
    method: MethodSel = None, benchmark: DatasetSel = None, backbone: BackboneSel = None,
    imbalance: ImbalanceSel = None, recipe: RecipeSel = None, set_: Sets = [],  # noqa: B006 (typer copies it)
    seed: str = typer.Option("0", "--seed", metavar="S[,S..]", help="seed(s), comma-separated, each in 0..2^63-1"),
    epochs: Epochs = None,
    data_root: DataRoot = Path("data"), results: Results = DEFAULT_RESULTS, device: Device = "auto",
    download: Download = True,
    force: bool = typer.Option(False, "--force", help="rerun runs that are already done"),
    stage1: Stage1 = None, split_root: SplitRoot = None, init_weights: InitWeights = None,
    sync_bn: SyncBn = False, compile_: Compile = False, keep_features: KeepFeatures = True,
    test_every_epoch: TestEveryEpoch = False, launcher: Launcher = "inline",
    max_jobs: MaxJobs = None, jobs_per_gpu: JobsPerGpu = None, time_min: TimeLimit = None, gpus: Gpus = None, nodes: Nodes = 1,
    tasks_per_node: TasksPerNode = None, cpus: Cpus = None, mem_gb: Mem = None, partition: Partition = None,
    account: Account = None, qos: Qos = None, constraint: Constraint = None,
    array_parallelism: ArrayParallelism = None, sbatch: Sbatch = "", setup: Setup = None,
) -> None:
    """Train and evaluate, then print the comparison table. With no selectors: the built-in methods
    on the embedded digits-LT benchmark (CPU, no download). --launcher local|slurm submits the runs
    as jobs and waits for them."""
    from .launch import check_options, launch_options

    launch_opts = launch_options(locals())
    check_options(launch_opts)
    from .specs import resolve
    from .store import Store

    store = Store(results)
    method_names = split_names(method, "--method") or builtin_methods()
    benchmark_names = split_names(benchmark, "--dataset") or [DEFAULT_BENCHMARK]
    parent = stage1_spec(store, stage1)
    specs = [resolve(m, d, backbone=backbone, recipe=recipe, imbalance=imbalance, epochs=epochs, sets=set_, seed=s,
                     stage1_run=parent, init_weights=init_weights)
             for d in benchmark_names for m in method_names for s in parse_seeds(seed)]
    check_device(device, launch_opts.launcher)
    check_writable(results)

    from .engine import RunOptions, execute
    from .tables import build_table, render

    opts = RunOptions(data_root=data_root, device=device, download=download, split_root=split_root,
                      init_weights=init_weights, sync_bn=sync_bn, compile=compile_, keep_features=keep_features,
                      test_every_epoch=test_every_epoch)
    from .cli_sweep import launch_and_wait

    inline = launch_opts.launcher == "inline"
    done = [] if inline else launch_and_wait(specs, store, opts, launch_opts, force)  # jobs run the specs
    users = stage1_users(specs)
    for i, spec in enumerate(specs if inline else [], 1):
        parent = spec.parent_spec()
        if parent is not None and not store.run_dir(parent).is_done():  # it trains first, inside execute
            _header(f"run {i}/{len(specs)}, first", parent, store, False, f"stage 1 of {', '.join(users[parent.run_id])}")
        _header(f"run {i}/{len(specs)}", spec, store, force)
        result = execute(spec, store, opts, force=force)
        err.print(f"  {describe_result(result)} -> {escape(str(store.run_dir(spec).path))}", highlight=False)
        if parent is not None:  # the shared stage-1 run is a row of its own (e.g. CE + tuned WD)
            done.append(store.run_dir(parent).result())
        done.append(result)
    done = list({r["run_id"]: r for r in done}.values())
    table = build_table(done, columns=sorted({r["label"] for r in done}))
    print(f"\n{table['title']}  (records in {results})")
    print(render(table, "github"))


def _header(what: str, spec: Any, store: Any, force: bool, role: str = "") -> None:
    rd = store.run_dir(spec)
    state = "done, skipped" if rd.is_done() and not force else ("resuming" if rd.checkpoint_file.exists() else "new")
    role = f" ({role})" if role else ""
    err.print(f"[bold]{escape(what)}[/bold] {escape(spec.method)}{escape(role)} on {escape(spec.label())} "
              f"({escape(spec.backbone)}, recipe {escape(spec.recipe)}, seed {spec.seed}) id {spec.run_id}: {state}",
              highlight=False)


def stage1_users(specs: list[Any]) -> dict[str, list[str]]:
    """Stage-1 run id -> the methods among ``specs`` that build on it."""
    users: dict[str, list[str]] = {}
    for s in specs:
        if s.parent_id is not None and s.method not in users.setdefault(s.parent_id, []):
            users[s.parent_id].append(s.method)
    return users


def describe_result(result: dict[str, Any]) -> str:
    """One line: the test accuracy and how the reported weights were chosen."""
    sel, val = result["selected"], result["val"]["class_mean"]
    val_text = f"val class-mean {val:.2f}" if val is not None else "no validation set"
    how = f"epoch {sel['epoch']} selected on {sel['rule']}" if sel.get("epoch") is not None else \
        "post-hoc: no training of its own"
    return f"test top-1 {result['test']['top1']:.2f}  ({val_text}; {how})"


@app.command()
@user_errors
def status(
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
    sweep: str = typer.Option("all", "--sweep", help="all | latest | a sweep id (`ltbench sweep` prints it)"),
) -> None:
    """done / running / queued / failed / unfinished runs, from the store and the scheduler (SLURM's
    squeue/sacct for launched jobs); failed runs with the last lines of their error."""
    from .cli_sweep import show_status

    show_status(results, sweep)


@app.command()
@user_errors
def table(
    benchmark: str | None = typer.Option(None, "--dataset", "-d", help="benchmark(s), comma-separated (default: the WB paper's five + any with records)"),
    method: str | None = typer.Option(None, "--method", "-m", help="method(s), comma-separated"),
    fmt: str = typer.Option("github", "--format", help="github | latex | csv | json"),
    reference: bool = typer.Option(False, "--reference", help="put the published numbers beside ours"),
    select: str = typer.Option("val", "--select", help="val: hyperparameters chosen on validation | last: every configuration, last epoch"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
) -> None:
    """Comparison table of the finished runs: test top-1, mean ± std (seeds) per method and benchmark."""
    from .store import Store
    from .tables import FORMATS, build_table, read_records, render

    if fmt not in FORMATS:
        raise LtbenchError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}.")
    if select not in ("val", "last"):
        raise LtbenchError(f"--select {select!r}: expected val or last.")
    benchmark_names, method_names = known_names(benchmark, method)
    records = read_records(Store(results), benchmark_names)
    t = build_table(records.results, benchmarks=benchmark_names, methods=method_names, select=select, reference=reference)
    if not t["rows"]:
        asked = " and ".join(f"{o} {v}" for o, v in (("--dataset", benchmark), ("--method", method)) if v)
        raise LtbenchError(f"no finished runs in {results}{f' match {asked}' if asked else ''}"
                           + "".join(f" ({n})" for n in records.notes()) + "; run some with `ltbench run` first "
                           "(`ltbench status` lists the runs).")
    t["notes"] += records.notes(t)
    if fmt in ("github", "latex"):
        print(t["title"] if fmt == "github" else f"% {t['title']}")
    print(render(t, fmt))
    if fmt == "csv":  # a format without footnotes: they go to stderr
        for note in records.notes(t):
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def plot(
    kind: str = typer.Argument(..., help="norms | accuracy | wd"),
    run_ids: list[str] = typer.Argument(None, help="run ids (prefixes); wd: default all done runs that match the filters"),
    output: Path | None = typer.Option(None, "-o", "--output", help="PNG file (default: ltbench-KIND.png)"),
    benchmark: str | None = typer.Option(None, "--dataset", "-d", help="wd: benchmark(s) to include"),
    method: str | None = typer.Option(None, "--method", "-m", help="wd: method(s) to include"),
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="results root"),
) -> None:
    """Figures from records: classifier weight norms, per-class accuracy, accuracy against weight decay."""
    from .plots import KINDS, PLOTTERS
    from .store import Store
    from .tables import read_records

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
        benchmark_names, method_names = known_names(benchmark, method)
        records = read_records(store, benchmark_names)
        chosen = [r for r in records.results if not method_names or r["method"] in method_names]
        for d in [d for d in records.damaged if not method_names or d.path.parent.parent.name in method_names]:
            err.print(f"warning: left out as damaged: {escape(str(d))}", highlight=False, soft_wrap=True)
    else:
        raise LtbenchError(f"`ltbench plot {kind}` needs run ids (see `ltbench status`).")
    if not chosen:
        raise LtbenchError(f"no finished runs in {results} match.")
    if kind != "wd" and len({r["label"] for r in chosen}) > 1:
        raise LtbenchError(f"`ltbench plot {kind}` compares runs of one benchmark; these come from "
                           f"{', '.join(sorted({r['label'] for r in chosen}))}.")
    path = PLOTTERS[kind](chosen, output or Path(f"ltbench-{kind}.png"))
    print(f"wrote {path}")


from .cli_data import data_app  # noqa: E402  (the `ltbench data check|prepare` commands)
from .cli_sweep import sweep  # noqa: E402

app.command()(sweep)
app.add_typer(data_app, name="data")

__all__ = ["RESUME_HINT", "app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
