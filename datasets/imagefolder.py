"""image folder: a practitioner's own images as a long-tailed benchmark.

Two layouts under ``--data-root ROOT``:

- class folders: ``ROOT/train/<class>/<images>`` (sub-folders of a class folder are read too; files
  and folders whose names start with '.' are skipped), optionally ``ROOT/val/`` and ``ROOT/test/`` of
  the same shape. Classes are the train folder names in sorted order; a val/ or test/ class must be
  one of them. No link to a folder is followed: a class or split folder that is a link is refused, a
  linked folder inside a class folder skipped; a link to a file is used when its target is a file
  inside ROOT (resolved), else skipped, as are files beside the class folders (``Source.skipped``, which
  ``data check`` lists). A tree without links reads as it always did: same images, order, fingerprint.
- split lists (with ``--split-root DIR``): ``DIR/train.txt`` and optionally ``DIR/val.txt``,
  ``DIR/test.txt``, one ``relative/path label`` line per image (paths relative to ROOT, as the
  ImageNet-LT lists; read by ``ltbench.data.splitfile`` with its checks: no absolute path, no '..'), and
  optionally ``DIR/classes.txt`` (class names, line i = label i; else the names are the labels).

A split that is not given is carved out of the training images, per class, seeded (``make_splits``):
one ``numpy.random.RandomState(split_seed)``; the classes in order, each drawing one permutation of
its images (in path order). Class c with n images gives at most ``cap = floor(holdout * n)`` of them
away; when the wanted T = test_per_class and V = val_per_class (0 for a split that is given) exceed
the cap, t = floor(cap * T / (T + V) + 1/2) and v = cap - t. The permutation's first t images are
test, the next v val, the rest train: never overlapping, and a class keeps at least one training image.

``imbalance`` R > 0 then makes the training set long-tailed with Cao et al.'s profile
(``ltbench.data.benchmark.lt_counts``): n_max is the smallest per-class training count (a balanced folder:
its count), class i keeps its first n_i = int(n_max * R^(-i/(C-1))) training images in the seeded
order above. 0 keeps the counts as they are.

Identity: paths are never part of a spec, so ``data.fingerprint`` carries what identifies the data:
sha256 (first 16 hex digits) of the layout, the class names and every image's (split, relative path,
label, size in bytes). ``ltbench run`` fills it when it resolves a spec (``data_params``); loading
refuses a folder whose fingerprint differs from the spec's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat as stat_module
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ltbench.data.benchmark import Benchmark, check_imbalance, lt_counts
from ltbench.data.splitfile import LINE_FORMAT, read_split_file
from ltbench.data.splitlist import SplitList
from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks

if TYPE_CHECKING:
    from ltbench.data.images import ImageFileSplits, ImageTransform
    from ltbench.data.splits import ShotRule

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")  # what ltbench.data.images.decode_rgb decodes
SPLITS = ("train", "val", "test")
LIST_FILES = {split: f"{split}.txt" for split in SPLITS}
CLASSES_FILE = "classes.txt"
FINGERPRINT_FORMAT = "ltbench imagefolder 1"
FINGERPRINT_HEX = 16
NO_CLASS_LIMIT = 2**31  # split lists without classes.txt: any label (the classes are those train.txt uses)


class FolderList(SplitList):
    """The images of one split folder (``file``: ROOT/<split>); an entry's place is its class folder."""

    def where(self, i: int) -> str:
        parts = self.paths[i].split("/")
        return f"class folder {self.file / parts[1]}"


