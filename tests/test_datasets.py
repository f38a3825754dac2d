"""Benchmark data: CIFAR-LT subsets and splits (on synthetic CIFAR files in torchvision's layout),
digits-LT, batched augmentation and epoch sampling."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cifar_files import class_colours, decode_index, folder_name, write_cifar

from ltbench.data.benchmark import lt_counts
from ltbench.data.splits import Augment, ShotRule, Splits, random_crop_flip, sample_indices
from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks
from ltbench.spec.run_spec import resolve

BENCHMARK = {"cifar10": "cifar10_lt", "cifar100": "cifar100_lt"}
N_MAX = {"cifar10": 5000, "cifar100": 500}
CLASSES = {"cifar10": 10, "cifar100": 100}
TRAIN_FILES = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)], "cifar100": ["train"]}
TEST_FILE = {"cifar10": "test_batch", "cifar100": "test"}
LABEL_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}
KINDS = ["cifar10", "cifar100"]


# ---------------------------------------------------------------------------------------------
# fixtures and independent reference implementations


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar(root, "cifar10")
    return root


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar(root, "cifar100")
    return root


@pytest.fixture(scope="session")
def roots(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """kind -> root of that kind's synthetic files (generated on first use, once per session)."""
    return lambda kind: request.getfixturevalue(f"{kind}_root")


@pytest.fixture(scope="session")
def load(roots: Callable[[str], Path]) -> Callable[..., Splits]:
    """Load a CIFAR-LT benchmark through the registry with the defaults overridden by ``params``.
    The few most recent loads are kept (the tests only read the splits), to save time, not memory."""
    cache: dict[tuple[Any, ...], Splits] = {}

    def _load(kind: str, **params: Any) -> Splits:
        key = (kind, tuple(sorted(params.items())))
        if key not in cache:
            bench = benchmarks.get(BENCHMARK[kind])()
            cache[key] = bench.load({**bench.params, **params}, roots(kind), download=False)
            while len(cache) > 4:
                del cache[next(iter(cache))]
        return cache[key]

    return _load


@pytest.fixture(scope="session")
def file_data(roots: Callable[[str], Path]) -> Callable[[str, str], tuple[np.ndarray, np.ndarray]]:
    """(kind, "train" | "test") -> (data (N, 3072), labels) read straight from the pickles, the
    training files concatenated in order."""
    cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def _read(kind: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        if (kind, split) not in cache:
            folder = roots(kind) / folder_name(kind)
            names = TRAIN_FILES[kind] if split == "train" else [TEST_FILE[kind]]
            xs, ys = [], []
            for name in names:
                with open(folder / name, "rb") as f:
                    d = pickle.load(f, encoding="latin1")
                xs.append(d["data"])
                ys.append(np.asarray(d[LABEL_KEY[kind]]))
            cache[(kind, split)] = (np.concatenate(xs), np.concatenate(ys))
        return cache[(kind, split)]

    return _read


def cao_counts(img_max: int, cls_num: int, imbalance: float) -> list[int]:
    """Per-class counts as written in Cao et al.'s get_img_num_per_cls (imb_factor = 1 / IR)."""
    imb_factor = 1.0 / imbalance
    return [int(img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))) for cls_idx in range(cls_num)]


def reference_orders(labels: np.ndarray, subset: str) -> list[np.ndarray]:
    """Each class's file indices in the order the subset takes them. "cao": Cao et al.'s
    gen_imbalanced_data (np.random.seed(0), then per class in label order np.random.shuffle of that
    class's indices); "first": file order. The global numpy state is restored afterwards."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        orders = []
        for the_class in np.unique(labels):
            idx = np.where(labels == the_class)[0]
            if subset == "cao":
                np.random.shuffle(idx)
            orders.append(idx)
    finally:
        np.random.set_state(state)
    return orders


def reference_split(labels: np.ndarray, kind: str, imbalance: float, subset: str,
                    val_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected (train, val) file indices: the first n_i of each class's order for training, the
    next ``val_per_class`` (or fewer, if fewer are left) for validation."""
    counts = cao_counts(N_MAX[kind], CLASSES[kind], imbalance)
    orders = reference_orders(labels, subset)
    train = np.concatenate([o[:n] for o, n in zip(orders, counts, strict=True)])
    val = np.concatenate([o[n:n + val_per_class] for o, n in zip(orders, counts, strict=True)])
    return train, val


