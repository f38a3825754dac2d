"""The SLURM launcher: --sbatch flags (parsed, and checked by ``sbatch --test-only`` or against
sbatch's option names), and submitit SlurmExecutor job arrays, one array task per run; a stage-2 run
waits for its stage-1 job (dependency afterok; dependents of a failed job are cancelled,
kill-on-invalid-dep)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from ..errors import LtbenchError
from ..results.store import Store
from ..spec.run_spec import RunSpec
from .jobs import DEFAULT_TIME_MIN, MAX_REQUEUES, Launched, LaunchOptions, RunJob, _job_args

if TYPE_CHECKING:
    from ..engine.training import RunOptions

# sbatch's long options (22.05), for checking --sbatch flags where sbatch itself is not installed.
SBATCH_OPTIONS = frozenset("""
account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment constraint container
contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency
distribution error exclude exclusive export export-file extra-node-info get-user-env gid gpu-bind gpu-freq
gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags hint hold ignore-pbs input job-name
kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus
network nice no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu
ntasks-per-node ntasks-per-socket open-mode output overcommit oversubscribe parsable partition power
prefer priority profile propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job
switches thread-spec threads-per-core time time-min tmp uid use-min-nodes verbose wait wckey wrap
""".split())
# Set by ltbench/submitit themselves, or at odds with a batch job: not accepted in --sbatch.
SBATCH_OWN = frozenset("array dependency error output open-mode signal wrap parsable wait test-only "
                       "job-name".split())


def parse_sbatch_flags(text: str) -> dict[str, Any]:
    """--sbatch text -> flags: '--exclusive --gres gpu:2 --mail-type=END' gives
    {'exclusive': True, 'gres': 'gpu:2', 'mail-type': 'END'}."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise LtbenchError(f"--sbatch {text!r}: {exc}.") from None
    flags: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise LtbenchError(f"--sbatch {text!r}: {tok!r} is not a long sbatch option; write options as "
                               "--name=value (e.g. --sbatch '--gres=gpu:2 --exclusive').")
        name, eq, value = tok[2:].partition("=")
        if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            value, i = tokens[i + 1], i + 1
        flags[name] = value if (eq or value) else True
        i += 1
    return flags


def _sbatch_params(lo: LaunchOptions) -> dict[str, Any]:
    """sbatch flags of one job (without the ones submitit adds: output, array, signal...)."""
    params: dict[str, Any] = {
        "time": lo.time_min or DEFAULT_TIME_MIN["slurm"], "nodes": lo.nodes, "ntasks-per-node": lo.tasks,
        "cpus-per-task": lo.cpus, "gpus-per-node": lo.gpus or None,
        "mem": f"{round(lo.mem_gb * 1024)}M" if lo.mem_gb else None, "partition": lo.partition,
        "account": lo.account, "qos": lo.qos, "constraint": lo.constraint,
    }
    return {k: v for k, v in params.items() if v is not None}


def check_sbatch(lo: LaunchOptions, dry_run: bool = False) -> None:
    """The SLURM options of ``lo``: by ``sbatch --test-only`` where sbatch exists (against the live
    cluster), else against sbatch's option names."""
    extra = parse_sbatch_flags(lo.sbatch)
    own = sorted(set(extra) & SBATCH_OWN)
    if own:
        raise LtbenchError(f"--sbatch: ltbench sets --{own[0]} itself; drop it from --sbatch.")
    if shutil.which("sbatch") is None:
        unknown = sorted(set(extra) - SBATCH_OPTIONS)
        if unknown:
            raise LtbenchError(f"--sbatch: unknown sbatch option --{unknown[0]} (see `sbatch --help`).")
        if not dry_run:
            raise LtbenchError("--launcher slurm: sbatch is not on PATH, so there is no SLURM cluster to "
                               "submit to from here; use --launcher local, or run on a SLURM login node.")
        return
    flags = [f"--{k}" if v is True else f"--{k}={v}" for k, v in {**_sbatch_params(lo), **extra}.items()]
    try:
        out = subprocess.run(["sbatch", "--test-only", *flags, "--wrap", "true"], capture_output=True,
                             text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise LtbenchError("sbatch --test-only did not answer in 60 s; is the SLURM controller up?") from None
    if out.returncode != 0:
        text = out.stderr + out.stdout
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Try " not in ln]
        if any("configuration source" in ln or "Unable to contact" in ln for ln in lines):
            raise LtbenchError(f"sbatch cannot reach a SLURM controller ({lines[-1]}); is the cluster up and "
                               "SLURM_CONF set? (or use --launcher local)")
        raise LtbenchError(f"SLURM rejects these job options ({' '.join(flags)}): "
                           f"{' / '.join(lines[:2]) or f'sbatch exit status {out.returncode}'}.")


def _launch_slurm(specs: list[RunSpec], after: dict[str, str], store: Store, options: RunOptions,
                  lo: LaunchOptions, folder: Path) -> Iterator[Launched]:
    """One job array per dependency: the runs that wait for nothing, then for each stage-1 job the
    stage-2 runs that wait for it."""
    ids = {s.run_id for s in specs}
    groups: dict[str | None, list[RunSpec]] = {}
    for s in specs:
        parent = s.parent_id
        key = f"run:{parent}" if parent in ids else after.get(s.run_id)
        groups.setdefault(key, []).append(s)
    job_of: dict[str, str] = {}
    for key in sorted(groups, key=lambda k: k is not None and k.startswith("run:")):  # stage 1 first
        dep = job_of[key[4:]] if key and key.startswith("run:") else key
        ex = _slurm_executor(lo, folder / "%j", dep)
        with ex.batch():
            jobs = [ex.submit(RunJob(), *_job_args([s], store, options, "slurm")) for s in groups[key]]
        for s, job in zip(groups[key], jobs, strict=True):
            job_of[s.run_id] = job.job_id
            yield Launched(job, [s.run_id], {"launcher": "slurm", "job_id": job.job_id,
                                             "folder": str(folder / "%j"), "after": dep})


def _slurm_executor(lo: LaunchOptions, folder: Path, dependency: str | None) -> submitit.SlurmExecutor:
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)  # python: this sys.executable
    extra = parse_sbatch_flags(lo.sbatch)
    params: dict[str, Any] = {k.replace("-", "_"): v for k, v in _sbatch_params(lo).items()}
    params.update(job_name="ltbench", array_parallelism=lo.array_parallelism or 256,
                  additional_parameters={**extra, **({"kill-on-invalid-dep": "yes"} if dependency else {})})
    if dependency:
        params["dependency"] = f"afterok:{dependency}"
    if lo.setup:
        params["setup"] = list(lo.setup)
    ex.update_parameters(**params)
    return ex

