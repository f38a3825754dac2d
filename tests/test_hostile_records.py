"""Hostile inputs on records and on the command line (issue 23): `export -o` aimed at a run's own files
or at an existing file, a model.pt swapped in from another run, a `tensorboard` file where the event
folder goes, a metrics.jsonl cut mid-line, equal runs with unequal model.pt bytes, a reader that closes
the pipe early, and a launched job that failed before its run had a record. Each ends as one clear line
(exit status 2) or is handled; none shows a traceback.

Runs are 1- or 2-epoch CE runs on the embedded digits-LT benchmark, made once per module and copied
where a case damages them."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import DamagedRecord
from ltbench.files import damage, file_sha256, write_checked
from ltbench.launch.dispatch import Launched, Manifest
from ltbench.results.store import RunDir, Store
from ltbench.spec.run_spec import resolve

OPTS = RunOptions(device="cpu", live_progress=False)
runner = CliRunner()
MAIN = [sys.executable, "-c", "from ltbench.cli.app import main; main()"]  # the `ltbench` entry point


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_clear_line(result, *needles: str) -> None:
    """Exit status 2, and the output ends in its one `error:` line, which holds every needle; no traceback."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors == lines[-1:], result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two finished 2-epoch CE runs (seeds 0 and 1) in one store."""
    store = Store(tmp_path_factory.mktemp("hostile") / "results")
    specs = [resolve("ce", "digits_lt", epochs=2, seed=s) for s in (0, 1)]
    for spec in specs:
        execute(spec, store, OPTS)
    return store.root, [s.run_id for s in specs]


@pytest.fixture
def root(made, tmp_path) -> Path:
    """A copy of the module's store, for a case to damage."""
    copy = tmp_path / "results"
    shutil.copytree(made[0], copy, symlinks=True)
    return copy


def run_dir(root: Path, run_id: str) -> RunDir:
    return Store(root).find(run_id)


# --- export -o ----------------------------------------------------------------------------------

def test_export_refuses_to_write_into_a_run_folder(made, root, tmp_path):
    rid = made[1][0]
    rd = run_dir(root, rid)
    log = rd.metrics_file.read_bytes()
    (tmp_path / "link.csv").symlink_to(rd.metrics_file)
    (tmp_path / "linked-run").symlink_to(rd.path)
    other = tmp_path / "other-store"
    shutil.copytree(root, other)
    other_log = next(other.glob(f"runs/*/*/{rid}/metrics.jsonl"))
    targets = [rd.metrics_file, rd.path / "result.json", rd.path / "new.csv", tmp_path / "link.csv",
               tmp_path / "linked-run" / "metrics.jsonl",
               rd.path / ".." / ".." / ".." / "x.csv",  # `..` that stays inside runs/
               root / "jobs" / "manifest.json", other_log]
    for target in targets:
        for force in ([], ["--force"]):
            r = invoke("export", rid[:6], "-o", target, *force, "--results", root)
            one_clear_line(r, f"-o {target}:", "write the export elsewhere")
    assert rd.metrics_file.read_bytes() == log and other_log.read_bytes() == log
    assert not (rd.path / "new.csv").exists() and not (root / "runs" / "x.csv").exists()
    assert rd.state() == "done" and len(rd.metrics()) == 2


def test_export_replaces_an_existing_file_only_with_force(made, tmp_path):
    root, (rid, _) = made
    out = tmp_path / "mine.csv"
    out.write_text("my own notes\n")
    one_clear_line(invoke("export", rid, "-o", out, "--results", root), "exists; pass --force")
    assert out.read_text() == "my own notes\n"
    r = invoke("export", rid, "-o", out, "--force", "--results", root)
    assert r.exit_code == 0, r.output
    assert out.read_text().splitlines()[0].startswith("epoch,stage,loss") and len(out.read_text().splitlines()) == 3
    one_clear_line(invoke("export", rid, "-o", tmp_path, "--results", root), "is a folder")
    one_clear_line(invoke("export", rid, "-o", tmp_path / "no" / "x.csv", "--results", root), "does not exist")
    new = tmp_path / "new.jsonl"
    assert invoke("export", rid, "--format", "jsonl", "-o", new, "--results", root).exit_code == 0
    assert [json.loads(ln)["epoch"] for ln in new.read_text().splitlines()] == [1, 2]


# --- model.pt from another run ----------------------------------------------------------------------

def test_eval_refuses_a_model_swapped_in_from_another_run(made, root):
    a, b = (run_dir(root, rid) for rid in made[1])
    assert a.model_file.read_bytes() != b.model_file.read_bytes()
    for name in ("model.pt", "model.pt.sha256"):  # the other run's weights, with their matching checksum
        shutil.copy(b.path / name, a.path / name)
    assert damage(a.model_file) is None  # the sidecar alone cannot tell
    r = invoke("eval", a.run_id, "--dataset", "digits_lt", "--device", "cpu", "--results", root)
    one_clear_line(r, f"{a.model_file} is not the model that result.json records",
                   f"put run {a.run_id}'s own model.pt back")
    assert not (root / "evals").exists()  # no record of the wrong model
    for name in ("model.pt", "model.pt.sha256"):  # its own again: scored
        shutil.copy(made[0] / a.path.relative_to(root) / name, a.path / name)
    assert invoke("eval", a.run_id, "--dataset", "digits_lt", "--device", "cpu", "--results", root).exit_code == 0


