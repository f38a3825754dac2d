"""Sweeps and launchers without a cluster: grid expansion, the plan, --dry-run, the local launcher
(submitit processes) end to end, the manifest, `ltbench status`, and one clear error for each bad input."""

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.errors import LtbenchError
from ltbench.launch import dispatch as launch
from ltbench.launch import local
from ltbench.launch.dispatch import Launched, Manifest, deal, parse_sbatch_flags
from ltbench.launch.sweep import expand, make_plan
from ltbench.results.store import Store, atomic_write_json
from ltbench.spec.run_spec import RunSpec, resolve

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _stage1_id(spec: RunSpec) -> str:
    return RunSpec.from_json(spec.parent).run_id


def test_grid_x_seeds_expands_and_shares_stage1_runs():
    grid = ["stage1.weight_decay=0,1e-3"]
    points = expand(["ce", "wb", "crt"], ["digits_lt"], [0, 1], grid, sets=[], epochs=2)
    ids = [p.spec.run_id for p in points]
    assert len(ids) == len(set(ids)) == 2 + 4 + 4 + 4  # ce per seed; 4 stage-1 runs shared by wb and crt
    by_method = {m: [p for p in points if p.spec.method == m] for m in ("wb", "crt")}
    assert {_stage1_id(p.spec) for p in by_method["wb"]} == {_stage1_id(p.spec) for p in by_method["crt"]}
    for p in by_method["wb"] + by_method["crt"]:  # the shared stage-1 run comes first, with its grid value
        parent = ids.index(_stage1_id(p.spec))
        assert parent < ids.index(p.spec.run_id)
        assert points[parent].grid == p.grid == {"stage1.weight_decay": p.grid["stage1.weight_decay"]}
        assert points[parent].spec.stages["train"]["weight_decay"] == float(p.grid["stage1.weight_decay"])
    assert [p.grid for p in points if p.spec.method == "ce" and p.spec.parent is None][:2] == [{}, {}]

    # a key applies to the methods that have it: ce gets 2 learning rates, wb (no train stage) runs once
    points = expand(["ce", "wb"], ["digits_lt"], [0], ["train.lr=0.05,0.1"], sets=[], epochs=2)
    assert sorted(p.spec.method for p in points) == ["ce", "ce", "ce", "wb"]
    # list values keep their commas inside brackets
    points = expand(["ce"], ["digits_lt"], [0], ["train.milestones=[0.5,0.75],[0.8,0.9]"],
                    sets=["train.schedule=step"], epochs=2)
    assert [p.spec.stages["train"]["milestones"] for p in points] == [[0.5, 0.75], [0.8, 0.9]]


def test_lanes_keep_each_stage1_run_before_its_stage2_runs():
    specs = [p.spec for p in expand(["ce", "wb", "crt"], ["digits_lt"], [0, 1], [], sets=[], epochs=2)]
    lanes = deal(specs, 2)
    assert len(lanes) == 2
    assert sorted(s.run_id for lane in lanes for s in lane) == sorted(s.run_id for s in specs)
    for lane in lanes:
        ids = [s.run_id for s in lane]
        for s in lane:
            if s.parent is not None:
                assert _stage1_id(s) in ids and ids.index(_stage1_id(s)) < ids.index(s.run_id)


def test_plan_states_blocked_stage2_and_dry_run_launches_nothing(tmp_path):
    from ltbench.engine.training import RunOptions, execute

    store = Store(tmp_path)
    points = expand(["ce", "wb"], ["digits_lt"], [0, 1], [], sets=[], epochs=1)
    plain0, plain1, stage1_0, wb0, stage1_1, wb1 = (p.spec for p in points)
    execute(plain0, store, RunOptions(device="cpu", live_progress=False))  # done
    failed = {"error": "Traceback ...\nValueError: boom", "time": 0}
    atomic_write_json(store.create(stage1_0).failed_file, failed)
    store.create(plain1)  # unfinished: a run directory without DONE

    plan = make_plan(points, store, Manifest(tmp_path), "local")
    rows = {r.point.spec.run_id: r for r in plan.rows}
    order = (plain0, stage1_0, wb0, plain1, stage1_1, wb1)
    assert [(rows[s.run_id].state, rows[s.run_id].action) for s in order] == [
        ("done", "skip"), ("failed", "skip"), ("new", "blocked"), ("unfinished", "launch"), ("new", "launch"),
        ("new", "launch")]
    assert rows[stage1_0.run_id].note == "ValueError: boom"
    assert rows[wb1.run_id].after_run == stage1_1.run_id
    assert plan.summary() == "6 runs: 1 done, 1 failed, 1 unfinished, 3 new -> 3 to launch (1 blocked)"
    retry = make_plan(points, store, Manifest(tmp_path), "local", retry_failed=True)
    assert [r.action for r in retry.rows].count("launch") == 5

    r = invoke("sweep", "--method", "ce,wb", "--seeds", "0,1", "--epochs", 1, "--results", tmp_path,
               "--dry-run")
    assert r.exit_code == 0, r.output
    assert plan.summary() in r.output and "dry run: nothing launched" in r.output
    assert not (tmp_path / "jobs").exists()


