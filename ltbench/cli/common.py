"""What the commands of `ltbench` share: the consoles, the one-line error handling, name and seed
parsing, the checks made before anything is written, and the options of `run` and `sweep` (a leaf:
ltbench.cli.app, ltbench.cli.sweep and ltbench.cli.data import it, it imports none of them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..data.benchmark import DATA_ENV, DEFAULT_BENCHMARK
from ..errors import LtbenchError
from ..results import DEFAULT_RESULTS  # noqa: F401 (the commands' default)

if TYPE_CHECKING:
    from ..spec.request import RunRequest

out = Console()
err = Console(stderr=True, soft_wrap=True)

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


def request_from_options(values: dict[str, Any], **named: Any) -> RunRequest:
    """The request (ltbench.spec.request.RunRequest) of `run` or `sweep` from its parameters: those named
    like the request's fields, the launch options (ltbench.launch.jobs.LaunchOptions' fields) and
    ``named`` (parameters whose name differs from the field's: benchmark -> dataset, set_ -> sets, ...)."""
    import dataclasses

    from ..launch.jobs import LaunchOptions
    from ..spec.request import RunRequest

    fields = {f.name for f in dataclasses.fields(RunRequest)} - {"launch"}
    launch = {f.name for f in dataclasses.fields(LaunchOptions)}
    values = {**values, **named}
    return RunRequest(**{k: v for k, v in values.items() if k in fields},
                      launch={k: v for k, v in values.items() if k in launch and v is not None})


# Launch options of `run` and `sweep` (ltbench.launch.dispatch): where and how jobs run, never part of a spec.
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
KeepFeatures = Annotated[bool, typer.Option("--keep-features/--no-keep-features", help="keep a frozen backbone's "
                                            "features on disk and share them: a stage-1 backbone's in that run's "
                                            "folder (its stage-2 runs read them), a pretrained backbone's in "
                                            "<results>/features/ (every run on that backbone and data: linear probes, "
                                            "stage 2); `ltbench clean --features` removes those no run needs")]
TestEveryEpoch = Annotated[bool, typer.Option("--test-every-epoch", help="evaluate the test set after every "
                                               "epoch too (metrics.jsonl); by default only selection on test "
                                               "and the final report read it")]
Log = Annotated[str | None, typer.Option("--log", metavar="tensorboard,wandb,mlflow", help="also log the hyperparameters, "
                                         "every epoch and the final record to TensorBoard (<run>/tensorboard/), wandb "
                                         "(offline into <run>/wandb/ without an account) or MLflow (<results>/mlflow.db, "
                                         "or MLFLOW_TRACKING_URI); pip install 'ltbench[tensorboard|wandb|mlflow]'")]
JobsPerGpu = Annotated[int | None, typer.Option("--jobs-per-gpu", help="local: jobs sharing each GPU at once "
                                                "(small models, e.g. a ResNet-32 sweep; default 1)")]


# --where KEY=VALUE of `table`, `status` and `plot` (ltbench.results.where).
Where = Annotated[list[str] | None, typer.Option("--where", metavar="KEY=VALUE", help="only the runs whose setting "
                                                 "KEY has VALUE (repeatable), e.g. --where train.epochs=200")]

# Selectors of `run` and `sweep` (one definition for both): what runs, on what, from where to where.
SeedSel = Annotated[str | None, typer.Option("--seed", "--seeds", metavar="S[,S..]", help="seed(s), comma-separated, "
                                             "each in 0..2^63-1 (default 0)")]
# Words after the options (`ltbench run train.lr=0.1`) reach run and sweep as ctx.args (EXTRA_ARGS), and
# ``stray_words`` refuses them with a hint instead of typer's "unexpected extra argument".
EXTRA_ARGS = {"allow_extra_args": True}


def stray_words(words: list[str] | None, command: str) -> None:
    """One clear line for words that are no option: a setting written without --set, or anything else."""
    if not words:
        return
    word = words[0]
    if "=" in word and not word.startswith("-"):
        raise LtbenchError(f"{word!r}: a setting goes after --set: `ltbench {command} ... --set {word}` (one --set "
                           "per setting).")
    raise LtbenchError(f"{word!r}: `ltbench {command}` takes no such argument; names go after an option (e.g. "
                       f"--method {word}); see `ltbench {command} --help`.")
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
