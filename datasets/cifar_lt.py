"""CIFAR-10-LT and CIFAR-100-LT (Cao et al. 2019), read from the standard CIFAR python files.

The files live under --data-root in torchvision's layout (``cifar-10-batches-py/``,
``cifar-100-python/``); they are downloaded through torchvision when missing and the network allows.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ltbench.data.benchmark import Benchmark, check_imbalance, download_into, lt_counts
from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks
from ltbench.spec.schema import settings_of

if TYPE_CHECKING:
    from ltbench.data.splits import Splits


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What a protocol-2 pickle written by Python 3 calls (as _codecs.encode) to rebuild a bytes object."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ARRAY = np.zeros(1, dtype=np.uint8)
_RECONSTRUCT: Callable[..., Any] = _ARRAY.__reduce__()[0]  # numpy's own rebuilders, whatever module holds them
_FROM_BUFFER: Callable[..., Any] = _ARRAY.__reduce_ex__(5)[0]
CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    # numpy arrays: numpy < 2 names its rebuilders numpy.core.*, numpy >= 2 numpy._core.* (each reads both)
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROM_BUFFER,  # pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"): _FROM_BUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,  # bytes in a protocol-2 pickle written by Python 3
}


class NotCifarError(pickle.UnpicklingError):
    """A pickle that names something a CIFAR file never holds (it was not loaded)."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.what = f"{module}.{name}"


class CifarUnpickler(pickle.Unpickler):
    """Reads the CIFAR python files (dicts of str, bytes, lists and numpy arrays), and nothing else: a
    pickle can name any importable callable and have it called while it loads; this one refuses every
    name but numpy's array rebuilders (CIFAR_GLOBALS), so a crafted file runs nothing."""

    def __init__(self, file: Any):
        super().__init__(file, encoding="latin1")  # the real files are Python 2 pickles

    def find_class(self, module: str, name: str) -> Any:
        try:
            return CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise NotCifarError(module, name) from None


