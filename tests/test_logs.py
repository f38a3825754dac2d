"""Logs where people look: metrics.csv beside metrics.jsonl, TensorBoard event files (--log tensorboard,
read back with TensorBoard's own reader), val many/medium/few per epoch, `ltbench export`, and the
--log option's way into launched jobs."""

import csv
import dataclasses
import importlib.util
import io
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.launch.jobs import _job_args
from ltbench.models.backbones import build_backbone
from ltbench.registry import benchmarks
from ltbench.results import logs
from ltbench.results.store import RunDir, Store
from ltbench.spec.run_spec import resolve

OPTS = RunOptions(device="cpu", live_progress=False)


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A 3-epoch digits-LT CE run with TensorBoard logging and the test set every epoch."""
    pytest.importorskip("tensorboard")
    store = Store(tmp_path_factory.mktemp("logged"))
    spec = resolve("ce", "digits_lt", epochs=3)
    execute(spec, store, dataclasses.replace(OPTS, log=("tensorboard",), test_every_epoch=True))
    return store, spec, store.run_dir(spec)


def test_tensorboard_scalars_equal_metrics_jsonl(logged_run):
    _, _, rd = logged_run
    rows = rd.metrics()
    acc = _events(rd.path / "tensorboard" / "train")
    per_epoch = {tag for tag in acc.Tags()["scalars"] if not tag.startswith("final/")}  # final/: test_loggers.py
    assert set(logs.TB_SCALARS.values()) | {"classifier_norm/min", "classifier_norm/max",
                                            "classifier_norm/mean"} == per_epoch
    for key, tag in logs.TB_SCALARS.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3], tag
        # TensorBoard keeps float32: the logged value is metrics.jsonl's, rounded to float32
        assert [e.value for e in events] == [float(np.float32(r[key])) for r in rows], tag
    assert rows[-1]["test_top1"] is not None


def test_tensorboard_norms_are_the_classifiers(logged_run):
    _, _, rd = logged_run
    # the checkpoint holds the weights after the last epoch, which is what epoch 3 logged
    w = torch.load(rd.checkpoint_file, weights_only=True)["model"]["classifier.weight"]
    norms = w.norm(dim=1).double()
    acc = _events(rd.path / "tensorboard" / "train")
    last = {name: acc.Scalars(f"classifier_norm/{name}")[-1] for name in ("min", "max", "mean")}
    assert all(e.step == 3 for e in last.values())
    assert last["min"].value == pytest.approx(float(norms.min()), rel=1e-6)
    assert last["max"].value == pytest.approx(float(norms.max()), rel=1e-6)
    assert last["mean"].value == pytest.approx(float(norms.mean()), rel=1e-6)
    hist = acc.Histograms("classifier_norms")
    assert [h.step for h in hist] == [1, 2, 3]
    h = hist[-1].histogram_value
    assert h.num == 10 and h.min == pytest.approx(float(norms.min()), rel=1e-6)
    assert h.sum == pytest.approx(float(norms.sum()), rel=1e-6)


def test_metrics_csv_rows_equal_metrics_jsonl(logged_run):
    _, _, rd = logged_run
    rows = rd.metrics()
    with open(rd.path / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(logs.CSV_COLUMNS)
    assert len(table) == len(rows) == 3
    for line, row in zip(table, rows, strict=True):
        assert line["stage"] == row["stage"] and int(line["epoch"]) == row["epoch"]
        for col in logs.CSV_COLUMNS[2:]:
            assert (line[col] == "") if row[col] is None else (float(line[col]) == row[col]), col


def test_val_many_medium_few_per_epoch_are_a_direct_computation(logged_run):
    _, spec, rd = logged_run
    row = rd.metrics()[-1]
    for key in ("val_class_mean", "test_top1", "loss", "lr", "train_acc", "time_s"):  # the old keys stay
        assert key in row
    splits = benchmarks.get("digits_lt")().load(spec.data, None)
    model = build_backbone("small_cnn", 10, 1)
    model.load_state_dict(torch.load(rd.checkpoint_file, weights_only=True)["model"])  # after epoch 3
    model.eval()
    with torch.no_grad():
        pred = model(splits.normalize(splits.val.x)).argmax(1).numpy()
    y = splits.val.y.numpy()
    per_class = [100.0 * np.mean(pred[y == c] == c) for c in range(10)]
    counts = splits.class_counts  # 100, 71, 51, 36, 26, 18, 13, 9, 6, 5: many > 50, few < 15
    groups = {"many": [c for c in range(10) if counts[c] > 50], "few": [c for c in range(10) if counts[c] < 15]}
    groups["medium"] = [c for c in range(10) if c not in groups["many"] + groups["few"]]
    assert [len(groups[g]) for g in ("many", "medium", "few")] == [3, 3, 4]
    for g, classes in groups.items():
        assert row[f"val_{g}"] == pytest.approx(np.mean([per_class[c] for c in classes]), abs=1e-9), g
    assert row["val_class_mean"] == pytest.approx(np.mean(per_class), abs=1e-9)


def test_export_writes_the_csv_and_the_jsonl(logged_run, tmp_path):
    store, spec, rd = logged_run
    runner = CliRunner()
    out = runner.invoke(app, ["export", spec.run_id[:8], "--results", str(store.root)])
    assert out.exit_code == 0, out.output
    assert out.stdout == (rd.path / "metrics.csv").read_text()
    out = runner.invoke(app, ["export", spec.run_id, "--results", str(store.root), "--format", "jsonl",
                              "-o", str(tmp_path / "m.jsonl")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "m.jsonl").read_text() == rd.metrics_file.read_text()
    bad = runner.invoke(app, ["export", spec.run_id, "--results", str(store.root), "--format", "xml"])
    assert bad.exit_code == 2 and "--format 'xml': expected csv or jsonl" in bad.output


def test_export_of_an_older_record_leaves_unknown_cells_empty():
    from pathlib import Path

    golden = Path(__file__).parent / "golden" / "results"
    rd = next(r for r in Store(golden).runs() if r.metrics())
    text = logs.metrics_csv(rd.metrics())
    line = next(csv.DictReader(io.StringIO(text)))
    first = rd.metrics()[0]
    assert "val_many" not in first and line["val_many"] == "" and line["val_few"] == ""
    assert float(line["loss"]) == first["loss"] and float(line["test_top1"]) == first["test_top1"]


def test_a_resumed_run_logs_every_epoch_once(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    store = Store(tmp_path)
    spec = resolve("ce", "digits_lt", epochs=2)
    opts = dataclasses.replace(OPTS, log=("tensorboard",))
    save, calls = RunDir.save_checkpoint, []

    def killed_in_epoch_2(self, state):  # epoch 2 is logged (events, metrics line), then the process dies
        calls.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        save(self, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, store, opts)
    rd = store.run_dir(spec)
    folder = rd.path / "tensorboard" / "train"
    assert [e.step for e in _events(folder).Scalars("loss")] == [1, 2]  # epoch 2 is past the checkpoint
    monkeypatch.setattr(RunDir, "save_checkpoint", save)
    execute(spec, store, opts)  # resumes after epoch 1
    rows = rd.metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    acc = _events(folder)
    for key, tag in logs.TB_SCALARS.items():
        if key == "test_top1":
            continue
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2], tag
        assert [e.value for e in events] == [float(np.float32(r[key])) for r in rows], tag
    assert [h.step for h in acc.Histograms("classifier_norms")] == [1, 2]
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    starts = [e.step for p in sorted(folder.glob("*tfevents*")) for e in LegacyEventFileLoader(str(p)).Load()
              if any(v.tag == logs.SESSION_START_TAG for v in e.summary.value)]
    assert starts == [0]  # the hyperparameters once, written as the stage started again
    # the compacted one, the resumed stage's and the final record's (written once result.json is)
    assert len([p for p in folder.iterdir() if "tfevents" in p.name]) == 3
    assert len((rd.path / "metrics.csv").read_text().splitlines()) == 3


def test_missing_tensorboard_is_one_message_with_the_pip_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(LtbenchError, match=r"pip install 'ltbench\[tensorboard\]'"):
        logs.parse_log("tensorboard")
    out = CliRunner().invoke(app, ["run", "--method", "ce", "--epochs", "1", "--device", "cpu", "--log",
                                   "tensorboard", "--results", str(tmp_path)])
    assert out.exit_code == 2
    assert "--log tensorboard needs the tensorboard package" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "runs").exists()
    with pytest.raises(LtbenchError, match="unknown logger 'neptune'; expected one of tensorboard, wandb, mlflow"):
        logs.parse_log("neptune")
    assert logs.parse_log(None) == () and logs.parse_log("none") == ()


def test_log_option_reaches_jobs_and_is_not_part_of_the_run_id(tmp_path):
    spec = resolve("ce", "digits_lt", epochs=1)
    specs, _, options, _ = _job_args([spec], Store(tmp_path), dataclasses.replace(OPTS, log=("tensorboard",)), "slurm")
    options = pickle.loads(pickle.dumps(options))  # as submitit carries it to the job
    assert RunOptions(**options).log == ("tensorboard",)
    assert specs == [spec.to_json()] and "log" not in str(spec.canonical())
