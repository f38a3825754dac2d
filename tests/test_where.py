"""--where KEY=VALUE on `ltbench table`, `status` and `plot` (issue 26, item 1, in part): keep the runs whose
spec has that value; a key no record has is one line with a did-you-mean."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import ltbench
from ltbench.cli.app import app
from ltbench.engine.training import RunOptions, execute
from ltbench.errors import LtbenchError
from ltbench.results.store import Store
from ltbench.results.where import matches, parse_where
from ltbench.spec.run_spec import resolve


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("where")
    opts = RunOptions(device="cpu", live_progress=False)
    for epochs, wd in ((1, 5e-4), (2, 5e-4), (2, 1e-3)):
        execute(resolve("ce", "digits_lt", epochs=epochs, sets=[f"train.weight_decay={wd}"]), Store(root), opts)
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=250)


def test_values_compare_by_value_and_keys_by_their_user_names():
    spec = resolve("wb", "digits_lt", epochs=3).to_json()
    assert matches(spec, parse_where(["stage1.epochs=3", "method=wb", "stage2.maxnorm=true", "data.imbalance=20"]))
    assert matches(spec, parse_where(["stage2.weight_decay=1e-1", "stage2.lr_update=step"]))  # 0.1; a key at its earlier value
    assert not matches(spec, parse_where(["stage1.epochs=4"]))
    with pytest.raises(LtbenchError, match="expected KEY=VALUE"):
        parse_where(["train.epochs"])


def test_table_keeps_only_the_runs_that_match(store):
    every = ltbench.table(dataset="digits_lt", results=store, select="last")
    two = ltbench.table(dataset="digits_lt", results=store, select="last", where={"train.epochs": 2})
    one = ltbench.table(dataset="digits_lt", results=store, select="last", where=["train.epochs=2",
                                                                                   "train.weight_decay=0.001"])
    assert len(every) == 3 and len(two) == 2 and len(one) == 1


def test_status_and_plot_filter_too(store, tmp_path):
    r = invoke("plot", "wd", "--results", store, "--where", "train.epochs=2", "-o", tmp_path / "wd.png")
    assert r.exit_code == 0 and (tmp_path / "wd.png").is_file(), r.output
    r = invoke("plot", "wd", "--results", store, "--where", "train.epochs=9", "-o", tmp_path / "none.png")
    assert r.exit_code == 2 and not (tmp_path / "none.png").exists()
    r = invoke("status", "--results", store, "--where", "train.epochs=1")
    assert r.exit_code == 0 and "1 done" in r.output, r.output
    r = invoke("status", "--results", store, "--where", "train.epochs=7")
    assert r.exit_code == 2 and "no run in" in r.output and "train.epochs=7" in r.output


def test_an_unknown_key_is_one_line_with_a_did_you_mean(store):
    r = invoke("table", "--results", store, "--where", "train.epoch=2")
    assert r.exit_code == 2 and "no record has a setting 'train.epoch'" in r.output and "did you mean 'train.epochs'" in r.output
    r = invoke("table", "--results", store, "--where", "train.epochs=5")
    assert r.exit_code == 2 and "--where train.epochs=5" in r.output
