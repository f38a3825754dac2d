"""Wall time of a full training run when the test set is evaluated after every epoch (ltbench before
2026-12-04, and `--test-every-epoch` now) against only where a reported number needs it (the default
now: selection on validation reads the validation set alone, the final report the test set once).

CIFAR-100-LT-shaped data (IR 100: 10,847 training images, 10,000 test images) is generated in the real
CIFAR-100 python format (tests/cifar_files.py); ResNet-32, the paper recipe's batch and lr, a few epochs.
Both runs are measured here, one after the other, and their reported numbers must be identical.

--quick: the same two runs with a tiny backbone (benchmarks/_quick.py) and 2 epochs, in seconds (CI runs
it); the record is written only where --out says.

Usage: python benchmarks/full_run_eval.py [--epochs 3] [--quick] [--out benchmarks/results/full_run_eval.json]
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

from ltbench.engine.training import RunOptions, execute  # noqa: E402
from ltbench.results.store import Store  # noqa: E402
from ltbench.spec.run_spec import resolve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny backbone and 2 epochs (seconds; CI runs it)")
    ap.add_argument("--epochs", type=int, default=None, help="(default 3; --quick: 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON record (default benchmarks/results/full_run_eval.json; --quick: none unless given)")
    args = ap.parse_args()
    if args.epochs is None:
        args.epochs = 2 if args.quick else 3
    if args.out is None and not args.quick:
        args.out = ROOT / "benchmarks" / "results" / "full_run_eval.json"
    backbone = None  # the benchmark's: ResNet-32
    if args.quick:
        from _quick import QUICK_BACKBONE, register_quick_backbones

        register_quick_backbones()
        backbone = QUICK_BACKBONE
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_cifar(data, "cifar100")
        spec = resolve("ce", "cifar100_lt", epochs=args.epochs, backbone=backbone)
        opts = RunOptions(data_root=data, device=args.device, download=False, live_progress=False)
        # a 1-epoch run first, untimed: what a process pays once (the first read of the files, torch's
        # first kernels) would otherwise fall on the first timed run alone
        execute(resolve("ce", "cifar100_lt", epochs=1, backbone=backbone), Store(Path(tmp) / "warmup"), opts)
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
           "threads": torch.get_num_threads(), "device": args.device, "epochs": args.epochs, "backbone": spec.backbone,
           "wall_s": {k: round(v, 1) for k, v in times.items()}, "ratio": round(before / now, 3),
           "reported_numbers_identical": same}
    print(json.dumps(out, indent=2))
    print(f"full run ({spec.backbone}, {args.epochs} epochs): {before:.1f} s -> {now:.1f} s, {before / now:.2f}x; "
          f"reported numbers identical: {same}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    if not same:
        raise SystemExit("the reported numbers differ between the two runs")


if __name__ == "__main__":
    main()
