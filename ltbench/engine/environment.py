"""Where a run executes: the device it asks for, and what its record says about the machine and the
software (versions, git sha, host, GPU, SLURM job)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import LtbenchError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LtbenchError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto.")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise LtbenchError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N.")
    return torch.device(name)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    import torchvision

    env = {"ltbench": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "python": platform.python_version(), "host": socket.gethostname(), "git_sha": _git_sha(),
           "device": str(device), "threads": torch.get_num_threads(),
           "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