def _wait_done(store: Store, n: int, timeout: float = 120) -> None:
    t0 = time.time()
    while sum(rd.is_done() for rd in store.runs()) < n:
        assert time.time() - t0 < timeout, [(rd.run_id, rd.state()) for rd in store.runs()]
        time.sleep(0.5)


def _wait_jobs_gone(manifest: Manifest, timeout: float = 60) -> None:
    t0 = time.time()
    while manifest.live_local_jobs() and time.time() - t0 < timeout:
        time.sleep(0.2)


@pytest.mark.slow
def test_local_sweep_runs_in_lanes_and_a_second_sweep_launches_nothing(tmp_path):
    r = invoke("sweep", "--method", "ce,wb", "--epochs", 1, "--device", "cpu", "--max-jobs", 2,
               "--results", tmp_path)
    assert r.exit_code == 0, r.output
    assert "launched 3 runs in 2 local jobs" in r.output  # returns at once: the jobs run on their own
    store, manifest = Store(tmp_path), Manifest(tmp_path)
    _wait_done(store, 3)
    _wait_jobs_gone(manifest)

    data = manifest.load()
    plain, stage1, wb = (p.spec for p in expand(["ce", "wb"], ["digits_lt"], [0], [], sets=[], epochs=1))
    assert set(data["runs"]) == {plain.run_id, stage1.run_id, wb.run_id}
    jobs = {rid: run["jobs"][-1] for rid, run in data["runs"].items()}
    assert all(j["launcher"] == "local" and j["gpus"] == [] and j["threads"] >= 1 for j in jobs.values())
    # wb runs in the lane of its stage-1 run, after it; the plain CE run in the other lane
    assert jobs[wb.run_id]["job_id"] == jobs[stage1.run_id]["job_id"] != jobs[plain.run_id]["job_id"]
    assert data["runs"][wb.run_id]["parent"] == stage1.run_id
    [sweep] = data["sweeps"]
    assert sorted(sweep["launched"]) == sorted(data["runs"]) and sweep["launcher"] == "local"
    assert store.run_dir(wb).result()["env"]["launcher"] == "local"

    s = invoke("status", "--results", tmp_path, "--sweep", "latest")
    assert s.exit_code == 0 and "3 done" in s.output
    assert f"local {jobs[wb.run_id]['job_id']} ENDED" in s.output

    again = invoke("sweep", "--method", "ce,wb", "--epochs", 1, "--device", "cpu", "--results", tmp_path)
    assert again.exit_code == 0, again.output
    assert "3 runs: 3 done -> 0 to launch" in again.output and "nothing to launch" in again.output
    data = manifest.load()
    assert len(data["sweeps"]) == 2 and all(len(run["jobs"]) == 1 for run in data["runs"].values())

    # `run --launcher local` submits, waits, and prints the same table as an inline run
    r = invoke("run", "--launcher", "local", "--method", "ce", "--seed", "1", "--epochs", 1,
               "--device", "cpu", "--results", tmp_path)
    assert r.exit_code == 0, r.output
    assert "waiting for 1 local jobs" in r.output and "| ce " in r.output
    _wait_jobs_gone(manifest)


def _no_sbatch(monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))


@pytest.mark.parametrize("args,message", [
    (["--launcher", "slurm", "--sbatch", "--partitoin=debug"], "unknown sbatch option --partitoin"),
    (["--launcher", "slurm", "--sbatch", "--array=0-3"], "ltbench sets --array itself"),
    (["--launcher", "slurm", "--sbatch", "-p debug"], "is not a long sbatch option"),
    (["--launcher", "slurm"], "sbatch is not on PATH"),
    (["--launcher", "local", "--partition", "gpu"], "--partition: SLURM options, but --launcher is local"),
    (["--launcher", "pbs"], "--launcher 'pbs': expected one of inline, local, slurm"),
    (["--jobs-per-gpu", "0"], "--jobs-per-gpu 0: must be at least 1"),
    (["--jobs-per-gpu", "4"], "--jobs-per-gpu 4: only for a machine with CUDA GPUs"),
    (["--grid", "train.speed=1,2"], "no stage of ce, wb on digits_lt has a key 'train.speed'"),
    (["--grid", "train.lr=fast,0.1"], "--grid train.lr='fast': expected a number"),
    (["--grid", "stage1.weight_decay=0.1", "--grid", "stage1.weight_decay=0.2"], "given twice"),
    (["--grid", "train.lr"], "expected stage.key=v1,v2"),
    (["--set", "train.lr=x"], "--set train.lr='x': expected a number"),
])
def test_sweep_user_errors_are_one_line_before_anything_is_submitted(tmp_path, monkeypatch, args, message):
    _no_sbatch(monkeypatch)
    r = invoke("sweep", "--method", "ce,wb", "--epochs", 1, "--results", tmp_path / "res", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "res").exists()