@dataclass
class Source:
    """What a scan found: the layout, class names, the splits given (train always) and each image's size."""

    layout: str  # "folders" | "lists"
    root: Path
    classes: list[str]
    lists: dict[str, SplitList]
    sizes: dict[str, list[int]]
    ignored: list[str] = field(default_factory=list)  # files that are not images (folders layout)
    skipped: list[str] = field(default_factory=list)  # "path: why" for links not followed and the like

    def fingerprint(self) -> str:
        """sha256 of the layout, class names and every image's (split, path, label, size): 16 hex digits."""
        h = hashlib.sha256(json.dumps([FINGERPRINT_FORMAT, self.layout, self.classes]).encode())
        for split in SPLITS:
            if split in self.lists:
                e = self.lists[split]
                for row in zip(e.paths, e.labels, self.sizes[split], strict=True):
                    h.update(json.dumps([split, *row]).encode() + b"\n")
        return h.hexdigest()[:FINGERPRINT_HEX]

    def where(self) -> str:
        return f"{self.root}" if self.layout == "folders" else f"{self.root} (lists in {self.lists['train'].file.parent})"


# ---------------------------------------------------------------------------------------------
# scanning


def _inside(path: str, real_root: str) -> bool:
    return os.path.commonpath([path, real_root]) == real_root


def _unusable(entry: os.DirEntry[str], real_root: str) -> str | None:
    """Why an image file found in a class folder cannot be used (None when it can): links are used only
    when their target is a file inside the data root."""
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if not os.path.exists(target):
            return f"a link to {target}, which does not exist"
        if not _inside(target, real_root):
            return f"a link to {target}, outside the data root (links are followed only within it)"
    if not entry.is_file():
        return "not a regular file"
    return None


def _image_files(folder: Path, rel: str, real_root: str) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """The image files under ``folder`` (recursively, sorted, hidden names skipped: os.walk's top-down
    order) as (path relative to the data root, size), the other files, and what was skipped, with why
    ("path: why"). Links to folders are never followed; a link to a file is used when its target lies
    inside the data root (``real_root``, links resolved)."""
    images, other, skipped = [], [], []
    todo = [(folder, rel)]
    while todo:  # depth first, each folder's files before its sub-folders, as os.walk
        top, prefix = todo.pop()
        try:
            with os.scandir(top) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(f"{prefix}: a folder that cannot be read ({exc.strerror or type(exc).__name__})")
            continue
        subdirs = []
        for e in entries:
            path = f"{prefix}/{e.name}"
            if e.is_dir(follow_symlinks=False):
                subdirs.append((Path(e.path), path))
            elif e.is_symlink() and e.is_dir():
                skipped.append(f"{path}: a link to a folder (links to folders are not followed)")
            elif not e.name.lower().endswith(IMAGE_EXTENSIONS):
                other.append(path)
            elif (why := _unusable(e, real_root)) is not None:
                skipped.append(f"{path}: {why}")
            else:
                images.append((path, e.stat().st_size))
        todo += reversed(subdirs)
    return images, other, skipped


def _link_error(path: Path, what: str) -> LtbenchError:
    return LtbenchError(f"image folder: {what} {path} is a link (to {os.path.realpath(path)}); ltbench follows no "
                        f"links to folders inside the data root (one can lead out of it, or loop back into it). "
                        f"Put the folder itself there, or pass the folder that holds the real one as --data-root.")


