"""The scripts in benchmarks/ keep a --quick mode (CI runs every one, .ci/run), and gpu_acceptance's quick
mode reaches every one of its checks. Nothing slow runs here: the scripts' argument parsers are read from
their source (starting one imports torch), and gpu_acceptance's checks are replaced by stubs (the CI loop
runs them all for real)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))  # _*.py: helper modules


def test_there_are_scripts():
    assert {"gpu_acceptance.py", "speed.py"} <= {p.name for p in SCRIPTS}


def _options(script: Path) -> set[str]:
    """The option strings of the script's ``add_argument`` calls."""
    tree = ast.parse(script.read_text(), str(script))
    return {arg.value for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
            for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_offers_quick(script):
    assert "--quick" in _options(script), \
        f"benchmarks/{script.name} has no --quick option (CI runs every benchmark script with --quick)"


def test_ci_runs_every_script_quick():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "benchmarks/[!_]*.py" in ci and "--quick" in ci


@pytest.fixture
def acceptance(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_acceptance_under_test", BENCHMARKS / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    monkeypatch.chdir(ROOT)  # main() changes into the checkout; monkeypatch changes back
    monkeypatch.setattr(sys, "path", list(sys.path))
    return module


def _check_methods(module) -> set[str]:
    return {name for name, fn in inspect.getmembers(module.Checks, inspect.isfunction)
            if not name.startswith("_") and name not in {"opts", "cifar_root", "cifar_backbone", "run_methods"}}


def test_every_check_method_is_listed(acceptance):
    """A check written as a method of Checks but left out of CHECKS would never run."""
    assert _check_methods(acceptance) == set(acceptance.CHECKS)
    assert len(set(acceptance.CHECKS)) == len(acceptance.CHECKS)


def _stub_checks(module, monkeypatch, statuses=None):
    called = []

    def stub(name):
        def check(self):
            called.append(name)
            status = (statuses or {}).get(name, "PASS")
            return status, f"stub of {name}", {}
        return check

    monkeypatch.setattr(module.Checks, "__init__", lambda self, device, quick, tmp: None)
    for name in module.CHECKS:
        monkeypatch.setattr(module.Checks, name, stub(name))
    return called


def test_quick_runs_every_check_whatever_the_budget(acceptance, monkeypatch, tmp_path):
    """--quick has no time budget: with --budget-s 0 every check still runs, in CHECKS' order, and the
    record lists each one."""
    called = _stub_checks(acceptance, monkeypatch)
    out = tmp_path / "quick.json"
    status = acceptance.main(["--device", "cpu", "--quick", "--budget-s", "0", "--out", str(out)])
    assert status == 0
    assert called == list(acceptance.CHECKS)
    record = json.loads(out.read_text())
    assert [c["name"] for c in record["checks"]] == list(acceptance.CHECKS)
    assert record["quick"] is True and record["counts"] == {"PASS": len(called), "FAIL": 0, "SKIP": 0}


def test_quick_fails_when_a_check_is_skipped(acceptance, monkeypatch, tmp_path, capsys):
    _stub_checks(acceptance, monkeypatch, {"ddp": "SKIP"})
    status = acceptance.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "q.json")])
    assert status == 1
    assert "not exercised: ddp" in capsys.readouterr().out


def test_full_mode_keeps_its_time_budget(acceptance, monkeypatch, tmp_path):
    """Without --quick a check that would start after --budget-s is skipped (the lent GPU's minutes)."""
    called = _stub_checks(acceptance, monkeypatch)
    status = acceptance.main(["--device", "cpu", "--budget-s", "-1", "--out", str(tmp_path / "full.json")])
    record = json.loads((tmp_path / "full.json").read_text())
    assert status == 0 and called == []
    assert {c["status"] for c in record["checks"]} == {"SKIP"} and len(record["checks"]) == len(acceptance.CHECKS)


def test_quick_writes_no_record_unless_asked(acceptance, monkeypatch):
    _stub_checks(acceptance, monkeypatch)
    written = []
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: written.append(self))
    assert acceptance.main(["--device", "cpu", "--quick"]) == 0
    assert written == []  # benchmarks/results/ holds recorded (full) outputs only
