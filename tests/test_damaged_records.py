"""Fault injection: one file of a real results store damaged in one way, then `table`, `status`,
`plot norms RUN` and `plot wd` run against it. None may show a traceback; each says what is damaged.

The store is built once (ce, and wb with its stage-1 ce run, on the embedded digits-LT benchmark) and
copied for every case. At the end a summary lists each case with its exit codes and counts the faults
tried, the checks that found their message, and the tracebacks (which must be 0)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli.app import app
from ltbench.errors import DamagedRecord, LtbenchError
from ltbench.launch.dispatch import Manifest
from ltbench.results.store import RunDir, Store
from ltbench.spec.run_spec import RunSpec

pytest.importorskip("matplotlib")
runner = CliRunner()
COMMANDS = ("table", "status", "plot norms", "plot wd")


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store") / "results"
    for args in (["-m", "ce"], ["-m", "wb", "--set", "stage2.epochs=1"]):
        r = invoke("run", *args, "--epochs", 2, "--results", root)
        assert r.exit_code == 0, r.output
    return root


def runs(root: Path) -> dict[str, RunDir]:
    """The three runs by role: ce (its own), stage1 (wb's ce), wb."""
    dirs = {rd.run_id: rd for rd in Store(root).runs()}
    wb = next(rd for rd in dirs.values() if rd.path.parent.name == "wb")
    stage1 = dirs[RunSpec.from_json(wb.spec()["parent"]).run_id]
    ce = next(rd for rid, rd in dirs.items() if rd.path.parent.name == "ce" and rid != stage1.run_id)
    return {"ce": ce, "stage1": stage1, "wb": wb}


# --- damages: what they do to a file's bytes (None: delete it) ---------------------------------------

def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


BINARY = bytes(range(256))[::-1] * 4
DAMAGES: dict[str, Callable[[bytes], bytes | None]] = {
    "truncate": _truncate,
    "empty": lambda data: b"",
    "not JSON": lambda data: b"this is not JSON\n",
    "{}": lambda data: b"{}",
    "binary": lambda data: BINARY,
    "list": lambda data: b"[1, 2, 3]\n",
    "delete": lambda data: None,
    "garbage last line": lambda data: data + b'{"epoch": 3, "lo\n',
    "garbage middle line": lambda data: data.replace(b"\n", b"\n\x00\xff garbage\n", 1),
    "binary line": lambda data: data + BINARY.replace(b"\n", b"") + b"\n",
    "no error": lambda data: b'{"time": 1.0}',
    "error not text": lambda data: b'{"error": 5}',
    "wrong shape": lambda data: b'{"runs": [], "sweeps": {}}',
    "bad job": lambda data: b'{"version": 1, "sweeps": [], "runs": {"abc": {"jobs": "x"}}}',
}


@dataclass
class Case:
    """``file`` of run ``target`` (or of the store: manifest.json) gets ``damage``; ``expect`` maps a
    command to pieces of its output ("{path}": the damaged file, "{run}": the target's directory, "{id}")."""

    target: str
    file: str
    damage: str
    expect: dict[str, list[str]]
    unfinished: bool = False  # remove DONE first (a run that stopped before its end)
    old: bool = False  # set the file's mtime a minute back (a lock nobody refreshes)
    plot_out: str | None = None  # where `plot norms` writes, relative to the case's folder

    @property
    def name(self) -> str:
        return f"{self.target}/{self.file}: {self.damage}" + (" (unfinished run)" if self.unfinished else "")


def left_out(problem: str) -> dict[str, list[str]]:
    """What a finished record whose file reads as ``problem`` gives: left out of the table with a
    footnote, damaged in status, an error from plot norms, a warning from plot wd."""
    return {"table": [f"1 record left out as damaged: {{path}} {problem}; `ltbench status` lists it"],
            "status": ["damaged", "damaged: {id} ", f"{{file}} {problem}: ", "1 damaged"],
            "plot norms": [f"error: {{path}} {problem}; "],
            "plot wd": [f"warning: left out as damaged: {{path}} {problem}; "]}


RESULT_FIX = "the same `ltbench run` command redoes the final report from checkpoint.pt, or delete {run}"
SPEC_FIX = "delete {run}, then the same `ltbench run` command runs it anew"
METRICS_FIX = "the same `ltbench run` command trims it back to the checkpoint and resumes"
FAILED_NOTE = "FAILED is unreadable ("
FAILED_FIX = "its error is lost; the same `ltbench run` command (or `ltbench sweep --retry-failed`) runs it again"
MANIFEST_WARNING = "warning: {path} {problem}; status and sweep go on without it (it only maps runs to their jobs)"


def _with(expect: dict[str, list[str]], command: str, *more: str) -> dict[str, list[str]]:
    return {**expect, command: [*expect[command], *more]}


CASES: list[Case] = []
for damage, problem in [("truncate", "is not JSON"), ("empty", "is empty"), ("not JSON", "is not JSON"),
                        ("{}", "has no key run_id"), ("binary", "is not JSON"), ("list", "is not a JSON object"),
                        ("delete", "is missing")]:
    CASES.append(Case("wb", "result.json", damage, _with(left_out(problem), "status", RESULT_FIX)))
for damage, problem in [("not JSON", "is not JSON"), ("{}", "has no key run_id"), ("delete", "is missing")]:
    CASES.append(Case("stage1", "result.json", damage, left_out(problem)))
for damage, problem in [("truncate", "is not JSON"), ("empty", "is empty"), ("not JSON", "is not JSON"),
                        ("{}", "has no key benchmark"), ("binary", "is not JSON"), ("list", "is not a JSON object")]:
    CASES.append(Case("wb", "spec.json", damage, _with(left_out(problem), "status", SPEC_FIX)))
CASES.append(Case("ce", "spec.json", "not JSON", _with(left_out("is not JSON"), "status", SPEC_FIX)))

DONE_ROW = {"table": ["| wb "], "status": ["3 done"], "plot norms": ["wrote "], "plot wd": ["wrote "]}
for target, damage, line in [("wb", "garbage last line", 2), ("stage1", "garbage middle line", 2),
                             ("wb", "binary line", 2)]:
    note = f"metrics.jsonl line {line} is not a JSON record (per-epoch log only)"
    CASES.append(Case(target, "metrics.jsonl", damage, _with(DONE_ROW, "status", note)))
CASES.append(Case("wb", "metrics.jsonl", "truncate", DONE_ROW))  # a part line is one being written: ignored
CASES.append(Case("wb", "metrics.jsonl", "empty", DONE_ROW))
UNFINISHED = {"table": ["| ce "], "status": [], "plot norms": ["error: run(s) {id} are not finished"],
              "plot wd": ["wrote "]}
CASES.append(Case("wb", "metrics.jsonl", "garbage last line",
                  _with(UNFINISHED, "status", "damaged", "metrics.jsonl line 2 is not a JSON record: " + METRICS_FIX),
                  unfinished=True))
for damage in ("empty", "not JSON", "{}", "binary"):
    CASES.append(Case("wb", "lock", damage, DONE_ROW, old=True))
CASES.append(Case("wb", "lock", "not JSON", _with(UNFINISHED, "status", "unfinished"), unfinished=True, old=True))
for damage in ("not JSON", "empty", "{}", "list", "no error", "error not text", "binary"):
    status = ["failed", FAILED_NOTE, "failed: {id}", FAILED_FIX]
    CASES.append(Case("wb", "FAILED", damage, _with(UNFINISHED, "status", *status), unfinished=True))
for damage, problem in [("not JSON", "is not JSON"), ("empty", "is empty"), ("{}", "has no key runs"),
                        ("list", "is not a JSON object"), ("wrong shape", "has a bad value at runs"),
                        ("bad job", "has a bad value at runs"), ("binary", "is not JSON"), ("truncate", "is not JSON")]:
    CASES.append(Case("store", "jobs/manifest.json", damage,
                      _with(DONE_ROW, "status", MANIFEST_WARNING.replace("{problem}", problem))))
CASES.append(Case("stage1", "(its directory)", "delete", {
    "table": ["| wb ", "builds on stage-1 run {id}, which is no longer in",
              "`ltbench run` with the same selectors retrains it (content-addressed)"],
    "status": ["2 done", "its stage-1 run {id} is no longer in"], "plot norms": ["wrote "],
    "plot wd": ["two or more weight decays"]}))  # the stage-1 run was ce's second weight decay
CASES.append(Case("wb", "(no damage)", "plot -o under a file", {
    **DONE_ROW, "plot norms": ["error: cannot write the plot to ", "a-file.txt is a file, not a folder",
                               "pass -o with a .png file"]}, plot_out="a-file.txt/norms.png"))
CASES.append(Case("wb", "(no damage)", "plot -o to a folder", {
    **DONE_ROW, "plot norms": ["error: cannot write the plot to ", "(it is a folder)"]}, plot_out="a-folder"))


@dataclass
class Tally:
    lines: list[str] = field(default_factory=list)
    checks: int = 0
    clear: int = 0
    tracebacks: int = 0


@pytest.fixture(scope="module")
def tally(request):
    t = Tally()
    yield t
    report = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if report is None or capture is None or not t.lines:
        return
    with capture.global_and_fixture_disabled():  # shown with the test results, not captured
        report.write_line("")
        for line in t.lines:
            report.write_line(line)
        report.write_line(f"damaged records: {len(t.lines)} faults tried, {t.clear} of {t.checks} checks gave "
                          f"their clear message, {t.tracebacks} tracebacks")


def _damage(case: Case, root: Path) -> tuple[Path, RunDir | None]:
    """Damage the case's file in ``root``; returns the file and the target run."""
    if case.target == "store":
        path = root / case.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"version": 1, "sweeps": [], "runs": {}}))
        rd = None
    else:
        rd = runs(root)[case.target]
        path = rd.path / case.file
        if case.unfinished:
            rd.done_file.unlink()
            if case.file == "FAILED":
                path.write_text(json.dumps({"error": "Traceback ...\nValueError: boom\n", "time": 1.0}))
        if case.file == "lock":
            path.write_text("{}")
        if case.file == "(its directory)":
            shutil.rmtree(rd.path)
            return rd.path, rd
        if case.file == "(no damage)":
            return path, rd
    data = DAMAGES[case.damage](path.read_bytes())
    if data is None:
        path.unlink()
    else:
        path.write_bytes(data)
        if case.old:
            os.utime(path, (time.time() - 60, time.time() - 60))
    return path, rd


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_damaged_file_gives_a_clear_message_and_no_traceback(store, tmp_path, case, tally):
    root = tmp_path / "results"
    shutil.copytree(store, root)
    ids = {k: rd.run_id for k, rd in runs(root).items()}
    path, rd = _damage(case, root)
    target_id = ids[case.target] if case.target != "store" else ids["wb"]
    plot_id = ids["wb"] if case.file == "(its directory)" else target_id
    (tmp_path / "a-file.txt").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    out = tmp_path / (case.plot_out or "norms.png")
    commands = {"table": ["table", "--results", root], "status": ["status", "--results", root, "--wide"],
                "plot norms": ["plot", "norms", plot_id, "-o", out, "--results", root],
                "plot wd": ["plot", "wd", "-o", tmp_path / "wd.png", "--results", root]}
    fill = {"path": str(path), "file": path.name, "id": target_id, "run": str(rd.path) if rd else ""}
    codes, missing = [], []
    for command in COMMANDS:
        Manifest._reported.clear()  # every command of this process warns anew
        r = invoke(*commands[command])
        codes.append(f"{command} {r.exit_code}")
        crashed = "Traceback" in r.output or (r.exception is not None and not isinstance(r.exception, SystemExit))
        tally.tracebacks += crashed
        assert not crashed, f"{command}: {r.output}\n{r.exception!r}"
        assert r.exit_code in (0, 2), f"{command}: {r.output}"
        if r.exit_code == 2:  # one line, the error
            assert [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith("warning: ")
                    ][-1].startswith("error: "), r.output
        pieces = [p.format(**fill) for p in case.expect.get(command, [])]
        lost = [p for p in pieces if p not in r.output]
        tally.checks += bool(pieces)
        tally.clear += bool(pieces) and not lost
        missing += [f"{command}: {p!r} not in\n{r.output}" for p in lost]
        if case.file == "jobs/manifest.json":
            assert r.output.count("manifest.json") <= 1, r.output  # one warning line, at most
    tally.lines.append(f"fault {case.name}: {', '.join(codes)}; {'clear' if not missing else 'UNCLEAR'}")
    assert not missing, "\n".join(missing)


