"""The `imagefolder` benchmark: a user's own images (class folders or split lists) through `data check`,
a ce,wb run, the seeded split, the imbalance profile, the data's identity in the run id, and the errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from jpeg_trees import folder_class_names, write_image_folder
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.data.benchmark import lt_counts
from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks
from ltbench.spec.run_spec import resolve

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
COUNTS = lt_counts(100, 12, 50)  # 100, 70, 49, 34, 24, 16, 11, 8, 5, 4, 2, 2
NAMES = folder_class_names(12)
SMALL = ["--backbone", "small_cnn", "--epochs", 1, "--set", "data.crop=32", "--device", "cpu"]


@pytest.fixture(autouse=True)
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTBENCH_WORKERS", "0")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 classes, IR 50, JPEG and PNG, every 5th image grayscale, 16..40 pixels a side."""
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root, COUNTS)
    return root


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def hand_split(n: int, test: int = 50, val: int = 20, holdout: float = 0.5) -> tuple[int, int, int]:
    """(train, val, test) of a class of n images, as the module docstring states it."""
    cap = math.floor(holdout * n)
    if test + val <= cap:
        return n - test - val, val, test
    t = math.floor(cap * test / (test + val) + 0.5)
    return n - cap, cap - t, t


def bench():
    return benchmarks.get("imagefolder")()


def splits_of(root: Path, split_root: Path | None = None, **params):
    b = bench()
    return b.make_splits(b.scan(root, split_root), {**b.params, **params})


def test_hand_split_numbers() -> None:
    assert [hand_split(n) for n in (100, 70, 2, 1)] == [(50, 14, 36), (35, 10, 25), (1, 0, 1), (1, 0, 0)]
    assert hand_split(200) == (130, 20, 50)  # enough images: the wanted counts


def test_data_check_reports_counts_ratio_groups_and_empty_splits(tree: Path) -> None:
    r = invoke("data", "check", "imagefolder", "--root", tree, "--full")
    assert r.exit_code == 0, r.output
    expected = [hand_split(n) for n in COUNTS]  # train 50, 35, 25, 17, 12, 8, 6, 4, 3, 2, 1, 1
    for name, (tr, va, te) in zip(NAMES, expected, strict=True):
        assert f"{name:<30} {tr:>7} {va:>7} {te:>7}" in r.output
    assert "12 classes (train/ folder names, sorted): c00_airfield, c01_airplane_cabin" in r.output
    assert "imbalance ratio 50.0 (training images per class: most 50, fewest 1)" in r.output
    assert "many / medium / few classes (n > 100, n < 20): 0 / 3 / 9" in r.output
    assert f"2 class(es) have no validation image (val metrics average over the others): {NAMES[10]}, {NAMES[11]}" \
        in r.output
    assert "no test image" not in r.output
    assert f"train: all {sum(COUNTS)} images decode" in r.output
    fp = bench().scan(tree).fingerprint()
    assert f"fingerprint {fp}" in r.output and r.output.rstrip().endswith("all checks passed.")


def test_data_check_names_unreadable_files_and_unreadable_classes(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tree, root)
    (root / "train" / NAMES[0] / "img_0000.jpg").write_bytes(b"not an image")
    for p in (root / "train" / NAMES[11]).iterdir():
        p.write_bytes(p.read_bytes()[:40])  # truncated
    (root / "train" / NAMES[1] / "notes.txt").write_text("hello")
    r = invoke("data", "check", "imagefolder", "--root", root, "--full")
    assert r.exit_code == 1
    assert "train: 3 of all 325 images are unreadable" in r.output
    assert f"{root}/train/{NAMES[0]}/img_0000.jpg: cannot decode it" in r.output
    assert f"train: class {NAMES[11]}: none of its 2 images is readable" in r.output
    assert "1 file(s) that are not images were skipped" in r.output and f"train/{NAMES[1]}/notes.txt" in r.output