# --- TensorBoard folder that is a file ------------------------------------------------------------

def test_a_tensorboard_file_where_the_event_folder_goes_is_one_clear_line(tmp_path):
    pytest.importorskip("tensorboard")
    store = Store(tmp_path / "results")
    spec = resolve("ce", "digits_lt", epochs=1)
    execute(spec, store, OPTS)
    rd = store.run_dir(spec)
    rd.done_file.unlink()  # an unfinished run that resumes
    for bad in (rd.path / "tensorboard", rd.path / "tensorboard" / "train"):
        (rd.path / "tensorboard").unlink(missing_ok=True)
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_text("not a folder\n")
        r = invoke("run", "-m", "ce", "--epochs", 1, "--log", "tensorboard", "--device", "cpu", "--results",
                   store.root)
        one_clear_line(r, f"{bad} is a file, not a folder", "Move or delete that file")
        assert not rd.failed_file.exists() and rd.checkpoint_file.exists()
    shutil.rmtree(rd.path / "tensorboard")
    r = invoke("run", "-m", "ce", "--epochs", 1, "--log", "tensorboard", "--device", "cpu", "--results", store.root)
    assert r.exit_code == 0 and rd.is_done(), r.output


# --- metrics.jsonl cut mid-line -------------------------------------------------------------------

def test_a_finished_runs_metrics_cut_mid_line_names_the_line_and_the_recovery(made, root):
    rd = run_dir(root, made[1][0])
    data = rd.metrics_file.read_bytes()
    first = data.index(b"\n") + 1
    rd.metrics_file.write_bytes(data[: first + 20])  # line 2 ends mid-record
    with pytest.raises(DamagedRecord, match=r"metrics.jsonl is cut at line 2, mid-record; "):
        rd.metrics()
    r = invoke("export", rd.run_id, "--results", root)
    one_clear_line(r, "is cut at line 2", f"sed -i '2,$d' {rd.metrics_file}", "--force")
    s = invoke("status", "--results", root)
    assert s.exit_code == 0 and "is cut at line 2" in s.output and "2 done" in s.output, s.output
    rd.metrics_file.write_bytes(data[:first] + b"[]\n" + data[first:])  # a whole line that is not a record
    with pytest.raises(DamagedRecord, match=r"line 2 is not a JSON record; the same `ltbench run` command with "
                                            r"--force"):
        rd.metrics()
    rd.metrics_file.write_bytes(data[: first + 20])
    rd.done_file.unlink()  # not done: a cut last line is one being written (or cut by a kill); left out
    assert len(rd.metrics()) == 1


# --- equal runs, equal model.pt -----------------------------------------------------------------------

def test_two_runs_of_one_spec_give_equal_model_sha256(made, tmp_path):
    spec = resolve("ce", "digits_lt", epochs=2, seed=0)
    result = execute(spec, Store(tmp_path / "again"), OPTS)
    first = Store(made[0]).run_dir(spec)
    assert result["model_sha256"] == json.loads(first.result_file.read_text())["model_sha256"]
    assert (tmp_path / "again").joinpath(first.path.relative_to(made[0]), "model.pt").read_bytes() \
        == first.model_file.read_bytes()


def test_a_model_written_by_an_older_ltbench_still_verifies(tmp_path):
    """Files saved through their name (the archive then named after the temporary file) keep their
    sidecar and their result.json model_sha256 valid: nothing rehashes them differently."""
    rd = RunDir(tmp_path / "runs" / "digits_lt" / "ce" / "abc")
    rd.path.mkdir(parents=True)
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    old = write_checked(rd.model_file, lambda tmp: torch.save(state, tmp))  # how it was written before
    rd.result_file.write_text(json.dumps({"model_sha256": old}))
    assert damage(rd.model_file) is None and rd.model_sha256() == (old, None) and file_sha256(rd.model_file) == old
    assert rd.save_model(state) != old  # a new save: the reproducible bytes (another file, another sha256)
    assert rd.model_sha256()[1].startswith("not the model that result.json records")


# --- a reader that closes the pipe early ----------------------------------------------------------------

