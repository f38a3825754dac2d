"""Speed of ltbench against the common way, measured in one run on this machine.

(a) stage 1: training images/s of ltbench's engine (uint8 tensors in memory, batched crop/flip on the
    device, channels_last) against a reference loop written the common way: torchvision's CIFAR100
    dataset with PIL transforms through a DataLoader, the same ResNet-32, batch, optimizer and data;
(b) stage 2: weight balancing's classifier stage on cached features against the same stage run
    through the frozen backbone every epoch (both from the same stage-1 run);
(c) `ltbench run` on digits-LT end to end (all built-in methods), wall time.

CIFAR-shaped data is generated in the real CIFAR-100 python format (tests/cifar_files.py): the
machine has no network. Usage: python benchmarks/speed.py [--epochs 2] [--out benchmarks/results/speed.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cifar_files import write_cifar  # noqa: E402

from ltbench.backbones import resnet32  # noqa: E402
from ltbench.benchmark import lt_counts  # noqa: E402
from ltbench.engine import RunOptions, execute  # noqa: E402
from ltbench.specs import resolve  # noqa: E402
from ltbench.store import Store  # noqa: E402


def reference_stage1(data_root: Path, epochs: int, batch: int, workers: int) -> list[dict]:
    """The common loop: torchvision dataset + PIL transforms + DataLoader, model in default layout."""
    import torchvision
    import torchvision.transforms as T
    from ltbench.datasets.cifar_lt import lt_indices

    class CIFAR100(torchvision.datasets.CIFAR100):
        def _check_integrity(self) -> bool:  # generated files have other checksums than the real ones
            return True

        def _load_meta(self) -> None:  # (its md5 check too); class names are not needed here
            self.classes = [str(i) for i in range(100)]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))])
    ds = CIFAR100(str(data_root), train=True, transform=tf, download=False)
    idx, _ = lt_indices(np.array(ds.targets), lt_counts(500, 100, 100.0), "cao", 20)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()), batch_size=batch, shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = resnet32(100)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    rows = []
    for epoch in range(epochs):
        model.train()
        t0, seen, correct, loss_sum = time.time(), 0, 0, 0.0
        for x, y in loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss) * len(y)
        dt = time.time() - t0
        rows.append({"epoch": epoch + 1, "images_per_s": seen / dt, "train_acc": 100 * correct / seen,
                     "loss": loss_sum / seen})
    return rows


def steady(rows: list[dict]) -> float:
    """images/s over the epochs after the first (warm-up), or the only epoch."""
    use = rows[1:] or rows
    return sum(r["images_per_s"] for r in use) / len(use)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--stage2-epochs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    args = ap.parse_args()
    out: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "machine": {"platform": platform.platform(), "processor": platform.processor(),
                             "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                             "device": "cpu"}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_cifar(tmp / "data", "cifar100")
        opts = RunOptions(data_root=tmp / "data", device="cpu", live_progress=False, download=False)

        # (a) stage 1, same model / batch 128 / SGD 0.1 momentum 0.9 WD 2e-4 (Cao et al.'s recipe)
        spec = resolve("ce", "cifar100_lt", recipe="cao", epochs=args.epochs, sets=["train.select=last"])
        store = Store(tmp / "results")
        execute(spec, store, opts)
        ours = store.run_dir(spec).metrics()
        ref = reference_stage1(tmp / "data", args.epochs, 128, args.workers)
        out["stage1"] = {"ltbench": ours, "reference": ref, "ratio": steady(ours) / steady(ref),
                         "reference_workers": args.workers}

        # (b) stage 2 of weight balancing from that stage-1 run: cached features vs backbone every epoch
        stage2 = {}
        for cached in (True, False):
            s2 = resolve("wb", "cifar100_lt", stage1_run=json.loads(store.run_dir(spec).spec_file.read_text()),
                         sets=[f"stage2.cache_features={str(cached).lower()}", f"stage2.epochs={args.stage2_epochs}"])
            rd = store.run_dir(s2)
            r = execute(s2, store, opts)
            metrics = rd.metrics()
            stage2["cached" if cached else "per_epoch"] = {
                "stage_s": r["timings"]["train_s"], "path": r["method_record"]["stage2_path"],
                "test_top1": r["test"]["top1"], "final_eval_s": r["timings"]["final_eval_s"],
                "epoch_s": [m["time_s"] for m in metrics]}
        stage2["ratio"] = stage2["per_epoch"]["stage_s"] / stage2["cached"]["stage_s"]
        out["stage2"] = stage2

    if not args.skip_digits:  # (c) the quickstart, end to end, in a fresh results folder
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "ltbench.cli", "run", "--results", tmp, "--device", "cpu"],
                           check=True, capture_output=True)
            out["digits_run_s"] = time.time() - t0

    rows = [["(a) stage 1 images/s, ltbench engine", f"{steady(out['stage1']['ltbench']):.0f}"],
            [f"(a) stage 1 images/s, reference (PIL + DataLoader, {args.workers} workers)",
             f"{steady(out['stage1']['reference']):.0f}"],
            ["(a) ratio ltbench / reference", f"{out['stage1']['ratio']:.2f}x"],
            ["(a) train acc after the last epoch, ltbench / reference",
             f"{out['stage1']['ltbench'][-1]['train_acc']:.1f} / {out['stage1']['reference'][-1]['train_acc']:.1f}"],
            [f"(b) stage 2 ({args.stage2_epochs} epochs) seconds, cached features",
             f"{out['stage2']['cached']['stage_s']:.1f}"],
            ["(b) stage 2 seconds, frozen backbone every epoch", f"{out['stage2']['per_epoch']['stage_s']:.1f}"],
            ["(b) ratio per-epoch / cached", f"{out['stage2']['ratio']:.1f}x"]]
    if "digits_run_s" in out:
        rows.append(["(c) `ltbench run` on digits-LT, all built-in methods, seconds", f"{out['digits_run_s']:.1f}"])
    print(tabulate(rows, headers=["measure", "value"], tablefmt="github"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
