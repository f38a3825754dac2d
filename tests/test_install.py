"""A new user's path: a plain (non-editable) `pip install .` of the checkout into a fresh venv, then every
command run from the repository root, where the checkout's own ltbench/ (without methods/ and
datasets/ inside) shadows the installed copy. Jobs started by the local and SLURM launchers inherit that
working directory, and so does `python -m pytest`.

The venv is new and ltbench is installed into it from a copy of the checkout (tracked and untracked,
not ignored, files: what a clone of the working tree holds). Its other dependencies (torch is 5 GB)
come from this test's own environment through a .pth file rather than a second download; the import
of ltbench itself never sees this environment's (editable) install.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ltbench.launch.dispatch import Launched, wait

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _clone(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(checkout copy, venv bin folder, environment) after `pip install --no-deps .` into a fresh venv."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and the repository's .git to copy the checkout")
    base = tmp_path_factory.mktemp("newuser")
    checkout = _clone(base / "ltbench")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "test-dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    out = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--ignore-installed", "."], cwd=checkout, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    shutil.rmtree(checkout / "build", ignore_errors=True)
    for info in checkout.glob("*.egg-info"):
        shutil.rmtree(info)
    where = subprocess.run([py, "-c", "import ltbench; print(ltbench.__file__)"], cwd=base, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site), where  # a real install, not this environment's editable one
    assert (Path(site) / "ltbench" / "methods").is_dir()
    return checkout, venv / "bin", env


def _ltbench(installed, *args, cwd=None, check=True):
    checkout, bin_dir, env = installed
    out = subprocess.run([str(bin_dir / "ltbench"), *map(str, args)], cwd=cwd or checkout, env=env,
                         capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_imports_from_the_root_tests_and_elsewhere(installed, tmp_path):
    checkout, bin_dir, env = installed
    code = "import ltbench, ltbench.methods.wb, ltbench.datasets.digits_lt; print(ltbench.__file__)"
    for cwd, expected in ((checkout, checkout), (checkout / "tests", None), (tmp_path, None)):
        out = subprocess.run([str(bin_dir / "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        if expected is not None:  # the checkout shadows the install there: its plugins are mapped in
            assert out.stdout.strip() == str(checkout / "ltbench" / "__init__.py")
    listing = _ltbench(installed, "list", "methods")
    assert "wb" in listing.stdout and "built-in" in listing.stdout


def test_two_local_launcher_runs_from_the_repository_root(installed):
    checkout, _, _ = installed
    out = _ltbench(installed, "run", "--method", "ce,cb", "--epochs", 2, "--launcher", "local", "--device", "cpu",
                   "--results", "results-local")
    store = checkout / "results-local" / "runs" / "digits_lt"
    done = sorted(p.parent.parent.name for p in store.glob("*/*/DONE"))
    assert done == ["cb", "ce"], out.stderr[-3000:]
    assert "| ce " in out.stdout and "| cb " in out.stdout
    record = json.loads(next(store.glob("ce/*/result.json")).read_text())
    assert record["env"]["launcher"] == "local"


@pytest.mark.slurm
def test_two_run_slurm_sweep_submitted_from_the_repository_root(installed):
    checkout, _, _ = installed
    results = checkout / "results-slurm"
    out = _ltbench(installed, "sweep", "--method", "ce,cb", "--epochs", 2, "--launcher", "slurm", "--device", "cpu",
                   "--cpus", 1, "--time", 30, "--results", "results-slurm")
    assert "launched 2 runs" in out.stdout, out.stdout
    manifest = json.loads((results / "jobs" / "manifest.json").read_text())
    wait([Launched(None, [rid], run["jobs"][-1]) for rid, run in manifest["runs"].items()])  # until the jobs end
    done = sorted(p.parent.parent.name for p in results.glob("runs/digits_lt/*/*/DONE"))
    logs = "".join(p.read_text(errors="replace")[-1500:] for p in results.glob("jobs/*/*.err"))
    assert done == ["cb", "ce"], f"the SLURM jobs ended without both runs done:\n{logs}"
    status = _ltbench(installed, "status", "--results", "results-slurm", "--sweep", "latest")
    assert "2 done" in status.stdout, status.stdout
