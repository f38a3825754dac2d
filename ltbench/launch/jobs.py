"""The job every launcher starts, and what a launch is made of: ``LaunchOptions`` (how to launch),
``RunJob`` (the function each job calls), ``Launched`` (one submitted job and its runs).

Every job calls a ``RunJob``: picklable and submitit-Checkpointable. On preemption or timeout submitit
calls its ``checkpoint()`` (submitit's own), which resubmits the same job; SLURM requeues it and it
resumes every unfinished run from the engine's per-epoch checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import submitit

from ..errors import LtbenchError
from ..results.store import Store
from ..spec.run_spec import RunSpec

if TYPE_CHECKING:
    from ..engine.training import RunOptions

DEFAULT_TIME_MIN = {"slurm": 240, "local": 1440}  # a job that reaches it checkpoints and requeues itself
MAX_REQUEUES = 3  # timeouts per job before submitit gives up (preemptions do not count)


@dataclass
class LaunchOptions:
    """How to launch (never part of a spec)."""

    launcher: str = "inline"
    max_jobs: int | None = None  # local: jobs at once (default: one per GPU group; 1 on the CPU)
    jobs_per_gpu: int | None = None  # local: jobs sharing one GPU at once (default 1)
    time_min: int | None = None  # wall-clock limit of a job in minutes (default: DEFAULT_TIME_MIN)
    gpus: int | None = None  # GPUs per node of a job (local default: 1 where there are GPUs)
    nodes: int = 1  # SLURM nodes of one run (DDP across nodes)
    tasks_per_node: int | None = None  # processes per node of one run (DDP); default: one per GPU
    cpus: int | None = None  # CPUs per task (torch threads in the job)
    mem_gb: float | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None  # array tasks of one sweep running at once
    sbatch: str = ""  # extra sbatch flags, passed through
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (e.g. module load)

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus or 0)


@dataclass
class Launched:
    """One submitted job and the runs it was given (in order)."""

    job: Any  # a submitit Job (None inline)
    run_ids: list[str]
    entry: dict[str, Any]  # what the manifest records for each of its runs


class RunJob(submitit.helpers.Checkpointable):
    """The function every launched job calls: run ``specs`` (canonical dicts, with their origins) in
    order through the engine. A run that fails is recorded (FAILED, the job's log) and the job goes on
    with the next one, except the stage-2 runs on a failed stage 1; the job fails at the end if any run
    did. ``options`` are the fields of ltbench.engine.training.RunOptions.

    Preempted or timed out, the job is resubmitted unchanged (submitit's ``checkpoint``); the requeued
    job resumes from the engine's per-epoch checkpoints: it skips the finished runs and resumes the others."""

    def __call__(self, specs: list[dict[str, Any]], results: str, options: dict[str, Any],
                 threads: int | None = None) -> list[dict[str, Any]]:
        import torch

        from ..engine import distributed
        from ..engine.training import RunOptions, execute

        distributed.from_submitit()  # several tasks: one DDP rank each
        threads = threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        if threads:
            torch.set_num_threads(threads)
        store, opts = Store(results), RunOptions(**options)
        done: list[dict[str, Any]] = []
        failed: dict[str, str] = {}
        for d in specs:
            spec = RunSpec.from_json(d)
            parent = spec.parent_id
            if parent in failed:
                failed[spec.run_id] = f"not run: its stage-1 run {parent} failed"
                continue
            try:
                result = execute(spec, store, opts)
                done.append({"run_id": spec.run_id, "test_top1": result["test"]["top1"]})
            except Exception as exc:  # recorded (FAILED, this log); the other runs of this job still run
                if isinstance(exc, LtbenchError):
                    print(f"error: run {spec.run_id}: {exc}", file=sys.stderr, flush=True)
                else:
                    traceback.print_exc()
                failed[spec.run_id] = f"{type(exc).__name__}: {exc}"
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(specs)} runs failed: "
                               + "; ".join(f"{k}: {v}" for k, v in failed.items()))
        return done


def _job_args(specs: list[RunSpec], store: Store, options: RunOptions, launcher: str,
              threads: int | None = None) -> tuple[list[dict[str, Any]], str, dict[str, Any], int | None]:
    opts = dataclasses.replace(options, live_progress=False,
                               extra_env={**options.extra_env, "launcher": launcher})
    return ([s.to_json() for s in specs], str(store.root.absolute()),
            dataclasses.asdict(opts), threads)
