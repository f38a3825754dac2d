"""`ltbench tune`: an Optuna study per method (and benchmark) whose trials are ordinary runs
(ltbench.tune). Optuna is imported when the command runs, never for `ltbench --help`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import LtbenchError
from .common import (
    DEFAULT_RESULTS,
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
    KeepFeatures,
    Log,
    Mem,
    MethodSel,
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
    TimeLimit,
    err,
    request_from_options,
    stray_words,
    user_errors,
)

if TYPE_CHECKING:
    from ..launch.jobs import LaunchOptions
    from ..spec.request import RunRequest
    from ..tune.plan import StudyPlan


@user_errors
def tune(
    ctx: typer.Context, method: MethodSel = None, benchmark: DatasetSel = None, backbone: BackboneSel = None,
    imbalance: ImbalanceSel = None, recipe: RecipeSel = None, set_: Sets = [],  # noqa: B006 (typer copies it)
    search: list[str] = typer.Option([], "--search", metavar="STAGE.KEY=[log:|int:|choice:]LO..HI",
                                      help="a searched setting (repeatable), e.g. stage1.weight_decay=log:1e-4..1e-1; "
                                      "default: the space each method declares"),
    trials: int = typer.Option(20, "--trials", help="trials per method (the same budget for every method)"),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe | gp | random | grid"),
    pruner: str = typer.Option("none", "--pruner", help="none | median | asha (from per-epoch validation)"),
    study: str | None = typer.Option(None, "--study", help="study name (default: method-benchmark-<hash of what it "
                                     "searches>; the same command continues it)"),
    jobs: int = typer.Option(1, "--jobs", help="workers pulling trials from the study at once"),
    launcher: str | None = typer.Option(None, "--launcher", help="inline (default with --jobs 1) | local (submitit "
                                        "processes; default with --jobs N) | slurm (a job array of --jobs workers)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="local/slurm: wait for the workers (default) or "
                              "return once they are submitted"),
    seed: SeedSel = None, epochs: Epochs = None, config: ConfigFile = None,
    data_root: DataRoot = Path("data"), results: Results = DEFAULT_RESULTS, device: Device = "auto",
    download: Download = True, stage1: Stage1 = None, split_root: SplitRoot = None, init_weights: InitWeights = None,
    keep_features: KeepFeatures = True, compile_: Compile = False, log: Log = None, dry_run: DryRun = False,
    time_min: TimeLimit = None, gpus: Gpus = None, cpus: Cpus = None, mem_gb: Mem = None, partition: Partition = None,
    account: Account = None, qos: Qos = None, constraint: Constraint = None,
    array_parallelism: ArrayParallelism = None, sbatch: Sbatch = "", setup: Setup = None,
) -> None:
    """Tune hyperparameters on validation with Optuna: every method gets --trials trials over its search space
    (--search, or the space it declares); each trial is an ordinary run (content-addressed, resumable, reused
    when done). The same command continues a study; `ltbench status` follows it, `ltbench table` shows the
    tuned rows with their effort, `ltbench plot tune STUDY` draws it."""
    from ..results.store import Store
    from ..tune.planner import plan_studies

    stray_words(ctx.args, "tune")
    if jobs < 1:
        raise LtbenchError(f"--jobs {jobs}: must be at least 1.")
    launcher = launcher or ("local" if jobs > 1 else "inline")
    if launcher == "inline" and jobs > 1:
        raise LtbenchError(f"--jobs {jobs}: workers run as jobs; add --launcher local (this machine) or slurm.")
    request = request_from_options(locals(), method=method, dataset=benchmark, seed=seed, sets=list(set_),
                                   compile=compile_)
    lo = request.launch_options()
    if lo.tasks > 1:
        raise LtbenchError(f"--gpus {lo.gpus}: a trial runs in one process; give each worker one GPU (--gpus 1) "
                           "and run several workers (--jobs N).")
    store = Store(results)
    plans = plan_studies(request, search, trials, sampler, pruner, study, store)
    request.check(request.specs(store), lo.launcher, dry_run)
    for plan in plans:
        print(_plan_text(plan, results))
    if dry_run:
        print("dry run: nothing started, nothing written.")
        return
    _start(request, plans, lo, jobs, wait, results)


def _plan_text(plan: StudyPlan, results: Path) -> str:
    """A study as this command will run it: its name, method, space, budget and how far it got."""
    from ..tune.plan import PRUNERS, SAMPLERS, grid_size
    from ..tune.study import journal_file, load_summary, open_study

    path = journal_file(results, plan.name)
    state = "new"
    if path.exists():
        open_study(results, plan, create=False)  # refuses a name made for something else
        summary = load_summary(path)
        done = summary.count("complete", "pruned", "failed") if summary else 0
        state = f"continues: {done} of its trials finished" if done else "continues"
    budget = f"{plan.budget} trials" + (f" (--trials {plan.trials}; the grid has {grid_size(plan)} points)"
                                        if plan.budget < plan.trials else "")
    return (f"study {plan.name}: {plan.method} on {plan.label}, {budget}, {SAMPLERS[plan.sampler]}, "
            f"{PRUNERS[plan.pruner]}; {state}\n" + "".join(f"    search {p.describe()}\n" for p in plan.space)
            + f"    objective: validation class-mean accuracy (what tables select on); runs in {results}/runs, "
            f"study in {path}")


def _start(request: RunRequest, plans: list[StudyPlan], lo: LaunchOptions, jobs: int, wait: bool,
           results: Path) -> None:
    from ..launch.dispatch import wait as wait_for
    from ..tune.launch import run_workers, worker_errors
    from ..tune.study import open_study
    from ..tune.worker import TuneJob

    for plan in plans:
        open_study(results, plan, create=True)
    paths = {"results": Path(results).absolute(), "data_root": request.data_root_or_default.absolute(),
             **{k: Path(v).absolute() for k in ("split_root", "init_weights") if (v := getattr(request, k)) is not None}}
    launched = run_workers(TuneJob(dataclasses.replace(request, **paths), plans), lo, jobs, results)
    if launched:
        ids = ", ".join(str(x.entry["job_id"]) for x in launched)
        err.print(f"{len(launched)} {lo.launcher} workers ({ids}) pull trials from the studies", highlight=False)
        if not wait:
            print(f"launched {len(launched)} workers; follow them with: ltbench status --results {results}")
            return
        try:
            wait_for(launched)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted: the {lo.launcher} workers go on without this command; "
                                    f"`ltbench status --results {results}` follows them.") from None
    problems = worker_errors(launched)
    for line in problems:
        err.print(f"warning: {line}", highlight=False, markup=False)
    _summary(request, plans, results)


def _summary(request: RunRequest, plans: list[StudyPlan], results: Path) -> None:
    """Each study's line, the command that runs its best values on more seeds; an error when a study has
    not spent its budget (the same command continues it)."""
    from ..tune.study import journal_file, load_summary

    short = []
    for plan in plans:
        s = load_summary(journal_file(results, plan.name))
        print(f"study {s.line()}")
        if s.best is not None:
            print(f"    more seeds of the best values (they join its tuned row): {rerun_command(request, plan, s.best.sets)}")
        finished = s.count("complete", "pruned", "failed")
        if finished < plan.budget:
            short.append(f"{plan.name} ({finished} of {plan.budget})")
    print(f"`ltbench table --results {results}` shows the tuned rows beside the recipe rows; `ltbench plot tune "
          f"STUDY --results {results}` draws a study.")
    if short:
        raise LtbenchError(f"not every trial finished: {', '.join(short)}; run the same command again to continue "
                           "(`ltbench status` shows why).")



def rerun_command(request: RunRequest, plan: StudyPlan, sets: list[str], seeds: str = "1,2") -> str:
    """`ltbench run` with the study's fixed selectors and settings and the given values of its searched keys."""
    import shlex

    from ..results import DEFAULT_RESULTS

    parts = ["ltbench", "run", "-m", plan.method, "-d", plan.benchmark]
    for flag, value in (("--backbone", request.backbone), ("--recipe", request.recipe),
                        ("--imbalance", request.imbalance), ("--epochs", request.epochs), ("--config", request.config),
                        ("--stage1", request.stage1)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for item in [*(request.sets or []), *sets]:
        parts += ["--set", str(item)]
    if Path(request.results) != Path(DEFAULT_RESULTS):
        parts += ["--results", str(request.results)]
    return " ".join(shlex.quote(p) for p in [*parts, "--seed", seeds])