def lt_indices(labels: np.ndarray, counts: list[int], subset: str, val_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the LT training subset and of the validation split carved from the images it
    left unused.

    subset "cao": with numpy seed 0, each class's indices (classes in label order) are shuffled and
    the first n_i kept (Cao et al.'s code); "first": the first n_i images of each class in file
    order (the WB authors' code). Validation takes up to ``val_per_class`` of the images that follow
    in the same order, so it never overlaps the training subset.
    """
    if subset not in ("cao", "first"):
        raise ValueError(f"unknown CIFAR-LT subset {subset!r}")
    rng = np.random.RandomState(0)
    train, val = [], []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        if subset == "cao":
            rng.shuffle(idx)
        train.append(idx[:n])
        val.append(idx[n:n + val_per_class])
    return np.concatenate(train), np.concatenate(val)


# The std of ShadeAlsha/LTR-weight-balancing, utils/dataset_CIFAR100LT.py (transforms.Normalize with CIFAR-10's
# mean (0.4914, 0.4822, 0.4465) and this std, on CIFAR-100-LT; SADE's CIFAR loaders use the same pair). It is
# not CIFAR-10's per-pixel std (0.2470, 0.2435, 0.2616): normalization=cifar10 keeps meaning that, and
# normalization=wb_code means this.
WB_CODE_STD = (0.2023, 0.1994, 0.2010)


class _CifarLT(Benchmark):
    in_channels = 3
    default_backbone = "resnet32"
    recipe_family = "cifar"
    # report: the number a table shows, the test accuracy or its average over each image and its mirror
    # image (the WB authors' code)
    # normalization: the benchmark's own mean/std, CIFAR-10's, or those of the WB authors' code (WB_CODE_STD)
    choices = {"subset": ("cao", "first"), "normalization": ("own", "cifar10", "wb_code"),
               "report": ("test", "test_flip_avg")}
    normalization_keys = ("normalization",)
    folder: ClassVar[str]
    train_files: ClassVar[list[str]]
    test_files: ClassVar[list[str]]
    label_key: ClassVar[str]
    n_max: ClassVar[int]
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]
    tv_class: ClassVar[str]
    archive: ClassVar[str]
    meta_file: ClassVar[str]  # the file of class names, and its key
    names_key: ClassVar[str]

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)
        check_imbalance(self.name, params["imbalance"], self.n_max, self.num_classes)
        if params["val_per_class"] < 0:
            raise LtbenchError(f"{self.name}: data.val_per_class={params['val_per_class']} must not be negative.")

    def normalization(self, params: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
        """Mean and std of the inputs: the benchmark's own (``normalization=own``), CIFAR-10's
        (``cifar10``), or the constants of the WB authors' code (``wb_code``: CIFAR-10's mean with the
        std WB_CODE_STD, for CIFAR-10 and CIFAR-100 alike)."""
        value = settings_of(params).normalization
        if value == "cifar10":
            return {"mean": Cifar10LT.mean, "std": Cifar10LT.std}
        if value == "wb_code":
            return {"mean": Cifar10LT.mean, "std": WB_CODE_STD}
        return {"mean": self.mean, "std": self.std}

    def label(self, params: dict[str, Any]) -> str:
        text = f"{self.title} IR{params['imbalance']:g}"
        return text + (" (first-n subset)" if params["subset"] == "first" else "")

    def read_class_names(self, params: dict[str, Any], data_root: Path,
                         split_root: Path | None = None) -> list[str] | None:
        """The names in the dataset's meta file (``batches.meta`` label_names, ``meta`` fine_label_names);
        None when that file is not there."""
        path = Path(data_root) / self.folder / self.meta_file
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as f:
                names = CifarUnpickler(f).load()[self.names_key]
        except (NotCifarError, pickle.UnpicklingError, OSError, EOFError, KeyError, TypeError, ValueError) as exc:
            raise LtbenchError(f"{path} is not a readable CIFAR meta file ({type(exc).__name__}); delete it and "
                               f"download the python version of {self.title[:-3]} again.") from None
        if not isinstance(names, list) or len(names) != self.num_classes:
            raise LtbenchError(f"{path}: {self.names_key} is not a list of {self.num_classes} class names; delete it "
                               f"and download the python version of {self.title[:-3]} again.")
        return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(path, "rb") as f:
                d = CifarUnpickler(f).load()
            data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(d[self.label_key], dtype=np.int64)
        except FileNotFoundError:
            raise
        except NotCifarError as exc:
            raise LtbenchError(
                f"{path} is not a CIFAR python file: it asks to load {exc.what}, which no CIFAR file holds (refused; "
                f"nothing in it was run). Delete it and download the python version of {self.title[:-3]} again "
                f"(or let ltbench download it)."
            ) from None
        except Exception as exc:
            raise LtbenchError(
                f"{path} is not a readable CIFAR python file ({type(exc).__name__}: {exc}). Delete it and "
                f"download the python version of {self.title[:-3]} again (or let ltbench download it)."
            ) from exc
        if len(data) != len(labels) or (len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes)):
            raise LtbenchError(f"{path}: {len(data)} images, {len(labels)} labels, label range "
                               f"{labels.min() if len(labels) else '-'}..{labels.max() if len(labels) else '-'}; "
                               f"expected one label in 0..{self.num_classes - 1} per image. Re-download the file.")
        return data, labels

    def check_data(self, params: dict[str, Any], data_root: Path, download: bool = True,
                   split_root: Path | None = None) -> None:
        if not download:  # with downloading on, a missing file is fetched when the run starts
            self._files(Path(data_root), False)

    def _files(self, root: Path, download: bool) -> Path:
        folder = root / self.folder
        missing = [f for f in self.train_files + self.test_files if not (folder / f).is_file()]
        if not missing:
            return folder
        reason = "downloading is off (--no-download)"
        if download:
            import torchvision

            try:
                with download_into(root):
                    for train in (True, False):
                        getattr(torchvision.datasets, self.tv_class)(str(root), train=train, download=True)
                return folder
            except Exception as exc:  # no network, a refused host, a bad archive...
                reason = f"the download failed ({type(exc).__name__}: {exc})"
        raise LtbenchError(
            f"{self.title[:-3]} files not found: {folder} lacks {', '.join(missing)}, and {reason}. "
            f"Put the python version of {self.title[:-3]} there (the extracted folder {self.folder}/ of "
            f"{self.archive} from the CIFAR site), or point --data-root at the "
            f"directory that contains {self.folder}/."
        )

    def load(self, params: dict[str, Any], data_root: Path, download: bool = True,
             split_root: Path | None = None) -> Splits:
        import torch

        from ltbench.data.splits import Augment, ImageSet, ShotRule, Splits

        folder = self._files(Path(data_root), download)
        parts = [self._read(folder / f) for f in self.train_files]
        x_train = np.concatenate([p[0] for p in parts])
        y_train = np.concatenate([p[1] for p in parts])
        x_test, y_test = self._read(folder / self.test_files[0])
        if len(y_train) != self.num_classes * self.n_max:
            raise LtbenchError(f"{folder}: the training files hold {len(y_train)} images, expected "
                               f"{self.num_classes * self.n_max}. Re-download {self.folder}.")
        counts = lt_counts(self.n_max, self.num_classes, params["imbalance"])
        tr, va = lt_indices(y_train, counts, params["subset"], params["val_per_class"])
        val_counts = np.bincount(y_train[va], minlength=self.num_classes).tolist()
        return Splits(
            train=ImageSet(torch.from_numpy(x_train[tr]), torch.from_numpy(y_train[tr]), "train"),
            val=ImageSet(torch.from_numpy(x_train[va]), torch.from_numpy(y_train[va]), "val"),
            test=ImageSet(torch.from_numpy(x_test), torch.from_numpy(y_test), "test"),
            num_classes=self.num_classes, **self.normalization(params), augment=Augment(4, True),
            shot_rule=ShotRule(100, 20),
            info={"train_size": int(len(tr)), "val_counts": val_counts,
                  "val_source": "CIFAR training images unused by the LT subset",
                  "test_source": "the full CIFAR test set"},
        )


@benchmarks.register()
class Cifar10LT(_CifarLT):
    name = "cifar10_lt"
    title = "CIFAR-10-LT"
    num_classes = 10
    params = {"imbalance": 100.0, "subset": "cao", "val_per_class": 100, "normalization": "own", "report": "test"}
    folder = "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    test_files = ["test_batch"]
    label_key = "labels"
    n_max = 5000
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    tv_class = "CIFAR10"
    archive = "cifar-10-python.tar.gz"
    meta_file = "batches.meta"
    names_key = "label_names"


@benchmarks.register()
class Cifar100LT(_CifarLT):
    name = "cifar100_lt"
    title = "CIFAR-100-LT"
    num_classes = 100
    params = {"imbalance": 100.0, "subset": "cao", "val_per_class": 20, "normalization": "own", "report": "test"}
    folder = "cifar-100-python"
    train_files = ["train"]
    test_files = ["test"]
    label_key = "fine_labels"
    n_max = 500
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    tv_class = "CIFAR100"
    archive = "cifar-100-python.tar.gz"
    meta_file = "meta"
    names_key = "fine_label_names"