def _class_dirs(folder: Path) -> tuple[list[str], list[str]]:
    """The class folders of a split folder (sorted) and the other names beside them (unused)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise LtbenchError(f"image folder: cannot read {folder} ({exc.strerror or type(exc).__name__}); make it "
                           f"readable, or point --data-root elsewhere.") from None
    for e in entries:
        if e.is_symlink() and e.is_dir():
            raise _link_error(Path(e.path), "class folder")
    return [e.name for e in entries if e.is_dir(follow_symlinks=False)], \
        [e.name for e in entries if not e.is_dir(follow_symlinks=False)]


def scan_folders(root: Path) -> Source:
    """Scan ROOT/train (and ROOT/val, ROOT/test when there) for class folders of images."""
    train = root / "train"
    if train.is_symlink():
        raise _link_error(train, "split folder")
    if not train.is_dir():
        raise LtbenchError(
            f"image folder: no train/ folder in {root}. Lay the images out as ROOT/train/<class>/<image files> "
            f"(optionally ROOT/val/ and ROOT/test/ of the same shape) and pass --data-root ROOT; for split lists "
            f"of your own ('relative/path label' lines) add --split-root DIR holding train.txt.")
    classes = _class_dirs(train)[0]
    if len(classes) < 2:
        raise LtbenchError(f"image folder: {train} has {len(classes)} class folder(s); a benchmark needs at least 2 "
                           f"(one sub-folder of train/ per class, holding its images).")
    index = {c: i for i, c in enumerate(classes)}
    source = Source("folders", root, classes, {}, {})
    real_root = os.path.realpath(root)
    for split in SPLITS:
        folder = root / split
        if folder.is_symlink():
            raise _link_error(folder, "split folder")
        if split != "train" and not folder.exists():
            continue
        if not folder.is_dir():
            raise LtbenchError(f"image folder: {folder} is not a folder; remove it or make it ROOT/{split}/<class>/.")
        found, loose = _class_dirs(folder)
        source.skipped += [f"{split}/{name}: not in a class folder" for name in loose]
        unknown = [c for c in found if c not in index]
        if unknown:
            raise LtbenchError(f"image folder: {folder / unknown[0]} is not a class of {train} (its classes: "
                               f"{_names(classes)}); rename it to a training class or remove it.")
        entries = FolderList(folder, [], [], [])
        sizes: list[int] = []
        for c in found:
            images, other, skipped = _image_files(folder / c, f"{split}/{c}", real_root)
            source.ignored += other
            source.skipped += skipped
            if split == "train" and not any(size > 0 for _, size in images):
                raise LtbenchError(
                    f"image folder: class folder {folder / c} has no readable image ({len(images)} empty image "
                    f"file(s), {len(other)} other file(s){f', {len(skipped)} skipped: {skipped[0]}' if skipped else ''}"
                    f"); images are {', '.join(IMAGE_EXTENSIONS)} files. Add images or remove the folder.")
            for path, size in images:
                entries.paths.append(path)
                entries.labels.append(index[c])
                entries.line_numbers.append(len(entries.line_numbers) + 1)
                sizes.append(size)
        source.lists[split], source.sizes[split] = entries, sizes
    return source


def _names(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _read_list(path: Path, limit: int) -> SplitList:
    entries, problems = read_split_file(path, limit)
    if problems:
        raise LtbenchError(f"malformed split list: {problems[0]}; {LINE_FORMAT}"
                           f"{f' in 0..{limit - 1}' if limit < NO_CLASS_LIMIT else ''}. Fix that line.")
    if not entries.paths:
        raise LtbenchError(f"split list {path} lists no images; one 'relative/path label' line per image.")
    return entries


def scan_lists(root: Path, split_dir: Path) -> Source:
    """Read DIR/train.txt (and val.txt, test.txt, classes.txt when there); images under ROOT."""
    if not (split_dir / LIST_FILES["train"]).is_file():
        raise LtbenchError(f"image folder: no {LIST_FILES['train']} in --split-root {split_dir}. Put the split lists "
                           f"there (train.txt, optionally val.txt and test.txt; 'relative/path label' per line, paths "
                           f"relative to --data-root), or drop --split-root to read class folders ROOT/train/<class>/.")
    names = _class_names(split_dir / CLASSES_FILE)
    limit = len(names) or NO_CLASS_LIMIT
    lists = {s: _read_list(split_dir / f, limit) for s, f in LIST_FILES.items() if (split_dir / f).is_file()}
    used = set(lists["train"].labels)
    num_classes = len(names) or max(used) + 1
    gaps = [c for c in range(num_classes) if c not in used]
    if gaps:
        raise LtbenchError(f"image folder: class {gaps[0]}{f' ({names[gaps[0]]})' if names else ''} has no training "
                           f"image in {lists['train'].file} ({len(gaps)} such class(es)); every label 0..{num_classes - 1} "
                           f"needs one. Renumber the labels or add images.")
    classes = names or [str(c) for c in range(num_classes)]
    source = Source("lists", root, classes, lists, {})
    seen = {p: lists["train"].where(i) for i, p in enumerate(lists["train"].paths)}
    for split, entries in lists.items():
        if split != "train":
            _check_held_out(entries, num_classes, seen)
        source.sizes[split] = [_size(root, entries, i) for i in range(len(entries))]
    return source


def _class_names(path: Path) -> list[str]:
    """The lines of classes.txt (blank ones skipped); none when there is no such file."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise LtbenchError(f"image folder: {path}:{line} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); save "
                           f"{CLASSES_FILE} as UTF-8, one class name per line.") from None
    except OSError as exc:
        raise LtbenchError(f"image folder: cannot read {path} ({exc.strerror or type(exc).__name__}).") from None
    return [t.strip() for t in text.splitlines() if t.strip()]


