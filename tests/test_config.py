"""Config files (`--config FILE`, ltbench.spec.config): the shipped configs resolve to the paper's runs, a file
and the equivalent flags give the same run id, flags win over the file, and every mistake is one message
that names the file (and the line where there is one). No training."""

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.errors import LtbenchError
from ltbench.results.store import Store
from ltbench.spec.config import load_config, shipped_configs
from ltbench.spec.request import RunRequest
from ltbench.spec.run_spec import resolve

runner = CliRunner()

# shipped config -> the flags that name the same runs (the paper recipe's and wb's defaults)
SHIPPED = {
    "wb/cifar100_ir100": dict(benchmark="cifar100_lt", imbalance=100.0),
    "wb/cifar100_ir50": dict(benchmark="cifar100_lt", imbalance=50.0),
    "wb/cifar100_ir10": dict(benchmark="cifar100_lt", imbalance=10.0),
    "wb/imagenet_lt": dict(benchmark="imagenet_lt", imbalance=None),
    "wb/inat2018": dict(benchmark="inat2018", imbalance=None),
}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def specs_of(tmp_path, **kw):
    return RunRequest(**kw).specs(Store(tmp_path / "results"))


def test_every_shipped_config_resolves_to_the_papers_wb_run(tmp_path):
    assert shipped_configs() == sorted(SHIPPED)
    for name, flags in SHIPPED.items():
        cfg = load_config(name)
        assert cfg.selectors["method"] == ["wb"] and cfg.selectors["recipe"] == "paper"
        (spec,) = specs_of(tmp_path, config=name)
        plain = resolve("wb", flags["benchmark"], imbalance=flags["imbalance"], recipe="paper")
        assert spec.run_id == plain.run_id and spec.parent_id == plain.parent_id, name
        parent = spec.parent_spec()
        assert parent.stages["train"]["epochs"] == 200 and parent.stages["train"]["lr"] == 0.01
        assert spec.stages["stage2"]["weight_decay"] == 0.1 and spec.stages["stage2"]["maxnorm"] is True
        # the values the file set name it as their origin, also the selectors (--epochs, --imbalance, --backbone)
        assert spec.origins["stage2.weight_decay"] == f"config {name}"
        assert parent.origins["train.weight_decay"] == f"config {name}"
        assert parent.origins["train.epochs"] == f"config {name}" and spec.origins["backbone"] == "stage-1 run"
        assert spec.origins["stage2.cb_form"] == "method wb"  # what the file leaves out keeps its origin
    cifar = specs_of(tmp_path, config="wb/cifar100_ir100")[0].parent_spec()
    assert cifar.stages["train"]["weight_decay"] == 0.005 and cifar.stages["train"]["batch_size"] == 64
    inat = specs_of(tmp_path, config="wb/inat2018")[0].parent_spec()
    assert inat.stages["train"]["batch_size"] == 512 and inat.backbone == "resnet50"


YAML = """\
method: wb
dataset: digits_lt
imbalance: 10
seed: [0, 3]
epochs: 7
stage1:
  weight_decay: 5e-3      # YAML reads 5e-3 as a string; it is typed as --set types it
stage2.lr: 0.02
data.imbalance: 10
threshold: 0.2
"""
TOML = """\
method = "wb"
dataset = "digits_lt"
imbalance = 10
seed = [0, 3]
epochs = 7
threshold = 0.2
"data.imbalance" = 10

[stage1]
weight_decay = 0.005

[stage2]
lr = "0.02"
"""
FLAGS = ["-m", "wb", "-d", "digits_lt", "--imbalance", "10", "--seed", "0,3", "--epochs", "7",
         "--set", "stage1.weight_decay=5e-3", "--set", "stage2.lr=0.02", "--set", "data.imbalance=10",
         "--set", "threshold=0.2"]


def _ids(output):
    return [line.split(" id ")[1].split()[0] for line in output.splitlines() if line.startswith("run ")]


