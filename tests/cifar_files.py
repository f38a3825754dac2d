"""Synthetic CIFAR-10 / CIFAR-100 files in torchvision's on-disk python format, for tests.

The layout and the pickled dicts match the real files as ``pickle.load(f, encoding="latin1")`` returns
them: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}``; ``data`` is a uint8 (N, 3072) array of row-major R, G, B
planes, labels are balanced and stored in a deterministic shuffled order.

Image content is cheap but meaningful: every image is its class's constant colour plus a small
deterministic noise pattern (values colour + 0..15), so that classes can be told apart. The image's
position in its split (training files concatenated in order, or the test file) is written into the
first ``INDEX_BYTES`` bytes of the red plane (big-endian), see :func:`decode_index`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

INDEX_BYTES = 3  # red plane, row 0, columns 0..2: the file-order index, big-endian
NOISE_LEVELS = 16  # noise values are 0..15 added to the class colour
N_PATTERNS = 97  # distinct noise patterns, chosen by index % N_PATTERNS

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_KINDS = {
    # kind: (folder, classes, train images per class, test images per class)
    "cifar10": ("cifar-10-batches-py", 10, 5000, 1000),
    "cifar100": ("cifar-100-python", 100, 500, 100),
}


def folder_name(kind: str) -> str:
    return _KINDS[kind][0]


def num_classes(kind: str) -> int:
    return _KINDS[kind][1]


def class_colours(kind: str, seed: int = 0) -> np.ndarray:
    """(C, 3) uint8 base colour of each class, in 16..223 so that colour + noise never overflows."""
    rng = np.random.RandomState(10_000 + seed)
    return rng.randint(16, 224, size=(num_classes(kind), 3)).astype(np.uint8)


def decode_index(x: np.ndarray) -> np.ndarray:
    """File-order indices of images given as (N, 3072) or (N, 3, 32, 32) uint8 (numpy or torch)."""
    flat = np.asarray(x).reshape(len(x), 3072)[:, :INDEX_BYTES].astype(np.int64)
    out = np.zeros(len(flat), dtype=np.int64)
    for k in range(INDEX_BYTES):
        out = out * 256 + flat[:, k]
    return out


def balanced_labels(classes: int, per_class: int, rng: np.random.RandomState) -> np.ndarray:
    """``per_class`` labels of each class in a shuffled (not sorted) order."""
    return rng.permutation(np.repeat(np.arange(classes, dtype=np.int64), per_class))


def make_images(labels: np.ndarray, colours: np.ndarray, seed: int) -> np.ndarray:
    """(N, 3072) uint8: class colour + a deterministic noise pattern, index in the first bytes."""
    n = len(labels)
    rng = np.random.RandomState(20_000 + seed)
    patterns = rng.randint(0, NOISE_LEVELS, size=(N_PATTERNS, 3072)).astype(np.uint8)
    table = np.repeat(colours, 1024, axis=1)  # (C, 3072): R plane, G plane, B plane
    idx = np.arange(n, dtype=np.int64)
    data = table[labels]
    data += patterns[idx % N_PATTERNS]
    for k in range(INDEX_BYTES):
        shift = 8 * (INDEX_BYTES - 1 - k)
        data[:, k] = (idx >> shift) & 0xFF
    return data


def _dump(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def write_cifar(root: Path, kind: str, images_per_class_train: int | None = None, seed: int = 0) -> Path:
    """Write synthetic CIFAR files of ``kind`` ("cifar10" or "cifar100") under ``root`` and return the
    dataset folder (``root/cifar-10-batches-py`` or ``root/cifar-100-python``).

    ``images_per_class_train`` defaults to the real count (5000 or 500); the test file always holds
    the real 10000 images (1000 or 100 per class). Labels and images depend only on ``seed``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    folder_nm, classes, train_per_class, test_per_class = _KINDS[kind]
    per_class = train_per_class if images_per_class_train is None else images_per_class_train
    folder = Path(root) / folder_nm
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    colours = class_colours(kind, seed)
    y_train = balanced_labels(classes, per_class, rng)
    y_test = balanced_labels(classes, test_per_class, rng)
    x_train = make_images(y_train, colours, seed)
    x_test = make_images(y_test, colours, seed + 1)

    if kind == "cifar10":
        names = CIFAR10_NAMES
        chunks = np.array_split(np.arange(len(y_train)), 5)
        for b, chunk in enumerate(chunks, start=1):
            _dump({
                "batch_label": f"training batch {b} of 5",
                "labels": y_train[chunk].tolist(),
                "data": x_train[chunk],
                "filenames": [f"{names[y_train[i]]}_s_{i:06d}.png" for i in chunk],
            }, folder / f"data_batch_{b}")
        _dump({
            "batch_label": "testing batch 1 of 1",
            "labels": y_test.tolist(),
            "data": x_test,
            "filenames": [f"{names[c]}_s_{i:06d}.png" for i, c in enumerate(y_test)],
        }, folder / "test_batch")
        _dump({"num_cases_per_batch": 10000, "label_names": list(names), "num_vis": 3072}, folder / "batches.meta")
        return folder

    fine_names = [f"fine_{c:02d}" for c in range(classes)]
    coarse_of = np.random.RandomState(30_000 + seed).permutation(classes) // 5  # 20 superclasses of 5
    for split, x, y, label in (("train", x_train, y_train, "training batch 1 of 1"),
                               ("test", x_test, y_test, "testing batch 1 of 1")):
        _dump({
            "filenames": [f"{fine_names[c]}_s_{i:06d}.png" for i, c in enumerate(y)],
            "batch_label": label,
            "fine_labels": y.tolist(),
            "coarse_labels": coarse_of[y].tolist(),
            "data": x,
        }, folder / split)
    _dump({"fine_label_names": fine_names, "coarse_label_names": [f"coarse_{c:02d}" for c in range(20)]},
          folder / "meta")
    return folder
