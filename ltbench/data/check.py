"""`ltbench data check` and `ltbench data prepare`: verify a copy of a benchmark's data on disk, and
explain (or perform, where that needs no login and no huge archive) the steps to get it.

For split-file benchmarks (ImageNet-LT, iNaturalist 2018, Places-LT) `check` compares the split
lists with the published ones (line counts, classes, images per class, many/medium/few groups;
facts kept in the benchmark classes), then looks for the listed images (a random sample, or all
with --full) and decodes them. Other benchmarks are checked by loading them without download.
"""

from __future__ import annotations

import os
import random
import shutil
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LtbenchError
from ..registry import benchmarks
from ..results.store import temp_file
from .benchmark import download_into
from .splitfile import LINE_FORMAT, SplitFileBenchmark, SplitList, read_split_file, split_summary

# Kang et al.'s repository holds some of the published split lists; $LTBENCH_SPLIT_URL names a mirror.
SPLIT_URL = "https://raw.githubusercontent.com/facebookresearch/classifier-balancing/HEAD"
SHOWN = 5  # examples shown per problem


@dataclass
class Finding:
    level: str  # "ok", "info", "warn" or "error"
    text: str


@dataclass
class Report:
    title: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: str, text: str) -> None:
        self.findings.append(Finding(level, text))

    @property
    def errors(self) -> int:
        return sum(f.level == "error" for f in self.findings)


def _examples(items: list[str], total: int) -> str:
    more = f"\n    ... and {total - len(items):,} more" if total > len(items) else ""
    return "".join(f"\n    {item}" for item in items) + more


def _benchmark(name: str) -> Any:
    return benchmarks.get(name)()


# ---------------------------------------------------------------------------------------------
# check


def check(name: str, root: Path, split_root: Path | None = None, full: bool = False, sample: int = 500,
          expect_real: bool = True, seed: int = 0, imbalance: float | None = None) -> Report:
    """Check a copy of benchmark ``name``: split lists (against the published facts when
    ``expect_real``), presence of the listed images (``sample`` per split at random, all when
    ``full``), and that they decode. A user's image folder (``imagefolder``): ``check_own_images``."""
    if sample < 1:
        raise LtbenchError(f"--sample {sample}: expected a positive number of images per split.")
    bench = _benchmark(name)
    root = Path(root)
    if imbalance is not None and "imbalance" not in bench.params:
        raise LtbenchError(f"--imbalance: benchmark {name!r} has no imbalance ratio parameter.")
    if hasattr(bench, "make_splits"):
        return check_own_images(bench, root, split_root, full, sample, random.Random(seed), imbalance)
    if not isinstance(bench, SplitFileBenchmark):
        return _check_by_loading(bench, root)
    split_dir = Path(split_root or root)
    report = Report(f"{bench.title}: images in {root}, split lists in {split_dir}")
    lists = _check_split_files(bench, split_dir, expect_real, report)
    if "train" in lists:
        _check_classes(bench, lists, expect_real, report)
    rng = random.Random(seed)
    for entries in lists.values():
        _check_images(bench, root, entries, full, sample, rng, report)
    return report


def check_own_images(bench: Any, root: Path, split_root: Path | None, full: bool, sample: int, rng: random.Random,
                     imbalance: float | None = None) -> Report:
    """Check a user's image folder (or split lists): the classes, per-class counts after the benchmark's
    split (its default parameters, ``imbalance`` when given), the imbalance ratio, the many / medium /
    few sizes, classes with no validation or test image, skipped files, and that the images decode."""
    where = f"split lists in {split_root}, images in {root}" if split_root is not None else f"class folders in {root}"
    report = Report(f"{bench.title}: {where}")
    params = {**bench.params, **({"imbalance": float(imbalance)} if imbalance is not None else {})}
    try:
        source = bench.scan(root, split_root)
        bench.check_params({**params, "fingerprint": ""})
        lists, info = bench.make_splits(source, params)
    except LtbenchError as exc:
        report.add("error", str(exc))
        return report
    _report_counts(bench, source, lists, info, params, report)
    if source.ignored:
        report.add("warn", f"{len(source.ignored):,} file(s) that are not images were skipped (images: "
                           f"{', '.join(bench.image_extensions)}):" + _examples(source.ignored[:SHOWN], len(source.ignored)))
    skipped = getattr(source, "skipped", [])
    if skipped:
        report.add("warn", f"{len(skipped):,} entr{'y was' if len(skipped) == 1 else 'ies were'} skipped (ltbench "
                           f"follows no link to a folder, and a link to a file only when the file lies inside the "
                           f"data root; images belong in class folders):" + _examples(skipped[:SHOWN], len(skipped)))
    for split, entries in source.lists.items():
        _check_own_decode(root, split, entries, source.classes, full, sample, rng, report)
    fp = source.fingerprint()
    report.add("info", f"fingerprint {fp}: ltbench run puts it into data.fingerprint; tables label these runs "
                       f"{bench.label({**params, 'fingerprint': fp})!r}")
    return report


