"""Wall time of a full training run when the test set is evaluated after every epoch (ltbench before
2026-12-04, and `--test-every-epoch` now) against only where a reported number needs it (the default
now: selection on validation reads the validation set alone, the final report the test set once).

CIFAR-100-LT-shaped data (IR 100: 10,847 training images, 10,000 test images) is generated in the real
CIFAR-100 python format (tests/cifar_files.py); ResNet-32, the paper recipe's batch and lr, a few epochs.
Both runs are measured here, one after the other, and their reported numbers must be identical.

Usage: python benchmarks/full_run_eval.py [--epochs 3] [--out benchmarks/results/full_run_eval.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cifar_files import write_cifar  # noqa: E402

from ltbench.engine import RunOptions, execute  # noqa: E402
from ltbench.specs import resolve  # noqa: E402
from ltbench.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "full_run_eval.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_cifar(data, "cifar100")
        spec = resolve("ce", "cifar100_lt", epochs=args.epochs)
        opts = RunOptions(data_root=data, device=args.device, download=False, live_progress=False)
        times, results = {}, {}
        for name, every in (("test every epoch (before)", True), ("test where needed (now)", False)):
            t0 = time.perf_counter()
            results[name] = execute(spec, Store(Path(tmp) / name.split()[1]),
                                    dataclasses.replace(opts, test_every_epoch=every))
            times[name] = time.perf_counter() - t0
    before, now = times["test every epoch (before)"], times["test where needed (now)"]
    same = all(results["test every epoch (before)"][k] == results["test where needed (now)"][k]
               for k in ("val", "test", "test_flip_avg", "selected", "classifier_norms"))
    out = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "device": args.device, "epochs": args.epochs,
           "wall_s": {k: round(v, 1) for k, v in times.items()}, "ratio": round(before / now, 3),
           "reported_numbers_identical": same}
    print(json.dumps(out, indent=2))
    print(f"full run ({args.epochs} epochs): {before:.1f} s -> {now:.1f} s, {before / now:.2f}x; "
          f"reported numbers identical: {same}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
