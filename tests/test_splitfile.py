"""The split-file benchmarks (ImageNet-LT, iNaturalist 2018, Places-LT) on generated JPEG trees in the
published formats: split lists, the image pipeline, short CPU runs through the real engine,
determinism across worker counts, errors, backbones and recipes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision
from jpeg_trees import SPLIT_FILES, Tree, jpeg_bytes, write_tree
from PIL import Image

from ltbench.data.images import ImageTransform, crop_box, decode_rgb
from ltbench.data.splits import per_epoch_generator
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.models.backbones import build_backbone, load_initial_weights
from ltbench.registry import benchmarks
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve

BENCHMARKS = ["imagenet_lt", "inat2018", "places_lt"]
COUNTS = [110, 40, 20, 8, 3]  # many: 1 class, medium: 2, few: 2
SMALL = ["data.crop=16", "data.resize=20", "train.batch_size=32"]
CPU = torch.device("cpu")
# torchvision 0.29 deprecates its image decoders in favour of TorchCodec; ltbench pins torchvision <= 0.29.1
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.fixture(autouse=True)
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load in-process unless a test asks for workers (a worker pool per loader is slow on 2 cores)."""
    monkeypatch.setenv("LTBENCH_WORKERS", "0")


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tree]:
    return {b: write_tree(tmp_path_factory.mktemp(b), b, COUNTS) for b in BENCHMARKS}


def load(tree: Tree, **params: object):
    bench = benchmarks.get(tree.benchmark)()
    return bench.load({**bench.params, "crop": 16, "resize": 20, **params}, tree.root, split_root=tree.split_root)


def run(tree: Tree, store: Path, *sets: str, seed: int = 0, epochs: int = 1, method: str = "ce",
        backbone: str = "small_cnn", init_weights: Path | None = None) -> dict:
    spec = resolve(method, tree.benchmark, backbone=backbone, epochs=epochs, sets=[*SMALL, *sets], seed=seed,
                   init_weights=init_weights)
    opts = RunOptions(data_root=tree.root, split_root=tree.split_root, device="cpu", live_progress=False,
                      init_weights=init_weights)
    return execute(spec, Store(store), opts)


# ---------------------------------------------------------------------------------------------
# the generated trees follow the published formats


PATTERNS = {
    "imagenet_lt": {"train": r"train/(n\d{8})/\1_\d+\.JPEG", "val": r"train/(n\d{8})/\1_\d+\.JPEG",
                    "test": r"val/n\d{8}/ILSVRC2012_val_\d{8}\.JPEG"},
    "inat2018": {"train": r"train_val2018/[A-Z][a-z]+/(\d+)/[0-9a-f]{32}\.jpg",
                 "val": r"train_val2018/[A-Z][a-z]+/(\d+)/[0-9a-f]{32}\.jpg"},
    "places_lt": {"train": r"train/[a-z_-]+/\d{8}\.jpg", "val": r"train/[a-z_-]+/\d{8}\.jpg",
                  "test": r"val/[a-z_-]+/Places365_val_\d{8}\.jpg"},
}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_trees_use_the_published_formats(name: str, trees: dict[str, Tree]) -> None:
    tree = trees[name]
    assert sorted(p.name for p in tree.split_root.glob("*.txt")) == sorted(SPLIT_FILES[name].values())
    for split, pattern in PATTERNS[name].items():
        lines = tree.split_file(split).read_text().splitlines()
        for line in lines:
            path, label = line.split(" ")
            m = re.fullmatch(pattern, path)
            assert m, line
            if name == "inat2018":
                assert int(m.group(1)) == int(label)  # the folder is the category id, which is the label
            assert (tree.root / path).read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    train = set(tree.split_file("train").read_text().splitlines())
    assert not train & set(tree.split_file("val").read_text().splitlines())


# ---------------------------------------------------------------------------------------------
# loading


