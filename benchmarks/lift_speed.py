"""LIFT's training epoch: ltbench's engine against a plain loop in the LIFT authors' style, measured in one
run on the same model and data, each path in a child process of its own.

(a) ltbench: a real ``lift`` run through the engine (``execute``): AdaptFormer, cosine head from the text
    features, logit-adjusted loss, the ``lift`` recipe's SGD and cosine schedule, bf16 autocast on CUDA;
    the images held as uint8 tensors on the device, LIFT's RandomResizedCrop + flip made a whole batch at
    a time there with Pillow's bilinear weights (ltbench.data.resolution). Its epochs are timed by the
    engine (metrics.jsonl's ``train_s``: the training steps, not the epoch's validation pass);
(b) the plain loop, written here anew as the authors' trainer runs (shijxcs/LIFT): numpy images made into
    PIL images per item (as torchvision's CIFAR datasets do), torchvision's transforms (resized crop,
    flip, ToTensor, Normalize) in DataLoader workers (started each epoch; pinned memory on a GPU), each
    batch moved to the device, bf16 autocast on CUDA; the same model built the same way (the run's seed:
    the same initial weights), SGD (momentum 0.9, the recipe's lr and weight decay) on the trained
    parameters, CosineAnnealingLR stepped after each epoch, the loss CE(z + log prior) written out.

Data: CIFAR-100-LT's shape made in memory (``CifarShapedLT``, a benchmark registered in this process: 100
classes of 32x32 images, n_max 500 at IR 100: 10,847 training images; --quick: n_max 100, 2,100 images).

"Identical numbers": both loops see the same images in the same order with the same crop boxes and flips.
torchvision's RandomResizedCrop draws its boxes from the global generators, image by image in the workers,
so no seed makes it draw ltbench's; the plain loop is handed, per epoch, ltbench's draws instead (the
order, then per batch torchvision's box algorithm and the flips, from the epoch's seed: ``ltbench_draws``)
and crops each PIL image at its box with torchvision's resized_crop, the same work per image as
RandomResizedCrop's. ltbench's resampling equals Pillow's pixel for pixel, so the inputs are the same;
the script compares each epoch's mean loss and training accuracy and every trained weight at the end
(bit-equal, or the largest difference). On the CPU (float32) they come out bit-equal; on a GPU bf16
autocast and autotuned kernels may differ in the last bits between the two processes (reported as is).

Model: by default ``tiny``, clip_vit_tiny's architecture (a 2-block ViT of width 64 and its 2-block text
tower, random init) built for the data's resolution with a patch of a quarter of it (the same 16 tokens at
any size), registered in this process; ``--backbone NAME`` a registered CLIP or timm backbone (its library's
weights where cached, else random init, backbone.weights=none: the record says which). Peak memory, after a
warm-up that builds the model once in each process (libraries, tokenizer): on CUDA
torch.cuda.max_memory_allocated (ltbench: the whole run, its evaluations included; plain: the model's build
and the epochs); on the CPU the growth of the process's resident memory plus its DataLoader workers'
private memory, sampled every 10 ms.

    python benchmarks/lift_speed.py [--device cuda] [--resolution 224] [--epochs 2] [--workers 8] [--quick]

--quick: 64 px, 1 epoch, 2 workers, on the CPU (a minute or two on 2 cores; CI runs it: its numbers show
that the paths work and agree, not the GPU's ratio); its record is written only where --out says.
Otherwise benchmarks/results/lift_speed.json.
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
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _quick import write_record  # noqa: E402
from cifar_files import balanced_labels, class_colours, make_images  # noqa: E402

from ltbench.data.benchmark import Benchmark, check_imbalance, lt_counts  # noqa: E402
from ltbench.data.resolution import backbone_input, draw_boxes  # noqa: E402
from ltbench.data.splits import Augment, ImageSet, ShotRule, Splits, per_epoch_generator, sample_indices  # noqa: E402
from ltbench.engine.training import RunOptions, execute  # noqa: E402
from ltbench.method import StageContext  # noqa: E402
from ltbench.models import peft  # noqa: E402
from ltbench.models.pretrained import TINY_CLIP, Pretrained, build_run_model, weights_status  # noqa: E402
from ltbench.registry import backbones, benchmarks, methods  # noqa: E402
from ltbench.results.store import Store  # noqa: E402
from ltbench.spec.run_spec import RunSpec, resolve  # noqa: E402

BENCHMARK = "lift_speed_cifar_lt"


@benchmarks.register()
class CifarShapedLT(Benchmark):
    """CIFAR-100-LT's shape, made in memory (registered in this process only): 100 classes of 32x32 colour
    images (each its class's colour plus a noise pattern, as tests/cifar_files.py makes them), a training set
    of n_i = int(n_max IR^(-i/99)) images (n_max 500: CIFAR-100-LT's 10,847 at IR 100), ``test_per_class``
    test images, no validation images (the epochs' timing leaves the validation pass out anyway)."""

    name = BENCHMARK
    title = "CIFAR-100-LT-shaped"
    num_classes = 100
    default_backbone = "clip_vit_tiny"
    recipe_family = "cifar"
    params = {"imbalance": 100.0, "n_max": 500, "test_per_class": 100}

    def check_params(self, params: dict[str, Any]) -> None:  # every class keeps a training image
        check_imbalance(self.name, params["imbalance"], int(params["n_max"]), self.num_classes)

    def read_class_names(self, params: dict[str, Any], data_root: Path, split_root: Path | None = None) -> list[str]:
        return [f"class {c}" for c in range(self.num_classes)]

    def load(self, params: dict[str, Any], data_root: Path, download: bool = True,
             split_root: Path | None = None) -> Splits:
        import numpy as np

        counts = lt_counts(int(params["n_max"]), self.num_classes, params["imbalance"])
        colours = class_colours("cifar100")
        y_train = np.repeat(np.arange(self.num_classes), counts)[np.random.RandomState(0).permutation(sum(counts))]
        y_test = balanced_labels(self.num_classes, int(params["test_per_class"]), np.random.RandomState(1))

        def images(y: np.ndarray, seed: int, name: str) -> ImageSet:
            x = make_images(y, colours, seed).reshape(len(y), 3, 32, 32)
            return ImageSet(torch.from_numpy(x), torch.from_numpy(y), name)

        empty = ImageSet(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), "val")
        return Splits(images(y_train, 0, "train"), empty, images(y_test, 1, "test"), self.num_classes,
                      (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), Augment(4, True), ShotRule(100, 20),
                      info={"train_size": int(sum(counts)), "source": "made in memory by benchmarks/lift_speed.py"})


def tiny_clip_at(size: int) -> str:
    """clip_vit_tiny's architecture at ``size`` px (patch size / 4: 16 tokens), registered in this process."""
    name = f"clip_vit_tiny_{size}px"
    if name not in backbones.names():
        vision = {**TINY_CLIP["vision_cfg"], "image_size": size, "patch_size": size // 4}
        backbones.register(name)(Pretrained(name, "open_clip", name, None, "nothing (random init)",
                                            config={**TINY_CLIP, "vision_cfg": vision}, published=False))
    return name


# ------------------------------------------------------------------------------------- the plain loop


def ltbench_draws(labels: torch.Tensor, size: tuple[int, int], batch: int, seed: int,
                  epoch: int) -> list[list[tuple[int, ...]]]:
    """The epoch's batches as ltbench draws them (Splits.train_batches with ResizedSplits.draw_augment, in
    its order of draws) for images of ``size`` (h, w): per image (index, top, left, height, width, flip)."""
    gen = per_epoch_generator(seed, epoch)
    order = sample_indices(labels, "instance", gen)
    sizes = [n for n in (min(batch, len(order) - a) for a in range(0, len(order), batch)) if n >= 2]
    out, start = [], 0
    for n in sizes:
        boxes = draw_boxes(n, *size, gen)
        flips = torch.rand(n, generator=gen) < 0.5
        out.append([(int(i), *map(int, b), int(f)) for i, b, f in
                    zip(order[start:start + n].tolist(), boxes.tolist(), flips.tolist(), strict=True)])
        start += n
    return out


class FixedDraws(torch.utils.data.Sampler):
    """A batch sampler handing out one epoch's batches of (index, box, flip) keys; ``epoch`` set before
    each epoch (as DistributedSampler.set_epoch)."""

    def __init__(self, labels: torch.Tensor, size: tuple[int, int], batch: int, seed: int):
        self.labels, self.size, self.batch, self.seed, self.epoch = labels, size, batch, seed, 0

    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        return iter(ltbench_draws(self.labels, self.size, self.batch, self.seed, self.epoch))

    def __len__(self) -> int:
        return len(self.labels) // self.batch + (len(self.labels) % self.batch >= 2)


class PILImages(torch.utils.data.Dataset):
    """CIFAR's way: numpy HWC images, a PIL image made per item; resized crop at the item's box, flip,
    ToTensor, Normalize (torchvision's transforms on PIL images)."""

    def __init__(self, images: Any, labels: list[int], size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        import torchvision.transforms as T

        self.images, self.labels, self.size = images, labels, size
        self.post = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, ...]) -> tuple[torch.Tensor, int]:
        import torchvision.transforms.functional as TF
        from PIL import Image

        i, top, left, h, w, flip = key
        img = TF.resized_crop(Image.fromarray(self.images[i]), top, left, h, w, [self.size, self.size],
                              TF.InterpolationMode.BILINEAR)
        if flip:
            img = TF.hflip(img)
        return self.post(img), self.labels[i]


def plain_model(spec: RunSpec, splits: Any, names: list[str], device: torch.device) -> torch.nn.Module:
    """The run's model as the engine builds it (seed, backbone, AdaptFormer, then the cosine head from the
    text features), with the trained parameters chosen by the tuning."""
    hp = spec.stages["train"]
    torch.manual_seed(spec.seed)
    model, _ = build_run_model(spec, splits.num_classes, 3, None, False)
    model.to(device)
    peft.freeze(model, hp["tuning"])
    ctx = StageContext(stage="train", hp=hp, splits=splits, device=device, num_classes=splits.num_classes,
                       class_counts=splits.class_counts, seed=spec.seed, class_names=names)
    methods.get("lift")().prepare(model, ctx)
    return model.to(device)


def plain_loop(spec: RunSpec, splits: Any, names: list[str], size: int, mean: Any, std: Any, workers: int,
               device: torch.device) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    """The authors' loop, per epoch: loss, accuracy, seconds and images/s of the training steps."""
    hp = spec.stages["train"]
    cuda = device.type == "cuda"
    images = splits.train.x.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3), as torchvision's CIFAR holds them
    labels = splits.train.y
    sampler = FixedDraws(labels, tuple(images.shape[1:3]), hp["batch_size"], spec.seed)
    loader = torch.utils.data.DataLoader(PILImages(images, labels.tolist(), size, mean, std), batch_sampler=sampler,
                                         num_workers=workers, pin_memory=cuda)
    model = plain_model(spec, splits, names, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, hp["epochs"])
    counts = torch.tensor(splits.class_counts, dtype=torch.float32)
    log_prior = (counts / counts.sum()).log().to(device)  # LA: CE(z + tau log prior), tau = 1
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and hp["precision"] == "bf16" else nullcontext()
    rows = []
    for epoch in range(hp["epochs"]):
        sampler.epoch = epoch
        model.train()
        t0 = time.time()
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        seen = 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with amp:
                logits = model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits + hp["tau"] * log_prior, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        sched.step()
        mean_loss, acc = float(loss_sum) / seen, 100.0 * float(correct) / seen  # (a sync, as the engine's)
        dt = time.time() - t0
        rows.append({"epoch": epoch + 1, "loss": mean_loss, "train_acc": acc, "train_s": dt, "images_per_s": seen / dt})
    return rows, model


# ------------------------------------------------------------------------------------- measuring


class PeakMemory:
    """Peak memory of a block. CUDA: torch.cuda.max_memory_allocated (reset at the start). CPU: the peak,
    sampled every 10 ms, of the process's resident memory above its level at the start plus its child
    processes' private memory (DataLoader workers; /proc's smaps_rollup), in bytes."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.base = _rss(os.getpid())
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            used = _rss(os.getpid()) - self.base + sum(_private(pid) for pid in _children())
            self.peak = max(self.peak, used)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    @property
    def how(self) -> str:
        return "CUDA max allocated" if self.device.type == "cuda" else \
            "CPU: resident growth + workers' private memory"


def _proc_kib(path: str, keys: tuple[str, ...]) -> int:
    try:
        with open(path) as f:
            return sum(int(line.split()[1]) for line in f if line.split(":")[0] in keys) * 1024
    except OSError:  # no /proc (not Linux), or a worker that just ended
        return 0


def _rss(pid: int) -> int:
    return _proc_kib(f"/proc/{pid}/status", ("VmRSS",))


def _private(pid: int) -> int:
    return _proc_kib(f"/proc/{pid}/smaps_rollup", ("Private_Clean", "Private_Dirty"))


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def steady(rows: list[dict]) -> float:
    """images/s over the epochs after the first (warm-up), or the only epoch."""
    use = rows[1:] or rows
    return sum(r["images_per_s"] for r in use) / len(use)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 px, 1 epoch, 2 workers, 2,100 images, CPU (CI)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda where there is one; --quick: cpu)")
    ap.add_argument("--resolution", type=int, default=None, help="image side (default 224; --quick: 64)")
    ap.add_argument("--epochs", type=int, default=None, help="(default 2; --quick: 1)")
    ap.add_argument("--n-max", type=int, default=None,
                    help="training images of the largest class (default 500: 10,847 in all; --quick: 100, 2,100 in all)")
    ap.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers of the plain loop (default min(8, CPUs); --quick: min(2, CPUs))")
    ap.add_argument("--backbone", default="tiny",
                    help="tiny (clip_vit_tiny's architecture at --resolution) or a registered backbone, e.g. "
                    "clip_vit_b16 (random init where its weights are not cached)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON record (default benchmarks/results/lift_speed.json; --quick: none unless given)")
    ap.add_argument("--path", choices=PATHS, default=None, help=argparse.SUPPRESS)  # one path, in a child process
    ap.add_argument("--scratch", type=Path, default=None, help=argparse.SUPPRESS)  # the child's folder
    args = ap.parse_args(argv)
    quick = {"device": "cpu", "resolution": 64, "epochs": 1, "workers": min(2, os.cpu_count() or 1), "n_max": 100}
    full = {"device": "cuda" if torch.cuda.is_available() else "cpu", "resolution": 224, "epochs": 2,
            "workers": min(8, os.cpu_count() or 1), "n_max": 500}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.resolution < 4 or (args.backbone == "tiny" and args.resolution % 4):
        ap.error(f"--resolution {args.resolution}: a multiple of 4, at least 4 (the tiny model's patch is a quarter)")
    if args.n_max < 100:
        ap.error(f"--n-max {args.n_max}: at least 100 (at IR 100 the last class keeps int(n_max / 100) images)")
    return args


PATHS = ("ltbench", "plain")


def run_spec(args: argparse.Namespace) -> tuple[RunSpec, str]:
    """The lift run both paths train; how its backbone's weights were chosen."""
    backbone = tiny_clip_at(args.resolution) if args.backbone == "tiny" else args.backbone
    sets = [f"data.resolution={args.resolution}", f"data.n_max={args.n_max}",
            f"data.test_per_class={10 if args.quick else 100}"]
    entry = backbones.get(backbone)
    weights = "random init"
    if isinstance(entry, Pretrained) and entry.has_weights:
        if weights_status(entry) == "present (cache)":
            weights = "the library's (Hugging Face cache)"
        else:
            sets.append("backbone.weights=none")  # not here: the library's random init
            weights = "random init (backbone.weights=none: the weights are not cached here)"
    return resolve("lift", BENCHMARK, backbone=backbone, epochs=args.epochs, sets=sets), weights


def one_path(args: argparse.Namespace) -> None:
    """One path, in this (child) process: a warm-up that builds the model once (libraries, tokenizer and
    text tower loaded, so that neither path's memory counts them), then the measured training; writes
    ``<scratch>/<path>.json`` (and the plain loop's trained weights)."""
    spec, _ = run_spec(args)
    device = torch.device(args.device)
    bench = benchmarks.get(BENCHMARK)()
    splits = bench.load(spec.data, args.scratch, False)
    names = bench.read_class_names(spec.data, args.scratch)
    plain_model(spec, splits, names, torch.device("cpu"))  # the warm-up (its model is dropped)
    out: dict[str, Any] = {}
    if args.path == "ltbench":  # a real run through the engine; its epochs timed by the engine (metrics.jsonl)
        store = Store(args.scratch / "results")
        opts = RunOptions(data_root=args.scratch, device=str(device), live_progress=False, download=False)
        with PeakMemory(device) as mem:
            result = execute(spec, store, opts)
        rd = store.run_dir(spec)
        out["epochs"] = [{k: m[k] for k in ("epoch", "loss", "train_acc", "train_s", "images_per_s")}
                         for m in rd.metrics()]
        out.update(model=str(rd.model_file), input=result["data_info"].get("input"), test_top1=result["test"]["top1"])
    else:  # the plain loop on the same images (the benchmark's training set, in its order)
        with torch.device("meta"):  # the mean/std the run normalises with (data.input_norm)
            norm = backbone_input(backbones.get(spec.backbone)(2, 3), spec.data)
        mean, std = norm.mean or splits.mean, norm.std or splits.std
        with PeakMemory(device) as mem:
            out["epochs"], model = plain_loop(spec, splits, names, args.resolution, mean, std, args.workers, device)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        out["model"] = str(args.scratch / "plain_model.pt")
        out["trained"] = sorted(trained)
        torch.save({k: v.cpu() for k, v in model.state_dict().items() if k in trained}, out["model"])
    out.update(peak_memory_bytes=mem.peak, peak_memory=mem.how)
    (args.scratch / f"{args.path}.json").write_text(json.dumps(out))


def compare(ours: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """Per-epoch losses and accuracies, and every trained weight at the end: equal bits, or by how much not."""
    saved = torch.load(ours["model"], map_location="cpu", weights_only=True)
    state = torch.load(plain["model"], map_location="cpu", weights_only=True)
    diffs = {k: float((saved[k].float() - v.float()).abs().max()) for k, v in state.items()}
    pairs = list(zip(ours["epochs"], plain["epochs"], strict=True))
    return {"loss": [[a["loss"], b["loss"]] for a, b in pairs],
            "train_acc": [[a["train_acc"], b["train_acc"]] for a, b in pairs],
            "losses_equal": all(a["loss"] == b["loss"] for a, b in pairs),
            "trained_tensors": len(state), "trained_weights_bit_equal": all(torch.equal(saved[k], v)
                                                                            for k, v in state.items()),
            "max_abs_weight_diff": max(diffs.values()), "max_weight_diff_at": max(diffs, key=lambda k: diffs[k])}


def main() -> None:
    args = parse_args()
    if args.path is not None:
        one_path(args)
        return
    if args.out is None and not args.quick:
        args.out = ROOT / "benchmarks" / "results" / "lift_speed.json"
    device = torch.device(args.device)
    spec, weights = run_spec(args)
    hp = spec.stages["train"]
    out: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": str(device),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
        "config": {"quick": args.quick, "benchmark": BENCHMARK, "train_images": sum(lt_counts(args.n_max, 100, 100.0)),
                   "backbone": spec.backbone, "weights": weights, "resolution": args.resolution, "epochs": args.epochs,
                   "batch_size": hp["batch_size"], "precision": hp["precision"], "tuning": hp["tuning"],
                   "plain_workers": args.workers, "run_id": spec.run_id,
                   "how": "each path in a child process of its own, after a warm-up that builds the model once"}}
    with tempfile.TemporaryDirectory() as tmp:
        for path in PATHS:  # each in a fresh process: neither path's memory or caches carry into the other
            done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--path", path, "--scratch", tmp])
            if done.returncode != 0:
                raise SystemExit(f"the {path} path failed (status {done.returncode}); its output is above")
        ours, plain = (json.loads((Path(tmp) / f"{p}.json").read_text()) for p in PATHS)
        inp = ours["input"]
        if not inp or inp.get("size") != args.resolution:
            raise SystemExit(f"the engine's run did not train at {args.resolution} px (data_info.input: {inp}); "
                             "this script needs data at the backbone's resolution (ltbench.data.resolution)")
        out["same_numbers"] = same = compare(ours, plain)
    out["ltbench"] = {k: ours[k] for k in ("epochs", "peak_memory_bytes", "input", "test_top1")}
    out["plain"] = {k: plain[k] for k in ("epochs", "peak_memory_bytes")}
    out["peak_memory"] = how = ours["peak_memory"]
    out["ratio"] = steady(ours["epochs"]) / steady(plain["epochs"])

    mib = 2**20
    timed = "epochs 2.." if args.epochs > 1 else "1 epoch"
    what = f"{spec.backbone}, {args.resolution} px, {timed}, {device}"
    rows = [[f"ltbench engine, images/s ({what})", f"{steady(ours['epochs']):.0f}"],
            [f"plain loop (PIL + DataLoader, {args.workers} workers), images/s", f"{steady(plain['epochs']):.0f}"],
            ["ratio ltbench / plain", f"{out['ratio']:.2f}x"],
            [f"peak memory MiB, ltbench / plain ({how})",
             f"{ours['peak_memory_bytes'] / mib:.0f} / {plain['peak_memory_bytes'] / mib:.0f}"],
            ["epoch loss, ltbench / plain", " ; ".join(f"{a:.6f} / {b:.6f}" for a, b in same["loss"])],
            ["train acc, ltbench / plain", " ; ".join(f"{a:.2f} / {b:.2f}" for a, b in same["train_acc"])],
            [f"trained weights ({same['trained_tensors']} tensors) bit-equal",
             f"{same['trained_weights_bit_equal']} (max abs diff {same['max_abs_weight_diff']:.2e})"]]
    print(tabulate(rows, headers=["measure", "value"], tablefmt="github"))
    write_record(args.out, out)


if __name__ == "__main__":
    main()
