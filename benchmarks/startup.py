"""Start-up time of `import ltbench`, `ltbench --help` and `ltbench table` (on an empty store), against a
reference commit measured in the same run (a temporary git worktree of it, imported from its checkout
as `python -m` imports the working directory's ltbench). Both run with `python -S` and the environment's
site-packages on PYTHONPATH, so that no installed copy of ltbench (an editable install maps
ltbench.methods to its own checkout) stands in for the tree measured. Commands alternate between the
two trees, so load on the machine hits both alike; the medians and their ratios are printed.

    python benchmarks/startup.py [--reference COMMIT] [--repeat N] [--quick]

The reference defaults to 3a655ff (main before the subpackages and the typed schema). --quick: 3
repeats; without git history of the reference it measures this tree against itself (ratio 1.0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli_module(tree: Path) -> str:
    return "ltbench.cli.app" if (tree / "ltbench" / "cli" / "app.py").is_file() else "ltbench.cli"


PYTHON = [sys.executable, "-S"]  # no site: no .pth file installs an editable copy's import hooks
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([sysconfig.get_paths()["purelib"],
                                                                   sysconfig.get_paths()["platlib"]]))}


def _commands(tree: Path, empty: Path) -> dict[str, list[str]]:
    cli = [*PYTHON, "-m", _cli_module(tree)]
    return {"import ltbench": [*PYTHON, "-c", "import ltbench"], "ltbench --help": [*cli, "--help"],
            "ltbench table (empty store)": [*cli, "table", "--results", str(empty)]}


def _check(cmd: list[str], cwd: Path) -> None:
    """The command runs in that tree (exit 0, or the one-line error of an empty store), never a traceback."""
    out = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if "Traceback" in out.stderr or out.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(cmd[1:])} fails in {cwd}:\n{out.stderr[-2000:]}")


def _time(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def _worktree(commit: str, into: Path) -> Path | None:
    """A checkout of ``commit`` (None when git or the commit is not available)."""
    if shutil.which("git") is None:
        return None
    out = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), commit],
                         capture_output=True, text=True)
    return into if out.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", default="3a655ff", help="the commit to compare with (default 3a655ff)")
    ap.add_argument("--repeat", type=int, default=9, help="runs of each command in each tree (default 9)")
    ap.add_argument("--quick", action="store_true", help="3 repeats (CI)")
    args = ap.parse_args()
    repeat = 3 if args.quick else args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        ref = _worktree(args.reference, Path(tmp) / "reference")
        label = args.reference if ref is not None else "this tree (reference commit not available)"
        ref = ref or ROOT
        empty = Path(tmp) / "empty-results"
        try:
            mine, theirs = _commands(ROOT, empty), _commands(ref, empty)
            print(f"start-up, median of {repeat} runs, this tree against {label} (same machine, alternating)")
            for name in mine:
                _check(mine[name], ROOT)
                _check(theirs[name], ref)
                a, b = [], []
                for _ in range(repeat):
                    a.append(_time(mine[name], ROOT))
                    b.append(_time(theirs[name], ref))
                ma, mb = statistics.median(a), statistics.median(b)
                print(f"  {name:28s} {ma * 1000:7.0f} ms   reference {mb * 1000:7.0f} ms   ratio {ma / mb:.2f}x")
        finally:
            if ref != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref)],
                               capture_output=True)


if __name__ == "__main__":
    main()
