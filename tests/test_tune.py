"""`ltbench tune` (issue 25) on digits-LT with a few epochs: search spaces and one clear line for each bad
input, studies whose trials are ordinary runs (the run id of `ltbench run --set`, reused on a rerun, shared
stage-1 runs), a study that continues after its process was killed (the lost trial failed without counting
and retried, its run resumed), pruning from per-epoch validation (a PRUNED record that tables never take and
`ltbench run` trains on), local workers sharing one budget, a SLURM job array of workers, the tuned rows of
`ltbench table` with their effort, `ltbench status` and `ltbench plot tune`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.results.store import Store
from ltbench.spec.request import RunRequest
from ltbench.spec.run_spec import resolve
from ltbench.tune.planner import plan_studies
from ltbench.tune.space import Param, grid_space, space_for
from ltbench.tune.study import journal_file, load_summary, open_study

runner = CliRunner()
CE = ["tune", "-m", "ce", "--device", "cpu", "--sampler", "random"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def summary(results: Path, name: str):
    return load_summary(journal_file(results, name))


@pytest.mark.parametrize("args, message", [
    (["-m", "ce", "--search", "train.lrr=0.01..0.1"], "no stage of ce has this key (did you mean 'train.lr'"),
    (["-m", "ce", "--search", "stage2.weight_decay=log:1e-3..1"], "ce has no stage 'stage2' (stages: train)"),
    (["-m", "tau_norm", "--search", "stage2.lr=0.01..0.1"], "tau_norm has no stage 'stage2'"),
    (["-m", "ce", "--search", "train.lr=a..0.1"], "'a' is not a number"),
    (["-m", "ce", "--search", "train.lr=0.1..0.01"], "the range 0.1..0.01 is empty"),
    (["-m", "ce", "--search", "train.lr=0.1"], "expected a range LO..HI"),
    (["-m", "ce", "--search", "train.lr=choice:"], "choice: needs values"),
    (["-m", "ce", "--search", "train.weight_decay=log:0..0.1"], "a log range must lie above 0, and 0..0.1 includes 0"),
    (["-m", "ce", "--search", "train.weight_decay=-1..0.1"], "weight_decay=-1.0: must not be negative"),
    (["-m", "ce", "--search", "train.momentum=0.5..1"], "momentum=1.0: must lie in [0, 1)"),
    (["-m", "ce", "--search", "train.epochs=1..2.5"], "'2.5' is not an integer"),
    (["-m", "ce", "--search", "train.schedule=0..1"], "search it with train.schedule=choice:cosine,step"),
    (["-m", "ce", "--search", "train.schedule=choice:cosine,linear"], "must be one of cosine, step, constant"),
    (["-m", "ce", "--search", "data.imbalance=10..100"], "a parameter of the benchmark"),
    (["-m", "ce", "--search", "lr"], "expected STAGE.KEY=[log:|int:|choice:]LO..HI"),
    (["-m", "ce", "--search", "train.lr=0.01..0.1", "--search", "lr=0.01..0.2"], "train.lr: given twice"),
    (["-m", "wb", "--search", "weight_decay=log:1e-4..1e-1"], "wb has 'weight_decay' in stage1 and stage2; say which"),
    (["-m", "ce", "--search", "train.mix_alpha=0.1..1"], "train.mix=none ignores mix_alpha"),
    (["-m", "ce", "--set", "train.lr=0.1", "--search", "train.lr=0.01..0.2"], "is already set by --set"),
    (["-m", "ce", "--epochs", "3", "--search", "train.epochs=int:2..5"], "--epochs 3 and --search train.epochs"),
    (["-m", "ce", "--trials", "0"], "--trials 0: must be at least 1"),
    (["-m", "ce", "--sampler", "cmaes"], "--sampler 'cmaes': expected one of tpe, gp, random, grid"),
    (["-m", "ce", "--pruner", "hyperband"], "--pruner 'hyperband': expected one of none, median, asha"),
    (["-m", "ce", "--seed", "0,1"], "a study tunes on one seed"),
    (["-m", "ce", "--jobs", "2", "--launcher", "inline"], "add --launcher local"),
    (["-m", "ce", "--study", "a/b"], "--study 'a/b': letters, digits"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    r = invoke("tune", *args, "--results", tmp_path / "res", "--device", "cpu")
    assert message in error_line(r)
    assert not (tmp_path / "res").exists()


def test_spaces_parse_round_and_make_grids():
    spec = resolve("wb", "digits_lt")
    params = space_for(spec, [])  # wb's own: the two weight decays (the search)
    assert [p.describe() for p in params] == ["stage1.weight_decay=log:0.0001..0.1", "stage2.weight_decay=log:0.001..1"]
    p = Param("train.lr", "float", 0.001, 0.12351, log=True)
    assert p.rounded(0.0123456) == 0.0123 and p.rounded(0.12351) == 0.12351  # 3 digits, kept inside the range
    assert grid_space(params, 9) == {"stage1.weight_decay": [0.0001, 0.00316, 0.1], "stage2.weight_decay": [0.001, 0.0316, 1.0]}
    [c] = space_for(resolve("ce", "digits_lt"), ["schedule=choice:cosine,step", "stage1.x=1..2"])
    assert c.key == "train.schedule" and c.grid(5) == ["cosine", "step"]
    # every registered method declares a space that plans on digits-LT (each end of each range checked)
    res = Path("unused")
    plans = plan_studies(RunRequest(method="all", results=res), [], 5, "tpe", "none", None, Store(res))
    assert all(p.space for p in plans) and len({p.name for p in plans}) == len(plans)


def test_a_study_name_is_refused_for_another_space_or_fixed_settings(tmp_path):
    store = Store(tmp_path)
    request = RunRequest(method="ce", epochs=2, results=tmp_path)
    [plan] = plan_studies(request, ["train.lr=log:0.01..0.1"], 3, "tpe", "none", "mine", store)
    open_study(tmp_path, plan, create=True)
    r = invoke(*CE, "--epochs", 2, "--search", "train.lr=log:0.01..0.2", "--study", "mine", "--results", tmp_path)
    assert "differs from this command in its search space (train.lr=log:0.01..0.1 there, train.lr=log:0.01..0.2 " \
        "here)" in error_line(r)
    r = invoke(*CE, "--epochs", 3, "--search", "train.lr=log:0.01..0.1", "--study", "mine", "--results", tmp_path)
    assert "in its fixed settings" in error_line(r) and "pick another --study name" in r.output
    r = invoke(*CE, "--epochs", 2, "--search", "train.lr=log:0.01..0.1", "--study", "mine", "--results", tmp_path,
               "--dry-run", "--sampler", "tpe")
    assert r.exit_code == 0 and "study mine: ce on digits-LT IR20, 20 trials, TPE, no pruner; continues" in r.output


def test_trials_are_ordinary_runs_reused_on_rerun(tmp_path):
    grid = ["--sampler", "grid", "--search", "train.lr=choice:0.05,0.1", "--epochs", 1, "--results", tmp_path]
    r = invoke("tune", "-m", "ce", "--device", "cpu", "--trials", 2, "--study", "first", *grid)
    assert r.exit_code == 0, r.output
    s = summary(tmp_path, "first")
    assert s.count("complete") == 2 and s.counted == 2
    for t in s.trials:  # the run of `ltbench run --set KEY=VALUE`, with the value the trial shows
        assert t.run_id == resolve("ce", "digits_lt", epochs=1, sets=t.sets).run_id
        assert Store(tmp_path).find(t.run_id).is_done()
    # the same command again: the budget is spent, nothing runs
    r = invoke("tune", "-m", "ce", "--device", "cpu", "--trials", 2, "--study", "first", *grid)
    assert r.exit_code == 0 and "-> run" not in r.output and "2/2 trials" in r.output, r.output
    # another study that meets the same runs reuses them (content addressing), training nothing
    r = invoke("tune", "-m", "ce", "--device", "cpu", "--trials", 2, "--study", "second", *grid)
    assert r.exit_code == 0 and r.output.count("(done, reused)") == 2 and "epoch 1/1" not in r.output, r.output
    assert len(Store(tmp_path).runs()) == 2


def test_stage1_is_shared_and_tables_show_tuned_rows_with_their_effort(tmp_path):
    common = ["-m", "wb", "--epochs", 1, "--set", "stage2.epochs=1", "--device", "cpu", "--results", tmp_path]
    r = invoke("tune", *common, "--search", "stage2.weight_decay=choice:0.01,0.1", "--sampler", "grid",
               "--trials", 4, "--study", "wbs")
    assert r.exit_code == 0 and "2 trials (--trials 4; the grid has 2 points)" in r.output, r.output
    runs = {rd.run_id: rd.spec() for rd in Store(tmp_path).runs()}
    assert sorted(s["method"] for s in runs.values()) == ["ce", "wb", "wb"]  # one stage-1 run for both trials
    assert summary(tmp_path, "wbs").count("complete") == 2 == len(summary(tmp_path, "wbs").trials)  # not 4
    r = invoke("run", *common)  # the recipe's wb: its stage2.weight_decay (0.1) is one of the trials
    assert r.exit_code == 0, r.output
    t = json.loads(invoke("table", "--results", tmp_path, "-d", "digits_lt", "--format", "json").output)
    assert {"wb", "wb (tuned)"} <= set(t["rows"])
    tuned = t["rows"]["wb (tuned)"]["digits-LT IR20"]
    assert tuned["effort"]["trials"] == 2 and tuned["effort"]["device_s"] > 0
    assert t["rows"]["wb"]["digits-LT IR20"]["effort"]["configurations"] == 1  # the trial at 0.01 stays out
    note = next(n for n in t["notes"] if n.startswith("wb (tuned)"))
    assert "tuned on validation: 2 trials, grid, no pruner; stage2.weight_decay=" in note
    text = invoke("table", "--results", tmp_path, "-d", "digits_lt").output
    assert "| effort" in text and "2 trials, " in text and "1 config, " in text, text
    s = invoke("status", "--results", tmp_path).output
    assert "wbs: wb on digits-LT IR20 (grid, no pruner): 2/2 trials; best val" in s, s
    r = invoke("plot", "tune", "wb", "--results", tmp_path, "-o", tmp_path / "study.png")
    assert r.exit_code == 0 and (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG", r.output
    assert "name one study" in error_line(invoke("plot", "tune", "--results", tmp_path))


def test_pruned_trial_is_recorded_never_tabulated_and_run_trains_it_on(tmp_path):
    store = Store(tmp_path)
    args = ["--epochs", 4, "--search", "train.lr=choice:0.05,0.00001", "--trials", 2, "--pruner", "asha",
            "--study", "p", "--results", tmp_path]
    request = RunRequest(method="ce", epochs=4, results=tmp_path)
    [plan] = plan_studies(request, ["train.lr=choice:0.05,0.00001"], 2, "random", "asha", "p", store)
    study = open_study(tmp_path, plan, create=True)
    for lr in ("0.05", "1e-05"):  # the good value first: ASHA stops the other after its first epoch
        study.enqueue_trial({"train.lr": lr})
    r = invoke(*CE, *args)
    assert r.exit_code == 0 and "pruned after epoch 1" in r.output, r.output
    s = summary(tmp_path, "p")
    assert [t.state for t in s.trials] == ["complete", "pruned"] and list(s.trials[1].intermediate) == [1]
    rd = store.find(s.trials[1].run_id)
    assert rd.state() == "pruned" and not rd.is_done() and len(rd.metrics()) == 1
    assert json.loads(rd.pruned_file.read_text())["study"] == "p"
    assert "pruned" in invoke("status", "--results", tmp_path).output
    t = json.loads(invoke("table", "--results", tmp_path, "--format", "json").output)
    cells = {row: cells["digits-LT IR20"] for row, cells in t["rows"].items()}  # lr 0.05 is ce's own: its recipe row
    assert cells["ce"]["effort"]["configurations"] == 1 and cells["ce (tuned)"]["effort"]["trials"] == 2
    assert set(cells) == {"ce", "ce (tuned)"}
    # outside tune the pruned configuration is not done: `ltbench run` trains it to the end from its checkpoint
    r = invoke("run", "-m", "ce", "--epochs", 4, "--set", "train.lr=1e-05", "--device", "cpu", "--results", tmp_path)
    assert r.exit_code == 0 and "resuming after epoch 1" in r.output, r.output
    assert rd.is_done() and not rd.pruned_file.exists() and [m["epoch"] for m in rd.metrics()] == [1, 2, 3, 4]


def _wait_for(condition, what: str, timeout: float = 180.0):
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killed_study_continues_and_counts_each_trial_once(tmp_path):
    cmd = [sys.executable, "-m", "ltbench.cli.app", *CE, "--epochs", 5, "--trials", 1, "--study", "k",
           "--results", str(tmp_path)]
    store = Store(tmp_path)

    def mid_run():
        return any(not rd.is_done() and len(rd.metrics()) >= 2 for rd in store.runs())

    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(mid_run, "a trial's run at its second epoch")
        proc.send_signal(signal.SIGSTOP)  # frozen mid-run, then killed: no chance to clean up
        [victim] = [rd for rd in store.runs() if not rd.is_done()]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    epochs_done = len(victim.metrics())
    r = invoke(*CE, "--epochs", 5, "--trials", 1, "--study", "k", "--results", tmp_path)
    assert r.exit_code == 0, r.output
    assert "its worker is gone; failed (not counted) and queued again with the same values" in r.output
    assert f"-> run {victim.run_id} (resumes)" in r.output and "resuming after epoch" in r.output
    assert epochs_done >= 2
    s = summary(tmp_path, "k")
    assert [t.state for t in s.trials] == ["lost", "complete"] and s.counted == 1  # the budget: 1 trial
    assert s.trials[0].run_id == s.trials[1].run_id == victim.run_id  # retried with the same values: the same run
    assert victim.is_done() and [m["epoch"] for m in victim.metrics()] == [1, 2, 3, 4, 5]  # each epoch once


def test_local_workers_share_one_budget(tmp_path):
    r = invoke(*CE, "--epochs", 1, "--trials", 3, "--jobs", 2, "--study", "par", "--results", tmp_path)
    assert r.exit_code == 0 and "2 local workers" in r.output, r.output
    s = summary(tmp_path, "par")
    assert len(s.trials) == 3 and s.count("complete") == 3  # never more trials than the budget
    from ltbench.tune.study import quiet_optuna, storage

    study = quiet_optuna().load_study(study_name="par", storage=storage(s.path))
    assert os.getpid() not in {t.user_attrs["worker"]["pid"] for t in study.trials}  # the workers' processes
    assert {Store(tmp_path).find(t.run_id).result()["env"]["launcher"] for t in s.trials} == {"local"}


@pytest.mark.slurm
def test_slurm_array_of_workers(tmp_path):
    r = invoke(*CE, "--epochs", 1, "--trials", 2, "--jobs", 2, "--launcher", "slurm", "--cpus", 1, "--time", 10,
               "--study", "sl", "--results", tmp_path)
    assert r.exit_code == 0 and "2 slurm workers" in r.output, r.output
    s = summary(tmp_path, "sl")
    assert s.count("complete") == 2 and len(s.trials) == 2
    envs = [Store(tmp_path).find(t.run_id).result()["env"] for t in s.trials]
    assert all(e["launcher"] == "slurm" and e["slurm_job_id"] for e in envs)


def test_import_ltbench_and_a_table_without_studies_leave_optuna_alone(tmp_path):
    code = ("import sys, ltbench, ltbench.cli.app; from ltbench.tune.rows import with_tuned_rows; "
            f"assert with_tuned_rows([], {str(tmp_path)!r}) == ([], []); assert 'optuna' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
