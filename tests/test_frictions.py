"""First-day frictions of the command line (issue 26, item 5, in part): a setting written without --set,
--epochs against --set STAGE.epochs, and the same seed options on run and sweep. Each is one line and
nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_setting_without_set_gets_the_hint(tmp_path, command):
    r = invoke(command, "-m", "ce", "train.lr=0.1", "--results", tmp_path / "r")
    assert r.exit_code == 2
    assert f"'train.lr=0.1': a setting goes after --set: `ltbench {command} ... --set train.lr=0.1`" in r.output
    assert not (tmp_path / "r").exists()


def test_a_stray_name_says_which_option_takes_it(tmp_path):
    r = invoke("sweep", "ce", "--dry-run", "--results", tmp_path / "r")
    assert r.exit_code == 2 and "'ce': `ltbench sweep` takes no such argument" in r.output and "--method ce" in r.output


@pytest.mark.parametrize("args, key", [(["-m", "ce", "--set", "train.epochs=5"], "train.epochs"),
                                       (["-m", "ce", "--set", "epochs=5"], "train.epochs"),
                                       (["-m", "wb", "--set", "stage1.epochs=5"], "stage1.epochs")])
def test_epochs_and_a_set_of_the_same_key_conflict(tmp_path, args, key):
    r = invoke("run", "--epochs", "3", *args, "--dry-run", "--results", tmp_path / "r")
    assert r.exit_code == 2 and f"--epochs 3 and --set {key}=5 both set {key}; keep one of them." in r.output


def test_epochs_with_another_stages_epochs_is_fine(tmp_path):
    r = invoke("run", "-m", "wb", "--epochs", "3", "--set", "stage2.epochs=5", "--dry-run", "--results", tmp_path / "r")
    assert r.exit_code == 0, r.output


def test_run_and_sweep_take_the_same_seed_options(tmp_path):
    ids = {}
    for command, flag in [("run", "--seed"), ("run", "--seeds"), ("sweep", "--seed"), ("sweep", "--seeds")]:
        r = invoke(command, "-m", "ce", flag, "0,1", "--dry-run", "--results", tmp_path / "r")
        assert r.exit_code == 0, r.output
        ids[(command, flag)] = "1b3fa6222eb2" in r.output and "5ff8fe179d01" in r.output
    assert all(ids.values()), ids
