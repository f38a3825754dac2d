"""The interface a benchmark plugin implements."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import LtbenchError

DATA_ENV = "LTBENCH_DATA"  # the environment variable that names the data root (--data-root's default)


DEFAULT_BENCHMARK = "digits_lt"  # what `ltbench run` trains without --dataset (embedded, no download)


def default_data_root() -> Path:
    """Where the datasets live unless --data-root says: $LTBENCH_DATA, else ./data."""
    return Path(os.environ.get(DATA_ENV, "data"))

if TYPE_CHECKING:
    from .splits import Splits


class Benchmark:
    """A benchmark: a name, its parameters (with defaults), how to label an instance of it, and how
    to load its splits. Subclasses register with ``@benchmarks.register()``."""

    name: ClassVar[str]
    title: ClassVar[str]  # human name, e.g. "CIFAR-100-LT"
    num_classes: ClassVar[int]
    in_channels: ClassVar[int] = 3
    default_backbone: ClassVar[str]
    recipe_family: ClassVar[str]  # key into the recipe tables ("cifar", "digits", ...)
    params: ClassVar[dict[str, Any]] = {}  # benchmark parameters and their defaults
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}  # allowed values of enumerated parameters
    # At a backbone's resolution (ltbench.data.resolution) LIFT's transforms replace the benchmark's own image
    # pipeline and a pretrained backbone's mean/std its normalisation: the parameters of those (refused there
    # when changed from their defaults, as they would do nothing).
    transform_keys: ClassVar[tuple[str, ...]] = ()
    normalization_keys: ClassVar[tuple[str, ...]] = ()
    # The tuning of a pretrained backbone's training stages where nothing else sets it (imagefolder: linear),
    # and the from-scratch backbone the run-start line names as the alternative (ltbench.spec.inputs).
    pretrained_tuning: ClassVar[str | None] = None
    scratch_backbone: ClassVar[str | None] = None

    def check_params(self, params: dict[str, Any]) -> None:
        """Reject impossible parameter values before anything runs (raise LtbenchError)."""
        for key, allowed in self.choices.items():
            if key in params and params[key] not in allowed:
                raise LtbenchError(
                    f"{self.name}: data.{key}={params[key]!r} is not one of {', '.join(map(repr, allowed))}."
                )

    def data_params(self, data_root: Path, split_root: Path | None) -> dict[str, Any]:
        """Parameter values that identify the data under ``data_root`` (e.g. a fingerprint of a user's
        image folder), filled in when a spec is resolved with a data root, so that different data never
        share a run id although paths are never part of a spec. Default: none (the name fixes the data)."""
        return {}

    def check_data(self, params: dict[str, Any], data_root: Path, download: bool = True,
                   split_root: Path | None = None) -> None:
        """Raise the LtbenchError that ``load`` would raise for data that is not there and cannot be
        fetched (cheaply: no decoding), so that --dry-run, sweeps and launchers refuse it before anything
        is written or submitted. Default: nothing to check (embedded data)."""

    def label(self, params: dict[str, Any]) -> str:
        """The column header of this benchmark instance in tables."""
        return self.title

    def read_class_names(self, params: dict[str, Any], data_root: Path,
                         split_root: Path | None = None) -> list[str] | None:
        """Readable class names, item i naming label i, from the dataset's own files under ``data_root``
        (split lists under ``split_root`` where the benchmark has them); None where the benchmark cannot
        say them. The engine records them in result.json (``class_names``) when a run finishes, so
        reports of a finished run need no data root. Default: unknown."""
        return None

    def load(self, params: dict[str, Any], data_root: Path, download: bool = True,
             split_root: Path | None = None) -> Splits:
        """The splits, from files under ``data_root`` (split lists under ``split_root`` where the
        benchmark has them). Raise LtbenchError when files are missing or malformed."""
        raise NotImplementedError


def lt_counts(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """Per-class counts of the exponential long tail of Cao et al. 2019, computed as their code does:
    n_i = int(n_max * (1/IR) ** (i / (C - 1)))."""
    factor = 1.0 / imbalance
    return [int(n_max * (factor ** (i / (num_classes - 1.0)))) for i in range(num_classes)]


def check_imbalance(name: str, imbalance: float, n_max: int, num_classes: int) -> None:
    """Refuse an imbalance ratio below 1, not finite, or so large that ``lt_counts`` leaves a class
    with no training image (saying which class, and the largest ratio that keeps one image in each)."""
    if not (imbalance >= 1 and math.isfinite(imbalance)):
        raise LtbenchError(f"{name}: imbalance ratio {imbalance:g} is below 1 or not finite; it is n_max / n_min, "
                           f"e.g. --imbalance 100.")
    empty = [i for i, n in enumerate(lt_counts(n_max, num_classes, imbalance)) if n < 1]
    if empty:
        largest = float(n_max)
        while min(lt_counts(n_max, num_classes, largest)) < 1:
            largest = math.nextafter(largest, 0.0)
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise LtbenchError(f"{name}: imbalance ratio {imbalance:g} leaves class {empty[0]}{more} with no training "
                           f"image (n_i = int({n_max} * IR^(-i/{num_classes - 1}))); the largest ratio that keeps "
                           f"one image per class is {largest:g}: pass --imbalance {largest:g} or less.")


@contextmanager
def download_into(folder: Path) -> Iterator[None]:
    """Around a download into ``folder``: when it fails, remove what it left (the folders it created,
    or the entries it added to a folder that was there: a partial archive), so that a failed download
    leaves no empty or partial data behind. The exception goes on."""
    top = Path(folder).absolute()
    while not top.parent.exists():
        top = top.parent
    before = set(os.listdir(folder)) if Path(folder).is_dir() else None
    try:
        yield
    except BaseException:
        if before is None:
            shutil.rmtree(top, ignore_errors=True)
        else:
            for name in set(os.listdir(folder)) - before:
                path = Path(folder) / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise


def class_names_missing(bench: Benchmark, params: dict[str, Any], data_root: Path, method: str) -> str:
    """The one-line error of a method that reads class names (CLIP text features) on a benchmark instance that
    gives none under ``data_root``: which file it reads them from, where it goes (CIFAR's meta file)."""
    meta, folder = getattr(bench, "meta_file", None), getattr(bench, "folder", None)
    where = (f"{Path(data_root) / folder / meta} is missing: put the python version's {folder}/{meta} there (the "
             "torchvision download and the dataset's archive bring it)") if meta and folder else \
        "the benchmark gives none (Benchmark.read_class_names)"
    return f"{method} needs the class names of {bench.label(params)} (for CLIP's text features), and {where}."
