"""The command line: the quickstart, status, table, and one clear message for each user error."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.results.reference import STAGE1

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two seeds of every built-in method on digits-LT, 2 epochs (stage 1)."""
    root = tmp_path_factory.mktemp("results")
    r = invoke("run", "--epochs", 2, "--seed", "0,1", "--device", "cpu", "--results", root)
    assert r.exit_code == 0, r.output
    return root, r


def test_run_without_selectors_trains_builtins_on_digits_and_prints_the_table(store):
    root, r = store
    from ltbench.registry import methods

    builtins = [e.name for e in methods.entries() if e.origin.startswith("builtin") and e.obj.presentation.in_default_run]
    n = 2 * len(builtins)
    assert f"run 1/{n} balanced_softmax on digits-LT IR20" in r.output and f"run {n}/{n} wb" in r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("|")]
    assert [c.strip() for c in lines[0].split("|")[1:7]] == ["method", "many", "medium", "few", "all", "norm max/min"]
    rows = {ln.split("|")[1].strip(): ln for ln in lines[2:]}
    # every built-in method, plus the shared stage-1 run (CE with the tuned weight decay) as its own row
    assert set(rows) == set(builtins) | {STAGE1}
    assert all("(2)" in row for row in rows.values())
    assert len(list((root / "runs" / "digits_lt" / "ce").iterdir())) == 4  # plain CE and stage 1, two seeds


def test_second_run_skips_done_records(store):
    root, _ = store
    r = invoke("run", "--method", "ce", "--epochs", 2, "--seed", "0", "--device", "cpu", "--results", root)
    assert r.exit_code == 0 and "done, skipped" in r.output


def test_status_and_table(store):
    root, _ = store
    s = invoke("status", "--results", root)
    assert s.exit_code == 0 and "24 done" in s.output and "2/2" in s.output
    t = invoke("table", "--results", root, "--format", "json")
    assert t.exit_code == 0, t.output
    data = json.loads(t.output)
    cell = data["rows"]["wb"]["digits-LT IR20"]
    assert cell["all"]["n"] == 2 and cell["seeds"] == [0, 1]
    assert data["columns"][:5] == ["CIFAR-100-LT IR100", "CIFAR-100-LT IR50", "CIFAR-100-LT IR10", "ImageNet-LT",
                                   "iNaturalist 2018"]
    csv = invoke("table", "--results", root, "--format", "csv")
    assert csv.output.splitlines()[0] == "method,column,group,mean,std,n,paper,delta"
    g = invoke("table", "--results", root)
    assert "| wb " in g.output


@pytest.mark.parametrize("args,message", [
    (["run", "--method", "cee"], "unknown method 'cee'. Did you mean 'ce'"),
    (["run", "--dataset", "cifar100lt"], "unknown benchmark 'cifar100lt'. Did you mean 'cifar100_lt'"),
    (["run", "--backbone", "resnet23"], "unknown backbone 'resnet23'. Did you mean 'resnet32'"),
    (["run", "--set", "lr"], "--set 'lr': expected stage.key=value"),
    (["run", "--set", "train.lr=fast"], "--set train.lr='fast': expected a number"),
    (["run", "--set", "train.speed=1"], "train has no key 'speed'"),
    (["run", "--set", "stage9.lr=1"], "has no stage 'stage9'"),
    (["run", "--set", "train.weight_decay=-1"], "weight_decay=-1.0: must not be negative"),
    (["run", "--imbalance", "0.5"], "imbalance ratio 0.5 is below 1"),
    (["run", "--dataset", "cifar100_lt", "--imbalance", "0.5"], "imbalance ratio 0.5 is below 1"),
    (["run", "--seed", "a"], "--seed 'a': expected integers"),
    (["run", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["run", "--device", "tpu"], "--device 'tpu'"),
    (["table", "--format", "xml"], "--format 'xml'"),
])
def test_user_errors_are_one_clear_line_and_leave_no_record(tmp_path, args, message):
    r = invoke(*args, "--results", tmp_path / "res") if args[0] == "run" else invoke(*args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "res" / "runs").exists()


def test_missing_cifar_files_offline(tmp_path):
    r = invoke("run", "--method", "ce", "--dataset", "cifar100_lt", "--data-root", tmp_path / "nodata",
               "--no-download", "--results", tmp_path / "res")
    assert r.exit_code == 2
    assert "CIFAR-100 files not found" in r.output and str(tmp_path / "nodata" / "cifar-100-python") in r.output
    assert not (tmp_path / "res" / "runs").exists()


def test_unwritable_results(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke("run", "--epochs", 1, "--results", blocker / "sub")
    assert r.exit_code == 2 and "--results" in r.output and "writable" in r.output


def test_table_and_status_do_not_import_torch(tmp_path):
    code = ("import sys; from typer.testing import CliRunner; from ltbench.cli.app import app; "
            f"r = CliRunner().invoke(app, ['status', '--results', {str(tmp_path)!r}]); "
            "assert r.exit_code == 0, r.output; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_method_all_names_every_registered_method_and_the_default_is_the_paper_set():
    from ltbench.registry import methods
    from ltbench.spec.request import make_selection

    every = {e.name for e in methods.entries()}
    # the methods that need a foundation model's weights run by name only
    assert set(make_selection("all").methods) == every - {"lift", "zeroshot"}
    assert {"lift", "zeroshot"} <= set(make_selection("all,lift,zeroshot").methods)
    assert make_selection("all,ce").methods.count("ce") == 1
    default = set(make_selection().methods)
    assert {"ce", "cb", "wb", "crt", "lws", "tau_norm"} <= default
    assert not default & {"focal", "cb_focal", "mislas", "disalign", "sade", "ride", "bcl"}