def test_sweep_goes_on_without_a_damaged_manifest(store, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(store, root)
    manifest = root / "jobs" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_bytes(b'{"runs": {')
    Manifest._reported.clear()
    r = invoke("sweep", "-m", "wb", "--epochs", 2, "--set", "stage2.epochs=1", "--dry-run", "--results", root)
    assert r.exit_code == 0, r.output
    assert "2 runs: 2 done -> 0 to launch" in r.output
    assert r.output.count(f"warning: {manifest} is not JSON") == 1


def test_an_update_moves_a_damaged_manifest_aside(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.path.parent.mkdir()
    manifest.path.write_bytes(b"[1, 2]")
    Manifest._reported.clear()
    manifest.record("ltbench sweep", "local", [], [])
    assert (tmp_path / "jobs" / "manifest.json.damaged").read_bytes() == b"[1, 2]"  # kept, never overwritten
    data = manifest.load()
    assert len(data["sweeps"]) == 1 and data["runs"] == {}


def test_damaged_record_is_one_line_and_pickles(tmp_path):
    import pickle

    exc = DamagedRecord(tmp_path / "result.json", "is not JSON", "delete it")
    assert isinstance(exc, LtbenchError) and isinstance(exc, ValueError)
    assert str(exc) == f"{tmp_path}/result.json is not JSON; delete it."
    again = pickle.loads(pickle.dumps(exc))
    assert (again.path, again.problem, again.fix, str(again)) == (exc.path, exc.problem, exc.fix, str(exc))


def test_reads_of_a_damaged_record_raise_damaged_record(store, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(store, root)
    rd = runs(root)["wb"]
    rd.metrics_file.write_bytes(rd.metrics_file.read_bytes() + b"[]\n")
    rd.result_file.write_text(json.dumps({**rd.result(), "test": {"top1": "high"}}))
    with pytest.raises(DamagedRecord, match=r"metrics.jsonl line 2 is not a JSON record; the same"):
        rd.metrics()
    with pytest.raises(DamagedRecord, match=r"result.json has a bad value at test.top1; "):
        rd.result()
    assert str(rd.record_damage()).startswith(f"{rd.result_file} has a bad value at test.top1")