@pytest.mark.parametrize("name", BENCHMARKS)
def test_load_counts_groups_and_record(name: str, trees: dict[str, Tree]) -> None:
    splits = load(trees[name])
    assert splits.num_classes == 5
    assert splits.class_counts == COUNTS
    groups = splits.shot_rule.groups(splits.class_counts)
    assert (groups["many"], groups["medium"], groups["few"]) == ([0], [1, 2], [3, 4])
    assert len(splits.train) == sum(COUNTS) and len(splits.val) == 10
    assert splits.augment.flip  # the final report adds flip-averaged accuracy
    info = splits.info
    assert info["num_classes"] == 5 and info["val_counts"] == [2] * 5
    assert info["published_split_files"] is False and info["differences_from_published"]
    assert set(info["split_files"]) == set(SPLIT_FILES[name])
    assert all(len(f["sha256"]) == 64 for f in info["split_files"].values())
    if name == "inat2018":
        assert splits.test is splits.val
        assert info["test_source"].startswith("val (the iNaturalist convention: no separate test set")
        assert splits.transform.color_jitter == 0  # no colour jitter on iNaturalist
    else:
        assert len(splits.test) == 10 and splits.test is not splits.val
        assert splits.transform.color_jitter == 0.4


def test_spec_parameters_and_labels() -> None:
    spec = resolve("ce", "imagenet_lt", sets=["data.crop=32", "data.resize=36"])
    assert spec.data == {"crop": 32, "resize": 36, "color_jitter": 0.4, "resolution": 0, "input_norm": "auto"}
    assert spec.origins["data.crop"] == "--set"
    assert spec.label() == "ImageNet-LT (crop 32, resize 36)"
    assert resolve("ce", "imagenet_lt").label() == "ImageNet-LT"
    assert resolve("ce", "inat2018").label() == "iNaturalist 2018"  # the tables' column and note
    assert resolve("ce", "imagenet_lt").run_id != spec.run_id
    with pytest.raises(LtbenchError, match="need 1 <= crop <= resize"):
        resolve("ce", "places_lt", sets=["data.crop=300"])
    with pytest.raises(LtbenchError, match=r"color_jitter=1\.5 must lie in \[0, 1\)"):
        resolve("ce", "places_lt", sets=["data.color_jitter=1.5"])


# ---------------------------------------------------------------------------------------------
# transforms and decoding


def test_grayscale_and_cmyk_jpegs_decode_to_three_channels() -> None:
    rgb = (torch.rand(20, 24, 3) * 255).to(torch.uint8).numpy()
    for mode in ("L", "CMYK"):
        data = torch.frombuffer(bytearray(jpeg_bytes(rgb, mode)), dtype=torch.uint8)
        img = decode_rgb(data)
        assert img.shape == (3, 20, 24) and img.dtype == torch.uint8
        if mode == "L":
            assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
        out = ImageTransform(crop=16, resize=20).train(img, seed=1)
        assert out.shape == (3, 16, 16)


def test_tree_grayscale_image_goes_through_the_pipeline(trees: dict[str, Tree]) -> None:
    tree = trees["places_lt"]
    with Image.open(tree.image("train", 3)) as im:
        assert im.mode == "L"  # the generator made this one grayscale
    with Image.open(tree.image("train", 5)) as im:
        assert im.mode == "CMYK"
    splits = load(tree)
    x, y = next(splits.eval_batches("train", 8, CPU))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
    raw = x[3] * torch.tensor(splits.std).view(3, 1, 1) + torch.tensor(splits.mean).view(3, 1, 1)
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[1], raw[2], atol=1e-5)


def test_eval_transform_is_resize_then_center_crop() -> None:
    import torchvision.transforms.v2 as T

    img = (torch.rand(3, 30, 41) * 255).to(torch.uint8)
    reference = T.Compose([T.Resize(20, antialias=True), T.CenterCrop(16)])(img)
    assert torch.equal(ImageTransform(crop=16, resize=20).eval(img), reference)


def test_train_transform_is_a_function_of_its_seed() -> None:
    img = (torch.rand(3, 30, 41) * 255).to(torch.uint8)
    tf = ImageTransform(crop=16, resize=20)
    assert torch.equal(tf.train(img, 7), tf.train(img, 7))
    outs = [tf.train(img, s) for s in range(40)]
    assert len({o.sum().item() for o in outs}) > 30
    # RandomResizedCrop boxes stay inside the image and cover 8%..100% of it (up to rounding)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = crop_box(30, 41, (0.08, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 41
        assert 0.06 <= h * w / (30 * 41) <= 1.0