def _check_held_out(entries: SplitList, num_classes: int, seen: dict[str, str]) -> None:
    for i, (path, y) in enumerate(zip(entries.paths, entries.labels, strict=True)):
        if y >= num_classes:
            raise LtbenchError(f"malformed split list: {entries.where(i)}: label {y} has no training images (the "
                               f"labels of train.txt stop at {num_classes - 1}).")
        if path in seen:
            raise LtbenchError(f"split lists overlap: {entries.where(i)}: {path} is also a training image "
                               f"({seen[path]}); an image belongs to one split. Remove one of the lines.")
        seen[path] = entries.where(i)


def _size(root: Path, entries: SplitList, i: int) -> int:
    path = root / entries.paths[i]
    try:
        st = os.stat(path)
    except OSError:
        link = f" (a link to {os.path.realpath(path)}, which does not exist)" if path.is_symlink() else ""
        raise LtbenchError(f"image {path} (listed at {entries.where(i)}) not found{link}; paths in the split lists "
                           f"are relative to --data-root {root}.") from None
    if not stat_module.S_ISREG(st.st_mode):
        raise LtbenchError(f"image {path} (listed at {entries.where(i)}) is not a file; list image files only.")
    return st.st_size


def scan(data_root: Path, split_root: Path | None = None) -> Source:
    """The data under ``data_root``: split lists in ``split_root`` when given, else class folders."""
    root = Path(data_root)
    return scan_lists(root, Path(split_root)) if split_root is not None else scan_folders(root)


def _signature(data_root: Path, split_root: Path | None) -> tuple[Any, ...]:
    """What changes when files are added, removed or renamed: modification times of the folders (or
    of the split lists); a cheap key for reusing a scan within one process."""
    if split_root is not None:
        files = [Path(split_root) / f for f in (*LIST_FILES.values(), CLASSES_FILE)]
        return tuple(p.stat().st_mtime_ns if p.is_file() else None for p in files)
    out = []
    for split in SPLITS:
        for top, dirs, _ in os.walk(Path(data_root) / split):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            out.append((top, os.stat(top).st_mtime_ns))
    return tuple(out)


_SCANS: dict[tuple[Any, ...], Source] = {}  # (root, split root, signature) -> scan, within this process
_BY_FINGERPRINT: dict[str, Source] = {}  # the scans made while resolving specs, for check_params


def cached_scan(data_root: Path, split_root: Path | None) -> Source:
    key = (str(Path(data_root).resolve()), str(Path(split_root).resolve()) if split_root else None,
           _signature(data_root, split_root))
    if key not in _SCANS:
        _SCANS[key] = scan(data_root, split_root)
    return _SCANS[key]


# ---------------------------------------------------------------------------------------------
# splitting


