"""`ltbench data check` and `ltbench data prepare` through the real command line, on generated JPEG
trees in the published formats: good copies, broken copies, and the preparation steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from jpeg_trees import SPLIT_FILES, Tree, write_tree
from typer.testing import CliRunner

from ltbench.cli.app import app

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
COUNTS = [110, 40, 20, 8, 3]


@pytest.fixture(autouse=True)
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTBENCH_WORKERS", "0")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tree]:
    return {b: write_tree(tmp_path_factory.mktemp(b), b, COUNTS) for b in SPLIT_FILES}


def copy(tree: Tree, dst: Path) -> Tree:
    shutil.copytree(tree.root, dst)
    return Tree(tree.benchmark, dst, dst, tree.entries)


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def check(tree: Tree, *extra: object):
    return invoke("data", "check", tree.benchmark, "--root", tree.root, "--no-expect-real", *extra)


@pytest.mark.parametrize("name", sorted(SPLIT_FILES))
def test_good_copy_passes(name: str, good: dict[str, Tree]) -> None:
    r = check(good[name], "--full")
    assert r.exit_code == 0, r.output
    assert "FAIL" not in r.output and r.output.rstrip().endswith("all checks passed.")
    train = SPLIT_FILES[name]["train"]
    assert f"{train}: 181 images of 5 classes, 110..3 per class" in r.output
    assert "many / medium / few classes (n > 100, n < 20): 1 / 2 / 2" in r.output
    assert f"{train}: all 181 listed images are present" in r.output and f"{train}: 181 images decode" in r.output


def test_published_counts_are_checked_by_default(good: dict[str, Tree]) -> None:
    tree = good["imagenet_lt"]
    r = invoke("data", "check", "imagenet_lt", "--root", tree.root)
    assert r.exit_code == 1
    assert "ImageNet_LT_train.txt: 181 images of 5 classes, 110..3 per class; the published file has 115,846 " \
           "images of 1,000 classes, 1280..5 per class" in r.output
    assert "ImageNet_LT_test.txt: 10 images of 5 classes, 2..2 per class; the published file has 50,000" in r.output
    assert "1 / 2 / 2; published: 385 / 479 / 136" in r.output
    assert "--no-expect-real" in r.output and r.output.rstrip().endswith("problems found.")


def test_sample_checks_part_of_the_images(good: dict[str, Tree]) -> None:
    r = check(good["places_lt"], "--sample", 20)
    assert r.exit_code == 0, r.output
    assert "Places_LT_train.txt: a random sample of 20 of 181 listed images are present" in r.output
    assert "Places_LT_val.txt: all 10 listed images are present" in r.output


def test_missing_image(good: dict[str, Tree], tmp_path: Path) -> None:
    tree = copy(good["inat2018"], tmp_path / "t")
    gone = [tree.entries["train"][i][0] for i in (7, 100)]
    for rel in gone:
        (tree.root / rel).unlink()
    r = check(tree, "--full")
    assert r.exit_code == 1
    assert "iNaturalist18_train.txt: 2 of all 181 listed images are missing under" in r.output
    assert "is it the folder that holds train_val2018/?" in r.output
    assert f"{gone[0]} ({tree.split_file('train')}:8)" in r.output
    assert f"{gone[1]} ({tree.split_file('train')}:101)" in r.output
    assert "iNaturalist18_train.txt: 179 images decode" in r.output
    assert r.output.rstrip().endswith("1 problem found.")


def test_truncated_and_fake_jpegs(good: dict[str, Tree], tmp_path: Path) -> None:
    tree = copy(good["places_lt"], tmp_path / "t")
    truncated, fake = tree.image("test", 2), tree.image("val", 4)
    truncated.write_bytes(truncated.read_bytes()[:150])
    fake.write_bytes(b"<html>404 Not Found</html>\n")
    r = check(tree, "--full")
    assert r.exit_code == 1
    assert "Places_LT_test.txt: 1 of 10 images do not decode (truncated or not images)" in r.output
    assert f"{tree.entries['test'][2][0]} ({tree.split_file('test')}:3): cannot decode it (Image is incomplete or " \
           f"truncated)" in r.output
    assert f"{tree.entries['val'][4][0]} ({tree.split_file('val')}:5): cannot decode it" in r.output
    assert "2 problems found." in r.output


def test_bad_lines_are_listed_with_file_and_line(good: dict[str, Tree], tmp_path: Path) -> None:
    tree = copy(good["imagenet_lt"], tmp_path / "t")
    path = tree.split_file("train")
    lines = path.read_text().splitlines()
    lines[0] = "train/n01440764/n01440764_10000.JPEG"
    lines[9] = "train/n01440764/n01440764_10009.JPEG 12x"
    path.write_text("\n".join(lines) + "\n")
    r = check(tree)
    assert r.exit_code == 1
    assert "ImageNet_LT_train.txt: 2 malformed line(s); each line must be 'relative/path label'" in r.output
    assert f"{path}:1: expected 2 fields (path and label), found 1: 'train/n01440764/n01440764_10000.JPEG'" in r.output
    assert f"{path}:10: label '12x' is not a non-negative integer" in r.output


def test_wrong_labels(good: dict[str, Tree], tmp_path: Path) -> None:
    tree = copy(good["places_lt"], tmp_path / "t")
    path = tree.split_file("val")
    path.write_text(path.read_text().replace(" 4\n", " 6\n"))  # class 6 has no training images
    r = check(tree)
    assert r.exit_code == 1
    assert f"{path}:9: label 6 has no training images (the labels of Places_LT_train.txt stop at 4)" in r.output


def test_missing_split_file_and_split_root(good: dict[str, Tree], tmp_path: Path) -> None:
    tree = good["inat2018"]
    splits = tmp_path / "splits"
    splits.mkdir()
    shutil.copy(tree.split_file("train"), splits)
    r = invoke("data", "check", "inat2018", "--root", tree.root, "--split-root", splits, "--no-expect-real")
    assert r.exit_code == 1
    assert f"iNaturalist18_val.txt: not found in {splits}. Put it there (or pass --split-root); " \
           f"`ltbench data prepare inat2018` says where to get it." in r.output
    assert "iNaturalist18_train.txt: all 181 listed images are present" in r.output


def test_user_errors_exit_2() -> None:
    r = invoke("data", "check", "imagenet_l")
    assert r.exit_code == 2 and "unknown benchmark 'imagenet_l'. Did you mean 'imagenet_lt'" in r.output
    r = invoke("data", "check", "places_lt", "--sample", 0)
    assert r.exit_code == 2 and "--sample 0: expected a positive number" in r.output


def test_other_benchmarks_are_checked_by_loading(tmp_path: Path) -> None:
    r = invoke("data", "check", "digits_lt")
    assert r.exit_code == 0 and "loads: 335 training, 200 validation and 500 test images of 10 classes" in r.output
    r = invoke("data", "check", "cifar10_lt", "--root", tmp_path)
    assert r.exit_code == 1 and "CIFAR-10 files not found" in r.output


# ---------------------------------------------------------------------------------------------
# prepare


@pytest.mark.parametrize(("name", "sources"), [
    ("imagenet_lt", ["ImageNet 2012", "ILSVRC2012_img_train.tar", "image-net.org", "OLTR", "classifier-balancing"]),
    ("inat2018", ["iNaturalist 2018", "train_val2018.tar.gz", "visipedia/inat_comp", "gen_lists.py"]),
    ("places_lt", ["Places365-Standard", "places365standard_easyformat.tar", "places2.csail.mit.edu", "OLTR"]),
])
def test_prepare_explains_sources_and_layout(name: str, sources: list[str], tmp_path: Path) -> None:
    r = invoke("data", "prepare", name, "--root", tmp_path, "--no-download")
    assert r.exit_code == 1  # nothing is in place yet
    for text in sources:
        assert text in r.output
    for file in SPLIT_FILES[name].values():
        assert f"{file} is missing from {tmp_path}" in r.output
    assert f"They go in {tmp_path}" in r.output and f"ltbench data check {name} --root {tmp_path}" in r.output


def test_prepare_complete_copy(good: dict[str, Tree]) -> None:
    tree = good["places_lt"]
    r = invoke("data", "prepare", "places_lt", "--root", tree.root)
    assert r.exit_code == 0, r.output
    assert "Places_LT_train.txt is in place" in r.output and f"{tree.root / 'val'}/ is in place" in r.output


def test_prepare_inat_writes_split_lists_from_annotations(good: dict[str, Tree], tmp_path: Path) -> None:
    tree = copy(good["inat2018"], tmp_path / "t")
    for split, json_name in (("train", "train2018.json"), ("val", "val2018.json")):
        entries = tree.entries[split]
        images = [{"id": 1000 + i, "file_name": p, "width": 24, "height": 20} for i, (p, _) in enumerate(entries)]
        annotations = [{"id": 1000 + i, "image_id": 1000 + i, "category_id": y} for i, (_, y) in enumerate(entries)]
        (tree.root / json_name).write_text(json.dumps({"images": images, "annotations": annotations[::-1]}))
        tree.split_file(split).unlink()
    r = invoke("data", "prepare", "inat2018", "--root", tree.root, "--no-download")
    assert r.exit_code == 0, r.output
    assert f"wrote {tree.split_file('train')} (181 images) from {tree.root / 'train2018.json'}" in r.output
    assert tree.split_file("val").read_text() == "".join(f"{p} {y}\n" for p, y in tree.entries["val"])
    assert check(tree).exit_code == 0
    (tree.root / "val2018.json").write_text("{not json")
    tree.split_file("val").unlink()
    r = invoke("data", "prepare", "inat2018", "--root", tree.root, "--no-download")
    assert r.exit_code == 2 and "val2018.json: not a readable iNaturalist 2018 annotation file" in r.output


def test_prepare_imagenet_sorts_the_flat_validation_folder(good: dict[str, Tree], tmp_path: Path) -> None:
    tree = copy(good["imagenet_lt"], tmp_path / "t")
    for rel, _ in tree.entries["test"]:  # the ILSVRC-2012 validation archive is flat
        (tree.root / rel).rename(tree.root / "val" / Path(rel).name)
    for folder in (tree.root / "val").iterdir():
        if folder.is_dir():
            folder.rmdir()
    assert check(tree).exit_code == 1
    r = invoke("data", "prepare", "imagenet_lt", "--root", tree.root, "--no-download")
    assert r.exit_code == 0, r.output
    assert f"sorted 10 images of the flat validation folder {tree.root / 'val'} into the class folders" in r.output
    assert check(tree, "--full").exit_code == 0
    assert (tree.root / "val" / Path(tree.entries["test"][0][0]).name).is_file()  # the flat files stay


def test_prepare_downloads_public_split_lists(good: dict[str, Tree], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror" / "data" / "Places_LT"
    mirror.mkdir(parents=True)
    # a list as long as the published val list (7,300 lines), and a test list that is not the published one
    (mirror / "Places_LT_val.txt").write_text("".join(f"train/airfield/{i:08d}.jpg {i % 365}\n" for i in range(7300)))
    (mirror / "Places_LT_test.txt").write_text("val/airfield/Places365_val_00000001.jpg 0\n")
    monkeypatch.setenv("LTBENCH_SPLIT_URL", (tmp_path / "mirror").as_uri())
    root = tmp_path / "root"
    r = invoke("data", "prepare", "places_lt", "--root", root)
    assert r.exit_code == 1
    assert "downloaded Places_LT_val.txt (7,300 images) from file://" in r.output
    assert (root / "Places_LT_val.txt").read_text().count("\n") == 7300
    assert "could not download Places_LT_test.txt" in r.output and "not the published list" in r.output
    assert "could not download Places_LT_train.txt" in r.output  # not on the mirror
    assert not (root / "Places_LT_test.txt").exists() and not list(root.glob(".*"))  # no partial files
