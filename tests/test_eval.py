"""`ltbench eval`: a finished digits-LT model scored on another instance of the benchmark, kept as a
record of its own (evals/), shown by `ltbench table`; refused on data with other classes."""

import json
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.cli.eval import check_same_classes, eval_spec, run_eval
from ltbench.data.benchmark import Benchmark, lt_counts
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.files import file_sha256
from ltbench.models.backbones import build_backbone
from ltbench.registry import benchmarks
from ltbench.results.store import Store
from ltbench.results.tables import read_records
from ltbench.spec.run_spec import resolve

EVAL_OPTS = {"device": "cpu", "data_root": "data", "download": False, "split_root": None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 3-epoch CE run on digits-LT IR20."""
    store = Store(tmp_path_factory.mktemp("evals"))
    spec = resolve("ce", "digits_lt", epochs=3)
    result = execute(spec, store, RunOptions(device="cpu", live_progress=False))
    return store, spec, result


def _direct(run_dir, imbalance: float, split: str, source_counts: list[int]) -> dict[str, Any]:
    """Accuracies of the run's model.pt on digits-LT at ``imbalance``, computed here by hand: per-class
    accuracy, and many (n > 50) / medium / few (n < 15) by the source run's training counts."""
    splits = benchmarks.get("digits_lt")().load({"imbalance": imbalance}, None)
    model = build_backbone("small_cnn", 10, 1)
    model.load_state_dict(torch.load(run_dir.model_file, weights_only=True))
    model.eval()
    data = getattr(splits, split)
    with torch.no_grad():
        pred = model(splits.normalize(data.x)).argmax(1).numpy()
    y = data.y.numpy()
    per_class = [100.0 * float(np.mean(pred[y == c] == c)) for c in range(10)]
    many = [c for c in range(10) if source_counts[c] > 50]
    few = [c for c in range(10) if source_counts[c] < 15]
    medium = [c for c in range(10) if c not in many + few]
    return {"top1": 100.0 * float(np.mean(pred == y)), "class_mean": float(np.mean(per_class)), "n_images": len(y),
            "per_class": per_class, **{g: float(np.mean([per_class[c] for c in cs]))
                                       for g, cs in (("many", many), ("medium", medium), ("few", few))}}


def test_eval_record_equals_a_direct_computation_and_is_a_table_row(trained):
    store, spec, result = trained
    runner = CliRunner()
    args = ["eval", spec.run_id[:6], "--dataset", "digits_lt", "--imbalance", "50", "--split", "train",
            "--results", str(store.root), "--device", "cpu"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    rd = store.run_dir(spec)
    want = eval_spec(rd, file_sha256(rd.model_file), "digits_lt", {"imbalance": 50.0}, "train")
    ed = store.eval_dir("digits_lt", want["eval_id"])
    assert sorted(p.name for p in ed.path.iterdir()) == ["DONE", "result.json", "spec.json"]
    spec_json = json.loads(ed.spec_file.read_text())
    assert spec_json["kind"] == "eval" and spec_json["source_run"] == spec.run_id
    assert spec_json["source_model_sha256"] == result["model_sha256"]
    record = json.loads(ed.result_file.read_text())
    assert record["label"] == "digits-LT IR50 (train)" and record["class_counts"] == lt_counts(100, 10, 20)
    got, direct = record["scores"], _direct(rd, 50.0, "train", result["class_counts"])
    assert got["n_images"] == direct["n_images"] == sum(lt_counts(100, 10, 50))
    assert got["top1"] == pytest.approx(direct["top1"], rel=1e-6)  # accuracy_report's mean is float32
    for key in ("class_mean", "many", "medium", "few"):
        assert got[key] == pytest.approx(direct[key], abs=1e-9), key
    assert got["per_class"] == pytest.approx(direct["per_class"], abs=1e-9)
    assert "done, skipped" in runner.invoke(app, args).output  # the same evaluation, the same record

    table = runner.invoke(app, ["table", "--results", str(store.root), "--dataset", "digits_lt", "--format", "json",
                                "--evals"])
    assert table.exit_code == 0, table.output
    t = json.loads(table.stdout)
    assert t["columns"] == ["digits-LT IR50 (train)"]  # eval records: a table of their own
    cell = t["rows"][f"ce (eval of {spec.run_id})"]["digits-LT IR50 (train)"]
    for group, key in (("all", "top1"), ("many", "many"), ("medium", "medium"), ("few", "few")):
        assert cell[group]["mean"] == round(direct[key], 2) and cell[group]["n"] == 1
    runs = json.loads(runner.invoke(app, ["table", "--results", str(store.root), "--dataset", "digits_lt",
                                          "--format", "json"]).stdout)
    assert runs["columns"] == ["digits-LT IR20"] and list(runs["rows"]) == ["ce"]
    assert runs["rows"]["ce"]["digits-LT IR20"]["all"]["mean"] == round(result["test"]["top1"], 2)
    text = runner.invoke(app, ["table", "--results", str(store.root), "--dataset", "digits_lt", "--evals"]).stdout
    row = next(line for line in text.splitlines() if "(eval of" in line)
    assert f"{direct['top1']:.2f}" in row and "eval of RUN" in text


def test_eval_on_the_runs_own_test_split_reproduces_its_record(trained):
    store, spec, result = trained
    record, new = run_eval(store, spec.run_id, "digits_lt", "test", EVAL_OPTS)
    assert record["label"] == "digits-LT IR20" and record["data"] == spec.data  # the run's data by default
    for key in ("top1", "class_mean", "many", "medium", "few", "per_class"):
        assert record["scores"][key] == result["test"][key], key
    assert record["classifier_norms"] == pytest.approx(result["classifier_norms"], rel=1e-6)
    assert run_eval(store, spec.run_id, "digits_lt", "test", EVAL_OPTS)[1] is False


class _Shaped(Benchmark):
    """Random CIFAR-shaped images (3 x 32 x 32 uint8), generated here: ``num_classes`` classes."""

    title = "random colour images"
    in_channels = 3
    default_backbone = "resnet32"
    recipe_family = "cifar"
    params: ClassVar[dict[str, Any]] = {}

    def load(self, params, data_root, download=True, split_root=None):
        from ltbench.data.splits import Augment, ImageSet, Splits

        g = torch.Generator().manual_seed(0)

        def part(name: str) -> ImageSet:
            y = torch.arange(self.num_classes).repeat(2)
            return ImageSet(torch.randint(0, 256, (len(y), 3, 32, 32), dtype=torch.uint8, generator=g), y, name)

        return Splits(train=part("train"), val=part("val"), test=part("test"), num_classes=self.num_classes,
                      mean=(0.5,) * 3, std=(0.25,) * 3, augment=Augment())


@pytest.fixture
def shaped():
    """Two test benchmarks: CIFAR-100-shaped (100 classes) and CIFAR-10-shaped (10 classes)."""
    made = {}
    for n in (100, 10):
        name = f"evaltest_cifar{n}_shaped"
        made[n] = benchmarks.register(name)(type(name, (_Shaped,), {"name": name, "num_classes": n}))
    yield {n: cls.name for n, cls in made.items()}
    for cls in made.values():
        benchmarks._entries.pop(cls.name)


def test_other_classes_are_refused_with_one_message(trained, shaped):
    store, spec, _ = trained
    runner = CliRunner()
    out = runner.invoke(app, ["eval", spec.run_id, "--dataset", shaped[100], "--results", str(store.root),
                              "--device", "cpu"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert f"run {spec.run_id}'s model has 10 classes" in out.output and "has 100" in out.output
    out = runner.invoke(app, ["eval", spec.run_id, "--dataset", shaped[10], "--results", str(store.root),
                              "--device", "cpu"])
    assert out.exit_code == 2 and "reads 1-channel images" in out.output and "3-channel" in out.output
    assert not any(ed.path.parent.name.startswith("evaltest") for ed in store.evals())  # no record of either


def test_class_names_that_differ_are_named():
    digits = [str(c) for c in range(10)]
    check_same_classes("r1", digits, 10, "folder", list(digits), 10)  # the same: no error
    with pytest.raises(LtbenchError, match=r"only in run r1's classes: 9; only in folder: nine\)"):
        check_same_classes("r1", digits, 10, "folder", digits[:9] + ["nine"], 10)
    with pytest.raises(LtbenchError, match=r"another order .* 0: 0 / 1, 1: 1 / 0;"):
        check_same_classes("r1", digits, 10, "folder", ["1", "0"] + digits[2:], 10)
    check_same_classes("r1", None, 10, "folder", digits, 10)  # names on one side only: the counts agree
    with pytest.raises(LtbenchError, match="has 10 classes, folder has 9"):
        check_same_classes("r1", None, 10, "folder", digits[:9], 9)


def test_eval_errors_are_one_line(trained, tmp_path):
    store, spec, _ = trained
    runner = CliRunner()
    base = ["eval", spec.run_id, "--dataset", "digits_lt", "--results", str(store.root), "--device", "cpu"]
    cases = [(base + ["--split", "holdout"], "--split 'holdout': expected one of test, val, train"),
             (base + ["--set", "train.lr=1"],
              "takes the data settings of digits_lt only (data.imbalance, data.input_norm, data.resolution)"),
             (["eval", "ffffff", "--dataset", "digits_lt", "--results", str(store.root)], "no run in"),
             (base[:2] + ["--dataset", "nonesuch", "--results", str(store.root)], "unknown benchmark 'nonesuch'")]
    for args, message in cases:
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and message in out.output, (args, out.output)


def test_status_and_run_readers_ignore_eval_records(trained):
    store, spec, _ = trained
    run_eval(store, spec.run_id, "digits_lt", "test", EVAL_OPTS)
    out = CliRunner().invoke(app, ["status", "--results", str(store.root)])
    assert out.exit_code == 0 and "1 done" in out.output, out.output
    assert [r["run_id"] for r in read_records(store).results] == [spec.run_id]
    with_evals = read_records(store, evals=True)
    assert len(with_evals.results) == 1 + len(store.evals()) and not with_evals.damaged


def _folder(root, names, per_class):
    from PIL import Image

    rng = np.random.RandomState(len(names) + per_class)
    for i, name in enumerate(names):
        d = root / "train" / name
        d.mkdir(parents=True)
        for k in range(per_class):
            img = rng.randint(0, 60, (16, 16, 3)) + np.array([80 * i, 200 - 60 * i, 40])
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(d / f"{k}.png")
    return root


def test_an_image_folder_model_on_another_folder(tmp_path):
    if "imagefolder" not in benchmarks.names():
        pytest.skip("the imagefolder benchmark is not there")
    small = ["--set", "data.crop=16", "--set", "data.resize=16", "--set", "data.test_per_class=5",
             "--set", "data.val_per_class=2"]
    results = str(tmp_path / "results")
    runner = CliRunner()
    out = runner.invoke(app, ["run", "--method", "ce", "--dataset", "imagefolder", "--data-root",
                              str(_folder(tmp_path / "a", ["cat", "dog", "fox"], 20)), "--backbone", "small_cnn",
                              "--epochs", "1", "--device", "cpu", "--results", results, *small])
    assert out.exit_code == 0, out.output
    run_id = Store(results).runs()[0].run_id
    same = runner.invoke(app, ["eval", run_id, "--dataset", "imagefolder", "--results", results, "--device", "cpu",
                               "--data-root", str(_folder(tmp_path / "b", ["cat", "dog", "fox"], 8))])
    assert same.exit_code == 0, same.output
    assert f"ce (eval of {run_id}) on image folder" in same.stdout and " images)" in same.stdout
    other = runner.invoke(app, ["eval", run_id, "--dataset", "imagefolder", "--results", results, "--device", "cpu",
                                "--data-root", str(_folder(tmp_path / "c", ["cat", "dog", "owl"], 8))])
    assert other.exit_code == 2 and "Traceback" not in other.output
    assert f"only in run {run_id}'s classes: fox; only in image folder" in other.output and "owl)" in other.output
    assert len(Store(results).evals()) == 1
