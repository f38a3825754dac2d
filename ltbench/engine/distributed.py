"""Data-parallel training over several processes (GPUs or nodes) with torch.distributed.

One run, ``world_size`` processes. The engine keeps its loop; this module gives it the pieces:

- ``setup()`` reads the standard variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT;
  torchrun sets them, ``from_submitit()`` exports them inside a submitit job of several tasks) and
  joins the process group: nccl on CUDA, gloo on the CPU. Without them it is a one-process no-op.
- Every rank draws the same global batch (the epoch's generator is a pure function of (seed, epoch))
  and trains on its contiguous ``shard`` of it; the model is wrapped in DistributedDataParallel,
  which averages the gradients over the ranks. Each rank's loss is scaled by its share of the global
  batch, so that for a loss that is a mean over images the update equals the one-process update on
  the global batch (up to float summation order). A loss normalised per batch in another way (the
  class-weighted mean of ``cb``, ``ldam_drw``) is normalised per shard, as in any DDP code.
- BatchNorm stays per rank (running statistics broadcast from rank 0 at each forward, DDP's default)
  unless SyncBatchNorm is chosen (CUDA only); the record says which.
- The learning rate is never scaled: ``train.lr`` applies to the global batch ``batch_size``.
- Only rank 0 writes the run directory; every rank loads its checkpoint on resume. Every rank
  evaluates the whole validation and test split (rank 0's numbers are the ones recorded).
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as td

from ..errors import LtbenchError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_submitit() -> None:
    """Inside a submitit job with several tasks (SLURM tasks, or local tasks), export the variables
    of torch's env:// rendezvous. CUDA_VISIBLE_DEVICES is left alone: rank r uses cuda:LOCAL_RANK."""
    if not os.environ.get("SUBMITIT_EXECUTOR") or "WORLD_SIZE" in os.environ:
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def setup(device_name: str) -> Dist:
    """Join the process group described by the environment (once per process); SINGLE without one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise LtbenchError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with torchrun "
                           "or a submitit job with several tasks.")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if not td.is_initialized():
        if cuda:
            torch.cuda.set_device(local % torch.cuda.device_count())
        td.init_process_group("nccl" if cuda else "gloo", init_method="env://", rank=rank, world_size=world)
        atexit.register(teardown)
    return Dist(rank=rank, world_size=world, local_rank=local, backend=td.get_backend())


def teardown() -> None:
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def device_for(device: torch.device, dist: Dist) -> torch.device:
    """The device of this rank. Alone: ``device`` as given. With several ranks, one GPU per rank:
    plain ``cuda`` becomes cuda:LOCAL_RANK (modulo the visible GPUs), the GPU ``setup`` made current.
    An explicit cuda:N with several ranks is refused (LtbenchError, on every rank alike): it names one
    GPU for all of them. Choose the GPUs with CUDA_VISIBLE_DEVICES (or the launcher's --gpus) instead."""
    if dist.world_size == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise LtbenchError(f"--device {device}: this run has {dist.world_size} processes, one GPU each, but "
                           f"{device} names one GPU for all of them; use --device cuda (each process takes the GPU "
                           "of its local rank) and choose the GPUs with CUDA_VISIBLE_DEVICES.")
    return torch.device("cuda", dist.local_rank % torch.cuda.device_count())


def prepare_model(model: torch.nn.Module, dist: Dist, sync_bn: bool, device: torch.device) -> torch.nn.Module:
    """SyncBatchNorm in place of BatchNorm when asked for (several CUDA ranks); the parameters and
    state-dict keys stay the same, so checkpoints and model.pt load either way."""
    if not sync_bn or dist.world_size == 1:
        return model
    if device.type != "cuda":
        raise LtbenchError("--sync-bn needs CUDA devices (SyncBatchNorm has no CPU kernel); drop --sync-bn.")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """The module to train: ``model`` itself, or ``model`` in DistributedDataParallel (which shares its
    parameters; checkpoints and evaluation keep using ``model``)."""
    if dist.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(x: torch.Tensor, y: torch.Tensor, dist: Dist) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """This rank's contiguous part of a global batch and the loss factor world * len(part) / len(batch);
    None when some rank would get fewer than 2 images (batch norm needs 2; the step is skipped on every
    rank alike, as a single process skips a final batch of one)."""
    if dist.world_size == 1:
        return x, y, 1.0
    n = len(y)
    if n < 2 * dist.world_size:
        return None
    lo, hi = n * dist.rank // dist.world_size, n * (dist.rank + 1) // dist.world_size
    return x[lo:hi], y[lo:hi], dist.world_size * (hi - lo) / n


def sum_over_ranks(dist: Dist, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The sums over all ranks (for the logged loss and accuracy of an epoch)."""
    if dist.world_size == 1:
        return tensors
    out = []
    for t in tensors:
        t = t.clone()
        td.all_reduce(t)
        out.append(t)
    return tuple(out)


def barrier(dist: Dist) -> None:
    if dist.world_size > 1:
        td.barrier()


def on_rank0(dist: Dist, fn: Callable[[], T]) -> T | None:
    """Call ``fn`` on rank 0 only (None elsewhere); when it raises there, every rank raises, instead of
    the others waiting for rank 0 in the next collective."""
    error: BaseException | None = None
    value = None
    if dist.is_main:
        try:
            value = fn()
        except BaseException as exc:  # re-raised below, after the other ranks have heard of it
            error = exc
    if dist.world_size > 1:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.backend == "nccl" else None
        ok = torch.tensor([0 if (dist.is_main and error is not None) else 1], device=device)
        td.broadcast(ok, src=0)
        if not ok.item() and not dist.is_main:
            raise LtbenchError(f"rank {dist.rank}: rank 0 could not start the run; its log says why.")
    if error is not None:
        raise error
    return value


def describe(dist: Dist, stages: dict[str, dict[str, Any]], sync_bn: bool) -> dict[str, Any]:
    """What result.json records about the processes a run trained on."""
    if dist.world_size == 1:
        return {"distributed": {"world_size": 1}}
    batches = {st: hp["batch_size"] for st, hp in stages.items() if "batch_size" in hp}
    return {"distributed": {
        "world_size": dist.world_size, "backend": dist.backend, "global_batch": batches,
        "per_rank_batch": {st: math.ceil(b / dist.world_size) for st, b in batches.items()},
        "sharding": "contiguous slice of the global batch per rank",
        "batchnorm": "sync" if sync_bn else "per-rank (running statistics from rank 0)",
        "lr_scaling": "none (train.lr applies to the global batch)",
    }}
