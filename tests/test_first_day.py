"""What a first day with the tool stumbles on: settings that do nothing or are wrong are refused with
one line before any training, messages point the right way, records are shared under the user's
umask, Ctrl-C says how to go on, and `status` / `plot wd` tell runs apart."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ltbench.cli.app import RESUME_HINT, app
from ltbench.results.plots import wd_series
from ltbench.results.store import Store
from ltbench.spec.run_spec import resolve

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# input -> a piece of the one line printed (items 4 and 5 of the issue)
REFUSED = [
    (["run", "-m", "ce", "--set", "train.lr=0.1", "--set", "train.lr=0.2"],
     "--set 'train.lr=0.2': train.lr is already set by --set 'train.lr=0.1'; keep one of them."),
    (["run", "-m", "ce", "--set", "train.lr=0.1", "--set", "lr=0.2"], "train.lr is already set by --set 'train.lr=0.1'"),
    (["run", "-m", "wb", "--set", "stage1.lr=0.1", "--set", "stage1.lr=0.2"], "stage1.lr is already set"),
    (["run", "--method", ""], "--method '': names nothing; leave --method out for the default"),
    (["run", "--dataset", " , "], "--dataset ' , ': names nothing"),
    (["run", "-m", "ce", "--set", "warmup_epochs=40"], "train.warmup_epochs=40: must be below train.epochs=40"),
    (["run", "-m", "wb", "--set", "stage1.warmup_epochs=50"], "stage1.warmup_epochs=50: must be below stage1.epochs=40"),
    (["run", "-m", "ce", "--set", "train.milestones=[0.5,0.7]"],
     "--set 'train.milestones=[0.5,0.7]': train.schedule=cosine ignores milestones (only schedule=step reads it); "
     "add --set train.schedule=step, or drop it."),
    (["run", "-m", "ce", "--set", "base_batch=512"],
     "--set 'base_batch=512': train.lr_scaling=none ignores base_batch (only lr_scaling=linear reads it)"),
    (["run", "-m", "ce", "--set", "gamma=0.5"], "ignores gamma"),
    (["run", "-m", "ce", "--imbalance", "1000"],
     "digits_lt: imbalance ratio 1000 leaves class 7 (and 2 more) with no training image (n_i = int(100 * "
     "IR^(-i/9))); the largest ratio that keeps one image per class is 100: pass --imbalance 100 or less."),
    (["run", "-m", "ce", "-d", "cifar100_lt", "--imbalance", "501"],
     "cifar100_lt: imbalance ratio 501 leaves class 99 with no training image"),
    (["run", "-m", "ce", "--set", ".lr=0.1"], "--set '.lr=0.1': nothing before the '.'; name the stage"),
    (["run", "-m", "ce", "--seed", "99999999999999999999"],
     "--seed 99999999999999999999: a seed must lie in 0..9223372036854775807 (2^63-1)."),
    (["run", "-m", "ce", "--seed", "-1"], "--seed -1: a seed must lie in 0..9223372036854775807"),
    (["run", "-m", "ce", "--epochs", "-1"], "--epochs -1: must be at least 1 (it sets the epochs of the first training stage)."),
    (["run", "-m", "wb", "--set", "stage1.weight_decay=abc"],
     "--set stage1.weight_decay='abc': expected a number (the default is 0.0)."),
    (["table", "-d", "foo"], "unknown benchmark 'foo'."),
    (["table", "-m", "wbb"], "unknown method 'wbb'. Did you mean 'wb'?"),
    (["sweep", "-m", "ce", "--grid", "train.milestones=[0.5],[0.6]", "--dry-run"],
     "--grid 'train.milestones=[0.5]': train.schedule=cosine ignores milestones (only schedule=step reads it); add --set train.schedule=step"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_refused_with_one_line_before_anything_is_written(tmp_path, args, message):
    line = one_line_error(invoke(*args, "--results", tmp_path / "results"))
    assert message in line
    assert not (tmp_path / "results").exists()
    print(f"{' '.join(args)} -> {line}")


def test_a_valid_step_schedule_still_takes_milestones():
    spec = resolve("ce", "digits_lt", sets=["train.schedule=step", "train.milestones=[0.5,0.7]", "gamma=0.5"])
    assert spec.stages["train"]["milestones"] == [0.5, 0.7] and spec.stages["train"]["gamma"] == 0.5
    assert resolve("ce", "digits_lt", imbalance=100).data["imbalance"] == 100


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_missing_cuda_fails_before_any_run_is_announced(tmp_path):
    r = invoke("run", "-m", "ce", "--device", "cuda", "--results", tmp_path / "results")
    assert one_line_error(r) == "error: --device cuda: CUDA is not available on this machine; use --device cpu or auto."
    assert "run 1/1" not in r.output and not (tmp_path / "results").exists()


def test_version_list_singular_and_plain_help():
    from ltbench import __version__

    assert invoke("--version").output.strip() == f"ltbench {__version__}"
    assert invoke("list", "method").output == invoke("list", "methods").output
    for command in ("run", "sweep", "table", "status", "plot", "list"):
        text = runner.invoke(app, [command, "--help"], terminal_width=120, prog_name="ltbench").output
        assert "<bool>" not in text and "Usage: ltbench" in text, text
    assert "LTBENCH_DATA" in runner.invoke(app, ["run", "--help"], terminal_width=120).output


def test_square_brackets_in_messages_survive_rich():
    # rich would read '[0.5]' or '[plot]' as markup and drop it from the line
    r = invoke("run", "-m", "ce", "--set", "train.milestones=[0.5]")
    assert "'train.milestones=[0.5]'" in one_line_error(r)


def test_status_tells_runs_apart_and_run_prints_roles(tmp_path):
    first = invoke("run", "-m", "crt,wb", "--epochs", 2, "--set", "stage2.epochs=1", "--results", tmp_path)
    assert first.exit_code == 0, first.output
    assert "run 1/2, first ce (stage 1 of crt, wb) on digits-LT IR20" in first.output
    assert "run 2/2, first" not in first.output  # stage 1 is trained once
    posthoc = invoke("run", "-m", "tau_norm", "--epochs", 2, "--results", tmp_path)
    assert "post-hoc: no training of its own" in posthoc.output and "selected epoch None" not in posthoc.output
    assert invoke("run", "-m", "ce", "--epochs", 2, "--set", "train.lr=0.1", "--results", tmp_path).exit_code == 0
    out = runner.invoke(app, ["status", "--results", str(tmp_path)], env={"COLUMNS": "200"}).output  # one line a run
    rows = {line.split()[2]: line for line in out.splitlines()[2:] if line.count(" ") > 5 and "done" in line}
    lr_row = next(line for line in out.splitlines() if "train.lr=0.1" in line)
    assert "train.epochs=2" in lr_row and " ce " in lr_row
    stage1 = next(line for line in out.splitlines() if "stage 1 of crt, tau_norm, wb" in line)
    assert "train.epochs=2" in stage1 and "train.lr" not in stage1
    assert "stage2.epochs=1" in rows["wb"] and "post-hoc" in rows["tau_norm"]
    accuracies = [line.split()[-1] for line in rows.values()]
    assert all(len(a.split(".")[1]) == 2 for a in accuracies), accuracies  # one format: two decimals


def test_spec_origins_of_stage1_runs_and_backbones(tmp_path):
    spec = resolve("wb", "digits_lt", epochs=3)
    assert spec.origins["backbone"] == "stage-1 run"
    parent = spec.parent_spec()
    assert parent.origins["train.weight_decay"] == "method wb (stage 1)"
    assert parent.origins["train.epochs"] == "--epochs" and parent.origins["backbone"] == "benchmark"
    assert resolve("ce", "digits_lt", backbone="resnet32").origins["backbone"] == "--backbone"
    assert resolve("ce", "digits_lt").origins["backbone"] == "benchmark"
    Store(tmp_path).create(parent)
    written = json.loads(Store(tmp_path).run_dir(parent).spec_file.read_text())
    assert written["origins"] == parent.origins and written["origins"]


def _result(spec, top1):
    return {"spec": spec.canonical(), "method": spec.method, "benchmark": spec.benchmark, "label": spec.label(),
            "test": {"top1": top1}}


def test_plot_wd_joins_runs_that_differ_in_weight_decay_alone():
    results = [_result(resolve("ce", "digits_lt", epochs=e, seed=s, sets=[f"train.weight_decay={wd}"]), e + wd + s)
               for e in (10, 40) for wd in (0.0, 1e-3) for s in (0, 1)]
    results += [_result(resolve("wb", "digits_lt", epochs=10, sets=[f"stage1.weight_decay={wd}"]), 50.0)
                for wd in (0.0, 5e-3)]
    series = wd_series(results)
    assert set(series) == {"ce, digits-LT IR20 (train.epochs=10)", "ce, digits-LT IR20 (train.epochs=40)",
                           "wb, digits-LT IR20"}
    assert series["ce, digits-LT IR20 (train.epochs=40)"] == {0.0: [40.0, 41.0], 1e-3: [40.001, 41.001]}
    assert set(series["wb, digits-LT IR20"]) == {0.0, 5e-3}


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_records_checkpoints_and_features_follow_the_umask(tmp_path, umask):
    results = tmp_path / "shared"
    cmd = [sys.executable, "-m", "ltbench.cli.app", "run", "-m", "crt", "--epochs", "1", "--set", "stage2.epochs=1",
           "--device", "cpu", "--results", str(results)]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=lambda: os.umask(umask))
    assert out.returncode == 0, out.stderr[-3000:]
    files = [p for p in results.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"spec.json", "metrics.jsonl", "checkpoint.pt", "model.pt", "result.json", "DONE"} <= names
    assert any(p.parent.name == "features" for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, (p, oct(p.stat().st_mode))
    for d in [p for p in results.rglob("*") if p.is_dir()]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask, (d, oct(d.stat().st_mode))


def test_ctrl_c_prints_one_line_and_the_same_command_resumes(tmp_path):
    cmd = [sys.executable, "-m", "ltbench.cli.app", "run", "-m", "ce", "--epochs", "150", "--device", "cpu",
           "--results", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = None
    while proc.poll() is None:  # wait for two finished epochs, however slow the machine is
        metrics = metrics or next(tmp_path.glob("runs/*/*/*/metrics.jsonl"), None)
        if metrics is not None and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate()
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == RESUME_HINT and "Traceback" not in stderr
    rd = Store(tmp_path).runs()[0]
    assert not rd.is_done() and rd.checkpoint_file.exists() and not rd.lock_file.exists()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0 and ": resuming" in again.stderr, again.stderr[-2000:]
    assert rd.is_done() and [m["epoch"] for m in rd.metrics()] == list(range(1, 151))


def test_a_failed_download_leaves_no_folder_or_partial_file(tmp_path, monkeypatch):
    import urllib.error

    import torchvision

    def refused(root, train, download):  # a download that wrote part of the archive, then lost the network
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "cifar-100-python.tar.gz").write_bytes(b"partial")
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", refused)
    fresh = tmp_path / "new" / "data"
    r = invoke("run", "-m", "ce", "-d", "cifar100_lt", "--data-root", fresh, "--results", tmp_path / "results")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "the download failed (URLError" in r.output.strip().splitlines()[-1]
    assert not (tmp_path / "new").exists() and not (tmp_path / "results").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("the user's")
    assert invoke("run", "-m", "ce", "-d", "cifar100_lt", "--data-root", kept).exit_code == 2
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]
    monkeypatch.setenv("LTBENCH_SPLIT_URL", (tmp_path / "no-mirror").as_uri())
    r = invoke("data", "prepare", "places_lt", "--root", tmp_path / "lists")
    assert "could not download Places_LT_train.txt" in r.output and not (tmp_path / "lists").exists()
