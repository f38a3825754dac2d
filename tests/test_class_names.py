"""Class names of every benchmark (``Benchmark.read_class_names``), read from files in the datasets' own
formats: CIFAR's meta pickles, the split lists' class folders made readable by ImageNet's synset files,
Places365's categories file and iNaturalist's categories; an image folder's class folders or classes.txt;
digits 0..9. And the engine records them in result.json."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from cifar_files import CIFAR10_NAMES, write_cifar
from jpeg_trees import INAT_SUPER, PLACES, WNIDS, write_image_folder, write_tree

from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks


def names(benchmark: str, root: Path, split_root: Path | None = None) -> list[str] | None:
    b = benchmarks.get(benchmark)()
    return b.read_class_names(dict(b.params), root, split_root)


def test_digits_are_their_digits(tmp_path):
    assert names("digits_lt", tmp_path) == [str(d) for d in range(10)]


def test_cifar_names_come_from_the_meta_files(tmp_path):
    write_cifar(tmp_path, "cifar10", images_per_class_train=1)
    write_cifar(tmp_path, "cifar100", images_per_class_train=1)
    assert names("cifar10_lt", tmp_path) == CIFAR10_NAMES
    assert names("cifar100_lt", tmp_path) == [f"fine_{c:02d}" for c in range(100)]  # fine_label_names, not coarse


def test_cifar_without_meta_file_has_no_names_and_a_crafted_one_is_refused(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", images_per_class_train=1)
    (folder / "batches.meta").unlink()
    assert names("cifar10_lt", tmp_path) is None

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": Evil()}))
    with pytest.raises(LtbenchError, match=r"batches.meta is not a readable CIFAR meta file"):
        names("cifar10_lt", tmp_path)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a", "b"]}))
    with pytest.raises(LtbenchError, match=r"label_names is not a list of 10 class names"):
        names("cifar10_lt", tmp_path)


def test_imagenet_lt_wnids_become_words_from_a_synset_file(tmp_path):
    tree = write_tree(tmp_path / "data", "imagenet_lt", [3, 2, 2, 1], size=(8, 8), split_root=tmp_path / "lists")
    assert names("imagenet_lt", tree.root, tree.split_root) == WNIDS[:4]  # no names file: the wnids
    # Kaggle's LOC_synset_mapping.txt in the data root: the first of the words; a word two classes share gets
    # its wnid; a wnid the file lacks stays a wnid
    (tree.root / "LOC_synset_mapping.txt").write_text(
        f"{WNIDS[0]} tench, Tinca tinca\n{WNIDS[1]} crane\n{WNIDS[2]} crane, bird\n")
    assert names("imagenet_lt", tree.root, tree.split_root) == [
        "tench", f"crane ({WNIDS[1]})", f"crane ({WNIDS[2]})", WNIDS[3]]
    # ImageNet's tab-separated words.txt beside the split lists
    (tree.root / "LOC_synset_mapping.txt").unlink()
    (tree.split_root / "words.txt").write_text("".join(f"{w}\tclass {i}, other\n" for i, w in enumerate(WNIDS)))
    assert names("imagenet_lt", tree.root, tree.split_root) == ["class 0", "class 1", "class 2", "class 3"]


def test_places_lt_names_from_categories_places365(tmp_path):
    write_tree(tmp_path, "places_lt", [3, 2, 2, 1, 1, 1, 1, 1, 1], size=(8, 8))
    assert names("places_lt", tmp_path) == PLACES[:9]
    (tmp_path / "categories_places365.txt").write_text(
        "/a/airfield 0\n/a/airplane_cabin 1\n/a/airport_terminal 2\n/a/alcove 3\n/a/alley 4\n/a/amphitheater 5\n"
        "/a/amusement_arcade 6\n/a/amusement_park 7\n/a/apartment_building/outdoor 8\n/a/aquarium 9\n")
    assert names("places_lt", tmp_path)[8] == "apartment_building/outdoor"  # the folder apartment_building-outdoor
    assert names("places_lt", tmp_path)[:2] == ["airfield", "airplane_cabin"]


def test_inaturalist_names_from_categories_json(tmp_path):
    tree = write_tree(tmp_path, "inat2018", [3, 2, 1], size=(8, 8))
    folders = [f"{INAT_SUPER[c]}/{c}" for c in range(3)]
    assert names("inat2018", tree.root) == folders  # no names file: supercategory/id
    # the annotations' categories (val2018.json); a name that is only the id keeps the folder
    (tmp_path / "val2018.json").write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 0, "name": "Abies concolor", "supercategory": "Plantae"}, {"id": 1, "name": "1"}]}))
    assert names("inat2018", tree.root) == ["Abies concolor", folders[1], folders[2]]
    (tmp_path / "categories.json").write_text(json.dumps([{"id": c, "name": f"species {c}", "kingdom": "x"}
                                                          for c in range(3)]))
    assert names("inat2018", tree.root) == ["species 0", "species 1", "species 2"]  # categories.json first
    (tmp_path / "categories.json").write_text("{not json")
    with pytest.raises(LtbenchError, match=r"categories.json is not JSON"):
        names("inat2018", tree.root)


def test_split_file_benchmarks_need_their_lists(tmp_path):
    with pytest.raises(LtbenchError, match=r"ImageNet-LT split lists not found"):
        names("imagenet_lt", tmp_path)
    tree = write_tree(tmp_path / "d", "imagenet_lt", [2, 1], size=(8, 8))
    (tree.root / "words.txt").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(LtbenchError, match=r"cannot read the class names in .*words.txt"):
        names("imagenet_lt", tree.root)


def test_image_folder_names_are_its_class_folders_or_classes_txt(tmp_path):
    write_image_folder(tmp_path / "f", [3, 2], names=["zebra", "apple"])
    assert names("imagefolder", tmp_path / "f") == ["apple", "zebra"]  # sorted, as the labels are
    lists = tmp_path / "lists"
    lists.mkdir()
    rel = write_image_folder(tmp_path / "g", [2, 2], names=["a", "b"])
    (lists / "train.txt").write_text("".join(f"{p} {0 if '/a/' in p else 1}\n" for p in rel))
    assert names("imagefolder", tmp_path / "g", lists) == ["0", "1"]
    (lists / "classes.txt").write_text("cat\ndog\n")
    assert names("imagefolder", tmp_path / "g", lists) == ["cat", "dog"]


def test_a_run_records_its_class_names_and_survives_a_failing_names_reader(tmp_path, monkeypatch):
    from ltbench.engine.training import RunOptions, execute
    from ltbench.results.store import Store
    from ltbench.spec.run_spec import resolve

    opts = RunOptions(device="cpu", live_progress=False)
    record = execute(resolve("ce", "digits_lt", epochs=1), Store(tmp_path / "a"), opts)
    assert record["class_names"] == [str(d) for d in range(10)]

    def broken(self, params, data_root, split_root=None):
        raise OSError("disk gone")

    monkeypatch.setattr(benchmarks.get("digits_lt"), "read_class_names", broken)
    record = execute(resolve("ce", "digits_lt", epochs=1), Store(tmp_path / "b"), opts)
    assert record["class_names"] is None and record["test"]["top1"] >= 0  # the run is recorded all the same
    assert json.loads(next((tmp_path / "b").rglob("result.json")).read_text())["class_names"] is None
