"""`ltbench list` and `ltbench status` at 80 columns (issue 26, item 5): no line wider than the terminal,
nothing lost (cells wrap, what does not fit goes under its row), `--wide` for one line a row."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.cli.columns import fit_table, wrap
from ltbench.registry import backbones, benchmarks, methods
from ltbench.spec.schema import all_engine_settings, settings_table

RECORDS = Path(__file__).parent / "golden" / "results"
runner = CliRunner()


def at(columns, *args):
    r = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    return r.output


def flat(text):
    return " ".join(text.split())


def longest(text):
    return max(len(line) for line in text.splitlines())


@pytest.mark.parametrize("kind", ["all", "methods", "benchmarks", "backbones", "configs", "settings"])
def test_list_fits_80_columns(kind):
    out = at(80, "list", kind)
    assert longest(out) <= 80, "\n".join(line for line in out.splitlines() if len(line) > 80)


def test_list_keeps_what_it_says_at_80_columns():
    out = flat(at(80, "list"))
    for registry in (methods, benchmarks, backbones):
        for e in registry.entries():
            assert f" {e.name} " in f" {out} "
            what = getattr(e.obj, "description", None) or getattr(e.obj, "title", None)
            assert what is None or flat(what) in out, e.name
    assert flat("stages: train; recipe: paper; only with -m NAME|all; built-in") in out  # defaults and origin
    assert "imbalance=100.0, subset=cao, val_per_class=20" in out
    settings = flat(at(80, "list", "settings"))
    for row in settings_table(all_engine_settings()):
        assert f" {row[0]} " in settings and flat(str(row[4])) in settings, row[0]
    wide = at(80, "list", "methods", "--wide")  # the origin in full, one line a method
    ce = next(line for line in wide.splitlines() if line.startswith("ce "))
    assert "builtin (ltbench.methods.ce)" in ce and "stages: train" in ce and longest(wide) > 80


def test_list_uses_the_width_it_has():
    assert at(200, "list", "configs") == at(200, "list", "configs", "--wide")  # fits: one line each
    narrow = at(60, "list", "methods")
    assert longest(narrow) <= 60 and flat(methods.get("wb").description) in flat(narrow)


@pytest.fixture
def store(tmp_path):
    """The golden store with one run failed, its error longer than a line."""
    root = tmp_path / "results"
    shutil.copytree(RECORDS, root)
    victim = next((root / "runs" / "digits_lt" / "ce").iterdir())
    (victim / "DONE").unlink()
    error = ("ce/digits_lt/x: the training loss became nan in epoch 1 of stage train (lr 1e+06, weight decay "
             "0.0005); lower the learning rate (--set STAGE.lr=...) or check the data.")
    (victim / "FAILED").write_text(json.dumps({"error": error, "time": 1.0}))
    return root, victim.name, error


def test_status_fits_80_columns_and_keeps_everything(store):
    root, failed, error = store
    out = at(80, "status", "--results", root)
    assert longest(out) <= 80, out
    ids = [p.name for p in (root / "runs").glob("*/*/*")]
    rows = [line for line in out.splitlines() if line[:12] in ids]
    assert len(rows) == len(ids) == 10  # a row for each run, its id at the start
    assert f"failed: {failed} (ce on digits_lt, seed " in out and flat(error) in flat(out)
    assert "stage 1 of tau_norm, wb; train.epochs=15 train.weight_decay=0" in out  # role and settings under a row
    assert "9 done, 1 failed" in out
    wide = at(80, "status", "--results", root, "--wide")
    lines = wide.splitlines()
    assert lines[0].split() == ["run", "benchmark", "method", "role", "settings", "seed", "state", "epochs", "test",
                                "top-1", "job", "note"]
    assert [line[:12] for line in lines[2:12]] == [line[:12] for line in rows]  # one line a run
    assert f"): {error}" in wide  # one line a failed run


def test_fit_table_wraps_the_widest_columns_and_puts_details_under_rows():
    rows = [["a", "x " * 40, "short", "y"], ["bb", "z", "w " * 30, ""]]
    text = fit_table(rows, ["name", "long", "other", "tail"], 50, details=["detail " * 12, ""])
    lines = text.splitlines()
    assert longest(text) <= 50 and [line[:2] for line in lines if not line[:1].isspace()][2:] == ["a ", "bb"]
    under = [line for line in lines if line.strip().startswith("detail")]
    assert under and all(line.startswith(" " * 6) for line in under)  # from the second column on
    assert flat(" ".join(under)) == flat("detail " * 12)
    assert fit_table(rows, ["name", "long", "other", "tail"], 500) == fit_table(rows, ["name", "long", "other",
                                                                                           "tail"], 1000)


def test_wrap_keeps_a_long_word_whole():
    path = "/a/very/long/path/" * 6
    lines = wrap(f"delete {path} then run it again", 40, indent="  ")
    assert "  " + path in lines and lines[0] == "delete" and all(line.startswith("  ") for line in lines[1:])
