"""Launchers: where runs execute. The engine owns each run (ltbench.engine.execute); a launcher only
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

Every job calls a ``RunJob``: picklable and submitit-Checkpointable. On preemption or timeout submitit
calls its ``checkpoint()``, which resubmits the same job; SLURM requeues it and it resumes every
unfinished run from the engine's per-epoch checkpoint.

The manifest ``<results>/jobs/manifest.json`` maps run ids to the jobs launched for them, across
sweeps; submitit's job folders (pickles, logs) are ``<results>/jobs/<SLURM job id>/`` and
``<results>/jobs/local/`` (files named by the job's process id).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pickle
import shlex
import shutil
import socket
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit
from submitit.core.utils import FailedSubmissionError, JobPaths, UncompletedJobError

from .errors import LtbenchError
from .specs import RunSpec
from .store import Store, atomic_write_json, pid_alive

if TYPE_CHECKING:
    from .engine import RunOptions

LAUNCHERS = ("inline", "local", "slurm")
DEFAULT_TIME_MIN = {"slurm": 240, "local": 1440}  # a job that reaches it checkpoints and requeues itself
MAX_REQUEUES = 3  # timeouts per job before submitit gives up (preemptions do not count)
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
          "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}  # the job is not over yet
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}

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


def launch_options(values: dict[str, Any]) -> LaunchOptions:
    """LaunchOptions from a command's parameters (those named like its fields; None: the default)."""
    names = {f.name for f in dataclasses.fields(LaunchOptions)}
    return LaunchOptions(**{k: v for k, v in values.items() if k in names and v is not None})


@dataclass
class Launched:
    """One submitted job and the runs it was given (in order)."""

    job: Any  # a submitit Job (None inline)
    run_ids: list[str]
    entry: dict[str, Any]  # what the manifest records for each of its runs


# ---------------------------------------------------------------- the job ------------------------

class RunJob(submitit.helpers.Checkpointable):
    """The function every launched job calls: run ``specs`` (canonical dicts, with their origins) in
    order through the engine. A run that fails is recorded (FAILED, the job's log) and the job goes on
    with the next one, except the stage-2 runs on a failed stage 1; the job fails at the end if any run
    did. ``options`` are the fields of ltbench.engine.RunOptions."""

    def __call__(self, specs: list[dict[str, Any]], results: str, options: dict[str, Any],
                 threads: int | None = None) -> list[dict[str, Any]]:
        import torch

        from . import distributed
        from .engine import RunOptions, execute

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

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Preempted or timed out: resubmit this job unchanged. The engine's per-epoch checkpoints
        hold the progress, so the requeued job skips the finished runs and resumes the others."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _job_args(specs: list[RunSpec], store: Store, options: RunOptions, launcher: str,
              threads: int | None = None) -> tuple[list[dict[str, Any]], str, dict[str, Any], int | None]:
    opts = dataclasses.replace(options, live_progress=False,
                               extra_env={**options.extra_env, "launcher": launcher})
    return ([s.to_json() for s in specs], str(store.root.absolute()),
            dataclasses.asdict(opts), threads)


# ---------------------------------------------------------------- checks -------------------------

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


# ---------------------------------------------------------------- launching ----------------------

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


