"""Launchers: where runs execute. The engine owns each run (ltbench.engine.training.execute); a launcher only
starts the processes that call it, through submitit, and says which executor it means (never
submitit's AutoExecutor guess: machines with slurm-client but no cluster exist).

- inline: in this process, one run after the other (for debugging).
- local: submitit LocalExecutor processes on this machine, at most ``max_jobs`` at once, counting
  the local jobs of earlier launches that are still alive. The runs are dealt into that many lanes,
  one job each, that run their runs in order (a stage-1 run before the stage-2 runs built on it), so
  the runs queue until their lane is free. With GPUs every job gets its own (CUDA_VISIBLE_DEVICES);
  on a CPU-only machine the jobs share the cores (torch threads = cores / jobs). The jobs outlive the
  command that started them.
- slurm: submitit SlurmExecutor job arrays (one array task per run); a stage-2 run waits for its
  stage-1 job (dependency afterok; dependents of a failed job are cancelled, kill-on-invalid-dep).

A job calls ltbench.launch.jobs.RunJob; the launchers are ltbench.launch.local and ltbench.launch.slurm, the scheduler's
view of the jobs ltbench.launch.jobstate, and the manifest ``<results>/jobs/manifest.json``, which maps run
ids to the jobs launched for them, ltbench.launch.manifest. submitit's job folders (pickles, logs) are
``<results>/jobs/<SLURM job id>/`` and ``<results>/jobs/local/`` (files named by the job's process id).

This module is the one the rest of ltbench imports from: it re-exports the names of those modules that
callers use (``RunJob`` also for jobs pickled as ``ltbench.launch.dispatch.RunJob``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from submitit.core.utils import FailedSubmissionError, UncompletedJobError

from ..errors import LtbenchError
from ..results.store import Store
from ..spec.run_spec import RunSpec
from .jobs import DEFAULT_TIME_MIN, MAX_REQUEUES, Launched, LaunchOptions, RunJob, _job_args
from .jobstate import ACTIVE, FAILED_STATES, is_active, job_failed, job_paths, job_states, log_tail, wait
from .local import _launch_local, _visible_gpus, deal
from .manifest import Manifest, command_line
from .slurm import SBATCH_OPTIONS, SBATCH_OWN, _launch_slurm, check_sbatch, parse_sbatch_flags

if TYPE_CHECKING:
    from ..engine.training import RunOptions

__all__ = [  # defined here, and re-exported from the modules above
    "LAUNCHERS", "check_options", "launch", "launch_options",
    "DEFAULT_TIME_MIN", "MAX_REQUEUES", "LaunchOptions", "Launched", "RunJob",
    "deal", "Manifest", "command_line",
    "ACTIVE", "FAILED_STATES", "is_active", "job_failed", "job_paths", "job_states", "log_tail", "wait",
    "SBATCH_OPTIONS", "SBATCH_OWN", "parse_sbatch_flags",
]

LAUNCHERS = ("inline", "local", "slurm")


def launch_options(values: dict[str, Any]) -> LaunchOptions:
    """LaunchOptions from a command's parameters (those named like its fields; None: the default)."""
    names = {f.name for f in dataclasses.fields(LaunchOptions)}
    return LaunchOptions(**{k: v for k, v in values.items() if k in names and v is not None})


def check_options(lo: LaunchOptions, dry_run: bool = False) -> None:
    """Every launch option a user can get wrong, before anything is submitted. SLURM options are
    checked by ``sbatch --test-only`` where sbatch exists (against the live cluster), else against
    sbatch's option names."""
    if lo.launcher not in LAUNCHERS:
        raise LtbenchError(f"--launcher {lo.launcher!r}: expected one of {', '.join(LAUNCHERS)}.")
    for name, value in (("--max-jobs", lo.max_jobs), ("--jobs-per-gpu", lo.jobs_per_gpu), ("--time", lo.time_min),
                        ("--nodes", lo.nodes), ("--tasks-per-node", lo.tasks_per_node), ("--cpus", lo.cpus),
                        ("--array-parallelism", lo.array_parallelism)):
        if value is not None and value < 1:
            raise LtbenchError(f"{name} {value}: must be at least 1.")
    if lo.gpus is not None and lo.gpus < 0:
        raise LtbenchError(f"--gpus {lo.gpus}: must not be negative.")
    if lo.mem_gb is not None and lo.mem_gb <= 0:
        raise LtbenchError(f"--mem {lo.mem_gb:g}: must be positive (GB).")
    if lo.launcher == "local" and lo.nodes > 1:
        raise LtbenchError(f"--nodes {lo.nodes}: the local launcher runs on this machine only; "
                           "use --launcher slurm.")
    if lo.launcher == "local" and lo.gpus and not _visible_gpus():
        raise LtbenchError(f"--gpus {lo.gpus}: no CUDA GPU is visible on this machine; drop --gpus "
                           "(local jobs then share the CPU cores).")
    if lo.jobs_per_gpu and lo.jobs_per_gpu > 1 and (lo.launcher != "local" or not _visible_gpus()):
        where = "the local launcher" if lo.launcher != "local" else "a machine with CUDA GPUs"
        raise LtbenchError(f"--jobs-per-gpu {lo.jobs_per_gpu}: only for {where}; on the CPU, --max-jobs N "
                           "runs N jobs at once sharing the cores.")
    if lo.launcher != "slurm":
        given = {"--partition": lo.partition, "--account": lo.account, "--qos": lo.qos, "--mem": lo.mem_gb,
                 "--constraint": lo.constraint, "--sbatch": lo.sbatch,
                 "--array-parallelism": lo.array_parallelism}
        slurm_only = [name for name, value in given.items() if value]
        if slurm_only:
            raise LtbenchError(f"{', '.join(slurm_only)}: SLURM options, but --launcher is {lo.launcher}; "
                               "add --launcher slurm.")
        return
    check_sbatch(lo, dry_run)


def launch(specs: list[RunSpec], after: dict[str, str], store: Store, options: RunOptions,
           lo: LaunchOptions) -> Iterator[Launched]:
    """Start jobs for ``specs`` (deduplicated, stage-1 runs before the stage-2 runs on them), yielding
    each as it is submitted, without waiting for them (inline: runs them, after yielding). ``after``:
    run id -> id of an already queued SLURM job that the run must wait for (its stage-1 run's)."""
    if not specs:
        return
    if lo.launcher == "inline":
        yield Launched(None, [s.run_id for s in specs], {"launcher": "inline", "job_id": None})
        try:
            RunJob()(*_job_args(specs, store, options, "inline"))
        except RuntimeError as exc:  # RunJob's summary of the failed runs (each traceback is printed)
            raise LtbenchError(str(exc)) from None
        return
    folder = store.root.absolute() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if lo.launcher == "local":
            yield from _launch_local(specs, store, options, lo, folder)
        else:
            yield from _launch_slurm(specs, after, store, options, lo, folder)
    except (UncompletedJobError, FailedSubmissionError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LtbenchError(f"submitting a {lo.launcher} job failed: {first}") from exc