def test_ce_wb_run_prints_the_table_and_records_the_data(tree: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    r = invoke("run", "--method", "ce,wb", "--dataset", "imagefolder", "--data-root", tree, "--results", results,
               *SMALL)
    assert r.exit_code == 0, r.output
    fp = bench().scan(tree).fingerprint()
    assert f"image folder {fp[:8]} (crop 32): test top-1 (%), selected on validation" in r.output
    rows = [ln.split("|")[1].strip() for ln in r.output.splitlines() if ln.startswith("|")][2:]
    assert rows == ["ce", "wb stage 1 (ce + tuned WD)", "wb"]
    # the table states the rule that made its many / medium / few groups (the folder's: the literature's)
    assert "- many / medium / few: the classes with n > 100 (many), 20 <= n <= 100 (medium), n < 20 (few) " \
           "training images" in r.output
    [ce] = [json.loads(p.read_text()) for p in results.glob("runs/imagefolder/ce/*/result.json")]
    info = ce["data_info"]
    expected = [hand_split(n) for n in COUNTS]
    assert ce["spec"]["data"]["fingerprint"] == info["fingerprint"] == fp
    assert info["classes"] == NAMES and info["layout"] == "folders"
    assert ce["class_counts"] == [e[0] for e in expected]
    assert info["val_counts"] == [e[1] for e in expected] and info["test_counts"] == [e[2] for e in expected]
    assert (info["train_size"], info["val_size"], info["test_size"]) == (164, 45, 116)
    assert info["transform"]["test"] == "Resize(37) + CenterCrop(32)"  # resize 0: round(32 * 256 / 224)
    assert ce["shot_rule"]["name"] == "strict" and ce["groups"] == {"many": 0, "medium": 3, "few": 9}


def test_grayscale_png_and_jpeg_become_three_channel_crops(tree: Path) -> None:
    import torch

    from ltbench.data.images import decode_rgb, read_image_bytes

    b = bench()
    splits = b.load({**b.params, "crop": 32, "fingerprint": b.scan(tree).fingerprint()}, tree)
    gray = [i for i, p in enumerate(splits.train.paths) if p.endswith(("img_0002.jpg", "img_0007.png"))]  # k % 5 == 2
    assert len(gray) >= 4 and any(p.endswith(".png") for p in splits.train.paths)
    x, _ = next(splits.eval_batches("train", 400, torch.device("cpu")))
    assert x.shape == (164, 3, 32, 32) and torch.isfinite(x).all()
    for i in gray:  # a grayscale file: three equal channels before normalisation
        raw = splits.transform.eval(decode_rgb(read_image_bytes(tree / splits.train.paths[i])))
        assert raw.shape == (3, 32, 32) and torch.equal(raw[0], raw[1]) and torch.equal(raw[1], raw[2])
    colour = next(i for i, p in enumerate(splits.train.paths) if p.endswith("img_0000.jpg"))
    raw = splits.transform.eval(decode_rgb(read_image_bytes(tree / splits.train.paths[colour])))
    assert not torch.equal(raw[0], raw[1])


def test_seeded_split_is_disjoint_and_reproducible(tree: Path) -> None:
    a, info = splits_of(tree)
    b, _ = splits_of(tree)
    c, _ = splits_of(tree, split_seed=1)
    assert all(a[s].paths == b[s].paths for s in a)
    assert a["test"].paths != c["test"].paths
    sets = {s: set(e.paths) for s, e in a.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert sum(len(v) for v in sets.values()) == sum(COUNTS)
    for e in a.values():  # every image keeps its folder's class
        assert all(p.split("/")[1] == NAMES[y] for p, y in zip(e.paths, e.labels, strict=True))
    assert info["found_train_counts"] == COUNTS


def test_given_val_and_test_folders_are_used_as_they_are(tmp_path: Path) -> None:
    write_image_folder(tmp_path, [30, 10, 5])
    write_image_folder(tmp_path, [3, 3, 0], split="val", seed=1)
    write_image_folder(tmp_path, [4, 4, 4], split="test", seed=2)
    lists, info = splits_of(tmp_path)
    assert [len(lists[s]) for s in ("train", "val", "test")] == [45, 6, 12]
    assert lists["val"].paths[0].startswith("val/") and info["val_source"] == str(tmp_path / "val")
    (tmp_path / "test" / "c00_airfield" / "img_0000.jpg").unlink()
    with pytest.raises(LtbenchError, match="not the data this run was set up with"):
        bench().load({**bench().params, "fingerprint": "0" * 16}, tmp_path)


def test_imbalance_profile_counts_equal_lt_counts(tmp_path: Path) -> None:
    write_image_folder(tmp_path, [30] * 12, sizes=(16, 20))
    lists, info = splits_of(tmp_path, imbalance=10.0)
    n_max = hand_split(30)[0]  # 15 training images per class after the carve
    counts = [lists["train"].labels.count(c) for c in range(12)]
    assert counts == lt_counts(n_max, 12, 10.0) == [15, 12, 9, 8, 6, 5, 4, 3, 2, 2, 1, 1]
    assert info["imbalance_profile"]["n_max"] == 15
    plain, _ = splits_of(tmp_path)
    assert set(lists["train"].paths) <= set(plain["train"].paths)  # the kept images: a seeded choice
    assert lists["val"].paths == plain["val"].paths and lists["test"].paths == plain["test"].paths
    with pytest.raises(LtbenchError, match=r"imbalance ratio 20 leaves class 10 \(and 1 more\) with no training image.*"
                                           r"the largest ratio that keeps one image per class is 15"):
        resolve("ce", "imagefolder", imbalance=20, data_root=tmp_path)
    spec = resolve("ce", "imagefolder", imbalance=10, data_root=tmp_path)
    assert spec.data["imbalance"] == 10.0 and spec.label().endswith(" IR10")


def test_two_folders_never_share_a_run_id(tree: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_image_folder(other, COUNTS, seed=1)  # same names and counts, other pixels
    moved = tmp_path / "moved"
    shutil.copytree(tree, moved)
    ids = {name: resolve("wb", "imagefolder", data_root=root).run_id
           for name, root in (("tree", tree), ("other", other), ("moved", moved))}
    assert ids["tree"] != ids["other"] and ids["tree"] == ids["moved"]  # moving the data keeps the id
    spec = resolve("wb", "imagefolder", data_root=tree)
    assert spec.parent["data"]["fingerprint"] == spec.data["fingerprint"] == bench().scan(tree).fingerprint()
    assert spec.parent_origins["data.fingerprint"] == "--data-root" and spec.origins["data.fingerprint"] == "stage-1 run"
    with pytest.raises(LtbenchError, match=r"the data in .*other \(fingerprint [0-9a-f]{16}\) is not the data this "
                                           r"run was set up with \(data.fingerprint [0-9a-f]{16}\)"):
        bench().load(spec.data, other)
    bare = resolve("ce", "imagefolder")
    with pytest.raises(LtbenchError, match="this spec names no data"):
        bench().load(bare.data, tree)


def write_lists(root: Path, split_dir: Path, lines: dict[str, list[str]], classes: list[str] | None = None) -> None:
    split_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (split_dir / f"{split}.txt").write_text("".join(f"{r}\n" for r in rows))
    if classes:
        (split_dir / "classes.txt").write_text("".join(f"{c}\n" for c in classes))


def test_split_file_variant(tree: Path, tmp_path: Path) -> None:
    paths = sorted(p.relative_to(tree).as_posix() for p in (tree / "train").rglob("*.*"))
    label = {n: i for i, n in enumerate(NAMES)}
    rows = [f"{p} {label[p.split('/')[1]]}" for p in paths]
    val = [r for r in rows if r.split()[0].endswith("img_0001.png")]
    train = [r for r in rows if r not in val]
    write_lists(tree, tmp_path / "lists", {"train": train, "val": val}, NAMES)
    b = bench()
    source = b.scan(tree, tmp_path / "lists")
    assert source.layout == "lists" and source.classes == NAMES
    lists, info = b.make_splits(source, b.params)
    assert [r.split()[0] for r in val] == lists["val"].paths and info["val_source"].endswith("val.txt")
    assert len(lists["train"]) + len(lists["test"]) == len(train)  # test carved from train.txt
    assert info["test_source"].startswith("carved from the training images")
    fp = source.fingerprint()
    assert fp != b.scan(tree).fingerprint()
    spec = resolve("ce", "imagefolder", data_root=tree, split_root=tmp_path / "lists")
    assert spec.data["fingerprint"] == fp
    splits = b.load(spec.data, tree, split_root=tmp_path / "lists")
    assert splits.info["layout"] == "lists" and splits.info["split_files"]["train"]["images"] == len(train)
    r = invoke("data", "check", "imagefolder", "--root", tree, "--split-root", tmp_path / "lists")
    assert r.exit_code == 0, r.output
    row = [lists[s].labels.count(0) for s in ("train", "val", "test")]
    assert f"image folder: split lists in {tmp_path / 'lists'}, images in {tree}" in r.output
    assert f"{NAMES[0]:<30} {row[0]:>7} {row[1]:>7} {row[2]:>7}" in r.output and row[1] == 1


@pytest.mark.parametrize("line,problem", [
    ("/etc/passwd.jpg 0", "is absolute; paths are relative to the data root"),
    ("train/../../x.jpg 0", "has a '..' component"),
    ("train/x.jpg", "expected 2 fields"),
    ("train/x.jpg 12", "label 12 is out of range 0..11"),
])
def test_split_lists_refuse_bad_lines(line: str, problem: str, tree: Path, tmp_path: Path) -> None:
    write_lists(tree, tmp_path, {"train": [f"train/{NAMES[0]}/img_0000.jpg 0", line]}, NAMES)
    with pytest.raises(LtbenchError, match=rf"malformed split list: .*train.txt:2: .*{problem}"):
        bench().scan(tree, tmp_path)


def test_split_list_errors(tree: Path, tmp_path: Path) -> None:
    first, second = f"train/{NAMES[0]}/img_0000.jpg", f"train/{NAMES[1]}/img_0000.jpg"
    with pytest.raises(LtbenchError, match=r"no train.txt in --split-root"):
        bench().scan(tree, tmp_path / "none")
    write_lists(tree, tmp_path / "a", {"train": [f"{first} 0", f"{second} 2"]})
    with pytest.raises(LtbenchError, match=r"class 1 has no training image in .*train.txt"):
        bench().scan(tree, tmp_path / "a")
    write_lists(tree, tmp_path / "b", {"train": [f"{first} 0", f"{second} 1"], "val": [f"{first} 0"]})
    with pytest.raises(LtbenchError, match=r"split lists overlap: .*val.txt:1: .* is also a training image"):
        bench().scan(tree, tmp_path / "b")
    write_lists(tree, tmp_path / "c", {"train": [f"{first} 0", "train/nothing.jpg 1"]})
    with pytest.raises(LtbenchError, match=r"image .*train/nothing.jpg \(listed at .*train.txt:2\) not found"):
        bench().scan(tree, tmp_path / "c")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(LtbenchError, match=r"no train/ folder in .*ROOT/train/<class>/<image files>"):
        bench().scan(tmp_path)
    write_image_folder(tmp_path, [3])
    with pytest.raises(LtbenchError, match="has 1 class folder"):
        bench().scan(tmp_path)
    write_image_folder(tmp_path, [3, 3])
    (tmp_path / "train" / "zz_empty").mkdir()
    (tmp_path / "train" / "zz_empty" / "readme.txt").write_text("x")
    (tmp_path / "train" / "zz_empty" / "blank.jpg").write_bytes(b"")
    with pytest.raises(LtbenchError, match=r"class folder .*zz_empty has no readable image \(1 empty image file\(s\), "
                                           r"1 other file\(s\)\)"):
        bench().scan(tmp_path)
    shutil.rmtree(tmp_path / "train" / "zz_empty")
    write_image_folder(tmp_path, [1], split="val", names=["dogs"])
    with pytest.raises(LtbenchError, match=r"val/dogs is not a class of .*train \(its classes: c00_airfield, "
                                           r"c01_airplane_cabin\); rename it"):
        bench().scan(tmp_path)


def test_parameter_errors(tree: Path) -> None:
    with pytest.raises(LtbenchError, match=r"data.holdout=1: must lie in \[0, 1\)"):
        resolve("ce", "imagefolder", sets=["data.holdout=1"], data_root=tree)
    with pytest.raises(LtbenchError, match=r"data.imbalance=0.5: must be 0"):
        resolve("ce", "imagefolder", imbalance=0.5)
    with pytest.raises(LtbenchError, match=r"data.crop=300 and data.resize=256"):
        resolve("ce", "imagefolder", sets=["data.crop=300", "data.resize=256"])


def test_corrupt_image_at_training_time_names_the_file(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tree, root)
    lists, _ = splits_of(root)
    bad = root / next(p for p in lists["train"].paths if p.startswith(f"train/{NAMES[3]}/"))
    bad.write_bytes(bad.read_bytes()[:30])  # truncated
    r = invoke("run", "--method", "ce", "--dataset", "imagefolder", "--data-root", root, "--results",
               tmp_path / "res", *SMALL)
    assert r.exit_code == 2
    assert f"image {bad} (listed at class folder {bad.parent}): cannot decode it" in r.output
    assert f"ltbench data check imagefolder --root {root} --full" in r.output


def test_data_prepare_says_how_to_lay_out_the_images(tree: Path, tmp_path: Path) -> None:
    r = invoke("data", "prepare", "imagefolder", "--root", tree)
    assert r.exit_code == 0, r.output
    assert f"found 12 classes: {sum(COUNTS)} train images" in r.output and "ROOT" not in r.output
    r = invoke("data", "prepare", "imagefolder", "--root", tmp_path)
    assert r.exit_code == 1 and f"{tmp_path}/train/<class>/<image files>" in r.output and "no train/ folder" in r.output
