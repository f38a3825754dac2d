"""Training speed (images/s) of the engine's epoch loop with every training trick off against the loop as it
was before the tricks existed (a copy of it below, `reference_epoch`), and with each trick on, measured in one
run on this machine: the tricks must cost nothing where they are off.

Data: CIFAR-shaped uint8 images in memory (ltbench.data.splits.Splits: batched crop/flip on the device), 100 classes,
long-tailed counts; the backbone (small_cnn by default, --backbone resnet32 for the CIFAR one), batch 128,
SGD; every configuration runs `--repeats` epochs, interleaved, and its best epoch counts. A second copy of
the reference loop shows how far two measurements of the same code differ here.

--quick: 1024 images, 2 repeats, benchmarks/_quick.py's tiny backbone (seconds; CI runs it).

Usage: python benchmarks/tricks_speed.py [--images 4096] [--backbone small_cnn] [--repeats 3] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Any

import torch
from tabulate import tabulate

from ltbench.data.splits import Augment, ImageSet, Splits, per_epoch_generator
from ltbench.engine import distributed
from ltbench.engine.distributed import SINGLE
from ltbench.engine.evaluation import autocast, to_memory_format
from ltbench.engine.schedule import lr_factor
from ltbench.engine.stage_options import StageOptions
from ltbench.engine.training import EpochLoop, _optimizer, _stage_steps
from ltbench.method import Method, StageContext
from ltbench.models.backbones import build_backbone
from ltbench.progress import EpochProgress
from ltbench.spec.run_spec import resolve

# each configuration's --set values (on top of BASE); the engine's settings come from resolve, as a run's do
BASE = ["train.batch_size=128", "train.lr=0.05", "train.precision=fp32", "train.warmup_epochs=0"]
OPTIONS: dict[str, list[str]] = {
    "mix=mixup": ["train.mix=mixup"],
    "mix=cutmix": ["train.mix=cutmix"],
    "label_smoothing=0.1": ["train.label_smoothing=0.1"],
    "reweight=cb (active)": ["train.reweight=cb"],
    "sampler=class_balanced, resample_from=0.5 (instance epoch)": ["train.sampler=class_balanced",
                                                                   "train.resample_from=0.5"],
    "maxnorm=true (every step)": ["train.maxnorm=true"],
    "autoaugment=autoaugment": ["train.autoaugment=autoaugment"],
    "autoaugment=randaugment": ["train.autoaugment=randaugment"],
}


def splits_for(n: int, classes: int = 100) -> Splits:
    """n CIFAR-shaped images, class c holding about n_max * 100^(-c/99) of them (IR 100)."""
    g = torch.Generator().manual_seed(0)
    weights = torch.tensor([100.0 ** (-c / (classes - 1)) for c in range(classes)])
    y = torch.multinomial(weights, n, replacement=True, generator=g)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    s = ImageSet(x, y)
    return Splits(s, s, s, classes, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), Augment(4, True))


def make_loop(splits: Splits, backbone: str, device: torch.device, options: list[str]) -> EpochLoop:
    hp = resolve("ce", "cifar100_lt", backbone=backbone, epochs=2, sets=BASE + options).stages["train"]
    torch.manual_seed(0)
    model = build_backbone(backbone, splits.num_classes, 3).to(device, memory_format=torch.channels_last)
    ctx = StageContext(stage="train", hp=hp, splits=splits, device=device, num_classes=splits.num_classes,
                       class_counts=splits.class_counts)
    method = Method()
    ctx.options = StageOptions.start(method, ctx, model)  # as the engine starts a stage
    opt, peak = _optimizer(model, method, ctx)
    return EpochLoop(model, model, method, ctx, opt, peak, 0, _stage_steps(splits, hp), SINGLE, None)


def reference_epoch(loop: EpochLoop, epoch: int) -> float:
    """images/s of one epoch of the loop as ltbench ran it before the training tricks (EpochLoop.run then)."""
    bar = EpochProgress("speed", 2, loop.steps, enabled=False)
    hp, device, opt, t0 = loop.ctx.hp, loop.ctx.device, loop.opt, time.time()
    loop.net.train()
    amp = autocast(device) if hp["precision"] == "bf16" else contextlib.nullcontext()
    gen = per_epoch_generator(loop.seed, epoch)
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    seen = 0
    for i, (x, y) in enumerate(loop.ctx.splits.train_batches(hp["batch_size"], hp["sampler"], gen, device,
                                                             hp["augment"])):
        f = lr_factor(hp, epoch + i / loop.steps)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * f
        x, y, share = distributed.shard(x, y, loop.dist)
        with amp:
            out = loop.method.forward(loop.net, to_memory_format(x, device), loop.ctx)
        out = out.float() if isinstance(out, torch.Tensor) else out
        logits = loop.method.logits(out)
        loss = loop.method.loss(out, y, loop.ctx)
        opt.zero_grad(set_to_none=True)
        (loss * share).backward()
        opt.step()
        loop.method.after_step(loop.model, loop.ctx)
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        bar.step()
    float(loss_sum)  # the epoch's one sync, as then
    loop.method.after_epoch(loop.model, loop.ctx)
    return seen / (time.time() - t0)


def engine_epoch(loop: EpochLoop, epoch: int) -> float:
    bar = EpochProgress("speed", 2, loop.steps, enabled=False)
    return loop.run(epoch, bar)["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1024 images, 2 repeats, a tiny backbone (CI runs it)")
    ap.add_argument("--images", type=int, default=None, help="(default 4096; --quick: 1024)")
    ap.add_argument("--backbone", default=None, help="(default small_cnn; --quick: quick_cnn)")
    ap.add_argument("--repeats", type=int, default=None, help="(default 3; --quick: 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--off-only", action="store_true", help="only the loop before the tricks and all options off")
    args = ap.parse_args()
    if args.images is None:
        args.images = 1024 if args.quick else 4096
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.quick:
        from _quick import QUICK_BACKBONE, register_quick_backbones

        register_quick_backbones()
        args.backbone = args.backbone or QUICK_BACKBONE
    args.backbone = args.backbone or "small_cnn"
    device = torch.device(args.device)
    splits = splits_for(args.images)
    runs: dict[str, tuple[EpochLoop, Any, int]] = {
        "before the tricks (reference loop)": (make_loop(splits, args.backbone, device, []), reference_epoch, 0),
        "all options off (engine)": (make_loop(splits, args.backbone, device, []), engine_epoch, 0),
        "before, a second copy (the measurement's noise)": (make_loop(splits, args.backbone, device, []),
                                                            reference_epoch, 0),
    }
    for name, options in ({} if args.off_only else OPTIONS).items():
        runs[name] = (make_loop(splits, args.backbone, device, options), engine_epoch, 1 if "reweight" in name else 0)
    best: dict[str, float] = {}
    names = list(runs)
    for r in range(args.repeats):  # interleaved and in a rotating order: a slower moment of the machine hits all alike
        for name in names[r % len(names):] + names[:r % len(names)]:
            loop, epoch_fn, epoch = runs[name]
            best[name] = max(best.get(name, 0.0), epoch_fn(loop, epoch))
    ref = best["before the tricks (reference loop)"]
    rows = [(name, f"{v:,.0f}", f"{v / ref:.3f}") for name, v in best.items()]
    print(f"{args.images} images, {args.backbone}, batch 128, {args.device}, {torch.get_num_threads()} threads, "
          f"best of {args.repeats} epochs")
    print(tabulate(rows, headers=["configuration", "images/s", "ratio to before"], tablefmt="github"))
    print(json.dumps({"off_vs_before": round(best["all options off (engine)"] / ref, 3)}))


if __name__ == "__main__":
    main()
