"""Split-file benchmarks: the published split lists ("relative/path label" per line) and the base
class of ImageNet-LT, iNaturalist 2018 and Places-LT.

No torch here (the registry imports benchmark modules for `ltbench list`); the image pipeline
lives in ``ltbench.data.images`` and is imported when a benchmark loads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import LtbenchError
from ..files import file_sha256
from .benchmark import Benchmark
from .splitlist import SplitList  # a leaf module, so that ltbench.data.images need not import this one

if TYPE_CHECKING:
    from .images import ImageFileSplits, ImageTransform

LINE_FORMAT = "each line must be 'relative/path label' with an integer label"


@dataclass(frozen=True)
class SplitFacts:
    """Published facts about a split file: its line count, the number of classes it covers and the
    most and fewest images of a class."""

    lines: int
    classes: int
    max_per_class: int
    min_per_class: int


def outside_root(path: str) -> str | None:
    """Why a split-file path would lead outside the data root (None when it stays inside). Only the text
    counts: symbolic links inside the root (e.g. an image folder kept on another disk) are the user's."""
    if path.startswith("/"):
        return f"path {path!r} is absolute; paths are relative to the data root"
    if ".." in path.split("/"):
        return f"path {path!r} has a '..' component, which leads out of the data root"
    return None


def parse_split_lines(lines: Iterable[str], file: Path, num_classes: int,
                      max_problems: int | None = 1) -> tuple[SplitList, list[str]]:
    """Parse the lines of a split file. Blank lines are skipped. Paths are relative to the data root and
    must stay inside it: an absolute path or one with a '..' component is a problem of its line (the
    published lists hold neither). Returns the entries and up to ``max_problems`` messages
    ("file:line: what: 'text'", None: all of them); the entries of bad lines are left out."""
    out = SplitList(Path(file), [], [], [])
    problems: list[str] = []
    for n, raw in enumerate(lines, 1):
        text = raw.rstrip("\r\n")
        fields = text.split()
        if not fields:
            continue
        problem = None
        if len(fields) != 2:
            problem = f"expected 2 fields (path and label), found {len(fields)}"
        elif not fields[1].isdigit():
            problem = f"label {fields[1]!r} is not a non-negative integer"
        elif int(fields[1]) >= num_classes:
            problem = f"label {int(fields[1])} is out of range 0..{num_classes - 1}"
        else:
            problem = outside_root(fields[0])
        if problem is not None:
            problems.append(f"{file}:{n}: {problem}: {text!r}")
            if max_problems is not None and len(problems) >= max_problems:
                break
            continue
        out.paths.append(fields[0])
        out.labels.append(int(fields[1]))
        out.line_numbers.append(n)
    return out, problems


def read_split_file(path: Path, num_classes: int, max_problems: int | None = 1) -> tuple[SplitList, list[str]]:
    """Read a split file: (entries, problems). A file that is not UTF-8 text is one problem."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_split_lines(f, path, num_classes, max_problems)
    except UnicodeDecodeError:
        return SplitList(Path(path), [], [], []), [f"{path}: not a text file (not UTF-8)"]


def load_split_file(path: Path, num_classes: int) -> SplitList:
    """Read and check a split file; the first malformed line is an LtbenchError naming file:line."""
    entries, problems = read_split_file(path, num_classes)
    if problems:
        raise LtbenchError(f"malformed split file: {problems[0]}; {LINE_FORMAT} in 0..{num_classes - 1}. "
                           f"Fix that line or replace {Path(path).name} with the published file.")
    if not entries.paths:
        raise LtbenchError(f"split file {path} lists no images; replace it with the published {Path(path).name}.")
    return entries


def read_names_file(path: Path) -> str:
    """The text of a class-names file (UTF-8); one LtbenchError that names it when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LtbenchError(f"cannot read the class names in {path} ({getattr(exc, 'strerror', None) or type(exc).__name__}); "
                           "replace it with the published file, or remove it (then the class folders name the "
                           "classes).") from None


def split_summary(labels: list[int]) -> tuple[int, int, int]:
    """(classes present, most images of a class, fewest images of a present class)."""
    counts = Counter(labels)
    if not counts:
        return 0, 0, 0
    return len(counts), max(counts.values()), min(counts.values())


