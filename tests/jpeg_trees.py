"""Small JPEG trees with split lists in the published formats of ImageNet-LT, iNaturalist 2018 and
Places-LT: the same folder layout, file names and "relative/path label" lines as the real releases,
with few classes and tiny images.

- ImageNet-LT: train and val lists name ImageNet training images
  (``train/n01440764/n01440764_10026.JPEG``), the test list ILSVRC-2012 validation images sorted into
  class folders (``val/n01440764/ILSVRC2012_val_00000293.JPEG``).
- iNaturalist 2018: ``train_val2018/<supercategory>/<category id>/<md5>.jpg``, the label is the
  category id; train and val lists, no test list.
- Places-LT: train and val lists name Places365 training images (``train/airfield/00000166.jpg``),
  the test list validation images (``val/airfield/Places365_val_00003597.jpg``).

Each image is its class colour plus noise, a few pixels larger or smaller than ``size`` so that
crops see different shapes; every 7th training image is grayscale and one is CMYK.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041",
         "n01514668", "n01514859", "n01518878"]
PLACES = ["airfield", "airplane_cabin", "airport_terminal", "alcove", "alley", "amphitheater",
          "amusement_arcade", "amusement_park", "apartment_building-outdoor", "aquarium"]
INAT_SUPER = ["Arachnida", "Animalia", "Plantae", "Insecta", "Aves", "Fungi", "Mollusca", "Reptilia", "Amphibia",
              "Mammalia"]
SPLIT_FILES = {
    "imagenet_lt": {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"},
    "inat2018": {"train": "iNaturalist18_train.txt", "val": "iNaturalist18_val.txt"},
    "places_lt": {"train": "Places_LT_train.txt", "val": "Places_LT_val.txt", "test": "Places_LT_test.txt"},
}


@dataclass
class Tree:
    benchmark: str
    root: Path  # --data-root
    split_root: Path  # --split-root
    entries: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # split -> (path, label)

    def split_file(self, split: str) -> Path:
        return self.split_root / SPLIT_FILES[self.benchmark][split]

    def image(self, split: str, i: int) -> Path:
        return self.root / self.entries[split][i][0]

    def write_split_files(self) -> None:
        self.split_root.mkdir(parents=True, exist_ok=True)
        for split, entries in self.entries.items():
            self.split_file(split).write_text("".join(f"{p} {y}\n" for p, y in entries))


def jpeg_bytes(rgb: np.ndarray, mode: str = "RGB", quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 array as a JPEG in ``mode`` ("RGB", "L" grayscale or "CMYK")."""
    image = Image.fromarray(rgb, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def class_colour(label: int) -> np.ndarray:
    rng = np.random.RandomState(1000 + label)
    return rng.randint(30, 200, size=3)


def _image(label: int, size: tuple[int, int], rng: np.random.RandomState) -> np.ndarray:
    w, h = size[0] + int(rng.randint(-3, 4)), size[1] + int(rng.randint(-3, 4))
    noise = rng.randint(0, 50, size=(h, w, 3))
    return np.clip(class_colour(label)[None, None, :] + noise, 0, 255).astype(np.uint8)


def _paths(benchmark: str, split: str, label: int, k: int, serial: int) -> str:
    if benchmark == "imagenet_lt":
        wnid = WNIDS[label]
        if split == "test":
            return f"val/{wnid}/ILSVRC2012_val_{serial:08d}.JPEG"
        return f"train/{wnid}/{wnid}_{(10000 if split == 'train' else 500) + k}.JPEG"
    if benchmark == "places_lt":
        cat = PLACES[label]
        if split == "test":
            return f"val/{cat}/Places365_val_{serial:08d}.jpg"
        return f"train/{cat}/{(100 if split == 'train' else 4000) + k:08d}.jpg"
    digest = hashlib.md5(f"{split}/{label}/{k}".encode()).hexdigest()
    return f"train_val2018/{INAT_SUPER[label % len(INAT_SUPER)]}/{label}/{digest}.jpg"


def write_tree(root: Path, benchmark: str, train_counts: list[int], val_per_class: int = 2,
               test_per_class: int = 2, size: tuple[int, int] = (24, 20), split_root: Path | None = None,
               seed: int = 0) -> Tree:
    """Write a tree for ``benchmark`` under ``root`` (split lists under ``split_root``, default ``root``):
    ``train_counts[c]`` training images of class c, ``val_per_class`` and (except iNaturalist)
    ``test_per_class`` images of every class."""
    tree = Tree(benchmark, Path(root), Path(split_root or root))
    rng = np.random.RandomState(seed)
    counts = {"train": list(train_counts), "val": [val_per_class] * len(train_counts)}
    if "test" in SPLIT_FILES[benchmark]:
        counts["test"] = [test_per_class] * len(train_counts)
    serial = 1
    for split, per_class in counts.items():
        tree.entries[split] = []
        for label, n in enumerate(per_class):
            for k in range(n):
                rel = _paths(benchmark, split, label, k, serial)
                serial += 1
                mode = "RGB"
                if split == "train" and len(tree.entries["train"]) % 7 == 3:
                    mode = "L"
                if split == "train" and len(tree.entries["train"]) == 5:
                    mode = "CMYK"
                path = tree.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg_bytes(_image(label, size, rng), mode))
                tree.entries[split].append((rel, label))
    tree.write_split_files()
    return tree


def image_bytes(rgb: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
    """Encode an (H, W, 3) uint8 array as "JPEG" or "PNG" in ``mode`` ("RGB" or "L" grayscale)."""
    image = Image.fromarray(rgb, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def folder_class_names(n: int) -> list[str]:
    """Class folder names whose sorted order is their index order (c00_..., c01_...)."""
    return [f"c{c:02d}_{PLACES[c % len(PLACES)]}" for c in range(n)]


def write_image_folder(root: Path, counts: list[int], split: str = "train", sizes: tuple[int, int] = (16, 40),
                       seed: int = 0, names: list[str] | None = None) -> list[str]:
    """Write ROOT/<split>/<class>/<images>: ``counts[c]`` images of class c, each its class colour plus
    noise at a random size in ``sizes`` (width and height drawn apart); every 3rd image a PNG, every 5th
    grayscale, the others RGB JPEGs. Returns the relative paths (sorted, as a folder scan lists them)."""
    rng = np.random.RandomState(seed)
    names = names or folder_class_names(len(counts))
    out = []
    for c, n in enumerate(counts):
        folder = Path(root) / split / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            w, h = (int(v) for v in rng.randint(sizes[0], sizes[1] + 1, size=2))
            rgb = np.clip(class_colour(c)[None, None, :] + rng.randint(0, 50, size=(h, w, 3)), 0, 255).astype(np.uint8)
            fmt = "PNG" if k % 3 == 1 else "JPEG"
            name = f"img_{k:04d}.{'png' if fmt == 'PNG' else 'jpg'}"
            (folder / name).write_bytes(image_bytes(rgb, fmt, "L" if k % 5 == 2 else "RGB"))
            out.append(f"{split}/{names[c]}/{name}")
    return sorted(out)