def held_out(n: int, test: int, val: int, holdout: float) -> tuple[int, int]:
    """(t, v): the test and val images a class of ``n`` images gives (module docstring)."""
    cap = math.floor(holdout * n)
    if test + val <= cap:
        return test, val
    t = math.floor(cap * test / (test + val) + 0.5)
    return t, cap - t


def _subset(entries: SplitList, idx: list[int]) -> SplitList:
    idx = sorted(idx)
    return replace(entries, paths=[entries.paths[i] for i in idx], labels=[entries.labels[i] for i in idx],
                   line_numbers=[entries.line_numbers[i] for i in idx])


def make_splits(source: Source, params: dict[str, Any], name: str = "imagefolder") -> tuple[dict[str, SplitList], dict[str, Any]]:
    """The train, val and test lists (carving what is not given, then the imbalance profile) and the
    facts of the split for the record."""
    import numpy as np

    train, num_classes = source.lists["train"], len(source.classes)
    want = {s: 0 if s in source.lists else int(params[f"{s}_per_class"]) for s in ("test", "val")}
    by_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i, y in enumerate(train.labels):
        by_class[y].append(i)
    rng = np.random.RandomState(int(params["split_seed"]))
    parts: dict[str, list[list[int]]] = {"test": [], "val": [], "train": []}
    for idx in by_class:
        perm = [idx[j] for j in rng.permutation(len(idx))]
        t, v = held_out(len(idx), want["test"], want["val"], float(params["holdout"]))
        parts["test"].append(perm[:t])
        parts["val"].append(perm[t:t + v])
        parts["train"].append(perm[t + v:])
    info: dict[str, Any] = {"found_train_counts": [len(i) for i in by_class]}
    if params["imbalance"]:
        n_max = min(len(p) for p in parts["train"])
        try:
            check_imbalance(name, float(params["imbalance"]), n_max, num_classes)
        except LtbenchError as exc:
            most = max(len(p) for p in parts["train"])
            raise LtbenchError(f"{exc} (n_max {n_max} is the fewest training images of a class after the val/test "
                               f"carve; --imbalance makes a balanced train folder long-tailed" +
                               (f", and this one already has {most}..{n_max} per class: drop --imbalance to keep "
                                f"its counts)" if most > n_max else ")")) from None
        counts = lt_counts(n_max, num_classes, float(params["imbalance"]))
        parts["train"] = [p[:n] for p, n in zip(parts["train"], counts, strict=True)]
        info["imbalance_profile"] = {"n_max": n_max, "ratio": float(params["imbalance"]),
                                     "rule": "n_i = int(n_max * R^(-i/(C-1))), n_max the fewest training images of a class"}
    out = {"train": _subset(train, [i for p in parts["train"] for i in p])}
    for s in ("val", "test"):
        out[s] = source.lists[s] if s in source.lists else _subset(train, [i for p in parts[s] for i in p])
        info[f"{s}_source"] = (f"{source.lists[s].file}" if s in source.lists else
                               f"carved from the training images: up to {want[s]} per class, seed "
                               f"{params['split_seed']}, at most {params['holdout']:g} of a class held out")
    return out, info


# ---------------------------------------------------------------------------------------------
# the benchmark