# ---------------------------------------------------------------------------------------------
# the synthetic files themselves


@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_files_look_like_cifar(kind: str, roots: Callable[[str], Path],
                                         file_data: Callable[[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    folder = roots(kind) / folder_name(kind)
    meta = "batches.meta" if kind == "cifar10" else "meta"
    assert sorted(p.name for p in folder.iterdir()) == sorted(TRAIN_FILES[kind] + [TEST_FILE[kind], meta])
    with open(folder / TRAIN_FILES[kind][0], "rb") as f:
        d = pickle.load(f, encoding="latin1")
    keys = {"data", "filenames", "batch_label"} | ({"labels"} if kind == "cifar10" else {"fine_labels", "coarse_labels"})
    assert set(d) == keys
    assert d["data"].dtype == np.uint8 and d["data"].shape[1] == 3072
    assert isinstance(d[LABEL_KEY[kind]], list) and len(d["filenames"]) == len(d["data"])
    x, y = file_data(kind, "train")
    assert x.shape == (50000, 3072)
    assert np.bincount(y).tolist() == [N_MAX[kind]] * CLASSES[kind]
    assert not np.all(np.diff(y) >= 0)  # shuffled, not sorted
    np.testing.assert_array_equal(decode_index(x), np.arange(50000))
    xt, yt = file_data(kind, "test")
    assert xt.shape == (10000, 3072)
    assert np.bincount(yt).tolist() == [10000 // CLASSES[kind]] * CLASSES[kind]
    # each image is its class colour plus noise 0..15 (away from the index bytes)
    some = slice(None, None, 7)
    body = x[some].reshape(-1, 3, 1024)[:, :, 100:].astype(np.int16) - class_colours(kind)[y[some]][:, :, None]
    assert body.min() >= 0 and body.max() <= 15


def test_write_cifar_is_deterministic(tmp_path: Path) -> None:
    a = write_cifar(tmp_path / "a", "cifar100", images_per_class_train=3)
    b = write_cifar(tmp_path / "b", "cifar100", images_per_class_train=3)
    c = write_cifar(tmp_path / "c", "cifar100", images_per_class_train=3, seed=1)
    for name in ("train", "test", "meta"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "train").read_bytes() != (c / "train").read_bytes()


# ---------------------------------------------------------------------------------------------
# CIFAR-LT training subsets


TRAIN_SIZES = {
    "cifar10": {10: 20431, 50: 13996, 100: 12406, 200: 11203},
    "cifar100": {10: 19573, 50: 12608, 100: 10847, 200: 9502},
}


@pytest.mark.parametrize(("kind", "imbalance", "size"),
                         [(k, ir, n) for k, sizes in TRAIN_SIZES.items() for ir, n in sizes.items()])
def test_lt_train_sizes_match_reference(kind: str, imbalance: int, size: int, load: Callable[..., Splits]) -> None:
    splits = load(kind, imbalance=float(imbalance))
    assert len(splits.train) == size
    assert splits.info["train_size"] == size
    expected = cao_counts(N_MAX[kind], CLASSES[kind], imbalance)
    assert sum(expected) == size
    assert lt_counts(N_MAX[kind], CLASSES[kind], imbalance) == expected
    assert splits.class_counts == expected
    assert splits.class_counts[0] == N_MAX[kind]
    assert splits.class_counts[-1] == N_MAX[kind] // imbalance
    assert splits.num_classes == CLASSES[kind]


def test_lt_counts_cifar10_ir100_known_values() -> None:
    assert lt_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert lt_counts(500, 100, 1) == [500] * 100


@pytest.mark.parametrize(("imbalance", "sizes"), [(100, (35, 35, 30)), (50, (41, 41, 18)), (10, (69, 31, 0))])
def test_cifar100_many_medium_few(imbalance: int, sizes: tuple[int, int, int], load: Callable[..., Splits]) -> None:
    splits = load("cifar100", imbalance=float(imbalance))
    assert splits.shot_rule == ShotRule(100, 20)
    groups = splits.shot_rule.groups(splits.class_counts)
    assert (len(groups["many"]), len(groups["medium"]), len(groups["few"])) == sizes
    # the tail is exponential in label order, so the groups are consecutive label ranges
    assert groups["many"] + groups["medium"] + groups["few"] == list(range(100))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("imbalance", [100.0, 10.0])
def test_cao_subset_matches_reference(kind: str, imbalance: float, load: Callable[..., Splits],
                                      file_data: Callable[[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    x_file, y_file = file_data(kind, "train")
    splits = load(kind, imbalance=imbalance)  # subset "cao" is the default
    expected, _ = reference_split(y_file, kind, imbalance, "cao", 0)
    got = decode_index(splits.train.x.numpy())
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(splits.train.y.numpy(), y_file[expected])
    # the images are the file's images, byte for byte, in (N, 3, 32, 32) layout
    assert splits.train.x.dtype == torch.uint8 and splits.train.x.shape[1:] == (3, 32, 32)
    np.testing.assert_array_equal(splits.train.x.numpy().reshape(len(got), -1), x_file[expected])
    # a shuffle happened: within a tail class the kept indices are not the first ones in file order
    tail = np.where(y_file == CLASSES[kind] - 1)[0]
    n_tail = splits.class_counts[-1]
    assert not np.array_equal(np.sort(got[splits.train.y.numpy() == CLASSES[kind] - 1]), tail[:n_tail])


@pytest.mark.parametrize("kind", KINDS)
def test_first_subset_keeps_first_n_in_file_order(kind: str, load: Callable[..., Splits],
                                                  file_data: Callable[[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    _, y_file = file_data(kind, "train")
    splits = load(kind, subset="first")
    counts = cao_counts(N_MAX[kind], CLASSES[kind], 100)
    expected = np.concatenate([np.where(y_file == c)[0][:n] for c, n in enumerate(counts)])
    np.testing.assert_array_equal(decode_index(splits.train.x.numpy()), expected)
    np.testing.assert_array_equal(splits.train.y.numpy(), y_file[expected])
    assert splits.class_counts == counts
    # same class counts as "cao", different images
    cao = load(kind)
    assert cao.class_counts == splits.class_counts
    assert not np.array_equal(decode_index(cao.train.x.numpy()), expected)
    assert benchmarks.get(BENCHMARK[kind])().label({"imbalance": 100.0, "subset": "first"}).endswith("(first-n subset)")


# ---------------------------------------------------------------------------------------------
# validation and test splits


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("subset", ["cao", "first"])
@pytest.mark.parametrize("imbalance", [100.0, 1.05])
def test_val_split(kind: str, subset: str, imbalance: float, load: Callable[..., Splits],
                   file_data: Callable[[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    _, y_file = file_data(kind, "train")
    vpc = {"cifar10": 100, "cifar100": 20}[kind]
    assert benchmarks.get(BENCHMARK[kind])().params["val_per_class"] == vpc
    splits = load(kind, imbalance=imbalance, subset=subset)
    train = decode_index(splits.train.x.numpy())
    val = decode_index(splits.val.x.numpy())
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert len(np.unique(val)) == len(val)
    _, expected_val = reference_split(y_file, kind, imbalance, subset, vpc)
    np.testing.assert_array_equal(val, expected_val)
    np.testing.assert_array_equal(splits.val.y.numpy(), y_file[val])
    counts = cao_counts(N_MAX[kind], CLASSES[kind], imbalance)
    expected_counts = [min(vpc, N_MAX[kind] - n) for n in counts]
    assert expected_counts[0] == 0  # the head class keeps all its images for training
    assert splits.val.class_counts(CLASSES[kind]) == expected_counts
    assert splits.info["val_counts"] == expected_counts
    if imbalance < 2:  # some classes have fewer than vpc images left over
        assert 0 < min(expected_counts[1:]) < vpc
    else:
        assert expected_counts[1:] == [vpc] * (CLASSES[kind] - 1)


@pytest.mark.parametrize("vpc", [0, 5, 450])
def test_val_per_class_is_configurable(vpc: int, load: Callable[..., Splits],
                                       file_data: Callable[[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    _, y_file = file_data("cifar100", "train")
    splits = load("cifar100", val_per_class=vpc)
    counts = cao_counts(500, 100, 100)
    expected_counts = [min(vpc, 500 - n) for n in counts]
    assert splits.info["val_counts"] == expected_counts
    assert splits.val.class_counts(100) == expected_counts
    assert len(splits.val) == sum(expected_counts)
    assert splits.class_counts == counts  # the training subset does not depend on val_per_class
    _, expected_val = reference_split(y_file, "cifar100", 100.0, "cao", vpc)
    np.testing.assert_array_equal(decode_index(splits.val.x.numpy()), expected_val)


def test_val_per_class_through_spec(cifar100_root: Path) -> None:
    spec = resolve("ce", "cifar100_lt", sets=["data.val_per_class=7"])
    assert spec.data["val_per_class"] == 7 and spec.origins["data.val_per_class"] == "--set"
    splits = benchmarks.get("cifar100_lt")().load(spec.data, cifar100_root, download=False)
    assert splits.info["val_counts"] == [0] + [7] * 99
    assert len(splits.val) == 99 * 7


@pytest.mark.parametrize("kind", KINDS)
def test_test_split_is_full_test_file(kind: str, load: Callable[..., Splits],
                                      file_data: Callable[[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    x_file, y_file = file_data(kind, "test")
    for params in ({}, {"imbalance": 10.0, "subset": "first"}):
        splits = load(kind, **params)
        assert len(splits.test) == 10000
        np.testing.assert_array_equal(splits.test.y.numpy(), y_file)
        np.testing.assert_array_equal(splits.test.x.numpy().reshape(10000, -1), x_file)
        assert splits.test.class_counts(CLASSES[kind]) == [10000 // CLASSES[kind]] * CLASSES[kind]
    assert splits.augment == Augment(4, True)
    assert splits.info["test_source"] == "the full CIFAR test set"


# ---------------------------------------------------------------------------------------------
# CIFAR-LT errors


def _bench(kind: str) -> Any:
    return benchmarks.get(BENCHMARK[kind])()


@pytest.fixture(scope="session")
def small_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Roots of well-formed files with 2 training images per class (cheap to read before a broken
    file; the loader reads every file before it checks the training-set size)."""
    out = {}
    for kind in KINDS:
        out[kind] = tmp_path_factory.mktemp(f"small_{kind}")
        write_cifar(out[kind], kind, images_per_class_train=2)
    return out


def _partial_root(tmp_path: Path, src_root: Path, kind: str, skip: str) -> Path:
    """A root whose dataset folder links to the files under ``src_root``, except ``skip``."""
    src = src_root / folder_name(kind)
    dst = tmp_path / folder_name(kind)
    dst.mkdir(parents=True)
    for name in TRAIN_FILES[kind] + [TEST_FILE[kind]]:
        if name != skip:
            (dst / name).symlink_to(src / name)
    return dst


@pytest.mark.parametrize("kind", KINDS)
def test_missing_files_without_download(kind: str, tmp_path: Path) -> None:
    with pytest.raises(LtbenchError) as err:
        _bench(kind).load(dict(_bench(kind).params), tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / folder_name(kind)) in msg
    for name in TRAIN_FILES[kind] + [TEST_FILE[kind]]:
        assert name in msg
    assert "--no-download" in msg  # why nothing was fetched
    assert "--data-root" in msg and f"{folder_name(kind)}/" in msg  # how to fix it
    assert not (tmp_path / folder_name(kind)).exists()  # nothing was created


@pytest.mark.parametrize("kind", KINDS)
def test_one_missing_file_is_named(kind: str, tmp_path: Path, small_roots: dict[str, Path]) -> None:
    folder = _partial_root(tmp_path, small_roots[kind], kind, skip=TEST_FILE[kind])
    with pytest.raises(LtbenchError) as err:
        _bench(kind).load(dict(_bench(kind).params), tmp_path, download=False)
    msg = str(err.value)
    assert f"{folder} lacks {TEST_FILE[kind]}," in msg


def test_missing_cifar10_message_names_the_real_archive(tmp_path: Path) -> None:
    with pytest.raises(LtbenchError) as err:
        _bench("cifar10").load(dict(_bench("cifar10").params), tmp_path, download=False)
    assert "cifar-10-python.tar.gz" in str(err.value)


def test_missing_cifar100_message_names_the_real_archive(tmp_path: Path) -> None:
    with pytest.raises(LtbenchError, match=r"cifar-100-python\.tar\.gz"):
        _bench("cifar100").load(dict(_bench("cifar100").params), tmp_path, download=False)


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda good: good[: len(good) // 3],
    "random_bytes": lambda good: np.random.RandomState(0).bytes(4096),
    "empty": lambda good: b"",
    "text": lambda good: b"<html>404 Not Found</html>\n",
    "not_a_dict": lambda good: pickle.dumps([1, 2, 3], protocol=2),
    "no_labels": lambda good: pickle.dumps({"data": np.zeros((4, 3072), np.uint8)}, protocol=2),
    "bad_shape": lambda good: pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4,
                                            "fine_labels": [0] * 4}, protocol=2),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize(("kind", "which"), [("cifar100", "test"), ("cifar100", "train"),
                                             ("cifar10", "data_batch_3"), ("cifar10", "test_batch")])
def test_corrupt_file(kind: str, which: str, corruption: str, tmp_path: Path, small_roots: dict[str, Path]) -> None:
    folder = _partial_root(tmp_path, small_roots[kind], kind, skip=which)
    good = (small_roots[kind] / folder_name(kind) / which).read_bytes()
    (folder / which).write_bytes(CORRUPTIONS[corruption](good))
    with pytest.raises(LtbenchError) as err:
        _bench(kind).load(dict(_bench(kind).params), tmp_path, download=False)
    msg = str(err.value)
    assert str(folder / which) in msg
    assert "not a readable CIFAR python file" in msg
    assert "download" in msg  # says how to fix it


@pytest.mark.parametrize("bad", ["count", "label_range"])
def test_inconsistent_file(bad: str, tmp_path: Path, small_roots: dict[str, Path]) -> None:
    folder = _partial_root(tmp_path, small_roots["cifar100"], "cifar100", skip="test")
    n = 30
    labels = [0] * (n - 1) + [100] if bad == "label_range" else [0] * (n - 1)
    (folder / "test").write_bytes(pickle.dumps({"data": np.zeros((n, 3072), np.uint8), "fine_labels": labels}))
    with pytest.raises(LtbenchError) as err:
        _bench("cifar100").load(dict(_bench("cifar100").params), tmp_path, download=False)
    msg = str(err.value)
    assert str(folder / "test") in msg
    assert "expected one label in 0..99 per image" in msg
    assert (f"{n} images, {n - 1} labels" in msg) if bad == "count" else ("label range 0..100" in msg)


def test_wrong_number_of_training_images(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar100", images_per_class_train=3)
    with pytest.raises(LtbenchError) as err:
        _bench("cifar100").load(dict(_bench("cifar100").params), tmp_path, download=False)
    msg = str(err.value)
    assert "hold 300 images, expected 50000" in msg and str(tmp_path / "cifar-100-python") in msg


@pytest.mark.parametrize("benchmark", ["cifar100_lt", "cifar10_lt", "digits_lt"])
@pytest.mark.parametrize("imbalance", [0.5, 0.0, -10.0, float("nan")])
def test_imbalance_below_one_is_rejected(benchmark: str, imbalance: float) -> None:
    with pytest.raises(LtbenchError) as err:
        resolve("ce", benchmark, imbalance=imbalance)
    msg = str(err.value)
    finite = "expected a finite number" if imbalance != imbalance else "below 1"  # NaN: not a number to compare
    assert finite in msg and "--imbalance" in msg and benchmark in msg


def test_imbalance_one_is_accepted_and_balanced(load: Callable[..., Splits]) -> None:
    spec = resolve("ce", "cifar100_lt", imbalance=1)
    assert spec.data["imbalance"] == 1.0
    splits = load("cifar100", imbalance=1.0)
    assert splits.class_counts == [500] * 100
    assert len(splits.val) == 0 and splits.info["val_counts"] == [0] * 100


def test_unknown_subset_is_rejected() -> None:
    with pytest.raises(LtbenchError) as err:
        resolve("ce", "cifar100_lt", sets=["data.subset=foo"])
    msg = str(err.value)
    assert "data.subset='foo'" in msg and "'cao'" in msg and "'first'" in msg
    assert resolve("ce", "cifar100_lt", sets=["data.subset=first"]).data["subset"] == "first"


def test_negative_val_per_class_is_rejected() -> None:
    with pytest.raises(LtbenchError, match=r"val_per_class=-1 must not be negative"):
        resolve("ce", "cifar10_lt", sets=["data.val_per_class=-1"])


# ---------------------------------------------------------------------------------------------
# digits-LT


def _digits_keys(x: torch.Tensor, y: torch.Tensor) -> Counter[tuple[bytes, int]]:
    return Counter((img.tobytes(), int(lab)) for img, lab in zip(x.numpy(), y.numpy(), strict=True))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Splits, Splits, Path]:
    root = tmp_path_factory.mktemp("digits")
    bench = benchmarks.get("digits_lt")()
    first = bench.load(dict(bench.params), root, download=False)
    second = bench.load(dict(bench.params), root, download=False)
    return first, second, root


def test_digits_loads_without_files(digits: tuple[Splits, Splits, Path]) -> None:
    splits, _, root = digits
    assert list(root.iterdir()) == []  # read nothing from, wrote nothing to the data root
    assert splits.train.x.dtype == torch.uint8 and splits.train.x.shape[1:] == (1, 8, 8)
    assert splits.num_classes == 10


def test_digits_counts(digits: tuple[Splits, Splits, Path]) -> None:
    splits, _, _ = digits
    assert splits.class_counts == [100, 71, 51, 36, 26, 18, 13, 9, 6, 5]
    assert splits.class_counts == lt_counts(100, 10, 20)
    assert splits.info["train_size"] == len(splits.train) == 335
    assert splits.test.class_counts(10) == [50] * 10
    assert splits.val.class_counts(10) == [20] * 10
    assert splits.info["val_counts"] == [20] * 10


def test_digits_splits_do_not_overlap(digits: tuple[Splits, Splits, Path]) -> None:
    from sklearn.datasets import load_digits

    splits, _, _ = digits
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    available = _digits_keys(torch.from_numpy(images), torch.from_numpy(d.target))
    used = Counter[tuple[bytes, int]]()
    for part in (splits.train, splits.val, splits.test):
        used += _digits_keys(part.x, part.y)
    assert sum(used.values()) == len(splits.train) + len(splits.val) + len(splits.test)
    # every (image, label) is used at most as often as it occurs in sklearn's digits (duplicates allowed)
    over = {k: n for k, n in used.items() if n > available.get(k, 0)}
    assert over == {}


def test_digits_shot_groups_all_non_empty(digits: tuple[Splits, Splits, Path]) -> None:
    splits, _, _ = digits
    groups = splits.shot_rule.groups(splits.class_counts)
    assert groups == {"many": [0, 1, 2], "medium": [3, 4, 5], "few": [6, 7, 8, 9]}


def test_digits_is_deterministic(digits: tuple[Splits, Splits, Path]) -> None:
    first, second, _ = digits
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(second, name)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert first.info == second.info


# ---------------------------------------------------------------------------------------------
# ltbench.data.splits: augmentation and sampling


def _images(n: int, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _matches(out: np.ndarray, img: np.ndarray, p: int) -> list[tuple[int, int, bool]]:
    """All (oy, ox, flipped) such that ``out`` is the crop at (oy, ox) of ``img`` zero-padded by p,
    flipped horizontally if ``flipped``."""
    _, h, w = img.shape
    padded = np.pad(img, ((0, 0), (p, p), (p, p)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))  # (C, 2p+1, 2p+1, h, w)
    found = []
    for flipped in (False, True):
        cand = windows[..., ::-1] if flipped else windows
        eq = (cand == out[:, None, None]).all(axis=(0, 3, 4))
        found += [(int(oy), int(ox), flipped) for oy, ox in zip(*np.nonzero(eq), strict=True)]
    return found


def test_random_crop_flip_keeps_shape_and_dtype() -> None:
    for x, aug in ((_images(16), Augment(4, True)), (_images(16, c=1, size=8), Augment(1, False))):
        before = x.clone()
        out = random_crop_flip(x, aug, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == torch.uint8 and out.is_contiguous()
        assert torch.equal(x, before)  # the input is left alone


def test_random_crop_flip_is_deterministic() -> None:
    x = _images(32)
    aug = Augment(4, True)
    a = random_crop_flip(x, aug, torch.Generator().manual_seed(123))
    b = random_crop_flip(x, aug, torch.Generator().manual_seed(123))
    c = random_crop_flip(x, aug, torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(("p", "flip"), [(4, True), (4, False), (1, False), (2, True)])
def test_random_crop_flip_is_a_shifted_crop(p: int, flip: bool) -> None:
    n = 64
    x = _images(n, size=12)
    out = random_crop_flip(x, Augment(p, flip), torch.Generator().manual_seed(7)).numpy()
    draws = []
    for i in range(n):
        found = _matches(out[i], x[i].numpy(), p)
        assert len(found) == 1, f"image {i}: {found}"  # random content: exactly one explanation
        draws.append(found[0])
    oys, oxs, flips = zip(*draws, strict=True)
    assert set(oys) <= set(range(2 * p + 1)) and set(oxs) <= set(range(2 * p + 1))
    assert len(set(oys)) > 1 and len(set(oxs)) > 1  # offsets vary between images
    assert set(flips) == ({False, True} if flip else {False})


def test_random_crop_flip_single_image_against_manual_crop() -> None:
    x = _images(1, size=8, seed=3)
    out = random_crop_flip(x, Augment(2, False), torch.Generator().manual_seed(5))
    [(oy, ox, _)] = _matches(out[0].numpy(), x[0].numpy(), 2)
    manual = torch.nn.functional.pad(x[0], (2, 2, 2, 2))[:, oy:oy + 8, ox:ox + 8]
    assert torch.equal(out[0], manual)
    assert (oy, ox) != (2, 2)  # this seed draws a real shift, which brings zero padding in
    rows_in = slice(max(0, 2 - oy), 8 - max(0, oy - 2))
    cols_in = slice(max(0, 2 - ox), 8 - max(0, ox - 2))
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[rows_in, cols_in] = True
    assert bool((out[0][:, ~inside] == 0).all())


def test_random_crop_flip_without_padding() -> None:
    x = _images(64)
    assert torch.equal(random_crop_flip(x, Augment(0, False), torch.Generator().manual_seed(0)), x)
    out = random_crop_flip(x, Augment(0, True), torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x, strict=True)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert bool((flipped ^ same).all())
    assert 10 < int(flipped.sum()) < 54


def _lt_labels(seed: int = 0) -> torch.Tensor:
    counts = lt_counts(1000, 10, 100)  # 1000 .. 10
    labels = np.repeat(np.arange(10), counts)
    return torch.from_numpy(np.random.RandomState(seed).permutation(labels))


def test_sample_indices_instance_is_a_permutation() -> None:
    labels = _lt_labels()
    idx = sample_indices(labels, "instance", torch.Generator().manual_seed(0))
    assert idx.dtype == torch.int64
    assert torch.equal(torch.sort(idx).values, torch.arange(len(labels)))
    again = sample_indices(labels, "instance", torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    assert not torch.equal(idx, torch.arange(len(labels)))


def test_sample_indices_class_balanced_is_uniform_over_classes() -> None:
    labels = _lt_labels()
    n = len(labels)
    idx = sample_indices(labels, "class_balanced", torch.Generator().manual_seed(0))
    assert idx.shape == (n,) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < n
    drawn = torch.bincount(labels[idx], minlength=10).double()
    expected = n / 10
    chi2 = float(((drawn - expected) ** 2 / expected).sum())
    assert chi2 < 27.9, drawn.tolist()  # 9 degrees of freedom, p = 0.001
    # an instance-balanced epoch would give the head class ~40% of the draws, not ~10%
    assert abs(drawn[0].item() / n - 0.1) < 0.03
    # within the rarest class (10 images) every image is drawn, about equally often
    rare = torch.nonzero(labels == 9).flatten()
    per_image = torch.tensor([(idx == i).sum().item() for i in rare.tolist()])
    assert int(per_image.min()) > 0 and int(per_image.max()) < 3 * drawn[9].item() / 10
    again = sample_indices(labels, "class_balanced", torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)


def test_sample_indices_class_balanced_skips_absent_classes() -> None:
    labels = torch.tensor([0] * 90 + [2] * 10)
    idx = sample_indices(labels, "class_balanced", torch.Generator().manual_seed(1))
    drawn = torch.bincount(labels[idx], minlength=3).tolist()
    assert drawn[1] == 0 and 35 <= drawn[0] <= 65 and drawn[0] + drawn[2] == 100


def test_sample_indices_unknown_sampler() -> None:
    with pytest.raises(ValueError, match="unknown sampler"):
        sample_indices(torch.tensor([0, 1]), "square_root", torch.Generator())


@pytest.mark.parametrize("bench", ["cifar100_lt", "digits_lt"])
def test_infinite_imbalance_is_rejected(bench: str) -> None:
    with pytest.raises(LtbenchError, match=f"{bench}: --imbalance=inf: expected a finite number"):
        resolve("ce", bench, imbalance=float("inf"))
