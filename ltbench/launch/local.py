"""The local launcher: submitit LocalExecutor processes on this machine, at most ``max_jobs`` at once,
counting the local jobs of earlier launches that are still alive. The runs are dealt into that many
lanes (``deal``), one job each; with GPUs every job gets its own (CUDA_VISIBLE_DEVICES), on a CPU-only
machine the jobs share the cores."""

from __future__ import annotations

import os
import shlex
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from ..errors import LtbenchError
from ..results.store import Store
from ..spec.run_spec import RunSpec
from .jobs import DEFAULT_TIME_MIN, MAX_REQUEUES, Launched, LaunchOptions, RunJob, _job_args
from .manifest import Manifest

if TYPE_CHECKING:
    from ..engine.training import RunOptions


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

