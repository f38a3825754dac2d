"""Where a study's workers run: in this process (inline), as ``--jobs N`` submitit processes on this machine
(local; each job its own GPU where there are GPUs, else the cores shared), or as a SLURM job array of N
tasks (slurm). Every worker pulls trials from the same journal file (Optuna's pattern for distributed
optimisation), so any number of workers, started by this command or by the same command again elsewhere,
share one budget."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import LtbenchError
from ..launch.jobs import DEFAULT_TIME_MIN, MAX_REQUEUES, Launched, LaunchOptions
from .worker import TuneJob, TuneWorker, work

if TYPE_CHECKING:
    from pathlib import Path


def run_workers(job: TuneJob, lo: LaunchOptions, jobs: int, results: Path) -> list[Launched]:
    """Inline: work here (nothing is returned); local and slurm: submit ``jobs`` workers and return them
    without waiting."""
    if lo.launcher == "inline":
        work(job)
        return []
    from submitit.core.utils import FailedSubmissionError, UncompletedJobError

    folder = results.absolute() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        submit = _local if lo.launcher == "local" else _slurm
        return list(submit(job, lo, jobs, folder))
    except (UncompletedJobError, FailedSubmissionError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LtbenchError(f"submitting {lo.launcher} tune workers failed: {first}") from exc


def _local(job: TuneJob, lo: LaunchOptions, jobs: int, folder: Path) -> Iterator[Launched]:
    import submitit

    from ..launch.local import _gpu_parameters, _visible_gpus

    gpus = _visible_gpus() if lo.gpus != 0 else []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = lo.cpus or max(1, cpus // jobs)
    for i in range(jobs):
        slot = (gpus[i % len(gpus)],) if gpus else ()
        ex = submitit.LocalExecutor(folder=folder / "local", max_num_timeout=MAX_REQUEUES)
        ex.update_parameters(timeout_min=lo.time_min or DEFAULT_TIME_MIN["local"], **_gpu_parameters(slot, list(lo.setup)))
        submitted = ex.submit(TuneWorker(), dataclasses.replace(job, worker=i, launcher="local", threads=threads))
        yield Launched(submitted, [], {"launcher": "local", "job_id": submitted.job_id, "folder": str(folder / "local"),
                                       "host": socket.gethostname(), "gpus": list(slot), "threads": threads})


def _slurm(job: TuneJob, lo: LaunchOptions, jobs: int, folder: Path) -> Iterator[Launched]:
    from ..launch.slurm import _slurm_executor

    ex = _slurm_executor(lo, folder / "%j", None)
    with ex.batch():
        submitted = [ex.submit(TuneWorker(), dataclasses.replace(job, worker=i, launcher="slurm")) for i in range(jobs)]
    for s in submitted:
        yield Launched(s, [], {"launcher": "slurm", "job_id": s.job_id, "folder": str(folder / "%j")})


def worker_errors(launched: list[Launched]) -> list[str]:
    """One line for each worker job that ended with an error (never a traceback)."""
    from ..launch.jobstate import job_paths, log_tail

    lines = []
    for x in launched:
        try:
            x.job.result()
        except Exception as exc:  # the job's error, or that it died without a result (killed)
            tail = [ln for ln in log_tail(x.entry, 3) if not ln.startswith((" ", "Traceback"))]
            why = tail[-1] if tail else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            lines.append(f"worker job {x.entry['job_id']} ({x.entry['launcher']}) ended with an error: {why[:300]} "
                         f"(log: {job_paths(x.entry).stderr})")
    return lines
