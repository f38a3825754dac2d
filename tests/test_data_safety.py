"""Data files cannot reach outside the data root or run code: a split-file line whose path is absolute or
climbs out with '..' is refused with file:line, and a CIFAR "python file" that is a crafted pickle is
refused before anything in it runs (by `ltbench data check` and by loading the benchmark alike)."""

from __future__ import annotations

import builtins
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cifar_files import folder_name, write_cifar
from jpeg_trees import Tree, write_tree
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.data.splitfile import parse_split_lines
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
COUNTS = [110, 40, 20, 8, 3]
SMALL = ["data.crop=16", "data.resize=20", "train.batch_size=32"]


@pytest.fixture(autouse=True)
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTBENCH_WORKERS", "0")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return write_tree(tmp_path_factory.mktemp("imagenet_lt") / "root", "imagenet_lt", COUNTS)


def escaping_copy(tree: Tree, dst: Path, how: str) -> tuple[Tree, Path, str]:
    """A copy of ``tree`` whose val list's line 4 names a real image outside the root: (copy, list, line)."""
    root = dst / "root"
    shutil.copytree(tree.root, root)
    outside = dst / "outside.JPEG"
    shutil.copyfile(tree.image("val", 3), outside)  # an image that decodes: only its place is wrong
    path = {"dotdot": "../outside.JPEG", "absolute": str(outside), "inner_dotdot": "train/../../outside.JPEG"}[how]
    split_file = root / "ImageNet_LT_val.txt"
    lines = split_file.read_text().splitlines()
    lines[3] = f"{path} {tree.entries['val'][3][1]}"
    split_file.write_text("\n".join(lines) + "\n")
    return Tree(tree.benchmark, root, root, tree.entries), split_file, lines[3]


PROBLEM = {"dotdot": "has a '..' component, which leads out of the data root",
           "inner_dotdot": "has a '..' component, which leads out of the data root",
           "absolute": "is absolute; paths are relative to the data root"}


@pytest.mark.parametrize("how", sorted(PROBLEM))
def test_a_split_line_outside_the_root_is_refused_by_data_check(how: str, tree: Tree, tmp_path: Path) -> None:
    copy, split_file, line = escaping_copy(tree, tmp_path, how)
    r = runner.invoke(app, ["data", "check", "imagenet_lt", "--root", str(copy.root), "--no-expect-real", "--full"])
    print(f"\n{r.output}")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    path = line.split()[0]
    assert f"{split_file}:4: path {path!r} {PROBLEM[how]}: {line!r}" in r.output
    assert "ImageNet_LT_val.txt: 1 malformed line(s)" in r.output
    assert "ImageNet_LT_val.txt: all 9 listed images are present" in r.output  # the line is not looked at


@pytest.mark.parametrize("how", sorted(PROBLEM))
def test_a_split_line_outside_the_root_is_refused_for_training(how: str, tree: Tree, tmp_path: Path) -> None:
    copy, split_file, line = escaping_copy(tree, tmp_path, how)
    bench = benchmarks.get("imagenet_lt")()
    with pytest.raises(LtbenchError) as err:
        bench.load({**bench.params, "crop": 16, "resize": 20}, copy.root)
    msg = str(err.value)
    print(f"\n{msg}")
    path = line.split()[0]
    assert msg.startswith(f"malformed split file: {split_file}:4: path {path!r} {PROBLEM[how]}: {line!r}")
    assert "Fix that line or replace ImageNet_LT_val.txt with the published file." in msg

    spec = resolve("ce", "imagenet_lt", backbone="small_cnn", epochs=1, sets=SMALL)
    opts = RunOptions(data_root=copy.root, device="cpu", live_progress=False)
    with pytest.raises(LtbenchError, match=re.escape(f"{split_file}:4: path {path!r}")):
        execute(spec, Store(tmp_path / "results"), opts)
    assert not (tmp_path / "results" / "runs").exists()  # no record


@pytest.mark.parametrize("path", ["a/b/../../../x.jpg", "/x.jpg", "//server/x.jpg", "..", "a/.."])
def test_paths_that_leave_the_root(path: str) -> None:
    entries, problems = parse_split_lines([f"{path} 0\n", "ok/x.jpg 0\n"], Path("list.txt"), 2, None)
    assert entries.paths == ["ok/x.jpg"] and len(problems) == 1 and problems[0].startswith("list.txt:1: path ")


@pytest.mark.parametrize("path", ["a/b..c/x.jpg", "..x/y.jpg", "./train/x.jpg", "train/x..jpg"])
def test_paths_that_stay_inside(path: str) -> None:
    entries, problems = parse_split_lines([f"{path} 0\n"], Path("list.txt"), 2, None)
    assert entries.paths == [path] and not problems


# ---------------------------------------------------------------------------------------------
# CIFAR python files are pickles: only what the real ones hold is loaded


class _Payload:
    """Pickles to a call of ``fn(*args)`` when loaded."""

    def __init__(self, fn: Any, *args: Any):
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def crafted(marker: Path, how: str) -> tuple[bytes, str]:
    """A pickle in the shape of a CIFAR file that, loaded, creates ``marker``; and the name it loads."""
    payload = {"system": _Payload(os.system, f"touch {marker}"), "open": _Payload(builtins.open, str(marker), "w")}[how]
    name = f"{pickle.whichmodule(payload.fn, payload.fn.__name__)}.{payload.fn.__name__}"  # e.g. posix.system
    data = {"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 1, 2], "x": payload}
    return pickle.dumps(data, protocol=2), name


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar(root, "cifar100", images_per_class_train=1)
    return root


@pytest.mark.parametrize("how", ["system", "open"])
@pytest.mark.parametrize("which", ["train", "test"])
def test_a_crafted_cifar_pickle_is_refused_and_runs_nothing(how: str, which: str, cifar_root: Path,
                                                            tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(cifar_root, root)
    victim = root / folder_name("cifar100") / which
    marker = tmp_path / "marker"
    blob, name = crafted(marker, how)
    victim.write_bytes(blob)
    expected = (f"{victim} is not a CIFAR python file: it asks to load {name}, which no CIFAR file holds (refused; "
                "nothing in it was run). Delete it and download the python version of CIFAR-100 again")

    r = runner.invoke(app, ["data", "check", "cifar100_lt", "--root", str(root)])
    print(f"\n{r.output}")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert expected in r.output and "1 problem found." in r.output
    assert not marker.exists()

    bench = benchmarks.get("cifar100_lt")()
    with pytest.raises(LtbenchError) as err:
        bench.load(dict(bench.params), root, download=False)
    assert str(err.value).startswith(expected)
    assert not marker.exists()


def test_python2_cifar_pickles_still_load(tmp_path: Path) -> None:
    """The real files were written by Python 2 (str payloads, numpy.core names): a hand-made one loads."""
    from ltbench.datasets.cifar_lt import CifarUnpickler

    array = (b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87Rq\x03"
             b"(K\x01K\x03\x85cnumpy\ndtype\nq\x04U\x02u1K\x00K\x01\x87Rq\x05(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff"
             b"\xff\xff\xffK\x00tb\x89U\x03\x01\x02\xfftb")
    blob = b"\x80\x02}q\x00(U\x04data" + array + b"U\x06labels]q\x06(K\x00K\x01K\x02eu."
    with open(tmp_path / "f", "wb") as f:
        f.write(blob)
    with open(tmp_path / "f", "rb") as f:
        d = CifarUnpickler(f).load()
    assert d["labels"] == [0, 1, 2] and d["data"].tolist() == [1, 2, 255] and d["data"].dtype == np.uint8