def test_a_closed_pipe_neither_fails_the_run_nor_prints_a_traceback(tmp_path):
    root = tmp_path / "results"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([*MAIN, "run", "-m", "ce", "--epochs", "2", "--device", "cpu", "--results", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)  # `2>&1 | head -1`
    first = proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0 and first.startswith(b"run 1/1 ce on digits-LT")
    (rd,) = Store(root).runs()
    assert rd.is_done() and not rd.failed_file.exists() and len(rd.metrics()) == 2
    for args in (["table", "--results", str(root)], ["export", rd.run_id, "--results", str(root)]):
        proc = subprocess.Popen([*MAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        proc.stdout.close()  # `| head -0`: gone before the first line
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    export = [*MAIN, "export", rd.run_id, "--results", str(root)]
    with open("/dev/full", "w") as full:  # `> /dev/full`, then `>&-`: one clear line each, exit status 2
        for where, expect in ((dict(stdout=full), "error: cannot write to standard output (No space left"),
                              (dict(preexec_fn=lambda: os.close(1)), "error: standard output is closed; pass -o")):
            done = subprocess.run(export, stderr=subprocess.PIPE, env=env, timeout=120, **where)
            assert done.returncode == 2 and done.stderr.decode().startswith(expect), done.stderr
            assert len(done.stderr.decode().splitlines()) == 1


# --- status of a job that failed before its run had a record ---------------------------------------------

def _dead_pid() -> str:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return str(dead.pid)


SUBMITIT_TAIL = """submitit ERROR (2026-01-01 00:00:00,000) - Submitted job triggered an exception
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/venv/site-packages/submitit/core/submission.py", line 55, in process_job
    result = delayed.result()
             ^^^^^^^^^^^^^^^^
  File "/work/ltbench/launch/jobs.py", line 105, in __call__
    raise RuntimeError(f"{{len(failed)}} of {{len(specs)}} runs failed: "
RuntimeError: {summary}
"""


def test_status_shows_one_line_per_failed_job_never_a_traceback(tmp_path):
    specs = [resolve("ce", "digits_lt", epochs=1, seed=s) for s in (0, 1, 2)]
    a, b, c = (s.run_id for s in specs)
    missing = "CIFAR-10 files not found: /tmp/empty/cifar-10-batches-py lacks data_batch_1; put it there"
    folder = tmp_path / "jobs" / "local"
    folder.mkdir(parents=True)
    job1, job2 = _dead_pid(), _dead_pid()
    # job 1 ran a and b: a's data was missing (ltbench's own line), b raised inside the data loader
    (folder / f"{job1}_0_log.err").write_text(
        f"error: run {a}: {missing}\nTraceback (most recent call last):\n  File \"x.py\", line 1, in load\n"
        f"    raise KeyError('label')\nKeyError: 'label'\n"
        + SUBMITIT_TAIL.format(summary=f"2 of 2 runs failed: {a}: LtbenchError: {missing}; {b}: KeyError: 'label'"))
    # job 2 (run c) died before ltbench ran: only submitit's traceback
    (folder / f"{job2}_0_log.err").write_text(SUBMITIT_TAIL.format(summary="pickle data was truncated")
                                              .replace("RuntimeError:", "_pickle.UnpicklingError:"))
    for job in (job1, job2):
        with open(folder / f"{job}_0_result.pkl", "wb") as f:
            pickle.dump(("error", "Traceback ...\nRuntimeError: failed"), f)
    entry = {"launcher": "local", "folder": str(folder), "host": os.uname().nodename, "gpus": []}
    Manifest(tmp_path).record("ltbench sweep", "local", specs, [
        Launched(None, [a, b], {**entry, "job_id": job1}), Launched(None, [c], {**entry, "job_id": job2})])
    s = invoke("status", "--results", tmp_path, "--wide")  # one line a failed run
    assert s.exit_code == 0, s.output
    failed = [ln for ln in s.output.splitlines() if ln.startswith("failed: ")]
    assert sorted(failed) == sorted([f"failed: {a} (ce on digits_lt, seed 0): {missing}",
                      f"failed: {b} (ce on digits_lt, seed 1): KeyError: 'label'",
                      f"failed: {c} (ce on digits_lt, seed 2): _pickle.UnpicklingError: pickle data was truncated"]), \
        s.output
    assert "Traceback" not in s.output and 'File "' not in s.output and "raise " not in s.output


def test_status_shows_the_last_line_of_a_failed_runs_traceback(made, root):
    rd = run_dir(root, made[1][0])
    rd.done_file.unlink()
    tb = 'Traceback (most recent call last):\n  File "/x/progress.py", line 50, in end_epoch\n    print(...)\n' \
         "BrokenPipeError: [Errno 32] Broken pipe\n"
    rd.failed_file.write_text(json.dumps({"error": tb, "time": 1.0}))
    s = invoke("status", "--results", root, "--wide")  # one line a failed run
    assert s.exit_code == 0, s.output
    assert f"failed: {rd.run_id} (ce on digits_lt, seed 0): BrokenPipeError: [Errno 32] Broken pipe" in s.output
    assert "Traceback" not in s.output and 'File "' not in s.output, s.output


def test_survive_closed_output_wraps_real_streams_only(monkeypatch):
    from ltbench import progress

    fake = __import__("io").StringIO()
    monkeypatch.setattr(sys, "stdout", fake)
    progress.survive_closed_output()
    assert sys.stdout is fake  # a test's capture (no file descriptor) is left alone
    r, w = os.pipe()
    stream = os.fdopen(w, "w")
    safe = progress.ClosedSafe(stream)
    os.close(r)
    safe.write("x" * 100)
    safe.flush()  # EPIPE: silenced, not raised
    assert safe.closed_by_reader
    safe.write("more\n")
    safe.flush()
    stream.close()

