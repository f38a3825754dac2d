"""`ltbench rm` and `ltbench clean`: listing without --yes removes nothing, --yes removes, a stage-1 run
with finished stage-2 runs is refused unless --with-dependents, failed / incomplete runs are selected, a
running run (live lock) is skipped, and errors are one line.

The store (ce, and wb with its own stage-1 ce run, one epoch each on digits-LT) is built once and copied
for every test."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_damaged_records import runs  # the three runs of such a store by role: ce, stage1 (wb's ce), wb
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.results.store import RunDir, Store

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from ltbench.engine.training import RunOptions, execute
    from ltbench.spec.run_spec import resolve

    root = tmp_path_factory.mktemp("store") / "results"
    opts = RunOptions(device="cpu", live_progress=False)
    execute(resolve("ce", "digits_lt", epochs=1), Store(root), opts)
    execute(resolve("wb", "digits_lt", epochs=1, sets=["stage2.epochs=1"]), Store(root), opts)
    return root


@pytest.fixture
def root(built, tmp_path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(built, copy)
    return copy


def ids(root: Path) -> set[str]:
    return {rd.run_id for rd in Store(root).runs()}


def fail(rd: RunDir) -> None:
    """A run that failed: FAILED written, no DONE."""
    rd.done_file.unlink()
    rd.failed_file.write_text(json.dumps({"error": "RuntimeError: boom", "time": 1.0}))


def one_line_error(r) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


def test_rm_lists_without_yes_and_removes_with_it(root):
    ce = runs(root)["ce"]
    before = ids(root)
    r = invoke("rm", ce.run_id[:6], "--results", root)
    assert r.exit_code == 0, r.output
    assert ce.run_id in r.output and "digits_lt" in r.output and "done" in r.output
    assert "nothing removed; add --yes to remove these 1 runs" in r.output
    assert ids(root) == before and ce.path.is_dir()

    r = invoke("rm", ce.run_id[:6], "--results", root, "--yes")
    assert r.exit_code == 0, r.output
    assert "removed 1 run" in r.output
    assert not ce.path.exists() and ids(root) == before - {ce.run_id}
    assert ce.path.parent.is_dir()  # digits_lt/ce still holds the stage-1 run


def test_rm_prunes_empty_method_folder(root):
    wb = runs(root)["wb"]
    r = invoke("rm", wb.run_id, "--results", root, "--yes")
    assert r.exit_code == 0, r.output
    assert not wb.path.parent.exists()  # runs/digits_lt/wb was left empty
    assert (root / "runs" / "digits_lt").is_dir()


def test_stage1_refused_then_with_dependents(root):
    rr = runs(root)
    before = ids(root)
    line = one_line_error(invoke("rm", rr["stage1"].run_id, "--results", root, "--yes"))
    assert rr["wb"].run_id in line and "--with-dependents" in line and "remove them first" in line
    assert ids(root) == before  # nothing half-removed

    r = invoke("rm", rr["stage1"].run_id, "--results", root, "--with-dependents")
    assert r.exit_code == 0, r.output
    assert rr["wb"].run_id in r.output and "these 2 runs" in r.output
    assert ids(root) == before

    r = invoke("rm", rr["stage1"].run_id, "--results", root, "--with-dependents", "--yes")
    assert r.exit_code == 0, r.output
    assert ids(root) == {rr["ce"].run_id}


def test_stage1_with_its_stage2_named_too(root):
    rr = runs(root)
    r = invoke("rm", rr["stage1"].run_id, rr["wb"].run_id, "--results", root, "--yes")
    assert r.exit_code == 0, r.output
    assert ids(root) == {rr["ce"].run_id}


def test_clean_failed_and_incomplete(root):
    rr = runs(root)
    fail(rr["ce"])
    rr["wb"].done_file.unlink()  # interrupted: no DONE, no FAILED
    one_line_error(invoke("clean", "--results", root))  # neither --failed nor --incomplete

    r = invoke("clean", "--failed", "--results", root)
    assert r.exit_code == 0, r.output
    assert rr["ce"].run_id in r.output and "failed" in r.output and rr["wb"].run_id not in r.output
    assert "nothing removed; add --yes to remove these 1 runs" in r.output
    assert rr["ce"].path.is_dir()

    r = invoke("clean", "--failed", "--results", root, "--yes")
    assert r.exit_code == 0, r.output
    assert not rr["ce"].path.exists() and rr["wb"].path.is_dir()

    r = invoke("clean", "--incomplete", "--results", root, "--yes")
    assert r.exit_code == 0, r.output
    assert rr["wb"].run_id in r.output and not rr["wb"].path.exists()
    assert ids(root) == {rr["stage1"].run_id}

    r = invoke("clean", "--failed", "--incomplete", "--results", root)
    assert r.exit_code == 0 and "nothing to remove" in r.output, r.output


def test_clean_failed_stage1_with_finished_stage2_is_refused(root):
    rr = runs(root)
    fail(rr["stage1"])
    line = one_line_error(invoke("clean", "--failed", "--results", root, "--yes"))
    assert rr["wb"].run_id in line
    assert rr["stage1"].path.is_dir()


def test_live_lock_is_skipped_by_clean_and_refused_by_rm(root):
    rr = runs(root)
    rr["ce"].done_file.unlink()
    rr["wb"].done_file.unlink()
    with rr["ce"].locked():  # this process holds it: a live lock, as while training
        r = invoke("clean", "--incomplete", "--results", root, "--yes")
        assert r.exit_code == 0, r.output
        assert f"skipped ce {rr['ce'].run_id}" in r.output and "running now" in r.output
        assert rr["ce"].path.is_dir() and not rr["wb"].path.exists()
        line = one_line_error(invoke("rm", rr["ce"].run_id, "--results", root, "--yes"))
        assert "running" in line and rr["ce"].path.is_dir()
    assert rr["ce"].path.is_dir()


def test_errors_are_one_line(root, tmp_path):
    before = ids(root)
    ce = runs(root)["ce"]
    line = one_line_error(invoke("rm", ce.run_id, "zzzz", "--results", root, "--yes"))
    assert "'zzzz'" in line
    assert ids(root) == before  # checked before anything was removed
    one_line_error(invoke("rm", "", "--results", root))  # every id starts with ""
    line = one_line_error(invoke("rm", ce.run_id, "--results", tmp_path / "missing"))
    assert "does not exist" in line
    line = one_line_error(invoke("clean", "--failed", "--results", tmp_path / "missing"))


def test_ambiguous_prefix(root):
    rr = runs(root)
    twin = rr["ce"].path.parent / (rr["ce"].run_id[:4] + "00000000")
    twin.mkdir()
    line = one_line_error(invoke("rm", rr["ce"].run_id[:4], "--results", root, "--yes"))
    assert "give more of the id" in line and rr["ce"].path.is_dir() and twin.is_dir()


def test_symlink_outside_runs_is_refused(root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    fake = root / "runs" / "digits_lt" / "ce" / "abcdef012345"
    os.symlink(outside, fake)
    (outside / "FAILED").write_text(json.dumps({"error": "x"}))
    line = one_line_error(invoke("rm", "abcdef", "--results", root, "--yes"))
    assert "outside" in line or "symlink" in line
    one_line_error(invoke("clean", "--failed", "--results", root, "--yes"))
    assert (outside / "keep.txt").read_text() == "precious" and fake.is_symlink()


def test_clean_where_selects_by_setting(root):
    rr = runs(root)
    before = ids(root)
    r = invoke("clean", "--where", "train.weight_decay=5e-4", "--results", root)  # the plain ce run, done
    assert r.exit_code == 0, r.output
    assert rr["ce"].run_id in r.output and rr["stage1"].run_id not in r.output and "these 1 runs" in r.output
    assert ids(root) == before

    line = one_line_error(invoke("clean", "--where", "method=ce", "--results", root, "--yes"))
    assert rr["stage1"].run_id in line and rr["wb"].run_id in line  # wb's stage 1 is refused: wb builds on it
    assert ids(root) == before

    fail(rr["ce"])
    r = invoke("clean", "--failed", "--where", "method=wb", "--results", root)  # --where narrows --failed
    assert r.exit_code == 0 and "nothing to remove" in r.output, r.output

    r = invoke("clean", "--where", "method=wb", "--where", "stage2.epochs=1", "--results", root, "--yes")
    assert r.exit_code == 0, r.output
    assert ids(root) == before - {rr["wb"].run_id}

    line = one_line_error(invoke("clean", "--where", "train.weight_decy=0", "--results", root))
    assert "train.weight_decay" in line  # did you mean


def _folder_size(path: Path) -> str:
    from ltbench.cli.show import _size

    return _size(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))


def test_clean_features_removes_the_kept_features_no_unfinished_run_reads_with_sizes(root):
    from ltbench.cli.curate import FEATURES
    from ltbench.engine import training
    from ltbench.spec.run_spec import resolve

    assert FEATURES == training.FEATURES
    rr = runs(root)  # before the run below: a second ce run
    own = rr["stage1"].path / "features"  # wb's stage 2 kept the stage-1 backbone's features in its run folder
    probe = resolve("ce", "digits_lt", backbone="clip_vit_tiny", epochs=1, sets=["train.tuning=linear"])
    training.execute(probe, Store(root), training.RunOptions(device="cpu", live_progress=False))
    shared = root / "features" / "clip_vit_tiny"  # a pretrained backbone's, shared by every run on it
    assert own.is_dir() and shared.is_dir()
    before, sizes = ids(root), {own: _folder_size(own), shared: _folder_size(shared)}

    r = invoke("clean", "--features", "--results", root)  # every run finished: nobody reads them again
    assert r.exit_code == 0, r.output
    assert f"runs/digits_lt/ce/{rr['stage1'].run_id}/features" in r.output and "features/clip_vit_tiny" in r.output
    assert sizes[own] in r.output and sizes[shared] in r.output and "clip_vit_tiny (pretrained backbone, shared)" \
        in r.output and f"stage-1 run {rr['stage1'].run_id} (ce, digits_lt)" in r.output
    assert "nothing removed; add --yes to remove these 2 feature folders" in r.output
    assert own.is_dir() and shared.is_dir() and ids(root) == before

    rr["wb"].done_file.unlink()  # wb unfinished: its stage 2 reads the stage-1 run's features when it resumes
    r = invoke("clean", "--features", "--results", root, "--yes")
    assert r.exit_code == 0, r.output
    assert f"kept {own}: 1 unfinished run may read them (wb {rr['wb'].run_id} (digits_lt, unfinished))" in r.output
    assert f"removed 1 feature folders ({sizes[shared]})" in r.output
    assert own.is_dir() and not (root / "features").exists() and ids(root) == before  # no run removed

    rr["wb"].failed_file.write_text(json.dumps({"error": "RuntimeError: boom", "time": 1.0}))  # with --failed: judged on the runs that remain once wb is removed
    r = invoke("clean", "--failed", "--features", "--results", root)
    assert r.exit_code == 0, r.output
    assert rr["wb"].run_id in r.output and "these 1 runs" in r.output and "these 1 feature folders" in r.output
    r = invoke("clean", "--failed", "--features", "--results", root, "--yes")
    assert r.exit_code == 0, r.output
    assert not rr["wb"].path.exists() and not own.exists() and rr["stage1"].path.is_dir()
    r = invoke("clean", "--features", "--results", root)
    assert r.exit_code == 0 and "no kept features to remove." in r.output, r.output


def test_clean_features_refuses_a_symlinked_features_folder_before_removing_anything(root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.pt").write_text("precious")
    (root / "features").mkdir()
    os.symlink(outside, root / "features" / "clip_vit_tiny")
    own = runs(root)["stage1"].path / "features"
    line = one_line_error(invoke("clean", "--features", "--results", root, "--yes"))
    assert "symlink" in line and str(root / "features" / "clip_vit_tiny") in line
    assert (outside / "keep.pt").read_text() == "precious" and own.is_dir()
