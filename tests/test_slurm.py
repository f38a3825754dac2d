"""Sweeps on a real SLURM cluster (scripts/slurm-one-node.sh; CI starts one): job arrays, a stage-2
run after its stage-1 job (afterok), option checks by sbatch --test-only, a preempted job that
requeues itself (submitit's checkpoint protocol) and resumes from the engine's checkpoint, and one
run trained by two SLURM tasks (DDP ranks, gloo)."""

import json
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.launch.dispatch import Launched, Manifest, job_paths, wait
from ltbench.launch.sweep import expand
from ltbench.results.store import RunDir, Store

pytestmark = pytest.mark.slurm
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _wait_all(results: Path, timeout: float) -> dict:
    data = Manifest(results).load()
    jobs = [Launched(None, [rid], run["jobs"][-1]) for rid, run in data["runs"].items()]
    wait(jobs, timeout_s=timeout)
    return data


def _squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def test_slurm_sweep_runs_stage2_after_its_stage1_job_and_tabulates(tmp_path):
    r = invoke("sweep", "--launcher", "slurm", "--method", "ce,wb", "--epochs", 2, "--seeds", 0,
               "--device", "cpu", "--cpus", 1, "--time", 30, "--results", tmp_path)
    assert r.exit_code == 0, r.output
    assert "launched 3 runs in 3 slurm jobs" in r.output
    data = _wait_all(tmp_path, timeout=150)

    store = Store(tmp_path)
    specs = [p.spec for p in expand(["ce", "wb"], ["digits_lt"], [0], [], sets=[], epochs=2)]
    runs = {name: store.run_dir(s) for name, s in zip(["ce", "ce/stage1", "wb"], specs, strict=True)}
    assert all(rd.is_done() for rd in runs.values()) and len(store.runs()) == 3
    job = {name: data["runs"][rd.run_id]["jobs"][-1] for name, rd in runs.items()}
    assert job["wb"]["after"] == job["ce/stage1"]["job_id"] and job["ce"]["after"] is None
    assert "_" in job["ce"]["job_id"]  # the two runs that wait for nothing: one job array
    script = job_paths(job["wb"]).submission_file.read_text()
    assert f"--dependency=afterok:{job['ce/stage1']['job_id']}" in script
    assert "--kill-on-invalid-dep=yes" in script
    env = runs["wb"].result()["env"]
    assert env["launcher"] == "slurm" and env["slurm_job_id"] and env["threads"] == 1

    s = invoke("status", "--results", tmp_path, "--sweep", "latest")
    assert s.exit_code == 0 and "3 done" in s.output and "COMPLETED" in s.output, s.output
    t = invoke("table", "--results", tmp_path, "--format", "json")
    assert t.exit_code == 0, t.output
    assert "wb" in json.loads(t.output)["rows"]


def test_sbatch_test_only_rejects_bad_options_before_submission(tmp_path):
    for args, message in ((["--partition", "nope"], "invalid partition"),
                          (["--sbatch", "--partitoin=debug"], "unrecognized option")):
        r = invoke("sweep", "--launcher", "slurm", "--method", "ce", "--epochs", 1, "--results", tmp_path,
                   *args)
        assert r.exit_code == 2, r.output
        assert "SLURM rejects these job options" in r.output and message in r.output, r.output
    assert not tmp_path.joinpath("jobs").exists()


RUN = ["--launcher", "slurm", "--method", "ce", "--backbone", "resnet32", "--imbalance", 1, "--epochs", 20,
       "--set", "train.select=val", "--device", "cpu", "--cpus", 1, "--time", 60]


def test_preempted_job_requeues_itself_and_resumes_from_its_checkpoint(tmp_path):
    ref, victim = tmp_path / "reference", tmp_path / "preempted"
    for results in (ref, victim):  # the same run twice, side by side (one core each)
        r = invoke("sweep", *RUN, "--results", results)
        assert r.exit_code == 0, r.output
    [(run_id, run)] = Manifest(victim).load()["runs"].items()
    job = run["jobs"][-1]["job_id"]
    rd = RunDir(victim / "runs" / run["benchmark"] / run["method"] / run_id)
    t0 = time.time()
    while len(rd.metrics()) < 3:  # mid-run, with a checkpoint (metrics() skips a line being written)
        assert time.time() - t0 < 90, "the job did not start"
        time.sleep(0.05)
    # preemption: submitit's handler calls RunJob.checkpoint() and requeues the job
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    t0 = time.time()
    while _squeue_state(job) != "PENDING":
        assert time.time() - t0 < 60, f"job {job} was not requeued ({_squeue_state(job)})"
        time.sleep(0.2)
    assert not rd.is_done()
    # SLURM holds a requeued job back for about 2 minutes (BeginTime); start it now
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    _wait_all(victim, timeout=150)
    _wait_all(ref, timeout=60)

    paths = job_paths(run["jobs"][-1])
    t0 = time.time()
    while True:  # the requeued job's log lines can reach the file a little after the run is done
        log = " ".join((paths.stdout.read_text() + paths.stderr.read_text()).split())  # unwrapped
        if ("Calling checkpoint method" in log and "resuming after epoch" in log) or time.time() - t0 > 30:
            break
        time.sleep(0.5)
    assert rd.is_done(), "the requeued job did not finish the run"
    assert "Calling checkpoint method" in log and "resuming after epoch" in log, log[-3000:]
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in show, show  # SLURM requeued it once (submitit's own log line may be cut off)
    assert [m["epoch"] for m in rd.metrics()] == list(range(1, 21))  # nothing lost, nothing twice
    result, reference = rd.result(), RunDir(ref / rd.path.relative_to(victim)).result()
    for key in ("val", "test", "classifier_norms", "selected"):
        assert result[key] == reference[key], key
    assert result["env"]["slurm_job_id"] == job  # the same job, requeued


def test_one_run_over_two_slurm_tasks_trains_with_ddp(tmp_path):
    """--tasks-per-node 2: submitit starts 2 tasks, each a DDP rank (gloo on the CPU); rank 0 writes."""
    r = invoke("run", "--launcher", "slurm", "--tasks-per-node", 2, "--cpus", 1, "--method", "ce",
               "--epochs", 2, "--device", "cpu", "--results", tmp_path)
    assert r.exit_code == 0, r.output
    assert "waiting for 1 slurm jobs" in r.output and "| ce " in r.output
    [rd] = Store(tmp_path).runs()
    assert [m["epoch"] for m in rd.metrics()] == [1, 2]
    dist = rd.result()["env"]["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["per_rank_batch"] == {"train": 32}
