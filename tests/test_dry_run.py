"""See before you run: `ltbench run --dry-run` (every run, its settings with their origins, its id and
state; nothing started or written) and `ltbench show RUN_ID` (a record's spec, result and files; damaged
records as their one-line message)."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.spec.run_spec import resolve

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """wb (its stage-1 ce run, 1 epoch, and 1 stage-2 epoch) and a plain ce run of 1 epoch, on digits-LT."""
    root = tmp_path_factory.mktemp("results")
    for args in (["-m", "wb", "--set", "stage2.epochs=1"], ["-m", "ce"]):
        r = invoke("run", *args, "--epochs", 1, "--device", "cpu", "--results", root)
        assert r.exit_code == 0, r.output
    return root


def _squeezed(output):
    """The output with runs of spaces as one (the columns' widths follow the longest origin)."""
    return "\n".join(" ".join(line.split()) for line in output.splitlines())


def _run_lines(output):
    return [line for line in output.splitlines() if line.startswith("run ")]


def test_dry_run_lists_every_run_with_origins_and_writes_nothing(tmp_path):
    r = invoke("run", "-m", "ce,wb", "--epochs", 40, "--dry-run", "--results", tmp_path / "res")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "res").exists()
    lines = _run_lines(r.output)
    ce, wb = resolve("ce", "digits_lt"), resolve("wb", "digits_lt")
    # the run ids of the README's quickstart (--epochs 40 is digits-LT's default), the stage-1 run first
    assert [ln.split(" id ")[1] for ln in lines] == [ce.run_id, wb.parent_id, wb.run_id] == \
        ["1b3fa6222eb2", "d06be45b8a38", "102927cd5958"]
    assert lines[1].startswith("run 2/3  ce (stage 1 of wb) on digits-LT IR20")
    out = _squeezed(r.output)
    assert "\ntrain --epochs: epochs=40\n" in out and "\nstage1 --epochs: epochs=40\n" in out
    assert "\nstage1 method wb (stage 1): weight_decay=0\n" in out and "\nstage1 recipe paper: epochs=40" not in out
    assert "\nstage2 method wb: epochs=10 lr=0.01 weight_decay=0.1" in out and "maxnorm=true" in out
    assert f"stage 1 run {wb.parent_id} (run 2 above)" in out
    assert out.count("new: would start") == 3 and "dry run: 3 runs; nothing started, nothing written" in out


def test_dry_run_says_done_partly_trained_and_new(store, tmp_path):
    root = tmp_path / "res"
    shutil.copytree(store, root)
    ce = resolve("ce", "digits_lt", epochs=1)
    run_dir = root / "runs" / "digits_lt" / "ce" / ce.run_id
    (run_dir / "DONE").unlink()  # as if killed after its last checkpoint
    (run_dir / "result.json").unlink()
    r = invoke("run", "-m", "ce,wb,crt", "--epochs", 1, "--set", "stage2.epochs=1", "--dry-run", "--results", root)
    # ce rejects stage2.* : a --set must fit every method, as without --dry-run
    assert r.exit_code == 2 and "ce has no stage 'stage2'" in r.output
    r = invoke("run", "-m", "ce,crt", "--epochs", 1, "--dry-run", "--results", root)
    assert r.exit_code == 0, r.output
    states = [ln.strip() for ln in r.output.splitlines() if ln.strip().startswith("state")]
    assert states == ["state     partly trained (1/1 epochs, checkpoint.pt): resumes from its checkpoint",
                      "state     done: skipped",  # the stage-1 run that wb trained, shared by crt
                      "state     new: would start"]
    forced = invoke("run", "-m", "wb", "--epochs", 1, "--set", "stage2.epochs=1", "--force", "--dry-run", "--results", root)
    assert forced.output.count("done: would run again (--force)") == 2, forced.output
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in (store / run_dir.relative_to(root)).iterdir()
                                                              if p.name not in ("DONE", "result.json"))


def test_show_prints_spec_origins_result_and_files(store):
    wb = resolve("wb", "digits_lt", epochs=1, sets=["stage2.epochs=1"])
    r = invoke("show", wb.run_id[:5], "--results", store)
    assert r.exit_code == 0, r.output
    run_dir = store / "runs" / "digits_lt" / "wb" / wb.run_id
    result = json.loads((run_dir / "result.json").read_text())
    out = _squeezed(r.output)
    assert out.startswith(f"run {wb.run_id} wb on digits-LT IR20 (small_cnn, recipe paper, seed 0)")
    assert f"stage 1: run {wb.parent_id} (done)" in out
    assert "\nstage2 --set: epochs=1\n" in out and "\nstage1 --epochs: epochs=1\n" in out
    test = result["test"]
    assert f"test top-1 {test['top1']:.2f} many {test['many']:.2f} medium {test['medium']:.2f} few {test['few']:.2f}" in out
    assert f"epoch {result['selected']['epoch']} selected on val" in out
    stage1 = invoke("show", wb.parent_id, "--results", store)
    assert stage1.exit_code == 0 and f"\nstage 1 of: wb {wb.run_id}\n" in stage1.output
    size = (run_dir / "spec.json").stat().st_size
    spec_line = next(ln for ln in out.splitlines() if ln.strip().startswith("spec.json"))
    shown = spec_line.split()[1:]
    assert float(shown[0]) == pytest.approx(size / 1000 if shown[1] == "kB" else size, abs=0.05)


def test_show_unknown_and_ambiguous_ids(store, tmp_path):
    r = invoke("show", "zzz", "--results", store)
    assert r.exit_code == 2 and "no run in" in r.output and "'zzz'" in r.output
    root = tmp_path / "res"
    for rid in ("abc111111111", "abc222222222"):
        (root / "runs" / "digits_lt" / "ce" / rid).mkdir(parents=True)
    r = invoke("show", "abc", "--results", root)
    assert r.exit_code == 2 and "abc111111111" in r.output and "abc222222222" in r.output and "more of the id" in r.output


def test_show_damaged_records_give_one_message(store, tmp_path):
    root = tmp_path / "res"
    shutil.copytree(store, root)
    ce = resolve("ce", "digits_lt", epochs=1)
    run_dir = root / "runs" / "digits_lt" / "ce" / ce.run_id
    (run_dir / "result.json").write_text("{not json")
    r = invoke("show", ce.run_id, "--results", root)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "settings (value, origin):" in r.output  # the spec still shows
    assert f"{run_dir / 'result.json'} is not JSON; the same `ltbench run` command redoes the final report" in r.output
    (run_dir / "spec.json").write_text("[]")
    r = invoke("show", ce.run_id, "--results", root)
    assert r.exit_code == 2 and "Traceback" not in r.output and "files:" in r.output
    assert f"{run_dir / 'spec.json'} is not a JSON object; delete {run_dir}" in r.output
