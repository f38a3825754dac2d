"""Speed of ltbench against the common way, measured in one run on this machine.

(a) stage 1: training images/s of ltbench's engine (uint8 tensors in memory, batched crop/flip on the
    device, channels_last) against a reference loop written the common way: torchvision's CIFAR100
    dataset with PIL transforms through a DataLoader, the same ResNet-32, batch, optimizer and data;
(b) stage 2: weight balancing's classifier stage on cached features against the same stage run
    through the frozen backbone every epoch (both from the same stage-1 run, each path in a fresh
    copy of it): one run (extraction included), one classifier epoch, and a stage-2 weight-decay
    sweep of several runs on the one backbone, where the cached path extracts the features once,
    keeps them in the stage-1 run, and the later runs read them;
(c) `ltbench run` on digits-LT end to end (all built-in methods), wall time.

Both stage-1 loops run without a learning-rate warm-up (the reference loop has none; a recipe's warm-up
as long as these short runs is refused anyway). --quick: the same measurements, small: a tiny backbone
(benchmarks/_quick.py) for both loops instead of ResNet-32, 2 stage-2 runs of 3 epochs, the quickstart
with --epochs 1 (a minute or two on a 2-core CPU; its numbers show that the code paths work, not
README's ratios); the record is written only where --out says.

CIFAR-shaped data is generated in the real CIFAR-100 python format (tests/cifar_files.py): the
machine has no network. Usage: python benchmarks/speed.py [--epochs 2] [--stage2-sweep 4] [--quick] [--out benchmarks/results/speed.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
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

from _quick import QUICK_BACKBONE, register_quick_backbones, write_record  # noqa: E402
from cifar_files import write_cifar  # noqa: E402

from ltbench.data.benchmark import lt_counts  # noqa: E402
from ltbench.engine.training import RunOptions, execute  # noqa: E402
from ltbench.models.backbones import build_backbone  # noqa: E402
from ltbench.results.store import Store  # noqa: E402
from ltbench.spec.run_spec import RunSpec, resolve  # noqa: E402


def reference_stage1(data_root: Path, epochs: int, batch: int, workers: int, device: torch.device,
                     backbone: str = "resnet32") -> list[dict]:
    """The common loop: torchvision dataset + PIL transforms + DataLoader (pinned memory on a GPU),
    model in default layout and float32."""
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
                                         num_workers=workers, persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = build_backbone(backbone, 100, 3).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    rows = []
    for epoch in range(epochs):
        model.train()
        t0, seen, correct, loss_sum = time.time(), 0, 0, 0.0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss) * len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        rows.append({"epoch": epoch + 1, "images_per_s": seen / dt, "seconds": dt, "train_acc": 100 * correct / seen,
                     "loss": loss_sum / seen})
    return rows


def steady(rows: list[dict]) -> float:
    """images/s over the epochs after the first (warm-up), or the only epoch."""
    use = rows[1:] or rows
    return sum(r["images_per_s"] for r in use) / len(use)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small: a tiny backbone, 2 stage-2 runs of 3 epochs, the quickstart with --epochs 1 (CI)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--backbone", default=None, help="both loops' backbone (default resnet32; --quick: quick_cnn)")
    ap.add_argument("--stage2-epochs", type=int, default=None, help="(default 10; --quick: 3)")
    ap.add_argument("--stage2-sweep", type=int, default=None,
                    help="stage-2 runs (weight decays) on one backbone (default 4; --quick: 2)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu | cuda: where both loops of (a) and (b) run")
    ap.add_argument("--compile", action="store_true", help="ltbench's runs with torch.compile")
    ap.add_argument("--full-recipe", action="store_true",
                    help="(d) also time the full CIFAR-100-LT WB recipe (200 + 10 epochs; hours on a CPU)")
    ap.add_argument("--full-recipe-epochs", type=int, default=None, help="(d) stage-1 epochs (default: the recipe's)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON record (default benchmarks/results/speed.json; --quick: none unless given)")
    args = ap.parse_args()
    quick = {"backbone": QUICK_BACKBONE, "stage2_epochs": 3, "stage2_sweep": 2}
    full = {"backbone": "resnet32", "stage2_epochs": 10, "stage2_sweep": 4}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        register_quick_backbones()  # in this process: (a) and (b) run in it, (c) on digits-LT's own backbone
    out: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "machine": {"platform": platform.platform(), "processor": platform.processor(),
                             "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                             "device": args.device, "compile": args.compile, "quick": args.quick, "backbone": args.backbone,
                             "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_cifar(tmp / "data", "cifar100")
        opts = RunOptions(data_root=tmp / "data", device=args.device, live_progress=False, download=False,
                          compile=args.compile)

        # (a) stage 1, same model / batch 128 / SGD 0.1 momentum 0.9 WD 2e-4 (Cao et al.'s recipe)
        # (no warm-up: the reference loop has none, and Cao's 5 warm-up epochs outlast these runs)
        spec = resolve("ce", "cifar100_lt", recipe="cao", epochs=args.epochs, backbone=args.backbone,
                       sets=["train.select=last", "train.warmup_epochs=0"])
        store = Store(tmp / "results")
        execute(spec, store, opts)
        ours = store.run_dir(spec).metrics()
        ref = reference_stage1(tmp / "data", args.epochs, 128, args.workers, torch.device(args.device), args.backbone)
        out["stage1"] = {"ltbench": ours, "reference": ref, "ratio": steady(ours) / steady(ref),
                         "reference_workers": args.workers}

        # (b) stage 2 of weight balancing on that stage-1 run: cached features vs the backbone every epoch.
        # Each path runs in a fresh copy of the stage-1 run (no features kept from earlier runs).
        parent = json.loads(store.run_dir(spec).spec_file.read_text())
        wds = [5e-4 * 2 ** i for i in range(args.stage2_sweep)]  # a stage-2 weight-decay sweep, as in the paper
        stage2: dict = {"epochs": args.stage2_epochs, "sweep_weight_decays": wds}
        for cached in (True, False):
            root = tmp / f"stage2-{cached}"
            shutil.copytree(store.run_dir(spec).path, root / store.run_dir(spec).path.relative_to(store.root))
            runs = []
            for wd in wds:
                s2 = resolve("wb", "cifar100_lt", stage1_run=parent,
                             sets=[f"stage2.cache_features={str(cached).lower()}", f"stage2.epochs={args.stage2_epochs}",
                                   f"stage2.weight_decay={wd:g}"])
                r = execute(s2, Store(root), opts)
                rec = r["method_record"]
                runs.append({"weight_decay": wd, "train_s": r["timings"]["train_s"],
                             "final_eval_s": r["timings"]["final_eval_s"],
                             "run_s": r["timings"]["train_s"] + r["timings"]["final_eval_s"],
                             "path": rec["stage2_path"], "features": rec.get("stage2_features"),
                             "features_s": rec.get("stage2_features_s"), "final_eval": rec.get("final_eval", "model"),
                             "test_top1": r["test"]["top1"],
                             "epoch_s": [m["train_s"] for m in Store(root).run_dir(s2).metrics()]})
            stage2["cached" if cached else "per_epoch"] = runs
        c, pe = stage2["cached"], stage2["per_epoch"]
        stage2["ratio_one_run"] = pe[0]["run_s"] / c[0]["run_s"]
        stage2["ratio_sweep"] = sum(r["run_s"] for r in pe) / sum(r["run_s"] for r in c)
        stage2["ratio_epoch"] = (sum(pe[0]["epoch_s"]) / len(pe[0]["epoch_s"])) / (sum(c[0]["epoch_s"]) / len(c[0]["epoch_s"]))
        out["stage2"] = stage2

        if args.full_recipe:  # (d) the whole recipe: 200-epoch stage 1 with the tuned WD, then stage 2
            full = resolve("wb", "cifar100_lt", epochs=args.full_recipe_epochs)
            t0 = time.time()
            r = execute(full, Store(tmp / "full"), opts)
            epochs = RunSpec.from_json(full.parent).stages["train"]["epochs"]
            ref_epoch_s = sum(row["seconds"] for row in ref) / len(ref)
            out["full_recipe"] = {"wall_s": time.time() - t0, "stage1_epochs": epochs, "test_top1": r["test"]["top1"],
                                  "stage2_epochs": full.stages["stage2"]["epochs"],
                                  "reference_stage1_estimate_s": epochs * ref_epoch_s}

    if not args.skip_digits:  # (c) the quickstart, end to end, in a fresh results folder
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            quickstart = [sys.executable, "-m", "ltbench.cli.app", "run", "--results", tmp, "--device", "cpu"]
            done = subprocess.run(quickstart + (["--epochs", "1"] if args.quick else []), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"`ltbench run` (the quickstart) failed, status {done.returncode}:\n{done.stderr[-2000:]}")
            out["digits_run_s"] = time.time() - t0

    what = f"{args.backbone}, {args.epochs} epochs" + (", quick" if args.quick else "")
    rows = [[f"(a) stage 1 images/s, ltbench engine ({what})", f"{steady(out['stage1']['ltbench']):.0f}"],
            [f"(a) stage 1 images/s, reference (PIL + DataLoader, {args.workers} workers)",
             f"{steady(out['stage1']['reference']):.0f}"],
            ["(a) ratio ltbench / reference", f"{out['stage1']['ratio']:.2f}x"],
            ["(a) train acc after the last epoch, ltbench / reference",
             f"{out['stage1']['ltbench'][-1]['train_acc']:.1f} / {out['stage1']['reference'][-1]['train_acc']:.1f}"],
            [f"(b) one WB stage-2 run ({args.stage2_epochs} epochs + final eval) s, cached features",
             f"{c[0]['run_s']:.1f}  (features {c[0]['features_s']:.1f})"],
            ["(b) the same run, frozen backbone every epoch, s", f"{pe[0]['run_s']:.1f}"],
            ["(b) ratio, one run", f"{stage2['ratio_one_run']:.1f}x"],
            ["(b) ratio, one classifier epoch", f"{stage2['ratio_epoch']:.0f}x"],
            [f"(b) stage-2 sweep of {len(wds)} runs on one backbone, s: cached (kept features) / per epoch",
             f"{sum(r['run_s'] for r in c):.1f} / {sum(r['run_s'] for r in pe):.1f}"],
            ["(b) ratio, stage-2 sweep", f"{stage2['ratio_sweep']:.1f}x"]]
    if "full_recipe" in out:
        f = out["full_recipe"]
        rows += [[f"(d) full WB recipe ({f['stage1_epochs']} + {f['stage2_epochs']} epochs), wall s", f"{f['wall_s']:.0f}"],
                 ["(d) reference loop's stage 1 alone, estimated (its epoch time x epochs), s",
                  f"{f['reference_stage1_estimate_s']:.0f}"]]
    if "digits_run_s" in out:
        rows.append([f"(c) `ltbench run` on digits-LT, all built-in methods{' (--epochs 1)' if args.quick else ''}, seconds", f"{out['digits_run_s']:.1f}"])
    print(tabulate(rows, headers=["measure", "value"], tablefmt="github"))
    if args.out is None and not args.quick:
        args.out = ROOT / "benchmarks" / "results" / "speed.json"
    write_record(args.out, out)


if __name__ == "__main__":
    main()
