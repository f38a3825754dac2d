"""The engine: schedules, determinism, checkpoints, resume after SIGKILL, NaN handling."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.engine.training import RunOptions, execute, lr_factor
from ltbench.errors import LtbenchError
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve
from ltbench.spec.schema import engine_defaults


def hp(**kw):
    return {**engine_defaults(), **kw}


def test_cosine_schedule_decays_to_zero():
    h = hp(epochs=10, schedule="cosine")
    assert lr_factor(h, 0) == pytest.approx(1.0)
    assert lr_factor(h, 5) == pytest.approx(0.5)
    assert lr_factor(h, 10) == pytest.approx(0.0, abs=1e-12)
    values = [lr_factor(h, t / 10) for t in range(100)]
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))


def test_step_schedule_with_warmup_is_caos():
    # Cao et al.: lr * epoch/5 for the first 5 epochs, x0.01 from 160, x0.0001 from 180 (of 200).
    h = hp(epochs=200, schedule="step", warmup_epochs=5, milestones=[0.8, 0.9], gamma=0.01)
    assert lr_factor(h, 0) == pytest.approx(1 / 5)
    assert lr_factor(h, 4.5) == pytest.approx(1.0)
    assert lr_factor(h, 100) == pytest.approx(1.0)
    assert lr_factor(h, 159.9) == pytest.approx(1.0)
    assert lr_factor(h, 160) == pytest.approx(0.01)
    assert lr_factor(h, 180) == pytest.approx(1e-4)


def _spec(epochs=3, **kw):
    return resolve("ce", "digits_lt", epochs=epochs, **kw)


def test_same_seed_same_result_and_different_seed_differs(tmp_path):
    a = execute(_spec(), Store(tmp_path / "a"), RunOptions(device="cpu", live_progress=False))
    b = execute(_spec(), Store(tmp_path / "b"), RunOptions(device="cpu", live_progress=False))
    c = execute(_spec(seed=1), Store(tmp_path / "c"), RunOptions(device="cpu", live_progress=False))
    assert a["test"]["per_class"] == b["test"]["per_class"]
    assert a["classifier_norms"] == b["classifier_norms"]
    assert a["classifier_norms"] != c["classifier_norms"]


def test_record_layout_and_skip_when_done(tmp_path):
    store = Store(tmp_path)
    spec = _spec()
    result = execute(spec, store, RunOptions(device="cpu", live_progress=False))
    rd = store.run_dir(spec)
    assert rd.path == tmp_path / "runs" / "digits_lt" / "ce" / spec.run_id
    for name in ("spec.json", "metrics.jsonl", "checkpoint.pt", "result.json", "DONE"):
        assert (rd.path / name).is_file(), name
    assert not rd.lock_file.exists()
    saved = json.loads(rd.spec_file.read_text())
    assert saved["run_id"] == spec.run_id and saved["origins"]["train.epochs"] == "--epochs"
    assert [r["epoch"] for r in rd.metrics()] == [1, 2, 3]
    assert len(result["classifier_norms"]) == 10 and all(n > 0 for n in result["classifier_norms"])
    assert result["groups"] == {"many": 3, "medium": 3, "few": 4}
    assert result["test"]["n_images"] == 500 and result["test_flip_avg"] is None
    # done runs are skipped: the record is returned untouched
    mtime = rd.result_file.stat().st_mtime_ns
    again = execute(spec, store, RunOptions(device="cpu", live_progress=False))
    assert again == result and rd.result_file.stat().st_mtime_ns == mtime


def test_run_id_ignores_paths_and_devices_but_not_hyperparameters():
    assert _spec().run_id == _spec().run_id
    assert _spec().run_id != _spec(epochs=4).run_id
    assert _spec().run_id != _spec(sets=["train.weight_decay=0.001"]).run_id
    assert _spec().run_id != _spec(seed=1).run_id


def test_nan_loss_is_one_message_and_a_failed_run_without_result(tmp_path):
    store = Store(tmp_path)
    spec = _spec(epochs=2, sets=["train.lr=1e30"])
    with pytest.raises(LtbenchError, match="loss became nan in epoch 1 of stage train.*recorded as failed") as exc:
        execute(spec, store, RunOptions(device="cpu", live_progress=False))
    rd = store.run_dir(spec)
    assert rd.state() == "failed" and not rd.result_file.exists() and not rd.is_done()
    assert json.loads(rd.failed_file.read_text())["error"] == str(exc.value)
    status = CliRunner().invoke(app, ["status", "--results", str(tmp_path)])
    assert status.exit_code == 0 and "1 failed" in status.output and "loss became nan" in status.output


RUN = [sys.executable, "-m", "ltbench.cli.app", "run", "--dataset", "digits_lt", "--method", "ce", "--backbone",
       "resnet32", "--imbalance", "1", "--epochs", "6", "--device", "cpu", "--set", "train.select=val"]


def test_sigkill_mid_epoch_resumes_to_the_same_result(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    ref = subprocess.run(RUN + ["--results", str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    ref_dir = next((tmp_path / "ref" / "runs").glob("*/*/*"))
    reference = json.loads((ref_dir / "result.json").read_text())

    results = tmp_path / "killed"
    proc = subprocess.Popen(RUN + ["--results", str(results)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run_dir = results / "runs" / "digits_lt" / "ce" / ref_dir.name
    deadline = time.time() + 120
    while time.time() < deadline:  # kill somewhere inside epoch 3 or later, before the end
        lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
        if len(lines) >= 2:
            break
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "DONE").exists(), "the run finished before it could be killed"
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "lock").exists()  # a stale lock is left

    resumed = subprocess.run(RUN + ["--results", str(results)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("val", "test", "classifier_norms", "selected"):
        assert result[key] == reference[key], key
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]
    assert not (run_dir / "lock").exists()


def test_live_lock_refuses_a_second_writer(tmp_path):
    store = Store(tmp_path)
    spec = _spec(epochs=1)
    rd = store.create(spec)
    with rd.locked():
        with pytest.raises(LtbenchError, match="already running"):
            execute(spec, store, RunOptions(device="cpu", live_progress=False))
    assert not math.isnan(execute(spec, store, RunOptions(device="cpu", live_progress=False))["test"]["top1"])


def test_select_on_test_is_labelled(tmp_path):
    r = execute(_spec(epochs=2, sets=["train.select=test"]), Store(tmp_path), RunOptions(device="cpu", live_progress=False))
    assert r["selected"]["rule"] == "test" and "test set" in r["selected"]["warning"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    store = Store(tmp_path)
    spec = _spec(epochs=1)
    rd = store.create(spec)
    rd.checkpoint_file.write_bytes(b"not a checkpoint")
    with pytest.raises(LtbenchError, match="checkpoint.pt is unreadable.*delete it to restart.*--force"):
        execute(spec, store, RunOptions(device="cpu", live_progress=False))
    assert Path(rd.spec_file).exists()


def test_initial_weights_are_loaded_and_hashed_into_the_spec(tmp_path):
    import torch

    from ltbench.models.backbones import small_cnn

    torch.manual_seed(123)
    src = small_cnn(num_classes=7, in_channels=1)  # another head: fc/classifier rows must be dropped
    state = {f"module.features.{k}": v for k, v in src.features.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 128)
    path = tmp_path / "init.pt"
    torch.save({"state_dict": state}, path)

    spec = _spec(epochs=1, init_weights=path)
    assert spec.init.startswith("sha256:") and spec.run_id != _spec(epochs=1).run_id
    store = Store(tmp_path / "res")
    with pytest.raises(LtbenchError, match="--init-weights"):
        execute(spec, store, RunOptions(device="cpu", live_progress=False))  # the file must be given again
    result = execute(spec, store, RunOptions(device="cpu", live_progress=False, init_weights=path))
    rec = result["method_record"]["init_weights"]
    assert rec["sha256"] == spec.init and rec["loaded"] == len(src.features.state_dict())

    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(LtbenchError, match="is not the file this run was specified with"):
        execute(spec, Store(tmp_path / "res2"), RunOptions(device="cpu", live_progress=False, init_weights=other))
    with pytest.raises(LtbenchError, match="none of its 1 tensors fit"):
        execute(_spec(epochs=1, init_weights=other), Store(tmp_path / "res3"),
                RunOptions(device="cpu", live_progress=False, init_weights=other))
    assert Store(tmp_path / "res3").runs() == []  # no half-written record
    with pytest.raises(LtbenchError, match="no such file"):
        _spec(init_weights=tmp_path / "missing.pt")


def test_final_report_on_cached_features_equals_the_full_model(tmp_path):
    """Stage-2 runs report from the features they trained on (mirrored test images included) when the
    backbone is unchanged; that must give the numbers of running the whole model, exactly."""
    import torch

    from ltbench.data.splits import Augment, ImageSet, Splits
    from ltbench.engine.evaluation import extract_features, load_features, save_features
    from ltbench.engine.training import ClassifierHead, final_report
    from ltbench.models.backbones import small_cnn

    g = torch.Generator().manual_seed(0)

    def images(n):
        return ImageSet(torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
                        torch.randint(0, 5, (n,), generator=g))

    splits = Splits(images(60), images(25), images(40), 5, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), Augment(1, True))
    torch.manual_seed(0)
    model = small_cnn(5, 3)
    model.train()
    for _ in range(3):  # give batch norm running statistics that differ from their initial values
        model(splits.normalize(splits.train.x))
    device = torch.device("cpu")
    feats = extract_features(model.features, splits, device, bs=16)
    assert feats.test_flip is not None and len(feats.test_flip) == 40
    full = final_report(model, splits, device, bs=16)
    save_features(feats, tmp_path / "f.pt")
    loaded, why = load_features(tmp_path / "f.pt", splits, device)
    assert why == ""
    for fs in (feats, loaded):
        cached = final_report(ClassifierHead(model.classifier), fs, device, bs=16)
        for key in ("val", "test", "test_flip_avg"):
            assert cached[key] == full[key], key
    assert full["test_flip_avg"] != full["test"]  # the mirrored view is really another view
    # features of other splits (different labels) are not taken for these
    other = Splits(images(60), images(25), images(40), 5, (0.5,) * 3, (0.2,) * 3, Augment(1, True))
    assert load_features(tmp_path / "f.pt", other, device) == (None, "not features of these splits (train differs)")