def _report_counts(bench: Any, source: Any, lists: dict[str, SplitList], info: dict[str, Any],
                   params: dict[str, Any], report: Report) -> None:
    names, n = source.classes, len(source.classes)
    counts = {s: Counter(e.labels) for s, e in lists.items()}
    report.add("ok", f"{n} classes ({'train/ folder names' if source.layout == 'folders' else 'classes.txt or labels'}"
                     f", sorted): {', '.join(names[:8])}{f' and {n - 8} more' if n > 8 else ''}")
    for s in ("val", "test"):
        report.add("info", f"{s}: {info[f'{s}_source']}")
    w = max(len("class"), *(len(name) for name in names))
    rows = [f"{names[c]:<{w}} {counts['train'][c]:>7,} {counts['val'][c]:>7,} {counts['test'][c]:>7,}" for c in range(n)]
    shown = rows if len(rows) <= 100 else rows[:50] + rows[-50:]
    report.add("ok", f"images per class ({sum(len(e) for e in lists.values()):,} in all):\n    "
                     f"{'class':<{w}} {'train':>7} {'val':>7} {'test':>7}" + _examples(shown, len(rows)))
    train = [counts["train"][c] for c in range(n)]
    report.add("ok", f"imbalance ratio {max(train) / min(train):.1f} (training images per class: most {max(train):,}, "
                     f"fewest {min(train):,})" + (f"; --imbalance {params['imbalance']:g} applied (n_max "
                     f"{info['imbalance_profile']['n_max']})" if params["imbalance"] else ""))
    rule = bench.shot_rule(params)
    groups = rule.groups(train)
    report.add("ok", f"many / medium / few classes ({rule.describe()['many']}, {rule.describe()['few']}): "
                     f"{len(groups['many'])} / {len(groups['medium'])} / {len(groups['few'])}")
    for s in ("val", "test"):
        empty = [names[c] for c in range(n) if counts[s][c] == 0]
        if empty:
            report.add("warn", f"{len(empty)} class(es) have no {'validation' if s == 'val' else 'test'} image "
                               f"({s} metrics average over the others): {', '.join(empty[:SHOWN])}"
                               + (f" and {len(empty) - SHOWN} more" if len(empty) > SHOWN else ""))


def _check_own_decode(root: Path, split: str, entries: SplitList, names: list[str], full: bool, sample: int,
                      rng: random.Random, report: Report) -> None:
    """Decode the images of one split given on disk (all with ``full``, else ``sample`` at random);
    an error for each unreadable file, and for a class none of whose images decode."""
    n = len(entries)
    if n == 0:
        return
    chosen = list(range(n)) if full or sample >= n else sorted(rng.sample(range(n), sample))
    what = f"all {n:,}" if len(chosen) == n else f"a random sample of {len(chosen):,} of {n:,}"
    broken = _undecodable(root, entries, chosen)
    if not broken:
        report.add("ok", f"{split}: {what} images decode")
        return
    report.add("error", f"{split}: {len(broken):,} of {what} images are unreadable (not images, damaged, "
                        f"truncated, too large or empty); replace or delete them:"
                        + _examples([f"{root / entries.paths[i]}: {why}" for i, why in broken[:SHOWN]], len(broken)))
    if len(chosen) == n:
        bad = Counter(entries.labels[i] for i, _ in broken)
        have = Counter(entries.labels)
        for c in sorted(c for c in bad if bad[c] == have[c]):
            report.add("error", f"{split}: class {names[c]}: none of its {have[c]:,} images is readable")


def _check_by_loading(bench: Any, root: Path) -> Report:
    report = Report(f"{bench.title}: data in {root}")
    try:
        splits = bench.load(dict(bench.params), root, download=False)
    except LtbenchError as exc:
        report.add("error", str(exc))
        return report
    report.add("ok", f"loads: {len(splits.train):,} training, {len(splits.val):,} validation and "
                     f"{len(splits.test):,} test images of {splits.num_classes} classes")
    return report


