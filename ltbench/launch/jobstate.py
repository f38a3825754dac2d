"""The scheduler's view of launched jobs: their state (squeue / sacct for SLURM, the process for
local jobs), whether they failed, their logs (submitit's job folders), and waiting for them."""

from __future__ import annotations

import pickle
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from submitit.core.utils import JobPaths

from ..results.store import pid_alive

if TYPE_CHECKING:
    from .jobs import Launched

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
          "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}  # the job is not over yet
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


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


def job_error(entry: dict[str, Any], run_id: str) -> str | None:
    """One line that says why run ``run_id`` of a failed job failed, from the job's error log (never a
    traceback): the line ltbench's job wrote for that run ("error: run ID: ..."), else that run's part of
    the job's closing summary ("N of M runs failed: ID: ..."), else the last line of the log's last
    traceback (the exception); None when the log says nothing."""
    path = job_paths(entry).stderr
    try:
        lines = [ln.rstrip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    own = f"error: run {run_id}: "
    for line in reversed(lines):
        if line.startswith(own):
            return line[len(own):]
    summary = re.compile(rf"\d+ of \d+ runs failed: (?:.*; )?{re.escape(run_id)}: (.*?)(?:; [0-9a-f]{{8,}}: |$)")
    for line in reversed(lines):
        found = summary.search(line)
        if found:
            return found.group(1)
    noise = ("submitit ", "srun: ", "slurmstepd", "Traceback ", "During handling ", "The above exception ")
    plain = [ln for ln in lines if not ln[0].isspace() and not ln.startswith(noise)]
    return plain[-1] if plain else None


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
