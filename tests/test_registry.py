"""Registries: built-ins, entry-point plugins, close-match errors."""

import os
import subprocess
import sys
import textwrap

import pytest

from ltbench.errors import LtbenchError
from ltbench.registry import backbones, benchmarks, methods


def test_builtins_are_registered():
    assert {"cifar10_lt", "cifar100_lt", "digits_lt"} <= set(benchmarks.names())
    assert {"resnet32", "resnet34_cifar", "small_cnn"} <= set(backbones.names())
    assert "ce" in methods.names()
    assert methods.get_entry("ce").origin == "builtin (ltbench.methods.ce)"


@pytest.mark.parametrize("registry,wrong,suggestion", [
    (benchmarks, "cifar100lt", "cifar100_lt"), (methods, "cee", "ce"), (backbones, "resnet23", "resnet32")])
def test_unknown_names_suggest_close_matches(registry, wrong, suggestion):
    with pytest.raises(LtbenchError, match=f"unknown {registry.kind} '{wrong}'. Did you mean '{suggestion}'"):
        registry.get(wrong)


def _readme_plugin() -> str:
    """The plugin guide's example method, verbatim from README.md ("A method plugin, start to finish")."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("# my_focal/focal.py\n")
    return text[start:text.index("```", start)]


PLUGIN = _readme_plugin()


def _fake_distribution(root):
    """A real installed-distribution layout (dist-info with entry_points.txt) on a sys.path entry."""
    (root / "focal_plugin_pkg.py").write_text(PLUGIN)
    info = root / "ltbench_focal-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ltbench-focal\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [ltbench.methods]
        focal_plugin = focal_plugin_pkg:Focal
        """))


def test_plugin_through_an_entry_point(tmp_path, monkeypatch):
    _fake_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "focal_plugin" in methods.names()
    entry = methods.get_entry("focal_plugin")
    assert entry.obj.__name__ == "Focal"
    assert entry.origin == "plugin ltbench-focal (focal_plugin_pkg:Focal)"


def test_plugin_shows_in_ltbench_list_and_trains(tmp_path):
    _fake_distribution(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "ltbench.cli.app", "list", "methods", "--wide"], env=env,
                         capture_output=True, text=True)  # --wide: one line a method, its origin in full
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("focal_plugin"))
    assert "plugin ltbench-focal" in line and "focal loss" in line
    run = subprocess.run([sys.executable, "-m", "ltbench.cli.app", "run", "--method", "focal_plugin", "--epochs", "1",
                          "--device", "cpu", "--results", str(tmp_path / "res")], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert "| focal_plugin" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "ltbench.cli.app", "run", "--method", "focal_plugin", "--set",
                          "focal_gamma=-1", "--results", str(tmp_path / "res2")], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "train.focal_gamma=-1.0: must not be negative" in bad.stderr, bad.stderr


def test_broken_plugin_names_its_package(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_pkg.py").write_text("raise ImportError('missing dependency xyz')\n")
    info = tmp_path / "ltbench_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ltbench-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ltbench.backbones]\nbroken_net = broken_plugin_pkg:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LtbenchError, match="plugin 'broken_net'.*ltbench-broken.*missing dependency xyz"):
        backbones.get("broken_net")


CLASHING = '''
from ltbench.method import Method


class Focal(Method):
    name = "focal_gamma"
    stages = ("train",)

    def hparams(self, stage, recipe, family):
        return {"gamma": 2.0}  # the focal exponent; the engine's step schedule has a gamma too


class FocalRenamed(Focal):
    name = "focal_renamed"

    def hparams(self, stage, recipe, family):
        return {"focal_gamma": 2.0}
'''


def test_a_plugin_key_that_clashes_with_an_engine_key_is_refused_naming_both(tmp_path, monkeypatch):
    (tmp_path / "clash_pkg.py").write_text(CLASHING)
    info = tmp_path / "ltbench_clash-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ltbench-clash\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ltbench.methods]\nfocal_gamma = clash_pkg:Focal\n"
                                           "focal_renamed = clash_pkg:FocalRenamed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LtbenchError) as exc:
        methods.get("focal_gamma")
    assert str(exc.value) == (
        "the method plugin 'focal_gamma' (entry point 'clash_pkg:Focal' of package ltbench-clash) cannot be used: "
        "Focal.hparams() gives stage 'train' a key 'gamma', which is the engine's train.gamma (default 0.1); name "
        "the method's own key otherwise, or add 'gamma' to Focal.overrides if it sets the engine's value on "
        "purpose.")
    print(exc.value)
    assert methods.get("focal_renamed").__name__ == "FocalRenamed"


def test_builtin_methods_declare_the_engine_keys_they_set():
    from ltbench.method import check_hparam_names

    for name in methods.names():
        assert check_hparam_names(methods.get(name)) == [], name
    assert {"weight_decay", "select"} <= methods.get("wb").overrides
