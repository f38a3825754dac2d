import os

import pytest

# Deterministic CPU runs: a fixed thread count for every test process and subprocess.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    import shutil

    import torch

    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    no_slurm = pytest.mark.skip(reason="needs a running SLURM cluster (scripts/slurm-one-node.sh)")
    slurm_up = shutil.which("sbatch") is not None and os.environ.get("LTBENCH_SLURM") == "1"
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "slurm" in item.keywords and not slurm_up:
            item.add_marker(no_slurm)