def _check_split_files(bench: SplitFileBenchmark, split_dir: Path, expect_real: bool,
                       report: Report) -> dict[str, SplitList]:
    lists = {}
    for split, path in bench.split_paths(split_dir).items():
        if not path.is_file():
            report.add("error", f"{path.name}: not found in {split_dir}. Put it there (or pass --split-root); "
                                f"`ltbench data prepare {bench.name}` says where to get it.")
            continue
        entries, problems = read_split_file(path, bench.num_classes, max_problems=None)
        if problems:
            report.add("error", f"{path.name}: {len(problems):,} malformed line(s); {LINE_FORMAT} in "
                                f"0..{bench.num_classes - 1}:" + _examples(problems[:SHOWN], len(problems)))
        lists[split] = entries
        classes, most, fewest = split_summary(entries.labels)
        facts = bench.published[split]
        text = f"{path.name}: {len(entries):,} images of {classes:,} classes, {most}..{fewest} per class"
        if expect_real and (len(entries), classes, most, fewest) != (facts.lines, facts.classes,
                                                                     facts.max_per_class, facts.min_per_class):
            report.add("error", f"{text}; the published file has {facts.lines:,} images of {facts.classes:,} "
                                f"classes, {facts.max_per_class}..{facts.min_per_class} per class. Replace it with "
                                f"the published file (--no-expect-real checks a subset of your own).")
        else:
            report.add("ok", text)
    return lists


def _check_classes(bench: SplitFileBenchmark, lists: dict[str, SplitList], expect_real: bool,
                   report: Report) -> None:
    from .splits import ShotRule

    counts = Counter(lists["train"].labels)
    rule = ShotRule(100, 20)
    groups = rule.groups([counts.get(c, 0) for c in range(max(counts, default=-1) + 1)])
    sizes = (len(groups["many"]), len(groups["medium"]), len(groups["few"]))
    text = f"many / medium / few classes ({rule.describe()['many']}, {rule.describe()['few']}): " \
           f"{sizes[0]} / {sizes[1]} / {sizes[2]}"
    if expect_real and bench.published_groups is not None and sizes != bench.published_groups:
        report.add("error", f"{text}; published: {' / '.join(map(str, bench.published_groups))}")
    else:
        report.add("ok", text)
    unmatched = bench.unmatched_labels(lists)
    if unmatched:
        report.add("error", f"{unmatched}; the split lists do not belong together.")
    train = set(lists["train"].paths)
    for split, entries in lists.items():
        shared = [p for p in entries.paths if p in train] if split != "train" else []
        if shared:
            report.add("warn", f"{entries.file.name}: {len(shared):,} of its images are also in "
                               f"{lists['train'].file.name}:" + _examples(shared[:SHOWN], len(shared)))


def _check_images(bench: SplitFileBenchmark, root: Path, entries: SplitList, full: bool, sample: int,
                  rng: random.Random, report: Report) -> None:
    n = len(entries)
    if n == 0:
        return
    chosen = list(range(n)) if full or sample >= n else sorted(rng.sample(range(n), sample))
    what = f"all {n:,}" if len(chosen) == n else f"a random sample of {len(chosen):,} of {n:,}"
    missing = [i for i in chosen if not (root / entries.paths[i]).is_file()]
    name = entries.file.name
    if missing:
        dirs = " and ".join(d + "/" for d in bench.image_dirs)
        report.add("error", f"{name}: {len(missing):,} of {what} listed images are missing under {root} (is it the "
                            f"folder that holds {dirs}?):"
                            + _examples([f"{entries.paths[i]} ({entries.where(i)})" for i in missing[:SHOWN]],
                                        len(missing)))
    else:
        report.add("ok", f"{name}: {what} listed images are present")
    gone = set(missing)
    present = [i for i in chosen if i not in gone]
    broken = _undecodable(root, entries, present)
    if broken:
        report.add("error", f"{name}: {len(broken):,} of {len(present):,} images do not decode (truncated or not "
                            f"images); restore them from the original archive:"
                            + _examples([f"{entries.paths[i]} ({entries.where(i)}): {why}" for i, why in broken[:SHOWN]],
                                        len(broken)))
    elif present:
        report.add("ok", f"{name}: {len(present):,} images decode")


