"""The typed settings schema (ltbench.spec.schema) and the one front door (ltbench.spec.request): run ids
kept across the rewrite, every value checked by its declared setting, records read as before, and every
way into a run (command line, sweep, Python API) refused in one line before anything is written."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ltbench
from ltbench.cli.app import app
from ltbench.errors import LtbenchError
from ltbench.spec.run_spec import RunSpec, resolve
from ltbench.spec.schema import BY_KEY, ENGINE, SINCE, Settings, all_engine_settings, settings_table

# Run ids from before the typed schema (main at 3a655ff, `resolve(...).run_id` and its stage-1 run's id),
# one per method family, recipe, benchmark family and kind of --set. They must never change unless what
# runs changes.
PINNED = [
    ("ce", "digits_lt", {}, "1b3fa6222eb2", None),
    ("wb", "digits_lt", {}, "102927cd5958", "d06be45b8a38"),
    ("ce", "cifar100_lt", {"imbalance": 100}, "4987f1f78c58", None),
    ("ldam_drw", "cifar10_lt", {"imbalance": 50, "recipe": "cao"}, "c692145f98f8", None),
    ("crt", "imagenet_lt", {"recipe": "kang"}, "f28d7225537a", "af3e379509d1"),
    ("lws", "inat2018", {"recipe": "kang"}, "5290c64b2329", "2b5330b2e5eb"),
    ("tau_norm", "places_lt", {}, "70b9aa82d4a8", "3116dafce85a"),
    ("cb", "cifar100_lt", {"epochs": 13, "sets": ["train.weight_decay=2e-4", "train.batch_size=128"]},
     "4ceafb89a8bf", None),
    ("ce", "digits_lt", {"sets": ["train.mix=mixup", "train.label_smoothing=0.1"]}, "afaf6517096d", None),
    ("wb", "cifar100_lt", {"imbalance": 50, "sets": ["stage1.weight_decay=1e-3", "stage2.lr=0.05",
                                                      "stage2.threshold=0.2"]}, "165829c5f132", "7333d67c77db"),
    ("ce", "digits_lt", {"sets": ["train.maxnorm=true"]}, "3de115798692", None),
    ("focal", "digits_lt", {"seed": 3}, "9627a7e8c408", None),
    ("logit_adj", "cifar10_lt", {"imbalance": 10, "sets": ["train.schedule=step", "train.milestones=0.5,0.75"]},
     "d7bc6b325bcf", None),
    ("crt", "digits_lt", {"sets": ["stage2.sampler=class_aware", "stage2.resample_from=0.5"]}, "54575bf4eec4",
     "d06be45b8a38"),
    ("balanced_softmax", "cifar10_lt", {"imbalance": 100, "sets": ["train.autoaugment=randaugment",
                                                                   "train.warmup_epochs=5"]}, "ba11c1e1c1f4", None),
    # --recipe official now normalises as the WB code does (data.normalization=wb_code, issue 23): its ids
    # changed on purpose. With the normalisation it had before (cifar10) they are the old ids.
    ("wb", "cifar100_lt", {"imbalance": 100, "recipe": "official", "sets": ["data.normalization=cifar10"]},
     "916c251b8cd7", "df1f059f2460"),
    ("lws", "cifar100_lt", {"recipe": "official", "backbone": "resnet32", "sets": ["data.normalization=cifar10"]},
     "763770561421", "6127bbf3e08c"),
    ("ce", "cifar100_lt", {"imbalance": 100, "recipe": "official", "sets": [
        "data.subset=cao", "train.reweight=cb", "train.reweight_from=0.8", "data.normalization=cifar10"]},
     "c6f2762ff5dc", None),
]
CHANGED_ON_PURPOSE = [  # the official recipe's new normalisation (wb_code)
    ("wb", "cifar100_lt", {"imbalance": 100, "recipe": "official"}, "3d4d3d5ca958", "b64cc0280978"),
    ("lws", "cifar100_lt", {"recipe": "official", "backbone": "resnet32"}, "299a47220936", "0a6d2bcf5fdc"),
]


@pytest.mark.parametrize("method, benchmark, kw, run_id, parent_id", PINNED + CHANGED_ON_PURPOSE)
def test_run_ids_are_pinned(method, benchmark, kw, run_id, parent_id):
    spec = resolve(method, benchmark, **kw)
    assert (spec.run_id, spec.parent_id) == (run_id, parent_id)


def test_every_engine_setting_is_declared_once_with_help_and_a_kind():
    keys = [s.key for s in all_engine_settings()]
    assert len(keys) == len(set(keys)) == len(BY_KEY)
    for s in all_engine_settings():
        assert s.help and s.kind in ("bool", "int", "float", "str", "floats") and s.group, s
        assert s.problem(s.default) is None, s  # every default is allowed
        if s.choices:
            assert s.default in s.choices
    assert {s.key for s in ENGINE if s.since is not None} <= set(BY_KEY)
    assert SINCE["lr_update"] == "step" and SINCE["keep_bias"] is False


@pytest.mark.parametrize("item, message", [
    ("train.lr=NaN", "--set train.lr=nan: expected a finite number"),
    ("train.lr=Infinity", "--set train.lr=inf: expected a finite number"),
    ("train.lr=nan", "--set train.lr='nan': expected a number"),
    ("train.weight_decay=-Infinity", "--set train.weight_decay=-inf: expected a finite number"),
    ("train.weight_decay=NaN", "expected a finite number"),
    ("train.batch_size=1e18", "train.batch_size=1000000000000000000: must be at most 1048576"),
    ("train.epochs=99999999999999999999999", "train.epochs=99999999999999999999999: must be at most 100000"),
    ("train.epochs=2.5", "expected an integer"),
    ("train.milestones=0.5,NaN", "expected a list of finite numbers"),
    ("train.sampler=balanced", "train.sampler='balanced': must be one of instance, class_balanced, class_aware"),
])
def test_set_values_are_checked_by_their_setting(item, message):
    with pytest.raises(LtbenchError, match=re.escape(message)):
        resolve("ce", "digits_lt", sets=[item])


def test_epochs_in_a_config_file_are_checked_by_the_schema(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("method: ce\ntrain:\n  epochs: 99999999999999999999999\n")
    r = CliRunner().invoke(app, ["run", "--config", str(path), "--results", str(tmp_path / "r")])
    assert r.exit_code == 2 and "must be at most 100000" in r.output and not (tmp_path / "r").exists()


@pytest.mark.parametrize("item, hint", [("train.weight_decy=1e-3", "did you mean 'weight_decay'?"),
                                        ("train.lr_schedule=step", "did you mean"),
                                        ("weigth_decay=1e-3", "did you mean 'weight_decay'?")])
def test_unknown_keys_get_a_did_you_mean(item, hint):
    with pytest.raises(LtbenchError, match=re.escape(hint)):
        resolve("ce", "digits_lt", sets=[item])


def test_hooks_read_typed_values_and_old_canonical_specs_read_their_defaults():
    spec = resolve("wb", "digits_lt")
    hp = spec.stages["stage2"]
    assert isinstance(hp, Settings) and hp.lr == hp["lr"] and hp.maxnorm is True and hp.threshold == 0.1
    parent = RunSpec.from_json(spec.parent)  # canonical: keys added after protocol 1 left out at their default
    assert "lr_update" not in parent.stages["train"] and parent.stages["train"].lr_update == "step"
    assert parent.stages["train"].precision == "bf16" and spec.data.imbalance == 20.0
    with pytest.raises(AttributeError, match="no setting 'nonsense'"):
        hp.nonsense  # noqa: B018


def test_list_settings_and_the_readme_table_come_from_the_schema():
    r = CliRunner().invoke(app, ["list", "settings"])
    assert r.exit_code == 0, r.output
    for s in all_engine_settings():
        assert s.key in r.output
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = "\n".join("| " + " | ".join(f"`{c}`" if i == 0 else c.replace("|", "/") for i, c in enumerate(row))
                     + " |" for row in settings_table(all_engine_settings()))
    assert rows in readme, "README's settings table is out of date: python scripts/settings_table.py prints it"


# --- one front door: the Python API takes every option and refuses wrong types in one line ---------

WRONG_TYPES = [
    {"epochs": 2.5}, {"epochs": "5"}, {"imbalance": "ten"}, {"imbalance": math.nan}, {"seed": 1.5},
    {"set": 5}, {"force": "yes"}, {"device": 0}, {"results": 3}, {"method": 7}, {"keep_features": None},
    {"log": 1}, {"max_jobs": "2"}, {"partition": 3},
]


@pytest.mark.parametrize("kwargs", WRONG_TYPES)
def test_api_wrong_types_are_one_error_before_anything_is_written(tmp_path, kwargs):
    kwargs = {"method": "ce", "dataset": "digits_lt", "results": tmp_path / "r", **kwargs}
    with pytest.raises(LtbenchError, match=r"^ltbench\.run"):
        ltbench.run(**kwargs)
    assert not (tmp_path / "r").exists()


def test_api_unknown_argument_says_which_it_meant(tmp_path):
    with pytest.raises(LtbenchError, match="no argument 'epoch' .*did you mean 'epochs'"):
        ltbench.run(method="ce", epoch=2, results=tmp_path / "r")
    with pytest.raises(LtbenchError, match="no argument 'grid' .*`ltbench sweep` has it"):
        ltbench.run(method="ce", grid=["train.lr=0.1,0.2"], results=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_api_takes_every_option_of_the_command_line():
    import inspect

    from ltbench.launch.jobs import LaunchOptions

    run = CliRunner().invoke(app, ["run", "--help"], terminal_width=200).output
    params = set(inspect.signature(ltbench.run).parameters)
    cli_to_api = {"--set": "set", "--dataset": "dataset", "--compile": "compile", "--no-download": None,
                  "--no-keep-features": None, "--help": None, "--mem": "mem_gb", "--time": "time_min"}
    launch = {f.name for f in __import__("dataclasses").fields(LaunchOptions)}
    for flag in re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", run, re.M):
        name = cli_to_api.get(flag, flag[2:].replace("-", "_").split("/")[0])
        if name is not None:
            assert name in params or name in launch, flag


def test_results_that_cannot_be_written_are_refused_before_any_run_starts(tmp_path, capsys):
    with pytest.raises(LtbenchError, match="--results /proc/ltbench-x: cannot write there"):
        ltbench.run(method="ce", epochs=1, results="/proc/ltbench-x", progress=False)
    assert "run 1/1" not in capsys.readouterr().err


# --- --dry-run runs every check that run runs ------------------------------------------------------

def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_dry_run_refuses_missing_data_it_may_not_download(tmp_path):
    for cmd in (["run", "--dry-run"], ["sweep", "--dry-run"], ["sweep"]):
        r = _invoke(*cmd, "-m", "ce", "-d", "cifar10_lt", "--data-root", tmp_path / "none", "--no-download",
                    "--results", tmp_path / "r")
        assert r.exit_code == 2 and "CIFAR-10 files not found" in r.output, (cmd, r.output)
    assert not (tmp_path / "r").exists()


def test_dry_run_refuses_a_multi_expert_method_on_a_plain_backbone(tmp_path):
    r = _invoke("run", "--dry-run", "-m", "sade", "--backbone", "small_cnn", "--results", tmp_path / "r")
    assert r.exit_code == 2 and "trains a multi-expert backbone" in r.output and "small_cnn" in r.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_dry_run_refuses_cuda_without_cuda(tmp_path):
    r = _invoke("run", "--dry-run", "-m", "ce", "--device", "cuda", "--results", tmp_path / "r")
    assert r.exit_code == 2 and "cuda" in r.output.lower()


def test_api_and_cli_plan_the_same_runs(tmp_path, capsys):
    ltbench.run(method="wb,crt", epochs=2, set={"stage2.epochs": 1}, dry_run=True, results=tmp_path / "r")
    api_text = capsys.readouterr().out
    r = _invoke("run", "-m", "wb,crt", "--epochs", "2", "--set", "stage2.epochs=1", "--dry-run",
                "--results", tmp_path / "r")
    assert r.exit_code == 0 and api_text.strip() == r.output.strip()
    assert not (tmp_path / "r").exists()