class SplitFileBenchmark(Benchmark):
    """A benchmark defined by published split lists over an image collection. The number of classes
    and the many/medium/few groups come from the train list (strict rule: many n > 100, few n < 20);
    val and test labels must be classes of the train list. Subclasses name the files, the published
    facts about them and where the data comes from."""

    in_channels = 3
    params: ClassVar[dict[str, Any]] = {"crop": 224, "resize": 256, "color_jitter": 0.4}
    transform_keys = ("crop", "resize", "color_jitter")
    split_files: ClassVar[dict[str, str]]  # "train", "val"[, "test"] -> file name; no "test": val reports
    published: ClassVar[dict[str, SplitFacts]]  # split -> facts about the published file
    published_groups: ClassVar[tuple[int, int, int] | None] = None  # many/medium/few class counts
    image_dirs: ClassVar[tuple[str, ...]]  # top-level folders of the images under --data-root
    val_source: ClassVar[str]
    test_source: ClassVar[str]
    images_help: ClassVar[str]  # where the images come from and how to lay them out (`ltbench data prepare`)
    splits_help: ClassVar[str]  # where the split lists come from
    public_split_files: ClassVar[dict[str, str]] = {}  # file name -> path in Kang et al.'s public repository
    names_files: ClassVar[tuple[str, ...]] = ()  # files of class names, looked for in the data root and split folder

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)
        if not 1 <= params["crop"] <= params["resize"]:
            raise LtbenchError(f"{self.name}: data.crop={params['crop']} and data.resize={params['resize']}: "
                               f"need 1 <= crop <= resize (the test transform crops the resized image).")
        if not 0 <= params["color_jitter"] < 1:
            raise LtbenchError(f"{self.name}: data.color_jitter={params['color_jitter']} must lie in [0, 1).")

    def label(self, params: dict[str, Any]) -> str:
        """The title, plus the parameters that differ from the published protocol (tables keep such
        runs apart from the papers' columns). iNaturalist's val-as-test convention is stated by the
        tables' notes and each record's data_info.test_source."""
        changed = [f"{k} {params[k]:g}" for k in self.params if k in params and params[k] != self.params[k]]
        return self.title + (f" ({', '.join(changed)})" if changed else "")

    def transform(self, params: dict[str, Any]) -> ImageTransform:
        from .images import ImageTransform

        return ImageTransform(crop=int(params["crop"]), resize=int(params["resize"]),
                              color_jitter=float(params["color_jitter"]))

    def split_paths(self, split_dir: Path) -> dict[str, Path]:
        return {split: Path(split_dir) / name for split, name in self.split_files.items()}

    def missing_split_files(self, split_dir: Path, via: str) -> LtbenchError | None:
        """The error for missing split files (None when all are there)."""
        missing = [p for p in self.split_paths(split_dir).values() if not p.is_file()]
        if not missing:
            return None
        names = ", ".join(p.name for p in missing)
        return LtbenchError(
            f"{self.title} split list{'s' if len(missing) > 1 else ''} not found: {names} in {split_dir} "
            f"(looked in {via}). Put {', '.join(self.split_files.values())} there, or point --split-root "
            f"(or --data-root) at the folder that holds them; `ltbench data prepare {self.name}` says where "
            f"to get them.")

    def read_splits(self, split_dir: Path, via: str) -> dict[str, SplitList]:
        error = self.missing_split_files(split_dir, via)
        if error is not None:
            raise error
        lists = {split: load_split_file(path, self.num_classes) for split, path in self.split_paths(split_dir).items()}
        problem = self.unmatched_labels(lists)
        if problem:
            raise LtbenchError(f"malformed split file: {problem}. Use the published split lists together.")
        return lists

    def unmatched_labels(self, lists: dict[str, SplitList]) -> str | None:
        """A val/test label of a class that has no training images (None when there is none)."""
        classes = max(lists["train"].labels, default=-1) + 1
        for entries in lists.values():
            for i, y in enumerate(entries.labels):
                if y >= classes:
                    return (f"{entries.where(i)}: label {y} has no training images (the labels of "
                            f"{lists['train'].file.name} stop at {classes - 1})")
        return None

    def differences_from_published(self, lists: dict[str, SplitList]) -> list[str]:
        """How the split lists differ from the published files (empty when they match)."""
        out = []
        for split, entries in lists.items():
            facts = self.published[split]
            classes, most, fewest = split_summary(entries.labels)
            if (len(entries), classes, most, fewest) != (facts.lines, facts.classes, facts.max_per_class,
                                                         facts.min_per_class):
                out.append(f"{entries.file.name}: {len(entries):,} images of {classes:,} classes ({most}..{fewest} "
                           f"per class), published: {facts.lines:,} of {facts.classes:,} "
                           f"({facts.max_per_class}..{facts.min_per_class})")
        return out

    def check_data(self, params: dict[str, Any], data_root: Path, download: bool = True,
                   split_root: Path | None = None) -> None:
        self._present_lists(data_root, split_root)

    def _present_lists(self, data_root: Path, split_root: Path | None) -> dict[str, SplitList]:
        """The split lists, checked to be there with the first image of each (LtbenchError otherwise)."""
        split_dir = Path(split_root if split_root is not None else data_root)
        via = f"--split-root {split_dir}" if split_root is not None else f"--data-root {split_dir}, no --split-root given"
        lists = self.read_splits(split_dir, via)
        for entries in lists.values():
            first = Path(data_root) / entries.paths[0]
            if not first.is_file():
                raise LtbenchError(
                    f"{self.title} images not found: {first} (the first image of {entries.where(0)}) does not "
                    f"exist. --data-root must be the folder that holds "
                    f"{' and '.join(d + '/' for d in self.image_dirs)}; `ltbench data check {self.name} --root "
                    f"PATH` checks a copy.")
        return lists

    def load(self, params: dict[str, Any], data_root: Path, download: bool = True,
             split_root: Path | None = None) -> ImageFileSplits:
        from rich.markup import escape

        from ..progress import console
        from .images import ImageFiles, ImageFileSplits
        from .splits import ShotRule

        lists = self._present_lists(data_root, split_root)
        differences = self.differences_from_published(lists)
        if differences:
            names = ", ".join(d.split(":")[0] for d in differences)
            console.print(f"[yellow]warning:[/yellow] {escape(self.title)}: {escape(names)} differ from the published split lists "
                          f"(recorded in the result); `ltbench data check {self.name}` compares them.",
                          highlight=False, soft_wrap=True)
        num_classes = max(lists["train"].labels) + 1
        files = {split: ImageFiles.from_list(Path(data_root), entries, split) for split, entries in lists.items()}
        test = files.get("test", files["val"])
        transform = self.transform(params)
        info: dict[str, Any] = {
            "train_size": len(files["train"]), "val_size": len(files["val"]), "test_size": len(test),
            "num_classes": num_classes, "val_counts": files["val"].class_counts(num_classes),
            "val_source": self.val_source, "test_source": self.test_source,
            "split_files": {split: {"file": e.file.name, "images": len(e), "sha256": file_sha256(e.file)}
                            for split, e in lists.items()},
            "published_split_files": not differences,
            "transform": transform.describe(),
        }
        if differences:
            info["differences_from_published"] = differences
        return ImageFileSplits(train=files["train"], val=files["val"], test=test, num_classes=num_classes,
                               transform=transform, benchmark=self.name, shot_rule=ShotRule(100, 20), info=info)

    def read_class_names(self, params: dict[str, Any], data_root: Path,
                         split_root: Path | None = None) -> list[str]:
        """Each label's class folder in the train list (the path between the image folder and the file
        name: ImageNet-LT's wnid, Places-LT's category, iNaturalist's supercategory/id), made readable by
        the first of ``names_files`` found in the data root or the split folder (``name_classes``)."""
        split_dir = Path(split_root if split_root is not None else data_root)
        via = f"--split-root {split_dir}" if split_root is not None else f"--data-root {split_dir}, no --split-root given"
        error = self.missing_split_files(split_dir, via)
        if error is not None:
            raise error
        train = load_split_file(self.split_paths(split_dir)["train"], self.num_classes)
        folders: dict[int, str] = {}
        for path, label in zip(train.paths, train.labels, strict=True):
            folders.setdefault(label, "/".join(path.split("/")[1:-1]) or path)
        found = next((Path(d) / f for f in self.names_files for d in (data_root, split_dir) if (Path(d) / f).is_file()),
                     None)
        return self.name_classes([folders.get(c, str(c)) for c in range(max(folders) + 1)], found)

    def name_classes(self, folders: list[str], names_file: Path | None) -> list[str]:
        """Readable names of the classes whose folders are ``folders`` (label order), from ``names_file``
        (one of ``names_files``, None when none is there). Default: the folder names."""
        return folders

    def prepare_local(self, root: Path, split_dir: Path) -> list[str]:
        """Preparation steps that need no network (e.g. split lists built from annotation files on
        disk); returns what was done. The default does nothing."""
        return []
