"""The final evaluation records top-5 accuracy (benchmarks of 100 classes or more) and the test confusion
(sparse [true, predicted, count] triples); `ltbench plot confusion RUN_ID` draws it (the matrix up to 100
classes, the hardest confusions beyond) and `ltbench show` prints top-5. Old records say how to get them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from jpeg_trees import write_image_folder
from test_plots import png_size
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.engine.evaluation import TOP5_MIN_CLASSES, top5_and_confusion
from ltbench.errors import LtbenchError
from ltbench.results.confusion import class_names_of, confusion_rates, hardest_confusions
from ltbench.results.plots import plot_confusion
from ltbench.results.store import Store

GOLDEN = Path(__file__).parent / "golden" / "results"
runner = CliRunner()


def dense(triples, per_class_count):
    """The confusion matrix from the record's triples and per-class test counts."""
    n = len(per_class_count)
    m = np.zeros((n, n), dtype=int)
    for t, p, k in triples:
        m[t, p] += k
    m[np.arange(n), np.arange(n)] = np.asarray(per_class_count) - m.sum(1)
    return m


@pytest.mark.parametrize("classes", [10, TOP5_MIN_CLASSES, 250])
def test_top5_and_confusion_match_a_direct_count(classes):
    from sklearn.metrics import confusion_matrix

    g = torch.Generator().manual_seed(classes)
    labels = torch.randint(0, classes, (600,), generator=g)
    logits = torch.randn(600, classes, generator=g) + 3.0 * torch.nn.functional.one_hot(labels, classes)
    out = top5_and_confusion(logits, labels)
    top5 = np.mean([int(y) in torch.topk(z, 5).indices.tolist() for z, y in zip(logits, labels, strict=True)])
    assert ("top5" in out) == (classes >= TOP5_MIN_CLASSES)
    if "top5" in out:
        assert out["top5"] == pytest.approx(100 * top5)
    counts = torch.bincount(labels, minlength=classes).tolist()
    want = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), labels=range(classes))
    assert (dense(out["confusion"], counts) == want).all()
    assert out["confusion"] == sorted(out["confusion"]) and all(t != p and k > 0 for t, p, k in out["confusion"])
    assert len(out["confusion"]) <= int((logits.argmax(1) != labels).sum())  # bounded by the test images
    assert "confusion" not in top5_and_confusion(logits, labels, confusion=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A digits-LT ce run (10 classes) and an image-folder run of 101 classes (top-5, hardest confusions)."""
    from ltbench.engine.training import RunOptions, execute
    from ltbench.spec.run_spec import resolve

    base = tmp_path_factory.mktemp("confusion")
    root = base / "results"
    opts = RunOptions(device="cpu", live_progress=False)
    execute(resolve("ce", "digits_lt", epochs=1), Store(root), opts)
    data = base / "folder"
    names = [f"k{c:03d}_{'$x$' if c == 7 else 'class'}" for c in range(101)]  # a "$" is drawn as it is
    for split, counts in (("train", [4] * 50 + [2] * 51), ("val", [1] * 101), ("test", [1] * 101)):
        write_image_folder(data, counts, split=split, sizes=(8, 10), names=names)
    spec = resolve("ce", "imagefolder", backbone="small_cnn", epochs=1, data_root=data,
                   sets=["data.crop=8", "data.resize=8"])
    execute(spec, Store(root), RunOptions(device="cpu", live_progress=False, data_root=data))
    return root


def record(root: Path, benchmark: str) -> dict:
    return next(rd.result() for rd in Store(root).runs() if rd.path.parent.parent.name == benchmark)


def test_a_digits_record_has_names_and_a_confusion_that_agrees_with_its_accuracies(store):
    r = record(store, "digits_lt")
    test = r["test"]
    assert "top5" not in test and "top5" not in r["val"]  # 10 classes
    assert "confusion" not in r["val"]
    m = dense(test["confusion"], test["per_class_count"])
    for c in range(10):
        assert 100 * m[c, c] / test["per_class_count"][c] == pytest.approx(test["per_class"][c])
    assert class_names_of(r) == ([str(d) for d in range(10)], True)
    order, rates = confusion_rates(r)
    assert order == sorted(range(10), key=lambda c: -r["class_counts"][c])
    assert np.allclose(rates.sum(1), 1.0)


def test_a_record_of_101_classes_has_top5_and_its_names(store):
    r = record(store, "imagefolder")
    assert isinstance(r["test"]["top5"], float) and isinstance(r["val"]["top5"], float)
    assert r["test"]["top5"] >= r["test"]["top1"]
    assert r["class_names"][7] == "k007_$x$" and len(r["class_names"]) == 101
    shown = runner.invoke(app, ["show", r["run_id"], "--results", str(store)])
    assert shown.exit_code == 0, shown.output
    assert f"test top-5 {r['test']['top5']:.2f}" in shown.output
    hardest = hardest_confusions(r, 5)
    assert len(hardest) == min(5, len(r["test"]["confusion"]))
    assert [h["rate"] for h in hardest] == sorted((h["rate"] for h in hardest), reverse=True)
    assert all(h["true_name"] == r["class_names"][h["true"]] for h in hardest)


@pytest.mark.parametrize("benchmark,min_height", [("digits_lt", 500), ("imagefolder", 300)])
def test_plot_confusion_draws_the_matrix_or_the_hardest_confusions(store, tmp_path, benchmark, min_height):
    r = record(store, benchmark)
    out = tmp_path / "c.png"
    res = runner.invoke(app, ["plot", "confusion", r["run_id"][:8], "-o", str(out), "--results", str(store)])
    assert res.exit_code == 0, res.output
    w, h = png_size(out)
    assert w >= 600 and h >= min_height
    import matplotlib.image

    assert matplotlib.image.imread(out).std() > 0.05


def test_plot_confusion_errors_are_one_line(store, tmp_path):
    old = next(rd.run_id for rd in Store(GOLDEN).runs() if rd.is_done())
    res = runner.invoke(app, ["plot", "confusion", old, "--results", str(GOLDEN)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "recorded before ltbench kept the test confusion matrix" in res.output and "--force" in res.output
    both = [rd.run_id for rd in Store(store).runs()]
    res = runner.invoke(app, ["plot", "confusion", *both, "--results", str(store)])
    assert res.exit_code == 2 and "draws one run" in res.output
    res = runner.invoke(app, ["plot", "confusion", "--results", str(store)])
    assert res.exit_code == 2 and "needs run ids" in res.output


def test_a_damaged_confusion_is_refused_by_name(store, tmp_path):
    copy = tmp_path / "res"
    shutil.copytree(store, copy)
    rd = next(rd for rd in Store(copy).runs() if rd.path.parent.parent.name == "digits_lt")
    data = json.loads(rd.result_file.read_text())
    data["test"]["confusion"] = [[0, 99, 1]]  # no class 99
    rd.result_file.write_text(json.dumps(data))
    with pytest.raises(LtbenchError, match=r"test.confusion is not a list of \[true, predicted, count\]"):
        plot_confusion([rd.result()], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_run_that_reports_flip_averaged_numbers_shows_that_confusion(store):
    from ltbench.results.confusion import recorded_confusion

    r = json.loads(json.dumps(record(store, "digits_lt")))
    flip = {**r["test"], "confusion": [[0, 1, 1]]}
    assert recorded_confusion({**r, "test_flip_avg": flip}) == [tuple(t) for t in r["test"]["confusion"]]
    r["spec"]["data"]["report"] = "test_flip_avg"  # data.report=test_flip_avg: the reported numbers are flip-averaged
    assert recorded_confusion({**r, "test_flip_avg": flip}) == [(0, 1, 1)]