@benchmarks.register()
class ImageFolder(Benchmark):
    name = "imagefolder"
    title = "image folder"
    num_classes = 0  # from the data: the train/ class folders (or the labels of train.txt)
    in_channels = 3
    image_extensions = IMAGE_EXTENSIONS
    images_help = (
        "Your own images, nothing to download. Either class folders: ROOT/train/<class>/<image files> (JPEG, PNG, "
        "GIF or WebP; grayscale is fine), optionally ROOT/val/ and ROOT/test/ of the same shape (a split not given "
        "is carved out of train/ per class, seeded); or split lists in a folder DIR (--split-root DIR): train.txt "
        "and optionally val.txt, test.txt ('relative/path label' per line, paths relative to ROOT) and classes.txt "
        "(one class name per line).")
    # A pretrained CLIP ViT-B/16 with a linear probe on its features (extracted once), said at run start; a
    # from-scratch ResNet-50 (the ImageNet pipeline, data.crop/resize/color_jitter) is --backbone resnet50.
    default_backbone = "clip_vit_b16"
    pretrained_tuning = "linear"
    scratch_backbone = "resnet50"
    transform_keys = ("crop", "resize", "color_jitter")  # the ImageNet pipeline of a from-scratch backbone
    recipe_family = "imagenet_lt"  # the ImageNet-style protocol of the paper and kang recipes
    params: ClassVar[dict[str, Any]] = {
        "fingerprint": "",  # filled when a spec is resolved with a data root (module docstring)
        "imbalance": 0.0,  # 0: the counts as they are; R >= 1: Cao et al.'s profile on the training images
        "val_per_class": 20, "test_per_class": 50, "holdout": 0.5, "split_seed": 0,  # carving (module docstring)
        "many_above": 100, "few_below": 20,  # many n > 100, few n < 20 (Liu et al. 2019)
        "crop": 224, "resize": 0, "color_jitter": 0.4,  # resize 0: round(crop * 256 / 224)
    }

    def scan(self, data_root: Path, split_root: Path | None = None) -> Source:
        """What is under ``data_root`` (split lists in ``split_root`` when given); LtbenchError when unusable."""
        return scan(data_root, split_root)

    def make_splits(self, source: Source, params: dict[str, Any]) -> tuple[dict[str, SplitList], dict[str, Any]]:
        """The train, val and test lists of ``source`` under ``params`` and the facts of the split."""
        return make_splits(source, params, self.name)

    def read_class_names(self, params: dict[str, Any], data_root: Path,
                         split_root: Path | None = None) -> list[str]:
        """The class folders of train/ (sorted), or the lines of classes.txt (else the labels) beside split lists."""
        return list(cached_scan(Path(data_root), split_root).classes)

    def data_params(self, data_root: Path, split_root: Path | None) -> dict[str, Any]:
        source = cached_scan(data_root, split_root)
        fingerprint = source.fingerprint()
        _BY_FINGERPRINT[fingerprint] = source
        return {"fingerprint": fingerprint}

    def check_params(self, params: dict[str, Any]) -> None:
        p = params
        problems = []
        if p["imbalance"] != 0 and not (p["imbalance"] >= 1 and math.isfinite(p["imbalance"])):
            problems.append(f"data.imbalance={p['imbalance']:g}: must be 0 (the counts as found) or a ratio >= 1")
        for key in ("val_per_class", "test_per_class", "many_above", "few_below"):
            if p[key] < 0:
                problems.append(f"data.{key}={p[key]}: must not be negative")
        if not 0 <= p["holdout"] < 1:
            problems.append(f"data.holdout={p['holdout']:g}: must lie in [0, 1) (a class keeps a training image)")
        if not 0 <= p["split_seed"] < 2**32:
            problems.append(f"data.split_seed={p['split_seed']}: must lie in 0..2^32-1")
        if p["few_below"] > p["many_above"] + 1:
            problems.append(f"data.few_below={p['few_below']} and data.many_above={p['many_above']}: few (n < "
                            f"few_below) and many (n > many_above) would overlap")
        if not 1 <= p["crop"] <= resize_of(p):
            problems.append(f"data.crop={p['crop']} and data.resize={p['resize']}: need 1 <= crop <= resize")
        if not 0 <= p["color_jitter"] < 1:
            problems.append(f"data.color_jitter={p['color_jitter']}: must lie in [0, 1)")
        fp = p["fingerprint"]
        if fp and (len(fp) != FINGERPRINT_HEX or any(ch not in "0123456789abcdef" for ch in fp)):
            problems.append(f"data.fingerprint={fp!r}: not a fingerprint; leave it to --data-root")
        if problems:
            raise LtbenchError(f"{self.name}: " + "; ".join(problems) + ". Change them with --set data.KEY=VALUE.")
        if fp in _BY_FINGERPRINT:  # resolved with a data root: refuse what loading would refuse, now
            make_splits(_BY_FINGERPRINT[fp], p, self.name)

    def label(self, params: dict[str, Any]) -> str:
        """"image folder <fingerprint's first 8 digits>", IR when set, and the parameters that differ
        from their defaults."""
        text = f"{self.title} {params['fingerprint'][:8] or '(no data)'}"
        if params["imbalance"]:
            text += f" IR{params['imbalance']:g}"
        skip = ("fingerprint", "imbalance")
        changed = [f"{k} {params[k]:g}" for k in self.params if k not in skip and k in params and params[k] != self.params[k]]
        return text + (f" ({', '.join(changed)})" if changed else "")

    def transform(self, params: dict[str, Any]) -> ImageTransform:
        from ltbench.data.images import ImageTransform

        return ImageTransform(crop=int(params["crop"]), resize=resize_of(params), color_jitter=float(params["color_jitter"]))

    def shot_rule(self, params: dict[str, Any]) -> ShotRule:
        from ltbench.data.splits import ShotRule

        many, few = int(params["many_above"]), int(params["few_below"])
        return ShotRule(many, few, name="strict" if (many, few) == (100, 20) else f"many n > {many}, few n < {few}")

    def load(self, params: dict[str, Any], data_root: Path, download: bool = True,
             split_root: Path | None = None) -> ImageFileSplits:
        from ltbench.data.images import ImageFiles, ImageFileSplits

        source = scan(Path(data_root), split_root)
        found = source.fingerprint()
        if params["fingerprint"] != found:
            raise LtbenchError(self._other_data(params["fingerprint"], found, source))
        lists, info = make_splits(source, params, self.name)
        if not lists["test"].paths:
            raise LtbenchError(f"image folder {source.where()}: no test images (data.test_per_class=0 and no test "
                               f"split given); give a test/ folder or test.txt, or set data.test_per_class.")
        files = {s: ImageFiles.from_list(Path(data_root), lists[s], s) for s in SPLITS}
        n = len(source.classes)
        transform = self.transform(params)
        info.update({
            "layout": source.layout, "folder": Path(data_root).resolve().name, "fingerprint": found,
            "classes": source.classes, "num_classes": n, "train_size": len(files["train"]),
            "val_size": len(files["val"]), "test_size": len(files["test"]),
            "val_counts": files["val"].class_counts(n), "test_counts": files["test"].class_counts(n),
            "transform": transform.describe(),
        })
        if source.layout == "lists":
            from ltbench.files import file_sha256

            info["split_files"] = {s: {"file": e.file.name, "images": len(e), "sha256": file_sha256(e.file)}
                                   for s, e in source.lists.items()}
        return ImageFileSplits(train=files["train"], val=files["val"], test=files["test"], num_classes=n,
                               transform=transform, benchmark=self.name, shot_rule=self.shot_rule(params), info=info)

    def _other_data(self, wanted: str, found: str, source: Source) -> str:
        if not wanted:
            return ("image folder: this spec names no data (data.fingerprint is empty); resolve it with the data "
                    "root (`ltbench run --data-root ROOT` does; in Python: specs.resolve(..., data_root=ROOT)).")
        return (f"image folder: the data in {source.where()} (fingerprint {found}) is not the data this run was set "
                f"up with (data.fingerprint {wanted}): files were added, removed, renamed or changed since, or "
                f"another --data-root/--split-root was given. Point --data-root at that data, or start a new run on "
                f"this one (a plain `ltbench run` without --stage1 fills in its fingerprint).")


def resize_of(params: dict[str, Any]) -> int:
    """data.resize, or when 0 the ImageNet ratio: round(crop * 256 / 224)."""
    return int(params["resize"]) or round(int(params["crop"]) * 256 / 224)