@pytest.mark.parametrize("suffix,text", [(".yaml", YAML), (".toml", TOML)])
def test_config_file_and_the_same_flags_give_the_same_run_ids(tmp_path, suffix, text):
    path = tmp_path / f"mine{suffix}"
    path.write_text(text)
    by_file = invoke("run", "--config", path, "--dry-run", "--results", tmp_path / "r")
    by_flags = invoke("run", *FLAGS, "--dry-run", "--results", tmp_path / "r")
    assert by_file.exit_code == 0 and by_flags.exit_code == 0, by_file.output + by_flags.output
    assert _ids(by_file.output) == _ids(by_flags.output) and len(_ids(by_file.output)) == 4  # 2 seeds x (stage 1, wb)
    assert f"config {path}:" in by_file.output and "--set:" in by_flags.output
    specs = specs_of(tmp_path, config=path)
    assert [s.seed for s in specs] == [0, 3]
    assert specs[0].parent_spec().stages["train"]["weight_decay"] == 0.005
    assert specs[0].stages["stage2"]["lr"] == 0.02 and specs[0].stages["stage2"]["threshold"] == 0.2
    assert specs[0].parent_spec().stages["train"]["epochs"] == 7
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


def test_flags_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    (spec,) = specs_of(tmp_path, config=path, imbalance=50, seed=1, epochs=3,
                       sets=["stage2.lr=0.03", "stage1.weight_decay=0"])
    parent = spec.parent_spec()
    assert spec.data["imbalance"] == 50.0 and spec.seed == 1  # --imbalance beats the file's data.imbalance too
    assert parent.stages["train"]["epochs"] == 3 and parent.origins["train.epochs"] == "--epochs"
    assert spec.stages["stage2"]["lr"] == 0.03 and spec.origins["stage2.lr"] == "--set"
    assert parent.stages["train"]["weight_decay"] == 0.0 and parent.origins["train.weight_decay"] == "--set"
    assert spec.stages["stage2"]["threshold"] == 0.2 and spec.origins["stage2.threshold"] == f"config {path}"
    # the same key twice in one file, or twice on the command line, is still an error
    with pytest.raises(LtbenchError, match="already set by"):
        specs_of(tmp_path, config=path, sets=["stage2.lr=0.03", "stage2.lr=0.04"])


@pytest.mark.parametrize("name,text,message", [
    ("bad.yaml", "method: wb\nstage2:\n  lr: [0.1\n", "bad.yaml, line 4: not valid YAML"),
    ("bad.toml", "method = 'wb'\nlr = = 2\n", "bad.toml: not valid TOML: Invalid value (at line 2, column 6)"),
    ("keys.yaml", "method: ce\n\ntrain:\n  speed: 3\n", "keys.yaml, line 4: train.speed=3: train has no key 'speed'"),
    ("typo.yaml", "datset: digits_lt\n", "typo.yaml, line 1: unknown key 'datset'; did you mean 'dataset'?"),
    ("type.yaml", "method: ce\nlr: fast\n", "type.yaml train.lr='fast': expected a number"),
    ("epochs.toml", "epochs = 'ten'\n", "epochs.toml: epochs='ten': expected an integer"),
    ("method.yaml", "method: [ce, 3]\n", "method.yaml, line 1: method=['ce', 3]: expected a name or a list"),
    ("deep.yaml", "stage2:\n  lr:\n    a: 1\n", "deep.yaml, line 2: 'stage2.lr' holds a table"),
    ("list.yaml", "- method: ce\n", "list.yaml: expected keys and values at the top level"),
    ("twice.yaml", "method: ce\nlr: 0.1\ntrain.lr: 0.2\n", "already set by config"),
    ("conf.json", "{}", "unknown file type '.json'"),
])
def test_config_mistakes_are_one_message_naming_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    r = invoke("run", "--config", path, "--dry-run", "--results", tmp_path / "r")
    assert r.exit_code == 2 and message in r.output and str(path) in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2


def test_missing_config_lists_the_shipped_ones(tmp_path):
    r = invoke("run", "--config", tmp_path / "nope.yaml", "--dry-run")
    assert r.exit_code == 2 and "no such file" in r.output and "wb/cifar100_ir100" in r.output, r.output
    r = invoke("run", "--config", "wb/cifar100_ir1000", "--dry-run")
    assert r.exit_code == 2 and "did you mean wb/cifar100_ir100" in r.output.replace("\n", " "), r.output


def test_sweep_takes_a_config_and_its_grid_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    r = invoke("sweep", "--config", path, "--grid", "stage1.weight_decay=0,1e-3", "--dry-run", "--results", tmp_path / "r")
    assert r.exit_code == 0, r.output
    assert "8 runs: 8 new" in r.output and "dry run: nothing launched" in r.output  # 2 seeds x 2 WD x (stage 1, wb)


def test_list_configs_names_the_shipped_ones():
    r = invoke("list", "configs")
    assert r.exit_code == 0 and all(f"{name}  " in r.output for name in SHIPPED), r.output