def test_flip_is_drawn_half_the_time() -> None:
    img = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(3, 8, 8)
    tf = ImageTransform(crop=8, resize=8, color_jitter=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped = sum(torch.equal(tf.train(img, s), img.flip(2)) for s in range(200))
    assert all(torch.equal(tf.train(img, s), img) or torch.equal(tf.train(img, s), img.flip(2)) for s in range(20))
    assert 70 < flipped < 130


# ---------------------------------------------------------------------------------------------
# batches: determinism, worker counts, the device-decode path


def batches(splits, workers: str, decode: str, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    monkeypatch.setenv("LTBENCH_WORKERS", workers)
    monkeypatch.setenv("LTBENCH_DECODE", decode)
    out = [x for x, _ in splits.train_batches(64, "instance", per_epoch_generator(3, 1), CPU)]
    out += [x for x, _ in splits.eval_batches("test", 7, CPU, flip=True)]
    return out


def test_batches_do_not_depend_on_workers_or_where_images_decode(trees: dict[str, Tree],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    splits = load(trees["imagenet_lt"])
    ref = batches(splits, "0", "workers", monkeypatch)
    assert [tuple(x.shape) for x in ref] == [(64, 3, 16, 16)] * 2 + [(53, 3, 16, 16)] + [(7, 3, 16, 16), (3, 3, 16, 16)]
    for workers, decode in (("2", "workers"), ("0", "device"), ("2", "device")):
        got = batches(splits, workers, decode, monkeypatch)
        assert all(torch.equal(a, b) for a, b in zip(ref, got, strict=True)), (workers, decode)
    other = [x for x, _ in splits.train_batches(64, "instance", per_epoch_generator(3, 2), CPU)]
    assert not torch.equal(other[0], ref[0])  # another epoch, other crops


def test_class_balanced_sampler_and_single_image_remainder(trees: dict[str, Tree]) -> None:
    splits = load(trees["places_lt"])
    ys = torch.cat([y for _, y in splits.train_batches(60, "class_balanced", per_epoch_generator(0, 0), CPU)])
    assert len(ys) == 180  # 181 images: the remainder batch of one is dropped (batch norm)
    assert min(torch.bincount(ys, minlength=5).tolist()) > 15  # every class drawn about equally often


def test_bad_environment_values(trees: dict[str, Tree], monkeypatch: pytest.MonkeyPatch) -> None:
    splits = load(trees["places_lt"])
    monkeypatch.setenv("LTBENCH_WORKERS", "many")
    with pytest.raises(LtbenchError, match="LTBENCH_WORKERS='many'"):
        next(splits.eval_batches("val", 4, CPU))
    monkeypatch.setenv("LTBENCH_WORKERS", "0")
    monkeypatch.setenv("LTBENCH_DECODE", "gpu")
    with pytest.raises(LtbenchError, match="LTBENCH_DECODE='gpu': expected auto, workers or device"):
        next(splits.eval_batches("val", 4, CPU))


# ---------------------------------------------------------------------------------------------
# short runs through the engine


@pytest.mark.parametrize("name", BENCHMARKS)
def test_short_run_records_the_protocol(name: str, trees: dict[str, Tree], tmp_path: Path) -> None:
    r = run(trees[name], tmp_path)
    assert r["groups"] == {"many": 1, "medium": 2, "few": 2}
    assert r["class_counts"] == COUNTS
    assert r["test_flip_avg"] is not None
    assert r["data_info"]["loader"] == {"decode": "workers (cpu)", "workers": 0}
    assert r["selected"]["rule"] == "val"
    if name == "inat2018":
        assert r["data_info"]["test_source"].startswith("val (the iNaturalist convention")
        assert r["test"]["per_class"] == r["val"]["per_class"]  # the reporting set is the validation set
        assert r["label"] == "iNaturalist 2018 (crop 16, resize 20)"
    else:
        assert r["test"]["n_images"] == 10


def test_same_seed_same_result_with_0_and_2_workers(trees: dict[str, Tree], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    a = run(trees["imagenet_lt"], tmp_path / "a")
    c = run(trees["imagenet_lt"], tmp_path / "c", seed=1)
    monkeypatch.setenv("LTBENCH_WORKERS", "2")
    b = run(trees["imagenet_lt"], tmp_path / "b")
    assert a["run_id"] == b["run_id"]  # workers are not part of the spec
    assert a["data_info"]["loader"]["workers"] == 0 and b["data_info"]["loader"]["workers"] == 2
    assert a["classifier_norms"] == b["classifier_norms"]
    assert a["test"]["per_class"] == b["test"]["per_class"]
    assert a["classifier_norms"] != c["classifier_norms"]


# ---------------------------------------------------------------------------------------------
# errors


def _copy(tree: Tree, dst: Path) -> Tree:
    import shutil

    shutil.copytree(tree.root, dst)
    return Tree(tree.benchmark, dst, dst, tree.entries)


BAD_LINES = [
    ("train/n01440764/n01440764_1.JPEG", "expected 2 fields (path and label), found 1"),
    ("train/n01440764/n01440764_1.JPEG 0 extra", "expected 2 fields (path and label), found 3"),
    ("train/n01440764/n01440764_1.JPEG zero", "label 'zero' is not a non-negative integer"),
    ("train/n01440764/n01440764_1.JPEG -1", "label '-1' is not a non-negative integer"),
    ("train/n01440764/n01440764_1.JPEG 1000", "label 1000 is out of range 0..999"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_LINES)
def test_malformed_line_names_file_and_line(line: str, problem: str, trees: dict[str, Tree], tmp_path: Path) -> None:
    tree = _copy(trees["imagenet_lt"], tmp_path / "t")
    path = tree.split_file("val")
    lines = path.read_text().splitlines()
    lines[3] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LtbenchError) as err:
        load(tree)
    msg = str(err.value)
    assert f"{path}:4: {problem}: {line!r}" in msg
    assert "relative/path label" in msg and "ImageNet_LT_val.txt" in msg
    assert "\n" not in msg


def test_label_without_training_images_is_an_error(trees: dict[str, Tree], tmp_path: Path) -> None:
    tree = _copy(trees["places_lt"], tmp_path / "t")
    path = tree.split_file("test")
    path.write_text(path.read_text() + "val/alcove/Places365_val_00000001.jpg 7\n")
    with pytest.raises(LtbenchError, match=rf"{re.escape(str(path))}:11: label 7 has no training images"):
        load(tree)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_missing_split_files(name: str, trees: dict[str, Tree], tmp_path: Path) -> None:
    bench = benchmarks.get(name)()
    with pytest.raises(LtbenchError) as err:  # nothing given: split lists looked for in --data-root
        bench.load(dict(bench.params), tmp_path)
    msg = str(err.value)
    for file in SPLIT_FILES[name].values():
        assert file in msg
    assert f"in {tmp_path} (looked in --data-root {tmp_path}, no --split-root given)" in msg
    assert "--split-root" in msg and f"`ltbench data prepare {name}`" in msg
    with pytest.raises(LtbenchError) as err:  # one file missing from a given --split-root
        split_dir = tmp_path / "splits"
        split_dir.mkdir()
        for split, file in SPLIT_FILES[name].items():
            if split != "val":
                (split_dir / file).write_text(trees[name].split_file(split).read_text())
        bench.load(dict(bench.params), trees[name].root, split_root=split_dir)
    msg = str(err.value)
    assert msg.startswith(f"{bench.title} split list not found: {SPLIT_FILES[name]['val']} in {split_dir} "
                          f"(looked in --split-root {split_dir})")


def test_images_not_under_data_root(trees: dict[str, Tree], tmp_path: Path) -> None:
    tree = trees["imagenet_lt"]
    bench = benchmarks.get("imagenet_lt")()
    with pytest.raises(LtbenchError) as err:
        bench.load(dict(bench.params), tmp_path, split_root=tree.split_root)
    msg = str(err.value)
    assert f"{tmp_path / tree.entries['train'][0][0]} (the first image of {tree.split_file('train')}:1)" in msg
    assert "train/ and val/" in msg and "ltbench data check imagenet_lt" in msg


@pytest.mark.parametrize(("decode", "damage"), [("workers", "truncated"), ("device", "missing")])
def test_broken_image_stops_the_run_with_its_name(decode: str, damage: str, trees: dict[str, Tree], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTBENCH_DECODE", decode)
    monkeypatch.setenv("LTBENCH_WORKERS", "2" if decode == "workers" else "0")
    tree = _copy(trees["places_lt"], tmp_path / "t")
    broken = tree.image("train", 50)
    if damage == "truncated":
        broken.write_bytes(broken.read_bytes()[:200])
    else:
        broken.unlink()
    with pytest.raises(LtbenchError) as err:
        run(tree, tmp_path / "results", epochs=1)
    msg = str(err.value)
    assert f"image {broken} (listed at {tree.split_file('train')}:51)" in msg
    assert ("truncated" in msg) if damage == "truncated" else ("No such file or directory" in msg)
    assert "ltbench data check places_lt" in msg and "Traceback" not in msg
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").rglob("DONE"))


# ---------------------------------------------------------------------------------------------
# backbones and initial weights


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d", "resnet152"])
def test_torchvision_backbones(name: str) -> None:
    model = build_backbone(name, 7, 3)
    assert model.feature_dim == 2048 and isinstance(model.features.fc, torch.nn.Identity)
    assert model.classifier.out_features == 7
    tv = getattr(torchvision.models, name)(weights=None)
    assert set(model.features.state_dict()) == set(tv.state_dict()) - {"fc.weight", "fc.bias"}


def test_init_weights_from_a_torchvision_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(123)
    tv = torchvision.models.resnet50(weights=None)  # random weights, saved as torchvision would
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    model = build_backbone("resnet50", 5, 3)
    record = load_initial_weights(model, path)
    assert record["loaded"] == len(tv.state_dict()) - 2 and record["not_loaded"] == []
    for key, value in model.features.state_dict().items():
        assert torch.equal(value, tv.state_dict()[key]), key
    # through the engine: one short epoch on a tiny tree from those weights; their sha256 is in the spec
    tree = write_tree(tmp_path / "tree", "imagenet_lt", [3, 3], val_per_class=1, test_per_class=1)
    r = run(tree, tmp_path / "results", backbone="resnet50", init_weights=path)
    assert r["method_record"]["init_weights"]["loaded"] == len(tv.state_dict()) - 2
    assert r["spec"]["init"] == record["sha256"] and r["backbone"] == "resnet50"
    assert len(r["classifier_norms"]) == 2


# ---------------------------------------------------------------------------------------------
# recipes


def test_recipes_of_the_large_benchmarks() -> None:
    spec = resolve("ce", "imagenet_lt")
    assert spec.backbone == "resnext50_32x4d" and spec.recipe == "paper"
    hp = spec.stages["train"]
    assert (hp["epochs"], hp["batch_size"], hp["lr"], hp["schedule"], hp["momentum"]) == (200, 64, 0.01, "cosine", 0.9)
    assert resolve("ce", "inat2018").stages["train"]["batch_size"] == 512
    assert resolve("ce", "places_lt").backbone == "resnet152"
    for name, backbone, wd in (("imagenet_lt", "resnext50_32x4d", 5e-4), ("inat2018", "resnet50", 1e-4)):
        kang = resolve("ce", name, recipe="kang")
        hp = kang.stages["train"]
        assert kang.backbone == backbone
        assert (hp["epochs"], hp["batch_size"], hp["lr"], hp["schedule"], hp["weight_decay"]) == (90, 512, 0.2, "cosine", wd)
    assert resolve("ce", "places_lt", recipe="kang").backbone == "resnet152"
    assert resolve("wb", "imagenet_lt").parent["stages"]["train"]["weight_decay"] == 5e-4
    assert resolve("wb", "inat2018").parent["stages"]["train"]["weight_decay"] == 1e-4