def _launch_local(specs: list[RunSpec], store: Store, options: RunOptions, lo: LaunchOptions,
                  folder: Path) -> Iterator[Launched]:
    slots = _local_slots(lo, Manifest(store.root))
    lanes = deal(specs, len(slots))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = lo.cpus or max(1, cpus // (len(lanes) * lo.tasks))
    for lane, gpus in zip(lanes, slots, strict=False):
        ex = submitit.LocalExecutor(folder=folder / "local", max_num_timeout=MAX_REQUEUES)  # files <pid>_*
        ex.update_parameters(timeout_min=lo.time_min or DEFAULT_TIME_MIN["local"], tasks_per_node=lo.tasks,
                             **_gpu_parameters(gpus, list(lo.setup)))
        job = ex.submit(RunJob(), *_job_args(lane, store, options, "local", threads))
        yield Launched(job, [s.run_id for s in lane], {
            "launcher": "local", "job_id": job.job_id, "folder": str(folder / "local"),
            "host": socket.gethostname(), "gpus": list(gpus), "threads": threads})


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


def deal(specs: list[RunSpec], n: int) -> list[list[RunSpec]]:
    """Split runs into at most ``n`` ordered lanes: a stage-1 run and the stage-2 runs on it stay in
    one lane, stage 1 first; groups go to the least loaded lane, largest first (cost: epochs)."""
    ids = {s.run_id for s in specs}
    units: dict[str, list[RunSpec]] = {}
    for s in sorted(specs, key=lambda s: s.parent is not None):  # stage-1 runs open their unit first
        parent = s.parent_id
        units.setdefault(parent if parent in ids else s.run_id, []).append(s)

    def cost(unit: list[RunSpec]) -> int:
        return sum(hp.get("epochs", 1) for s in unit for hp in s.stages.values())

    lanes: list[list[RunSpec]] = [[] for _ in range(max(1, min(n, len(units))))]
    for unit in sorted(units.values(), key=cost, reverse=True):
        min(lanes, key=lambda lane: sum(cost([s]) for s in lane)).extend(unit)
    return lanes


def _visible_gpus() -> list[int | str]:
    """The GPUs this process sees, as the jobs' CUDA_VISIBLE_DEVICES must name them: the entries of
    this process's CUDA_VISIBLE_DEVICES (integers as ints; GPU UUIDs and MIG ids, "GPU-..." and
    "MIG-...", as the strings given), as many as CUDA counts; without the variable, 0 .. count - 1."""
    import torch

    n = torch.cuda.device_count()
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        return list(range(n))
    listed = [v.strip() for v in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if v.strip()]
    return [int(v) if v.isdigit() else v for v in listed[:n]]


def _gpu_parameters(gpus: tuple[int | str, ...], setup: list[str]) -> dict[str, Any]:
    """submitit LocalExecutor parameters for a job on ``gpus`` (as ``_visible_gpus`` names them) with the
    shell lines ``setup``. submitit takes integer indices only, and writes them to the job's
    CUDA_VISIBLE_DEVICES; UUIDs and MIG ids go through a first setup line instead, which exports them
    in the job's shell after submitit set the variable (to nothing: without that line, no GPU)."""
    if all(isinstance(g, int) for g in gpus):
        params: dict[str, Any] = {"gpus_per_node": len(gpus), "visible_gpus": list(gpus)}
    else:
        params = {"gpus_per_node": 0, "visible_gpus": []}
        setup = [f"export CUDA_VISIBLE_DEVICES={shlex.quote(','.join(str(g) for g in gpus))}", *setup]
    return {**params, "setup": setup} if setup else params


def _local_slots(lo: LaunchOptions, manifest: Manifest) -> list[tuple[int | str, ...]]:
    """The GPU sets of the local jobs this launch may start (GPUs named as ``_visible_gpus`` names
    them; empty sets on the CPU)."""
    live = manifest.live_local_jobs()
    pids = ", ".join(str(e["job_id"]) for e in live)
    gpus = _visible_gpus() if lo.gpus != 0 else []
    room = (lo.max_jobs - len(live)) if lo.max_jobs else None
    if gpus:
        per, share = lo.gpus or 1, lo.jobs_per_gpu or 1
        load = Counter(g for e in live for g in e.get("gpus", []))
        slots = []
        for level in range(share):  # fill every GPU once before any GPU twice
            free = [g for g in gpus if load[g] <= level]
            slots += [tuple(free[i * per:(i + 1) * per]) for i in range(len(free) // per)]
        slots = slots if room is None else slots[:max(room, 0)]
    else:
        slots = [()] * (1 - len(live) if room is None else room)
    if not slots:
        raise LtbenchError(f"the local launcher is busy: {len(live)} local jobs of earlier launches are "
                           f"still running (pids {pids}); wait for them (`ltbench status`) or raise "
                           "--max-jobs.")
    return slots


# ---------------------------------------------------------------- jobs and their state -----------

def job_paths(entry: dict[str, Any]) -> JobPaths:
    return JobPaths(entry["folder"], job_id=str(entry["job_id"]), task_id=0)


def _pid_is_local_job(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"submitit.local._local" in cmdline.read_bytes()


def job_states(entries: list[dict[str, Any]]) -> dict[str, str]:
    """Scheduler state by job id: SLURM's (squeue, then sacct; absent when neither knows the job), and
    RUNNING / ENDED for local jobs (whether the job's process is alive on this host)."""
    states: dict[str, str] = {}
    slurm = {str(e["job_id"]) for e in entries if e.get("launcher") == "slurm"}
    for e in entries:
        if e.get("launcher") == "local" and e.get("host") == socket.gethostname():
            states[str(e["job_id"])] = "RUNNING" if _pid_is_local_job(int(e["job_id"])) else "ENDED"
    if slurm and shutil.which("squeue"):
        for line in _run_quietly(["squeue", "--me", "-h", "-r", "-t", "all", "-o", "%i|%T|%r"]):
            job, _, rest = line.partition("|")
            state, _, reason = rest.partition("|")
            if job in slurm:
                states[job] = state if reason in ("", "None") else f"{state} ({reason})"
    missing = slurm - set(states)
    if missing and shutil.which("sacct"):
        query = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(sorted(missing))]
        for line in _run_quietly(query):
            job, _, state = line.partition("|")
            if job in missing:
                states[job] = state.split()[0] if state else "UNKNOWN"
    return states


def _run_quietly(cmd: list[str]) -> list[str]:
    """stdout lines of a scheduler query; none when it fails (no cluster, accounting disabled)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.splitlines() if out.returncode == 0 else []


def is_active(state: str | None) -> bool:
    return state is not None and state.split()[0] in ACTIVE | {"RUNNING"}


def job_failed(entry: dict[str, Any], state: str | None) -> bool:
    """The job is over and did not succeed (its function raised, or SLURM ended it)."""
    if state is not None and state.split()[0] in FAILED_STATES:
        return True
    result = job_paths(entry).result_pickle
    if result.exists():
        try:
            with open(result, "rb") as f:
                return pickle.load(f)[0] == "error"
        except Exception:
            return False
    return False


def log_tail(entry: dict[str, Any], lines: int = 6) -> list[str]:
    """The last lines of a job's error log (submitit's stderr of task 0)."""
    path = job_paths(entry).stderr
    if not path.exists():
        return []
    noise = ("submitit ", "srun: ", "slurmstepd")  # the scheduler's own lines
    return [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith(noise)
            ][-lines:]


def wait(launched: list[Launched], poll_s: float = 1.0, timeout_s: float | None = None) -> None:
    """Until every job is over (local: its process ended; SLURM: no longer pending or running)."""
    t0 = time.time()
    while True:
        local = [x.job for x in launched if x.entry["launcher"] == "local" and not x.job.done()]
        slurm = [x.entry for x in launched if x.entry["launcher"] == "slurm"]
        states = job_states(slurm) if slurm else {}
        busy = local + [e for e in slurm if is_active(states.get(str(e["job_id"])))
                        or (str(e["job_id"]) not in states and not job_paths(e).result_pickle.exists())]
        if not busy:
            return
        if timeout_s is not None and time.time() - t0 > timeout_s:
            raise TimeoutError(f"{len(busy)} jobs still running after {timeout_s:.0f} s")
        time.sleep(poll_s)


# ---------------------------------------------------------------- the manifest -------------------

class Manifest:
    """``<results>/jobs/manifest.json``: the sweeps launched into a results root and, per run id, the
    jobs launched for it (newest last). Every update is a read-modify-write under an exclusive lock,
    written atomically (temp file + rename).

    A manifest that cannot be read (not JSON, the wrong shape) only loses the map from runs to jobs: the
    readers go on from the store without it, after one warning line per process, and the next update
    moves it aside (``manifest.json.damaged``) and starts a new one."""

    _reported: set[tuple[str, int, int]] = set()  # damaged manifests warned about (path, mtime, size)

    def __init__(self, results: Path | str):
        self.path = Path(results) / "jobs" / "manifest.json"

    def load(self) -> dict[str, Any]:
        data, problem = self._read()
        if problem is not None:
            self._warn(f"{self.path} {problem}; status and sweep go on without it (it only maps runs to their "
                       "jobs); delete it to drop this warning")
        return data

    def _read(self) -> tuple[dict[str, Any], str | None]:
        """(its content, None), or (an empty manifest, what is wrong with the file)."""
        from .store import read_json, shape_problem

        empty: dict[str, Any] = {"version": 1, "sweeps": [], "runs": {}}
        if not self.path.exists():
            return empty, None
        data, problem = read_json(self.path)
        problem = problem or shape_problem(data, self._SHAPE)
        return (empty, problem) if problem else (data, None)

    def _warn(self, message: str) -> None:
        try:
            st = self.path.stat()
            key = (str(self.path.absolute()), st.st_mtime_ns, st.st_size)
        except OSError:
            key = (str(self.path.absolute()), 0, 0)
        if key not in Manifest._reported:
            Manifest._reported.add(key)
            sys.stderr.write(f"warning: {message}.\n")

    @staticmethod
    def _job_ok(e: Any) -> bool:
        if not isinstance(e, dict) or not isinstance(e.get("launcher"), str):
            return False
        job = e.get("job_id")
        return job is None or (isinstance(job, (int, str)) and isinstance(e.get("folder"), str)
                               and (e["launcher"] != "local" or str(job).isdigit())
                               and isinstance(e.get("gpus", []), list))

    _SHAPE: dict[str, Any] = {  # what status, sweep and the launchers read
        "runs": lambda v: isinstance(v, dict) and all(
            isinstance(r, dict) and isinstance(r.get("benchmark"), str) and isinstance(r.get("method"), str)
            and isinstance(r.get("seed"), int) and isinstance(r.get("jobs"), list)
            and all(Manifest._job_ok(e) for e in r["jobs"]) for r in v.values()),
        "sweeps": lambda v: isinstance(v, list) and all(
            isinstance(s, dict) and isinstance(s.get("id"), str) and isinstance(s.get("time"), (int, float))
            and isinstance(s.get("command"), str) and isinstance(s.get("launcher"), str)
            and isinstance(s.get("runs"), list) and all(isinstance(r, str) for r in s["runs"]) for s in v),
    }

    @contextmanager
    def _updating(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data, problem = self._read()
            if problem is not None:  # kept for a look, never overwritten
                aside = self.path.with_name(f"{self.path.name}.damaged")
                os.replace(self.path, aside)
                self._warn(f"{self.path} {problem}; moved it to {aside.name} and started a new one (it only maps "
                           "runs to their jobs)")
            yield data
            atomic_write_json(self.path, data)

    def record(self, command: str, launcher: str, specs: list[RunSpec], launched: list[Launched]) -> str:
        """Add a sweep (all its runs, done or not) and the jobs just launched; returns the sweep id."""
        sweep_id = time.strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()
        now = time.time()
        with self._updating() as data:
            for s in specs:
                run = data["runs"].setdefault(s.run_id, {"jobs": []})
                run.update(benchmark=s.benchmark, method=s.method, seed=s.seed,
                           epochs=sum(hp.get("epochs", 0) for hp in s.stages.values()),
                           parent=s.parent_id)
            for x in launched:
                for rid in x.run_ids:
                    data["runs"][rid]["jobs"].append({**x.entry, "sweep": sweep_id, "submitted": now})
            data["sweeps"].append({"id": sweep_id, "time": now, "command": command, "launcher": launcher,
                                   "runs": [s.run_id for s in specs],
                                   "launched": [rid for x in launched for rid in x.run_ids]})
        return sweep_id

    def latest_jobs(self, data: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Run id -> the newest job launched for it."""
        data = data or self.load()
        return {rid: run["jobs"][-1] for rid, run in data["runs"].items() if run["jobs"]}

    def live_local_jobs(self) -> list[dict[str, Any]]:
        jobs = {str(e["job_id"]): e for e in self.latest_jobs().values()
                if e.get("launcher") == "local" and e.get("host") == socket.gethostname()}
        return [e for e in jobs.values() if _pid_is_local_job(int(e["job_id"]))]


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["ltbench", *sys.argv[1:]])