def test_unwritable_results_and_run_launcher_errors(tmp_path, monkeypatch):
    _no_sbatch(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke("sweep", "--method", "ce", "--epochs", 1, "--results", blocker / "sub")
    assert r.exit_code == 2 and "--results" in r.output and "writable" in r.output
    r = invoke("run", "--method", "ce", "--epochs", 1, "--launcher", "slurm", "--results", tmp_path / "res")
    assert r.exit_code == 2 and "sbatch is not on PATH" in r.output and not (tmp_path / "res").exists()


class _Live:
    """A manifest whose live local jobs are given."""

    def __init__(self, gpus_of_live_jobs):
        self.jobs = [{"job_id": 100 + i, "gpus": g} for i, g in enumerate(gpus_of_live_jobs)]

    def live_local_jobs(self):
        return self.jobs


def test_jobs_per_gpu_fills_every_gpu_once_before_any_twice(monkeypatch):
    monkeypatch.setattr(local, "_visible_gpus", lambda: [0, 1])
    lo = launch.LaunchOptions(launcher="local")
    assert local._local_slots(lo, _Live([])) == [(0,), (1,)]
    lo = launch.LaunchOptions(launcher="local", jobs_per_gpu=3)
    assert local._local_slots(lo, _Live([])) == [(0,), (1,), (0,), (1,), (0,), (1,)]
    # two jobs of an earlier launch hold GPU 0 twice: it has one place left, GPU 1 three
    assert local._local_slots(lo, _Live([[0], [0]])) == [(1,), (1,), (0,), (1,)]
    assert local._local_slots(dataclasses.replace(lo, max_jobs=3), _Live([[0]])) == [(1,), (0,)]
    assert local._local_slots(dataclasses.replace(lo, gpus=2), _Live([])) == [(0, 1), (0, 1), (0, 1)]
    with pytest.raises(LtbenchError, match="the local launcher is busy"):
        local._local_slots(lo, _Live([[0], [1]] * 3))


def test_parse_sbatch_flags():
    assert parse_sbatch_flags("--exclusive --gres gpu:2 --mail-type=END") == {
        "exclusive": True, "gres": "gpu:2", "mail-type": "END"}
    assert parse_sbatch_flags("") == {}


def test_status_shows_the_log_of_a_job_that_died_without_a_record(tmp_path):
    """A job can die before the engine writes FAILED (e.g. missing data): status shows its log's end."""
    spec = resolve("ce", "digits_lt", epochs=1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = tmp_path / "jobs" / "local"
    folder.mkdir(parents=True)
    log = "Traceback (most recent call last):\n  ...\nValueError: boom\n"
    (folder / f"{dead.pid}_0_log.err").write_text(log)
    with open(folder / f"{dead.pid}_0_result.pkl", "wb") as f:
        pickle.dump(("error", "Traceback ...\nValueError: boom"), f)
    entry = {"launcher": "local", "job_id": str(dead.pid), "folder": str(folder), "host": os.uname().nodename,
             "gpus": []}
    Manifest(tmp_path).record("ltbench sweep", "local", [spec], [Launched(None, [spec.run_id], entry)])

    s = invoke("status", "--results", tmp_path)
    assert s.exit_code == 0, s.output
    assert "failed" in s.output and "ValueError: boom" in s.output and f"failed: {spec.run_id}" in s.output
    manifest = json.loads((tmp_path / "jobs" / "manifest.json").read_text())
    assert manifest["runs"][spec.run_id]["method"] == "ce"
    d = invoke("sweep", "--method", "ce", "--epochs", 1, "--results", tmp_path, "--dry-run")
    assert "1 runs: 1 failed -> 0 to launch" in d.output


def test_lock_of_an_earlier_run_of_the_same_slurm_job_is_not_live(tmp_path, monkeypatch):
    """A requeued SLURM job keeps its job id; the lock its killed predecessor left is its own."""
    rd = Store(tmp_path).create(resolve("ce", "digits_lt", epochs=1))
    me = os.uname().nodename

    def lock(**info):
        rd.lock_file.write_text(json.dumps({"pid": os.getpid(), "restart": 0, **info}))

    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    lock(host="another-node", job="123")
    assert not rd.lock_is_live()  # requeued onto this node
    lock(host="another-node", job="999")
    assert rd.lock_is_live()  # another job's fresh lock
    lock(host=me, job="123")
    assert not rd.lock_is_live()  # same node, earlier restart (its pid may be reused)
    lock(host=me, job="123", restart=1)
    assert rd.lock_is_live()  # this very run of the job (e.g. a second process in the same allocation)
