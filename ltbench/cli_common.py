"""What the commands of `ltbench` share: the consoles, the one-line error handling, name and seed
parsing, the checks made before anything is written, and the options of `run` and `sweep` (a leaf:
ltbench.cli, ltbench.cli_sweep and ltbench.cli_data import it, it imports none of them)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .benchmark import DATA_ENV
from .errors import LtbenchError

out = Console()
err = Console(stderr=True, soft_wrap=True)

DEFAULT_RESULTS = Path(os.environ.get("LTBENCH_RESULTS", "results"))
DEFAULT_BENCHMARK = "digits_lt"
RESUME_HINT = "interrupted: finished epochs are kept; run the same command again to resume."


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an LtbenchError into one clear line on stderr and exit status 2; Ctrl-C into one line
    (exit status 130) that says how to go on."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LtbenchError as exc:
            err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            err.print(escape(str(exc.args[0]) if exc.args else RESUME_HINT), highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    return wrapper


def split_names(text: str | None, option: str | None = None) -> list[str]:
    """Comma-separated names; with ``option``, a value that names nothing (e.g. --method "") is an
    error rather than "the default"."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    if option and text is not None and not names:
        raise LtbenchError(f"{option} {text!r}: names nothing; leave {option} out for the default, or name "
                           f"one or more, comma-separated (see `ltbench list`).")
    return names


def builtin_methods() -> list[str]:
    """The methods `ltbench run` trains without --method: the built-ins of the default set
    (``Method.in_default_run``)."""
    from .registry import methods

    return [e.name for e in methods.entries() if e.origin.startswith("builtin")
            and getattr(e.obj, "in_default_run", True)]


def every_method() -> list[str]:
    """What --method all names: every registered method, built-in or plugin."""
    from .registry import methods

    return [e.name for e in methods.entries()]


def stage1_spec(store: Any, stage1: str | None) -> dict[str, Any] | None:
    """The spec.json of the finished run that --stage1 names (None without --stage1)."""
    if not stage1:
        return None
    rd = store.find(stage1)
    if not rd.is_done():
        raise LtbenchError(f"--stage1 {stage1}: run {rd.run_id} is not finished ({rd.state()}); finish it first.")
    return rd.spec()


def known_names(benchmark: str | None, method: str | None) -> tuple[list[str], list[str]]:
    """The benchmarks and methods a filter names, each checked against its registry (an unknown name
    is an error with close matches, not an empty result)."""
    from .registry import benchmarks, methods

    benchmark_names, method_names = split_names(benchmark, "--dataset"), split_names(method, "--method")
    for name in benchmark_names:
        benchmarks.get_entry(name)
    for name in method_names:
        methods.get_entry(name)
    return benchmark_names, method_names


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in split_names(text)] or [0]
    except ValueError:
        raise LtbenchError(f"--seed {text!r}: expected integers separated by commas, e.g. --seed 0,1,2.") from None


def check_device(device: str, launcher: str) -> None:
    """Refuse a device this machine lacks before anything is written, when the runs will run here
    (inline or local jobs; a SLURM job's node may have what the submitting machine lacks)."""
    if launcher != "slurm":
        from .environment import resolve_device

        resolve_device(device)


def check_writable(results: Path) -> None:
    """Refuse a results root that cannot be written, before anything runs; creates nothing (the first
    run that starts does)."""
    existing = results.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LtbenchError(f"--results {results}: {existing} is a file, not a directory; pass a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LtbenchError(f"--results {results}: {existing} is not writable; pass a writable directory.")


# Launch options of `run` and `sweep` (ltbench.launch): where and how jobs run, never part of a spec.
Launcher = Annotated[str, typer.Option("--launcher", help="inline (this process) | local (submitit "
                                       "processes on this machine) | slurm (submitit job arrays)")]
MaxJobs = Annotated[int | None, typer.Option("--max-jobs", help="local: jobs at once (default: one per GPU; "
                                             "1 on a CPU-only machine, where jobs share the cores)")]
TimeLimit = Annotated[int | None, typer.Option("--time", help="minutes per job (default 240 on SLURM, 1440 "
                                               "local); at the limit a job checkpoints and requeues itself")]
Gpus = Annotated[int | None, typer.Option("--gpus", help="GPUs per node of a job (local default: 1 where "
                                          "there are GPUs); several: one run over them (DDP)")]
Nodes = Annotated[int, typer.Option("--nodes", help="slurm: nodes per run (DDP across nodes)")]
TasksPerNode = Annotated[int | None, typer.Option("--tasks-per-node", help="processes per node of one run "
                                                  "(DDP ranks; default: one per GPU)")]
Cpus = Annotated[int | None, typer.Option("--cpus", help="CPUs per task (torch threads)")]
Mem = Annotated[float | None, typer.Option("--mem", help="slurm: memory per node, GB")]
Partition = Annotated[str | None, typer.Option("--partition", help="slurm partition")]
Account = Annotated[str | None, typer.Option("--account", help="slurm account")]
Qos = Annotated[str | None, typer.Option("--qos", help="slurm quality of service")]
Constraint = Annotated[str | None, typer.Option("--constraint", help="slurm node features, e.g. a100")]
ArrayParallelism = Annotated[int | None, typer.Option("--array-parallelism",
                                                      help="slurm: array tasks running at once")]
Sbatch = Annotated[str, typer.Option("--sbatch", help="slurm: more sbatch flags, e.g. "
                                     "'--exclusive --gres=gpu:a100:2'")]
Setup = Annotated[list[str] | None, typer.Option("--setup", help="shell line a job runs first (repeatable), "
                                                 "e.g. 'module load cuda'")]
SyncBn = Annotated[bool, typer.Option("--sync-bn", help="DDP on CUDA: SyncBatchNorm instead of per-rank "
                                      "BatchNorm (recorded)")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the training step's model (recorded; "
                                       "pays off on GPUs, costs a compile at the start of every stage)")]
