"""Throughput of the image pipeline of the split-file benchmarks on the CPU, without a model.

ltbench's pipeline (``ltbench.data.images``: torchvision.io decoding and transforms.v2 on uint8 tensors in
DataLoader workers, whole batches normalised in the main process) against the usual ImageFolder-style
loader (PIL open + torchvision.transforms RandomResizedCrop / RandomHorizontalFlip [/ ColorJitter] /
ToTensor / Normalize), both through a DataLoader with the same workers and batch size, on the same
generated JPEG tree (realistic sizes around 400 x 350), measured in the same run. Both produce
normalised float32 (batch, 3, 224, 224) batches. Each number is the best of --repeats passes over all
images, the two loaders taking turns (a pass includes starting the workers, as every epoch does; on
a shared machine other jobs only ever slow a pass down, so the best pass is the stable statistic).

    python benchmarks/image_pipeline.py [--images 2000] [--batch 64] [--workers N] [--repeats 5] [--quick]

Prints a table and writes benchmarks/results/image_pipeline.json. --quick: 256 images, 2 workers, 2 repeats
(seconds; CI runs it), written only where --output says.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms as T
from _quick import write_record
from PIL import Image

from ltbench.data.images import IMAGENET_MEAN, IMAGENET_STD, ImageFiles, ImageFileSplits, ImageTransform
from ltbench.data.splitfile import SplitList
from ltbench.data.splits import per_epoch_generator

warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning)
RESULTS = Path(__file__).parent / "results" / "image_pipeline.json"
CLASSES = 10


def make_tree(root: Path, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """n JPEGs (quality 90) of about 400 x 350 pixels: smooth structure (upsampled noise) plus fine
    noise, so they compress like photographs rather than like flat colour."""
    rng = np.random.RandomState(seed)
    entries = []
    for i in range(n):
        w, h = int(rng.randint(330, 471)), int(rng.randint(290, 411))
        coarse = Image.fromarray(rng.randint(0, 256, size=(h // 24, w // 24, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.randint(-20, 21, size=(h, w, 3))
        label = i % CLASSES
        rel = f"train/n{label:08d}/n{label:08d}_{i}.JPEG"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / rel, "JPEG", quality=90)
        entries.append((rel, label))
    return entries


class PILImages(torch.utils.data.Dataset):
    """The ImageFolder-style baseline: PIL open, convert to RGB, torchvision.transforms."""

    def __init__(self, root: Path, entries: list[tuple[str, int]], transform: Callable):
        self.root, self.entries, self.transform = root, entries, transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rel, label = self.entries[i]
        with open(self.root / rel, "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img), label


def images_per_s(batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> float:
    t0 = time.perf_counter()
    seen = 0
    for x, _ in batches():
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 224, 224)
        seen += len(x)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 images, 2 workers, 2 repeats (CI runs it)")
    parser.add_argument("--images", type=int, default=None, help="(default 2000; --quick: 256)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="(default min(8, CPUs); --quick: min(2, CPUs))")
    parser.add_argument("--repeats", type=int, default=None, help="(default 5; --quick: 2)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"the JSON record (default {RESULTS}; --quick: none unless given)")
    args = parser.parse_args()
    defaults = {"images": 256, "workers": min(2, os.cpu_count() or 1), "repeats": 2} if args.quick else \
        {"images": 2000, "workers": min(8, os.cpu_count() or 1), "repeats": 5}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.output is None and not args.quick:
        args.output = RESULTS
    os.environ["LTBENCH_WORKERS"] = str(args.workers)
    os.environ["LTBENCH_DECODE"] = "workers"
    cpu = torch.device("cpu")
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        entries = make_tree(root, args.images)
        sizes = [(root / rel).stat().st_size for rel, _ in entries]
        print(f"generated {len(entries)} JPEGs ({statistics.mean(sizes) / 1024:.0f} KiB on average) in "
              f"{time.perf_counter() - t0:.0f} s; batch {args.batch}, {args.workers} workers, CPU")
        listing = SplitList(root / "list.txt", [p for p, _ in entries], [y for _, y in entries],
                            list(range(1, len(entries) + 1)))
        files = ImageFiles.from_list(root, listing, "train")

        def ours(jitter: float) -> ImageFileSplits:
            return ImageFileSplits(train=files, val=files, test=files, num_classes=CLASSES,
                                   transform=ImageTransform(224, 256, jitter), benchmark="benchmark")

        def baseline(transform: Callable, shuffle: bool) -> Callable[[], Iterable]:
            return lambda: torch.utils.data.DataLoader(PILImages(root, entries, transform), batch_size=args.batch,
                                                       shuffle=shuffle, num_workers=args.workers)

        flip_only = ours(0.0)
        jitter = ours(0.4)
        cases = [
            ("train: RandomResizedCrop(224) + flip (iNaturalist)",
             lambda: flip_only.train_batches(args.batch, "instance", per_epoch_generator(0, 0), cpu),
             baseline(T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), normalize]), True)),
            ("train: + ColorJitter(0.4, 0.4, 0.4) (ImageNet-LT, Places-LT)",
             lambda: jitter.train_batches(args.batch, "instance", per_epoch_generator(0, 0), cpu),
             baseline(T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4),
                                 T.ToTensor(), normalize]), True)),
            ("test: Resize(256) + CenterCrop(224)",
             lambda: flip_only.eval_batches("test", args.batch, cpu),
             baseline(T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize]), False)),
        ]
        load_before = os.getloadavg()
        results = []
        for name, mine, theirs in cases:
            runs: dict[str, list[float]] = {"ltbench": [], "baseline": []}
            for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
                runs["ltbench"].append(images_per_s(mine))
                runs["baseline"].append(images_per_s(theirs))
            a, b = max(runs["ltbench"]), max(runs["baseline"])
            results.append({"pipeline": name, "ltbench_images_per_s": round(a, 1), "baseline_images_per_s": round(b, 1),
                            "ratio": round(a / b, 2), "runs": {k: [round(v, 1) for v in vs] for k, vs in runs.items()}})
            print(f"  {name}: ltbench {a:.0f} img/s, baseline {b:.0f} img/s")

    width = max(len(r["pipeline"]) for r in results)
    print(f"\n{'pipeline':<{width}}  {'ltbench img/s':>13}  {'PIL baseline img/s':>18}  {'ratio':>6}")
    for r in results:
        print(f"{r['pipeline']:<{width}}  {r['ltbench_images_per_s']:>13.0f}  {r['baseline_images_per_s']:>18.0f}  "
              f"{r['ratio']:>5.2f}x")
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "torchvision": torchvision.__version__, "pillow": PIL.__version__,
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "config": {"images": args.images, "mean_file_kib": round(statistics.mean(sizes) / 1024, 1),
                   "size": "330..470 x 290..410 px, JPEG quality 90", "batch_size": args.batch,
                   "workers": args.workers, "repeats": args.repeats, "quick": args.quick, "statistic": "best images/s of the repeats (loaders take turns)",
                   "device": "cpu", "ltbench_decode": "workers"},
        "results": results,
    }
    write_record(args.output, record)


if __name__ == "__main__":
    main()