def _undecodable(root: Path, entries: SplitList, indices: list[int]) -> list[tuple[int, str]]:
    """(index, why) for the images of ``indices`` that do not read or decode; decoded in DataLoader
    workers (at least one, so that a decoder that crashes cannot take `data check` down with it)."""
    from .images import loader_workers, undecodable

    if not indices:
        return []
    return undecodable(root, entries.paths, indices, min(loader_workers(), max(1, len(indices) // 64)))


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(name: str, root: Path, split_root: Path | None = None, download: bool = True) -> Report:
    """Explain where benchmark ``name``'s data comes from and where it goes; perform the steps that
    need no login and no large archive (download published split lists, build lists from annotation
    files, sort ImageNet's validation images); report what is still missing."""
    bench = _benchmark(name)
    root = Path(root)
    if hasattr(bench, "make_splits"):  # a user's own images: nothing to fetch, say how to lay them out
        return _prepare_own_images(bench, root, split_root)
    if not isinstance(bench, SplitFileBenchmark):
        report = Report(f"{bench.title}: data in {root}")
        try:
            splits = bench.load(dict(bench.params), root, download=True)
            report.add("ok", f"ready: {len(splits.train):,} training images of {splits.num_classes} classes")
        except LtbenchError as exc:
            report.add("error", str(exc))
        return report
    split_dir = Path(split_root or root)
    report = Report(f"{bench.title}: images in {root}, split lists in {split_dir}")
    report.add("info", bench.images_help.replace("ROOT", str(root)))
    report.add("info", f"{bench.splits_help} They go in {split_dir} (--split-root, default the data root).")
    for path in bench.split_paths(split_dir).values():
        if not path.is_file() and path.name in bench.public_split_files:
            _fetch_split_file(bench, path, download, report)
    for done in bench.prepare_local(root, split_dir):
        report.add("ok", done)
    for path in bench.split_paths(split_dir).values():
        if path.is_file():
            report.add("ok", f"{path.name} is in place")
        else:
            report.add("error", f"{path.name} is missing from {split_dir} (see above where to get it)")
    for folder in bench.image_dirs:
        if (root / folder).is_dir():
            report.add("ok", f"{root / folder}/ is in place")
        else:
            report.add("error", f"{root / folder}/ is missing (see above where to get the images)")
    hint = f" --split-root {split_dir}" if split_root else ""
    report.add("info", f"Then `ltbench data check {bench.name} --root {root}{hint}` verifies the copy.")
    return report


def _prepare_own_images(bench: Any, root: Path, split_root: Path | None) -> Report:
    report = Report(f"{bench.title}: data in {root}")
    report.add("info", bench.images_help.replace("ROOT", str(root)))
    try:
        source = bench.scan(root, split_root)
    except LtbenchError as exc:
        report.add("error", str(exc))
        return report
    found = ", ".join(f"{len(e):,} {s}" for s, e in source.lists.items())
    report.add("ok", f"found {len(source.classes)} classes: {found} images")
    hint = f" --split-root {split_root}" if split_root else ""
    report.add("info", f"Then `ltbench data check {bench.name} --root {root}{hint}` checks them.")
    return report


def _fetch_split_file(bench: SplitFileBenchmark, target: Path, download: bool, report: Report) -> None:
    url = f"{os.environ.get('LTBENCH_SPLIT_URL', SPLIT_URL).rstrip('/')}/{bench.public_split_files[target.name]}"
    if not download:
        report.add("info", f"{target.name}: not downloaded (--no-download); it is published at {url}")
        return
    try:
        with download_into(target.parent):  # a failed download leaves no folder or partial file
            target.parent.mkdir(parents=True, exist_ok=True)
            n = _download_split_file(bench, url, target)
        report.add("ok", f"downloaded {target.name} ({n:,} images) from {url}")
    except (OSError, ValueError) as exc:
        report.add("warn", f"could not download {target.name} from {url} ({exc}); put it in {target.parent} by hand.")


def _download_split_file(bench: SplitFileBenchmark, url: str, target: Path) -> int:
    """Download a published split list to ``target`` (atomically) and check it; its line count."""
    fd, tmp_name = temp_file(target.parent, target.name)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            shutil.copyfileobj(response, out)
        entries, problems = read_split_file(tmp, bench.num_classes, max_problems=1)
        split = next(s for s, n in bench.split_files.items() if n == target.name)
        facts = bench.published[split]
        if problems or len(entries) != facts.lines:
            raise ValueError(f"the file at that address is not the published list ({len(entries):,} images, "
                             f"expected {facts.lines:,})")
        os.replace(tmp, target)
        return len(entries)
    finally:
        tmp.unlink(missing_ok=True)