KeepFeatures = Annotated[bool, typer.Option("--keep-features/--no-keep-features", help="stage-2 runs keep the "
                                            "stage-1 backbone's features in its run folder and share them")]
TestEveryEpoch = Annotated[bool, typer.Option("--test-every-epoch", help="evaluate the test set after every "
                                               "epoch too (metrics.jsonl); by default only selection on test "
                                               "and the final report read it")]
Log = Annotated[str | None, typer.Option("--log", metavar="tensorboard", help="also log every epoch to "
                                         "TensorBoard (<run>/tensorboard/; pip install 'ltbench[tensorboard]')")]
JobsPerGpu = Annotated[int | None, typer.Option("--jobs-per-gpu", help="local: jobs sharing each GPU at once "
                                                "(small models, e.g. a ResNet-32 sweep; default 1)")]


# Selectors of `run` and `sweep` (one definition for both): what runs, on what, from where to where.
MethodSel = Annotated[str | None, typer.Option("--method", "-m", metavar="M[,M..]",
                                               help="method(s), comma-separated, or all (default: the weight-balancing paper's comparison set, see `ltbench list methods`)")]
DatasetSel = Annotated[str | None, typer.Option("--dataset", "-d", metavar="D[,D..]", help="benchmark(s), "
                                                f"comma-separated (default: {DEFAULT_BENCHMARK})")]
BackboneSel = Annotated[str | None, typer.Option("--backbone", "-b",
                                                 help="backbone (default: the benchmark's / recipe's)")]
ImbalanceSel = Annotated[float | None, typer.Option("--imbalance", help="imbalance ratio n_max/n_min (CIFAR-LT, "
                                                    "digits-LT)")]
RecipeSel = Annotated[str | None, typer.Option("--recipe", help="paper | cao | official | kang (default: the "
                                               "method's)")]
Sets = Annotated[list[str], typer.Option("--set", metavar="STAGE.KEY=VALUE",
                                         help="override a hyperparameter (repeatable)")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="epochs of the first training stage (stage 1 of "
                                            "decoupled methods; stage 2: --set stage2.epochs=N)")]
DataRoot = Annotated[Path, typer.Option("--data-root", envvar=DATA_ENV, help="where the datasets live")]
Results = Annotated[Path, typer.Option("--results", help="results root")]
ConfigFile = Annotated[str | None, typer.Option("--config", metavar="FILE", help="a YAML or TOML file of selectors and "
                                                "--set keys, or a shipped config (e.g. wb/cifar100_ir100); the "
                                                "command line's flags and --set win over it")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="print every run it would start (its settings and their "
                                      "origins, its id, whether it is done); start and write nothing")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N]")]
Download = Annotated[bool, typer.Option("--download/--no-download", help="download missing public datasets")]
Stage1 = Annotated[str | None, typer.Option("--stage1", help="decoupled methods: build on this finished stage-1 "
                                            "run id")]
SplitRoot = Annotated[Path | None, typer.Option("--split-root", help="split-file benchmarks: folder of the split "
                                                "lists (default: --data-root)")]
InitWeights = Annotated[Path | None, typer.Option("--init-weights", help="initial backbone weights (a torch "
                                                  "state dict file)")]
