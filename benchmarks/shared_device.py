"""Small-model sweeps sharing one device: several runs at once against one run at a time.

A WB study trains many small backbones (a ResNet-32 per stage-1 weight decay); one such run leaves
most of a GPU idle. This script launches the same K stage-1 runs (ResNet-32 on CIFAR-100-LT-shaped
data, K weight decays) through ltbench's local launcher twice, in fresh results folders:

- one at a time: one job (``--max-jobs 1``), which runs the K runs in order with all CPU threads;
- together: K jobs at once; on a GPU they share it (``--jobs-per-gpu K``), on the CPU they split
  the cores (torch threads = cores / K).

It prints the wall time of each, the training images/s summed over the runs, and the ratio, and
writes JSON. The CIFAR-100 files are generated in the real python format (tests/cifar_files.py).
--quick: the same two launches of 2-epoch runs on digits-LT (small_cnn, 8x8 images; its jobs are other
processes, which do not see benchmarks/_quick.py's tiny CIFAR backbone), in about a minute (CI runs it);
the record is written only where --out says.

Usage: python benchmarks/shared_device.py [--runs 2] [--epochs 1] [--device auto] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _quick import write_record  # noqa: E402
from cifar_files import write_cifar  # noqa: E402

from ltbench.engine.environment import resolve_device  # noqa: E402
from ltbench.engine.training import RunOptions  # noqa: E402
from ltbench.launch.dispatch import LaunchOptions, launch, wait  # noqa: E402
from ltbench.results.store import Store  # noqa: E402
from ltbench.spec.run_spec import resolve  # noqa: E402


def sweep(specs: list, results: Path, opts: RunOptions, lo: LaunchOptions) -> dict:
    """Launch ``specs`` and wait for them; wall time and the runs' own training images/s."""
    store = Store(results)
    t0 = time.time()
    launched = list(launch(specs, {}, store, opts, lo))
    wait(launched, poll_s=0.5)
    wall = time.time() - t0
    missing = [s.run_id for s in specs if not store.run_dir(s).is_done()]
    if missing:
        raise SystemExit(f"runs did not finish: {missing}; see {results}/jobs/local/*.err")
    rows = [m for s in specs for m in store.run_dir(s).metrics()]
    images = sum(m["images_per_s"] * m["train_s"] for m in rows)
    return {"wall_s": wall, "jobs": len(launched), "threads": [x.entry.get("threads") for x in launched],
            "images_per_s_total": images / wall, "train_s_per_run": [m["train_s"] for m in rows],
            "test_top1": [store.run_dir(s).result()["test"]["top1"] for s in specs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2, help="runs (weight decays) in the sweep")
    ap.add_argument("--epochs", type=int, default=None, help="(default 1; --quick: 2)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="digits-LT instead of CIFAR-100-LT-shaped data (CI runs it)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON record (default benchmarks/results/shared_device.json; --quick: none unless given)")
    args = ap.parse_args()
    if args.epochs is None:
        args.epochs = 2 if args.quick else 1
    if args.out is None and not args.quick:
        args.out = ROOT / "benchmarks" / "results" / "shared_device.json"
    device = resolve_device(args.device)
    wds = [5e-3 * 2 ** -i for i in range(args.runs)]
    benchmark = "digits_lt" if args.quick else "cifar100_lt"
    specs = [resolve("ce", benchmark, epochs=args.epochs,
                     sets=[f"train.weight_decay={wd:g}", "train.select=last"]) for wd in wds]
    out: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                             "torch": torch.__version__, "device": str(device),
                             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
                 "runs": args.runs, "epochs": args.epochs, "weight_decays": wds, "benchmark": benchmark,
                 "backbone": specs[0].backbone}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if benchmark.startswith("cifar"):
            write_cifar(tmp / "data", "cifar100")
        opts = RunOptions(data_root=tmp / "data", device=args.device, download=False, live_progress=False)
        gpu = device.type == "cuda"
        out["one_at_a_time"] = sweep(specs, tmp / "seq", opts, LaunchOptions(launcher="local", max_jobs=1))
        together = LaunchOptions(launcher="local", jobs_per_gpu=args.runs, gpus=1, max_jobs=args.runs) if gpu \
            else LaunchOptions(launcher="local", max_jobs=args.runs)
        out["together"] = sweep(specs, tmp / "together", opts, together)
    out["ratio"] = out["together"]["images_per_s_total"] / out["one_at_a_time"]["images_per_s_total"]
    out["wall_ratio"] = out["one_at_a_time"]["wall_s"] / out["together"]["wall_s"]
    how = f"{args.runs} jobs on one GPU" if device.type == "cuda" else f"{args.runs} jobs sharing the CPU cores"
    rows = [["one at a time: wall s", f"{out['one_at_a_time']['wall_s']:.1f}"],
            ["one at a time: training images/s, all runs", f"{out['one_at_a_time']['images_per_s_total']:.0f}"],
            [f"together ({how}): wall s", f"{out['together']['wall_s']:.1f}"],
            ["together: training images/s, all runs", f"{out['together']['images_per_s_total']:.0f}"],
            ["ratio together / one at a time (images/s)", f"{out['ratio']:.2f}x"],
            ["ratio of wall times", f"{out['wall_ratio']:.2f}x"]]
    data = "digits-LT" if args.quick else "CIFAR-100-LT-shaped data"
    print(f"{args.runs} {specs[0].backbone} runs on {data}, {args.epochs} epoch(s), {device}")
    print(tabulate(rows, headers=["measure", "value"], tablefmt="github"))
    write_record(args.out, out)


if __name__ == "__main__":
    main()
